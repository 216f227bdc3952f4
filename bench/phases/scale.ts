/**
 * 6. Scale: the request overhead (as in 1.) with 1, 10 and 100 configured accounts, each with a long fallback
 * chain (every account falls back to the next min(N − 1, 64) accounts — 64 is the config's limit), and every
 * account's item in the keychain. Also times config.read() alone at each size (validated once, then cloned from
 * the cache on every request).
 */
import { promises as fs } from "node:fs";
import { ok } from "../../test/helpers/fake-anthropic-api.ts";
import { newAccessToken, newRefreshToken } from "../../test/helpers/fake-token-endpoint.ts";
import type { BenchContext } from "../lib/context.ts";
import { type ArmSamples, type OverheadFigures, overheadFigures, REPLY_TEXT, runInterleaved } from "../lib/paired.ts";
import { type Summary, settle, summarize } from "../lib/stats.ts";

export interface ScalePoint {
	accounts: number;
	chainLength: number;
	configBytes: number;
	overhead: OverheadFigures;
	configRead: Summary;
}

const label = (i: number) => `scale-${String(i).padStart(3, "0")}`;

export async function scale(ctx: BenchContext): Promise<ScalePoint[]> {
	const { env, api } = ctx;
	const sizes = [1, 10, 100];
	const largest = Math.max(...sizes);
	const activeToken = newAccessToken();
	const expires = Date.now() + 8 * 60 * 60 * 1000;
	for (let i = 0; i < largest; i++) {
		const access = i === 0 ? activeToken : newAccessToken();
		await env.storeAccount(label(i), { access, refresh: newRefreshToken(), expires });
	}
	// gnome-keyring rewrites its keyring file after changes: let it finish before anything is timed.
	await settle(2_000);
	api.script(activeToken, ok(REPLY_TEXT));
	api.script(ctx.anthropicToken, ok(REPLY_TEXT));
	const points: ScalePoint[] = [];
	for (const size of sizes) {
		const chainLength = Math.min(size - 1, 64);
		const accounts = Array.from({ length: size }, (_, i) => ({
			label: label(i),
			fallbackTo: Array.from({ length: chainLength }, (_, k) => label((i + 1 + k) % size)),
		}));
		await env.writeConfig(accounts, label(0));
		await ctx.mcc.useAccount(label(0));
		await env.quiesce();
		await env.resetState();
		const samples = await runInterleaved([ctx.mcc, ctx.anthropic], {
			warmup: ctx.budget.n(20, 5),
			samples: ctx.budget.n(200, 30),
			quiesce: env.quiesce,
		});
		const arm = (session: BenchContext["mcc"]) => samples.arms.get(session) as ArmSamples;
		api.clearRequests();
		const configRead: number[] = [];
		for (let i = 0; i < ctx.budget.n(200, 30) + 10; i++) {
			const started = performance.now();
			await env.core.config.read();
			if (i >= 10) configRead.push(performance.now() - started);
			await settle();
		}
		const { size: configBytes } = await fs.stat(env.configFile);
		const point: ScalePoint = {
			accounts: size,
			chainLength,
			configBytes,
			overhead: overheadFigures(arm(ctx.mcc), arm(ctx.anthropic), samples.failures.length),
			configRead: summarize(configRead),
		};
		points.push(point);
		ctx.log(
			`${size} accounts (chains of ${chainLength}, config ${configBytes} bytes): added median ` +
				`${point.overhead.addedMedianMs} ms, p90 ${point.overhead.addedP90Ms} ms; config.read alone ` +
				`${point.configRead.median} ms`,
		);
	}
	return points;
}
