/**
 * What every migration test file shares: per test a sandbox HOME and a keychain service of its own, the compiled
 * bin and the in-process command, and after each test the checks that no token reached any output, nor any file
 * but those the test allows.
 */

import { join } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, expect } from "vitest";
import { parseCredentials, type StoredCredentials, serializeCredentials } from "../../src/broker/credentials.ts";
import { parseAccountsConfig } from "../../src/config/stores.ts";
import { OsSecretStore } from "../../src/keychain/os-secret-store.ts";
import { PAUSE_ENV } from "../../src/migration/support.ts";
import { newAccessToken, newRefreshToken } from "./fake-token-endpoint.ts";
import { uniqueService } from "./keyring.ts";
import {
	Migrate,
	migrateScript,
	type RunOptions,
	type RunResult,
	removeMigrateBuild,
	runInProcess,
} from "./migration-cli.ts";
import { containsAny, type LegacyAccountFixture, legacyText, Sandbox, tokensOf } from "./migration-sandbox.ts";

/** Sandbox-relative paths of the two files that hold tokens before a migration. */
export const CONFIG = join(".pi", "agent", "multi-claude-code.json");
export const AUTH = join(".pi", "agent", "auth.json");

/** One test's keychain items, set up and checked directly (not through the code under test). */
export class TestKeychain {
	readonly store: OsSecretStore;

	constructor(service: string) {
		this.store = new OsSecretStore({ service, timeoutMs: 10_000 });
	}

	async credentials(label: string): Promise<StoredCredentials | null> {
		const secret = await this.store.get(label);
		return secret === null ? null : parseCredentials(secret);
	}

	/** Whether the item holds exactly this token pair. */
	async holds(label: string, { access, refresh }: StoredCredentials): Promise<boolean> {
		const stored = await this.credentials(label).catch(() => null);
		return stored?.access === access && stored.refresh === refresh;
	}

	put(label: string, credentials: StoredCredentials): Promise<void> {
		return this.store.set(label, serializeCredentials(credentials));
	}

	async removeAll(labels: Iterable<string>): Promise<void> {
		for (const label of labels) await this.store.delete(label).catch(() => false);
	}
}

export interface PiLogin {
	credentials: StoredCredentials;
	data: Record<string, unknown>;
	text: string;
}

export function credentialsOf(account: LegacyAccountFixture): StoredCredentials {
	return { access: account.accessToken ?? "", refresh: account.refreshToken ?? "", expires: account.expiresAt ?? 0 };
}

/** auth.json as pi writes it after the move: the same data without the `anthropic` entry. */
export function withoutAnthropic(data: Record<string, unknown>): string {
	const { anthropic: _removed, ...rest } = data;
	return JSON.stringify(rest, null, 2);
}

export class MigrationWorld {
	sandbox!: Sandbox;
	env!: Record<string, string>;
	keychain!: TestKeychain;
	migrate!: Migrate;
	/** Every token this test put anywhere: no output may contain one, and no file but the allowed ones. */
	tokens: string[] = [];
	/** Files (sandbox-relative) that may still hold tokens when the test ends. */
	tokensMayRemainIn: string[] = [];
	labels = new Set<string>();
	outputs: RunResult[] = [];

	/** Keeps a run's output for the checks after the test. */
	record = (result: RunResult): RunResult => {
		this.outputs.push(result);
		return result;
	};

	/** The package bin as a child process: exit status, crash safety, locks between processes. */
	run = async (args: readonly string[] = [], options?: RunOptions): Promise<RunResult> =>
		this.record(await this.migrate.run(args, options));

	/** The same command in this process: quick checks of refusals and plans. */
	cli = async (args: readonly string[] = []): Promise<RunResult> => this.record(await runInProcess(args, this.env));

	/** Writes an old-format config and registers its labels and tokens with the checks. */
	givenLegacyConfig = async (accounts: LegacyAccountFixture[], top: Record<string, unknown> = {}): Promise<string> => {
		const text = legacyText(accounts, top);
		await this.sandbox.write(this.sandbox.configFile, text);
		for (const account of accounts) this.labels.add(account.label);
		this.tokens.push(...tokensOf(accounts));
		return text;
	};

	/** auth.json as pi writes it: JSON.stringify(data, null, 2), mode 0600, `anthropic` wherever `at` puts it. */
	givenPiAuth = async (at: "first" | "middle" | "last" = "middle", padding = 0): Promise<PiLogin> => {
		const credentials = { access: newAccessToken("pi"), refresh: newRefreshToken("pi"), expires: Date.now() + 3e6 };
		this.tokens.push(credentials.access, credentials.refresh);
		const { access, refresh, expires } = credentials;
		const entries: [string, unknown][] = [
			["anthropic", { type: "oauth", refresh, access, expires }],
			["openai", { type: "api_key", key: `sk-proj-${"k".repeat(20 + padding)}` }],
			["github-copilot", { type: "oauth", refresh: "gho_refresh", access: "tid=1;exp=2", expires: 5 }],
		];
		const order = at === "first" ? [0, 1, 2] : at === "middle" ? [1, 0, 2] : [1, 2, 0];
		const data = Object.fromEntries(order.map((index) => entries[index]!));
		const text = JSON.stringify(data, null, 2);
		await this.sandbox.write(this.sandbox.authFile, text);
		return { credentials, data, text };
	};

	/** Every account in the keychain with the file's tokens, the file in the new format (0600), no temp file left. */
	async expectMigrated(accounts: readonly LegacyAccountFixture[]): Promise<void> {
		for (const account of accounts) {
			expect(await this.keychain.credentials(account.label)).toEqual(credentialsOf(account));
		}
		const config = parseAccountsConfig(JSON.parse(await this.sandbox.read(this.sandbox.configFile)), "config");
		expect(config.accounts.map((account) => account.label)).toEqual(accounts.map((account) => account.label));
		expect(await this.sandbox.mode(this.sandbox.configFile)).toBe(0o600);
		expect(await this.sandbox.tempFiles()).toEqual([]);
	}

	async reset(): Promise<void> {
		this.sandbox = await Sandbox.create();
		const service = uniqueService("migration");
		this.env = {};
		for (const [key, value] of Object.entries(process.env)) if (value !== undefined) this.env[key] = value;
		Object.assign(this.env, {
			HOME: this.sandbox.home,
			PI_CODING_AGENT_DIR: this.sandbox.agentDir,
			PI_MCC_KEYCHAIN_SERVICE: service,
			PI_MCC_KEYCHAIN_TIMEOUT_MS: "10000",
		});
		delete this.env[PAUSE_ENV];
		this.keychain = new TestKeychain(service);
		// The same object: a variable a test adds to env (a token endpoint's URL) reaches the bin too.
		this.migrate = new Migrate(await migrateScript(), this.env);
		this.tokens = [];
		this.tokensMayRemainIn = [];
		this.labels = new Set();
		this.outputs = [];
	}

	async check(): Promise<void> {
		try {
			for (const output of this.outputs) {
				expect(containsAny(output.stdout + output.stderr, this.tokens), "a token reached the output").toBe(false);
			}
			expect(await this.sandbox.filesContaining(this.tokens)).toEqual([...this.tokensMayRemainIn].sort());
		} finally {
			await this.keychain.removeAll(this.labels);
			await this.sandbox.remove();
		}
	}
}

/** Registers the hooks of a migration test file and returns its world, fresh for each test. */
export function useMigrationWorld(): MigrationWorld {
	const world = new MigrationWorld();
	beforeAll(async () => {
		await migrateScript();
	}, 120_000);
	afterAll(removeMigrateBuild);
	beforeEach(() => world.reset());
	afterEach(() => world.check());
	return world;
}
