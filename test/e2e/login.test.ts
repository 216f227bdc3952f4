/**
 * /mcc-login end to end in the real pi runtime: copy-code login for machines whose browser cannot reach this one,
 * browser login on a loopback port (the configured one, or a free one when another program holds it on 127.0.0.1
 * or ::1) completed by a real GET as the browser sends it, refusals and the bounded wait, and the Claude account
 * the token answer names. The token endpoint is the local fake; the keychain is the real (throwaway) one.
 */
import { promises as fs } from "node:fs";
import { describe, expect, it } from "vitest";
import { useE2eWorld } from "../helpers/e2e-world.ts";
import { ok } from "../helpers/fake-anthropic-api.ts";
import { runCommand } from "../helpers/keyring.ts";
import {
	connectOutcome,
	freeLoopbackPort,
	type HttpAnswer,
	hasIpv6Loopback,
	holdPort,
	httpGet,
} from "../helpers/loopback.ts";
import { EXTENSION_PATH, keychainLookup, type PiSession, sessionFiles } from "../helpers/pi-harness.ts";
import { extensionRunArgs, piCommand } from "../helpers/pi-line.ts";

const COPY_CODE_REDIRECT = "https://platform.claude.com/oauth/code/callback";
/** Containers often have no IPv6 loopback; there the ::1 cases cannot be set up. */
const IPV6 = await hasIpv6Loopback();

const world = useE2eWorld((w) => {
	// Each test says which port and bound it wants; the harness default is paste only.
	w.env.set({ PI_MCC_CALLBACK_PORT: "0", PI_MCC_LOGIN_TIMEOUT_MS: undefined });
});

let codes = 0;
/** A fresh authorization code the token endpoint will exchange once (optionally naming an account). */
function newCode(answer?: Record<string, unknown>): string {
	const code = `LOGIN-CODE-${++codes}-${Math.random().toString(36).slice(2, 10)}`;
	world().tokens.registerCode(code, answer);
	return code;
}

/** The authorize URL the login showed last. */
function authorizeUrl(pi: PiSession): URL {
	const found = [...pi.ui.notifications]
		.reverse()
		.map((note) => /https:\/\/claude\.ai\/oauth\/authorize\S+/.exec(note.message)?.[0])
		.find(Boolean);
	if (!found) throw new Error("no authorize URL was shown");
	return new URL(found);
}

/** The port of a `http://localhost:<port>/callback` redirect. */
function redirectPort(url: URL): number {
	const redirect = new URL(url.searchParams.get("redirect_uri") ?? "");
	expect(redirect.hostname).toBe("localhost");
	expect(redirect.pathname).toBe("/callback");
	return Number(redirect.port);
}

interface OpenPrompt<T> {
	/** What the browser side of the test did, once the login was waiting. */
	browser: Promise<T>;
	/** Whether the login dismissed the prompt through its signal (nobody answered it). */
	dismissed(): boolean;
}

/**
 * The paste prompt as the person leaves it while using the browser: open, unanswered, until the login dismisses
 * it. Once it is open (the login is waiting), `browser` runs with the authorize URL.
 */
function leavePromptOpen<T>(pi: PiSession, browser: (url: URL) => Promise<T>): OpenPrompt<T> {
	let dismissed = false;
	let started: Promise<T> | undefined;
	pi.ui.queueInput((_title, _placeholder, opts) => {
		started = browser(authorizeUrl(pi));
		started.catch(() => {});
		return new Promise<undefined>((resolve) => {
			const bound = setTimeout(() => resolve(undefined), 30_000);
			opts?.signal?.addEventListener("abort", () => {
				dismissed = true;
				clearTimeout(bound);
				resolve(undefined);
			});
		});
	});
	return {
		get browser() {
			if (!started) throw new Error("the login never opened its paste prompt");
			return started;
		},
		dismissed: () => dismissed,
	};
}

/** The redirect Anthropic sends the browser to after a login, as the browser requests it. */
function callbackPath(url: URL, params: Record<string, string>): string {
	return `/callback?${new URLSearchParams({ state: url.searchParams.get("state") ?? "", ...params })}`;
}

function messages(pi: PiSession, type?: "info" | "warning" | "error"): string[] {
	return pi.ui.notifications.filter((note) => !type || note.type === type).map((note) => note.message);
}

/** No issued token, code or verifier in anything pi showed. */
function expectNothingSecretShown(pi: PiSession, code: string): void {
	const shown = pi.ui.allText().join("\n");
	const verifiers = world()
		.tokens.requests.map((request) => request.code_verifier)
		.filter((value): value is string => typeof value === "string");
	for (const secret of [...world().tokens.issued, code, ...verifiers]) expect(shown).not.toContain(secret);
}

async function expectWorkingAccount(pi: PiSession, label: string): Promise<void> {
	const access = world().tokens.issued.at(-2) ?? "";
	expect(await keychainLookup(world().env.keychainService, label)).toContain(access);
	world().api.script(access, ok(`answer from ${label}`));
	await pi.runCommand(`/mcc-use ${label}`);
	const result = await pi.prompt("hello");
	expect(result.text).toBe(`answer from ${label}`);
	expect(world().api.requests.at(-1)?.token).toBe(access);
}

describe("copy-code login (headless)", () => {
	it("sends Anthropic's code page as redirect_uri, exchanges the pasted code#state with exactly that redirect, and the account answers", async () => {
		const port = await freeLoopbackPort();
		world().env.set({ PI_MCC_CALLBACK_PORT: String(port) });
		const pi = await world().start();
		const code = newCode();
		let listening = "";
		pi.ui.queueInput(async () => {
			// Nothing waits for a browser: no callback server is opened for copy-code.
			listening = await connectOutcome("127.0.0.1", port);
			return `${code}#${authorizeUrl(pi).searchParams.get("state")}`;
		});
		await pi.runCommand("/mcc-login headless --copy-code");

		const url = authorizeUrl(pi);
		expect(url.searchParams.get("redirect_uri")).toBe(COPY_CODE_REDIRECT);
		expect(url.searchParams.get("code")).toBe("true");
		expect(listening).toBe("ECONNREFUSED");
		expect(pi.ui.dialogs.map((dialog) => dialog.kind)).toEqual(["input"]);
		expect(pi.ui.dialogs[0]?.title).toContain("Paste the code Anthropic shows");
		const exchange = world().tokens.requests.at(-1);
		expect(exchange).toMatchObject({
			grant_type: "authorization_code",
			code,
			state: url.searchParams.get("state"),
			redirect_uri: COPY_CODE_REDIRECT,
		});
		expect(messages(pi, "info").at(-1)).toContain('Added account "headless"');
		await expectWorkingAccount(pi, "headless");
		expectNothingSecretShown(pi, code);
	});

	it("is offered beside browser login in pi-ai 1.x's words when no flag is given, and a dismissed choice changes nothing", async () => {
		const pi = await world().start();
		const code = newCode();
		pi.ui.queueSelect((_title, options) => options.find((option) => option.startsWith("Copy code")));
		pi.ui.queueInput(() => `${code}#${authorizeUrl(pi).searchParams.get("state")}`);
		await pi.runCommand("/mcc-login chosen");
		expect(pi.ui.dialogs[0]).toMatchObject({
			kind: "select",
			options: ["Browser login (default)", "Copy code login (headless)"],
		});
		expect(world().tokens.requests.at(-1)).toMatchObject({ code, redirect_uri: COPY_CODE_REDIRECT });
		expect(await keychainLookup(world().env.keychainService, "chosen")).toBeDefined();

		const before = world().tokens.requests.length;
		pi.ui.queueSelect(undefined);
		await pi.runCommand("/mcc-login dismissed");
		expect(pi.ui.dialogs.at(-1)?.kind).toBe("select");
		expect(messages(pi).at(-1)).toMatch(/Login of "dismissed" cancelled; nothing was changed/);
		expect(world().tokens.requests.length).toBe(before);
		expect(await keychainLookup(world().env.keychainService, "dismissed")).toBeUndefined();
	});

	it("refuses a pasted code whose state belongs to another login attempt, and exchanges nothing", async () => {
		const pi = await world().start();
		const code = newCode();
		const before = world().tokens.requests.length;
		pi.ui.queueInput(`${code}#a-state-from-another-attempt`);
		await pi.runCommand("/mcc-login foreign --copy-code");
		expect(messages(pi, "error").at(-1)).toBe(
			'Login of "foreign" refused: the pasted code belongs to another login attempt. Run /mcc-login foreign again.',
		);
		expect(world().tokens.requests.length).toBe(before);
		expect(await keychainLookup(world().env.keychainService, "foreign")).toBeUndefined();
	});

	it("ends with a message that nothing changed when no code is pasted within the bound", async () => {
		world().env.set({ PI_MCC_LOGIN_TIMEOUT_MS: "1500" });
		const pi = await world().start();
		const before = world().tokens.requests.length;
		const prompt = leavePromptOpen(pi, async () => undefined);
		await pi.runCommand("/mcc-login late --copy-code");
		expect(prompt.dismissed()).toBe(true);
		expect(messages(pi, "warning").at(-1)).toMatch(/Login of "late" timed out after 1\.5 s .*nothing was changed/);
		expect(world().tokens.requests.length).toBe(before);
		expect(await keychainLookup(world().env.keychainService, "late")).toBeUndefined();
	});
});

describe("browser login on a loopback port", () => {
	it("listens on the configured port, names it in the authorize URL and the exchange, and a GET from the browser completes it", async () => {
		const port = await freeLoopbackPort();
		world().env.set({ PI_MCC_CALLBACK_PORT: String(port) });
		const pi = await world().start();
		const code = newCode();
		const prompt = leavePromptOpen(pi, async (url) => {
			// Both loopback addresses are this login's: a wrong state on ::1 is refused there, not by someone else.
			const ipv6 = IPV6 ? await httpGet("::1", port, "/callback?code=x&state=wrong") : undefined;
			return { ipv6, browser: await httpGet("localhost", port, callbackPath(url, { code })) };
		});
		await pi.runCommand("/mcc-login browser --browser");

		const url = authorizeUrl(pi);
		expect(url.searchParams.get("redirect_uri")).toBe(`http://localhost:${port}/callback`);
		const { ipv6, browser } = await prompt.browser;
		if (IPV6) expect(ipv6?.status).toBe(400);
		expect(browser.status).toBe(200);
		expect(browser.body).toContain("authorised");
		expect(prompt.dismissed()).toBe(true);
		expect(world().tokens.requests.at(-1)).toMatchObject({
			code,
			state: url.searchParams.get("state"),
			redirect_uri: `http://localhost:${port}/callback`,
		});
		expect(messages(pi, "warning")).toEqual([]);
		expect(messages(pi, "info").at(-1)).toContain('Added account "browser"');
		// The callback closes with the login.
		expect(await connectOutcome("127.0.0.1", port)).toBe("ECONNREFUSED");
		await expectWorkingAccount(pi, "browser");
		expectNothingSecretShown(pi, code);
	});

	it("moves to a free port and says so when another program holds the configured port on 127.0.0.1", async () => {
		const held = await holdPort("127.0.0.1");
		try {
			world().env.set({ PI_MCC_CALLBACK_PORT: String(held.port) });
			const pi = await world().start();
			const code = newCode();
			const prompt = leavePromptOpen(pi, (url) =>
				httpGet("localhost", redirectPort(url), callbackPath(url, { code })),
			);
			await pi.runCommand("/mcc-login moved --browser");

			const port = redirectPort(authorizeUrl(pi));
			expect(port).not.toBe(held.port);
			expect(messages(pi, "warning")).toEqual([
				`Port ${held.port} on 127.0.0.1 is taken by another program, so this login listens on port ${port} instead.`,
			]);
			expect((await prompt.browser).status).toBe(200);
			expect(world().tokens.requests.at(-1)).toMatchObject({
				code,
				redirect_uri: `http://localhost:${port}/callback`,
			});
			expect(held.connections).toBe(0);
			await expectWorkingAccount(pi, "moved");
		} finally {
			await held.close();
		}
	});

	it.skipIf(!IPV6)("moves to a free port too when another program holds the configured port on ::1 only", async () => {
		const port = await freeLoopbackPort();
		const held = await holdPort("::1", port);
		try {
			world().env.set({ PI_MCC_CALLBACK_PORT: String(port) });
			const pi = await world().start();
			const code = newCode();
			const prompt = leavePromptOpen(pi, async (url) => {
				const moved = redirectPort(url);
				// A browser that tries ::1 first reaches this login on the new port, never the other program.
				return httpGet("::1", moved, callbackPath(url, { code }));
			});
			await pi.runCommand("/mcc-login v6 --browser");

			const moved = redirectPort(authorizeUrl(pi));
			expect(moved).not.toBe(port);
			expect(messages(pi, "warning")).toEqual([
				`Port ${port} on ::1 is taken by another program, so this login listens on port ${moved} instead.`,
			]);
			expect((await prompt.browser).status).toBe(200);
			expect(world().tokens.requests.at(-1)).toMatchObject({
				code,
				redirect_uri: `http://localhost:${moved}/callback`,
			});
			expect(held.connections).toBe(0);
			expect(await keychainLookup(world().env.keychainService, "v6")).toBeDefined();
		} finally {
			await held.close();
		}
	});

	it("still stores the login, quietly, when the session is replaced while the person is in the browser", async () => {
		const port = await freeLoopbackPort();
		world().env.set({ PI_MCC_CALLBACK_PORT: String(port) });
		const pi = await world().start();
		const code = newCode();
		let shownBefore = 0;
		const prompt = leavePromptOpen(pi, (url) => {
			shownBefore = pi.ui.notifications.length;
			// What pi does to an extension's ctx on /new, /resume or /reload: every member throws from now on.
			pi.session.extensionRunner.invalidate();
			return httpGet("localhost", port, callbackPath(url, { code }));
		});
		await pi.runCommand("/mcc-login replaced --browser");
		expect((await prompt.browser).status).toBe(200);
		expect(world().tokens.requests.at(-1)).toMatchObject({ code, redirect_uri: `http://localhost:${port}/callback` });
		expect(await keychainLookup(world().env.keychainService, "replaced")).toContain(world().tokens.issued.at(-2));
		expect(pi.ui.notifications.length).toBe(shownBefore);
		expect(pi.extensionErrors).toEqual([]);
		expect(await connectOutcome("127.0.0.1", port)).toBe("ECONNREFUSED");
	});

	it("answers a wrong state with 400 and keeps waiting for this login's redirect", async () => {
		const port = await freeLoopbackPort();
		world().env.set({ PI_MCC_CALLBACK_PORT: String(port) });
		const pi = await world().start();
		const code = newCode();
		const before = world().tokens.requests.length;
		const prompt: OpenPrompt<{
			foreign: HttpAnswer;
			deniedElsewhere: HttpAnswer;
			stillWaiting: boolean;
			ours: HttpAnswer;
		}> = leavePromptOpen(pi, async (url) => {
			const foreign = await httpGet("127.0.0.1", port, "/callback?code=FOREIGN&state=not-this-login");
			const deniedElsewhere = await httpGet("127.0.0.1", port, "/callback?error=access_denied&state=other");
			const stillWaiting = world().tokens.requests.length === before && !prompt.dismissed();
			const ours = await httpGet("127.0.0.1", port, callbackPath(url, { code }));
			return { foreign, deniedElsewhere, stillWaiting, ours };
		});
		await pi.runCommand("/mcc-login patient --browser");
		const { foreign, deniedElsewhere, stillWaiting, ours } = await prompt.browser;
		expect(foreign.status).toBe(400);
		expect(foreign.body).toContain("not the login this pi session is waiting for");
		expect(deniedElsewhere.status).toBe(400);
		expect(stillWaiting).toBe(true);
		expect(ours.status).toBe(200);
		expect(
			world()
				.tokens.requests.slice(before)
				.map((request) => request.code),
		).toEqual([code]);
		expect(await keychainLookup(world().env.keychainService, "patient")).toBeDefined();
	});

	it("ends the login at once with a message when the redirect says error=access_denied", async () => {
		const port = await freeLoopbackPort();
		// A bound far beyond the command's own 20 s: only the refusal can end this login in time.
		world().env.set({ PI_MCC_CALLBACK_PORT: String(port), PI_MCC_LOGIN_TIMEOUT_MS: "600000" });
		const pi = await world().start();
		const before = world().tokens.requests.length;
		const prompt = leavePromptOpen(pi, (url) =>
			httpGet(
				"localhost",
				port,
				callbackPath(url, { error: "access_denied", error_description: "The user denied access" }),
			),
		);
		await pi.runCommand("/mcc-login denied --browser");
		const page: HttpAnswer = await prompt.browser;
		expect(page.status).toBe(400);
		expect(page.body).toContain("The login was refused (access_denied: The user denied access)");
		expect(prompt.dismissed()).toBe(true);
		expect(messages(pi, "error").at(-1)).toBe(
			'Login of "denied" was refused (access_denied: The user denied access); nothing was changed. ' +
				"Run /mcc-login denied again to retry.",
		);
		expect(world().tokens.requests.length).toBe(before);
		expect(await keychainLookup(world().env.keychainService, "denied")).toBeUndefined();
		expect(await connectOutcome("127.0.0.1", port)).toBe("ECONNREFUSED");
	});

	it("gives up after the bounded wait with a message that nothing changed, and stops listening", async () => {
		const port = await freeLoopbackPort();
		world().env.set({ PI_MCC_CALLBACK_PORT: String(port), PI_MCC_LOGIN_TIMEOUT_MS: "1500" });
		const pi = await world().start();
		const before = world().tokens.requests.length;
		const prompt = leavePromptOpen(pi, async () => connectOutcome("127.0.0.1", port));
		await pi.runCommand("/mcc-login idle --browser");
		expect(await prompt.browser).toBe("connected");
		expect(prompt.dismissed()).toBe(true);
		expect(messages(pi, "warning").at(-1)).toBe(
			'Login of "idle" timed out after 1.5 s without a code; nothing was changed. Run /mcc-login idle again ' +
				"(with --copy-code if this machine's browser cannot reach it).",
		);
		expect(world().tokens.requests.length).toBe(before);
		expect(await connectOutcome("127.0.0.1", port)).toBe("ECONNREFUSED");
		expect(await keychainLookup(world().env.keychainService, "idle")).toBeUndefined();
	});
});

describe("the Claude account a login names", () => {
	const named = (email: string) => ({
		account: { uuid: "6f1c8f0e-3a57-4c38-9a55-2d1f0e1b7a10", email_address: email },
		organization: { uuid: "0c1d", name: "Example Org" },
	});

	async function login(pi: PiSession, label: string, answer?: Record<string, unknown>): Promise<string> {
		const code = newCode(answer);
		pi.ui.queueInput(() => `${code}#${authorizeUrl(pi).searchParams.get("state")}`);
		await pi.runCommand(`/mcc-login ${label} --copy-code`);
		return code;
	}

	function statusLine(pi: PiSession, label: string): string | undefined {
		return messages(pi)
			.at(-1)
			?.split("\n")
			.find((line) => line.slice(2).startsWith(`${label}:`));
	}

	it("is shown after login and in /mcc-status, and kept only in the 0600 config", async () => {
		const pi = await world().start();
		const code = await login(pi, "ada", named("ada@example.com"));
		expect(messages(pi, "info").at(-1)).toMatch(/^Added account "ada" \(ada@example.com, Example Org\)\./);
		const config = JSON.parse(await fs.readFile(world().env.configFile, "utf8")) as {
			accounts: Array<{ label: string; accountEmail?: string }>;
		};
		expect(config.accounts.find((account) => account.label === "ada")?.accountEmail).toBe("ada@example.com");
		expect((await fs.stat(world().env.configFile)).mode & 0o777).toBe(0o600);
		await pi.runCommand("/mcc-status");
		expect(statusLine(pi, "ada")).toContain("Claude account ada@example.com");
		for (const file of await sessionFiles(world().env)) {
			expect(await fs.readFile(file, "utf8")).not.toContain("ada@example.com");
		}
		expectNothingSecretShown(pi, code);
	});

	it("warns when a re-login of the label names another Claude account, and not when it names the same", async () => {
		const pi = await world().start();
		await login(pi, "shared", named("first@example.com"));
		expect(messages(pi, "warning")).toEqual([]);
		await login(pi, "shared", named("intruder@example.net"));
		expect(messages(pi, "info").at(-1)).toMatch(/^Logged in again: account "shared" \(intruder@example.net/);
		expect(messages(pi, "warning")).toEqual([
			'"shared" is now the Claude account intruder@example.net, not first@example.com as before. If you did not ' +
				"mean to switch accounts, the code may not have been yours: run /mcc-login shared again and sign in " +
				"with your own account.",
		]);
		await pi.runCommand("/mcc-status");
		expect(statusLine(pi, "shared")).toContain("Claude account intruder@example.net");
		await login(pi, "shared", named("intruder@example.net"));
		expect(messages(pi, "warning")).toHaveLength(1);
	});

	it("is left out when the token answer names none, or names it in a shape that is not an e-mail", async () => {
		const pi = await world().start();
		await login(pi, "plain");
		expect(messages(pi, "info").at(-1)).toMatch(/^Added account "plain"\. Its tokens/);
		await login(pi, "odd", { account: { email_address: "\u001b[2Jnot-an-address" } });
		expect(messages(pi, "info").at(-1)).toMatch(/^Added account "odd"\. Its tokens/);
		const config = JSON.parse(await fs.readFile(world().env.configFile, "utf8")) as {
			accounts: Array<{ label: string; accountEmail?: string }>;
		};
		const entries = config.accounts.filter((account) => account.label === "plain" || account.label === "odd");
		expect(entries).toHaveLength(2);
		for (const entry of entries) expect(entry).not.toHaveProperty("accountEmail");
		expect(await keychainLookup(world().env.keychainService, "odd")).toBeDefined();
	});
});

describe("completing /mcc-login's arguments", () => {
	it("offers the method flags beside the labels, and labels still complete after a flag", async () => {
		const pi = await world().start();
		const code = newCode();
		pi.ui.queueInput(() => `${code}#${authorizeUrl(pi).searchParams.get("state")}`);
		await pi.runCommand("/mcc-login completed --copy-code");
		const command = pi.session.extensionRunner.getCommand("mcc-login");
		const complete = (prefix: string) => Promise.resolve(command?.getArgumentCompletions?.(prefix));
		expect(await complete("work --c")).toEqual([{ value: "work --copy-code", label: "--copy-code" }]);
		expect(await complete("--copy-code comp")).toEqual([{ value: "--copy-code completed", label: "completed" }]);
		expect(await complete("comp")).toEqual([{ value: "completed", label: "completed" }]);
		expect((await complete("work "))?.map((item) => item.label)).toEqual(
			expect.arrayContaining(["--browser", "--copy-code"]),
		);
		expect(await complete("work --copy-code ")).not.toEqual(
			expect.arrayContaining([expect.objectContaining({ label: "--browser" })]),
		);
	});
});

describe("/mcc-login without a UI", () => {
	it("says in print mode that it needs interactive or RPC mode, and changes nothing", async () => {
		const env = world().env;
		const [node, args] = piCommand([
			"-p",
			"/mcc-login printed --copy-code",
			...extensionRunArgs([EXTENSION_PATH], env.sessionDir),
		]);
		const result = await runCommand(node, args, { cwd: env.cwd, timeoutMs: 30_000 });
		expect(result.signal).toBeNull();
		expect(result.stderr).toContain("/mcc-login printed needs a person to answer it");
		expect(result.stderr).toContain("not in print mode. Nothing was changed.");
		expect(await keychainLookup(env.keychainService, "printed")).toBeUndefined();
	});
});
