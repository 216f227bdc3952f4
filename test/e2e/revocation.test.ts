/**
 * Revocation through the keychain, as a person does it in Seahorse / Keychain Access / Credential Manager (here with
 * secret-tool), and through /mcc-remove, in the real pi runtime. The broker caches no token, so the window between
 * deleting an item and the account being refused is zero requests.
 */
import { describe, expect, it } from "vitest";
import { type AccountTokens, readConfigRaw, setupAccounts } from "../helpers/accounts.ts";
import { useE2eWorld } from "../helpers/e2e-world.ts";
import { ok } from "../helpers/fake-anthropic-api.ts";
import { secretToolLookup, secretToolStore } from "../helpers/keyring.ts";
import { keychainDelete, type PiSession } from "../helpers/pi-harness.ts";

const world = useE2eWorld();
let accounts: Record<string, AccountTokens>;

async function setup(): Promise<PiSession> {
	accounts = await setupAccounts({
		accounts: [{ label: "work", fallbackTo: ["personal"] }, { label: "personal" }],
		active: "work",
		tokens: world().tokens,
	});
	for (const [label, pair] of Object.entries(accounts)) world().api.script(pair.access, ok(`answer from ${label}`));
	return world().start();
}

function statusLine(pi: PiSession, label: string): string {
	const status = pi.ui.notifications.at(-1)?.message ?? "";
	return status.split("\n").find((line) => new RegExp(`^[* ] ${label}:`).test(line)) ?? "";
}

describe("an item deleted in the keychain UI", () => {
	it("is refused by the very next request of a running session: zero requests carry its token", async () => {
		const pi = await setup();
		// Many requests in a row, each followed by a deletion check: no request after the deletion used the token.
		expect((await pi.prompt("warm")).text).toBe("answer from work");
		await keychainDelete(world().env.keychainService, "work");
		world().api.clearRequests();
		for (let i = 0; i < 3; i++) {
			const result = await pi.prompt(`after ${i}`);
			expect(result.stopReason).toBe("error");
			expect(result.errorMessage).toContain("/mcc-login work");
		}
		// Neither the revoked token nor a silent fallback to personal.
		expect(world().api.requests).toHaveLength(0);
	});

	it("shows as REVOKED in /mcc-status with the command that restores it, and the footer says so", async () => {
		const pi = await setup();
		await keychainDelete(world().env.keychainService, "work");
		await pi.prompt("after");
		expect(pi.footer()).toBe("claude: work (revoked: /mcc-login work)");
		await pi.runCommand("/mcc-status");
		expect(statusLine(pi, "work")).toMatch(/REVOKED.*\/mcc-login work/);
		expect(statusLine(pi, "personal")).toMatch(/ready/);
	});
});

describe("an item whose secret was edited or corrupted in the keychain UI", () => {
	it("makes the account unusable with a clear message: no crash, no stale token, no fallback", async () => {
		const pi = await setup();
		expect((await pi.prompt("warm")).text).toBe("answer from work");
		await secretToolStore(world().env.keychainService, "work", "not what the extension wrote");
		world().api.clearRequests();
		const result = await pi.prompt("after");
		expect(result.stopReason).toBe("error");
		expect(result.errorMessage).toMatch(/"work" cannot be used/);
		expect(result.errorMessage).toContain("/mcc-login work");
		expect(world().api.requests).toHaveLength(0);
		expect(pi.footer()).toBe("claude: work (unusable: /mcc-login work)");
		await pi.runCommand("/mcc-status");
		expect(statusLine(pi, "work")).toMatch(/UNUSABLE/);
		// pi itself goes on: the other account answers once chosen.
		await pi.runCommand("/mcc-use personal");
		expect((await pi.prompt("again")).text).toBe("answer from personal");
	});
});

describe("/mcc-remove, the in-pi way to revoke", () => {
	it("deletes the keychain item and the label, also from other accounts' lists", async () => {
		const pi = await setup();
		expect(await secretToolLookup(world().env.keychainService, "personal")).not.toBeNull();
		await pi.runCommand("/mcc-remove personal");
		expect(pi.ui.notifications.at(-1)?.type).toBe("info");
		expect(await secretToolLookup(world().env.keychainService, "personal")).toBeNull();
		const config = (await readConfigRaw(world().env.configFile)) as {
			accounts: Array<{ label: string; fallbackTo: string[] }>;
		};
		expect(config.accounts.map((account) => account.label)).toEqual(["work"]);
		expect(config.accounts[0]?.fallbackTo).toEqual([]);
		expect((await pi.prompt("still works")).text).toBe("answer from work");
	});
});
