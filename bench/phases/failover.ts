/**
 * 2. Failover: the origin account answers 429, the extension falls back to the second account, which streams.
 * Compared, interleaved, with (a) a direct request to the second account and (b) the 429 round trip alone (pi-ai's
 * streamSimpleAnthropic with the origin's token, exactly as the extension makes its first attempt). What remains
 * of the failover after subtracting both is what the extension adds: classifying the failure, writing the
 * cooldown to the state file (under its lock), reading the second account's token, and reporting the hop.
 */
import { type Context, type Model, streamSimpleAnthropic } from "@mariozechner/pi-ai";
import { startCooldown } from "../../src/provider/fallback-policy.ts";
import { ok, rateLimited } from "../../test/helpers/fake-anthropic-api.ts";
import { newAccessToken, newRefreshToken } from "../../test/helpers/fake-token-endpoint.ts";
import type { BenchContext } from "../lib/context.ts";
import { RENEW_EVERY, REPLY_TEXT } from "../lib/paired.ts";
import { median, round, type Summary, settle, shuffled, summarize } from "../lib/stats.ts";

const ORIGIN = "fo-origin";
const SECOND = "fo-second";
type Kind = "failover" | "direct" | "raw429";

export interface FailoverResult {
	failover: Summary;
	direct: Summary;
	raw429: Summary;
	/** median(failover) − median(direct) − median(raw429). */
	overheadMs: number;
	/** The state-file write a 429 costs (startCooldown: lock, read, validate, write, fsync, rename), timed alone. */
	cooldownWrite: Summary;
	failures: string[];
}

export async function failover(ctx: BenchContext): Promise<FailoverResult> {
	const { env, api, budget } = ctx;
	const originToken = newAccessToken();
	const secondToken = newAccessToken();
	const expires = Date.now() + 8 * 60 * 60 * 1000;
	await env.storeAccount(ORIGIN, { access: originToken, refresh: newRefreshToken(), expires });
	await env.storeAccount(SECOND, { access: secondToken, refresh: newRefreshToken(), expires });
	// A reset an hour away keeps every 429 alike for the whole run.
	api.script(originToken, rateLimited({ retryAfterSec: 3600 }));
	api.script(secondToken, ok(REPLY_TEXT));
	const accounts = [
		{ label: ORIGIN, fallbackTo: [SECOND] },
		{ label: SECOND, fallbackTo: [] },
	];

	const model = ctx.anthropic.session.model as Model<"anthropic-messages">;
	const raw429 = async (): Promise<number> => {
		const context: Context = {
			systemPrompt: ctx.mcc.session.agent.state.systemPrompt,
			messages: [{ role: "user", content: "Say hello.", timestamp: Date.now() }],
			tools: ctx.mcc.session.agent.state.tools,
		};
		const started = performance.now();
		const stream = streamSimpleAnthropic(model, context, { apiKey: originToken, maxRetries: 0 });
		let last: string | undefined;
		for await (const event of stream) last = event.type === "error" ? event.error.errorMessage : event.type;
		const ms = performance.now() - started;
		if (!last || !/429/.test(last)) throw new Error(`the 429 round trip ended with "${last}"`);
		return ms;
	};

	const times: Record<Kind, number[]> = { failover: [], direct: [], raw429: [] };
	const failures: string[] = [];
	const warmup = budget.n(20, 5);
	const samples = budget.n(300, 30);
	const sampleRound = async (timed: boolean): Promise<void> => {
		for (const kind of shuffled<Kind>(["failover", "direct", "raw429"])) {
			// The same preparation before every kind: the 429 of the last failover left the origin cooling down.
			await env.quiesce();
			await env.writeConfig(accounts, kind === "direct" ? SECOND : ORIGIN);
			if (kind !== "raw429") await ctx.mcc.useAccount(kind === "direct" ? SECOND : ORIGIN);
			await env.quiesce();
			await env.resetState();
			await settle();
			const before = api.requests.length;
			let ms: number;
			if (kind === "raw429") {
				ms = await raw429();
			} else {
				const result = await ctx.mcc.prompt("Say hello.");
				ms = result.ms;
				const sent = api.requests.slice(before).map((r) => r.token);
				const expected = kind === "failover" ? [originToken, secondToken] : [secondToken];
				if (!result.ok || result.text !== REPLY_TEXT || sent.join() !== expected.join()) {
					failures.push(`${kind}: ${result.error ?? result.text} (${sent.length} requests)`);
					if (failures.length > 5) throw new Error(`failover prompts fail: ${failures.join(" | ")}`);
				}
			}
			if (timed) times[kind].push(ms);
		}
	};
	for (let i = 0; i < warmup + samples; i++) {
		if (i > 0 && i % RENEW_EVERY === 0) {
			// pi 1.x slows down as a session grows (see BenchSession.renew); a new session's first rounds are not timed.
			await ctx.mcc.renew();
			for (let k = 0; k < 3; k++) await sampleRound(false);
		}
		await sampleRound(i >= warmup);
		if (i % 50 === 0) api.clearRequests();
	}
	await env.resetState();

	const cooldownWrite: number[] = [];
	for (let i = 0; i < budget.n(100, 20); i++) {
		const now = Date.now();
		const started = performance.now();
		await startCooldown(env.core.state, ORIGIN, { until: now + 3_600_000, reason: "rate_limit", setAt: now });
		cooldownWrite.push(performance.now() - started);
		await env.resetState();
	}

	const overheadMs = round(median(times.failover) - median(times.direct) - median(times.raw429));
	const result: FailoverResult = {
		failover: summarize(times.failover),
		direct: summarize(times.direct),
		raw429: summarize(times.raw429),
		overheadMs,
		cooldownWrite: summarize(cooldownWrite),
		failures,
	};
	ctx.log(
		`failover ${result.failover.median} ms, direct ${result.direct.median} ms, 429 round trip ` +
			`${result.raw429.median} ms → added ${overheadMs} ms (n=${times.failover.length}); cooldown write alone ` +
			`${result.cooldownWrite.median} ms`,
	);
	return result;
}
