/**
 * 3. Refresh under contention: N separate processes (N = 2, 8, 32) ask for the same account's access token at
 * once, while the stored one has expired. Refresh tokens are single-use and rotate (the fake token endpoint
 * refuses a second use), so a correct broker makes exactly one token request per round and every process ends
 * with the same new token. Measured: token requests per round and the time until the last process has its token.
 */
import { createHash } from "node:crypto";
import { waitForExit } from "../../test/helpers/keyring.ts";
import { type RefreshWorker, type RefreshWorkerLine, startRefreshWorker } from "../../test/helpers/worker-process.ts";
import type { BenchContext } from "../lib/context.ts";
import { median, round as round3, type Summary, settle, summarize } from "../lib/stats.ts";

// The contenders are the contention test's own worker (test/fixtures/refresh-worker.ts), one process each.
const LABEL = "contention";

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

async function runSize(ctx: BenchContext, workers: RefreshWorker[], rounds: number): Promise<ContentionResult> {
	const processes = workers.length;
	const results: ContentionRound[] = [];
	for (let r = 0; r < rounds; r++) {
		const stale = await expireAccount(ctx);
		const requestsBefore = ctx.tokenEndpoint.requests.length;
		const answers: Array<{ line: RefreshWorkerLine; at: number }> = [];
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
		const errors = answers.flatMap((a) => (a.line.error ? [`${a.line.error.name}: ${a.line.error.message}`] : []));
		if (errors.length > 0) throw new Error(`contention round failed: ${errors.join(" | ")}`);
		const stored = await ctx.env.core.broker.getAccessToken(LABEL);
		const sha = createHash("sha256").update(stored).digest("hex");
		if (stored === stale || answers.some((a) => a.line.sha256 !== sha)) {
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
	const env = { ...process.env, PI_MCC_WORKER_LABEL: LABEL };
	// One set of processes for every size: the first N of them take part, the others stay idle.
	const workers = Array.from({ length: Math.max(...sizes.map(([n]) => n)) }, () => startRefreshWorker(env));
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
		await Promise.all(
			workers.map(async (w) => {
				if (!(await waitForExit(w.child, 5_000))) w.child.kill("SIGKILL");
			}),
		);
	}
}
