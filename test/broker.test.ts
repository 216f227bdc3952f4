import { beforeEach, describe, expect, it } from "vitest";
import { type StoredCredentials, serializeCredentials } from "../src/broker/credentials.ts";
import { AccountError, TokenBroker, type TokenBrokerOptions } from "../src/broker/token-broker.ts";
import { KeychainError } from "../src/keychain/secret-store.ts";
import { TokenEndpointError } from "../src/oauth/token-endpoint.ts";
import { DEFAULT_REFRESH_MARGIN_MS } from "../src/settings.ts";
import { rejection } from "./helpers/expect-error.ts";
import { newAccessToken, newRefreshToken } from "./helpers/fake-token-endpoint.ts";
import { FakeClock, MemoryLock, MemoryMarks, ScriptedEndpoint } from "./helpers/memory-broker.ts";
import { MemorySecretStore } from "./helpers/memory-secret-store.ts";
import { waitFor } from "./helpers/pi-harness.ts";

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

function harness(options: Partial<TokenBrokerOptions> & { store?: MemorySecretStore } = {}): Harness {
	const store = options.store ?? new MemorySecretStore();
	const endpoint = new ScriptedEndpoint();
	const lock = new MemoryLock();
	const marks = new MemoryMarks();
	const clock = new FakeClock(START);
	const broker = new TokenBroker({ secrets: store, endpoint, lock, marks, clock, ...options });
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
		const error = await rejection(h.broker.getAccessToken("work"), AccountError);
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
		await rejection(h.broker.getAccessToken("work"), AccountError);
		const again = await rejection(h.broker.getAccessToken("work"), AccountError);
		expect(again.kind).toBe("needs_login");
		expect(h.endpoint.refreshes).toHaveLength(1);
		expect((await h.broker.describe("work")).status).toBe("needs_login");
	});

	it("is cleared by a new login, after which the account works again", async () => {
		h.storePair("work", START - 1);
		h.endpoint.answerNext(invalidGrant());
		await rejection(h.broker.getAccessToken("work"), AccountError);
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
		const error = await rejection(h.broker.getAccessToken("work"), AccountError);
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
		const error = await rejection(h.broker.getAccessToken("work"), AccountError);
		expect(error.kind).toBe("refresh_failed");
		expectNoSecret(error, h.secrets);
	});

	it("a refreshed pair the keychain refuses twice is served from memory, not dropped, and the item stays as it was", async () => {
		const before = h.storePair("work", START - 1);
		const item = h.store.items.get("work");
		h.store.fail("set", () => new KeychainError("locked", "The keychain collection is locked."));
		const token = await h.broker.getAccessToken("work");
		expect(token).toBe(h.endpoint.issued[0]);
		expect(h.store.count("set")).toBe(2);
		expect(h.store.items.get("work")).toBe(item);
		// The next request uses it too, without a second refresh (the old refresh token is dead at the endpoint).
		expect(await h.broker.getAccessToken("work")).toBe(token);
		expect(h.endpoint.refreshes).toEqual([before.refresh]);
		const health = await h.broker.describe("work");
		expect(health.status).toBe("ok");
		expect(health.detail).toContain("/mcc-login work");
		expectNoSecret(new Error(health.detail), [...h.secrets, ...h.endpoint.issued]);
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
		const token = await h.broker.getAccessToken("work");
		expect(token).toBe(h.endpoint.issued[0]);
		expect(h.store.count("set")).toBe(2);
		// What the keychain kept is not taken for the new pair: the pair in memory is the one served and described.
		expect((await h.broker.describe("work")).expiresAt).toBe(START + h.endpoint.expiresInMs);
		expect((await h.broker.describe("work")).detail).toContain("not in the test keychain yet");
	});
});

describe("an account whose keychain item is missing or damaged", () => {
	it("without an item is reported as revoked, naming /mcc-login and /mcc-remove", async () => {
		const error = await rejection(h.broker.getAccessToken("gone"), AccountError);
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
			const error = await rejection(h.broker.getAccessToken("work"), AccountError);
			expect(error.kind).toBe("unusable");
			expect(error.message).toContain("/mcc-login work");
			expect(error.message.includes(text)).toBe(false);
			for (const token of text.match(/sk-ant-[A-Za-z0-9_-]+/g) ?? []) expectNoSecret(error, [token]);
			expect(h.endpoint.refreshes).toHaveLength(0);
		});
	}

	it("a keychain failure on read is reported as kind keychain with the keychain's own explanation", async () => {
		h.store.fail("get", () => new KeychainError("timeout", "The keychain did not answer within 20 s."));
		const error = await rejection(h.broker.getAccessToken("work"), AccountError);
		expect(error.kind).toBe("keychain");
		expect(error.message).toBe("The keychain did not answer within 20 s.");
	});

	it("an unexpected failure of the store is reported as kind keychain without its text", async () => {
		const secret = newRefreshToken();
		h.store.fail("get", () => new Error(`internal error near ${secret}`));
		const error = await rejection(h.broker.getAccessToken("work"), AccountError);
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
		const error = await rejection(h.broker.loginWithCode("work", exchange), AccountError);
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
		expect((await rejection(h.broker.getAccessToken("work"), AccountError)).kind).toBe("revoked");
	});

	it("a keychain failure while removing is reported as kind keychain and keeps the item", async () => {
		h.storePair("work", START - 1);
		h.store.fail("delete", () => new KeychainError("locked", "The keychain is locked."));
		const error = await rejection(h.broker.remove("work"), AccountError);
		expect(error.kind).toBe("keychain");
		expect(h.store.items.has("work")).toBe(true);
	});
});

/** Resolves once `check` holds, polling (bounded). */
async function until(check: () => boolean, what: string, withinMs = 2_000): Promise<void> {
	await waitFor(() => check() || undefined, what, withinMs);
}

describe("a refresh whose lock another process took over (the holder was frozen past the stale time)", () => {
	it("is not sent once the lock is lost; it is sent under the lock taken again", async () => {
		const stored = h.storePair("work", START - 1);
		let first = true;
		h.lock.beforeRun = async (label) => {
			if (!first) return;
			first = false;
			h.lock.loseCurrent(label);
		};
		const sentWhileHeld: boolean[] = [];
		h.endpoint.onRefresh = () => sentWhileHeld.push(h.lock.active.get("work") === true);
		const token = await h.broker.getAccessToken("work");
		expect(sentWhileHeld).toEqual([true]);
		expect(h.endpoint.refreshes).toEqual([stored.refresh]);
		expect(h.lock.runs).toBe(2);
		expect(token).toBe(h.endpoint.issued[0]);
	});

	it("stores the answer that arrives after the loss only under the lock taken again, compare-and-swap", async () => {
		h.storePair("work", START - 1);
		h.endpoint.hold();
		const pending = h.broker.getAccessToken("work");
		await until(() => h.endpoint.refreshes.length === 1, "the refresh");
		h.lock.loseCurrent("work");
		const writesWhileHeld: boolean[] = [];
		const set = h.store.set.bind(h.store);
		h.store.set = async (label, secret) => {
			writesWhileHeld.push(h.lock.active.get(label) === true);
			return set(label, secret);
		};
		h.endpoint.release();
		const token = await pending;
		expect(token).toBe(h.endpoint.issued[0]);
		expect(writesWhileHeld).toEqual([true]);
		expect(h.lock.runs).toBe(2);
		expect(JSON.parse(h.store.items.get("work") ?? "{}").access).toBe(token);
	});
});

describe("a keychain item that changes while a refresh is out", () => {
	it("keeps a login stored meanwhile; the refreshed pair is dropped", async () => {
		h.storePair("work", START - 1);
		h.endpoint.hold();
		const pending = h.broker.getAccessToken("work");
		await until(() => h.endpoint.refreshes.length === 1, "the refresh");
		// Another program (or a pi process without the lock) writes a new login.
		const login = h.storePair("work", START + 8 * HOUR);
		const item = h.store.items.get("work");
		h.endpoint.release();
		expect(await pending).toBe(login.access);
		expect(h.store.items.get("work")).toBe(item);
		expect(h.store.count("set")).toBe(0);
	});

	it("keeps an item deleted meanwhile deleted, and the request fails as revoked", async () => {
		h.storePair("work", START - 1);
		h.endpoint.hold();
		const pending = h.broker.getAccessToken("work");
		await until(() => h.endpoint.refreshes.length === 1, "the refresh");
		h.store.items.delete("work");
		h.endpoint.release();
		const error = await rejection(pending, AccountError);
		expect(error.kind).toBe("revoked");
		expect(error.message).toContain("stays removed");
		expect(error.message).toContain("/mcc-login work");
		expect(h.store.items.has("work")).toBe(false);
		expect(h.store.count("set")).toBe(0);
		expectNoSecret(error, [...h.secrets, ...h.endpoint.issued]);
	});
});

describe("logins and removals during a refresh in progress", () => {
	it("a login waits for the account's refresh lock, so the refresh cannot undo it", async () => {
		h.storePair("work", START - 1);
		h.endpoint.hold();
		const refreshing = h.broker.getAccessToken("work");
		await until(() => h.endpoint.refreshes.length === 1, "the refresh");
		const login = h.pair(START + 8 * HOUR);
		const storing = h.broker.storeLogin("work", login);
		h.endpoint.release();
		await Promise.all([refreshing, storing]);
		expect(JSON.parse(h.store.items.get("work") ?? "{}")).toEqual({ v: 1, ...login });
		expect(await h.broker.getAccessToken("work")).toBe(login.access);
	});

	it("a removal is not held back by a lock that cannot be had: the item is deleted anyway", async () => {
		h.storePair("work", START - 1);
		h.lock.run = async () => {
			throw new AccountError("work", "busy", 'Account "work": another pi process held the lock for more than 60 s.');
		};
		expect(await h.broker.remove("work")).toBe(true);
		expect(h.store.items.has("work")).toBe(false);
	});

	it("a removal waits for the account's refresh lock, so the refresh cannot bring the item back", async () => {
		h.storePair("work", START - 1);
		h.endpoint.hold();
		const refreshing = h.broker.getAccessToken("work").catch((error: unknown) => error);
		await until(() => h.endpoint.refreshes.length === 1, "the refresh");
		const removing = h.broker.remove("work");
		h.endpoint.release();
		await refreshing;
		expect(await removing).toBe(true);
		expect(h.store.items.has("work")).toBe(false);
		expect((await rejection(h.broker.getAccessToken("work"), AccountError)).kind).toBe("revoked");
	});
});

describe("a refresh another live process has out", () => {
	it("is not sent a second time: the request waits until that process stored its answer", async () => {
		const old = h.storePair("work", START - 1);
		h.lock.senders.set("work", { from: old.expires, who: "pi process 4242, which is stopped," });
		const pending = h.broker.getAccessToken("work");
		await new Promise((resolve) => setTimeout(resolve, 300));
		expect(h.endpoint.refreshes).toEqual([]);
		const theirs = h.storePair("work", START + 8 * HOUR);
		h.lock.senders.delete("work");
		expect(await pending).toBe(theirs.access);
		expect(h.endpoint.refreshes).toEqual([]);
	});

	it("gives up with kind busy after the wait bound, naming that process and what to do", async () => {
		h = harness({ waitMs: 300 });
		const old = h.storePair("work", START - 1);
		h.lock.senders.set("work", { from: old.expires, who: "pi process 4242, which is stopped," });
		const error = await rejection(h.broker.getAccessToken("work"), AccountError);
		expect(error.kind).toBe("busy");
		expect(error.message).toContain("pi process 4242, which is stopped,");
		expect(error.message).toContain("fg");
		expect(h.endpoint.refreshes).toEqual([]);
	});

	it("is recorded before the refresh token leaves, naming the pair it refreshes", async () => {
		const old = h.storePair("work", START - 1);
		h.endpoint.onRefresh = () => expect(h.lock.records).toEqual([{ label: "work", from: old.expires }]);
		await h.broker.getAccessToken("work");
		expect(h.endpoint.refreshes).toHaveLength(1);
	});
});

describe("needs-login marks tied to the pair Anthropic rejected", () => {
	const invalidGrant = { error: new TokenEndpointError("invalid_grant", "rejected (invalid_grant)", 400) };

	it("name the rejected pair by its expiry", async () => {
		const rejected = h.storePair("work", START - 1);
		h.endpoint.answerNext(invalidGrant);
		await rejection(h.broker.getAccessToken("work"), AccountError);
		expect(h.marks.marked.get("work")).toEqual({
			reason: "refresh token rejected (invalid_grant)",
			pairExpires: rejected.expires,
		});
	});

	it("do not stop the refresh of a newer pair another process stored, and that refresh clears them", async () => {
		const rejected = h.storePair("work", START - 1);
		await h.marks.mark("work", "invalid_grant", rejected);
		const newer = h.storePair("work", START - 2);
		const token = await h.broker.getAccessToken("work");
		expect(h.endpoint.refreshes).toEqual([newer.refresh]);
		expect(token).toBe(h.endpoint.issued[0]);
		expect(h.marks.marked.has("work")).toBe(false);
	});

	it("are not set when another process stored a newer pair while the rejected refresh was out", async () => {
		h.storePair("work", START - 1);
		h.endpoint.hold();
		h.endpoint.answerNext(invalidGrant);
		const pending = h.broker.getAccessToken("work");
		await until(() => h.endpoint.refreshes.length === 1, "the refresh");
		const theirs = h.storePair("work", START + 8 * HOUR);
		h.endpoint.release();
		expect(await pending).toBe(theirs.access);
		expect(h.marks.marked.size).toBe(0);
		expect((await h.broker.describe("work")).status).toBe("ok");
	});
});

describe("a rotated pair the keychain would not store", () => {
	it("is written by a background retry once the keychain works again, and the request never failed", async () => {
		h = harness({ retryWriteMs: 20 });
		h.storePair("work", START - 1);
		h.store.fail("set", () => new KeychainError("failed", "transient"), { times: 3 });
		const token = await h.broker.getAccessToken("work");
		expect(token).toBe(h.endpoint.issued[0]);
		await until(() => JSON.parse(h.store.items.get("work") ?? "{}").access === token, "the retried write");
		expect(JSON.parse(h.store.items.get("work") ?? "{}")).toEqual({
			v: 1,
			access: h.endpoint.issued[0],
			refresh: h.endpoint.issued[1],
			expires: START + h.endpoint.expiresInMs,
		});
		expect(h.store.count("set")).toBe(4);
		expect((await h.broker.describe("work")).detail).toBeUndefined();
	});

	it("is still written by a later request once the timer's retries are used up", async () => {
		h = harness({ retryWriteMs: 1 });
		h.storePair("work", START - 1);
		h.store.fail("set", () => new KeychainError("failed", "still failing"));
		const token = await h.broker.getAccessToken("work");
		// Two writes of the refresh itself, then ten timer retries (1 ms, 2 ms, … 512 ms apart), then no more.
		await until(() => h.store.count("set") === 12, "the timer's retries", 5_000);
		await new Promise((resolve) => setTimeout(resolve, 100));
		expect(h.store.count("set")).toBe(12);
		h.store.clearFailures();
		expect(await h.broker.getAccessToken("work")).toBe(token);
		await until(() => JSON.parse(h.store.items.get("work") ?? "{}").access === token, "the write of the request");
		expect(h.endpoint.refreshes).toHaveLength(1);
		expect(h.store.count("set")).toBe(13);
	});

	it("gives way at once to a deletion in the keychain: the very next request is refused, and no retry restores it", async () => {
		h = harness({ retryWriteMs: 20 });
		h.storePair("work", START - 1);
		h.store.fail("set", () => new KeychainError("locked", "locked"));
		await h.broker.getAccessToken("work");
		h.store.items.delete("work");
		expect((await rejection(h.broker.getAccessToken("work"), AccountError)).kind).toBe("revoked");
		h.store.clearFailures();
		const sets = h.store.count("set");
		await new Promise((resolve) => setTimeout(resolve, 200));
		expect(h.store.items.has("work")).toBe(false);
		expect(h.store.count("set")).toBe(sets);
	});

	it("gives way to a login stored meanwhile", async () => {
		h = harness({ retryWriteMs: 20 });
		h.storePair("work", START - 1);
		h.store.fail("set", () => new KeychainError("locked", "locked"), { times: 2 });
		await h.broker.getAccessToken("work");
		const login = h.storePair("work", START + 8 * HOUR);
		expect(await h.broker.getAccessToken("work")).toBe(login.access);
		await new Promise((resolve) => setTimeout(resolve, 200));
		expect(JSON.parse(h.store.items.get("work") ?? "{}").access).toBe(login.access);
	});
});

/** A keychain whose writes outlive their time bound: the call fails, the write lands later, when released. */
class LateWritingStore extends MemorySecretStore {
	private landings: Array<() => void> = [];
	private pending: Promise<void>[] = [];
	lateWrites = 0;

	override async set(label: string, secret: string): Promise<void> {
		if (this.lateWrites <= 0) return super.set(label, secret);
		this.lateWrites--;
		this.calls.push({ operation: "set", label });
		this.pending.push(
			new Promise<void>((resolve) => {
				this.landings.push(() => {
					this.items.set(label, secret);
					resolve();
				});
			}),
		);
		throw new KeychainError("timeout", "The test keychain did not answer a write within 1 s.");
	}

	async settled(): Promise<void> {
		await Promise.all(this.pending);
	}

	land(): void {
		for (const landing of this.landings.splice(0)) landing();
	}
}

describe("a keychain write abandoned on its time bound", () => {
	it("keeps the lock until it settles, and a write that landed late counts as stored", async () => {
		const store = new LateWritingStore();
		h = harness({ store });
		h.storePair("work", START - 1);
		store.lateWrites = 1;
		const pending = h.broker.getAccessToken("work");
		await until(() => store.count("set") === 1, "the write");
		await new Promise((resolve) => setTimeout(resolve, 50));
		expect(h.lock.active.get("work")).toBe(true);
		store.land();
		const token = await pending;
		expect(token).toBe(h.endpoint.issued[0]);
		expect(h.lock.active.get("work")).toBe(false);
		expect(store.count("set")).toBe(1);
		expect(JSON.parse(store.items.get("work") ?? "{}").access).toBe(token);
	});
});

describe("a forced refresh (rotating a pair right after it was imported)", () => {
	it("renews a fresh pair once", async () => {
		const stored = h.storePair("work", START + 8 * HOUR);
		const token = await h.broker.refreshUnderLock("work", { force: true });
		expect(h.endpoint.refreshes).toEqual([stored.refresh]);
		expect(token).toBe(h.endpoint.issued[0]);
		expect(JSON.parse(h.store.items.get("work") ?? "{}").refresh).toBe(h.endpoint.issued[1]);
	});

	it("counts a rotation another process made while it waited, instead of rotating again", async () => {
		h.storePair("work", START + 8 * HOUR);
		const old = h.store.items.get("work") ?? "";
		h.lock.senders.set("work", { from: JSON.parse(old).expires, who: "pi process 7" });
		const pending = h.broker.refreshUnderLock("work", { force: true });
		await new Promise((resolve) => setTimeout(resolve, 300));
		const theirs = h.storePair("work", START + 9 * HOUR);
		h.lock.senders.delete("work");
		expect(await pending).toBe(theirs.access);
		expect(h.endpoint.refreshes).toEqual([]);
	});
});
