/**
 * 1. Request overhead: prompt → finished reply through pi with the extension (multi-claude-code) versus plain pi
 * (built-in anthropic), same model, same fake server, same token shape; with an instant server and with a
 * 300 ms time to first token. Also times the extension's per-request steps on their own, to explain the figure.
 */

import { ok } from "../../test/helpers/fake-anthropic-api.ts";
import { newAccessToken, newRefreshToken } from "../../test/helpers/fake-token-endpoint.ts";
import type { BenchContext } from "../lib/context.ts";
import { type ArmSamples, type OverheadFigures, overheadFigures, REPLY_TEXT, runInterleaved } from "../lib/paired.ts";
import { type Summary, settle, shuffled, summarize } from "../lib/stats.ts";

export const BENCH_LABEL = "bench";

export interface RequestOverheadResult {
	/** multi-claude-code versus plain pi on the built-in anthropic provider: the whole cost of the extension. */
	instant: OverheadFigures;
	/** multi-claude-code versus the built-in anthropic provider in a pi that has the extension loaded too. */
	instantVsExtensionLoaded: OverheadFigures;
	/** The built-in anthropic provider with the extension loaded versus without (pi's own per-extension cost). */
	extensionLoadedVsPlain: OverheadFigures;
	at300ms: OverheadFigures;
	/** Request body bytes each provider sent (same prompt, same model: they should match). */
	payloadBytes: { mcc: number; anthropic: number };
	/** The extension's per-request steps, timed alone in this process (warm caches, as on every request). */
	steps: Record<"configRead" | "stateRead" | "getAccessToken", Summary>;
}

/** Stores the benchmark account once (keychain) and returns its access token. */
export async function storeBenchAccount(ctx: Pick<BenchContext, "env">): Promise<string> {
	const access = newAccessToken();
	const expires = Date.now() + 8 * 60 * 60 * 1000;
	await ctx.env.storeAccount(BENCH_LABEL, { access, refresh: newRefreshToken(), expires });
	return access;
}

/** Makes the benchmark account the only, active one; scripts both arms' tokens to answer after `delayMs`. */
export async function useBenchAccount(ctx: BenchContext, delayMs = 0): Promise<void> {
	ctx.api.script(ctx.benchToken, ok(REPLY_TEXT, { delayMs }));
	ctx.api.script(ctx.anthropicToken, ok(REPLY_TEXT, { delayMs }));
	await ctx.env.writeConfig([{ label: BENCH_LABEL, fallbackTo: [] }], BENCH_LABEL);
	await ctx.mcc.useAccount(BENCH_LABEL);
	await ctx.env.quiesce();
	await ctx.env.resetState();
}

export async function requestOverhead(ctx: BenchContext): Promise<RequestOverheadResult> {
	const { budget } = ctx;
	await useBenchAccount(ctx);
	const arms = [ctx.mcc, ctx.anthropic, ctx.anthropicWithExtension];
	const quiesce = ctx.env.quiesce;
	const instant = await runInterleaved(arms, { warmup: budget.n(40, 10), samples: budget.n(800, 60), quiesce });
	const payloadBytes = verifyRequests(ctx);
	const arm = (session: (typeof arms)[number]) => instant.arms.get(session) as ArmSamples;
	const failures = instant.failures.length;
	const instantFigures = overheadFigures(arm(ctx.mcc), arm(ctx.anthropic), failures);
	const vsLoaded = overheadFigures(arm(ctx.mcc), arm(ctx.anthropicWithExtension), failures);
	const loadedVsPlain = overheadFigures(arm(ctx.anthropicWithExtension), arm(ctx.anthropic), failures);
	const f = instantFigures;
	ctx.log(
		`instant server: added median ${f.addedMedianMs} ms (paired ${f.addedPairedMedianMs}), p90 ${f.addedP90Ms} ms (mcc ${f.mcc.median} ms, ` +
			`anthropic ${f.baseline.median} ms, n=${f.mcc.n}); before the request ${f.addedBeforeRequestMs} ms, ` +
			`after the response ${f.addedAfterResponseMs} ms`,
	);
	ctx.log(
		`  pi's cost of having the extension loaded (anthropic with vs without it): ${loadedVsPlain.addedMedianMs} ms; ` +
			`the provider path (mcc vs anthropic, both with it loaded): ${vsLoaded.addedMedianMs} ms`,
	);
	ctx.api.clearRequests();

	await useBenchAccount(ctx, 300);
	const slow = await runInterleaved([ctx.mcc, ctx.anthropic], { warmup: 2, samples: budget.n(40, 6), quiesce });
	const slowArm = (session: BenchContext["mcc"]) => slow.arms.get(session) as ArmSamples;
	const slowFigures = overheadFigures(slowArm(ctx.mcc), slowArm(ctx.anthropic), slow.failures.length);
	ctx.log(
		`300 ms to first token: ratio ${slowFigures.ratio} (added median ${slowFigures.addedMedianMs} ms, ` +
			`n=${slowFigures.mcc.n})`,
	);
	ctx.api.clearRequests();
	await useBenchAccount(ctx);

	const steps = await timeSteps(ctx, budget.n(300, 40));
	ctx.log(
		`steps alone (median): config.read ${steps.configRead.median} ms, state.read ${steps.stateRead.median} ms, ` +
			`broker.getAccessToken ${steps.getAccessToken.median} ms`,
	);
	return {
		instant: instantFigures,
		instantVsExtensionLoaded: vsLoaded,
		extensionLoadedVsPlain: loadedVsPlain,
		at300ms: slowFigures,
		payloadBytes,
		steps,
	};
}

/** Both providers really sent their own token, as Bearer (the OAuth request shape); returns their body sizes. */
function verifyRequests(ctx: BenchContext): RequestOverheadResult["payloadBytes"] {
	const mcc = ctx.api.requestsFor(ctx.benchToken);
	const plain = ctx.api.requestsFor(ctx.anthropicToken);
	if (mcc.length === 0 || plain.length === 0) throw new Error("a session did not reach the fake Messages API");
	for (const request of [...mcc, ...plain]) {
		if (request.authScheme !== "bearer") throw new Error("a request was not sent with an OAuth bearer token");
	}
	const payloadBytes = { mcc: JSON.stringify(mcc[0]!.body).length, anthropic: JSON.stringify(plain[0]!.body).length };
	if (payloadBytes.mcc !== payloadBytes.anthropic) {
		ctx.log(
			`warning: the providers sent different payloads (${payloadBytes.mcc} vs ${payloadBytes.anthropic} bytes)`,
		);
	}
	return payloadBytes;
}

async function timeSteps(ctx: BenchContext, samples: number): Promise<RequestOverheadResult["steps"]> {
	const { core } = ctx.env;
	const steps = {
		configRead: () => core.config.read(),
		stateRead: () => core.state.read(),
		getAccessToken: () => core.broker.getAccessToken(BENCH_LABEL),
	};
	const times: Record<keyof typeof steps, number[]> = { configRead: [], stateRead: [], getAccessToken: [] };
	const names = Object.keys(steps) as Array<keyof typeof steps>;
	for (let i = 0; i < samples + 20; i++) {
		for (const name of shuffled(names)) {
			const started = performance.now();
			await steps[name]();
			const ms = performance.now() - started;
			if (i >= 20) times[name].push(ms);
			await settle();
		}
	}
	return {
		configRead: summarize(times.configRead),
		stateRead: summarize(times.stateRead),
		getAccessToken: summarize(times.getAccessToken),
	};
}
