import { promises as fs } from "node:fs";
import { join } from "node:path";
import lockfile from "proper-lockfile";
import { describe, expect, it } from "vitest";
import { parseAccountsConfig } from "../src/config/stores.ts";
import { newAccessToken, newRefreshToken } from "./helpers/fake-token-endpoint.ts";
import { legacyAccount } from "./helpers/migration-sandbox.ts";
import { AUTH, useMigrationWorld, withoutAnthropic } from "./helpers/migration-world.ts";

const world = useMigrationWorld();
const { run, cli, givenLegacyConfig, givenPiAuth } = world;

describe("--from-pi-auth moves pi's own Anthropic login into the keychain", () => {
	it("stores it under the label, creates the config, and cuts exactly that entry out of auth.json", async () => {
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
		// Besides the refresh-lock directory the broker keeps (no token in it), only the two files.
		const files = (await fs.readdir(world.sandbox.agentDir)).filter((name) => name !== "multi-claude-code-locks");
		expect(files.sort()).toEqual(["auth.json", "multi-claude-code.json"]);
	});

	it("adds the label to an existing config and keeps its accounts; a second run has nothing to import", async () => {
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

	it("a dry run prints the plan and changes nothing", async () => {
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

	it("waits for pi's own lock on auth.json before touching anything", async () => {
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
		world.record(result);

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
					JSON.stringify({ anthropic: { type: "api_key", key: newRefreshToken("mig") } }),
				),
			says: "is not an OAuth (Claude Pro/Max) login",
		},
		{
			name: "an OAuth login without a refresh token",
			label: "half",
			setup: () =>
				world.sandbox.write(
					world.sandbox.authFile,
					JSON.stringify({ anthropic: { type: "oauth", access: newAccessToken("mig"), expires: 1 } }),
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
				await world.keychain.store.set("occupied", "someone else's");
			},
			says: 'different login for "occupied"',
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

	it.each(refusals)("refuses, changing nothing: $name", async ({ label, setup, says, code }) => {
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

	it("dying inside auth.json's rewrite leaves pi's login in place; a re-run removes the temp copy and finishes", async () => {
		world.labels.add("stuck");
		// auth.json stays over 1 KiB without the entry, the new config under it: only auth.json's rewrite dies.
		const login = await givenPiAuth("middle", 1_200);

		const killed = await run(["--from-pi-auth", "stuck"], { fileSizeLimitBlocks: 1 });

		expect(killed.signal).toBe("SIGXFSZ");
		expect(await world.sandbox.read(world.sandbox.authFile)).toBe(login.text);
		expect(await world.keychain.credentials("stuck")).toEqual(login.credentials);
		expect(await world.sandbox.filesContaining(world.tokens)).toEqual([AUTH]);
		const temps = await world.sandbox.tempFiles();
		expect(temps).toEqual([expect.stringMatching(/^\.auth\.json\.\d+\.[0-9a-f]{12}\.tmp$/)]);
		const temp = join(world.sandbox.agentDir, temps[0]!);
		// A partial copy of the other providers' entries: their secrets, left in a file nobody owns any more.
		expect(await world.sandbox.read(temp)).toContain('"openai"');
		await world.sandbox.ageLeftoverLocks();
		const finished = await cli(["--from-pi-auth", "stuck"]);
		expect(finished.code).toBe(0);
		expect(finished.stdout).toContain(`Removed ${temp}, a temp file an interrupted run left behind`);
		expect(await world.sandbox.tempFiles()).toEqual([]);
		expect(await world.sandbox.read(world.sandbox.authFile)).toBe(withoutAnthropic(login.data));
	});

	it("a run removes only temp files of its own naming whose writer is gone or that are old", async () => {
		world.labels.add("tidy");
		await givenPiAuth();
		const pidMax = Number(await fs.readFile("/proc/sys/kernel/pid_max", "utf8").catch(() => "4194304"));
		const names = {
			deadWriter: `.auth.json.${pidMax + 1}.0123456789ab.tmp`,
			liveWriter: `.auth.json.${process.pid}.0123456789ab.tmp`,
			liveButOld: `.auth.json.${process.ppid}.ba9876543210.tmp`,
			otherName: ".auth.json.backup.tmp",
			noDot: `auth.json.${pidMax + 1}.0123456789ab.tmp`,
			otherFile: `.other.json.${pidMax + 1}.0123456789ab.tmp`,
		};
		for (const name of Object.values(names)) await world.sandbox.write(join(world.sandbox.agentDir, name), "{}");
		const hourAgo = new Date(Date.now() - 3_600_000);
		await fs.utimes(join(world.sandbox.agentDir, names.liveButOld), hourAgo, hourAgo);

		const result = await run(["--from-pi-auth", "tidy"]);

		expect(result.code).toBe(0);
		const left = await fs.readdir(world.sandbox.agentDir);
		expect(left).not.toContain(names.deadWriter);
		expect(left).not.toContain(names.liveButOld);
		for (const kept of [names.liveWriter, names.otherName, names.noDot, names.otherFile])
			expect(left).toContain(kept);
		expect(result.stdout.match(/^Removed .*\.tmp, a temp file/gm)).toHaveLength(2);
	});

	it("a config broken after the keychain write stops the move; auth.json keeps the login till a re-run", async () => {
		world.labels.add("halfway");
		const login = await givenPiAuth("first");
		const paused = await world.migrate.startPaused(["--from-pi-auth", "halfway"], "pi-auth-stored");
		await world.sandbox.write(world.sandbox.configFile, "{ not json");

		const failed = await paused.resume();
		world.record(failed);

		expect(failed.code).toBe(1);
		expect(failed.stderr).toContain("is not valid JSON");
		expect(failed.stderr).toContain('The login is safely in the keychain as "halfway"');
		expect(await world.sandbox.read(world.sandbox.authFile)).toBe(login.text);
		expect(await world.keychain.credentials("halfway")).toEqual(login.credentials);

		await fs.rm(world.sandbox.configFile);
		expect((await cli(["--from-pi-auth", "halfway"])).code).toBe(0);
		expect(await world.sandbox.read(world.sandbox.authFile)).toBe(withoutAnthropic(login.data));
	});

	it("auth.json edited by another program during the import is not overwritten", async () => {
		world.labels.add("edited");
		const login = await givenPiAuth("last");
		const paused = await world.migrate.startPaused(["--from-pi-auth", "edited"], "pi-auth-config-written");
		await fs.appendFile(world.sandbox.authFile, "\n");

		const failed = await paused.resume();
		world.record(failed);

		expect(failed.code).toBe(1);
		expect(failed.stderr).toContain("was changed by something else");
		expect(await world.sandbox.read(world.sandbox.authFile)).toBe(`${login.text}\n`);
		expect(await world.keychain.credentials("edited")).toEqual(login.credentials);
		expect((await cli(["--from-pi-auth", "edited"])).code).toBe(0);
		expect(await world.sandbox.read(world.sandbox.authFile)).toBe(withoutAnthropic(login.data));
	});

	it.each(["pi-auth-locked", "pi-auth-stored", "pi-auth-config-written", "pi-auth-removed"])(
		"SIGKILL at %s loses nothing and a re-run completes the move",
		async (step) => {
			world.labels.add("moved");
			const login = await givenPiAuth("middle");

			const killed = await (await world.migrate.startPaused(["--from-pi-auth", "moved"], step)).kill();
			world.record(killed);

			const auth = await world.sandbox.read(world.sandbox.authFile);
			expect([login.text, withoutAnthropic(login.data)]).toContain(auth);
			const inKeychain = await world.keychain.holds("moved", login.credentials);
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
