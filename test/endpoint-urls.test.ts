/**
 * Where tokens may be sent: redirects from the token endpoint or the usage endpoint are never followed, and an
 * endpoint override (PI_MCC_TOKEN_URL, PI_MCC_ANTHROPIC_BASE_URL) that is not https: or loopback http:, or that
 * carries a user name or password, is refused before any request. Every "second server" here is a real HTTP
 * server on 127.0.0.1 that would receive the token if the extension let it go there.
 */

import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
	type Api,
	type AssistantMessageEvent,
	createAssistantMessageEventStream,
	getModels,
	type Model,
	streamSimpleAnthropic,
} from "@mariozechner/pi-ai";
import type { ExtensionCommandContext } from "@mariozechner/pi-coding-agent";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AccountError } from "../src/broker/token-broker.ts";
import { statusCommand } from "../src/commands/status-command.ts";
import { type Core, createCore } from "../src/core.ts";
import { streamInto } from "../src/provider/multi-account-stream.ts";
import { fetchOAuthUsage } from "../src/provider/usage.ts";
import { SessionAccount } from "../src/session/session-account.ts";
import { endpointUrlProblem, readSettings, shownUrl } from "../src/settings.ts";
import { rejection } from "./helpers/expect-error.ts";
import { type FakeAnthropicApi, startFakeAnthropicApi } from "./helpers/fake-anthropic-api.ts";
import { type FakeTokenEndpoint, startFakeTokenEndpoint } from "./helpers/fake-token-endpoint.ts";
import { once, requireSecretService, secretToolClear, secretToolLookup, uniqueService } from "./helpers/keyring.ts";
import { type RawServer, startRawServer } from "./security/helpers/raw-servers.ts";

const SERVICE = uniqueService("endpoint-urls");
const HOUR = 60 * 60 * 1000;

interface Scene {
	dir: string;
	label: string;
	/** The endpoint the extension is pointed at. */
	tokens: FakeTokenEndpoint;
	/** Where a redirect points: it would grant the account's refresh token, if it ever got it. */
	elsewhere: FakeTokenEndpoint;
	servers: Array<{ close(): Promise<void> }>;
	env(extra: Record<string, string | undefined>): NodeJS.ProcessEnv;
}

let scene: Scene | undefined;
function current(): Scene {
	if (!scene) throw new Error("beforeEach did not finish");
	return scene;
}

const secretService = once(() => requireSecretService());

beforeEach(async () => {
	await secretService();
	const dir = await fs.mkdtemp(join(tmpdir(), "pi-mcc-endpoint-urls-"));
	const tokens = await startFakeTokenEndpoint();
	const elsewhere = await startFakeTokenEndpoint();
	scene = {
		dir,
		label: `acct-${randomBytes(4).toString("hex")}`,
		tokens,
		elsewhere,
		servers: [tokens, elsewhere],
		env: (extra) => ({
			...process.env,
			PI_CODING_AGENT_DIR: join(dir, "agent"),
			PI_MCC_KEYCHAIN_SERVICE: SERVICE,
			PI_MCC_TOKEN_URL: tokens.url,
			PI_MCC_ANTHROPIC_BASE_URL: undefined,
			...extra,
		}),
	};
});

afterEach(async () => {
	const done = scene;
	scene = undefined;
	if (!done) return;
	for (const server of done.servers) await server.close();
	await secretToolClear(SERVICE, done.label);
	await fs.rm(done.dir, { recursive: true, force: true });
});

/** A core built from the environment exactly as the extension builds it, with one account logged in. */
async function coreWithAccount(env: NodeJS.ProcessEnv, expiresInMs: number): Promise<Core> {
	const { label, tokens, elsewhere } = current();
	const core = createCore(readSettings(env));
	const pair = { ...tokens.mintPair(), expires: Date.now() + expiresInMs };
	// The second server would grant it too: following a redirect would store its answer as the account's pair.
	elsewhere.registerRefreshToken(pair.refresh);
	await core.broker.storeLogin(label, pair);
	await core.config.update((config) => ({
		next: { ...config, accounts: [{ label, fallbackTo: [] }], activeLabel: label },
		result: undefined,
	}));
	return core;
}

function recordingContext(): { ctx: ExtensionCommandContext; messages: string[] } {
	const messages: string[] = [];
	const ui = { notify: (message: string) => messages.push(message) };
	return { ctx: { ui } as unknown as ExtensionCommandContext, messages };
}

describe("a token endpoint that answers a refresh with a redirect", () => {
	for (const status of [307, 308] as const) {
		it(`(${status}) to another server: that server sees no request, the item is byte-identical, the refresh fails saying so`, async () => {
			const { label, tokens, elsewhere, env } = current();
			const core = await coreWithAccount(env({}), -HOUR);
			const before = await secretToolLookup(SERVICE, label);
			const target = new URL(elsewhere.url);
			target.username = "intruder";
			target.password = "p4ssw0rd-in-location";
			target.search = "?session=query-secret-123";
			tokens.redirectTo(status, target.href);
			const error = await rejection(core.broker.getAccessToken(label), AccountError);
			expect(error.kind).toBe("refresh_failed");
			expect(error.message).toContain(`redirect (HTTP ${status} to ${elsewhere.url})`);
			expect(error.message).toContain("PI_MCC_TOKEN_URL");
			for (const hidden of ["intruder", "p4ssw0rd-in-location", "query-secret-123"]) {
				expect(error.message).not.toContain(hidden);
			}
			expect(tokens.requests).toHaveLength(1);
			expect(elsewhere.requests).toEqual([]);
			expect(await secretToolLookup(SERVICE, label)).toBe(before);
			expect((await core.broker.describe(label)).status).toBe("expired");
		});
	}

	it("(307) during a login: the code goes nowhere else and nothing is stored", async () => {
		const { label, tokens, elsewhere, env } = current();
		const core = createCore(readSettings(env({})));
		tokens.redirectTo(307, elsewhere.url);
		const exchange = { code: "code-0123456789", state: "state", verifier: "verifier-0123456789", redirectUri: "x" };
		const error = await rejection(core.broker.loginWithCode(label, exchange), AccountError);
		expect(error.kind).toBe("needs_login");
		expect(error.message).toContain("redirect (HTTP 307");
		expect(elsewhere.requests).toEqual([]);
		expect(await secretToolLookup(SERVICE, label)).toBeNull();
	});
});

describe("a usage endpoint that answers with a redirect", () => {
	async function usageServers(): Promise<{ usage: RawServer; beyond: RawServer }> {
		const usage = await startRawServer("/api/oauth/usage");
		const beyond = await startRawServer("/api/oauth/usage");
		current().servers.push(usage, beyond);
		beyond.answerWith(() => ({ status: 200, chunks: ['{"five_hour":{"utilization":99}}'] }));
		usage.answerWith(() => ({ status: 307, headers: { location: `${beyond.url}?k=hidden-query` }, chunks: [] }));
		return { usage, beyond };
	}

	it("is not followed: the access token reaches no other server, and the error says where it pointed", async () => {
		const { usage, beyond } = await usageServers();
		const token = `sk-ant-oat01-${randomBytes(24).toString("hex")}`;
		const failure = await fetchOAuthUsage(usage.baseUrl, token, Date.now()).then(
			() => undefined,
			(error: unknown) => error as Error,
		);
		expect(failure?.message).toContain(`redirect (HTTP 307 to ${beyond.url})`);
		expect(failure?.message).not.toContain("hidden-query");
		expect(failure?.message).not.toContain(token);
		expect(usage.requests.map((request) => request.token)).toEqual([token]);
		expect(beyond.requests).toEqual([]);
	});

	it("/mcc-status --refresh sends no account's token beyond it and reports the figures as not refreshed", async () => {
		const { label } = current();
		const { usage, beyond } = await usageServers();
		const core = await coreWithAccount(current().env({ PI_MCC_ANTHROPIC_BASE_URL: usage.baseUrl }), 8 * HOUR);
		const { ctx, messages } = recordingContext();
		await statusCommand({ core, session: new SessionAccount({ appendEntry: () => {} }) }, "--refresh", ctx);
		expect(usage.requests).toHaveLength(1);
		expect(beyond.requests).toEqual([]);
		expect(messages.join("\n")).toContain(`${label}: usage not refreshed (the usage endpoint`);
		expect(messages.join("\n")).toContain("redirect (HTTP 307");
	});
});

describe("endpoint overrides that may not receive tokens", () => {
	it("accept https: anywhere and http: only to 127.0.0.0/8, [::1] and localhost", () => {
		for (const ok of [
			"https://proxy.example.com/v1/oauth/token",
			"https://10.0.0.5:8443/token?tenant=a",
			"http://127.0.0.1:4000/v1/oauth/token",
			"http://127.1.2.3/",
			"http://[::1]:8080",
			"http://localhost:9999/x",
		]) {
			expect(endpointUrlProblem("PI_MCC_TOKEN_URL", ok), ok).toBeUndefined();
		}
		for (const refused of [
			"http://0.0.0.0:4000/",
			"http://[::ffff:127.0.0.1]:4000/",
			"http://192.168.1.10/",
			"http://localhost.example.com/",
			"ftp://127.0.0.1/",
			"file:///etc/passwd",
			"https://user:secret-password@proxy.example.com/",
			"https://token-as-user@proxy.example.com/",
			"not a url at all",
			"/relative/path",
		]) {
			const problem = endpointUrlProblem("PI_MCC_ANTHROPIC_BASE_URL", refused);
			expect(problem, refused).toMatch(/^PI_MCC_ANTHROPIC_BASE_URL is refused: .*nothing is sent until then\.$/);
			for (const hidden of ["secret-password", "token-as-user", "not a url"]) expect(problem).not.toContain(hidden);
		}
	});

	it("a URL is shown without user name, password, query or fragment", () => {
		expect(shownUrl("https://a:b@example.com:8443/p/q?x=secret#frag")).toBe("https://example.com:8443/p/q");
		expect(shownUrl("nonsense")).toBe("(not a URL)");
	});

	for (const [what, url] of [
		[
			"http: to 0.0.0.0 (which reaches this machine's servers, but is not loopback)",
			"http://0.0.0.0:PORT/v1/oauth/token",
		],
		["http: to an IPv4-mapped address", "http://[::ffff:127.0.0.1]:PORT/v1/oauth/token"],
		["a user name and password", "http://alice:hunter2-password@127.0.0.1:PORT/v1/oauth/token"],
	] as const) {
		it(`PI_MCC_TOKEN_URL with ${what} is refused before any request; the item stays as it was`, async () => {
			const { label, tokens, env } = current();
			const core = await coreWithAccount(env({ PI_MCC_TOKEN_URL: url.replace("PORT", String(tokens.port)) }), -HOUR);
			const before = await secretToolLookup(SERVICE, label);
			const error = await rejection(core.broker.getAccessToken(label), AccountError);
			expect(error.kind).toBe("refresh_failed");
			expect(error.message).toContain("PI_MCC_TOKEN_URL is refused");
			expect(error.message).not.toContain("hunter2-password");
			expect(error.message).not.toContain("alice");
			expect(tokens.requests).toEqual([]);
			expect(await secretToolLookup(SERVICE, label)).toBe(before);
			// A login is refused the same way: no code leaves the machine.
			const login = await rejection(
				core.broker.loginWithCode(label, {
					code: "c-0123456789",
					state: "s",
					verifier: "v-0123456789",
					redirectUri: "x",
				}),
				AccountError,
			);
			expect(login.message).toContain("PI_MCC_TOKEN_URL is refused");
			expect(tokens.requests).toEqual([]);
		});
	}

	it("a token endpoint's query is not shown in its errors", async () => {
		const { label, tokens, env } = current();
		const core = await coreWithAccount(env({ PI_MCC_TOKEN_URL: `${tokens.url}?api-key=query-secret-456` }), -HOUR);
		tokens.setMode("http500");
		const error = await rejection(core.broker.getAccessToken(label), AccountError);
		expect(error.message).toContain("HTTP 500");
		expect(tokens.requests).toHaveLength(1);
		const withRedirect = await (async () => {
			tokens.redirectTo(302, "/elsewhere");
			return rejection(core.broker.getAccessToken(label), AccountError);
		})();
		expect(withRedirect.message).toContain(`redirect (HTTP 302 to http://127.0.0.1:${tokens.port}/elsewhere)`);
		for (const message of [error.message, withRedirect.message]) expect(message).not.toContain("query-secret-456");
	});

	describe("PI_MCC_ANTHROPIC_BASE_URL over http: to 0.0.0.0", () => {
		let api: FakeAnthropicApi;
		beforeEach(async () => {
			api = await startFakeAnthropicApi();
			current().servers.push(api);
		});

		it("fails the provider's requests before any token is sent, naming the variable", async () => {
			const port = new URL(api.baseUrl).port;
			const core = await coreWithAccount(
				current().env({ PI_MCC_ANTHROPIC_BASE_URL: `http://0.0.0.0:${port}` }),
				8 * HOUR,
			);
			const base = getModels("anthropic").find((model) => model.id === "claude-sonnet-4-5");
			if (!base) throw new Error("pi-ai has no claude-sonnet-4-5");
			const model = { ...base, provider: "multi-claude-code", api: "multi-claude-code" } as unknown as Model<Api>;
			const out = createAssistantMessageEventStream();
			const session = new SessionAccount({ appendEntry: () => {} });
			const deps = { core, delegate: streamSimpleAnthropic, perRequestFetch: false };
			await streamInto(deps, session, model, { messages: [] }, undefined, out);
			const events: AssistantMessageEvent[] = [];
			for await (const event of out) events.push(event);
			const last = events.at(-1);
			expect(last?.type).toBe("error");
			const message = last?.type === "error" ? (last.error.errorMessage ?? "") : "";
			expect(message).toContain("PI_MCC_ANTHROPIC_BASE_URL is refused");
			expect(message).toContain("0.0.0.0");
			expect(api.requests).toEqual([]);
		});

		it("/mcc-status says the override is refused, and --refresh sends nothing", async () => {
			const port = new URL(api.baseUrl).port;
			const core = await coreWithAccount(
				current().env({ PI_MCC_ANTHROPIC_BASE_URL: `http://0.0.0.0:${port}` }),
				8 * HOUR,
			);
			const { ctx, messages } = recordingContext();
			await statusCommand({ core, session: new SessionAccount({ appendEntry: () => {} }) }, "--refresh", ctx);
			const text = messages.join("\n");
			expect(text).toContain("Messages API: REFUSED override. PI_MCC_ANTHROPIC_BASE_URL is refused");
			expect(text).toContain("usage not refreshed: PI_MCC_ANTHROPIC_BASE_URL is refused");
			expect(api.requests).toEqual([]);
		});
	});
});

describe("/mcc-status and the endpoints in use", () => {
	it("names each active override, without its query, and says what is sent there", async () => {
		const { tokens, env } = current();
		const core = await coreWithAccount(
			env({
				PI_MCC_TOKEN_URL: `${tokens.url}?k=status-query`,
				PI_MCC_ANTHROPIC_BASE_URL: "https://proxy.example.com/anthropic",
			}),
			8 * HOUR,
		);
		const { ctx, messages } = recordingContext();
		await statusCommand({ core, session: new SessionAccount({ appendEntry: () => {} }) }, "", ctx);
		const text = messages.join("\n");
		expect(text).toContain(
			`Token endpoint: ${tokens.url} (override by PI_MCC_TOKEN_URL; refresh tokens and login codes are sent there)`,
		);
		expect(text).toContain(
			"Messages API: https://proxy.example.com/anthropic (override by PI_MCC_ANTHROPIC_BASE_URL; access tokens are sent there)",
		);
		expect(text).not.toContain("status-query");
	});

	it("says nothing about endpoints when none is overridden", async () => {
		const core = await coreWithAccount(current().env({ PI_MCC_TOKEN_URL: undefined }), 8 * HOUR);
		const { ctx, messages } = recordingContext();
		await statusCommand({ core, session: new SessionAccount({ appendEntry: () => {} }) }, "", ctx);
		expect(messages).toHaveLength(1);
		expect(messages[0]).not.toMatch(/Token endpoint|Messages API|override/);
	});
});
