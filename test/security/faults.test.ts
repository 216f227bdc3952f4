/**
 * Issue 7, promise 3: processes SIGKILLed in the middle of a refresh (at random points, and exactly after the
 * token endpoint answered but before the keychain write, and right after the write) or of a migration leave the
 * keychain holding a consistent pair (parseable; the old or the new one), a valid config, and no lock that blocks
 * the next run beyond the stale timeout; the next run works, or — when the rotated refresh token was truly lost —
 * says "log in again" for that account only. A token endpoint that hangs, resets or answers garbage, and a
 * keychain daemon frozen mid-request, end in a typed error within the timeout, and pi keeps working.
 */

import { promises as fs } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseCredentials, type StoredCredentials, serializeCredentials } from "../../src/broker/credentials.ts";
import { AccountError } from "../../src/broker/token-broker.ts";
import { parseAccountsConfig, parseSharedState } from "../../src/config/stores.ts";
import { type Core, createCore } from "../../src/core.ts";
import { DEFAULT_LOCK_STALE_MS } from "../../src/fs/file-lock.ts";
import { readSettings } from "../../src/settings.ts";
import { setupAccounts } from "../helpers/accounts.ts";
import { rejection } from "../helpers/expect-error.ts";
import { ok } from "../helpers/fake-anthropic-api.ts";
import {
	continueDaemon,
	type IsolatedKeyring,
	requireSecretService,
	secretToolLookup,
	secretToolStore,
	startIsolatedKeyring,
	stopDaemon,
} from "../helpers/keyring.ts";
import { migrateRunner, removeMigrateBuild, runInProcess } from "../helpers/migration-cli.ts";
import { legacyAccount, legacyText, tokensOf } from "../helpers/migration-sandbox.ts";
import { keychainLookup } from "../helpers/pi-harness.ts";
import { RpcPi } from "../helpers/rpc-pi.ts";
import {
	ageLocks,
	leftoverLocks,
	sha256,
	startBlackHole,
	startTokenProxy,
	type TokenProxy,
} from "./helpers/fault-tools.ts";
import { describeHits, scanText, scanTree } from "./helpers/leak-scan.ts";
import { createPrng, seedFromEnv } from "./helpers/prng.ts";
import { Worker, type WorkerLine, warmUpWorkers } from "./helpers/workers.ts";
import { createSecurityWorld, type SecurityWorld, sleep, until } from "./helpers/world.ts";

const DAY_MS = 24 * 3_600_000;
const STALE_S = DEFAULT_LOCK_STALE_MS / 1000;
const HOUR_MS = 3_600_000;
let world: SecurityWorld;
/** A "next run" in this process: a refresh margin of a day makes every call refresh, proving the pair is live. */
let nextRun: Core;
const random = createPrng(seedFromEnv("PI_MCC_FAULT_SEED"));
const kills = { refresh: 0, migration: 0, exact: 0 };

beforeAll(async () => {
	await requireSecretService();
	world = await createSecurityWorld({ PI_MCC_TOKEN_TIMEOUT_MS: "10000", PI_MCC_KEYCHAIN_TIMEOUT_MS: "15000" });
	world.api.setDefault(ok("answer"));
	nextRun = createCore(readSettings({ ...process.env, PI_MCC_REFRESH_MARGIN_MS: String(DAY_MS) }));
	await warmUpWorkers(world.childEnv());
	console.log(`[faults] seed ${random.seed} (PI_MCC_FAULT_SEED reproduces the kill delays)`);
}, 120_000);

afterAll(async () => {
	console.log(
		`[faults] kills survived: ${kills.refresh} mid-refresh at random points, ${kills.exact} at exact points, ` +
			`${kills.migration} mid-migration`,
	);
	await world?.close();
	await removeMigrateBuild();
});

/** The account's keychain item, read with secret-tool (an independent view) and parsed: throws unless whole. */
async function storedPair(label: string): Promise<StoredCredentials> {
	const raw = await keychainLookup(world.env.keychainService, label);
	if (raw === undefined) throw new Error(`"${label}" has no keychain item`);
	return parseCredentials(raw);
}

async function expectValidFiles(): Promise<void> {
	const config = await fs.readFile(world.env.configFile, "utf8");
	parseAccountsConfig(JSON.parse(config), world.env.configFile);
	const state = await fs.readFile(world.env.stateFile, "utf8").catch(() => undefined);
	if (state !== undefined) parseSharedState(JSON.parse(state), world.env.stateFile);
}

describe("a refresh killed at random points", () => {
	it("leaves a consistent pair and valid files each time; the next run works or asks that account alone to log in", {
		timeout: 180_000,
	}, async () => {
		const victims = ["v1", "v2", "v3", "v4"];
		const bystanders = ["b1", "b2"];
		await setupAccounts({
			accounts: [...victims, ...bystanders].map((label) => ({ label, expiresInMs: HOUR_MS })),
			tokens: world.tokens,
		});
		const env = world.childEnv({ PI_MCC_REFRESH_MARGIN_MS: String(DAY_MS) });
		const buckets = { "stored, not yet handed out": 0, "before or between refreshes": 0, "rotated, then lost": 0 };
		let locksLeft = 0;
		const rounds = 4;
		for (let round = 0; round < rounds; round++) {
			const delay = random.int(0, 40);
			world.tokens.setDelay(delay);
			const atStart = new Map<string, string>();
			for (const victim of victims) atStart.set(victim, (await storedPair(victim)).access);
			const workers = await Promise.all(victims.map(() => Worker.start(env)));
			await Promise.all(
				workers.map(async (worker, index) => {
					worker.send({ op: "refresh-loop", label: victims[index] });
					await sleep(random.int(0, 600));
					worker.kill();
					await worker.gone();
				}),
			);
			kills.refresh += workers.length;
			// An answer the endpoint still owed a dead process is given anyway: the rotation happens regardless.
			await sleep(delay + 100);
			const issued = world.tokens.issued;
			for (const [index, victim] of victims.entries()) {
				const worker = workers[index] as Worker;
				const failures = worker.lines.filter(
					(line: WorkerLine) => line.error !== undefined || line.fatal !== undefined,
				);
				expect(failures, worker.output).toEqual([]);
				const stored = await storedPair(victim);
				const at = issued.indexOf(stored.access);
				// The keychain holds one pair the endpoint issued, access and refresh token together.
				expect(at % 2, `${victim}: the stored access token was issued as the first of a pair`).toBe(0);
				expect(issued[at + 1], `${victim}: access and refresh token belong together`).toBe(stored.refresh);
				// Never older than a token the process already handed out.
				const handedOut = worker.lines.filter((line) => typeof line.sha256 === "string").map((line) => line.sha256);
				const lastHandedOut = handedOut.at(-1);
				const lastIndex =
					lastHandedOut === undefined
						? issued.indexOf(atStart.get(victim) ?? "")
						: issued.findIndex((token) => sha256(token) === lastHandedOut);
				expect(lastIndex).toBeGreaterThanOrEqual(0);
				expect(at, `${victim}: the keychain went back to an older pair`).toBeGreaterThanOrEqual(lastIndex);
				const rotated = world.tokens.requests.some((request) => request.refresh_token === stored.refresh);
				if (at > lastIndex) buckets["stored, not yet handed out"]++;
				else if (rotated) buckets["rotated, then lost"]++;
				else buckets["before or between refreshes"]++;
				// The config and state files are valid however the kill fell.
				await expectValidFiles();
				const locks = await leftoverLocks(world.env.agentDir);
				locksLeft += locks.length;
				await ageLocks(locks);
				if (rotated) {
					const error = await rejection(nextRun.broker.getAccessToken(victim), AccountError);
					expect(error.kind).toBe("needs_login");
					expect(error.message).toContain(`/mcc-login ${victim}`);
					for (const other of [...victims, ...bystanders].filter((label) => label !== victim)) {
						expect(error.message).not.toContain(`"${other}"`);
					}
					// Log it in again for the next round.
					await nextRun.broker.storeLogin(victim, { ...world.tokens.mintPair(), expires: Date.now() + HOUR_MS });
				} else {
					expect(issued).toContain(await nextRun.broker.getAccessToken(victim));
				}
			}
			// Accounts nobody killed keep working (a refresh each, with the day-long margin).
			for (const bystander of bystanders) expect(issued).toContain(await nextRun.broker.getAccessToken(bystander));
			for (const worker of workers)
				expect(describeHits(scanText(`worker ${worker.pid}`, worker.output, world.secrets()))).toBe("");
		}
		world.tokens.setDelay(0);
		console.log(
			`[faults] ${rounds * victims.length} refreshes killed at random points: ${JSON.stringify(buckets)}; ` +
				`${locksLeft} lock directories left behind and recovered`,
		);
		expect(Object.values(buckets).reduce((a, b) => a + b, 0)).toBe(rounds * victims.length);
	});
});

describe("a refresh killed at exact points, on a keychain of its own", () => {
	let iso: IsolatedKeyring | undefined;
	let proxy: TokenProxy | undefined;
	let checker: Worker | undefined;
	let onAnswered: (body: Record<string, unknown>) => void = () => {};

	beforeAll(async () => {
		iso = await startIsolatedKeyring();
		proxy = await startTokenProxy(world.tokens.url, { onAnswered: (body) => onAnswered(body) });
		checker = await Worker.start(isoEnv());
	}, 90_000);

	afterAll(async () => {
		await checker?.stop();
		await proxy?.close();
		await iso?.stop();
	});

	function isoEnv(): NodeJS.ProcessEnv {
		if (!iso || !proxy) throw new Error("the isolated keyring did not start");
		return {
			...iso.env,
			PI_MCC_TOKEN_URL: proxy.url,
			PI_MCC_REFRESH_MARGIN_MS: String(DAY_MS),
			PI_MCC_KEYCHAIN_TIMEOUT_MS: "20000",
		};
	}

	async function login(label: string): Promise<StoredCredentials> {
		const pair = { ...world.tokens.mintPair(), expires: Date.now() + HOUR_MS };
		await secretToolStore(world.env.keychainService, label, serializeCredentials(pair), iso?.env);
		return pair;
	}

	async function stored(label: string): Promise<StoredCredentials> {
		const raw = await secretToolLookup(world.env.keychainService, label, iso?.env);
		if (raw === null) throw new Error(`"${label}" has no item`);
		return parseCredentials(raw);
	}

	it("after the endpoint answered but before the keychain write: the old pair stays; only that account must log in", {
		timeout: 90_000,
	}, async () => {
		if (!iso || !checker) throw new Error("not started");
		const bystander = "iso-bystander";
		await login(bystander);
		for (let round = 0; round < 2; round++) {
			const victim = `frozen-${round}`;
			const old = await login(victim);
			let frozen = false;
			// The endpoint has rotated the token and answered; the keychain daemon freezes before the answer is even
			// passed on, so the process that asked can never complete its write.
			onAnswered = (body) => {
				if (body.refresh_token !== old.refresh || frozen || !iso) return;
				process.kill(iso.daemonPid, "SIGSTOP");
				frozen = true;
			};
			const worker = await Worker.start(isoEnv());
			try {
				worker.send({ op: "token", label: victim });
				await until(() => frozen, "the token endpoint's answer", 20_000);
				await sleep(300);
				expect(worker.lines.filter((line) => line.id !== undefined)).toEqual([]);
				worker.kill();
				await worker.gone();
			} finally {
				onAnswered = () => {};
				if (frozen) await continueDaemon(iso.daemonPid);
			}
			kills.exact++;
			expect(world.tokens.requests.filter((request) => request.refresh_token === old.refresh)).toHaveLength(1);
			expect(await stored(victim)).toEqual(old);
			await ageLocks(await leftoverLocks(world.env.agentDir));
			const next = await checker.call({ op: "token", label: victim });
			expect(next.ok).toBe(false);
			expect(next.error).toMatchObject({ name: "AccountError", kind: "needs_login" });
			expect(String((next.error as { message?: unknown }).message)).toContain(`/mcc-login ${victim}`);
			expect(await checker.call({ op: "token", label: bystander })).toMatchObject({ ok: true });
		}
	});

	it("right after the keychain write: the new pair is stored whole and the next run refreshes from it", {
		timeout: 90_000,
	}, async () => {
		if (!checker) throw new Error("not started");
		for (let round = 0; round < 2; round++) {
			const victim = `written-${round}`;
			const old = await login(victim);
			const worker = await Worker.start(isoEnv());
			const answer = await worker.call({ op: "token", label: victim });
			worker.kill();
			await worker.gone();
			kills.exact++;
			expect(answer.ok).toBe(true);
			const now = await stored(victim);
			expect(now).not.toEqual(old);
			expect(sha256(now.access)).toBe(answer.sha256);
			expect(world.tokens.issued.indexOf(now.refresh)).toBe(world.tokens.issued.indexOf(now.access) + 1);
			await ageLocks(await leftoverLocks(world.env.agentDir));
			const next = await checker.call({ op: "token", label: victim });
			expect(next).toMatchObject({ ok: true });
			expect(world.tokens.requests.at(-1)?.refresh_token).toBe(now.refresh);
		}
	});
});

describe("a lock left by a killed refresh", () => {
	it(`holds back only that account's next refresh, and for at most the stale timeout (${STALE_S} s)`, {
		timeout: 60_000,
	}, async () => {
		await setupAccounts({ accounts: [{ label: "stuck" }, { label: "free" }], tokens: world.tokens });
		const hole = await startBlackHole();
		try {
			const worker = await Worker.start(
				world.childEnv({ PI_MCC_TOKEN_URL: hole.url, PI_MCC_REFRESH_MARGIN_MS: String(DAY_MS) }),
			);
			worker.send({ op: "token", label: "stuck" });
			const lock = join(world.env.agentDir, "multi-claude-code-locks", "stuck.refresh.lock");
			await until(
				() =>
					fs.stat(lock).then(
						() => true,
						() => false,
					),
				"the refresh lock",
				20_000,
			);
			await sleep(200);
			worker.kill();
			await worker.gone();
			kills.refresh++;
			const lockTime = (await fs.stat(lock)).mtimeMs;
			const started = Date.now();
			const timed = async (label: string) => {
				const token = await nextRun.broker.getAccessToken(label);
				return { token, ms: Date.now() - started, end: Date.now() };
			};
			const [stuck, free] = await Promise.all([timed("stuck"), timed("free")]);
			console.log(
				`[faults] stale lock: the other account refreshed in ${free.ms} ms; the locked one waited ${stuck.ms} ms ` +
					`(${stuck.end - lockTime} ms after the dead holder last touched its lock)`,
			);
			expect(world.tokens.issued).toContain(stuck.token);
			expect(world.tokens.issued).toContain(free.token);
			expect(free.ms).toBeLessThan(3_000);
			// It waited for the lock while it was fresh (no second refresh of a token another process might be
			// refreshing), and took it over once stale.
			expect(stuck.ms).toBeGreaterThan(3_000);
			expect(stuck.end - lockTime).toBeLessThan(DEFAULT_LOCK_STALE_MS + 5_000);
			expect(
				await fs.stat(lock).then(
					() => true,
					() => false,
				),
			).toBe(false);
		} finally {
			await hole.close();
		}
	});
});

describe("a migration killed at random moments", () => {
	it("leaves each account in the file, the keychain or both; a re-run completes and the accounts work", {
		timeout: 120_000,
	}, async () => {
		const dir = join(world.env.home, "migrating");
		await fs.mkdir(dir, { recursive: true, mode: 0o700 });
		const file = join(dir, "multi-claude-code.json");
		const migrate = await migrateRunner(world.childEnv());
		// Calibrate: one whole run's duration on this machine is the window the kills are spread over.
		const calibration = [legacyAccount("calibrate")];
		await fs.writeFile(file, legacyText(calibration), { mode: 0o600 });
		const started = Date.now();
		expect((await migrate.run(["--file", file])).code).toBe(0);
		const window = Date.now() - started;
		const outcomes = { untouched: 0, "keychain only partly written": 0, "file rewritten": 0 };
		const rounds = 8;
		const secrets: string[] = [];
		for (let round = 0; round < rounds; round++) {
			const accounts = ["a", "b", "c"].map((suffix) => legacyAccount(`m${round}${suffix}`));
			for (const account of accounts) world.tokens.registerRefreshToken(account.refreshToken ?? "");
			secrets.push(...tokensOf(accounts));
			const original = legacyText(accounts);
			await fs.writeFile(file, original, { mode: 0o600 });
			const running = migrate.start(["--file", file]);
			await sleep(window * random.float(0.05, 1.1));
			const killed = await running.kill();
			kills.migration++;
			expect(describeHits(scanText("migration output", killed.stdout + killed.stderr, secrets))).toBe("");

			const text = await fs.readFile(file, "utf8");
			const untouched = text === original;
			if (!untouched) parseAccountsConfig(JSON.parse(text), file);
			let inKeychain = 0;
			for (const account of accounts) {
				const raw = await keychainLookup(world.env.keychainService, account.label);
				if (raw === undefined) continue;
				// An item that exists holds exactly this account's pair.
				expect(parseCredentials(raw)).toEqual({
					access: account.accessToken,
					refresh: account.refreshToken,
					expires: account.expiresAt,
				});
				inKeychain++;
			}
			if (!untouched) expect(inKeychain).toBe(accounts.length);
			outcomes[untouched ? (inKeychain > 0 ? "keychain only partly written" : "untouched") : "file rewritten"]++;
			// An interrupted atomic rewrite may leave its temp file; it never holds a token.
			const leftovers = (await fs.readdir(dir))
				.filter((name) => name.endsWith(".tmp"))
				.map((name) => join(dir, name));
			expect(describeHits((await scanTree(leftovers, secrets)).hits)).toBe("");
			await ageLocks(
				(await fs.readdir(dir)).filter((name) => name.endsWith(".lock")).map((name) => join(dir, name)),
			);

			const rerun = await runInProcess(["--file", file], world.childEnv());
			expect(rerun.code, rerun.stdout + rerun.stderr).toBe(0);
			const config = parseAccountsConfig(JSON.parse(await fs.readFile(file, "utf8")), file);
			expect(config.accounts.map((account) => account.label)).toEqual(accounts.map((account) => account.label));
			expect(describeHits(scanText(file, await fs.readFile(file, "utf8"), secrets))).toBe("");
			// The next run works: each migrated pair refreshes at the token endpoint.
			for (const account of accounts)
				expect(world.tokens.issued).toContain(await nextRun.broker.getAccessToken(account.label));
		}
		console.log(`[faults] ${rounds} migrations killed (window ${window} ms): ${JSON.stringify(outcomes)}`);
	});
});

describe("a token endpoint that misbehaves, in the real pi runtime", () => {
	it("that hangs, resets the connection or answers garbage fails the request in time, and pi answers the next", {
		timeout: 90_000,
	}, async () => {
		world.env.set({ PI_MCC_TOKEN_TIMEOUT_MS: "1500" });
		try {
			await setupAccounts({ accounts: [{ label: "ep", expiresInMs: 1_000 }], tokens: world.tokens });
			world.tokens.setExpiresIn(1);
			const pi = await world.start();
			const cases = [
				{ mode: "hang", says: /no answer within/ },
				{ mode: "reset", says: /could not be reached|closed the connection/ },
				{ mode: "garbage", says: /not JSON/ },
			] as const;
			for (const { mode, says } of cases) {
				const before = await keychainLookup(world.env.keychainService, "ep");
				world.tokens.setMode(mode);
				const started = Date.now();
				const failed = await pi.prompt(`hello while the endpoint does "${mode}"`);
				const elapsed = Date.now() - started;
				expect(failed.stopReason).toBe("error");
				expect(failed.errorMessage).toContain("could not be renewed");
				expect(failed.errorMessage).toMatch(says);
				expect(elapsed).toBeLessThan(1_500 + 3_000);
				expect(await keychainLookup(world.env.keychainService, "ep")).toBe(before);
				world.tokens.setMode("ok");
				expect((await pi.prompt(`hello after "${mode}"`)).text).toBe("answer");
			}
			expect(pi.extensionErrors).toEqual([]);
			expect(describeHits(scanText("pi", pi.ui.allText().join("\n"), world.secrets()))).toBe("");
		} finally {
			world.tokens.setMode("ok");
			world.tokens.setExpiresIn(28_800);
			world.env.set({ PI_MCC_TOKEN_TIMEOUT_MS: "10000" });
			await world.disposeSessions();
		}
	});
});

describe("a keychain daemon frozen mid-request, in the real pi runtime", () => {
	it("answers that request with the rotated pair, fails the next with a typed keychain error in time; pi survives and recovers", {
		timeout: 120_000,
	}, async () => {
		const iso = await startIsolatedKeyring();
		let pi: RpcPi | undefined;
		try {
			const label = "frozen-kc";
			const pair = { ...world.tokens.mintPair(), expires: Date.now() + HOUR_MS };
			await secretToolStore(world.env.keychainService, label, serializeCredentials(pair), iso.env);
			await fs.writeFile(
				world.env.configFile,
				`${JSON.stringify({ version: 1, activeLabel: label, accounts: [{ label, fallbackTo: [] }] })}\n`,
				{ mode: 0o600 },
			);
			world.api.script(pair.access, ok("answer before the freeze"));
			pi = await RpcPi.start({
				env: world.env,
				processEnv: {
					...iso.env,
					PI_MCC_KEYCHAIN_TIMEOUT_MS: "1500",
					PI_MCC_REFRESH_MARGIN_MS: String(30 * 60_000),
				},
			});
			expect((await pi.prompt("hello")).text).toBe("answer before the freeze");

			// The access token is now due (margin 30 min > its life): the next request refreshes; the endpoint takes
			// its time, and the daemon freezes while it does, so the write of the new pair hits a frozen keychain.
			await secretToolStore(
				world.env.keychainService,
				label,
				serializeCredentials({ ...pair, expires: Date.now() + 60_000 }),
				iso.env,
			);
			world.tokens.setDelay(800);
			const asking = pi.prompt("hello during the freeze");
			await until(() => world.tokens.requests.at(-1)?.refresh_token === pair.refresh, "the refresh", 20_000);
			await stopDaemon(iso.env);
			let first: Awaited<typeof asking>;
			let second: Awaited<typeof asking>;
			let secondMs: number;
			try {
				first = await asking;
				const started = Date.now();
				second = await pi.prompt("hello while frozen");
				secondMs = Date.now() - started;
			} finally {
				await continueDaemon(iso.daemonPid);
				world.tokens.setDelay(0);
			}
			// The endpoint has rotated the pair, so it is not dropped: that request is answered with it from memory
			// (the frozen keychain could not even be read for the compare-and-swap).
			expect(first.stopReason).toBe("stop");
			expect(first.text).toBe("answer");
			expect(second.stopReason).toBe("error");
			expect(second.errorMessage).toMatch(/did not answer a read of account "frozen-kc" within [\d.]+ s/);
			expect(secondMs).toBeLessThan(1_500 + 3_000);
			expect(pi.alive).toBe(true);

			// The keychain holds the old pair or the new one, whole; the next request works, with the rotated pair
			// this pi kept in memory, and the keychain ends up holding it (its write is retried).
			await sleep(1_000);
			const raw = await secretToolLookup(world.env.keychainService, label, iso.env);
			const after = parseCredentials(raw ?? "");
			const index = world.tokens.issued.indexOf(after.access);
			expect(world.tokens.issued[index + 1]).toBe(after.refresh);
			const recovered = await pi.prompt("hello after the thaw");
			expect(recovered.text).toBe("answer");
			await until(
				async () =>
					parseCredentials((await secretToolLookup(world.env.keychainService, label, iso.env)) ?? "").refresh !==
					pair.refresh,
				"the rotated pair in the keychain",
				20_000,
			);
			expect(pi.alive).toBe(true);
			expect(describeHits(scanText("pi", pi.stdout() + pi.stderr(), world.secrets()))).toBe("");
		} finally {
			await pi?.stop();
			await iso.stop();
		}
	});
});
