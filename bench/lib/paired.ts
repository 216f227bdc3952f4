import type { BenchSession } from "./pi.ts";
import { median, percentile, round, type Summary, shuffled, summarize } from "./stats.ts";

export const REPLY_TEXT = "Hello from the fake Messages API.";

export interface ArmSamples {
	ms: number[];
	beforeRequestMs: number[];
	afterResponseMs: number[];
}

export interface InterleavedSamples {
	arms: Map<BenchSession, ArmSamples>;
	failures: string[];
}

/**
 * Interleaves prompts through the sessions: every round runs each arm once, back to back, in random order, so
 * drift and background load fall on all arms alike. Warm-up rounds are run and dropped first. Before each prompt,
 * the extension's background writes of the previous one are let finish (as between a person's prompts), so
 * they do not land on whichever arm happens to come next.
 */
/** Rounds between two renewals of every arm's pi session (pi 1.x slows down as a session grows). */
export const RENEW_EVERY = 40;
/** Untimed rounds after a renewal (on pi 0.73 a new session loads the extension's runtime again). */
const AFTER_RENEWAL = 3;

export async function runInterleaved(
	sessions: BenchSession[],
	options: { warmup: number; samples: number; quiesce: () => Promise<void>; text?: string; expect?: string },
): Promise<InterleavedSamples> {
	const out: InterleavedSamples = { arms: new Map(), failures: [] };
	for (const session of sessions) out.arms.set(session, { ms: [], beforeRequestMs: [], afterResponseMs: [] });
	const expect = options.expect ?? REPLY_TEXT;
	const round = async (timed: boolean): Promise<void> => {
		for (const session of shuffled(sessions)) {
			await options.quiesce();
			const result = await session.prompt(options.text ?? "Say hello.");
			if (!result.ok || result.text !== expect) {
				out.failures.push(`${session.label}: ${result.error ?? `unexpected reply "${result.text}"`}`);
				if (out.failures.length > 5) throw new Error(`prompts fail: ${out.failures.join(" | ")}`);
			}
			if (timed) {
				const arm = out.arms.get(session) as ArmSamples;
				arm.ms.push(result.ms);
				arm.beforeRequestMs.push(result.beforeRequestMs);
				arm.afterResponseMs.push(result.afterResponseMs);
			}
		}
	};
	for (let i = 0, sinceRenewal = 0; i < options.warmup + options.samples; i++, sinceRenewal++) {
		if (sinceRenewal === RENEW_EVERY) {
			// The extension's arm last: on pi 0.73 the provider's stream is the one its newest session registered.
			for (const session of [...sessions].reverse()) await session.renew();
			for (let k = 0; k < AFTER_RENEWAL; k++) await round(false);
			sinceRenewal = 0;
		}
		await round(i >= options.warmup);
	}
	return out;
}

export interface OverheadFigures {
	mcc: Summary;
	baseline: Summary;
	/** median(mcc) − median(baseline). */
	addedMedianMs: number;
	/** p90(mcc) − p90(baseline). */
	addedP90Ms: number;
	/** p95(mcc) − p95(baseline). */
	addedP95Ms: number;
	/** median(mcc) / median(baseline). */
	ratio: number;
	/** The median of the per-round differences (each round runs both arms back to back): steadier under drift. */
	addedPairedMedianMs: number;
	/** Where the added median time falls: before the HTTP request is sent, and after the response head arrived. */
	addedBeforeRequestMs: number;
	addedAfterResponseMs: number;
	failures: number;
}

const finite = (values: number[]) => values.filter((v) => Number.isFinite(v));

export function overheadFigures(mcc: ArmSamples, baseline: ArmSamples, failures = 0): OverheadFigures {
	return {
		mcc: summarize(mcc.ms),
		baseline: summarize(baseline.ms),
		addedMedianMs: round(median(mcc.ms) - median(baseline.ms)),
		addedP90Ms: round(percentile(mcc.ms, 0.9) - percentile(baseline.ms, 0.9)),
		addedP95Ms: round(percentile(mcc.ms, 0.95) - percentile(baseline.ms, 0.95)),
		ratio: round(median(mcc.ms) / median(baseline.ms), 4),
		addedPairedMedianMs: round(
			median(mcc.ms.map((ms, i) => ms - (baseline.ms[i] ?? Number.NaN)).filter(Number.isFinite)),
		),
		addedBeforeRequestMs: round(median(finite(mcc.beforeRequestMs)) - median(finite(baseline.beforeRequestMs))),
		addedAfterResponseMs: round(median(finite(mcc.afterResponseMs)) - median(finite(baseline.afterResponseMs))),
		failures,
	};
}
