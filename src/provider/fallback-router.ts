import type { AccountsConfig } from "../config/schema.ts";

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
