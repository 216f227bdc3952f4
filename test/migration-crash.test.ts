import { promises as fs } from "node:fs";
import { describe, expect, it } from "vitest";
import { parseAccountsConfig } from "../src/config/stores.ts";
import { type LegacyAccountFixture, legacyAccount } from "./helpers/migration-sandbox.ts";
import { CONFIG, credentialsOf, useMigrationWorld } from "./helpers/migration-world.ts";

const world = useMigrationWorld();
const { run, cli, givenLegacyConfig } = world;

/** After any interruption: the file is the untouched original or a valid new one, and no account is lost. */
async function expectNoAccountLost(original: string, accounts: readonly LegacyAccountFixture[]): Promise<boolean> {
	const text = await world.sandbox.read(world.sandbox.configFile);
	const untouched = text === original;
	if (!untouched) parseAccountsConfig(JSON.parse(text), world.sandbox.configFile);
	for (const account of accounts) {
		const inKeychain = await world.keychain.holds(account.label, credentialsOf(account));
		expect(untouched || inKeychain, `"${account.label}" is in neither the file nor the keychain`).toBe(true);
	}
	const holders = await world.sandbox.filesContaining(world.tokens);
	expect(holders).toEqual(untouched ? [CONFIG] : []);
	return untouched;
}

describe("failures part-way leave the original file byte-identical and say what is in the keychain", () => {
	it("an unreachable keychain stops the run before anything changes", async () => {
		await givenLegacyConfig([legacyAccount("offline")]);
		world.tokensMayRemainIn = [CONFIG];
		const before = await world.sandbox.snapshot();

		const result = await run([], { env: { DBUS_SESSION_BUS_ADDRESS: "unix:path=/nonexistent/pi-mcc-bus" } });

		expect(result.code).toBe(1);
		expect(result.stderr).toContain("Cannot read the keychain");
		// The failed run leaves no lock or temp file behind either.
		expect(await world.sandbox.snapshot()).toEqual(before);
	});

	it("a keychain item created by someone else during the run is not overwritten", async () => {
		const first = legacyAccount("first");
		const second = legacyAccount("second");
		const original = await givenLegacyConfig([first, second]);
		const paused = await world.migrate.startPaused([], "stored:first");
		const intruder = credentialsOf(legacyAccount("intruder"));
		world.tokens.push(intruder.access, intruder.refresh);
		await world.keychain.put("second", intruder);

		const result = await paused.resume();
		world.record(result);

		expect(result.code).toBe(1);
		expect(result.stderr).toContain('The keychain item of "second" appeared while the migration ran');
		expect(result.stderr).toContain('Already in the keychain (a re-run finds them and keeps them): "first".');
		expect(await world.sandbox.read(world.sandbox.configFile)).toBe(original);
		expect(await world.keychain.credentials("second")).toEqual(intruder);
		world.tokensMayRemainIn = [CONFIG];
	});

	it("a file edited by another program during the run is not overwritten", async () => {
		const account = legacyAccount("edited");
		const original = await givenLegacyConfig([account]);
		const paused = await world.migrate.startPaused([], "verified");
		await fs.appendFile(world.sandbox.configFile, "\n");

		const result = await paused.resume();
		world.record(result);

		expect(result.code).toBe(1);
		expect(result.stderr).toContain("was changed by something else");
		expect(result.stderr).toContain('"edited"');
		expect(await world.sandbox.read(world.sandbox.configFile)).toBe(`${original}\n`);
		world.tokensMayRemainIn = [CONFIG];
	});
});

describe("a run killed at any point loses nothing and a re-run completes it", () => {
	it.each(["locked", "stored:alpha", "verified", "written"])("SIGKILL at %s", async (step) => {
		const alpha = legacyAccount("alpha");
		const beta = legacyAccount("beta");
		const original = await givenLegacyConfig([alpha, beta]);

		const killed = await (await world.migrate.startPaused([], step)).kill();
		world.record(killed);

		expect(killed.signal).toBe("SIGKILL");
		await expectNoAccountLost(original, [alpha, beta]);
		await world.sandbox.ageLeftoverLocks();
		const rerun = await cli();
		expect(rerun.code).toBe(0);
		await world.expectMigrated([alpha, beta]);
	});

	it("dying inside the file's atomic rewrite leaves the original intact; a re-run removes its temp file", async () => {
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
		expect(finished.stdout).toMatch(/Removed .*\.multi-claude-code\.json\.\d+\.[0-9a-f]{12}\.tmp/);
		await world.expectMigrated([one, two]);
	});

	it("SIGKILL at random moments while tokens move, many times over", async () => {
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
			world.record(killed);

			await expectNoAccountLost(original, accounts);
			await world.sandbox.ageLeftoverLocks();
			expect((await cli()).code).toBe(0);
			await world.expectMigrated(accounts);
			await fs.rm(world.sandbox.configFile);
		}
	});

	it("two runs at once: one migrates, the other waits for the lock and finds nothing left to do", async () => {
		const accounts = [legacyAccount("left"), legacyAccount("right")];
		await givenLegacyConfig(accounts);

		const results = await Promise.all([run(), run()]);

		expect(results.map((result) => result.code)).toEqual([0, 0]);
		expect(results.filter((result) => result.stdout.includes("Done: 2 accounts")).length).toBe(1);
		await world.expectMigrated(accounts);
	});
});
