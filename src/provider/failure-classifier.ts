/** What a failed request means for the account that sent it. */
export type FailureKind = "rate_limit" | "overloaded" | "auth" | "other";

export interface FailureClass {
	kind: FailureKind;
	/** For rate_limit / overloaded: when the account may be tried again (ms since epoch). */
	cooldownUntil?: number;
	/** Where the cooldown came from, for /mcc-status. */
	cooldownSource?: "retry-after" | "unified-reset" | "default";
}

export interface FailureEvidence {
	/** HTTP status of the response, when it was captured (200 for an SSE error inside a streamed response). */
	status?: number;
	headers?: Record<string, string>;
	errorMessage?: string;
}

export const DEFAULT_COOLDOWN_MS = 60 * 60 * 1000;
const MAX_COOLDOWN_MS = 8 * 24 * 60 * 60 * 1000;

/**
 * Classifies a failure that arrived before any content. Rate limits are recognised in all the shapes seen in
 * the wild: HTTP 429 (with or without retry-after / unified headers, or with only x-should-retry), 529 and
 * `overloaded_error`, and a `rate_limit_error` / `overloaded_error` SSE event inside a 200 response.
 * 401/403 and invalid_grant mean "log in again" and never trigger a fallback.
 */
export function classifyFailure(evidence: FailureEvidence, now: number): FailureClass {
	const message = evidence.errorMessage ?? "";
	const status =
		evidence.status !== undefined && evidence.status >= 400 ? evidence.status : statusFromMessage(message);
	let kind: FailureKind = "other";
	if (status === 401 || status === 403 || /authentication_error|permission_error|invalid_grant/i.test(message)) {
		kind = "auth";
	} else if (status === 429 || /rate_limit_error|rate.?limit/i.test(message)) {
		kind = "rate_limit";
	} else if (status === 529 || /overloaded/i.test(message)) {
		kind = "overloaded";
	}
	if (kind !== "rate_limit" && kind !== "overloaded") return { kind };
	return { kind, ...cooldownFrom(evidence.headers ?? {}, now) };
}

/** pi-ai reports an HTTP failure as `<status> <body>`. */
function statusFromMessage(message: string): number | undefined {
	const match = /^\s*(\d{3})\b/.exec(message);
	return match ? Number(match[1]) : undefined;
}

function cooldownFrom(
	headers: Record<string, string>,
	now: number,
): Pick<FailureClass, "cooldownUntil" | "cooldownSource"> {
	const reset = parseResetTime(headers["anthropic-ratelimit-unified-reset"], now);
	if (reset !== undefined && reset > now) return { cooldownUntil: clamp(reset, now), cooldownSource: "unified-reset" };
	const retryAfter = parseRetryAfter(headers["retry-after"], now);
	if (retryAfter !== undefined) return { cooldownUntil: clamp(retryAfter, now), cooldownSource: "retry-after" };
	return { cooldownUntil: now + DEFAULT_COOLDOWN_MS, cooldownSource: "default" };
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

function clamp(until: number, now: number): number {
	return Math.min(Math.max(until, now + 1000), now + MAX_COOLDOWN_MS);
}
