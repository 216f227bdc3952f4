/**
 * `npm run bench` (through bench/run-with-keyring.sh): proves the token broker and the fallback are nearly free,
 * on both pi lines. Runs every phase on the pinned line (pi 0.73.1, this Node) in this process, then again on pi
 * 1.x in a child process on Node >= 22.19 (PI_MCC_NODE22, PI_MCC_PI1X_DIR: the runner exports them), against
 * fake servers on 127.0.0.1, and writes bench/results.json (the pinned line at the top level, pi 1.x under
 * `pi1x`, the same keys) and bench/RESULTS.md (both lines side by side). Options: --quick (reduced samples, for
 * development; writes bench/results.quick.json and bench/RESULTS.quick.md instead), --only=<phase,…> (request,
 * failover, keychain, scale, contention, startup; implies the quick file names too unless combined with
 * --record), --line=0.73|1.x (one line only; quick file names), --render (writes RESULTS.md again from
 * results.json).
 */
import { spawn } from "node:child_process";
import { promises as fs, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { cpus, loadavg, type as osType, release, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { startFakeAnthropicApi } from "../test/helpers/fake-anthropic-api.ts";
import { newAccessToken, startFakeTokenEndpoint } from "../test/helpers/fake-token-endpoint.ts";
import { PI_1X_PREFIX, type PiLineName, piLine } from "../test/helpers/pi-line.ts";
import { type BenchContext, budget } from "./lib/context.ts";
import { createBenchEnv } from "./lib/env.ts";
import { installFetchTiming } from "./lib/fetch-timing.ts";
import { createBenchSession, EXTENSION_PATH, REPO_ROOT, writeModelsJson } from "./lib/pi.ts";
import { type LineResults, type Machine, type Results, renderMarkdown, targets } from "./lib/report.ts";
import { round } from "./lib/stats.ts";
import { contention } from "./phases/contention.ts";
import { failover } from "./phases/failover.ts";
import { keychain } from "./phases/keychain.ts";
import { requestOverhead, storeBenchAccount } from "./phases/request-overhead.ts";
import { scale } from "./phases/scale.ts";
import { startup } from "./phases/startup.ts";

const PHASES = ["request", "failover", "keychain", "scale", "contention", "startup"] as const;
/** Optional extra samples stop being taken after this, per line (the whole run must finish within 10 minutes). */
const DEADLINE_MS = 240_000;
type Phase = (typeof PHASES)[number];
const LINES: readonly PiLineName[] = ["0.73", "1.x"];
/** The pi 1.x half in its child process: about 2.5 minutes, so a child still running after 15 is hung. */
const PI1X_TIMEOUT_MS = 15 * 60_000;
/** Set in the pi 1.x child: where it writes its results (the parent merges them under `pi1x`). */
const CHILD_OUT = process.env.PI_MCC_BENCH_CHILD_OUT;

interface Options {
	quick: boolean;
	only: Phase[];
	record: boolean;
	lines: PiLineName[];
}

function parseArgs(argv: string[]): Options {
	let quick = false;
	let record = false;
	let only: Phase[] = [...PHASES];
	let lines: PiLineName[] = [...LINES];
	for (const arg of argv) {
		if (arg === "--quick") quick = true;
		else if (arg === "--record") record = true;
		else if (arg.startsWith("--line=")) {
			const name = arg.slice("--line=".length);
			if (name !== "0.73" && name !== "1.x") throw new Error(`--line is 0.73 or 1.x, not "${name}"`);
			lines = [name];
		} else if (arg.startsWith("--only=")) {
			const names = arg.slice("--only=".length).split(",").filter(Boolean);
			for (const name of names) {
				if (!(PHASES as readonly string[]).includes(name)) {
					throw new Error(`unknown phase "${name}" (${PHASES.join(", ")})`);
				}
			}
			only = PHASES.filter((phase) => names.includes(phase));
		} else throw new Error(`unknown argument "${arg}" (--quick, --only=${PHASES.join(",")}, --line=, --record)`);
	}
	const full = !quick && only.length === PHASES.length && lines.length === LINES.length;
	return { quick, only, record: record || full, lines };
}

function packageVersion(root: string, name: string): string {
	const file = join(root, "node_modules", ...name.split("/"), "package.json");
	return (JSON.parse(readFileSync(file, "utf8")) as { version: string }).version;
}

function machine(loadAtStart: number[]): Machine {
	const cpuList = cpus();
	const own = JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as { name: string; version: string };
	return {
		cpuModel: cpuList[0]?.model.trim() ?? "unknown",
		cpuCores: cpuList.length,
		memoryGiB: round(totalmem() / 1024 ** 3, 1),
		os: `${osType()} ${release()} (${process.platform}/${process.arch})`,
		node: process.version,
		pi: piLine().version,
		piAi:
			piLine().name === "1.x"
				? packageVersion(PI_1X_PREFIX, "@earendil-works/pi-ai")
				: packageVersion(REPO_ROOT, "@mariozechner/pi-ai"),
		extension: `${own.name} ${own.version}`,
		extensionPath: EXTENSION_PATH,
		keyring: process.env.PI_MCC_BENCH_KEYRING ?? "OS keychain (not started through bench/run-with-keyring.sh)",
		loadAverageAtStart: loadAtStart,
		loadAverageAtEnd: loadavg().map((x) => round(x, 2)),
	};
}

/** `--render`: writes RESULTS.md again from results.json (after a change to the report's layout). */
async function render(): Promise<number> {
	const results = JSON.parse(await fs.readFile(join(REPO_ROOT, "bench", "results.json"), "utf8")) as Results;
	await fs.writeFile(join(REPO_ROOT, "bench", "RESULTS.md"), renderMarkdown(results));
	return 0;
}

/** Every phase of `options` on the line this process drives (piLine()), in this process. */
async function runLine(options: Options, log: (line: string) => void): Promise<LineResults> {
	const startedAt = performance.now();
	const loadAtStart = loadavg().map((x) => round(x, 2));
	const line = piLine();
	log(
		`pi-multi-claude-code benchmark${options.quick ? " (quick)" : ""} on pi ${line.version} ` +
			`(Node ${process.version}): ${options.only.join(", ")}`,
	);

	const api = await startFakeAnthropicApi();
	const tokenEndpoint = await startFakeTokenEndpoint();
	const env = await createBenchEnv({ anthropicBaseUrl: api.baseUrl, tokenUrl: tokenEndpoint.url });
	await writeModelsJson(env.agentDir, api.baseUrl);
	const anthropicToken = newAccessToken();
	const benchToken = await storeBenchAccount({ env });
	await env.writeConfig([{ label: "bench", fallbackTo: [] }], "bench");
	// The state file the bench writes between samples must be one the extension accepts.
	await env.resetState();
	await env.core.state.read();
	// Before any session exists, so every arm's requests pass through it alike.
	installFetchTiming();
	const base = { cwd: env.cwd, agentDir: env.agentDir, anthropicToken };
	const mcc = await createBenchSession({ ...base, withExtension: true, provider: "multi-claude-code" });
	const anthropic = await createBenchSession({ ...base, withExtension: false, provider: "anthropic" });
	const anthropicWithExtension = await createBenchSession({ ...base, withExtension: true, provider: "anthropic" });

	const results = noFigures(options, options.only, machine(loadAtStart));
	const d = results.details;
	const runners: Record<Phase, (ctx: BenchContext) => Promise<void>> = {
		async request(ctx) {
			d.requestOverhead = await requestOverhead(ctx);
			results.requestOverheadMs = d.requestOverhead.instant.addedMedianMs;
			results.requestOverheadP90Ms = d.requestOverhead.instant.addedP90Ms;
			results.requestOverheadRatioAt300ms = d.requestOverhead.at300ms.ratio;
		},
		async failover(ctx) {
			d.failover = await failover(ctx);
			results.failoverOverheadMs = d.failover.overheadMs;
		},
		async keychain(ctx) {
			d.keychain = await keychain(ctx);
			results.keychainGetMs = d.keychain.get.median;
			results.keychainSetMs = d.keychain.set.median;
		},
		async scale(ctx) {
			d.scale = await scale(ctx);
			results.overheadMsAt100Accounts = d.scale.find((p) => p.accounts === 100)?.overhead.addedMedianMs ?? null;
		},
		async contention(ctx) {
			d.contention = await contention(ctx);
			results.refreshCallsUnderContention = Math.max(...d.contention.map((c) => c.maxTokenRequests));
			results.contentionWallMs = Object.fromEntries(d.contention.map((c) => [String(c.processes), c.wallMs]));
		},
		async startup(ctx) {
			d.startup = await startup(ctx);
			results.startupOverheadMs = d.startup.overheadMs;
		},
	};

	try {
		for (const phase of options.only) {
			const phaseStarted = performance.now();
			log(`\n[${phase}]`);
			const ctx: BenchContext = {
				env,
				api,
				tokenEndpoint,
				mcc,
				anthropic,
				anthropicWithExtension,
				benchToken,
				anthropicToken,
				budget: budget(options.quick),
				timeLeftMs: () => DEADLINE_MS - (performance.now() - startedAt),
				log: (text) => log(`  ${text}`),
			};
			try {
				await runners[phase](ctx);
			} catch (error) {
				results.errors[phase] = error instanceof Error ? (error.stack ?? error.message) : String(error);
				log(`  FAILED: ${results.errors[phase]}`);
			}
			log(`  (${((performance.now() - phaseStarted) / 1000).toFixed(1)} s)`);
		}
	} finally {
		for (const session of [mcc, anthropic, anthropicWithExtension]) await session.dispose().catch(() => {});
		await env.cleanup().catch(() => {});
		await api.close().catch(() => {});
		await tokenEndpoint.close().catch(() => {});
	}

	results.durationSec = round((performance.now() - startedAt) / 1000, 1);
	results.machine.loadAverageAtEnd = loadavg().map((x) => round(x, 2));
	return { ...results, targets: targets(results) };
}

/**
 * The pi 1.x half: this script again in a child process on Node >= 22.19 with PI_MCC_PI_LINE=1.x, the test
 * line's way (test/run-tests.ts). Test code's `@mariozechner/*` imports get the modules pi 1.x hands its
 * extensions (JITI_ALIAS, as vitest's alias does for the tests). Its output is streamed; its results come back.
 */
async function runPi1x(args: string[], log: (line: string) => void): Promise<LineResults> {
	const node = process.env.PI_MCC_NODE22;
	if (!node || !process.env.PI_MCC_PI1X_DIR) {
		throw new Error("pi 1.x or a Node >= 22.19 for it is missing (the runner sets PI_MCC_NODE22, PI_MCC_PI1X_DIR)");
	}
	const dist = join(PI_1X_PREFIX, "node_modules", "@earendil-works", "pi-coding-agent", "dist");
	const alias = {
		"@mariozechner/pi-ai": join(dist, "core", "extensions", "pi-ai-extension-view.js"),
		"@mariozechner/pi-coding-agent": join(dist, "index.js"),
	};
	const scratch = mkdtempSync(join(tmpdir(), "pi-mcc-bench-1x-"));
	const out = join(scratch, "results.json");
	try {
		const nodeOptions = (process.env.PI_MCC_BENCH_NODE_OPTIONS ?? "").split(/\s+/).filter(Boolean);
		const entry = process.argv[1] ?? join(REPO_ROOT, "bench", "run.ts");
		log(`\n=== pi 1.x: ${node} ${entry} ${args.join(" ")}\n`);
		const code = await new Promise<number>((resolve) => {
			const child = spawn(node, [...nodeOptions, "--import", "jiti/register", entry, ...args], {
				cwd: REPO_ROOT,
				stdio: "inherit",
				env: {
					...process.env,
					PI_MCC_PI_LINE: "1.x",
					PI_MCC_BENCH_CHILD_OUT: out,
					JITI_ALIAS: JSON.stringify(alias),
				},
			});
			// Bounded: the pi 1.x half takes about 2.5 minutes; a hung child is killed, and its line reports why.
			const timer = setTimeout(() => child.kill("SIGKILL"), PI1X_TIMEOUT_MS);
			child.on("error", () => resolve(127));
			child.on("close", (exitCode) => {
				clearTimeout(timer);
				resolve(exitCode ?? 1);
			});
		});
		const text = await fs.readFile(out, "utf8").catch(() => undefined);
		if (!text) throw new Error(`the pi 1.x bench wrote no results (exit code ${code})`);
		return JSON.parse(text) as LineResults;
	} finally {
		rmSync(scratch, { recursive: true, force: true });
	}
}

/** Results of a line that was not run (--line=): every figure null. */
function notRun(options: Options, line: PiLineName, why: string): LineResults {
	const pi = line === "1.x" ? "1.x (not run)" : "(not run)";
	const results = noFigures(options, [], { ...machine(loadavg().map((x) => round(x, 2))), pi });
	results.errors.line = why;
	return { ...results, targets: targets(results) };
}

/** A line's results before any phase has run: every headline figure null. */
function noFigures(options: Options, phases: Phase[], onMachine: LineResults["machine"]): Omit<LineResults, "targets"> {
	return {
		generatedAt: new Date().toISOString(),
		durationSec: 0,
		quick: options.quick,
		phases,
		machine: onMachine,
		requestOverheadMs: null,
		requestOverheadP90Ms: null,
		requestOverheadRatioAt300ms: null,
		failoverOverheadMs: null,
		refreshCallsUnderContention: null,
		contentionWallMs: null,
		startupOverheadMs: null,
		keychainGetMs: null,
		keychainSetMs: null,
		overheadMsAt100Accounts: null,
		errors: {},
		details: {},
	};
}

async function main(): Promise<number> {
	const args = process.argv.slice(2);
	if (args.join(" ") === "--render") return render();
	const options = parseArgs(args);
	if (process.platform === "linux" && process.env.PI_MCC_INSIDE_TEST_KEYRING !== "1") {
		throw new Error(
			"run the benchmark with `npm run bench` (bench/run-with-keyring.sh): it needs its private keyring",
		);
	}
	const log = (line: string) => process.stdout.write(`${line}\n`);
	if (CHILD_OUT) {
		const own = await runLine(options, log);
		await fs.writeFile(CHILD_OUT, JSON.stringify(own));
		return 0;
	}
	const startedAt = performance.now();
	const pinned = options.lines.includes("0.73")
		? await runLine(options, log)
		: notRun(options, "0.73", "not run (--line=1.x)");
	let current: LineResults;
	try {
		current = options.lines.includes("1.x")
			? await runPi1x(args, log)
			: notRun(options, "1.x", "not run (--line=0.73)");
	} catch (error) {
		current = notRun(options, "1.x", error instanceof Error ? error.message : String(error));
		log(`pi 1.x: ${current.errors.line}`);
	}
	const final: Results = {
		...pinned,
		pi1x: current,
		totalDurationSec: round((performance.now() - startedAt) / 1000, 1),
	};
	const suffix = options.record ? "" : ".quick";
	const jsonFile = join(REPO_ROOT, "bench", `results${suffix}.json`);
	const mdFile = join(REPO_ROOT, "bench", `RESULTS${suffix}.md`);
	await fs.writeFile(jsonFile, `${JSON.stringify(final, null, "\t")}\n`);
	await fs.writeFile(mdFile, renderMarkdown(final));
	log("\nTargets:");
	const ran = [
		...(options.lines.includes("0.73") ? [pinned] : []),
		...(options.lines.includes("1.x") ? [current] : []),
	];
	for (const line of ran) {
		const name = `pi ${line.machine.pi}`;
		for (const t of line.targets) {
			const verdict = t.met === null ? "not measured" : t.met ? "met" : "MISSED";
			log(`  ${name}: ${t.key}: ${t.value ?? "–"} (target ${t.target}) ${verdict}`);
		}
	}
	log(`\nWrote ${jsonFile} and ${mdFile} in ${final.totalDurationSec} s.`);
	const failed = (line: LineResults, ran: boolean) => ran && Object.keys(line.errors).length > 0;
	return failed(pinned, options.lines.includes("0.73")) || failed(current, options.lines.includes("1.x")) ? 1 : 0;
}

main().then(
	(code) => process.exit(code),
	(error: unknown) => {
		process.stderr.write(
			`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
		);
		process.exit(1);
	},
);
