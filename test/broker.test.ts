import { beforeEach, describe, expect, it } from "vitest";
import { type StoredCredentials, serializeCredentials } from "../src/broker/credentials.ts";
import { AccountError, TokenBroker } from "../src/broker/token-broker.ts";
import { KeychainError } from "../src/keychain/secret-store.ts";
import { TokenEndpointError } from "../src/oauth/token-endpoint.ts";
import { DEFAULT_REFRESH_MARGIN_MS } from "../src/settings.ts";
import { newAccessToken, newRefreshToken } from "./helpers/fake-token-endpoint.ts";
import { FakeClock, MemoryLock, MemoryMarks, ScriptedEndpoint } from "./helpers/memory-broker.ts";
import { MemorySecretStore } from "./helpers/memory-secret-store.ts";

const HOUR = 60 * 60 * 1000;
const START = Date.UTC(2025, 0, 15, 9, 0, 0);

interface Harness {
	store: MemorySecretStore;
	endpoint: ScriptedEndpoint;
	lock: MemoryLock;
	marks: MemoryMarks;
	clock: FakeClock;
	broker: TokenBroker;
	/** Every secret the harness made, for leak checks. */
	secrets: string[];
	pair(expires: number): StoredCredentials;
	storePair(label: string, expires: number): StoredCredentials;
}

function harness(): Harness {
	const store = new MemorySecretStore();
	const endpoint = new ScriptedEndpoint();
	const lock = new MemoryLock();
	const marks = new MemoryMarks();
	const clock = new FakeClock(START);
	const broker = new TokenBroker({ secrets: store, endpoint, lock, marks, clock });
	const secrets: string[] = [];
	const pair = (expires: number): StoredCredentials => {
		const credentials = { access: newAccessToken(), refresh: newRefreshToken(), expires };
		secrets.push(credentials.access, credentials.refresh);
		return credentials;
	};
	return {
		store,
		endpoint,
		lock,
		marks,
		clock,
		broker,
		secrets,
		pair,
		storePair(label, expires) {
			const credentials = pair(expires);
			store.items.set(label, serializeCredentials(credentials));
			return credentials;
		},
	};
}

async function accountError(promise: Promise<unknown>): Promise<AccountError> {
	try {
		await promise;
	} catch (error) {
		expect(error).toBeInstanceOf(AccountError);
		return error as AccountError;
	}
	throw new Error("expected an AccountError, but the call succeeded");
}

function expectNoSecret(error: unknown, secrets: readonly string[]): void {
	const texts = [String(error), (error as Error).message, (error as Error).stack ?? ""];
	for (const secret of secrets) {
		for (const text of texts) expect(text.includes(secret), "an error text contains a token").toBe(false);
	}
}

let h: Harness;
beforeEach(() => {
	h = harness();
});

describe("a fresh access token", () => {
	it("is returned as stored, without a refresh and without writing the keychain", async () => {
		const stored = h.storePair("work", START + 2 * HOUR);
		expect(await h.broker.getAccessToken("work")).toBe(stored.access);
		expect(h.endpoint.refreshes).toHaveLength(0);
		expect(h.store.count("set")).toBe(0);
		expect(h.lock.runs).toBe(0);
	});

	it("is read from the keychain afresh on every call, so a change there is seen by the next call", async () => {
		h.storePair("work", START + 2 * HOUR);
		await h.broker.getAccessToken("work");
		const replaced = h.storePair("work", START + 3 * HOUR);
		expect(await h.broker.getAccessToken("work")).toBe(replaced.access);
		expect(h.store.count("get", "work")).toBe(2);
	});

	it("one millisecond outside the refresh margin is still used as it is", async () => {
		const stored = h.storePair("work", START + DEFAULT_REFRESH_MARGIN_MS + 1);
		expect(await h.broker.getAccessToken("work")).toBe(stored.access);
		expect(h.endpoint.refreshes).toHaveLength(0);
	});
});

describe("an access token that expires within the refresh margin", () => {
	it("is refreshed with the stored refresh token, and the new pair is stored and returned", async () => {
		const stored = h.storePair("work", START + DEFAULT_REFRESH_MARGIN_MS);
		const token = await h.broker.getAccessToken("work");
		expect(h.endpoint.refreshes).toEqual([stored.refresh]);
		const [newAccess, newRefresh] = h.endpoint.issued;
		expect(token).toBe(newAccess);
		expect(JSON.parse(h.store.items.get("work") ?? "null")).toEqual({
			v: 1,
			access: newAccess,
			refresh: newRefresh,
			expires: START + h.endpoint.expiresInMs,
		});
	});

	it("that has already expired is refreshed the same way", async () => {
		h.storePair("work", START - HOUR);
		const token = await h.broker.getAccessToken("work");
		expect(token).toBe(h.endpoint.issued[0]);
		expect(h.endpoint.refreshes).toHaveLength(1);
	});

	it("is refreshed once for many concurrent requests in one process, and all get the same new token", async () => {
		h.storePair("work", START - 1);
		h.endpoint.hold();
		const requests = Array.from({ length: 12 }, () => h.broker.getAccessToken("work"));
		// Let every request read the keychain and join the pending refresh before it answers.
		await new Promise((resolve) => setTimeout(resolve, 20));
		h.endpoint.release();
		const tokens = await Promise.all(requests);
		expect(h.endpoint.refreshes).toHaveLength(1);
		expect(h.lock.runs).toBe(1);
		expect(new Set(tokens)).toEqual(new Set([h.endpoint.issued[0]]));
	});

	it("refreshes of different accounts do not share one flight", async () => {
		h.storePair("work", START - 1);
		h.storePair("personal", START - 1);
		const [work, personal] = await Promise.all([
			h.broker.getAccessToken("work"),
			h.broker.getAccessToken("personal"),
		]);
		expect(h.endpoint.refreshes).toHaveLength(2);
		expect(work).not.toBe(personal);
	});

	it("is not refreshed again when another process stored a fresh pair while this one waited", async () => {
		h.storePair("work", START - 1);
		let theirs: StoredCredentials | undefined;
		h.lock.beforeRun = async (label) => {
			theirs = h.storePair(label, START + 8 * HOUR);
		};
		expect(await h.broker.getAccessToken("work")).toBe(theirs?.access);
		expect(h.endpoint.refreshes).toHaveLength(0);
	});

	it("after a refresh, the next request uses the new pair without refreshing", async () => {
		h.storePair("work", START - 1);
		const first = await h.broker.getAccessToken("work");
		h.clock.advance(HOUR);
		expect(await h.broker.getAccessToken("work")).toBe(first);
		expect(h.endpoint.refreshes).toHaveLength(1);
	});
});

describe("a refresh token that Anthropic rejects (invalid_grant)", () => {
	const invalidGrant = (): { error: Error } => ({
		error: new TokenEndpointError("invalid_grant", "the token endpoint rejected the token (invalid_grant)", 400),
	});

	it("fails with needs_login naming /mcc-login, leaves the item unchanged and marks the account", async () => {
		h.storePair("work", START - 1);
		const before = h.store.items.get("work");
		h.endpoint.answerNext(invalidGrant());
		const error = await accountError(h.broker.getAccessToken("work"));
		expect(error.kind).toBe("needs_login");
		expect(error.label).toBe("work");
		expect(error.message).toContain("/mcc-login work");
		expect(h.store.items.get("work")).toBe(before);
		expect(h.store.count("set")).toBe(0);
		expect(h.marks.marked.has("work")).toBe(true);
		expectNoSecret(error, h.secrets);
	});

	it("makes the next request fail fast, without asking the token endpoint again", async () => {
		h.storePair("work", START - 1);
		h.endpoint.answerNext(invalidGrant());
		await accountError(h.broker.getAccessToken("work"));
		const again = await accountError(h.broker.getAccessToken("work"));
		expect(again.kind).toBe("needs_login");
		expect(h.endpoint.refreshes).toHaveLength(1);
		expect((await h.broker.describe("work")).status).toBe("needs_login");
	});

	it("is cleared by a new login, after which the account works again", async () => {
		h.storePair("work", START - 1);
		h.endpoint.answerNext(invalidGrant());
		await accountError(h.broker.getAccessToken("work"));
		const fresh = h.pair(START + 8 * HOUR);
		await h.broker.storeLogin("work", fresh);
		expect(h.marks.marked.has("work")).toBe(false);
		expect(await h.broker.getAccessToken("work")).toBe(fresh.access);
		expect((await h.broker.describe("work")).status).toBe("ok");
	});

	it("a marked account whose item is still fresh keeps working (the mark only stops refreshes)", async () => {
		const stored = h.storePair("work", START + 2 * HOUR);
		await h.marks.mark("work", "test");
		expect(await h.broker.getAccessToken("work")).toBe(stored.access);
	});
});

describe("a refresh that fails for another reason", () => {
	it("fails with refresh_failed, keeps the item as it was and sets no needs-login mark", async () => {
		h.storePair("work", START - 1);
		const before = h.store.items.get("work");
		h.endpoint.answerNext({ error: new TokenEndpointError("server", "the token endpoint answered HTTP 503", 503) });
		const error = await accountError(h.broker.getAccessToken("work"));
		expect(error.kind).toBe("refresh_failed");
		expect(error.message).toContain("HTTP 503");
		expect(error.message).toContain("unchanged");
		expect(h.store.items.get("work")).toBe(before);
		expect(h.marks.marked.size).toBe(0);
		expectNoSecret(error, h.secrets);
		// The next request tries again.
		expect(await h.broker.getAccessToken("work")).toBe(h.endpoint.issued[0]);
		expect(h.endpoint.refreshes).toHaveLength(2);
	});

	it("an unexpected error from the endpoint is reported without its text, which could hold a token", async () => {
		const stored = h.storePair("work", START - 1);
		h.endpoint.answerNext({ error: new Error(`socket hang up while sending ${stored.refresh}`) });
		const error = await accountError(h.broker.getAccessToken("work"));
		expect(error.kind).toBe("refresh_failed");
		expectNoSecret(error, h.secrets);
	});

	it("a refreshed pair the keychain refuses to store fails with kind keychain and names /mcc-login", async () => {
		h.storePair("work", START - 1);
		h.store.fail("set", () => new KeychainError("locked", "The keychain collection is locked."));
		const error = await accountError(h.broker.getAccessToken("work"));
		expect(error.kind).toBe("keychain");
		expect(error.message).toContain("locked");
		expect(error.message).toContain("/mcc-login work");
		expect(h.store.count("set")).toBe(2);
		expectNoSecret(error, [...h.secrets, ...h.endpoint.issued]);
	});

	it("one failed keychain write is retried, and the refresh then succeeds", async () => {
		h.storePair("work", START - 1);
		h.store.fail("set", () => new KeychainError("failed", "transient"), { times: 1 });
		const token = await h.broker.getAccessToken("work");
		expect(token).toBe(h.endpoint.issued[0]);
		expect(h.store.count("set")).toBe(2);
		expect(JSON.parse(h.store.items.get("work") ?? "{}").access).toBe(token);
	});

	it("a keychain that keeps something else than what was written is detected by reading it back", async () => {
		h.storePair("work", START - 1);
		h.store.transformOnSet = (_label, secret) => {
			const parsed = JSON.parse(secret) as StoredCredentials;
			return JSON.stringify({ ...parsed, expires: parsed.expires - HOUR });
		};
		const error = await accountError(h.broker.getAccessToken("work"));
		expect(error.kind).toBe("keychain");
		expect(error.message).toContain("could not be stored");
		expect(h.store.count("set")).toBe(2);
		expectNoSecret(error, [...h.secrets, ...h.endpoint.issued]);
	});
});

describe("an account whose keychain item is missing or damaged", () => {
	it("without an item is reported as revoked, naming /mcc-login and /mcc-remove", async () => {
		const error = await accountError(h.broker.getAccessToken("gone"));
		expect(error.kind).toBe("revoked");
		expect(error.label).toBe("gone");
		expect(error.message).toContain("/mcc-login gone");
		expect(error.message).toContain("/mcc-remove gone");
		expect(error.message).toContain(h.store.backend);
		expect(h.endpoint.refreshes).toHaveLength(0);
	});

	const item = (fields: Record<string, unknown>): string => JSON.stringify(fields);
	const damaged: Array<[string, () => string]> = [
		["not JSON", () => `not json ${newAccessToken()}`],
		["JSON of another format version", () => item({ v: 2, access: newAccessToken(), refresh: newRefreshToken() })],
		["a pair without a refresh token", () => item({ v: 1, access: newAccessToken(), expires: START })],
		["a token with whitespace", () => item({ v: 1, access: `${newAccessToken()} x`, refresh: newRefreshToken() })],
		["a pair without an expiry", () => item({ v: 1, access: newAccessToken(), refresh: newRefreshToken() })],
		["a JSON array", () => JSON.stringify([newAccessToken()])],
	];
	for (const [what, secret] of damaged) {
		it(`holding ${what} is reported as unusable without quoting the item`, async () => {
			const text = secret();
			h.store.items.set("work", text);
			const error = await accountError(h.broker.getAccessToken("work"));
			expect(error.kind).toBe("unusable");
			expect(error.message).toContain("/mcc-login work");
			expect(error.message.includes(text)).toBe(false);
			for (const token of text.match(/sk-ant-[A-Za-z0-9_-]+/g) ?? []) expectNoSecret(error, [token]);
			expect(h.endpoint.refreshes).toHaveLength(0);
		});
	}

	it("a keychain failure on read is reported as kind keychain with the keychain's own explanation", async () => {
		h.store.fail("get", () => new KeychainError("timeout", "The keychain did not answer within 20 s."));
		const error = await accountError(h.broker.getAccessToken("work"));
		expect(error.kind).toBe("keychain");
		expect(error.message).toBe("The keychain did not answer within 20 s.");
	});

	it("an unexpected failure of the store is reported as kind keychain without its text", async () => {
		const secret = newRefreshToken();
		h.store.fail("get", () => new Error(`internal error near ${secret}`));
		const error = await accountError(h.broker.getAccessToken("work"));
		expect(error.kind).toBe("keychain");
		expect(error.message).toContain(h.store.backend);
		expectNoSecret(error, [secret]);
	});
});

describe("the account status for /mcc-status", () => {
	it("tells ok, expired, needs_login, revoked, unusable and keychain_error apart, without any token", async () => {
		const ok = h.storePair("ok", START + 2 * HOUR);
		const expired = h.storePair("expired", START - 1);
		h.storePair("marked", START - 1);
		await h.marks.mark("marked", "invalid_grant");
		h.store.items.set("broken", "{}");
		h.store.fail("get", () => new KeychainError("locked", "locked"), { label: "locked" });
		const statuses = Object.fromEntries(
			await Promise.all(
				["ok", "expired", "marked", "missing", "broken", "locked"].map(async (label) => {
					const health = await h.broker.describe(label);
					return [label, health] as const;
				}),
			),
		);
		expect(statuses.ok).toEqual({ label: "ok", status: "ok", expiresAt: ok.expires });
		expect(statuses.expired).toEqual({ label: "expired", status: "expired", expiresAt: expired.expires });
		expect(statuses.marked?.status).toBe("needs_login");
		expect(statuses.missing?.status).toBe("revoked");
		expect(statuses.broken?.status).toBe("unusable");
		expect(statuses.locked?.status).toBe("keychain_error");
		expect(h.endpoint.refreshes).toHaveLength(0);
		const text = JSON.stringify(statuses);
		for (const secret of h.secrets) expect(text.includes(secret)).toBe(false);
	});
});

describe("logging in, comparing and removing", () => {
	it("a login with an authorization code stores the new pair, verified, and clears a needs-login mark", async () => {
		await h.marks.mark("work", "invalid_grant");
		const exchange = { code: "code-123456", state: "state-1", verifier: "verifier-abc", redirectUri: "http://x" };
		const { expires } = await h.broker.loginWithCode("work", exchange);
		expect(h.endpoint.exchanges).toEqual([exchange]);
		expect(expires).toBe(START + h.endpoint.expiresInMs);
		const stored = JSON.parse(h.store.items.get("work") ?? "{}");
		expect([stored.access, stored.refresh]).toEqual(h.endpoint.issued);
		expect(h.marks.marked.has("work")).toBe(false);
		expect(await h.broker.getAccessToken("work")).toBe(h.endpoint.issued[0]);
	});

	it("a refused authorization code fails with needs_login, stores nothing and does not quote the code", async () => {
		h.endpoint.answerNext({ error: new TokenEndpointError("invalid_grant", "rejected (invalid_grant)", 400) });
		const exchange = { code: "secret-code-9876543", state: "s", verifier: "verifier-0123456789", redirectUri: "x" };
		const error = await accountError(h.broker.loginWithCode("work", exchange));
		expect(error.kind).toBe("needs_login");
		expect(error.message).toContain("/mcc-login work");
		expectNoSecret(error, [exchange.code, exchange.verifier]);
		expect(h.store.items.has("work")).toBe(false);
	});

	it("a stored login replaces the earlier pair in place", async () => {
		h.storePair("work", START - 1);
		const fresh = h.pair(START + HOUR);
		await h.broker.storeLogin("work", fresh);
		expect(JSON.parse(h.store.items.get("work") ?? "{}")).toEqual({ v: 1, ...fresh });
		expect(h.store.count("delete")).toBe(0);
	});

	it("comparing the stored item tells absent, same, different and unreadable apart", async () => {
		const pair = h.pair(START + HOUR);
		expect(await h.broker.compareStored("work", pair)).toBe("absent");
		await h.broker.storeLogin("work", pair);
		expect(await h.broker.compareStored("work", pair)).toBe("same");
		expect(await h.broker.compareStored("work", { ...pair, expires: pair.expires + 1 })).toBe("same");
		expect(await h.broker.compareStored("work", h.pair(START + HOUR))).toBe("different");
		h.store.items.set("work", "garbage");
		expect(await h.broker.compareStored("work", pair)).toBe("unreadable");
	});

	it("removing deletes the item and the mark, and reports whether there was an item", async () => {
		h.storePair("work", START - 1);
		await h.marks.mark("work", "invalid_grant");
		expect(await h.broker.remove("work")).toBe(true);
		expect(h.store.items.has("work")).toBe(false);
		expect(h.marks.marked.has("work")).toBe(false);
		expect(await h.broker.remove("work")).toBe(false);
		expect((await accountError(h.broker.getAccessToken("work"))).kind).toBe("revoked");
	});

	it("a keychain failure while removing is reported as kind keychain and keeps the item", async () => {
		h.storePair("work", START - 1);
		h.store.fail("delete", () => new KeychainError("locked", "The keychain is locked."));
		const error = await accountError(h.broker.remove("work"));
		expect(error.kind).toBe("keychain");
		expect(h.store.items.has("work")).toBe(true);
	});
});
