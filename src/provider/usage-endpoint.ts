import { redactSecrets } from "../broker/redact.ts";
import type { UsageSnapshot } from "../config/schema.ts";
import { parseResetTime } from "./failure-classifier.ts";

/** Window names of Anthropic's OAuth usage endpoint, mapped to the header names (`5h`, `7d`, …). */
const WINDOW_NAMES: Record<string, string> = {
	five_hour: "5h",
	seven_day: "7d",
	seven_day_opus: "7d_opus",
	seven_day_sonnet: "7d_sonnet",
};

/**
 * Asks Anthropic's OAuth usage endpoint (what Claude Code's /usage shows) for an account's utilisation. Only
 * used by `/mcc-status --refresh`: normal requests learn the same figures from their response headers.
 */
export async function fetchOAuthUsage(
	baseUrl: string,
	token: string,
	now: number,
	timeoutMs = 10_000,
): Promise<UsageSnapshot> {
	const url = `${baseUrl.replace(/\/+$/, "")}/api/oauth/usage`;
	let response: Response;
	try {
		response = await fetch(url, {
			headers: {
				authorization: `Bearer ${token}`,
				"anthropic-beta": "oauth-2025-04-20",
				accept: "application/json",
			},
			signal: AbortSignal.timeout(timeoutMs),
		});
	} catch (error) {
		throw new Error(
			`the usage endpoint could not be reached (${redactSecrets(String(error), [token]).slice(0, 120)})`,
		);
	}
	if (!response.ok) throw new Error(`the usage endpoint answered HTTP ${response.status}`);
	let body: unknown;
	try {
		body = await response.json();
	} catch {
		throw new Error("the usage endpoint answered with something that is not JSON");
	}
	const snapshot: UsageSnapshot = { at: now, windows: {} };
	if (body && typeof body === "object") {
		for (const [key, value] of Object.entries(body as Record<string, unknown>)) {
			const name = Object.hasOwn(WINDOW_NAMES, key)
				? WINDOW_NAMES[key]
				: /^[a-z][a-z0-9_]{0,23}$/.test(key)
					? key
					: undefined;
			if (!name || !value || typeof value !== "object") continue;
			const { utilization, resets_at: resetsAt } = value as { utilization?: unknown; resets_at?: unknown };
			// The endpoint reports percentages (0–100).
			if (typeof utilization !== "number" || !Number.isFinite(utilization) || utilization < 0 || utilization > 1000)
				continue;
			const reset = typeof resetsAt === "string" ? parseResetTime(resetsAt, now) : undefined;
			snapshot.windows = {
				...snapshot.windows,
				[name]: { utilization: utilization / 100, ...(reset !== undefined ? { resetsAt: reset } : {}) },
			};
		}
	}
	return snapshot;
}
