/**
 * 3. Refresh under contention: N separate processes (N = 2, 8, 32) ask for the same account's access token at
 * once, while the stored one has expired. Refresh tokens are single-use and rotate (the fake token endpoint
 * refuses a second use), so a correct broker makes exactly one token request per round and every process ends
 * with the same new token. Measured: token requests per round and the time until the last process has its token.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { BenchContext } from "../lib/context.ts";
import { REPO_ROOT } from "../lib/pi.ts";
import { median, round as round3, type Summary, settle, summarize } from "../lib/stats.ts";

const LABEL = "contention";
const WORKER = join(REPO_ROOT, "bench", "workers", "refresh-worker.ts");
const WORKER_BOOT = `import { createJiti } from "jiti"; await createJiti(import.meta.url).import(${JSON.stringify(
	WORKER,
)});`;

interface WorkerLine {
	pid: number;
	ready?: boolean;
	round?: string;
	sha?: string;
	ms?: number;
	error?: string;
}

interface Worker {
	child: ChildProcess;
	lines: WorkerLine[];
	output: string;
	/** Called with every parsed line, when it arrives. */
	onLine?: (line: WorkerLine, at: number) => void;
}

export interface ContentionRound {
	tokenRequests: number;
	wallMs: number;
	/** Each process's own time in getAccessToken. */
	perProcessMs: number[];
}

export interface ContentionResult {
	processes: number;
	rounds: ContentionRound[];
	/** Median over rounds of the time from the barrier's release until the last process had its token. */
	wallMs: number;
	maxTokenRequests: number;
	perProcess: Summary;
}

function startWorker(env: NodeJS.ProcessEnv): Worker {
	const child = spawn(process.execPath, ["--input-type=module", "-e", WORKER_BOOT], {
		cwd: REPO_ROOT,
		env,
		stdio: ["pipe", "pipe", "pipe"],
	});
	const worker: Worker = { child, lines: [], output: "" };
	createInterface({ input: child.stdout! }).on("line", (text) => {
		const at = performance.now();
		worker.output += `${text}\n`;
		try {
			const line = JSON.parse(text) as WorkerLine;
			worker.lines.push(line);
			worker.onLine?.(line, at);
		} catch {
			// kept in output for the error message
		}
	});
	child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
		worker.output += chunk;
	});
	child.stdin!.on("error", () => {});
	return worker;
}

async function waitUntil(check: () => boolean, withinMs: number, what: () => string): Promise<void> {
	const deadline = Date.now() + withinMs;
	while (!check()) {
		if (Date.now() > deadline) throw new Error(`timed out: ${what()}`);
		await settle(5);
	}
}

async function expireAccount(ctx: BenchContext): Promise<string> {
	const pair = ctx.tokenEndpoint.mintPair();
	// Expired a minute ago: every process must refresh (or pick up the pair another one just stored).
	await ctx.env.storeAccount(LABEL, { access: pair.access, refresh: pair.refresh, expires: Date.now() - 60_000 });
	await ctx.env.resetState();
	return pair.access;
}

async function runSize(ctx: BenchContext, workers: Worker[], rounds: number): Promise<ContentionResult> {
	const processes = workers.length;
	const results: ContentionRound[] = [];
	for (let r = 0; r < rounds; r++) {
		const stale = await expireAccount(ctx);
		const requestsBefore = ctx.tokenEndpoint.requests.length;
		const answers: Array<{ line: WorkerLine; at: number }> = [];
		const round = `${processes}-${r}`;
		for (const worker of workers) {
			worker.onLine = (line, at) => {
				if (line.round === round) answers.push({ line, at });
			};
		}
		await settle(50);
		// The barrier: every process is idle, waiting on stdin; release them all at once.
		const released = performance.now();
		for (const worker of workers) worker.child.stdin!.write(`go ${round}\n`);
		await waitUntil(
			() => answers.length === processes,
			60_000,
			() => `round ${round}: ${answers.length} answers; ${workers.map((w) => w.output).join("\n")}`,
		);
		const tokenRequests = ctx.tokenEndpoint.requests.length - requestsBefore;
		const errors = answers.filter((a) => a.line.error).map((a) => a.line.error);
		if (errors.length > 0) throw new Error(`contention round failed: ${errors.join(" | ")}`);
		const stored = await ctx.env.core.broker.getAccessToken(LABEL);
		const sha = createHash("sha256").update(stored).digest("hex").slice(0, 16);
		if (stored === stale || answers.some((a) => a.line.sha !== sha)) {
			throw new Error(`contention round ${round}: the processes did not all end with the one refreshed token`);
		}
		results.push({
			tokenRequests,
			wallMs: round3(Math.max(...answers.map((a) => a.at)) - released),
			perProcessMs: answers.map((a) => round3(a.line.ms ?? Number.NaN)),
		});
	}
	const result: ContentionResult = {
		processes,
		rounds: results,
		wallMs: round3(median(results.map((r) => r.wallMs))),
		maxTokenRequests: Math.max(...results.map((r) => r.tokenRequests)),
		perProcess: summarize(results.flatMap((r) => r.perProcessMs)),
	};
	ctx.log(
		`N=${processes}: token requests per round ${results.map((r) => r.tokenRequests).join(",")}; all have the ` +
			`token after ${result.wallMs} ms (median of ${rounds} rounds: ${results.map((r) => r.wallMs).join(", ")})`,
	);
	return result;
}

export async function contention(ctx: BenchContext): Promise<ContentionResult[]> {
	const sizes: Array<[number, number]> = [
		[2, ctx.budget.n(7, 2)],
		[8, ctx.budget.n(5, 2)],
		[32, ctx.budget.n(3, 1)],
	];
	await expireAccount(ctx);
	const env = { ...process.env, PI_MCC_BENCH_LABEL: LABEL };
	// One set of processes for every size: the first N of them take part, the others stay idle.
	const workers = Array.from({ length: Math.max(...sizes.map(([n]) => n)) }, () => startWorker(env));
	try {
		await waitUntil(
			() => workers.every((w) => w.lines.some((l) => l.ready)),
			120_000,
			() => `contention workers did not start: ${workers.map((w) => w.output).join("\n")}`,
		);
		const results: ContentionResult[] = [];
		for (const [processes, rounds] of sizes) results.push(await runSize(ctx, workers.slice(0, processes), rounds));
		return results;
	} finally {
		for (const worker of workers) worker.child.stdin!.end("exit\n");
		await Promise.all(workers.map((w) => exited(w.child)));
	}
}

function exited(child: ChildProcess): Promise<void> {
	return new Promise((resolve) => {
		if (child.exitCode !== null || child.signalCode !== null) return resolve();
		const timer = setTimeout(() => {
			child.kill("SIGKILL");
			resolve();
		}, 5_000);
		child.once("exit", () => {
			clearTimeout(timer);
			resolve();
		});
	});
}
