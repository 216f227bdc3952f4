import { promises as fs } from "node:fs";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { HttpTokenEndpoint, TokenEndpointError } from "../src/oauth/token-endpoint.ts";
import { type FakeTokenEndpoint, startFakeTokenEndpoint } from "./helpers/fake-token-endpoint.ts";
import { type LegacyAccountFixture, legacyAccount } from "./helpers/migration-sandbox.ts";
import { CONFIG, credentialsOf, useMigrationWorld } from "./helpers/migration-world.ts";

const world = useMigrationWorld();
const { run, cli, givenLegacyConfig, givenPiAuth } = world;
/** Refresh tokens are single-use there: a token once refreshed is refused ever after, as Anthropic does. */
let endpoint: FakeTokenEndpoint;

beforeEach(async () => {
	endpoint = await startFakeTokenEndpoint();
	world.env.PI_MCC_TOKEN_URL = endpoint.url;
});

// Runs before the world's own checks (vitest runs after-hooks in reverse): the pairs the endpoint issued are
// searched for in every output and file too.
afterEach(async () => {
	world.tokens.push(...endpoint.issued);
	await endpoint.close();
});

/** An old-format config whose refresh tokens the endpoint accepts, as Anthropic accepts a live login's. */
async function givenLiveLegacyConfig(accounts: LegacyAccountFixture[]): Promise<void> {
	await givenLegacyConfig(accounts);
	for (const account of accounts) endpoint.registerRefreshToken(account.refreshToken ?? "");
}

/** What someone holding an old copy of the file gets from the token endpoint with its refresh token. */
async function refreshWithCopy(refresh: string): Promise<"accepted" | string> {
	try {
		const grant = await new HttpTokenEndpoint({ url: endpoint.url, timeoutMs: 5_000 }).refresh(refresh);
		world.tokens.push(grant.access, grant.refresh);
		return "accepted";
	} catch (error) {
		if (error instanceof TokenEndpointError) return error.kind;
		throw error;
	}
}

describe("--rotate spends the refresh token that copies of the old file hold", () => {
	it("after migrating the old config, its refresh tokens are refused; the keychain holds the new pairs", async () => {
		const accounts = [legacyAccount("home"), legacyAccount("office")];
		await givenLiveLegacyConfig(accounts);

		const result = await run(["--rotate"]);

		expect(result.code, result.stderr).toBe(0);
		expect(result.stdout).toContain('Rotated "home", "office"');
		expect(endpoint.requests.map((request) => request.refresh_token)).toEqual(
			accounts.map((account) => account.refreshToken),
		);
		for (const account of accounts) {
			const stored = await world.keychain.credentials(account.label);
			expect(endpoint.issued).toContain(stored?.refresh);
			expect(await refreshWithCopy(account.refreshToken ?? "")).toBe("invalid_grant");
		}
		await expectConfigLabels(["home", "office"]);
	});

	it("without --rotate the copies' refresh tokens stay valid, and the advice names --rotate and claude.ai", async () => {
		const account = legacyAccount("kept");
		await givenLiveLegacyConfig([account]);

		const result = await run();

		expect(result.code).toBe(0);
		expect(result.stdout).toContain("`npx pi-mcc-migrate --rotate`");
		expect(result.stdout).toContain("revoke the grant at claude.ai");
		expect(result.stdout).toContain("a new /mcc-login does not change that");
		expect(endpoint.requests).toEqual([]);
		expect(await world.keychain.holds("kept", credentialsOf(account))).toBe(true);
		expect(await refreshWithCopy(account.refreshToken ?? "")).toBe("accepted");
	});

	it("--from-pi-auth --rotate spends the refresh token of auth.json's copy of the login", async () => {
		world.labels.add("pi");
		const login = await givenPiAuth();
		endpoint.registerRefreshToken(login.credentials.refresh);

		const result = await run(["--from-pi-auth", "pi", "--rotate"]);

		expect(result.code, result.stderr).toBe(0);
		expect(result.stdout).toContain('Rotated "pi"');
		expect(endpoint.issued).toContain((await world.keychain.credentials("pi"))?.refresh);
		expect(await refreshWithCopy(login.credentials.refresh)).toBe("invalid_grant");
	});

	it("a rotation that fails after the move loses nothing, says the copies still work and what to run", async () => {
		const account = legacyAccount("stays");
		await givenLiveLegacyConfig([account]);
		endpoint.setMode("http500");

		const failed = await run(["--rotate"]);

		expect(failed.code).toBe(1);
		expect(failed.stdout).toContain("Done: 1 account in the keychain");
		expect(failed.stderr).toContain('Rotating "stays" failed: Account "stays": its token pair could not be rotated');
		expect(failed.stderr).toContain('may still hold a working refresh token for "stays"');
		expect(failed.stderr).toContain("run `npx pi-mcc-migrate --rotate` again");
		expect(failed.stderr).toContain("revoke the grant at claude.ai");
		expect(await world.keychain.holds("stays", credentialsOf(account))).toBe(true);
		await expectConfigLabels(["stays"]);

		endpoint.setMode("ok");
		const again = await run(["--rotate"]);

		expect(again.code, again.stderr).toBe(0);
		expect(again.stdout).toContain("already migrated");
		expect(again.stdout).toContain('Rotated "stays"');
		expect(await refreshWithCopy(account.refreshToken ?? "")).toBe("invalid_grant");
	});

	it("--rotate --dry-run says what it would rotate, before and after the move, and changes nothing", async () => {
		await givenLiveLegacyConfig([legacyAccount("planned")]);
		world.tokensMayRemainIn = [CONFIG];
		const before = await world.sandbox.snapshot();

		const plan = await cli(["--rotate", "--dry-run"]);

		expect(plan.code).toBe(0);
		expect(plan.stdout).toContain("then use each account's refresh token once (--rotate)");
		expect(plan.stdout).toContain("Dry run: nothing was changed.");
		expect(await world.sandbox.snapshot()).toEqual(before);

		world.tokensMayRemainIn = [];
		expect((await cli()).code).toBe(0);
		const after = await world.sandbox.snapshot();
		const migrated = await cli(["--rotate", "--dry-run"]);

		expect(migrated.code).toBe(0);
		expect(migrated.stdout).toContain('--rotate would use the refresh token of "planned" once');
		expect(await world.sandbox.snapshot()).toEqual(after);
		expect(endpoint.requests).toEqual([]);
	});
});

async function expectConfigLabels(labels: string[]): Promise<void> {
	const config = JSON.parse(await fs.readFile(world.sandbox.configFile, "utf8")) as { accounts: { label: string }[] };
	expect(config.accounts.map((account) => account.label)).toEqual(labels);
}
