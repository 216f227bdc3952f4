/**
 * Usage figures per account: Anthropic's unified rate-limit headers (on every response), the OAuth usage endpoint
 * (for /mcc-status --refresh), the reset and retry times they carry, and the opt-in early fallback built on them.
 */
import type { SharedState, UsageSnapshot, UsageWindow } from "../config/schema.ts";
import type { JsonFileStore } from "../config/stores.ts";
import { isRedirect, redirectText } from "../oauth/token-endpoint.ts";
import { redactSecrets } from "../redact.ts";
import { shownUrl } from "../settings.ts";

/** No cooldown or reset time is believed beyond this. */
export const MAX_COOLDOWN_MS = 8 * 24 * 60 * 60 * 1000;
const PREFIX = "anthropic-ratelimit-unified-";
const UNSAFE_KEYS = new Set(["__proto__", "constructor", "prototype"]);
const WINDOW_HEADER = /^anthropic-ratelimit-unified-([a-z0-9][a-z0-9_]{0,23})-(utilization|reset|status)$/;

/**
 * Reads Anthropic's unified rate-limit headers (`anthropic-ratelimit-unified-status`, `-reset`,
 * `-representative-claim`, and per window `-5h-utilization`, `-7d-reset`, …). Unknown or malformed values are
 * ignored; `undefined` when the response carried none.
 */
export function readUsageHeaders(headers: Record<string, string> | undefined, now: number): UsageSnapshot | undefined {
	if (!headers) return undefined;
	const snapshot: UsageSnapshot = { at: now, windows: {} };
	// A Map, not an object: a header named like "…-__proto__-utilization" must not reach Object.prototype.
	const windows = new Map<string, UsageWindow>();
	let seen = false;
	for (const [name, raw] of Object.entries(headers)) {
		if (!name.startsWith(PREFIX)) continue;
		const value = raw.trim();
		if (name === `${PREFIX}status`) {
			if (/^[a-z_]{1,40}$/.test(value)) snapshot.status = value;
		} else if (name === `${PREFIX}reset`) {
			snapshot.resetsAt = parseResetTime(value, now);
		} else if (name === `${PREFIX}representative-claim`) {
			if (/^[a-z0-9_]{1,40}$/.test(value)) snapshot.representativeClaim = value;
		} else {
			const match = WINDOW_HEADER.exec(name);
			if (!match || UNSAFE_KEYS.has(match[1]!)) continue;
			let window = windows.get(match[1]!);
			if (!window) {
				window = { utilization: Number.NaN };
				windows.set(match[1]!, window);
			}
			if (match[2] === "utilization") window.utilization = parseUtilization(value) ?? Number.NaN;
			else if (match[2] === "reset") window.resetsAt = parseResetTime(value, now);
			else if (/^[a-z_]{1,40}$/.test(value)) window.status = value;
		}
		seen = true;
	}
	snapshot.windows = Object.fromEntries([...windows].filter(([, window]) => Number.isFinite(window.utilization)));
	if (snapshot.resetsAt === undefined) delete snapshot.resetsAt;
	const useful =
		snapshot.status !== undefined || snapshot.resetsAt !== undefined || Object.keys(snapshot.windows).length > 0;
	return seen && useful ? snapshot : undefined;
}

/** 0–1 as Anthropic sends it; a value above 1 (up to 100) is read as a percentage. */
export function parseUtilization(value: string): number | undefined {
	if (!/^\d+(\.\d+)?$/.test(value)) return undefined;
	const n = Number(value);
	if (n <= 1) return n;
	return n <= 100 ? n / 100 : undefined;
}

/** The figure to show first: the window Anthropic names as representative, else the most used one. */
export function headline(usage: UsageSnapshot | undefined): { name: string; window: UsageWindow } | undefined {
	if (!usage) return undefined;
	const entries = Object.entries(usage.windows);
	if (entries.length === 0) return undefined;
	const claim = usage.representativeClaim;
	const claimed = claim ? entries.find(([name]) => claimMatches(claim, name)) : undefined;
	const [name, window] = claimed ?? entries.reduce((a, b) => (b[1].utilization > a[1].utilization ? b : a));
	return { name, window };
}

/** "5h 42%" for the footer. */
export function headlineText(usage: UsageSnapshot | undefined): string | undefined {
	const top = headline(usage);
	return top ? `${top.name} ${formatPercent(top.window.utilization)}` : undefined;
}

/** "five_hour" names the "5h" window, "seven_day" the "7d" one. */
function claimMatches(claim: string, window: string): boolean {
	const short = claim.replace("five_hour", "5h").replace("seven_day", "7d");
	return short === window || claim === window;
}

export function formatPercent(fraction: number): string {
	return `${Math.round(fraction * 100)}%`;
}

/**
 * Opt-in pre-emptive fallback: when the account's headline utilisation has reached its threshold, it is treated
 * as cooling down until that window resets (or, with no reset known, for as long as the figure is fresh).
 */
export function preemptionUntil(
	threshold: number | undefined,
	usage: UsageSnapshot | undefined,
	now: number,
): number | undefined {
	if (threshold === undefined) return undefined;
	const top = headline(usage);
	if (!usage || !top || top.window.utilization < threshold) return undefined;
	const until = top.window.resetsAt ?? usage.resetsAt ?? usage.at + 15 * 60 * 1000;
	return until > now ? until : undefined;
}

/** Keeps the newer of the stored and the given figures for the account; `false` when nothing changed. */
export function applyUsage(state: SharedState, label: string, usage: UsageSnapshot): boolean {
	const previous = state.usage[label];
	if (previous && previous.at > usage.at) return false;
	state.usage[label] = usage;
	return true;
}

/** Keeps the latest figures per account in the shared state file (no secrets). */
export async function recordUsage(
	store: JsonFileStore<SharedState>,
	label: string,
	usage: UsageSnapshot,
): Promise<void> {
	await store.update((state) =>
		applyUsage(state, label, usage) ? { next: state, result: undefined } : { result: undefined },
	);
}

/** Epoch seconds (what Anthropic sends), epoch ms, or an ISO date. */
export function parseResetTime(value: string | undefined, now: number): number | undefined {
	if (!value) return undefined;
	const trimmed = value.trim();
	if (/^\d+(\.\d+)?$/.test(trimmed)) {
		const n = Number(trimmed);
		return n < 1e11 ? n * 1000 : n;
	}
	const date = Date.parse(trimmed);
	return Number.isFinite(date) && date > now - MAX_COOLDOWN_MS ? date : undefined;
}

/** Seconds to wait, or an HTTP date. */
export function parseRetryAfter(value: string | undefined, now: number): number | undefined {
	if (!value) return undefined;
	const trimmed = value.trim();
	if (/^\d+(\.\d+)?$/.test(trimmed)) return now + Number(trimmed) * 1000;
	const date = Date.parse(trimmed);
	return Number.isFinite(date) ? date : undefined;
}

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
			// Never followed: a redirect would carry the access token to wherever it points.
			redirect: "manual",
			signal: AbortSignal.timeout(timeoutMs),
		});
	} catch (error) {
		throw new Error(
			`the usage endpoint could not be reached (${redactSecrets(String(error), [token]).slice(0, 120)})`,
		);
	}
	if (isRedirect(response.status)) {
		await response.body?.cancel().catch(() => {});
		throw new Error(
			`${redirectText(`the usage endpoint ${shownUrl(url)}`, response)}; it is not followed, so the token went ` +
				"nowhere else. Check PI_MCC_ANTHROPIC_BASE_URL or the proxy in between",
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
