import { randomBytes } from "node:crypto";
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { OsSecretStore } from "../src/keychain/os-secret-store.ts";
import { MAX_SECRET_BYTES, storedSecretBytes } from "../src/keychain/secret-store.ts";
import {
	continueDaemon,
	type IsolatedKeyring,
	isDefaultCollectionLocked,
	type KeychainProbe,
	lockDefaultCollection,
	once,
	type ProbeResult,
	requireSecretService,
	secretToolClear,
	secretToolLookup,
	secretToolSearch,
	secretToolStore,
	startIsolatedKeyring,
	startKeychainProbe,
	stopDaemon,
	uniqueService,
	unlockDefaultCollection,
} from "./helpers/keyring.ts";

// Only the Secret Service (Linux) has what some tests below look at; each says what. macOS and Windows run the rest.
const linux = process.platform === "linux";
const SERVICE = uniqueService("keychain");
const OTHER_SERVICE = uniqueService("keychain-other");
const used: Array<[string, string]> = [];

function label(name: string): string {
	const value = `${name}-${randomBytes(3).toString("hex")}`;
	used.push([SERVICE, value], [OTHER_SERVICE, value]);
	return value;
}

const secretService = once(() => requireSecretService());
beforeEach(() => secretService());

afterAll(async () => {
	for (const [service, account] of used) await secretToolClear(service, account);
});

describe("an account's item in the Secret Service", () => {
	const store = new OsSecretStore({ service: SERVICE, timeoutMs: 10_000 });

	it("a stored secret is read back, and is gone after delete", async () => {
		const account = label("roundtrip");
		const secret = `secret-${randomBytes(16).toString("hex")}`;
		expect(await store.get(account)).toBeNull();
		await store.set(account, secret);
		expect(await store.get(account)).toBe(secret);
		expect(await secretToolLookup(SERVICE, account)).toBe(secret);
		expect(await store.delete(account)).toBe(true);
		expect(await store.get(account)).toBeNull();
		expect(await secretToolLookup(SERVICE, account)).toBeNull();
	});

	// secret-tool's search shows that no item appeared.
	it.runIf(linux)("deleting an account that has no item reports false and changes nothing", async () => {
		const account = label("absent");
		expect(await store.delete(account)).toBe(false);
		expect(await store.get(account)).toBeNull();
		expect((await secretToolSearch(SERVICE, account)).items).toHaveLength(0);
	});

	// The item's D-Bus object path is what shows "in place".
	it.runIf(linux)("writing twice replaces the item in place: one item, holding the latest secret", async () => {
		const account = label("update");
		const first = `first-${randomBytes(8).toString("hex")}`;
		const second = `second-${randomBytes(8).toString("hex")}`;
		await store.set(account, first);
		const before = await secretToolSearch(SERVICE, account);
		await store.set(account, second);
		const after = await secretToolSearch(SERVICE, account);
		expect(after.items).toHaveLength(1);
		expect(after.items[0]?.secret).toBe(second);
		// Updated in place: the same keychain object, not a delete-then-add.
		expect(after.items[0]?.path).toBe(before.items[0]?.path);
		expect(await store.get(account)).toBe(second);
	});

	it("a secret of the full Windows item size, with non-ASCII text, survives the round trip unchanged", async () => {
		const account = label("large");
		// 2,560 bytes as Windows stores it (UTF-16): 1,280 code units, "🔑" taking two of them.
		const head = "üñí©ødé ✓ 🔑 ";
		const secret = head + "x".repeat(MAX_SECRET_BYTES / 2 - head.length);
		expect(storedSecretBytes(secret)).toBe(MAX_SECRET_BYTES);
		await store.set(account, secret);
		expect(await store.get(account)).toBe(secret);
		expect(await secretToolLookup(SERVICE, account)).toBe(secret);
	});

	it("a secret one UTF-16 code unit over the Windows item size is refused before anything is written", async () => {
		const account = label("too-large");
		// 1,281 code units: 2,562 bytes in UTF-16 (what Windows stores), though only 1,281 bytes in UTF-8.
		const secret = "y".repeat(MAX_SECRET_BYTES / 2 + 1);
		const refused = await store.set(account, secret).then(
			() => undefined,
			(error: unknown) => error,
		);
		expect(refused).toMatchObject({ name: "KeychainError", kind: "too_large" });
		expect((refused as Error).message).toContain(`account "${account}"`);
		expect((refused as Error).message).toContain("2562 bytes");
		expect((refused as Error).message).toContain("nothing was written");
		expect((await secretToolSearch(SERVICE, account)).items).toHaveLength(0);
		// An item already there is left as it was.
		await store.set(account, "kept");
		await expect(store.set(account, secret)).rejects.toMatchObject({ kind: "too_large" });
		expect(await secretToolLookup(SERVICE, account)).toBe("kept");
	});

	it("an item another program wrote with secret-tool is read by the store", async () => {
		const account = label("external");
		const secret = `written-by-secret-tool-${randomBytes(8).toString("hex")}`;
		await secretToolStore(SERVICE, account, secret);
		expect(await store.get(account)).toBe(secret);
	});

	it("an item deleted with secret-tool is gone for the store's very next read", async () => {
		const account = label("cleared");
		await store.set(account, "soon-deleted");
		expect(await store.get(account)).toBe("soon-deleted");
		await secretToolClear(SERVICE, account);
		expect(await store.get(account)).toBeNull();
	});

	it("stores with different service names do not see each other's items", async () => {
		const account = label("isolated");
		const other = new OsSecretStore({ service: OTHER_SERVICE, timeoutMs: 10_000 });
		await store.set(account, "mine");
		expect(await other.get(account)).toBeNull();
		await other.set(account, "theirs");
		expect(await store.get(account)).toBe("mine");
		expect(await other.get(account)).toBe("theirs");
		expect(await other.delete(account)).toBe(true);
		expect(await store.get(account)).toBe("mine");
	});
});

// The Secret Service's attributes and label; macOS and Windows name items their own way (see the README).
describe.runIf(linux)("the item as a person sees it in their keychain", () => {
	it("carries the attributes service= and username=, and the label keyring:<label>@<service>", async () => {
		const store = new OsSecretStore({ service: SERVICE, timeoutMs: 10_000 });
		const account = label("visible");
		await store.set(account, "look-at-me");
		const { items } = await secretToolSearch(SERVICE, account);
		expect(items).toHaveLength(1);
		const item = items[0];
		expect(item?.label).toBe(`keyring:${account}@${SERVICE}`);
		expect(item?.attributes.service).toBe(SERVICE);
		expect(item?.attributes.username).toBe(account);
		expect(item?.secret).toBe("look-at-me");
		// Found by the service name alone, as a person searching their keychain UI for it would.
		const byService = await secretToolSearch(SERVICE);
		expect(byService.items.map((found) => found.label)).toContain(`keyring:${account}@${SERVICE}`);
	});
});

// Locking the collection or freezing the daemon would break the test files running in parallel, so these tests
// use a keyring of their own, reached from a child process (the store's D-Bus connection follows its environment).
// A second private gnome-keyring to lock and to freeze (SIGSTOP).
describe.runIf(linux)("a keychain that cannot answer", () => {
	const FREEZE_TIMEOUT_MS = 1500;
	const service = uniqueService("keychain-isolated");
	let keyring: IsolatedKeyring | undefined;
	// A patient store for the locked collection (the refusal must come from the keychain, not from the bound),
	// and one with a short bound for the frozen daemon.
	let patient: KeychainProbe;
	let impatient: KeychainProbe;
	const probes: KeychainProbe[] = [];
	const isolated = once(async () => {
		const started = await startIsolatedKeyring();
		keyring = started;
		const pair = await Promise.all([
			startKeychainProbe({ env: started.env, service, timeoutMs: 15_000 }),
			startKeychainProbe({ env: started.env, service, timeoutMs: FREEZE_TIMEOUT_MS }),
		]);
		probes.push(...pair);
		[patient, impatient] = pair;
		return started;
	});

	beforeEach(() => isolated(), 60_000);
	const env = (): NodeJS.ProcessEnv => {
		if (!keyring) throw new Error("the isolated keyring did not start");
		return keyring.env;
	};

	afterAll(async () => {
		await Promise.all(probes.map((probe) => probe.close()));
		await keyring?.stop();
	});

	it("a locked collection fails each operation with kind locked, in time, and works once unlocked", async () => {
		const account = "locked-account";
		expect((await patient.run({ op: "set", label: account, secret: "kept-while-locked" })).ok).toBe(true);
		await lockDefaultCollection(env());
		try {
			expect(await isDefaultCollectionLocked(env())).toBe(true);
			for (const command of [
				{ op: "get", label: account },
				{ op: "set", label: account, secret: "must-not-land" },
				{ op: "delete", label: account },
			] as const) {
				const result = await patient.run(command);
				expect(result.ok, `${command.op} on a locked collection`).toBe(false);
				expect(result.error?.name).toBe("KeychainError");
				expect(result.error?.kind).toBe("locked");
				expect(result.error?.message).toContain(`"${account}"`);
				expect(result.error?.message).toMatch(/unlock/i);
				expect(result.ms).toBeLessThan(15_000);
			}
		} finally {
			await unlockDefaultCollection(env());
		}
		expect(await isDefaultCollectionLocked(env())).toBe(false);
		// Neither the refused write nor the refused delete changed the item; the same store reads it again.
		const reread = await patient.run({ op: "get", label: account });
		expect(reread).toMatchObject({ ok: true, value: "kept-while-locked" });
		expect(await secretToolLookup(service, account, env())).toBe("kept-while-locked");
	});

	it("a frozen daemon fails a read with kind timeout when the bound expires, and the item survives", async () => {
		const account = "frozen-account";
		// Constructing an entry talks to the daemon synchronously, so the entry is built (by this read) before the
		// daemon freezes: what is measured is the bound on a call, not the library's blocking constructor.
		expect((await impatient.run({ op: "set", label: account, secret: "survives-the-freeze" })).ok).toBe(true);
		expect((await impatient.run({ op: "get", label: account })).value).toBe("survives-the-freeze");
		const pid = await stopDaemon(env());
		let result: ProbeResult;
		let wallMs: number;
		try {
			const started = performance.now();
			result = await impatient.run({ op: "get", label: account });
			wallMs = performance.now() - started;
		} finally {
			await continueDaemon(pid);
		}
		console.log(
			`[keychain] frozen-daemon read failed after ${result.ms.toFixed(0)} ms inside the store ` +
				`(bound ${FREEZE_TIMEOUT_MS} ms, fired ${(result.ms - FREEZE_TIMEOUT_MS).toFixed(0)} ms late), ` +
				`${wallMs.toFixed(0)} ms as the test saw it`,
		);
		expect(result.ok).toBe(false);
		expect(result.error?.name).toBe("KeychainError");
		expect(result.error?.kind).toBe("timeout");
		expect(result.error?.message).toContain(`"${account}"`);
		expect(result.ms).toBeGreaterThanOrEqual(FREEZE_TIMEOUT_MS - 20);
		expect(result.ms).toBeLessThan(FREEZE_TIMEOUT_MS + 1000);
		expect(wallMs).toBeLessThan(FREEZE_TIMEOUT_MS + 2000);

		// Once the daemon runs again the abandoned call settles on its own; the same store answers (bounded poll).
		let answered: ProbeResult | undefined;
		for (let attempt = 0; attempt < 20 && !answered?.ok; attempt++) {
			if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, 200));
			answered = await impatient.run({ op: "get", label: account });
		}
		expect(answered).toMatchObject({ ok: true, value: "survives-the-freeze" });
		expect(await secretToolLookup(service, account, env())).toBe("survives-the-freeze");
	});

	it("a write abandoned on its bound is waited for by settled(), which returns once that call has ended", async () => {
		const account = "abandoned-write";
		expect((await impatient.run({ op: "set", label: account, secret: "before-the-freeze" })).ok).toBe(true);
		const idle = await impatient.run({ op: "settled", label: account });
		expect(idle.ok).toBe(true);
		expect(idle.ms).toBeLessThan(100);
		const pid = await stopDaemon(env());
		let write: ProbeResult;
		let settled: ProbeResult;
		try {
			write = await impatient.run({ op: "set", label: account, secret: "written-while-frozen" });
			// Still frozen: the abandoned call ends only when the D-Bus call itself gives up (or the daemon answers).
			settled = await impatient.run({ op: "settled", label: account });
		} finally {
			await continueDaemon(pid);
		}
		console.log(
			`[keychain] abandoned write: failed after ${write.ms.toFixed(0)} ms (bound ${FREEZE_TIMEOUT_MS} ms); ` +
				`settled() waited ${settled.ms.toFixed(0)} ms more for it`,
		);
		expect(write.ok).toBe(false);
		expect(write.error?.kind).toBe("timeout");
		expect(settled.ok).toBe(true);
		expect(settled.ms).toBeGreaterThan(100);
		expect(settled.ms).toBeLessThan(3 * FREEZE_TIMEOUT_MS + 1_000);
		// Whatever the outcome, the item is whole and stays as it is once settled() returned.
		let first: ProbeResult | undefined;
		for (let attempt = 0; attempt < 20 && !first?.ok; attempt++) {
			if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, 200));
			first = await impatient.run({ op: "get", label: account });
		}
		expect(["before-the-freeze", "written-while-frozen"]).toContain(first?.value);
		await new Promise((resolve) => setTimeout(resolve, 500));
		expect(await secretToolLookup(service, account, env())).toBe(first?.value);
	});
});

// The test takes the D-Bus session away.
describe.runIf(linux)("a machine without any Secret Service", () => {
	it("fails every operation with kind unavailable, says how to start one, and stores nothing elsewhere", async () => {
		const probe = await startKeychainProbe({
			env: { ...process.env, DBUS_SESSION_BUS_ADDRESS: "unix:path=/nonexistent/pi-mcc-test-bus" },
			service: uniqueService("keychain-nobus"),
			timeoutMs: 5_000,
		});
		try {
			for (const command of [
				{ op: "set", label: "nobus", secret: "must-not-be-stored" },
				{ op: "get", label: "nobus" },
				{ op: "delete", label: "nobus" },
			] as const) {
				const result = await probe.run(command);
				expect(result.ok, `${command.op} without a bus`).toBe(false);
				expect(result.error?.name).toBe("KeychainError");
				expect(result.error?.kind).toBe("unavailable");
				expect(result.error?.message).toContain("No Secret Service is reachable");
				expect(result.error?.message).toContain("dbus-run-session");
				expect(result.error?.message).toContain("never stored in a file");
			}
		} finally {
			await probe.close();
		}
	});
});
