/**
 * Issue 7, promise 1: no token in the command line or environment of any process this project runs in or starts
 * (pi in RPC mode, the browser launcher of /mcc-login, refresh workers and what they start, the migration), read
 * from /proc while those processes hold tokens; and no token in any file, not even a temp file that exists for a
 * moment, while refreshes and a migration run (every directory watched, every file read as it appears, and —
 * where strace is available — every byte written to any file by the processes under test).
 */
import { spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { setupAccounts } from "../helpers/accounts.ts";
import { ok } from "../helpers/fake-anthropic-api.ts";
import { requireSecretService } from "../helpers/keyring.ts";
import type { RunResult } from "../helpers/migration-cli.ts";
import { migrateRunner, migrateScript, removeMigrateBuild } from "../helpers/migration-cli.ts";
import { legacyAccount, legacyText, tokensOf } from "../helpers/migration-sandbox.ts";
import { lastLoginState, RpcPi } from "../helpers/rpc-pi.ts";
import {
	descendants,
	describeHits,
	type Hit,
	listFiles,
	processSurfaces,
	processTree,
	scanProcessTree,
	scanText,
	scanTree,
	scanWatched,
	TreeWatcher,
} from "./helpers/leak-scan.ts";
import { type SyscallTrace, startSyscallTrace, straceAvailable, type TraceReport } from "./helpers/syscall-trace.ts";
import { Worker, warmUpWorkers } from "./helpers/workers.ts";
import { createSecurityWorld, type SecurityWorld, sleep, until } from "./helpers/world.ts";

let world: SecurityWorld;
/** The system's temp directory (the world's TMPDIR replaces it for this process and every child). */
const systemTmp = tmpdir();

beforeAll(async () => {
	await requireSecretService();
	world = await createSecurityWorld({ PI_MCC_TOKEN_TIMEOUT_MS: "10000", PI_MCC_KEYCHAIN_TIMEOUT_MS: "15000" });
	world.api.setDefault(ok("answer"));
	await warmUpWorkers(world.childEnv());
}, 120_000);

afterAll(async () => {
	await world?.close();
	await removeMigrateBuild();
});

/** Reads /proc of the process tree every few ms until `stop` resolves; returns reads and hits. */
async function watchProcesses(
	pids: () => number[],
	secrets: () => readonly string[],
	name: string,
	stop: Promise<unknown>,
): Promise<{ reads: number; processes: Set<number>; hits: Hit[] }> {
	let done = false;
	const finish = (): void => {
		done = true;
	};
	stop.then(finish, finish);
	const result = { reads: 0, processes: new Set<number>(), hits: [] as Hit[] };
	for (let round = 0; round < 2_000 && !done; round++) {
		for (const target of await processTree(pids())) {
			const surfaces = await processSurfaces(target).catch(() => undefined);
			if (!surfaces) continue;
			result.reads++;
			result.processes.add(target);
			result.hits.push(...scanText(`${name} pid ${target} cmdline`, surfaces.cmdline, secrets()));
			result.hits.push(...scanText(`${name} pid ${target} environ`, surfaces.environ, secrets()));
		}
		await sleep(5);
	}
	await stop;
	return result;
}

describe("process command lines and environments", () => {
	it("pi in RPC mode and the browser launcher it starts carry no token, while pi logs in, asks and refreshes", {
		timeout: 120_000,
	}, async () => {
		const browserDir = join(world.tmp, "browser");
		await fs.mkdir(browserDir, { recursive: true });
		const recorder = join(browserDir, "record-browser.sh");
		// What xdg-open runs for the login URL: it keeps its own command line and environment for the check.
		await fs.writeFile(
			recorder,
			[
				"#!/bin/sh",
				`cat /proc/$$/cmdline > "${browserDir}/launch-$$.cmdline"`,
				`cat /proc/$$/environ > "${browserDir}/launch-$$.environ"`,
				"",
			].join("\n"),
			{ mode: 0o700 },
		);
		const env = world.childEnv({
			BROWSER: recorder,
			PI_MCC_NO_BROWSER: undefined,
			DISPLAY: undefined,
			WAYLAND_DISPLAY: undefined,
			XDG_CURRENT_DESKTOP: undefined,
			PI_MCC_REFRESH_MARGIN_MS: "1000",
		});
		const pi = await RpcPi.start({ env: world.env, processEnv: env });
		let checks = 0;
		const hits: Hit[] = [];
		const check = async (moment: string): Promise<void> => {
			const found = await scanProcessTree(pi.pid, world.secrets(), `pi (${moment})`);
			checks += found.processes;
			hits.push(...found.hits);
		};
		try {
			await check("started");
			const code = world.newCode();
			pi.queueInput((_request, self) => `${code}#${lastLoginState(self)}`);
			await pi.command("/mcc-login work --browser");
			expect(pi.notifications().at(-1)).toContain('Added account "work"');
			await until(
				async () => (await fs.readdir(browserDir)).some((name) => name.endsWith(".environ")),
				"the launch",
			);
			await check("logged in");

			// A request whose answer is held back for a while, and a refresh the token endpoint is slow to answer:
			// /proc is read over and over while pi holds the tokens.
			const [access] = world.tokens.issued.slice(-2);
			world.api.script(access ?? "", ok("answer from work", { delayMs: 600 }));
			const asking = pi.prompt("hello");
			const duringRequest = await watchProcesses(
				() => [pi.pid],
				() => world.secrets(),
				"pi asking",
				asking,
			);
			expect((await asking).text).toBe("answer from work");
			// A second login whose access token lives 2 s (refresh margin 1 s), then a refresh the endpoint is slow on.
			world.tokens.setExpiresIn(2);
			const again = world.newCode();
			pi.queueInput((_request, self) => `${again}#${lastLoginState(self)}`);
			await pi.command("/mcc-login work --browser");
			world.tokens.setDelay(600);
			await sleep(1_100);
			const refreshing = pi.prompt("hello after expiry");
			const duringRefresh = await watchProcesses(
				() => [pi.pid],
				() => world.secrets(),
				"pi refreshing",
				refreshing,
			);
			expect((await refreshing).text).toBe("answer");
			expect(world.tokens.requests.at(-1)?.grant_type).toBe("refresh_token");
			await check("after the refresh");
			hits.push(...duringRequest.hits, ...duringRefresh.hits);
			checks += duringRequest.reads + duringRefresh.reads;
			expect(duringRequest.reads + duringRefresh.reads).toBeGreaterThan(10);
		} finally {
			world.tokens.setDelay(0);
			world.tokens.setExpiresIn(28_800);
			await pi.stop();
		}
		const launches = (await fs.readdir(browserDir)).filter((name) => name.startsWith("launch-"));
		expect(launches.length).toBeGreaterThanOrEqual(2);
		for (const name of launches)
			hits.push(...scanText(`browser launcher ${name}`, await fs.readFile(join(browserDir, name)), world.secrets()));
		const launchedWith = await fs.readFile(
			join(browserDir, launches.find((n) => n.endsWith(".cmdline")) ?? ""),
			"utf8",
		);
		expect(launchedWith).toContain("https://claude.ai/oauth/authorize");
		console.log(
			`[leak-surfaces] pi: ${checks} /proc reads of pi and its children, ${launches.length / 2} browser launch(es)`,
		);
		expect(describeHits(hits)).toBe("");
	});

	it("refresh workers and the processes they start carry no token, read again and again mid-refresh", {
		timeout: 90_000,
	}, async () => {
		const labels = ["r1", "r2", "r3"];
		await setupAccounts({ accounts: labels.map((label) => ({ label })), tokens: world.tokens });
		world.tokens.setDelay(40);
		const env = world.childEnv({ PI_MCC_REFRESH_MARGIN_MS: String(24 * 3_600_000) });
		const workers = await Promise.all(labels.map(() => Worker.start(env)));
		try {
			const before = world.tokens.requests.length;
			for (const [index, worker] of workers.entries()) worker.send({ op: "refresh-loop", label: labels[index] });
			const settle = sleep(2_500);
			const watched = await watchProcesses(
				() => workers.map((w) => w.pid),
				() => world.secrets(),
				"worker",
				settle,
			);
			const childEnvs = await Promise.all(workers.map((worker) => worker.call({ op: "child-env" })));
			const refreshes = world.tokens.requests.length - before;
			const hits = [...watched.hits];
			for (const [index, line] of childEnvs.entries()) {
				expect(String(line.childEnv)).toContain("PI_MCC_KEYCHAIN_SERVICE=");
				hits.push(
					...scanText(`environment inherited from worker ${index}`, String(line.childEnv), world.secrets()),
				);
			}
			for (const worker of workers)
				hits.push(...scanText(`worker ${worker.pid} output`, worker.output, world.secrets()));
			console.log(`[leak-surfaces] workers: ${watched.reads} /proc reads during ${refreshes} refreshes`);
			expect(refreshes).toBeGreaterThanOrEqual(6);
			expect(watched.processes.size).toBeGreaterThanOrEqual(3);
			expect(describeHits(hits)).toBe("");
		} finally {
			world.tokens.setDelay(0);
			// A graceful exit: proper-lockfile releases the locks a worker holds when its process exits.
			for (const worker of workers) await worker.stop();
		}
	});

	it("a migration holding tokens mid-run carries none in its command line or environment", {
		timeout: 60_000,
	}, async () => {
		const accounts = [legacyAccount("mig-a"), legacyAccount("mig-b")];
		const file = join(world.env.home, "legacy-paused", "multi-claude-code.json");
		await fs.mkdir(join(world.env.home, "legacy-paused"), { recursive: true, mode: 0o700 });
		await fs.writeFile(file, legacyText(accounts), { mode: 0o600 });
		const migrate = await migrateRunner(world.childEnv());
		const paused = await migrate.startPaused(["--file", file], "stored:mig-a");
		const secrets = [...world.secrets(), ...tokensOf(accounts)];
		const children = [];
		for (const pid of await descendants(process.pid)) {
			const surfaces = await processSurfaces(pid).catch(() => undefined);
			if (surfaces?.cmdline.toString().includes("migrate.js")) children.push({ pid, surfaces });
		}
		const result = await paused.resume();
		expect(result.code, result.stderr).toBe(0);
		expect(children.length).toBe(1);
		const hits = children.flatMap(({ pid, surfaces }) => [
			...scanText(`migration ${pid} cmdline`, surfaces.cmdline, secrets),
			...scanText(`migration ${pid} environ`, surfaces.environ, secrets),
		]);
		hits.push(...scanText("migration output", result.stdout + result.stderr, secrets));
		expect(describeHits(hits)).toBe("");
	});
});

describe("files, even for a moment", () => {
	it("no token is in any file that appears while refresh-heavy processes and a migration run", {
		timeout: 120_000,
	}, async () => {
		const labels = ["heavy-a", "heavy-b", "heavy-c"];
		await setupAccounts({
			accounts: [
				{ label: "heavy-a", fallbackTo: ["heavy-b", "heavy-c"], expiresInMs: 1_000 },
				{ label: "heavy-b", expiresInMs: 1_000 },
				{ label: "heavy-c", expiresInMs: 1_000 },
			],
			tokens: world.tokens,
		});
		world.tokens.setExpiresIn(1);
		const legacy = [legacyAccount("moved-a"), legacyAccount("moved-b", { fallbackTo: "moved-a" })];
		const legacyDir = join(world.env.home, "legacy-watched");
		const legacyFile = join(legacyDir, "multi-claude-code.json");
		await fs.mkdir(legacyDir, { recursive: true, mode: 0o700 });
		const original = legacyText(legacy);
		await fs.writeFile(legacyFile, original, { mode: 0o600 });
		const tmpBefore = new Set(await fs.readdir(systemTmp));
		const traced = await straceAvailable();
		const traces: SyscallTrace[] = [];
		const watcher = new TreeWatcher([world.env.root]);
		await watcher.start();
		const env = world.childEnv({ PI_MCC_REFRESH_MARGIN_MS: "500", PI_MCC_SEC_SHARED_LABELS: labels.join(",") });
		const workers: Worker[] = [];
		let migrated: RunResult | undefined;
		try {
			for (let index = 0; index < 3; index++) {
				const trace = traced && index === 0 ? await startSyscallTrace(systemTmp) : undefined;
				if (trace) traces.push(trace);
				workers.push(
					await Worker.start({ ...env, PI_MCC_SEC_WORKER: String(index) }, trace ? { wrap: trace.wrap } : {}),
				);
			}
			const runs = workers.map((worker) =>
				worker.call({ op: "load", seconds: 5, updates: 3, touchAll: true }, 60_000),
			);
			await sleep(1_500);
			const migrate = await migrateRunner(world.childEnv());
			const migrationTrace = traced ? await startSyscallTrace(systemTmp) : undefined;
			if (migrationTrace) traces.push(migrationTrace);
			migrated = await (migrationTrace
				? runTraced(migrationTrace, legacyFile)
				: migrate.run(["--file", legacyFile]));
			const summaries = await Promise.all(runs);
			console.log(
				`[leak-surfaces] requests per process: ${summaries.map((s) => `${s.ok}/${s.requests}`).join(", ")}`,
			);
			for (const summary of summaries) {
				expect(summary.done, JSON.stringify(summary)).toBe(true);
				expect(Number(summary.ok)).toBeGreaterThan(0);
			}
		} finally {
			for (const worker of workers) await worker.stop();
			world.tokens.setExpiresIn(28_800);
		}
		const report = await watcher.stop();
		expect(migrated?.code, migrated?.stderr).toBe(0);

		const secrets = [...world.secrets(), ...tokensOf(legacy)];
		const refreshes = world.tokens.requests.filter((request) => request.grant_type === "refresh_token").length;
		// The legacy file held tokens before the migration by design: only that original content is exempt.
		const hits = scanWatched(
			report,
			secrets,
			(path, content) => path === legacyFile && content.toString() === original,
		);
		let traceReport: TraceReport = { files: new Set(), writes: 0, bytes: 0, hits: [] };
		for (const trace of traces) {
			const one = await trace.finish(secrets);
			traceReport = {
				files: new Set([...traceReport.files, ...one.files]),
				writes: traceReport.writes + one.writes,
				bytes: traceReport.bytes + one.bytes,
				hits: [...traceReport.hits, ...one.hits],
			};
		}
		hits.push(...traceReport.hits);
		// Anything new in the system's temp directory (the trace logs are gone by now).
		const newInTmp = (await fs.readdir(systemTmp))
			.filter((name) => !tmpBefore.has(name))
			.map((name) => join(systemTmp, name));
		const tmpScan = await scanTree(newInTmp, secrets);
		hits.push(...tmpScan.hits);
		for (const worker of workers) hits.push(...scanText(`worker ${worker.pid} output`, worker.output, secrets));
		hits.push(...scanText("migration output", `${migrated?.stdout}${migrated?.stderr}`, secrets));

		const seen = [...report.seen];
		const temps = seen.filter((path) => path.endsWith(".tmp"));
		const versions = [...report.versions.values()].reduce((sum, list) => sum + list.length, 0);
		console.log(
			`[leak-surfaces] watched ${seen.length} paths (${temps.length} atomic-write temp files), ` +
				`${versions} versions ` +
				`read (${report.bytes} bytes), ${tmpScan.files} new files in ${systemTmp}; ${refreshes} refreshes; ` +
				(traced
					? `strace: ${traceReport.writes} writes (${traceReport.bytes} bytes) to ${traceReport.files.size} files`
					: "strace not available: watcher only"),
		);
		expect(describeHits(hits)).toBe("");
		expect(refreshes).toBeGreaterThanOrEqual(6);
		expect(temps.length).toBeGreaterThanOrEqual(3);
		expect(temps.some((path) => path.includes("multi-claude-code-state.json"))).toBe(true);
		expect(seen).toContain(legacyFile);
		expect(await fs.readFile(legacyFile, "utf8")).not.toBe(original);
		if (traced) {
			// The traced worker wrote the shared files (at least its config updates), through temp files.
			expect(traceReport.writes).toBeGreaterThanOrEqual(3);
			expect([...traceReport.files].some((path) => path.endsWith(".tmp"))).toBe(true);
		}
		expect((await listFiles([world.env.agentDir])).length).toBeGreaterThanOrEqual(2);
	});
});

/** The migration bin under strace (the same script the Migrate runner starts, as strace's child). */
async function runTraced(trace: SyscallTrace, file: string): Promise<RunResult> {
	const [command, args] = trace.wrap(process.execPath, [await migrateScript(), "--file", file]);
	return new Promise((resolve, reject) => {
		const child = spawn(command, args, { env: world.childEnv(), stdio: ["ignore", "pipe", "pipe"] });
		let stdout = "";
		let stderr = "";
		child.stdout.on("data", (chunk: Buffer) => {
			stdout += chunk.toString();
		});
		child.stderr.on("data", (chunk: Buffer) => {
			stderr += chunk.toString();
		});
		const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
		child.on("error", reject);
		child.on("close", (code, signal) => {
			clearTimeout(timer);
			resolve({ code, signal, stdout, stderr });
		});
	});
}
