/**
 * The fallback policy: what a failed request means for its account (classification and cooldown), which accounts
 * a request may try in what order (directional, not transitive), and the cooldowns shared by every pi session.
 */
import type { AccountsConfig, Cooldown, SharedState } from "../config/schema.ts";
import type { JsonFileStore } from "../config/stores.ts";
import { MAX_COOLDOWN_MS, parseResetTime, parseRetryAfter } from "./usage.ts";

/** At most this many hops after the origin account. */
export const MAX_FALLBACK_HOPS = 5;

export interface CooldownView {
	/** When the account may be tried again, for accounts that are cooling down now. */
	until(label: string): number | undefined;
}

/**
 * The accounts to try, in order, for a request whose active account is `origin`. Chains are directional and
 * not transitive: only the origin's own `fallbackTo` list is used, never the list of an account it hops to.
 * Accounts cooling down are skipped. A cooling origin goes straight to its first available fallback; when
 * nothing else is available the origin is still tried (its limit may have reset early).
 */
export function planAttempts(origin: string, config: AccountsConfig, cooldowns: CooldownView): string[] {
	const account = config.accounts.find((entry) => entry.label === origin);
	const fallbacks = (account?.fallbackTo ?? [])
		.filter((label) => label !== origin && config.accounts.some((entry) => entry.label === label))
		.filter((label) => cooldowns.until(label) === undefined)
		.slice(0, MAX_FALLBACK_HOPS);
	if (cooldowns.until(origin) === undefined) return [origin, ...fallbacks];
	return fallbacks.length > 0 ? fallbacks : [origin];
}

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

function clamp(until: number, now: number): number {
	return Math.min(Math.max(until, now + 1000), now + MAX_COOLDOWN_MS);
}

/** The cooldowns in force at `now` (expired ones are ignored, and pruned at the next write). */
export function activeCooldowns(state: Pick<SharedState, "cooldowns">, now: number): CooldownView {
	return {
		until: (label) => {
			const until = state.cooldowns[label]?.until;
			return until !== undefined && until > now ? until : undefined;
		},
	};
}

/** Puts an account on cooldown in `state` (a longer cooldown already there wins) and prunes expired ones. */
export function applyCooldown(state: SharedState, label: string, cooldown: Cooldown): void {
	for (const [other, entry] of Object.entries(state.cooldowns)) {
		if (entry.until <= cooldown.setAt) delete state.cooldowns[other];
	}
	const existing = state.cooldowns[label];
	state.cooldowns[label] = existing && existing.until > cooldown.until ? existing : cooldown;
}

/** Records a cooldown in the shared state file, so every pi session (and the next start) honours it. */
export async function startCooldown(
	store: JsonFileStore<SharedState>,
	label: string,
	cooldown: Cooldown,
): Promise<void> {
	await store.update((state) => {
		applyCooldown(state, label, cooldown);
		return { next: state, result: undefined };
	});
}

/** Clears an account's cooldown (after a successful login, or by hand). */
export async function clearCooldown(store: JsonFileStore<SharedState>, label: string): Promise<void> {
	await store.update((state) => {
		if (!state.cooldowns[label]) return { result: undefined };
		delete state.cooldowns[label];
		return { next: state, result: undefined };
	});
}
