import { promises as fs } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseAccountsConfig } from "../src/config/stores.ts";
import { convertLegacyConfig } from "../src/migration/legacy-config.ts";
import { newRefreshToken } from "./helpers/fake-token-endpoint.ts";
import { ROOT } from "./helpers/migration-cli.ts";
import { legacyAccount, legacyText, tokensOf } from "./helpers/migration-sandbox.ts";
import { CONFIG, credentialsOf, useMigrationWorld } from "./helpers/migration-world.ts";

const world = useMigrationWorld();
const { run, cli, givenLegacyConfig } = world;

describe("migrating the old plaintext config", () => {
	it("moves all tokens to the keychain, rewrites the file in the new format, keeps non-secret fields", async () => {
		const work = legacyAccount("work", { fallbackTo: "personal", email: "w@example.com" });
		const personal = legacyAccount("personal", { fallbackTo: ["work", "ghost"] });
		await givenLegacyConfig([work, personal], { activeLabel: "work", theme: "dark" });

		const result = await run();

		expect(result.code).toBe(0);
		expect(result.stdout).toContain("Done: 2 accounts in the keychain");
		expect(result.stdout).toContain('"ghost" is not one of the accounts: dropped');
		await world.expectMigrated([work, personal]);
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

	it("a dry run prints the plan and changes neither the files nor the keychain", async () => {
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

	it("a dry run names a keychain item it would replace, and fails unless --replace is given", async () => {
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

	it("running it again on a migrated file says so, exits 0 and changes nothing", async () => {
		const account = legacyAccount("solo");
		await givenLegacyConfig([account]);
		expect((await cli()).code).toBe(0);
		const after = await world.sandbox.snapshot();

		const again = await cli();

		expect(again.code).toBe(0);
		expect(again.stdout).toContain("already migrated");
		expect(await world.sandbox.snapshot()).toEqual(after);
		await world.expectMigrated([account]);
	});

	it("a keychain item with a different login is not overwritten: the run stops and changes nothing", async () => {
		const differs = legacyAccount("differs");
		const foreign = legacyAccount("foreign");
		const fresh = legacyAccount("fresh");
		await givenLegacyConfig([differs, foreign, fresh]);
		const newer = credentialsOf(legacyAccount("newer"));
		world.tokens.push(newer.access, newer.refresh);
		await world.keychain.put("differs", newer);
		await world.keychain.store.set("foreign", "not written by this extension");
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

	it("--replace overwrites a different keychain item with the file's tokens", async () => {
		const account = legacyAccount("differs");
		await givenLegacyConfig([account]);
		await world.keychain.store.set("differs", "not written by this extension");

		const result = await cli(["--replace"]);

		expect(result.code).toBe(0);
		await world.expectMigrated([account]);
	});

	it("--file migrates the named file; a missing default is nothing to do, a missing named file an error", async () => {
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

	it("--help documents every flag and exits 0; an unknown flag exits 2 and changes nothing", async () => {
		await givenLegacyConfig([legacyAccount("idle")]);
		world.tokensMayRemainIn = [CONFIG];
		const before = await world.sandbox.snapshot();

		const help = await run(["--help"]);
		const wrong = await run(["--frobnicate"]);

		expect(help.code).toBe(0);
		for (const flag of ["--dry-run", "--file", "--replace", "--rotate", "--from-pi-auth", "--help"]) {
			expect(help.stdout).toContain(flag);
		}
		expect(wrong.code).toBe(2);
		expect(wrong.stderr).toContain("--frobnicate");
		expect(await world.sandbox.snapshot()).toEqual(before);
	});
});

describe("bad input is refused with a clear message and nothing changed", () => {
	const token = newRefreshToken("mig");
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

	it.each(cases)("$name", async ({ text, says }) => {
		const labels = ["a", "twin", "Work", "work", "my work", "ok", "half", "keyed", "proto", "big"];
		for (const label of labels) world.labels.add(label);
		world.tokens.push(token, ...[...text.matchAll(/sk-ant-[a-z0-9]+-mig-[0-9a-f]{24}/g)].map((match) => match[0]));
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

	it("a symlinked config is not followed", async () => {
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

	it("a config other users can write is not trusted", async () => {
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

describe("reading the old format", () => {
	it("drops fallbacks to unknown accounts, to itself or repeated, and an unknown activeLabel, with notes", () => {
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
	it("the bin is compiled JavaScript that an --omit=dev install ships and runs", async () => {
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

/** The agent dir's files, without the refresh-lock directory the broker creates (it holds no token). */
async function agentDirFiles(): Promise<string[]> {
	return (await fs.readdir(world.sandbox.agentDir)).filter((name) => name !== "multi-claude-code-locks");
}
