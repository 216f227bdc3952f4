/**
 * The pure parts of /mcc-login, and its callback server on real loopback sockets: what people paste, what the
 * callback answers each request, where it listens when a port is taken, how the wait ends, and what a token
 * answer may say about the account.
 */
import { afterEach, describe, expect, it } from "vitest";
import { parseLoginArgs } from "../src/commands/login-command.ts";
import {
	type CallbackServer,
	callbackAnswer,
	loopbackRedirectUri,
	parseAuthorizationInput,
	startCallbackServer,
	waitForAuthorization,
} from "../src/oauth/authorization.ts";
import { readAccountIdentity } from "../src/oauth/token-endpoint.ts";
import { newAccessToken } from "./helpers/fake-token-endpoint.ts";
import { connectOutcome, freeLoopbackPort, hasIpv6Loopback, holdPort, httpGet } from "./helpers/loopback.ts";

const STATE = "expected-state-1234567890";
/** Containers often have no IPv6 loopback; there the ::1 cases cannot be set up. */
const IPV6 = await hasIpv6Loopback();
const cleanups: Array<() => unknown> = [];

afterEach(async () => {
	for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function listening(port: number): Promise<{ server: CallbackServer; busy?: { port: number; address: string } }> {
	const started = await startCallbackServer(port, STATE);
	if (started.kind !== "listening") throw new Error(`the callback server could not start: ${started.reason}`);
	cleanups.push(() => started.server.close());
	return started;
}

describe("what people paste at the code prompt", () => {
	it("is understood as Anthropic's code page URL, its code#state text, a loopback redirect URL or a bare code", () => {
		expect(parseAuthorizationInput("https://platform.claude.com/oauth/code/callback?code=C1&state=S1")).toEqual({
			code: "C1",
			state: "S1",
		});
		expect(parseAuthorizationInput("http://localhost:41234/callback?code=C2&state=S2")).toEqual({
			code: "C2",
			state: "S2",
		});
		expect(parseAuthorizationInput("\tC3#S3\n")).toEqual({ code: "C3", state: "S3" });
		expect(parseAuthorizationInput("C4")).toEqual({ code: "C4" });
	});

	it("keeps a code that contains a colon instead of reading it as a URL scheme", () => {
		expect(parseAuthorizationInput("ab:cd#S5")).toEqual({ code: "ab:cd", state: "S5" });
	});
});

describe("/mcc-login's arguments", () => {
	it("take a label and at most one method flag, in either order", () => {
		expect(parseLoginArgs("work")).toEqual({ label: "work" });
		expect(parseLoginArgs("work --copy-code")).toEqual({ label: "work", method: "copy_code" });
		expect(parseLoginArgs("--browser work")).toEqual({ label: "work", method: "browser" });
	});

	it("refuse two methods, unknown flags, two labels and no label", () => {
		for (const args of ["work --browser --copy-code", "work --headless", "work home", "", "--copy-code"]) {
			expect(parseLoginArgs(args), args).toBeUndefined();
		}
	});
});

describe("the callback server's answer to one request", () => {
	it("is 404 for anything but GET /callback", () => {
		expect(callbackAnswer("GET", `/other?code=C&state=${STATE}`, STATE, false).status).toBe(404);
		expect(callbackAnswer("POST", `/callback?code=C&state=${STATE}`, STATE, false).status).toBe(404);
	});

	it("is 400 without ending the wait when the state is not this login's, even for an error redirect", () => {
		for (const url of ["/callback?code=C&state=other", "/callback?code=C", "/callback?error=access_denied"]) {
			const answer = callbackAnswer("GET", url, STATE, false);
			expect(answer.status).toBe(400);
			expect(answer.outcome).toBeUndefined();
		}
	});

	it("ends the wait with the code for this login's state", () => {
		const answer = callbackAnswer("GET", `/callback?code=THE-CODE&state=${STATE}`, STATE, false);
		expect(answer.status).toBe(200);
		expect(answer.outcome).toEqual({ kind: "code", code: "THE-CODE", state: STATE });
		expect(answer.page).not.toContain("THE-CODE");
	});

	it("ends the wait as refused on error=, with a page that says so, and quotes no control character or token", () => {
		const token = newAccessToken();
		const description = encodeURIComponent(`The user denied\u001b[31m ${token}`);
		const answer = callbackAnswer(
			"GET",
			`/callback?error=access_denied&error_description=${description}&state=${STATE}`,
			STATE,
			false,
		);
		expect(answer.status).toBe(400);
		expect(answer.page).toMatch(/refused \(access_denied: The user denied/);
		expect(answer.outcome).toMatchObject({ kind: "refused", error: "access_denied" });
		const shown = JSON.stringify(answer);
		expect(shown).not.toContain(token);
		expect(shown).not.toContain("\u001b");
		const odd = callbackAnswer("GET", `/callback?error=%3Cscript%3E&state=${STATE}`, STATE, false);
		expect(odd.outcome).toEqual({ kind: "refused", error: "error" });
	});

	it("is 400 for a redirect without a code, and 409 once the login was handled", () => {
		expect(callbackAnswer("GET", `/callback?state=${STATE}`, STATE, false)).toMatchObject({ status: 400 });
		expect(callbackAnswer("GET", `/callback?code=C&state=${STATE}`, STATE, true)).toMatchObject({ status: 409 });
	});
});

describe("where the callback server listens", () => {
	it("takes the asked port on 127.0.0.1 and ::1 (where the system has it), and names it in the redirect", async () => {
		const port = await freeLoopbackPort();
		const { server, busy } = await listening(port);
		expect(busy).toBeUndefined();
		expect(server.port).toBe(port);
		expect(server.redirectUri).toBe(`http://localhost:${port}/callback`);
		expect(server.addresses).toEqual(IPV6 ? ["127.0.0.1", "::1"] : ["127.0.0.1"]);
		expect((await httpGet("127.0.0.1", port, "/callback?state=wrong")).status).toBe(400);
		if (IPV6) expect((await httpGet("::1", port, "/callback?state=wrong")).status).toBe(400);
	});

	it("moves to one free port on both addresses when 127.0.0.1 has the asked port taken", async () => {
		const held = await holdPort("127.0.0.1");
		cleanups.push(() => held.close());
		const { server, busy } = await listening(held.port);
		expect(busy).toEqual({ port: held.port, address: "127.0.0.1" });
		expect(server.port).not.toBe(held.port);
		expect(server.redirectUri).toBe(loopbackRedirectUri(server.port));
		expect((await httpGet("127.0.0.1", server.port, "/callback?state=wrong")).status).toBe(400);
	});

	it.skipIf(!IPV6)(
		"treats the port as taken when another program holds it on ::1 only, and frees 127.0.0.1 again",
		async () => {
			const port = await freeLoopbackPort();
			const held = await holdPort("::1", port);
			cleanups.push(() => held.close());
			const { server, busy } = await listening(port);
			expect(busy).toEqual({ port, address: "::1" });
			expect(server.port).not.toBe(port);
			expect(server.addresses).toEqual(["127.0.0.1", "::1"]);
			expect((await httpGet("::1", server.port, "/callback?state=wrong")).status).toBe(400);
			// The first try's 127.0.0.1 socket was given back, not left listening.
			expect(await connectOutcome("127.0.0.1", port)).toBe("ECONNREFUSED");
		},
	);

	it("stops listening on both addresses when closed, and its outcome says closed", async () => {
		const { server } = await listening(await freeLoopbackPort());
		server.close();
		expect(await server.outcome).toEqual({ kind: "closed" });
		expect(await connectOutcome("127.0.0.1", server.port)).toBe("ECONNREFUSED");
	});
});

describe("the wait for the code", () => {
	/** A prompt nobody answers: it ends only when dismissed through its signal. */
	function unanswered(seen: AbortSignal[]): (signal: AbortSignal) => Promise<string | undefined> {
		return (signal) => {
			seen.push(signal);
			return new Promise((resolve) => signal.addEventListener("abort", () => resolve(undefined), { once: true }));
		};
	}

	it("ends with the browser's code and dismisses the prompt", async () => {
		const { server } = await listening(await freeLoopbackPort());
		const signals: AbortSignal[] = [];
		const waiting = waitForAuthorization({ callback: server, ask: unanswered(signals), timeoutMs: 20_000 });
		expect((await httpGet("localhost", server.port, `/callback?code=C9&state=${STATE}`)).status).toBe(200);
		expect(await waiting).toEqual({ kind: "caught", code: "C9", state: STATE });
		expect(signals[0]?.aborted).toBe(true);
	});

	it("ends with a pasted code while the server still listens", async () => {
		const { server } = await listening(await freeLoopbackPort());
		const result = await waitForAuthorization({
			callback: server,
			ask: async () => "PASTED#S",
			timeoutMs: 20_000,
		});
		expect(result).toEqual({ kind: "pasted", input: "PASTED#S" });
	});

	it("ends refused on error=, and goes on after a wrong state", async () => {
		const { server } = await listening(await freeLoopbackPort());
		const waiting = waitForAuthorization({ callback: server, ask: unanswered([]), timeoutMs: 20_000 });
		expect((await httpGet("127.0.0.1", server.port, "/callback?error=access_denied&state=x")).status).toBe(400);
		const denied = await httpGet("127.0.0.1", server.port, `/callback?error=access_denied&state=${STATE}`);
		expect(denied.body).toContain("refused");
		expect(await waiting).toEqual({ kind: "refused", error: "access_denied" });
	});

	it("ends after the bound, dismissing the prompt and closing the server", async () => {
		const { server } = await listening(await freeLoopbackPort());
		const signals: AbortSignal[] = [];
		expect(await waitForAuthorization({ callback: server, ask: unanswered(signals), timeoutMs: 300 })).toEqual({
			kind: "timeout",
		});
		expect(signals[0]?.aborted).toBe(true);
		expect(await server.outcome).toEqual({ kind: "closed" });
		expect(await connectOutcome("127.0.0.1", server.port)).toBe("ECONNREFUSED");
	});

	it("ends after the bound without a server too (copy-code)", async () => {
		const signals: AbortSignal[] = [];
		expect(await waitForAuthorization({ callback: undefined, ask: unanswered(signals), timeoutMs: 300 })).toEqual({
			kind: "timeout",
		});
		expect(signals[0]?.aborted).toBe(true);
	});

	it("ends cancelled when the prompt is dismissed or fails (a stale session)", async () => {
		expect(
			await waitForAuthorization({ callback: undefined, ask: async () => undefined, timeoutMs: 20_000 }),
		).toEqual({
			kind: "cancelled",
		});
		const stale = async (): Promise<string | undefined> => {
			throw new Error("This extension ctx is stale after session replacement or reload.");
		};
		expect(await waitForAuthorization({ callback: undefined, ask: stale, timeoutMs: 20_000 })).toEqual({
			kind: "cancelled",
		});
		const staleAtOnce = (): Promise<string | undefined> => {
			throw new Error("This extension ctx is stale after session replacement or reload.");
		};
		expect(await waitForAuthorization({ callback: undefined, ask: staleAtOnce, timeoutMs: 20_000 })).toEqual({
			kind: "cancelled",
		});
	});
});

describe("the account a token answer names", () => {
	it("is read from account.email_address and organization.name", () => {
		expect(
			readAccountIdentity({
				access_token: "x",
				account: { uuid: "0b2d5c9e-0000-4000-8000-000000000000", email_address: "ada@example.com" },
				organization: { uuid: "1", name: "Example Org" },
			}),
		).toEqual({ email: "ada@example.com", organization: "Example Org" });
	});

	it("is absent when the answer names none, and never an error", () => {
		for (const data of [{}, null, "text", [], { account: null }, { account: "ada@example.com" }]) {
			expect(readAccountIdentity(data)).toBeUndefined();
		}
	});

	it("ignores values that are not well-shaped, bounded, printable strings, or that hold a secret", () => {
		const code = "the-authorization-code-1234";
		const bad = [
			42,
			{ nested: "ada@example.com" },
			"not an e-mail",
			"two@signs@example.com",
			`${"a".repeat(250)}@example.com`,
			"ada@example.com\u001b[2J",
			"ada\u202e@example.com",
			" ada@example.com",
			`${newAccessToken()}@example.com`,
			`${code}@example.com`,
		];
		for (const email of bad) {
			expect(readAccountIdentity({ account: { email_address: email } }, [code]), String(email)).toBeUndefined();
		}
		expect(readAccountIdentity({ organization: { name: "x".repeat(121) } })).toBeUndefined();
		expect(readAccountIdentity({ organization: { name: "Bad\u0007Org" } })).toBeUndefined();
		expect(readAccountIdentity({ account: { email_address: "ok@example.com" }, organization: { name: 7 } })).toEqual({
			email: "ok@example.com",
		});
	});
});
