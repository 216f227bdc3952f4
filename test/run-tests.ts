/**
 * `npm test` (node --import jiti/register test/run-tests.ts): the whole suite on the pinned line (pi 0.73.1 on this
 * Node), then every test file that started pi again on pi 1.x (the prefix test/pi-1x, on Node >= 22.19), always
 * against a keychain that is not a person's own:
 * - Linux: a private D-Bus session (dbus-run-session) with a throwaway, unlocked gnome-keyring and private XDG
 *   dirs. Missing tools fail the run (with the apt-get line that fixes it); nothing is skipped.
 * - macOS, Windows: the login keychain / Credential Manager under throwaway service names (PI_MCC_KEYCHAIN_SERVICE
 *   and every test's own, all starting with pi-mcc-test-<random>); every item of every one of them is deleted at
 *   the end. The real service name is refused.
 * It prints one summary line per line and the total (`tests: N passed, N failed, N skipped`), and exits non-zero
 * when either run failed.
 *
 *   npm test -- test/x.test.ts -t "name"   files (and vitest options); a file that starts pi runs on both lines
 *   npm test -- --pi-line=0.73             one line only (--pi-line=1.x runs the given files on pi 1.x alone)
 *   npm run soak                           (--soak) the load test at its full size, PI_MCC_SOAK=1
 *   PI_MCC_NODE22=/path/to/node            the Node for pi 1.x (else the prefix's own, else this one if >= 22.19)
 *   PI_MCC_KEYRING_COMMAND="node x.ts"     runs that command inside the keychain instead (npm run bench), with
 *                                          PI_MCC_NODE22 and PI_MCC_PI1X_DIR exported when pi 1.x is installed
 */
import { type SpawnOptions, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import {
	clearKeychainService,
	REAL_SERVICE,
	REPO_ROOT,
	requireSecretService,
	runCommand,
	SERVICE_LEDGER,
	TEST_KEYRING_PASSWORD,
	waitFor,
} from "./helpers/keyring.ts";
import { nodeAtLeast, PI_1X_MIN_NODE, PI_1X_PREFIX, type PiLineName } from "./helpers/pi-line.ts";
import { summaryLine, type TestCounts } from "./summary-reporter.ts";

const VITEST = join(REPO_ROOT, "node_modules", "vitest", "vitest.mjs");
const LINUX_TOOLS = ["dbus-run-session", "dbus-send", "gnome-keyring-daemon", "secret-tool"];
const APT_FIX = "sudo apt-get install -y dbus gnome-keyring libsecret-tools strace";
/** vitest options followed by a value (so that value is not taken for a file filter). */
const VALUE_OPTIONS = new Set(["-t", "--testNamePattern", "--reporter", "--outputFile", "--project", "--shard"]);

type Env = NodeJS.ProcessEnv;

function run(command: string, args: readonly string[], env: Env, options: SpawnOptions = {}): Promise<number> {
	return new Promise((resolve) => {
		const child = spawn(command, args, { stdio: "inherit", env, cwd: REPO_ROOT, ...options });
		const forward = (signal: NodeJS.Signals) => child.kill(signal);
		process.on("SIGTERM", forward);
		child.on("error", (error) => {
			console.error(`${command}: ${error.message}`);
			resolve(127);
		});
		child.on("close", (code, signal) => {
			process.off("SIGTERM", forward);
			resolve(code ?? (signal ? 128 : 1));
		});
	});
}

/** npm itself: the one running this script (npm_execpath), else npm from PATH (a shell on Windows runs npm.cmd). */
function npm(args: readonly string[], cwd: string): Promise<number> {
	const cli = process.env.npm_execpath;
	if (cli?.endsWith(".js")) return run(process.execPath, [cli, ...args], process.env, { cwd });
	return run("npm", args, process.env, { cwd, shell: process.platform === "win32" });
}

// ---- pi 1.x and its Node -------------------------------------------------------------------------------------

function installedPi1x(): string | undefined {
	const file = join(PI_1X_PREFIX, "node_modules", "@earendil-works", "pi-coding-agent", "package.json");
	return existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as { version: string }).version : undefined;
}

/** Installs the prefix's lockfile with `npm ci` when pi 1.x is missing or not the version its package.json pins. */
async function ensurePi1x(): Promise<void> {
	const manifest = join(PI_1X_PREFIX, "package.json");
	if (!existsSync(manifest)) throw new Error(`${PI_1X_PREFIX} has no package.json: no pi 1.x to test against`);
	const pinned = (JSON.parse(readFileSync(manifest, "utf8")) as { dependencies: Record<string, string> }).dependencies[
		"@earendil-works/pi-coding-agent"
	];
	if (installedPi1x() === pinned) return;
	console.log(`pi 1.x: installing @earendil-works/pi-coding-agent@${pinned} into ${PI_1X_PREFIX} (npm ci, once) …`);
	// Its dependencies' install scripts are not needed for the tests, and npm does not agree across versions on
	// whether to run them.
	const code = await npm(["ci", "--prefix", PI_1X_PREFIX, "--no-audit", "--no-fund", "--ignore-scripts"], REPO_ROOT);
	if (code !== 0 || installedPi1x() !== pinned) throw new Error(`npm ci in ${PI_1X_PREFIX} failed (exit ${code})`);
}

async function nodeVersion(node: string): Promise<string> {
	const result = await runCommand(node, ["--version"], { timeoutMs: 10_000 }).catch(() => undefined);
	return result?.code === 0 ? result.stdout.trim() : "";
}

/** A Node >= 22.19 for pi 1.x: PI_MCC_NODE22, else the prefix's own (node-<os>-<cpu>), else this one. */
async function findNode22(): Promise<string> {
	const prefixNode = join(PI_1X_PREFIX, "node_modules", `node-${process.platform}-${process.arch}`, "bin", "node");
	const candidates = [process.env.PI_MCC_NODE22, prefixNode, process.execPath].filter((path): path is string =>
		Boolean(path && existsSync(path)),
	);
	for (const node of candidates) {
		if (nodeAtLeast(await nodeVersion(node), PI_1X_MIN_NODE)) return node;
	}
	throw new Error(
		`pi 1.x needs Node >= ${PI_1X_MIN_NODE.join(".")}: set PI_MCC_NODE22 to such a node binary ` +
			`(tried ${candidates.join(", ")}; test/pi-1x ships one for Linux x64 and arm64 only)`,
	);
}

// ---- the keychain --------------------------------------------------------------------------------------------

/** Linux, first pass: re-runs this script inside a private D-Bus session with private XDG dirs. */
async function inPrivateBus(args: readonly string[]): Promise<number> {
	for (const tool of LINUX_TOOLS) {
		const found = await runCommand("sh", ["-c", `command -v ${tool}`]).catch(() => undefined);
		if (found?.code !== 0) {
			console.error(`private keyring: '${tool}' is missing. On Debian/Ubuntu: ${APT_FIX}`);
			return 1;
		}
	}
	const scratch = mkdtempSync(join(tmpdir(), "pi-mcc-keyring-"));
	try {
		for (const dir of ["runtime", "data"]) mkdirSync(join(scratch, dir), { mode: 0o700 });
		const env: Env = {
			...process.env,
			XDG_RUNTIME_DIR: join(scratch, "runtime"),
			XDG_DATA_HOME: join(scratch, "data"),
			PI_MCC_INSIDE_TEST_KEYRING: "1",
			PI_MCC_TEST_KEYRING_DIR: scratch,
		};
		// Keep the developer's session bus out of reach: only the private bus may be used.
		delete env.DBUS_SESSION_BUS_ADDRESS;
		const self = [...process.execArgv, process.argv[1] ?? "", ...args];
		return await run("dbus-run-session", ["--", process.execPath, ...self], env);
	} finally {
		rmSync(scratch, { recursive: true, force: true });
	}
}

/** Linux, inside the bus: gnome-keyring with a non-empty password, so an unlocked default collection exists. */
async function startGnomeKeyring(scratch: string): Promise<void> {
	const log = join(scratch, "daemon.log");
	const daemon = spawn("gnome-keyring-daemon", ["--unlock", "--components=secrets"], {
		stdio: ["pipe", openSync(join(scratch, "daemon.env"), "w"), openSync(log, "w")],
	});
	daemon.stdin?.end(TEST_KEYRING_PASSWORD);
	const owned = () =>
		requireSecretService().then(
			() => true,
			() => false,
		);
	try {
		await waitFor(owned, "gnome-keyring to take org.freedesktop.secrets", 10_000, 100);
	} catch (error) {
		throw new Error(`private keyring: ${(error as Error).message}. Its log:\n${readFileSync(log, "utf8")}`);
	}
}

/** macOS, Windows: deletes every item of every service name the run handed out; returns how many. */
async function deleteRunItems(runDir: string, runService: string): Promise<number> {
	const ledger = join(runDir, SERVICE_LEDGER);
	const listed = existsSync(ledger) ? readFileSync(ledger, "utf8").split("\n") : [];
	let deleted = 0;
	for (const service of new Set([runService, ...listed.filter(Boolean)])) {
		deleted += await clearKeychainService(service);
	}
	return deleted;
}

// ---- the two runs -----------------------------------------------------------------------------------------------

interface LineRun {
	name: PiLineName;
	node: string;
	exitCode: number;
	counts: TestCounts | undefined;
	seconds: number;
}

function splitArgs(args: readonly string[]): { filters: string[]; options: string[]; only?: PiLineName } {
	const filters: string[] = [];
	const options: string[] = [];
	let only: PiLineName | undefined;
	for (let i = 0; i < args.length; i++) {
		const arg = args[i] ?? "";
		if (arg.startsWith("--pi-line=")) {
			const value = arg.slice("--pi-line=".length);
			if (value !== "0.73" && value !== "1.x") throw new Error(`--pi-line is 0.73 or 1.x, not "${value}"`);
			only = value;
		} else if (arg.startsWith("-")) {
			options.push(arg);
			if (VALUE_OPTIONS.has(arg) && i + 1 < args.length) options.push(args[++i] ?? "");
		} else filters.push(arg);
	}
	return { filters, options, only };
}

async function runLine(name: PiLineName, node: string, vitestArgs: string[], runDir: string, env: Env) {
	const summary = join(runDir, `summary-${name}.json`);
	rmSync(summary, { force: true });
	const started = Date.now();
	console.log(`\n=== pi ${name} line on Node ${await nodeVersion(node)}: vitest run ${vitestArgs.join(" ")}\n`);
	const exitCode = await run(node, [VITEST, "run", ...vitestArgs], {
		...env,
		PI_MCC_PI_LINE: name,
		PI_MCC_SUMMARY_FILE: summary,
	});
	const counts = existsSync(summary) ? (JSON.parse(readFileSync(summary, "utf8")) as TestCounts) : undefined;
	return { name, node, exitCode, counts, seconds: Math.round((Date.now() - started) / 1000) } satisfies LineRun;
}

/** Files of the pinned run that started pi (test/helpers/pi-line.ts wrote them into the ledger), repo-relative. */
function filesThatStartedPi(ledger: string): string[] {
	if (!existsSync(ledger)) return [];
	const files = readFileSync(ledger, "utf8").split("\n").filter(Boolean);
	return [...new Set(files.map((file) => relative(REPO_ROOT, file).replaceAll("\\", "/")))].sort();
}

async function runTests(args: readonly string[], runDir: string, env: Env): Promise<number> {
	const { filters, options, only } = splitArgs(args);
	const runs: LineRun[] = [];
	const starts = join(runDir, "pi-starts");
	if (only !== "1.x") {
		runs.push(
			await runLine("0.73", process.execPath, [...options, ...filters], runDir, {
				...env,
				PI_MCC_PI_STARTS_FILE: starts,
			}),
		);
	}
	const again = only === "1.x" ? filters : filesThatStartedPi(starts);
	if (only !== "0.73" && (only === "1.x" || again.length > 0)) {
		await ensurePi1x();
		const node = await findNode22();
		runs.push(await runLine("1.x", node, [...options, ...again], runDir, { ...env, PI_MCC_NODE22: node }));
		console.log(`\npi 1.x ran the ${again.length} file(s) that started pi: ${again.join(", ")}`);
	}
	const total: TestCounts = { passed: 0, failed: 0, skipped: 0 };
	console.log("");
	for (const line of runs) {
		// A run that printed no counts (vitest itself failed) or exited non-zero with none failed counts as one failure.
		const counts = line.counts ?? { passed: 0, failed: 0, skipped: 0 };
		if (line.exitCode !== 0 && counts.failed === 0) counts.failed = 1;
		for (const key of ["passed", "failed", "skipped"] as const) total[key] += counts[key];
		const version = installedVersion(line.name);
		console.log(summaryLine(counts, `pi ${version} on Node ${await nodeVersion(line.node)} (${line.seconds} s):`));
	}
	console.log(summaryLine(total));
	return runs.every((line) => line.exitCode === 0) && total.failed === 0 ? 0 : 1;
}

function installedVersion(name: PiLineName): string {
	if (name === "1.x") return installedPi1x() ?? "1.x";
	const file = join(REPO_ROOT, "node_modules", "@mariozechner", "pi-coding-agent", "package.json");
	return (JSON.parse(readFileSync(file, "utf8")) as { version: string }).version;
}

async function main(args: readonly string[]): Promise<number> {
	const linux = process.platform === "linux";
	if (linux && process.env.PI_MCC_INSIDE_TEST_KEYRING !== "1") return inPrivateBus(args);
	if (process.env.PI_MCC_KEYCHAIN_SERVICE === REAL_SERVICE) {
		console.error(`PI_MCC_KEYCHAIN_SERVICE is ${REAL_SERVICE}, the real service: the tests never run against it.`);
		return 1;
	}
	const scratch = linux ? process.env.PI_MCC_TEST_KEYRING_DIR : undefined;
	const runDir = scratch ? join(scratch, "run") : mkdtempSync(join(tmpdir(), "pi-mcc-test-run-"));
	mkdirSync(runDir, { recursive: true });
	const runService = `pi-mcc-test-${randomBytes(4).toString("hex")}`;
	const env: Env = {
		...process.env,
		PI_MCC_TEST_RUN_DIR: runDir,
		PI_MCC_KEYCHAIN_SERVICE: runService,
		PI_MCC_TEST_SERVICE_PREFIX: runService,
	};
	try {
		if (scratch) {
			await startGnomeKeyring(scratch);
			env.PI_MCC_REQUIRE_KEYRING = "1";
		}
		const command = process.env.PI_MCC_KEYRING_COMMAND?.trim();
		if (args[0] === "--soak") {
			// `npm run soak`: the load test at its full size (8 processes for 5 minutes).
			env.PI_MCC_SOAK = "1";
			return await runTests(["test/security/load.test.ts", ...args.slice(1)], runDir, env);
		}
		if (!command) return await runTests(args, runDir, env);
		// The hook for a two-line bench: where pi 1.x and its Node are, when they are installed.
		if (installedPi1x()) {
			env.PI_MCC_PI1X_DIR = PI_1X_PREFIX;
			env.PI_MCC_NODE22 = await findNode22().catch(() => "");
		}
		const [program = "", ...programArgs] = command.split(/\s+/);
		return await run(program, [...programArgs, ...args], env);
	} finally {
		if (!linux) {
			const deleted = await deleteRunItems(runDir, runService);
			console.log(`keychain: deleted the ${deleted} item(s) this run left under ${runService}*`);
		}
		if (!scratch) rmSync(runDir, { recursive: true, force: true });
	}
}

// Ctrl-C reaches the children too (one process group); the runner stays to clean up after them.
process.on("SIGINT", () => {});
main(process.argv.slice(2)).then(
	(code) => process.exit(code),
	(error: unknown) => {
		console.error(error instanceof Error ? error.message : error);
		process.exit(1);
	},
);
