/**
 * Windows Credential Manager holds at most 2,560 bytes per item, and `setPassword` stores UTF-16 there: 1,280
 * characters. The extension counts the same way and refuses a larger pair on every system, before anything is
 * written — also after a refresh, where the stored login must then stay as it was. Real Secret Service, real HTTP.
 */

import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FileRefreshLock, StateLoginMarks } from "../src/broker/account-files.ts";
import {
	CredentialTooLargeError,
	parseCredentials,
	type StoredCredentials,
	serializeCredentials,
} from "../src/broker/credentials.ts";
import { AccountError, TokenBroker } from "../src/broker/token-broker.ts";
import { createStateStore } from "../src/config/stores.ts";
import { OsSecretStore } from "../src/keychain/os-secret-store.ts";
import { MAX_SECRET_BYTES, storedSecretBytes } from "../src/keychain/secret-store.ts";
import { ANTHROPIC_OAUTH, HttpTokenEndpoint } from "../src/oauth/token-endpoint.ts";
import { rejection } from "./helpers/expect-error.ts";
import { type FakeTokenEndpoint, startFakeTokenEndpoint } from "./helpers/fake-token-endpoint.ts";
import { once, requireSecretService, secretToolClear, secretToolLookup, uniqueService } from "./helpers/keyring.ts";
import { FakeClock } from "./helpers/memory-broker.ts";

const SERVICE = uniqueService("item-size");
/** `{"v":1,"access":"…","refresh":"…","expires":<13 digits>}` around the two tokens. */
const ENVELOPE = '{"v":1,"access":"","refresh":"","expires":1700000000000}'.length;
/** Tokens of this length make a pair of 1,356 characters: 2,712 bytes in UTF-16, 1,356 in UTF-8. */
const OVERSIZED_TOKEN = 650;
const OVERSIZED_BYTES = 2 * (ENVELOPE + 2 * OVERSIZED_TOKEN);

function pairOfLength(characters: number): StoredCredentials {
	const tokens = characters - ENVELOPE;
	const access = `sk-ant-oat01-${"a".repeat(Math.ceil(tokens / 2) - 13)}`;
	const refresh = `sk-ant-ort01-${"r".repeat(Math.floor(tokens / 2) - 13)}`;
	return { access, refresh, expires: 1_700_000_000_000 };
}

describe("the size of a keychain item, counted as Windows stores it", () => {
	it("is two bytes per UTF-16 code unit: ASCII and ü take two bytes, 🔑 four", () => {
		expect(storedSecretBytes("")).toBe(0);
		expect(storedSecretBytes("abc")).toBe(6);
		expect(storedSecretBytes("ü")).toBe(2);
		expect(storedSecretBytes("🔑")).toBe(4);
		expect(MAX_SECRET_BYTES).toBe(5 * 512);
	});

	it("takes a pair of 1,280 characters and refuses one of 1,281, though both are far under 2,560 UTF-8 bytes", () => {
		const fits = serializeCredentials(pairOfLength(1280));
		expect(fits).toHaveLength(1280);
		expect(parseCredentials(fits)).toEqual(pairOfLength(1280));
		const over = pairOfLength(1281);
		expect(Buffer.byteLength(JSON.stringify({ v: 1, ...over }), "utf8")).toBe(1281);
		expect(() => serializeCredentials(over)).toThrow(CredentialTooLargeError);
		expect(() => serializeCredentials(over)).toThrow(/2562 bytes as Windows Credential Manager stores it/);
	});
});

interface World {
	dir: string;
	label: string;
	fake: FakeTokenEndpoint;
	broker: TokenBroker;
	stateFile: string;
}

let world: World | undefined;
function current(): World {
	if (!world) throw new Error("beforeEach did not finish");
	return world;
}

const secretService = once(() => requireSecretService());

beforeEach(async () => {
	await secretService();
	const dir = await fs.mkdtemp(join(tmpdir(), "pi-mcc-item-size-"));
	const fake = await startFakeTokenEndpoint();
	const stateFile = join(dir, "multi-claude-code-state.json");
	const broker = new TokenBroker({
		secrets: new OsSecretStore({ service: SERVICE, timeoutMs: 10_000 }),
		endpoint: new HttpTokenEndpoint({ url: fake.url, timeoutMs: 5_000 }),
		lock: new FileRefreshLock(join(dir, "multi-claude-code-locks"), { waitMs: 10_000 }),
		marks: new StateLoginMarks(createStateStore(stateFile)),
		clock: new FakeClock(),
	});
	world = { dir, label: `acct-${randomBytes(4).toString("hex")}`, fake, broker, stateFile };
});

afterEach(async () => {
	const done = world;
	world = undefined;
	if (!done) return;
	await done.fake.close();
	await secretToolClear(SERVICE, done.label);
	await fs.rm(done.dir, { recursive: true, force: true });
});

function expectNoIssuedToken(error: Error): void {
	const { issued } = current().fake;
	expect(issued.length).toBeGreaterThan(0);
	for (const token of issued) expect(`${error.message}\n${error.stack}`.includes(token.slice(13, 45))).toBe(false);
}

describe("a refreshed token pair too large for a Windows item", () => {
	it("is not stored: the item stays byte-identical and the error says what happened and what follows", async () => {
		const { broker, fake, label, stateFile } = current();
		const pair = fake.mintPair();
		await broker.storeLogin(label, { ...pair, expires: Date.now() - 1 });
		const before = await secretToolLookup(SERVICE, label);
		expect(before).not.toBeNull();

		fake.setTokenLength(OVERSIZED_TOKEN);
		const error = await rejection(broker.getAccessToken(label), AccountError);
		expect(fake.requests.map((request) => request.refresh_token)).toEqual([pair.refresh]);
		expect(error.kind).toBe("refresh_failed");
		expect(error.label).toBe(label);
		expect(error.message).toContain(`The new login of "${label}" was not stored`);
		expect(OVERSIZED_BYTES).toBe(2712);
		expect(error.message).toContain(`${OVERSIZED_BYTES} bytes as Windows Credential Manager stores it (UTF-16)`);
		expect(error.message).toContain(`the stored login of "${label}", if any, is unchanged`);
		expect(error.message).toContain(`/mcc-login ${label}`);
		expect(error.message).toContain("update pi-multi-claude-code");
		expectNoIssuedToken(error);
		expect(await secretToolLookup(SERVICE, label)).toBe(before);
		// Not a rejection by Anthropic: no needs-login mark.
		await expect(fs.readFile(stateFile, "utf8")).rejects.toMatchObject({ code: "ENOENT" });

		// The endpoint retired the old refresh token when it rotated it, so the account then asks for a login.
		fake.setTokenLength(undefined);
		expect((await rejection(broker.getAccessToken(label), AccountError)).kind).toBe("needs_login");
		expect(await secretToolLookup(SERVICE, label)).toBe(before);
	});
});

describe("a login whose token pair is too large for a Windows item", () => {
	it("writes nothing to the keychain and says why", async () => {
		const { broker, fake, label } = current();
		fake.setTokenLength(OVERSIZED_TOKEN);
		fake.registerCode("big-code-0123456789");
		const error = await rejection(
			broker.loginWithCode(label, {
				code: "big-code-0123456789",
				state: "state-abc",
				verifier: "verifier-0123456789abcdef",
				redirectUri: ANTHROPIC_OAUTH.redirectUri,
			}),
			AccountError,
		);
		expect(error.message).toContain(`The new login of "${label}" was not stored`);
		expect(error.message).toContain("Nothing was written");
		expectNoIssuedToken(error);
		expect(await secretToolLookup(SERVICE, label)).toBeNull();
	});
});
