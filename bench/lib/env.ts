/**
 * The benchmark's isolated world: a temp HOME and pi agent dir, a throwaway keychain service name, and the
 * extension's core (keychain, config and state files, token broker) built from that environment. Everything the
 * extension reads from process.env is set here before any core or pi session is created.
 */
import { randomBytes } from "node:crypto";
import { existsSync, promises as fs, mkdtempSync, realpathSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type AccountsConfig, emptyState } from "../../src/config/schema.ts";
import { type Core, createCore } from "../../src/core.ts";
import { readSettings } from "../../src/settings.ts";
import { uniqueService } from "../../test/helpers/keyring.ts";
import { isolatedPiVariables } from "../../test/helpers/pi-harness.ts";

export interface BenchEnv {
	root: string;
	home: string;
	agentDir: string;
	cwd: string;
	keychainService: string;
	configFile: string;
	stateFile: string;
	/** The extension's core for this environment, as the bench uses it to set accounts up. */
	core: Core;
	/** Stores a token pair for `label` in the keychain (the way a finished /mcc-login does). */
	storeAccount(label: string, tokens: { access: string; refresh: string; expires: number }): Promise<void>;
	/** Replaces the account list and the active label in the config file. */
	writeConfig(accounts: AccountsConfig["accounts"], activeLabel: string): Promise<void>;
	/**
	 * Rewrites the shared state file empty (no cooldowns, no needs-login marks: the extension's own emptyState()),
	 * atomically and mode 0600, so no cooldown of an earlier sample is left.
	 */
	resetState(): Promise<void>;
	/**
	 * Waits until the extension's background writes (usage figures it records after every reply) are done, as
	 * they would be before a person's next prompt: no lock directory on the config or state file for a while.
	 */
	quiesce(): Promise<void>;
	/** Deletes every keychain item the bench created and the temp directory. */
	cleanup(): Promise<void>;
}

export interface BenchEnvOptions {
	anthropicBaseUrl: string;
	tokenUrl: string;
}

export async function createBenchEnv(options: BenchEnvOptions): Promise<BenchEnv> {
	const root = realpathSync(mkdtempSync(join(tmpdir(), "pi-mcc-bench-")));
	const home = join(root, "home");
	const agentDir = join(home, ".pi", "agent");
	const cwd = join(root, "project");
	for (const dir of [home, agentDir, cwd]) await fs.mkdir(dir, { recursive: true, mode: 0o700 });
	// The tests' naming and ledger: on macOS and Windows the runner deletes every item left under it, even when a
	// phase failed before its own clean-up.
	const keychainService = uniqueService("bench");
	const vars = isolatedPiVariables({ home, agentDir, keychainService, ...options });
	for (const [name, value] of Object.entries(vars)) {
		if (value === undefined) delete process.env[name];
		else process.env[name] = value;
	}
	const core = createCore(readSettings(process.env));
	const labels = new Set<string>();
	const configFile = core.paths.configFile;
	const stateFile = core.paths.stateFile;
	return {
		root,
		home,
		agentDir,
		cwd,
		keychainService,
		configFile,
		stateFile,
		core,
		async storeAccount(label, tokens) {
			labels.add(label);
			await core.broker.storeLogin(label, tokens);
		},
		async writeConfig(accounts, activeLabel) {
			await core.config.update((config) => ({ next: { ...config, accounts, activeLabel }, result: undefined }));
		},
		async resetState() {
			const temp = `${stateFile}.bench-${randomBytes(4).toString("hex")}.tmp`;
			await fs.writeFile(temp, `${JSON.stringify(emptyState())}\n`, { mode: 0o600 });
			await fs.rename(temp, stateFile);
		},
		async quiesce() {
			const locks = [`${stateFile}.lock`, `${configFile}.lock`];
			const deadline = Date.now() + 5_000;
			let quiet = 0;
			// A write that is about to start has not made its lock yet: require a few quiet polls in a row.
			while (quiet < 3 && Date.now() < deadline) {
				await new Promise((resolve) => setTimeout(resolve, 1));
				quiet = locks.some((lock) => existsSync(lock)) ? 0 : quiet + 1;
			}
		},
		async cleanup() {
			for (const label of labels) await core.broker.remove(label).catch(() => {});
			// Late background writes of the extension (lock directories, temp files) may still be landing: retry.
			await fs.rm(root, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
		},
	};
}
