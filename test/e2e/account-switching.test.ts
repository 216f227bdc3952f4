/**
 * Choosing the account in a running pi session: /mcc-use, the Ctrl+Shift+A shortcut, /mcc-login with a pasted
 * code, and the footer that shows which account is active. Real pi runtime, real keychain, fake Anthropic.
 */
import { promises as fs } from "node:fs";
import { describe, expect, it } from "vitest";
import { type AccountTokens, setupAccounts } from "../helpers/accounts.ts";
import { useE2eWorld } from "../helpers/e2e-world.ts";
import { ok } from "../helpers/fake-anthropic-api.ts";
import { keychainLookup, sessionFiles, waitFor } from "../helpers/pi-harness.ts";

const world = useE2eWorld();

/** Three accounts whose tokens each answer with their own label. */
async function threeAccounts(active = "work"): Promise<Record<string, AccountTokens>> {
	const accounts = await setupAccounts({
		accounts: [{ label: "work" }, { label: "home" }, { label: "side" }],
		active,
		tokens: world().tokens,
	});
	for (const [label, pair] of Object.entries(accounts)) world().api.script(pair.access, ok(`answer from ${label}`));
	return accounts;
}

function lastToken(): string | undefined {
	return world().api.requests.at(-1)?.token;
}

describe("switching accounts in a running session", () => {
	it("sends the first request with the active account's token and shows that account in the footer", async () => {
		const accounts = await threeAccounts("work");
		const pi = await world().start();
		await waitFor(() => pi.footer()?.includes("work"), "the footer to name the active account");
		const result = await pi.prompt("hello");
		expect(result.stopReason).toBe("stop");
		expect(result.text).toBe("answer from work");
		expect(lastToken()).toBe(accounts.work?.access);
		const request = world().api.requests.at(-1);
		expect(request?.headers.authorization).toBe(`Bearer ${accounts.work?.access}`);
		expect(String(request?.headers["anthropic-beta"])).toContain("oauth-2025-04-20");
		expect(request?.model).toBe("claude-sonnet-4-5");
	});

	it("makes the very next request carry the new account's token after /mcc-use mid-session", async () => {
		const accounts = await threeAccounts("work");
		const pi = await world().start();
		expect((await pi.prompt("first")).text).toBe("answer from work");
		await pi.runCommand("/mcc-use home");
		expect(pi.footer()).toContain("home");
		expect(pi.ui.notifications.at(-1)?.message).toContain("home");
		const second = await pi.prompt("second");
		expect(second.text).toBe("answer from home");
		expect(lastToken()).toBe(accounts.home?.access);
	});

	it("offers the accounts in a selector when /mcc-use has no label, and uses the one picked", async () => {
		const accounts = await threeAccounts("work");
		const pi = await world().start();
		pi.ui.queueSelect((_title, options) => options.find((option) => option.includes("side")));
		await pi.runCommand("/mcc-use");
		const dialog = pi.ui.dialogs.at(-1);
		expect(dialog?.kind).toBe("select");
		expect(dialog?.options?.join(" ")).toMatch(/work[\s\S]*home[\s\S]*side/);
		expect((await pi.prompt("hi")).text).toBe("answer from side");
		expect(lastToken()).toBe(accounts.side?.access);
	});

	it("refuses /mcc-use of an unknown label, naming /mcc-login, and keeps the active account", async () => {
		const accounts = await threeAccounts("work");
		const pi = await world().start();
		await pi.runCommand("/mcc-use nobody");
		const note = pi.ui.notifications.at(-1);
		expect(note?.type).toBe("error");
		expect(note?.message).toContain("nobody");
		expect(note?.message).toContain("/mcc-login");
		expect((await pi.prompt("hi")).text).toBe("answer from work");
		expect(lastToken()).toBe(accounts.work?.access);
	});

	it("cycles through the accounts in config order with Ctrl+Shift+A, wrapping around; the footer follows", async () => {
		const accounts = await threeAccounts("work");
		const pi = await world().start();
		await waitFor(() => pi.footer()?.includes("work"), "the initial footer");
		expect(pi.shortcutDiagnostics()).toEqual([]);

		await pi.pressShortcut("ctrl+shift+a");
		expect(pi.footer()).toMatch(/\bhome\b/);
		expect((await pi.prompt("one")).text).toBe("answer from home");
		expect(lastToken()).toBe(accounts.home?.access);

		await pi.pressShortcut("ctrl+shift+a");
		expect(pi.footer()).toMatch(/\bside\b/);
		expect((await pi.prompt("two")).text).toBe("answer from side");

		await pi.pressShortcut("ctrl+shift+a");
		expect(pi.footer()).toMatch(/\bwork\b/);
		expect((await pi.prompt("three")).text).toBe("answer from work");
		expect(lastToken()).toBe(accounts.work?.access);
	});

	it("deletes the keychain item and the label on /mcc-remove; the session then says so instead of using another account", async () => {
		const accounts = await threeAccounts("work");
		const pi = await world().start();
		await pi.runCommand("/mcc-remove work");
		expect(pi.ui.notifications.at(-1)?.type).toBe("info");
		expect(pi.ui.notifications.at(-1)?.message).toContain("/mcc-use");
		expect(await keychainLookup(world().env.keychainService, "work")).toBeUndefined();
		expect(await keychainLookup(world().env.keychainService, "home")).toBeDefined();
		const config = JSON.parse(await fs.readFile(world().env.configFile, "utf8")) as { accounts: { label: string }[] };
		expect(config.accounts.map((a) => a.label)).toEqual(["home", "side"]);
		expect(pi.footer()).toContain("work (removed");
		const before = world().api.requests.length;
		const refused = await pi.prompt("hello");
		expect(refused.stopReason).toBe("error");
		expect(refused.errorMessage).toContain('account "work" was removed');
		expect(world().api.requests).toHaveLength(before);
		await pi.runCommand("/mcc-use home");
		const result = await pi.prompt("hello again");
		expect(result.text).toBe("answer from home");
		expect(lastToken()).toBe(accounts.home?.access);
	});

	it("registers all five /mcc commands and the cycle shortcut without clashing with pi's own keys", async () => {
		await threeAccounts();
		const pi = await world().start();
		expect(pi.commands()).toEqual(
			expect.arrayContaining(["mcc-login", "mcc-use", "mcc-fallback", "mcc-status", "mcc-remove"]),
		);
		expect(pi.shortcutDiagnostics()).toEqual([]);
		expect(pi.extensionErrors).toEqual([]);
	});
});

describe("/mcc-login with a pasted code", () => {
	it("stores the new tokens in the keychain and makes the next request carry the new access token", async () => {
		await setupAccounts({ accounts: [{ label: "home" }], tokens: world().tokens });
		const pi = await world().start();
		world().tokens.registerCode("CODE123");
		// The person pastes "code#state" copied from Anthropic's page; the state is the one in the login URL.
		pi.ui.queueInput(() => {
			const url = pi.ui.notifications.map((n) => /https:\/\/\S+/.exec(n.message)?.[0]).find(Boolean);
			const state = url ? new URL(url).searchParams.get("state") : null;
			return `CODE123#${state ?? ""}`;
		});
		await pi.runCommand("/mcc-login work --browser");
		expect(pi.ui.dialogs.at(-1)?.kind).toBe("input");
		expect(pi.ui.notifications.at(-1)?.type).toBe("info");
		expect(pi.ui.notifications.at(-1)?.message).toContain("work");

		const exchange = world().tokens.requests.at(-1);
		expect(exchange?.grant_type).toBe("authorization_code");
		expect(exchange?.code).toBe("CODE123");
		const [access, refresh] = world().tokens.issued.slice(-2);
		expect(access).toMatch(/^sk-ant-oat01-/);

		const stored = await keychainLookup(world().env.keychainService, "work");
		expect(stored).toBeDefined();
		expect(stored).toContain(access);
		expect(stored).toContain(refresh);
		// Nothing secret in the config file.
		const configText = await fs.readFile(world().env.configFile, "utf8");
		expect(configText).toContain('"work"');
		expect(configText).not.toContain(access);

		world().api.script(access ?? "", ok("answer from the new login"));
		await pi.runCommand("/mcc-use work");
		const result = await pi.prompt("hello");
		expect(result.text).toBe("answer from the new login");
		expect(lastToken()).toBe(access);
	});

	it("accepts a bare code without the state part", async () => {
		await setupAccounts({ accounts: [{ label: "home" }], tokens: world().tokens });
		const pi = await world().start();
		world().tokens.registerCode("BARECODE9");
		pi.ui.queueInput("BARECODE9");
		await pi.runCommand("/mcc-login bare --browser");
		expect(world().tokens.requests.at(-1)?.code).toBe("BARECODE9");
		const access = world().tokens.issued.at(-2);
		expect(await keychainLookup(world().env.keychainService, "bare")).toContain(access);
	});

	it("leaves everything unchanged when the code dialog is cancelled", async () => {
		await setupAccounts({ accounts: [{ label: "home" }], tokens: world().tokens });
		const pi = await world().start();
		const before = world().tokens.requests.length;
		pi.ui.queueInput(undefined);
		await pi.runCommand("/mcc-login ghost --browser");
		expect(world().tokens.requests.length).toBe(before);
		expect(await keychainLookup(world().env.keychainService, "ghost")).toBeUndefined();
		expect(pi.ui.notifications.at(-1)?.message).toMatch(/cancel/i);
	});
});

describe("secrets stay out of what pi shows and stores", () => {
	it("never shows an issued token in a notification, footer or dialog, nor writes one to the session", async () => {
		const accounts = await threeAccounts("work");
		const pi = await world().start();
		world().tokens.registerCode("LEAKCHECK1");
		pi.ui.queueInput("LEAKCHECK1");
		await pi.runCommand("/mcc-login extra --browser");
		expect(world().tokens.requests.at(-1)?.code).toBe("LEAKCHECK1");
		expect(await keychainLookup(world().env.keychainService, "extra")).toBeDefined();
		await pi.runCommand("/mcc-status");
		await pi.runCommand("/mcc-fallback work home side");
		await pi.runCommand("/mcc-fallback");
		await pi.prompt("hello");
		await pi.pressShortcut("ctrl+shift+a");
		await pi.runCommand("/mcc-use nobody");
		await pi.runCommand("/mcc-use");
		await pi.runCommand("/mcc-remove extra");

		const secrets = [
			...world().tokens.issued,
			...Object.values(accounts).flatMap((pair) => [pair.access, pair.refresh]),
		];
		expect(secrets.length).toBeGreaterThan(6);
		const shown = pi.ui.allText().join("\n");
		expect(shown.length).toBeGreaterThan(0);
		for (const secret of secrets) expect(shown).not.toContain(secret);
		expect(shown).not.toMatch(/sk-ant-o[ar]t01-/);

		const files = await sessionFiles(world().env);
		expect(files.length).toBeGreaterThan(0);
		for (const file of files) {
			const text = await fs.readFile(file, "utf8");
			for (const secret of secrets) expect(text).not.toContain(secret);
		}
	});
});
