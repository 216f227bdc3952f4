/**
 * Labels that differ only in letter case would share one Windows Credential Manager item, so the commands of a
 * real pi session refuse them on every system: /mcc-login never starts a login for "Work" next to "work", and the
 * commands that act on an account never act on the one that matches only case-blindly. Real keychain.
 */
import { promises as fs } from "node:fs";
import { describe, expect, it } from "vitest";
import { setupAccounts } from "../helpers/accounts.ts";
import { useE2eWorld } from "../helpers/e2e-world.ts";
import { ok } from "../helpers/fake-anthropic-api.ts";
import { keychainLookup } from "../helpers/pi-harness.ts";

const world = useE2eWorld();

describe("a label that matches an account only in other letter case", () => {
	it("is refused by every command, which names the existing label and changes no file and no item", async () => {
		const accounts = await setupAccounts({
			accounts: [{ label: "work" }, { label: "home" }],
			active: "home",
			tokens: world().tokens,
		});
		world().api.script(accounts.home?.access ?? "", ok("answer from home"));
		const pi = await world().start();
		const config = await fs.readFile(world().env.configFile);
		const item = await keychainLookup(world().env.keychainService, "work");
		expect(item).toBeDefined();
		const dialogs = pi.ui.dialogs.length;
		const tokenRequests = world().tokens.requests.length;

		await pi.runCommand("/mcc-login Work");
		const login = pi.ui.notifications.at(-1);
		expect(login?.type).toBe("error");
		expect(login?.message).toContain('Cannot log in "Work": the account "work" already exists');
		expect(login?.message).toContain("/mcc-login work");
		expect(login?.message).toContain("Windows Credential Manager");
		// Refused before the browser dance: no URL, no code prompt, no token request.
		expect(pi.ui.dialogs.length).toBe(dialogs);
		expect(pi.ui.notifications.some((note) => note.message.includes("https://"))).toBe(false);
		expect(world().tokens.requests.length).toBe(tokenRequests);

		for (const line of [
			"/mcc-use Work",
			"/mcc-remove WORK",
			"/mcc-fallback Work home",
			"/mcc-fallback home wOrk",
			"/mcc-fallback Work --early 90",
		]) {
			const shown = pi.ui.notifications.length;
			await pi.runCommand(line);
			expect(pi.ui.notifications.length, line).toBe(shown + 1);
			const note = pi.ui.notifications.at(-1);
			expect(note?.type, line).toBe("error");
			expect(note?.message, line).toContain('Did you mean "work"?');
			// A login under the twin label would be refused, so it is not offered.
			expect(note?.message, line).not.toMatch(/\/mcc-login \S*[A-Z]/);
		}

		expect(await fs.readFile(world().env.configFile)).toEqual(config);
		expect(await keychainLookup(world().env.keychainService, "work")).toBe(item);
		expect(await keychainLookup(world().env.keychainService, "Work")).toBeUndefined();
		// /mcc-use Work did not switch to "work": the next request still goes out as "home".
		expect((await pi.prompt("hello")).text).toBe("answer from home");
		expect(world().api.requests.at(-1)?.token).toBe(accounts.home?.access);
	});
});
