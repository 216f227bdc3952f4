import { promises as fs } from "node:fs";
import { join } from "node:path";
import lockfile from "proper-lockfile";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from "vitest";
import type { StoredCredentials } from "../src/broker/credentials.ts";
import { parseAccountsConfig } from "../src/config/stores.ts";
import { runMigrationCli } from "../src/migration/cli.ts";
import { removeTopLevelMember } from "../src/migration/json-members.ts";
import { convertLegacyConfig } from "../src/migration/legacy-format.ts";
import { Output } from "../src/migration/output.ts";
import { buildMigrate, Migrate, ROOT, type RunOptions, type RunResult } from "./helpers/migration-cli.ts";
import { requireTestKeyring, TestKeychain, uniqueService } from "./helpers/migration-keychain.ts";
import {
	containsAny,
	fakeToken,
	type LegacyAccountFixture,
	legacyAccount,
	legacyText,
	Sandbox,
	tokensOf,
} from "./helpers/migration-sandbox.ts";

interface TestWorld {
	sandbox: Sandbox;
	env: Record<string, string>;
	keychain: TestKeychain;
	migrate: Migrate;
	/** Every token this test put anywhere: no output may contain one, and no file but the allowed ones. */
	tokens: string[];
	/** Files (sandbox-relative) that may still hold tokens when the test ends. */
	tokensMayRemainIn: string[];
	labels: Set<string>;
	outputs: RunResult[];
}

let world: TestWorld;
let bin: Awaited<ReturnType<typeof buildMigrate>> | undefined;

beforeAll(async () => {
	requireTestKeyring();
	bin = await buildMigrate();
}, 120_000);

afterAll(async () => {
	await bin?.remove();
});

beforeEach(async () => {
	const sandbox = await Sandbox.create();
	const service = uniqueService();
	const env: Record<string, string> = {};
	for (const [key, value] of Object.entries(process.env)) if (value !== undefined) env[key] = value;
	delete env.PI_MCC_MIGRATE_PAUSE_AT;
	Object.assign(env, {
		HOME: sandbox.home,
		PI_CODING_AGENT_DIR: sandbox.agentDir,
		PI_MCC_KEYCHAIN_SERVICE: service,
		PI_MCC_KEYCHAIN_TIMEOUT_MS: "10000",
	});
	world = {
		sandbox,
		env,
		keychain: new TestKeychain(service),
		migrate: new Migrate(bin?.script ?? "", env),
		tokens: [],
		tokensMayRemainIn: [],
		labels: new Set(),
		outputs: [],
	};
});

afterEach(async () => {
	try {
		for (const output of world.outputs) {
			expect(containsAny(output.stdout + output.stderr, world.tokens), "a token reached the output").toBe(false);
		}
		expect(await world.sandbox.filesContaining(world.tokens)).toEqual([...world.tokensMayRemainIn].sort());
	} finally {
		await world.keychain.removeAll(world.labels);
		await world.sandbox.remove();
	}
});

/** The package bin as a child process: exit status, crash safety, locks between processes. */
async function run(args: readonly string[] = [], options?: RunOptions): Promise<RunResult> {
	const result = await world.migrate.run(args, options);
	world.outputs.push(result);
	return result;
}

/** The same command in this process (same code path but process.exit): quick checks of refusals and plans. */
async function cli(args: readonly string[] = []): Promise<RunResult> {
	let stdout = "";
	let stderr = "";
	const out = new Output(
		(text) => {
			stdout += text;
		},
		(text) => {
			stderr += text;
		},
	);
	const code = await runMigrationCli(args, world.env, out);
	const result = { code, signal: null, stdout, stderr };
	world.outputs.push(result);
	return result;
}

function credentialsOf(account: LegacyAccountFixture): StoredCredentials {
	return { access: account.accessToken ?? "", refresh: account.refreshToken ?? "", expires: account.expiresAt ?? 0 };
}

/** Writes an old-format config and registers its labels and tokens with the test's checks. */
async function givenLegacyConfig(accounts: LegacyAccountFixture[], top: Record<string, unknown> = {}): Promise<string> {
	const text = legacyText(accounts, top);
	await world.sandbox.write(world.sandbox.configFile, text);
	for (const account of accounts) world.labels.add(account.label);
	world.tokens.push(...tokensOf(accounts));
	return text;
}

const CONFIG = join(".pi", "agent", "multi-claude-code.json");
const AUTH = join(".pi", "agent", "auth.json");

/** After any interruption: the file is the untouched original or a valid new one, and no account is lost. */
async function expectNoAccountLost(original: string, accounts: readonly LegacyAccountFixture[]): Promise<boolean> {
	const text = await world.sandbox.read(world.sandbox.configFile);
	const untouched = text === original;
	if (!untouched) parseAccountsConfig(JSON.parse(text), world.sandbox.configFile);
	for (const account of accounts) {
		const inKeychain = (await world.keychain.compare(account.label, credentialsOf(account))) === "same";
		expect(untouched || inKeychain, `"${account.label}" is in neither the file nor the keychain`).toBe(true);
	}
	const holders = await world.sandbox.filesContaining(world.tokens);
	expect(holders).toEqual(untouched ? [CONFIG] : []);
	return untouched;
}

/**
 * `orphanTempsAllowed`: a SIGKILL inside the atomic rewrite can leave its temp file behind; it holds the new,
 * token-free content (the token scan still covers it), so only runs that were never killed must leave none.
 */
async function expectMigrated(accounts: readonly LegacyAccountFixture[], orphanTempsAllowed = false): Promise<void> {
	for (const account of accounts) {
		expect(await world.keychain.credentials(account.label)).toEqual(credentialsOf(account));
	}
	const text = await world.sandbox.read(world.sandbox.configFile);
	const config = parseAccountsConfig(JSON.parse(text), world.sandbox.configFile);
	expect(config.accounts.map((account) => account.label)).toEqual(accounts.map((account) => account.label));
	expect(await world.sandbox.mode(world.sandbox.configFile)).toBe(0o600);
	if (!orphanTempsAllowed) expect(await world.sandbox.tempFiles()).toEqual([]);
}

describe("migrating the old plaintext config", () => {
	test("moves all tokens to the keychain, rewrites the file in the new format, keeps non-secret fields", async () => {
		const work = legacyAccount("work", { fallbackTo: "personal", email: "w@example.com" });
		const personal = legacyAccount("personal", { fallbackTo: ["work", "ghost"] });
		await givenLegacyConfig([work, personal], { activeLabel: "work", theme: "dark" });

		const result = await run();

		expect(result.code).toBe(0);
		expect(result.stdout).toContain("Done: 2 accounts in the keychain");
		expect(result.stdout).toContain('"ghost" is not one of the accounts: dropped');
		await expectMigrated([work, personal]);
		expect(JSON.parse(await world.sandbox.read(world.sandbox.configFile))).toEqual({
			version: 1,
			activeLabel: "work",
			accounts: [
				{ label: "work", fallbackTo: ["personal"], email: "w@example.com" },
				{ label: "personal", fallbackTo: ["work"] },
			],
			theme: "dark",
		});
		expect(await agentDirFiles()).toEqual(["multi-claude-code.json"]);
	});

	test("a dry run prints the plan and changes neither the files nor the keychain", async () => {
		const kept = legacyAccount("kept");
		const fresh = legacyAccount("fresh");
		await givenLegacyConfig([kept, fresh]);
		await world.keychain.put("kept", credentialsOf(kept));
		world.tokensMayRemainIn = [CONFIG];
		const before = await world.sandbox.snapshot();

		const result = await cli(["--dry-run"]);

		expect(result.code).toBe(0);
		expect(result.stdout).toMatch(/kept\s+already in the keychain with the same tokens/);
		expect(result.stdout).toMatch(/fresh\s+create its keychain item/);
		expect(result.stdout).toContain('"version": 1');
		expect(result.stdout).toContain("Dry run: nothing was changed.");
		expect(await world.sandbox.snapshot()).toEqual(before);
		expect(await world.keychain.credentials("fresh")).toBeNull();
	});

	test("a dry run names a keychain item it would replace, and fails unless --replace is given", async () => {
		const account = legacyAccount("taken");
		await givenLegacyConfig([account]);
		await world.keychain.put("taken", { ...credentialsOf(legacyAccount("other")), expires: 1 });
		world.tokensMayRemainIn = [CONFIG];
		const before = await world.sandbox.snapshot();

		const refused = await cli(["--dry-run"]);
		const replacing = await cli(["--dry-run", "--replace"]);

		expect(refused.code).toBe(1);
		expect(refused.stdout).toMatch(/taken\s+STOP: its keychain item already holds a different login/);
		expect(replacing.code).toBe(0);
		expect(replacing.stdout).toMatch(/taken\s+REPLACE its keychain item/);
		expect(await world.sandbox.snapshot()).toEqual(before);
		expect((await world.keychain.credentials("taken"))?.expires).toBe(1);
	});

	test("running it again on a migrated file says so, exits 0 and changes nothing", async () => {
		const account = legacyAccount("solo");
		await givenLegacyConfig([account]);
		expect((await cli()).code).toBe(0);
		const after = await world.sandbox.snapshot();

		const again = await cli();

		expect(again.code).toBe(0);
		expect(again.stdout).toContain("already migrated");
		expect(await world.sandbox.snapshot()).toEqual(after);
		await expectMigrated([account]);
	});

	test("a keychain item with a different login is not overwritten: the run stops and changes nothing", async () => {
		const differs = legacyAccount("differs");
		const foreign = legacyAccount("foreign");
		const fresh = legacyAccount("fresh");
		await givenLegacyConfig([differs, foreign, fresh]);
		const newer = credentialsOf(legacyAccount("newer"));
		world.tokens.push(newer.access, newer.refresh);
		await world.keychain.put("differs", newer);
		await world.keychain.putRaw("foreign", "not written by this extension");
		world.tokensMayRemainIn = [CONFIG];
		const before = await world.sandbox.snapshot();

		const result = await cli();

		expect(result.code).toBe(1);
		expect(result.stderr).toContain('different login for "differs", "foreign"');
		expect(result.stderr).toContain("--replace");
		expect(await world.sandbox.snapshot()).toEqual(before);
		expect(await world.keychain.credentials("differs")).toEqual(newer);
		expect(await world.keychain.store.get("foreign")).toBe("not written by this extension");
		expect(await world.keychain.credentials("fresh")).toBeNull();
	});

	test("--replace overwrites a different keychain item with the file's tokens", async () => {
		const account = legacyAccount("differs");
		await givenLegacyConfig([account]);
		await world.keychain.putRaw("differs", "not written by this extension");

		const result = await cli(["--replace"]);

		expect(result.code).toBe(0);
		await expectMigrated([account]);
	});

	test("--file migrates the named file; a missing default is nothing to do, a missing named file an error", async () => {
		const nothing = await cli();
		const missing = await cli(["--file", join(world.sandbox.home, "nope.json")]);
		const other = join(world.sandbox.home, "elsewhere.json");
		const account = legacyAccount("elsewhere");
		world.labels.add("elsewhere");
		world.tokens.push(...tokensOf([account]));
		await world.sandbox.write(other, legacyText([account]));

		const moved = await cli(["--file", other]);

		expect(nothing.code).toBe(0);
		expect(nothing.stdout).toContain("nothing to migrate");
		expect(missing.code).toBe(1);
		expect(missing.stderr).toContain("does not exist");
		expect(moved.code).toBe(0);
		expect(await world.keychain.credentials("elsewhere")).toEqual(credentialsOf(account));
		expect(parseAccountsConfig(JSON.parse(await world.sandbox.read(other)), other).accounts).toEqual([
			{ label: "elsewhere", fallbackTo: [] },
		]);
		expect(await agentDirFiles()).toEqual([]);
	});

	test("--help documents every flag and exits 0; an unknown flag exits 2 and changes nothing", async () => {
		await givenLegacyConfig([legacyAccount("idle")]);
		world.tokensMayRemainIn = [CONFIG];
		const before = await world.sandbox.snapshot();

		const help = await run(["--help"]);
		const wrong = await run(["--frobnicate"]);

		expect(help.code).toBe(0);
		for (const flag of ["--dry-run", "--file", "--replace", "--from-pi-auth", "--help"]) {
			expect(help.stdout).toContain(flag);
		}
		expect(wrong.code).toBe(2);
		expect(wrong.stderr).toContain("--frobnicate");
		expect(await world.sandbox.snapshot()).toEqual(before);
	});
});

describe("bad input is refused with a clear message and nothing changed", () => {
	const token = fakeToken("ort01");
	const cases: { name: string; text: string; says: string | RegExp }[] = [
		{
			name: "unparsable JSON",
			text: `{"accounts": [{"label": "a", "refreshToken": ${token}}]}`,
			says: "is not valid JSON",
		},
		{ name: "a JSON array", text: `[{"refreshToken": "${token}"}]`, says: "does not hold a JSON object" },
		{ name: "an unknown shape", text: `{"users": [{"refreshToken": "${token}"}]}`, says: 'neither a "version"' },
		{
			name: "an account that is not an object",
			text: `{"accounts": ["${token}"]}`,
			says: "not in the old multi-claude-code format",
		},
		{
			name: "a versioned file holding tokens",
			text: `{"version": 1, "accounts": [{"label": "a", "refreshToken": "${token}"}]}`,
			says: "this migration does not know that shape",
		},
		{
			name: "duplicate labels",
			text: legacyText([legacyAccount("twin"), legacyAccount("twin")]),
			says: '"twin" appears twice',
		},
		{
			name: "labels differing only in case",
			text: legacyText([legacyAccount("Work"), legacyAccount("work")]),
			says: "differ only in letter case",
		},
		{
			name: "an invalid label",
			text: legacyText([legacyAccount("my work")]),
			says: '"my work" is not a valid label',
		},
		{
			name: "an account without a refresh token",
			text: legacyText([legacyAccount("ok"), legacyAccount("half", { refreshToken: undefined })]),
			says: 'accounts[1] ("half") has no refresh token',
		},
		{
			name: "an account without an access token",
			text: legacyText([legacyAccount("half", { accessToken: "" })]),
			says: "accessToken",
		},
		{
			name: "a secret field the migration cannot move",
			text: legacyText([legacyAccount("keyed", { apiKey: `sk-ant-api03-${token.slice(-24)}` })]),
			says: "accounts[0].apiKey looks secret",
		},
		{
			name: "a __proto__ key",
			text: legacyText([legacyAccount("proto", { ["__proto__"]: { admin: true } })]),
			says: 'has a "__proto__" key',
		},
		{
			name: "a huge file",
			text: legacyText([legacyAccount("big", { padding: "x".repeat(1_100_000) })]),
			says: "more than this extension ever writes",
		},
	];

	test.each(cases)("$name", async ({ text, says }) => {
		const labels = ["a", "twin", "Work", "work", "my work", "ok", "half", "keyed", "proto", "big"];
		for (const label of labels) world.labels.add(label);
		world.tokens.push(token, ...[...text.matchAll(/sk-ant-[a-z0-9]+-[0-9a-f]{36}/g)].map((match) => match[0]));
		await world.sandbox.write(world.sandbox.configFile, text);
		world.tokensMayRemainIn = [CONFIG];
		const before = await world.sandbox.snapshot();

		const result = await cli();

		expect(result.code).toBe(1);
		expect(result.stderr).toContain(world.sandbox.configFile);
		expect(result.stderr).toMatch(typeof says === "string" ? new RegExp(escapeRegExp(says)) : says);
		expect(result.stderr).toContain("Nothing was changed.");
		expect(await world.sandbox.snapshot()).toEqual(before);
		for (const label of labels) expect(await world.keychain.store.get(label)).toBeNull();
	});

	test("a symlinked config is not followed", async () => {
		const account = legacyAccount("linked");
		const target = join(world.sandbox.home, "real.json");
		world.labels.add("linked");
		world.tokens.push(...tokensOf([account]));
		await world.sandbox.write(target, legacyText([account]));
		await fs.symlink(target, world.sandbox.configFile);
		world.tokensMayRemainIn = ["real.json"];
		const before = await world.sandbox.snapshot();

		const result = await cli();

		expect(result.code).toBe(1);
		expect(result.stderr).toContain("is a symbolic link");
		expect(await world.sandbox.snapshot()).toEqual(before);
		expect(await world.keychain.store.get("linked")).toBeNull();
	});

	test("a config other users can write is not trusted", async () => {
		await givenLegacyConfig([legacyAccount("shared")]);
		await fs.chmod(world.sandbox.configFile, 0o666);
		world.tokensMayRemainIn = [CONFIG];
		const before = await world.sandbox.snapshot();

		const result = await cli();

		expect(result.code).toBe(1);
		expect(result.stderr).toContain("writable by other users");
		expect(await world.sandbox.snapshot()).toEqual(before);
	});
});

describe("failures part-way leave the original file byte-identical and say what is in the keychain", () => {
	test("an unreachable keychain stops the run before anything changes", async () => {
		await givenLegacyConfig([legacyAccount("offline")]);
		world.tokensMayRemainIn = [CONFIG];
		const before = await world.sandbox.snapshot();

		const result = await run([], { env: { DBUS_SESSION_BUS_ADDRESS: "unix:path=/nonexistent/pi-mcc-bus" } });

		expect(result.code).toBe(1);
		expect(result.stderr).toContain("Cannot read the keychain");
		// The failed run leaves no lock or temp file behind either.
		expect(await world.sandbox.snapshot()).toEqual(before);
	});

	test("a keychain item created by someone else during the run is not overwritten", async () => {
		const first = legacyAccount("first");
		const second = legacyAccount("second");
		const original = await givenLegacyConfig([first, second]);
		const paused = await world.migrate.startPaused([], "stored:first");
		const intruder = credentialsOf(legacyAccount("intruder"));
		world.tokens.push(intruder.access, intruder.refresh);
		await world.keychain.put("second", intruder);

		const result = await paused.resume();
		world.outputs.push(result);

		expect(result.code).toBe(1);
		expect(result.stderr).toContain('The keychain item of "second" appeared while the migration ran');
		expect(result.stderr).toContain('Already in the keychain (a re-run finds them and keeps them): "first".');
		expect(await world.sandbox.read(world.sandbox.configFile)).toBe(original);
		expect(await world.keychain.credentials("second")).toEqual(intruder);
		world.tokensMayRemainIn = [CONFIG];
	});

	test("a file edited by another program during the run is not overwritten", async () => {
		const account = legacyAccount("edited");
		const original = await givenLegacyConfig([account]);
		const paused = await world.migrate.startPaused([], "verified");
		await fs.appendFile(world.sandbox.configFile, "\n");

		const result = await paused.resume();
		world.outputs.push(result);

		expect(result.code).toBe(1);
		expect(result.stderr).toContain("was changed by something else");
		expect(result.stderr).toContain('"edited"');
		expect(await world.sandbox.read(world.sandbox.configFile)).toBe(`${original}\n`);
		world.tokensMayRemainIn = [CONFIG];
	});
});

describe("a run killed at any point loses nothing and a re-run completes it", () => {
	test.each(["locked", "stored:alpha", "verified", "written"])("SIGKILL at %s", async (step) => {
		const alpha = legacyAccount("alpha");
		const beta = legacyAccount("beta");
		const original = await givenLegacyConfig([alpha, beta]);

		const killed = await (await world.migrate.startPaused([], step)).kill();
		world.outputs.push(killed);

		expect(killed.signal).toBe("SIGKILL");
		await expectNoAccountLost(original, [alpha, beta]);
		await world.sandbox.ageLeftoverLocks();
		const rerun = await cli();
		expect(rerun.code).toBe(0);
		await expectMigrated([alpha, beta]);
	});

	test("dying inside the file's atomic rewrite leaves the original intact and a token-free temp file", async () => {
		const one = legacyAccount("one");
		const two = legacyAccount("two");
		const original = await givenLegacyConfig([one, two]);

		// A 0-byte file-size limit: the rewrite's temp file is created, and its first write ends the process
		// (SIGXFSZ; the lock library's exit hook turns Node's EFBIG into that signal).
		const killed = await run([], { fileSizeLimitBlocks: 0 });

		expect(killed.signal).toBe("SIGXFSZ");
		expect(await world.sandbox.tempFiles()).toHaveLength(1);
		expect(await world.sandbox.read(world.sandbox.configFile)).toBe(original);
		expect(await expectNoAccountLost(original, [one, two])).toBe(true);
		await world.sandbox.ageLeftoverLocks();
		const finished = await cli();
		expect(finished.code).toBe(0);
		expect(finished.stdout).toMatch(/one\s+already in the keychain with the same tokens/);
		await expectMigrated([one, two], true);
	});

	test("SIGKILL at random moments while tokens move, many times over", async () => {
		const labels = (round: number): string[] => ["a", "b", "c", "d", "e"].map((x) => `r${round}${x}`);
		// Calibrate on this machine: how long a run works after printing its plan (under the lock, before the
		// first keychain write) until it exits. The kills are spread over that window.
		await givenLegacyConfig(labels(9).map((label) => legacyAccount(label)));
		const calibration = world.migrate.start([]);
		await calibration.printed("Migrating ");
		const planned = Date.now();
		expect((await calibration.result).code).toBe(0);
		const window = Date.now() - planned;
		await fs.rm(world.sandbox.configFile);

		for (let round = 0; round < 6; round++) {
			const accounts = labels(round).map((label) => legacyAccount(label));
			const original = await givenLegacyConfig(accounts);
			const running = world.migrate.start([]);
			await running.printed("Migrating ");
			await new Promise((resolve) => setTimeout(resolve, Math.random() * window));
			const killed = await running.kill();
			world.outputs.push(killed);

			await expectNoAccountLost(original, accounts);
			await world.sandbox.ageLeftoverLocks();
			expect((await cli()).code).toBe(0);
			await expectMigrated(accounts, true);
			await fs.rm(world.sandbox.configFile);
		}
	});

	test("two runs at once: one migrates, the other waits for the lock and finds nothing left to do", async () => {
		const accounts = [legacyAccount("left"), legacyAccount("right")];
		await givenLegacyConfig(accounts);

		const results = await Promise.all([run(), run()]);

		expect(results.map((result) => result.code)).toEqual([0, 0]);
		expect(results.filter((result) => result.stdout.includes("Done: 2 accounts")).length).toBe(1);
		await expectMigrated(accounts);
	});
});

/** The agent dir's entries but the refresh locks' directory (each keychain write takes its account's lock). */
async function agentDirFiles(): Promise<string[]> {
	return (await fs.readdir(world.sandbox.agentDir)).filter((name) => name !== "multi-claude-code-locks");
}

interface PiLogin {
	credentials: StoredCredentials;
	data: Record<string, unknown>;
	text: string;
}

/** auth.json as pi writes it: JSON.stringify(data, null, 2), mode 0600, `anthropic` wherever `at` puts it. */
async function givenPiAuth(at: "first" | "middle" | "last" = "middle", padding = 0): Promise<PiLogin> {
	const credentials = { access: fakeToken("oat01"), refresh: fakeToken("ort01"), expires: Date.now() + 3_000_000 };
	world.tokens.push(credentials.access, credentials.refresh);
	const { access, refresh, expires } = credentials;
	const anthropic = { type: "oauth", refresh, access, expires };
	const others: [string, unknown][] = [
		["openai", { type: "api_key", key: `sk-proj-${"k".repeat(20 + padding)}` }],
		["github-copilot", { type: "oauth", refresh: "gho_refresh", access: "tid=1;exp=2", expires: 5 }],
	];
	const order = at === "first" ? [0, 1, 2] : at === "middle" ? [1, 0, 2] : [1, 2, 0];
	const entries = [["anthropic", anthropic] as [string, unknown], ...others];
	const data = Object.fromEntries(order.map((index) => entries[index]!));
	const text = JSON.stringify(data, null, 2);
	await world.sandbox.write(world.sandbox.authFile, text);
	return { credentials, data, text };
}

function withoutAnthropic(data: Record<string, unknown>): string {
	const { anthropic: _removed, ...rest } = data;
	return JSON.stringify(rest, null, 2);
}

describe("--from-pi-auth moves pi's own Anthropic login into the keychain", () => {
	test("stores it under the label, creates the config, and cuts exactly that entry out of auth.json", async () => {
		world.labels.add("pi");
		const login = await givenPiAuth("middle");

		const result = await run(["--from-pi-auth", "pi"]);

		expect(result.code).toBe(0);
		expect(result.stdout).toContain("run /login in pi again");
		expect(await world.keychain.credentials("pi")).toEqual(login.credentials);
		expect(await world.sandbox.read(world.sandbox.authFile)).toBe(withoutAnthropic(login.data));
		expect(await world.sandbox.mode(world.sandbox.authFile)).toBe(0o600);
		const config = parseAccountsConfig(JSON.parse(await world.sandbox.read(world.sandbox.configFile)), "config");
		expect(config).toEqual({ version: 1, accounts: [{ label: "pi", fallbackTo: [] }] });
		expect(await world.sandbox.mode(world.sandbox.configFile)).toBe(0o600);
		expect((await agentDirFiles()).sort()).toEqual(["auth.json", "multi-claude-code.json"]);
	});

	test("adds the label to an existing config and keeps its accounts; a second run has nothing to import", async () => {
		world.labels.add("imported");
		const existing = { version: 1, activeLabel: "home", accounts: [{ label: "home", fallbackTo: [] }] };
		await world.sandbox.write(world.sandbox.configFile, JSON.stringify(existing));
		const login = await givenPiAuth("last");

		const first = await cli(["--from-pi-auth", "imported"]);
		const after = await world.sandbox.snapshot();
		const second = await cli(["--from-pi-auth", "imported"]);

		expect(first.code).toBe(0);
		expect(JSON.parse(await world.sandbox.read(world.sandbox.configFile))).toEqual({
			...existing,
			accounts: [...existing.accounts, { label: "imported", fallbackTo: [] }],
		});
		expect(await world.sandbox.read(world.sandbox.authFile)).toBe(withoutAnthropic(login.data));
		expect(second.code).toBe(0);
		expect(second.stdout).toContain("nothing to import");
		expect(await world.sandbox.snapshot()).toEqual(after);
	});

	test("a dry run prints the plan and changes nothing", async () => {
		world.labels.add("planned");
		await givenPiAuth("first");
		world.tokensMayRemainIn = [AUTH];
		const before = await world.sandbox.snapshot();

		const result = await cli(["--from-pi-auth", "planned", "--dry-run"]);

		expect(result.code).toBe(0);
		expect(result.stdout).toMatch(/planned\s+create its keychain item/);
		expect(result.stdout).toContain('remove the "anthropic" entry');
		expect(await world.sandbox.snapshot()).toEqual(before);
		expect(await world.keychain.store.get("planned")).toBeNull();
	});

	test("waits for pi's own lock on auth.json before touching anything", async () => {
		world.labels.add("patient");
		const login = await givenPiAuth("middle");
		const release = await lockfile.lock(world.sandbox.authFile, { realpath: false, stale: 30_000 });
		const running = world.migrate.start(["--from-pi-auth", "patient"]);
		try {
			await running.printed(`Waiting for ${world.sandbox.authFile}.lock`);
			// Give it time to (wrongly) go ahead before checking that it did not.
			await new Promise((resolve) => setTimeout(resolve, 500));
			expect(await world.sandbox.read(world.sandbox.authFile)).toBe(login.text);
			expect(await world.keychain.store.get("patient")).toBeNull();
		} finally {
			await release();
		}
		const result = await running.result;
		world.outputs.push(result);

		expect(result.code).toBe(0);
		expect(await world.keychain.credentials("patient")).toEqual(login.credentials);
		expect(await world.sandbox.read(world.sandbox.authFile)).toBe(withoutAnthropic(login.data));
	});

	const refusals: { name: string; label: string; setup: () => Promise<void>; says: string; code?: number }[] = [
		{
			name: "auth.json without an Anthropic login",
			label: "nobody",
			setup: () =>
				world.sandbox.write(world.sandbox.authFile, JSON.stringify({ openai: { type: "api_key", key: "x" } })),
			says: 'No Anthropic OAuth login (an "anthropic" entry)',
		},
		{
			name: "an Anthropic API key rather than an OAuth login",
			label: "keyed",
			setup: () =>
				world.sandbox.write(
					world.sandbox.authFile,
					JSON.stringify({ anthropic: { type: "api_key", key: fakeToken("ort01") } }),
				),
			says: "is not an OAuth (Claude Pro/Max) login",
		},
		{
			name: "an OAuth login without a refresh token",
			label: "half",
			setup: () =>
				world.sandbox.write(
					world.sandbox.authFile,
					JSON.stringify({ anthropic: { type: "oauth", access: fakeToken("oat01"), expires: 1 } }),
				),
			says: "is incomplete",
		},
		{
			name: "an invalid label",
			label: "bad label",
			setup: async () => {
				await givenPiAuth();
			},
			says: '"bad label" is not a valid label',
			code: 2,
		},
		{
			name: "a config still in the old format",
			label: "later",
			setup: async () => {
				await givenPiAuth();
				await givenLegacyConfig([legacyAccount("old")]);
			},
			says: "Migrate it first with `npx pi-mcc-migrate`",
		},
		{
			name: "a label that differs from an existing account only in case",
			label: "Home",
			setup: async () => {
				await givenPiAuth();
				await world.sandbox.write(
					world.sandbox.configFile,
					JSON.stringify({ version: 1, accounts: [{ label: "home" }] }),
				);
			},
			says: 'differs from "Home" only in letter case',
		},
		{
			name: "a keychain item with a different login under that label",
			label: "occupied",
			setup: async () => {
				await givenPiAuth();
				await world.keychain.putRaw("occupied", "someone else's");
			},
			says: 'different login for "occupied"',
		},
		{
			name: "an auth.json with two anthropic entries",
			label: "twice",
			setup: async () => {
				const login = await givenPiAuth("first");
				const again = JSON.stringify(login.data.anthropic);
				await world.sandbox.write(world.sandbox.authFile, login.text.replace(/}$/, `, "anthropic": ${again}\n}`));
			},
			says: 'expected one top-level "anthropic" entry, found 2',
		},
		{
			name: "a symlinked auth.json",
			label: "linked",
			setup: async () => {
				const target = join(world.sandbox.home, "auth-target.json");
				await world.sandbox.write(target, JSON.stringify({ anthropic: { type: "oauth" } }));
				await fs.symlink(target, world.sandbox.authFile);
			},
			says: "is a symbolic link",
		},
	];

	test.each(refusals)("refuses, changing nothing: $name", async ({ label, setup, says, code }) => {
		world.labels.add(label);
		await setup();
		const before = await world.sandbox.snapshot();
		const keychainBefore = await world.keychain.store.get(label);
		world.tokensMayRemainIn = await world.sandbox.filesContaining(world.tokens);

		const result = await cli(["--from-pi-auth", label]);

		expect(result.code).toBe(code ?? 1);
		expect(result.stderr).toContain(says);
		expect(await world.sandbox.snapshot()).toEqual(before);
		expect(await world.keychain.store.get(label)).toBe(keychainBefore);
	});

	test("dying inside auth.json's atomic rewrite leaves pi's login in place; a re-run finishes the move", async () => {
		world.labels.add("stuck");
		// auth.json stays over 1 KiB without the entry, the new config under it: only auth.json's rewrite dies.
		const login = await givenPiAuth("middle", 1_200);

		const killed = await run(["--from-pi-auth", "stuck"], { fileSizeLimitBlocks: 1 });

		expect(killed.signal).toBe("SIGXFSZ");
		expect(await world.sandbox.read(world.sandbox.authFile)).toBe(login.text);
		expect(await world.keychain.credentials("stuck")).toEqual(login.credentials);
		expect(await world.sandbox.filesContaining(world.tokens)).toEqual([AUTH]);
		await world.sandbox.ageLeftoverLocks();
		const finished = await cli(["--from-pi-auth", "stuck"]);
		expect(finished.code).toBe(0);
		expect(await world.sandbox.read(world.sandbox.authFile)).toBe(withoutAnthropic(login.data));
	});

	test("a config broken after the keychain write stops the move; auth.json keeps the login till a re-run", async () => {
		world.labels.add("halfway");
		const login = await givenPiAuth("first");
		const paused = await world.migrate.startPaused(["--from-pi-auth", "halfway"], "pi-auth-stored");
		await world.sandbox.write(world.sandbox.configFile, "{ not json");

		const failed = await paused.resume();
		world.outputs.push(failed);

		expect(failed.code).toBe(1);
		expect(failed.stderr).toContain("is not valid JSON");
		expect(failed.stderr).toContain('The login is safely in the keychain as "halfway"');
		expect(await world.sandbox.read(world.sandbox.authFile)).toBe(login.text);
		expect(await world.keychain.credentials("halfway")).toEqual(login.credentials);

		await fs.rm(world.sandbox.configFile);
		expect((await cli(["--from-pi-auth", "halfway"])).code).toBe(0);
		expect(await world.sandbox.read(world.sandbox.authFile)).toBe(withoutAnthropic(login.data));
	});

	test("auth.json edited by another program during the import is not overwritten", async () => {
		world.labels.add("edited");
		const login = await givenPiAuth("last");
		const paused = await world.migrate.startPaused(["--from-pi-auth", "edited"], "pi-auth-config-written");
		await fs.appendFile(world.sandbox.authFile, "\n");

		const failed = await paused.resume();
		world.outputs.push(failed);

		expect(failed.code).toBe(1);
		expect(failed.stderr).toContain("was changed by something else");
		expect(await world.sandbox.read(world.sandbox.authFile)).toBe(`${login.text}\n`);
		expect(await world.keychain.credentials("edited")).toEqual(login.credentials);
		expect((await cli(["--from-pi-auth", "edited"])).code).toBe(0);
		expect(await world.sandbox.read(world.sandbox.authFile)).toBe(`${withoutAnthropic(login.data)}\n`);
	});

	test.each(["pi-auth-locked", "pi-auth-stored", "pi-auth-config-written", "pi-auth-removed"])(
		"SIGKILL at %s loses nothing and a re-run completes the move",
		async (step) => {
			world.labels.add("moved");
			const login = await givenPiAuth("middle");

			const killed = await (await world.migrate.startPaused(["--from-pi-auth", "moved"], step)).kill();
			world.outputs.push(killed);

			const auth = await world.sandbox.read(world.sandbox.authFile);
			expect([login.text, withoutAnthropic(login.data)]).toContain(auth);
			const inKeychain = (await world.keychain.compare("moved", login.credentials)) === "same";
			expect(auth === login.text || inKeychain, "the login is in neither auth.json nor the keychain").toBe(true);
			expect(await world.sandbox.filesContaining(world.tokens)).toEqual(auth === login.text ? [AUTH] : []);

			await world.sandbox.ageLeftoverLocks();
			const rerun = await cli(["--from-pi-auth", "moved"]);
			expect(rerun.code).toBe(0);
			expect(await world.keychain.credentials("moved")).toEqual(login.credentials);
			expect(await world.sandbox.read(world.sandbox.authFile)).toBe(withoutAnthropic(login.data));
			expect(JSON.parse(await world.sandbox.read(world.sandbox.configFile)).accounts).toEqual([
				{ label: "moved", fallbackTo: [] },
			]);
		},
	);
});

describe("cutting one entry out of auth.json", () => {
	const data = { openai: { type: "api_key", key: "k" }, anthropic: { type: "oauth", refresh: "r" }, zai: [1, "}"] };

	test.each([
		["first", { anthropic: data.anthropic, openai: data.openai, zai: data.zai }],
		["middle", data],
		["last", { openai: data.openai, zai: data.zai, anthropic: data.anthropic }],
		["only", { anthropic: data.anthropic }],
	])("gives exactly pi's own serialisation without it when it comes %s", (_position, layout) => {
		const { anthropic: _gone, ...rest } = layout as Record<string, unknown>;
		expect(removeTopLevelMember(JSON.stringify(layout, null, 2), "anthropic")).toBe(JSON.stringify(rest, null, 2));
	});

	test("keeps every other entry byte for byte in hand-edited layouts", () => {
		const text = '{"a" :{"x":"}\\"{"} ,\r\n\t"anthropic":{"k":["]",{"q":"\\\\"}]},  "b":[1,{"c":"\\""}],"d":null }';
		const result = removeTopLevelMember(text, "anthropic");
		expect(result).toBe('{"a" :{"x":"}\\"{"} ,\r\n\t"b":[1,{"c":"\\""}],"d":null }');
		expect(JSON.parse(result)).toEqual({ a: { x: '}"{' }, b: [1, { c: '"' }], d: null });
	});

	test("refuses when the entry is missing or appears twice", () => {
		expect(() => removeTopLevelMember('{"a":1}', "anthropic")).toThrow("found 0");
		expect(() => removeTopLevelMember('{"anthropic":1,"anthropic":2}', "anthropic")).toThrow("found 2");
	});
});

describe("reading the old format", () => {
	test("drops fallbacks to unknown accounts, to itself or repeated, and an unknown activeLabel, with notes", () => {
		const conversion = convertLegacyConfig(
			{
				activeLabel: "gone",
				accounts: [
					legacyAccount("a", { fallbackTo: ["a", "b", "b", "zz"] }),
					legacyAccount("b", { expiresAt: undefined, loggedInAt: 5 }),
				],
			},
			"config.json",
		);
		expect(conversion.config).toEqual({
			version: 1,
			accounts: [
				{ label: "a", fallbackTo: ["b"] },
				{ label: "b", fallbackTo: [], loggedInAt: 5 },
			],
		});
		expect(conversion.notes).toHaveLength(3);
		expect(conversion.accounts[1]?.credentials.expires).toBe(0);
	});
});

describe("packaging", () => {
	test("the bin is compiled JavaScript that an --omit=dev install ships and runs", async () => {
		const pkg = JSON.parse(await fs.readFile(join(ROOT, "package.json"), "utf8")) as {
			bin: Record<string, string>;
			files: string[];
			scripts: Record<string, string>;
		};
		const build = JSON.parse(await fs.readFile(join(ROOT, "tsconfig.build.json"), "utf8")) as {
			compilerOptions: { outDir: string; rootDir: string };
		};
		expect(pkg.bin["pi-mcc-migrate"]).toBe("dist/scripts/migrate.js");
		expect(build.compilerOptions).toMatchObject({ outDir: "dist", rootDir: "." });
		expect(pkg.files).toContain("dist");
		expect(pkg.scripts.prepack).toContain("build");
		expect(pkg.scripts.migrate).toContain("node dist/scripts/migrate.js");
		expect(await fs.readFile(join(ROOT, ".gitignore"), "utf8")).toMatch(/^dist\/$/m);
	});
});

function escapeRegExp(text: string): string {
	return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
