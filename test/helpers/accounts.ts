/**
 * Sets accounts up the way a finished `/mcc-login` leaves them, without the browser: the token pair goes into
 * the keychain through the extension's own broker, the labels and fallback lists into the config file. Reads
 * process.env at call time (createCore does), so call it after createTestEnv().
 */
import { promises as fs } from "node:fs";
import type { SharedState } from "../../src/config/schema.ts";
import { type Core, createCore } from "../../src/core.ts";
import { readSettings } from "../../src/settings.ts";
import { newAccessToken, newRefreshToken } from "./fake-token-endpoint.ts";

/** What accounts.ts needs of the fake token endpoint (test/helpers/fake-token-endpoint.ts). */
export interface TokenMinter {
	mintPair(): { access: string; refresh: string };
}

export interface AccountSpec {
	label: string;
	fallbackTo?: string[];
	/** Access token to store (default: minted by the token endpoint, or a random sk-ant-oat01 token). */
	access?: string;
	refresh?: string;
	/** Lifetime of the stored access token (default 8 h, so no refresh happens during a test). */
	expiresInMs?: number;
}

export interface AccountTokens {
	access: string;
	refresh: string;
	expires: number;
}

export interface SetupAccountsOptions {
	accounts: AccountSpec[];
	/** The active account (default: the first one). */
	active?: string;
	/** Mints token pairs its refresh grant will accept; without it, random tokens that cannot be refreshed. */
	tokens?: TokenMinter;
}

let cachedCore: { key: string; core: Core } | undefined;

/** The extension's core for the current environment (one per agent dir + keychain service). */
export function testCore(): Core {
	const { PI_CODING_AGENT_DIR, PI_MCC_KEYCHAIN_SERVICE, PI_MCC_TOKEN_URL } = process.env;
	const key = [PI_CODING_AGENT_DIR, PI_MCC_KEYCHAIN_SERVICE, PI_MCC_TOKEN_URL].join("\0");
	if (cachedCore?.key !== key) cachedCore = { key, core: createCore(readSettings(process.env)) };
	return cachedCore.core;
}

/**
 * Stores every account's tokens in the keychain and writes the config (replacing its account list). Returns
 * each label's tokens.
 */
export async function setupAccounts(options: SetupAccountsOptions): Promise<Record<string, AccountTokens>> {
	const core = testCore();
	const result: Record<string, AccountTokens> = {};
	for (const spec of options.accounts) {
		const minted = spec.access || spec.refresh ? undefined : options.tokens?.mintPair();
		const tokens: AccountTokens = {
			access: spec.access ?? minted?.access ?? newAccessToken(spec.label),
			refresh: spec.refresh ?? minted?.refresh ?? newRefreshToken(spec.label),
			expires: Date.now() + (spec.expiresInMs ?? 8 * 60 * 60 * 1000),
		};
		await core.broker.storeLogin(spec.label, tokens);
		result[spec.label] = tokens;
	}
	const now = Date.now();
	await core.config.update((config) => ({
		next: {
			...config,
			accounts: options.accounts.map((spec) => ({
				label: spec.label,
				fallbackTo: spec.fallbackTo ?? [],
				loggedInAt: now,
			})),
			activeLabel: options.active ?? options.accounts[0]?.label,
		},
		result: undefined,
	}));
	return result;
}

/** The shared state file (cooldowns, needs-login marks) as the extension wrote it. */
export async function readState(): Promise<SharedState> {
	return testCore().state.read();
}

/** Forgets every cooldown (between tests that share an agent dir). */
export async function clearCooldowns(): Promise<void> {
	await testCore().state.update((state) => ({ next: { ...state, cooldowns: {} }, result: undefined }));
}

/** Puts `label` on cooldown directly in the state file, as another session would. */
export async function setCooldown(label: string, untilMs: number, reason: "rate_limit" | "overloaded" = "rate_limit") {
	await testCore().state.update((state) => ({
		next: { ...state, cooldowns: { ...state.cooldowns, [label]: { until: untilMs, reason, setAt: Date.now() } } },
		result: undefined,
	}));
}

/** The config file as written on disk (raw JSON). */
export async function readConfigRaw(file: string): Promise<unknown> {
	return JSON.parse(await fs.readFile(file, "utf8"));
}
