/**
 * What several pi sessions share (cooldowns in the state file beside the config) and what the keychain decides
 * (a deleted item revokes the account at once; an expired access token is renewed through the token endpoint).
 */
import { describe, expect, it } from "vitest";
import { type AccountTokens, readState, setCooldown, setupAccounts } from "../helpers/accounts.ts";
import { useE2eWorld } from "../helpers/e2e-world.ts";
import { type Behaviour, ok, rateLimited, unauthorized } from "../helpers/fake-anthropic-api.ts";
import { keychainDelete, keychainLookup, startPiProcess, waitFor } from "../helpers/pi-harness.ts";

const world = useE2eWorld((current) => current.tokens.setMode("ok"));
let accounts: Record<string, AccountTokens>;

async function setup(behaviours: Record<string, Behaviour> = {}, expiresInMs?: number): Promise<void> {
	accounts = await setupAccounts({
		accounts: [
			{ label: "enterprise", fallbackTo: ["personal", "side"], expiresInMs },
			{ label: "personal", expiresInMs },
			{ label: "side", expiresInMs },
		],
		active: "enterprise",
		tokens: world().tokens,
	});
	for (const [label, pair] of Object.entries(accounts)) {
		world().api.script(pair.access, behaviours[label] ?? ok(`answer from ${label}`));
	}
}

function asked(): string[] {
	const byToken = new Map(Object.entries(accounts).map(([label, pair]) => [pair.access, label]));
	return world().api.requests.map((request) => byToken.get(request.token ?? "") ?? `unknown:${request.token}`);
}

describe("cooldowns shared between pi sessions", () => {
	it("lets a second session skip the account the first session found rate limited, without a request", async () => {
		await setup({ enterprise: rateLimited({ retryAfterSec: 600 }) });
		const first = await world().start();
		expect((await first.prompt("hello")).text).toBe("answer from personal");
		expect(asked()).toEqual(["enterprise", "personal"]);

		const second = await world().start();
		world().api.clearRequests();
		const result = await second.prompt("hello again");
		expect(result.text).toBe("answer from personal");
		expect(asked()).toEqual(["personal"]);
	});

	it("lets a separate pi process skip the account a session of this process found rate limited", async () => {
		await setup({ enterprise: rateLimited({ retryAfterSec: 600 }) });
		const session = await world().start();
		expect((await session.prompt("hello")).text).toBe("answer from personal");
		world().api.clearRequests();

		const other = await startPiProcess(world().env);
		try {
			const result = await other.prompt("hello from another process");
			expect(result.text).toBe("answer from personal");
			expect(asked()).toEqual(["personal"]);
		} finally {
			await other.stop();
		}
	});

	it("sends two concurrent sessions both to personal when enterprise is rate limited", async () => {
		await setup({ enterprise: rateLimited({ delayMs: 150 }), personal: ok("answer from personal", { delayMs: 50 }) });
		const [one, two] = await Promise.all([world().start(), world().start()]);
		const results = await Promise.all([one?.prompt("one"), two?.prompt("two")]);
		expect(results.map((r) => r?.text)).toEqual(["answer from personal", "answer from personal"]);
		expect(asked().sort()).toEqual(["enterprise", "enterprise", "personal", "personal"]);
		const state = await readState();
		expect(state.cooldowns.enterprise?.until ?? 0).toBeGreaterThan(Date.now());
	});

	it("honours a cooldown another process wrote while this session was already running", async () => {
		await setup();
		const pi = await world().start();
		expect((await pi.prompt("before")).text).toBe("answer from enterprise");
		await setCooldown("enterprise", Date.now() + 10 * 60 * 1000);
		world().api.clearRequests();
		expect((await pi.prompt("after")).text).toBe("answer from personal");
		expect(asked()).toEqual(["personal"]);
	});

	it("asks a cooled-down account again once its cooldown has passed", async () => {
		await setup();
		await setCooldown("enterprise", Date.now() - 1000);
		const pi = await world().start();
		expect((await pi.prompt("hello")).text).toBe("answer from enterprise");
		expect(asked()).toEqual(["enterprise"]);
	});
});

describe("the keychain decides", () => {
	it("fails the next request when the active account's keychain item is deleted, naming it and /mcc-login", async () => {
		await setup();
		const pi = await world().start();
		expect((await pi.prompt("before")).text).toBe("answer from enterprise");
		await keychainDelete(world().env.keychainService, "enterprise");
		expect(await keychainLookup(world().env.keychainService, "enterprise")).toBeUndefined();
		world().api.clearRequests();

		const result = await pi.prompt("after");
		expect(result.stopReason).toBe("error");
		expect(result.errorMessage).toContain("enterprise");
		expect(result.errorMessage).toContain("/mcc-login enterprise");
		expect(world().api.requests).toHaveLength(0);
	});

	it("shows a revoked active account in the footer of a new session", async () => {
		await setup();
		await keychainDelete(world().env.keychainService, "enterprise");
		const pi = await world().start();
		const footer = await waitFor(() => pi.footer(), "the footer");
		expect(footer).toContain("enterprise");
		expect(footer).toContain("/mcc-login enterprise");
	});

	it("skips a fallback target whose keychain item was deleted and asks the next one", async () => {
		await setup({ enterprise: rateLimited() });
		await keychainDelete(world().env.keychainService, "personal");
		const pi = await world().start();
		const result = await pi.prompt("hello");
		expect(result.text).toBe("answer from side");
		expect(asked()).toEqual(["enterprise", "side"]);
	});

	it("renews an expired access token through the token endpoint and sends the new one", async () => {
		await setup({}, 1_000);
		const pi = await world().start();
		const before = world().tokens.requests.length;
		world().api.setDefault(ok("answer with a renewed token"));
		const result = await pi.prompt("hello");
		world().api.setDefault(unauthorized());
		expect(result.text).toBe("answer with a renewed token");
		const refresh = world().tokens.requests.slice(before);
		expect(refresh).toHaveLength(1);
		expect(refresh[0]?.grant_type).toBe("refresh_token");
		expect(refresh[0]?.refresh_token).toBe(accounts.enterprise?.refresh);
		const renewed = world().api.requests.at(-1)?.token;
		expect(renewed).not.toBe(accounts.enterprise?.access);
		expect(world().tokens.issued).toContain(renewed);
		expect(await keychainLookup(world().env.keychainService, "enterprise")).toContain(renewed);
	});

	it("asks for a new login, without falling back, when the token endpoint rejects the refresh token", async () => {
		await setup({}, 1_000);
		world().tokens.setMode("invalid_grant");
		const pi = await world().start();
		const result = await pi.prompt("hello");
		expect(result.stopReason).toBe("error");
		expect(result.errorMessage).toContain("/mcc-login enterprise");
		expect(world().api.requests).toHaveLength(0);
		expect((await readState()).needsLogin.enterprise).toBeDefined();
	});
});
