import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FileRefreshLock, StateLoginMarks } from "../src/broker/account-files.ts";
import type { StoredCredentials } from "../src/broker/credentials.ts";
import { AccountError, TokenBroker, type TokenBrokerOptions } from "../src/broker/token-broker.ts";
import { createStateStore } from "../src/config/stores.ts";
import { OsSecretStore } from "../src/keychain/os-secret-store.ts";
import { KeychainError, type SecretStore } from "../src/keychain/secret-store.ts";
import { ANTHROPIC_OAUTH, HttpTokenEndpoint } from "../src/oauth/token-endpoint.ts";
import { rejection } from "./helpers/expect-error.ts";
import { type FakeTokenEndpoint, type FakeTokenMode, startFakeTokenEndpoint } from "./helpers/fake-token-endpoint.ts";
import { once, requireSecretService, secretToolClear, secretToolLookup, uniqueService } from "./helpers/keyring.ts";
import { FakeClock } from "./helpers/memory-broker.ts";
import { waitFor } from "./helpers/pi-harness.ts";

const SERVICE = uniqueService("broker-keychain");
const HOUR = 60 * 60 * 1000;

interface Setup {
	dir: string;
	label: string;
	fake: FakeTokenEndpoint;
	clock: FakeClock;
	secrets: OsSecretStore;
	broker: TokenBroker;
	stateFile: string;
	/** Stores a pair the fake endpoint issued, as a login would, expiring at `expires`. */
	login(expires: number): Promise<StoredCredentials>;
	brokerWith(endpointTimeoutMs: number, options?: Partial<TokenBrokerOptions>): TokenBroker;
}

let setup: Setup | undefined;
/** The current test's setup (set by beforeEach). */
function current(): Setup {
	if (!setup) throw new Error("beforeEach did not finish");
	return setup;
}

const secretService = once(() => requireSecretService());

beforeEach(async () => {
	await secretService();
	const dir = await fs.mkdtemp(join(tmpdir(), "pi-mcc-broker-"));
	const label = `acct-${randomBytes(4).toString("hex")}`;
	const fake = await startFakeTokenEndpoint();
	const clock = new FakeClock();
	const secrets = new OsSecretStore({ service: SERVICE, timeoutMs: 10_000 });
	const stateFile = join(dir, "multi-claude-code-state.json");
	const brokerWith = (endpointTimeoutMs: number, options: Partial<TokenBrokerOptions> = {}): TokenBroker =>
		new TokenBroker({
			secrets,
			endpoint: new HttpTokenEndpoint({ url: fake.url, timeoutMs: endpointTimeoutMs }),
			lock: new FileRefreshLock(join(dir, "multi-claude-code-locks"), { waitMs: 10_000 }),
			marks: new StateLoginMarks(createStateStore(stateFile)),
			clock,
			...options,
		});
	const broker = brokerWith(5_000);
	setup = {
		dir,
		label,
		fake,
		clock,
		secrets,
		broker,
		stateFile,
		brokerWith,
		async login(expires) {
			const pair = fake.mintPair();
			const credentials = { access: pair.access, refresh: pair.refresh, expires };
			await broker.storeLogin(label, credentials);
			return credentials;
		},
	};
});

afterEach(async () => {
	const done = setup;
	setup = undefined;
	if (!done) return;
	await done.fake.close();
	await secretToolClear(SERVICE, done.label);
	await fs.rm(done.dir, { recursive: true, force: true });
});

/** No token the endpoint ever issued (nor any extra secret) appears in the error's message, String() or stack. */
function expectNoToken(error: unknown, extra: readonly string[] = []): void {
	const secrets = [...current().fake.issued, ...extra];
	expect(secrets.length).toBeGreaterThan(0);
	const texts = [(error as Error).message, String(error), (error as Error).stack ?? ""];
	for (const secret of secrets) {
		for (const text of texts) expect(text.includes(secret), "an error text contains a token").toBe(false);
		// Nor a recognisable piece of one.
		for (const text of texts) expect(text.includes(secret.slice(13, 45))).toBe(false);
	}
}

/** No file the broker wrote (state, locks) holds a token. */
async function expectNoTokenInFiles(): Promise<void> {
	const entries = await fs.readdir(current().dir, { recursive: true, withFileTypes: true });
	for (const entry of entries) {
		if (!entry.isFile()) continue;
		const text = await fs.readFile(join(entry.parentPath, entry.name), "utf8");
		for (const secret of current().fake.issued) {
			expect(text.includes(secret), `${entry.name} holds a token`).toBe(false);
		}
	}
}

describe("the broker over the real keychain and an HTTP token endpoint", () => {
	it("a login is stored, read back, compared, described and removed", async () => {
		const t = current();
		const { broker, label } = t;
		const stored = await t.login(t.clock.time + 8 * HOUR);
		expect(JSON.parse((await secretToolLookup(SERVICE, label)) ?? "null")).toEqual({ v: 1, ...stored });
		expect(await broker.getAccessToken(label)).toBe(stored.access);
		expect(await broker.compareStored(label, stored)).toBe("same");
		expect(await broker.compareStored(label, { ...stored, access: `${stored.access}x` })).toBe("different");
		expect(await broker.describe(label)).toEqual({ label, status: "ok", expiresAt: stored.expires });
		expect(t.fake.requests).toHaveLength(0);
		expect(await broker.remove(label)).toBe(true);
		expect(await secretToolLookup(SERVICE, label)).toBeNull();
		expect(await broker.remove(label)).toBe(false);
		expect(await broker.compareStored(label, stored)).toBe("absent");
		expect((await broker.describe(label)).status).toBe("revoked");
	});

	it("an expiring token is refreshed over HTTP and the rotated pair replaces the item", async () => {
		const t = current();
		const { broker, label, fake } = t;
		const old = await t.login(t.clock.time + 60_000);
		const token = await broker.getAccessToken(label);
		expect(fake.requests).toEqual([
			{ grant_type: "refresh_token", client_id: ANTHROPIC_OAUTH.clientId, refresh_token: old.refresh },
		]);
		const [, , access, refresh] = fake.issued;
		expect(token).toBe(access);
		expect(JSON.parse((await secretToolLookup(SERVICE, label)) ?? "null")).toEqual({
			v: 1,
			access,
			refresh,
			expires: t.clock.time + 28_800 * 1000,
		});
		// The next expiry is renewed with the rotated refresh token (the old one is dead at the endpoint).
		t.clock.time += 8 * HOUR;
		const next = await broker.getAccessToken(label);
		expect(fake.requests[1]?.refresh_token).toBe(refresh);
		expect(next).toBe(fake.issued[4]);
		await expectNoTokenInFiles();
	});

	it("a login with an authorization code exchanges it once and stores the pair", async () => {
		const { broker, label, fake } = current();
		fake.registerCode("auth-code-1234567890");
		const exchange = {
			code: "auth-code-1234567890",
			state: "state-abc",
			verifier: "verifier-0123456789abcdef",
			redirectUri: ANTHROPIC_OAUTH.redirectUri,
		};
		const { expires } = await broker.loginWithCode(label, exchange);
		expect(fake.requests[0]).toEqual({
			grant_type: "authorization_code",
			client_id: ANTHROPIC_OAUTH.clientId,
			code: exchange.code,
			state: exchange.state,
			redirect_uri: exchange.redirectUri,
			code_verifier: exchange.verifier,
		});
		expect(JSON.parse((await secretToolLookup(SERVICE, label)) ?? "null")).toEqual({
			v: 1,
			access: fake.issued[0],
			refresh: fake.issued[1],
			expires,
		});
		// A code is single use: a second exchange is refused and names the command to retry.
		const again = await rejection(broker.loginWithCode(label, exchange), AccountError);
		expect(again.kind).toBe("needs_login");
		expect(again.message).toContain(`/mcc-login ${label}`);
		expect(again.message.includes(exchange.code)).toBe(false);
		expect(again.message.includes(exchange.verifier)).toBe(false);
	});

	it("an item deleted with secret-tool is reported as revoked by the very next request", async () => {
		const t = current();
		const { broker, label } = t;
		const stored = await t.login(t.clock.time + 8 * HOUR);
		expect(await broker.getAccessToken(label)).toBe(stored.access);
		await secretToolClear(SERVICE, label);
		const error = await rejection(broker.getAccessToken(label), AccountError);
		expect(error.kind).toBe("revoked");
		expect(error.message).toContain(`/mcc-login ${label}`);
		expect(t.fake.requests).toHaveLength(0);
		expectNoToken(error);
	});

	it("an item replaced with something else in the keychain is reported as unusable, not refreshed", async () => {
		const t = current();
		const { broker, label } = t;
		await t.login(t.clock.time + 8 * HOUR);
		await t.secrets.set(label, "edited by hand");
		const error = await rejection(broker.getAccessToken(label), AccountError);
		expect(error.kind).toBe("unusable");
		expect(error.message).toContain(`/mcc-login ${label}`);
		expect(t.fake.requests).toHaveLength(0);
	});
});

describe("a refresh the token endpoint does not grant", () => {
	const cases: Array<{ mode: FakeTokenMode; kind: AccountError["kind"]; says: RegExp }> = [
		{ mode: "invalid_grant", kind: "needs_login", says: /must log in again/ },
		{ mode: "http500", kind: "refresh_failed", says: /HTTP 500/ },
		{ mode: "echo", kind: "refresh_failed", says: /HTTP 400 \(invalid_request\)/ },
		{ mode: "garbage", kind: "refresh_failed", says: /not JSON/ },
		{ mode: "hang", kind: "refresh_failed", says: /no answer within/ },
		{ mode: "reset", kind: "refresh_failed", says: /could not be reached|closed the connection/ },
	];
	for (const { mode, kind, says } of cases) {
		it(`answered by "${mode}" fails with kind ${kind}, shows no token, keeps the item byte-identical`, async () => {
			const t = current();
			const { label, fake } = t;
			const broker = t.brokerWith(mode === "hang" ? 400 : 5_000);
			const stored = await t.login(t.clock.time - 1);
			const before = await secretToolLookup(SERVICE, label);
			expect(before).not.toBeNull();
			fake.setMode(mode);
			const started = performance.now();
			const error = await rejection(broker.getAccessToken(label), AccountError);
			const elapsed = performance.now() - started;
			expect(error.kind).toBe(kind);
			expect(error.label).toBe(label);
			expect(error.message).toMatch(says);
			expect(fake.requests.map((request) => request.refresh_token)).toEqual([stored.refresh]);
			expectNoToken(error, [stored.access, stored.refresh]);
			expect(await secretToolLookup(SERVICE, label)).toBe(before);
			await expectNoTokenInFiles();
			if (mode === "hang") expect(elapsed).toBeLessThan(3_000);
			if (mode === "invalid_grant") {
				const state = JSON.parse(await fs.readFile(t.stateFile, "utf8"));
				expect(Object.keys(state.needsLogin)).toEqual([label]);
			} else {
				// A passing failure: no needs-login mark, and the account retries (and recovers) once it answers.
				await expect(fs.readFile(t.stateFile, "utf8")).rejects.toMatchObject({ code: "ENOENT" });
				fake.setMode("ok");
				expect(await broker.getAccessToken(label)).toBe(fake.issued[fake.issued.length - 2]);
			}
		});
	}

	it("after invalid_grant the next request fails fast from the mark, without reaching the endpoint", async () => {
		const t = current();
		const { broker, label, fake } = t;
		await t.login(t.clock.time - 1);
		fake.setMode("invalid_grant");
		await rejection(broker.getAccessToken(label), AccountError);
		fake.setMode("ok");
		const again = await rejection(broker.getAccessToken(label), AccountError);
		expect(again.kind).toBe("needs_login");
		expect(fake.requests).toHaveLength(1);
		expect((await broker.describe(label)).status).toBe("needs_login");
		// A new login clears the mark in the shared state file.
		const fresh = await t.login(t.clock.time + 8 * HOUR);
		const state = JSON.parse(await fs.readFile(t.stateFile, "utf8"));
		expect(state.needsLogin).toEqual({});
		expect(await broker.getAccessToken(label)).toBe(fresh.access);
	});
});

/** The real keychain, except that its first `failures` writes fail (a keychain that refuses for a while). */
class FirstWritesFail implements SecretStore {
	readonly backend: string;
	writes = 0;
	constructor(
		private readonly inner: SecretStore,
		private failures: number,
	) {
		this.backend = inner.backend;
	}
	get(label: string): Promise<string | null> {
		return this.inner.get(label);
	}
	async set(label: string, secret: string): Promise<void> {
		this.writes++;
		if (this.failures-- > 0) throw new KeychainError("failed", "The test keychain refused this write.");
		return this.inner.set(label, secret);
	}
	delete(label: string): Promise<boolean> {
		return this.inner.delete(label);
	}
}

/** Starts a refresh against the delayed endpoint; resolves (with its outcome, still pending) once it was sent. */
async function refreshInFlight(broker: TokenBroker): Promise<{ outcome: Promise<unknown> }> {
	const t = current();
	t.fake.setDelay(800);
	const outcome = broker.getAccessToken(t.label).catch((error: unknown) => error);
	await waitFor(() => t.fake.requests.length === 1 || undefined, "the refresh to reach the endpoint");
	return { outcome };
}

describe("the keychain item changing while a delayed refresh is out", () => {
	it("deleted with secret-tool clear: the item is still absent afterwards, and the request says it was removed", async () => {
		const t = current();
		await t.login(t.clock.time - 1);
		const { outcome } = await refreshInFlight(t.broker);
		await secretToolClear(SERVICE, t.label);
		const error = (await outcome) as AccountError;
		expect(error).toBeInstanceOf(AccountError);
		expect(error.kind).toBe("revoked");
		expect(t.fake.requests).toHaveLength(1);
		await new Promise((resolve) => setTimeout(resolve, 300));
		expect(await secretToolLookup(SERVICE, t.label)).toBeNull();
		expect((await rejection(t.broker.getAccessToken(t.label), AccountError)).kind).toBe("revoked");
		expectNoToken(error);
	});

	it("removed with the broker (/mcc-remove): the removal waits for the refresh, and the item stays removed", async () => {
		const t = current();
		await t.login(t.clock.time - 1);
		const { outcome } = await refreshInFlight(t.broker);
		expect(await t.broker.remove(t.label)).toBe(true);
		await outcome;
		expect(await secretToolLookup(SERVICE, t.label)).toBeNull();
	});

	it("logged in again meanwhile: the new login is kept, not undone by the refresh", async () => {
		const t = current();
		await t.login(t.clock.time - 1);
		const { outcome } = await refreshInFlight(t.broker);
		const fresh = { ...t.fake.mintPair(), expires: t.clock.time + 8 * HOUR };
		await t.broker.storeLogin(t.label, fresh);
		await outcome;
		expect(JSON.parse((await secretToolLookup(SERVICE, t.label)) ?? "null")).toEqual({ v: 1, ...fresh });
		expect(await t.broker.getAccessToken(t.label)).toBe(fresh.access);
	});
});

describe("a keychain that fails the first writes of a rotated pair", () => {
	it("still answers the request with the new token, and the item ends up holding the new pair", async () => {
		const t = current();
		const old = await t.login(t.clock.time - 1);
		const flaky = new FirstWritesFail(t.secrets, 3);
		const broker = new TokenBroker({
			secrets: flaky,
			endpoint: new HttpTokenEndpoint({ url: t.fake.url, timeoutMs: 5_000 }),
			lock: new FileRefreshLock(join(t.dir, "multi-claude-code-locks"), { waitMs: 10_000 }),
			marks: new StateLoginMarks(createStateStore(t.stateFile)),
			clock: t.clock,
			retryWriteMs: 50,
		});
		const token = await broker.getAccessToken(t.label);
		const [, , access, refresh] = t.fake.issued;
		expect(token).toBe(access);
		expect(t.fake.requests.map((request) => request.refresh_token)).toEqual([old.refresh]);
		await waitFor(
			async () => JSON.parse((await secretToolLookup(SERVICE, t.label)) ?? "null")?.refresh === refresh || undefined,
			"the new pair in the keychain",
		);
		expect(JSON.parse((await secretToolLookup(SERVICE, t.label)) ?? "null")).toEqual({
			v: 1,
			access,
			refresh,
			expires: t.clock.time + 28_800 * 1000,
		});
		expect(flaky.writes).toBe(4);
		expect(await broker.getAccessToken(t.label)).toBe(access);
		expect(t.fake.requests).toHaveLength(1);
		await expectNoTokenInFiles();
	});
});

describe("the fake token endpoint the tests rely on", () => {
	async function post(body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
		const response = await fetch(current().fake.url, {
			method: "POST",
			headers: { "Content-Type": "application/json" },
			body: JSON.stringify(body),
		});
		return { status: response.status, json: (await response.json()) as Record<string, unknown> };
	}

	it("rotates refresh tokens, each usable once, and refuses unknown ones like Anthropic does", async () => {
		const { fake } = current();
		const pair = fake.mintPair();
		expect(pair.access).toMatch(/^sk-ant-oat01-[A-Za-z0-9_-]{40,}$/);
		expect(pair.refresh).toMatch(/^sk-ant-ort01-[A-Za-z0-9_-]{40,}$/);
		const grant = { grant_type: "refresh_token", client_id: ANTHROPIC_OAUTH.clientId, refresh_token: pair.refresh };
		const first = await post(grant);
		expect(first.status).toBe(200);
		expect(first.json).toMatchObject({
			access_token: fake.issued[2],
			refresh_token: fake.issued[3],
			expires_in: 28_800,
		});
		const reused = await post(grant);
		expect(reused).toEqual({
			status: 400,
			json: { error: "invalid_grant", error_description: "Refresh token not found or invalid" },
		});
		expect((await post({ ...grant, refresh_token: "sk-ant-ort01-made-up-token-000000" })).status).toBe(400);
		fake.registerRefreshToken("sk-ant-ort01-registered-by-test-0000");
		expect((await post({ ...grant, refresh_token: "sk-ant-ort01-registered-by-test-0000" })).status).toBe(200);
		expect(fake.requests).toHaveLength(4);
	});

	it("echoes the sent refresh token in mode echo, so leak tests test something", async () => {
		const { fake } = current();
		const pair = fake.mintPair();
		fake.setMode("echo");
		const echoed = await post({ grant_type: "refresh_token", client_id: "c", refresh_token: pair.refresh });
		expect(echoed.status).toBe(400);
		expect(String(echoed.json.error_description)).toContain(pair.refresh);
		expect(echoed.json.refresh_token).toBe(pair.refresh);
	});

	it("a hanging request does not keep close() from finishing", async () => {
		const fake = await startFakeTokenEndpoint({ mode: "hang" });
		const pending = fetch(fake.url, { method: "POST", body: "{}" }).then(
			() => "answered",
			() => "cut",
		);
		const deadline = Date.now() + 5_000;
		while (fake.requests.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
		expect(fake.requests).toHaveLength(1);
		await fake.close();
		expect(await pending).toBe("cut");
	});
});

describe("a long-lived account over the real keychain", () => {
	it("reads a warm token without any token request, and refreshes once per expiry with the latest refresh token", async () => {
		const t = current();
		const { broker, label } = t;
		const first = await t.login(t.clock.time + 8 * HOUR);
		const warm = new Set<string>();
		for (let i = 0; i < 50; i++) warm.add(await broker.getAccessToken(label));
		expect([...warm]).toEqual([first.access]);
		expect(t.fake.requests).toHaveLength(0);
		const issued: string[] = [first.access];
		for (let i = 0; i < 5; i++) {
			t.clock.time += 8 * HOUR;
			issued.push(await broker.getAccessToken(label));
			// The next warm read serves the pair the refresh stored, without another request.
			expect(await broker.getAccessToken(label)).toBe(issued.at(-1));
		}
		expect(new Set(issued).size).toBe(6);
		const sent = t.fake.requests.map((request) => request.refresh_token);
		expect(sent).toHaveLength(5);
		expect(new Set(sent).size).toBe(5);
		expect(sent[0]).toBe(first.refresh);
	});
});
