import { createHash, randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Core } from "../src/core.ts";
import { createCore } from "../src/core.ts";
import { readSettings } from "../src/settings.ts";
import { errorText } from "../src/text.ts";
import {
	type FakeTokenEndpoint,
	newAccessToken,
	newRefreshToken,
	startFakeTokenEndpoint,
} from "./helpers/fake-token-endpoint.ts";
import {
	once,
	requireSecretService,
	resumeProcess,
	secretToolClear,
	secretToolLookup,
	uniqueService,
	waitFor,
	waitForExit,
} from "./helpers/keyring.ts";
import { lineAfter, type RefreshWorker, type RefreshWorkerLine, startRefreshWorker } from "./helpers/worker-process.ts";

const SERVICE = uniqueService("contention");
// Eight processes start on two cores: allow for a loaded machine (every wait inside is bounded).
const SLOW = { timeout: 120_000 };

interface Scene {
	dir: string;
	label: string;
	fake: FakeTokenEndpoint;
	env: NodeJS.ProcessEnv;
	core: Core;
	workers: RefreshWorker[];
}

let scene: Scene | undefined;
/** The current test's scene (set by beforeEach). */
function current(): Scene {
	if (!scene) throw new Error("beforeEach did not finish");
	return scene;
}

const prepared = once(async () => {
	await requireSecretService();
	// Load the worker's modules once, so eight workers starting together do not all transpile them at once.
	const warmup = startRefreshWorker({ ...process.env, PI_MCC_WORKER_WARMUP: "1" });
	try {
		const line = await lineAfter(warmup, 0, 60_000);
		if (!line.warm) throw new Error(`the worker did not load: ${warmup.output}`);
	} finally {
		if (!(await waitForExit(warmup.child, 10_000))) warmup.child.kill("SIGKILL");
	}
});

beforeEach(async () => {
	await prepared();
	const dir = await fs.mkdtemp(join(tmpdir(), "pi-mcc-contention-"));
	const fake = await startFakeTokenEndpoint({ delayMs: 300 });
	const env: NodeJS.ProcessEnv = {
		...process.env,
		PI_CODING_AGENT_DIR: join(dir, "agent"),
		PI_MCC_TOKEN_URL: fake.url,
		PI_MCC_KEYCHAIN_SERVICE: SERVICE,
		PI_MCC_TOKEN_TIMEOUT_MS: "10000",
		PI_MCC_KEYCHAIN_TIMEOUT_MS: "15000",
		// The shortest stale time the lock allows, so a frozen holder loses its lock in 2 s, not 10 s.
		PI_MCC_LOCK_STALE_MS: "2000",
	};
	scene = {
		dir,
		label: `shared-${randomBytes(3).toString("hex")}`,
		fake,
		env,
		core: createCore(readSettings(env)),
		workers: [],
	};
}, 90_000);

afterEach(async () => {
	const done = scene;
	scene = undefined;
	if (!done) return;
	await Promise.all(
		done.workers.map(async (worker) => {
			worker.child.stdin?.end();
			if (!(await waitForExit(worker.child, 5_000))) worker.child.kill("SIGKILL");
		}),
	);
	await done.fake.close();
	await secretToolClear(SERVICE, done.label);
	await fs.rm(done.dir, { recursive: true, force: true });
});

/** Starts `count` processes, waits until each has opened the keychain, then releases them all at once. */
async function race(count: number): Promise<RefreshWorkerLine[]> {
	const now = current();
	const env = { ...now.env, PI_MCC_WORKER_LABEL: now.label };
	now.workers = Array.from({ length: count }, () => startRefreshWorker(env));
	const ready = await Promise.all(now.workers.map((worker) => lineAfter(worker, 0, 60_000)));
	for (const line of ready) {
		expect(line.ready, JSON.stringify(line)).toBe(true);
		expect(line.status).toBe("expired");
	}
	for (const worker of now.workers) worker.child.stdin?.write("go\n");
	const results = await Promise.all(now.workers.map((worker) => lineAfter(worker, 1, 30_000)));
	for (const worker of now.workers) worker.child.stdin?.end();
	return results;
}

/** A login that expired an hour ago, whose refresh token the fake endpoint will accept once. */
async function storeExpiredLogin(): Promise<{ access: string; refresh: string; expires: number }> {
	const { fake, core, label } = current();
	const pair = { access: newAccessToken(), refresh: newRefreshToken(), expires: Date.now() - 60 * 60 * 1000 };
	fake.registerRefreshToken(pair.refresh);
	await core.broker.storeLogin(label, pair);
	return pair;
}

function sha256(text: string): string {
	return createHash("sha256").update(text).digest("hex");
}

function expectNoTokenInOutput(tokens: readonly string[]): void {
	for (const worker of current().workers) {
		for (const token of tokens) expect(worker.output.includes(token), "a worker printed a token").toBe(false);
	}
}

describe("many pi processes asking for the same expiring account at once", () => {
	it("send exactly one refresh, all get the same new token, and the keychain holds the new pair", SLOW, async () => {
		const { fake, label, dir } = current();
		const old = await storeExpiredLogin();
		const results = await race(8);
		const requests = fake.requests.length;
		console.log(`[contention] 8 processes raced for one expired account: ${requests} token request(s) seen`);

		for (const result of results) expect(result.error ?? result.fatal, JSON.stringify(result)).toBeUndefined();
		expect(new Set(results.map((result) => result.pid)).size).toBe(8);
		expect(requests).toBe(1);
		expect(fake.requests[0]?.refresh_token).toBe(old.refresh);
		const [access, refresh] = fake.issued;
		expect(fake.issued).toHaveLength(2);
		expect(new Set(results.map((result) => result.sha256))).toEqual(new Set([sha256(access ?? "")]));
		// They really raced: every process had asked before the first one got its answer.
		const firstEnd = Math.min(...results.map((result) => result.endedAt ?? Number.POSITIVE_INFINITY));
		for (const result of results) expect(result.startedAt).toBeLessThan(firstEnd);

		const stored = JSON.parse((await secretToolLookup(SERVICE, label)) ?? "null");
		expect(stored).toMatchObject({ v: 1, access, refresh });
		expect(stored.expires).toBeGreaterThan(Date.now() + 60 * 60 * 1000);
		expectNoTokenInOutput([old.access, old.refresh, access ?? "", refresh ?? ""]);
		// The lock directory is left clean for the next refresh.
		const locks = await fs.readdir(join(dir, "agent", "multi-claude-code-locks"));
		expect(locks.filter((name) => name.endsWith(".lock"))).toEqual([]);
	});

	it("when the one refresh is refused, only it reaches the endpoint and all report needs_login", SLOW, async () => {
		const { fake, label } = current();
		const old = await storeExpiredLogin();
		fake.setMode("invalid_grant");
		const results = await race(6);
		expect(fake.requests).toHaveLength(1);
		for (const result of results) {
			expect(result.sha256).toBeUndefined();
			expect(result.error?.name).toBe("AccountError");
			expect(result.error?.kind).toBe("needs_login");
			expect(result.error?.message).toContain(`/mcc-login ${label}`);
		}
		expect(JSON.parse((await secretToolLookup(SERVICE, label)) ?? "null")).toEqual({ v: 1, ...old });
		expectNoTokenInOutput([old.access, old.refresh]);
	});
});

describe("a refresh whose process is frozen (SIGSTOP) after it sent, while a second process needs the account", () => {
	it(
		"the endpoint never sees the refresh token twice; after SIGCONT both get the new token and no mark remains",
		SLOW,
		async () => {
			const { fake, label, dir, core, env } = current();
			const old = await storeExpiredLogin();
			// Long enough that the first process is stopped before its answer arrives (and is handled only on SIGCONT).
			fake.setDelay(1_500);
			const workerEnv = { ...env, PI_MCC_WORKER_LABEL: label };
			const first = startRefreshWorker(workerEnv);
			current().workers.push(first);
			expect((await lineAfter(first, 0, 60_000)).status).toBe("expired");
			first.child.stdin?.write("go\n");
			await waitFor(() => fake.requests.length > 0, "the first process's refresh", 20_000, 5).catch((error) => {
				throw new Error(`${errorText(error)}: ${first.output}`);
			});
			process.kill(first.child.pid ?? 0, "SIGSTOP");
			try {
				const second = startRefreshWorker(workerEnv);
				current().workers.push(second);
				expect((await lineAfter(second, 0, 60_000)).status).toBe("expired");
				second.child.stdin?.write("go\n");
				// The first process's lock goes stale 2 s after its last refresh of it; give the second time to take
				// it over and find that a live (stopped) process has this refresh token out.
				await new Promise((resolve) => setTimeout(resolve, 4_000));
				expect(fake.requests.map((request) => request.refresh_token)).toEqual([old.refresh]);
				expect(second.lines).toHaveLength(1);
				const record = JSON.parse(
					await fs.readFile(join(dir, "agent", "multi-claude-code-locks", `${label}.sending`), "utf8"),
				);
				expect(record).toMatchObject({ pid: first.child.pid, from: old.expires });
				if (first.child.pid) resumeProcess(first.child.pid);
				const [one, two] = await Promise.all([lineAfter(first, 1, 30_000), lineAfter(second, 1, 30_000)]);
				console.log(
					`[contention] frozen sender: the second process waited ${(two.endedAt ?? 0) - (two.startedAt ?? 0)} ms ` +
						`and sent nothing; ${fake.requests.length} token request(s) seen`,
				);
				for (const result of [one, two])
					expect(result.error ?? result.fatal, JSON.stringify(result)).toBeUndefined();
				const access = fake.issued.at(-2);
				expect(one.sha256).toBe(sha256(access ?? ""));
				expect(two.sha256).toBe(sha256(access ?? ""));
			} finally {
				if (first.child.pid) resumeProcess(first.child.pid);
			}
			expect(fake.reusedRefreshTokens()).toEqual([]);
			expect(fake.requests).toHaveLength(1);
			const stored = JSON.parse((await secretToolLookup(SERVICE, label)) ?? "null");
			expect(stored).toMatchObject({ v: 1, access: fake.issued.at(-2), refresh: fake.issued.at(-1) });
			expect(stored.expires).toBeGreaterThan(Date.now() + 60 * 60 * 1000);
			expect((await core.state.read()).needsLogin[label]).toBeUndefined();
			expect((await core.broker.describe(label)).status).toBe("ok");
			const left = await fs.readdir(join(dir, "agent", "multi-claude-code-locks"));
			expect(left.filter((name) => name.endsWith(".lock") || name.endsWith(".sending"))).toEqual([]);
			expectNoTokenInOutput([old.access, old.refresh, ...fake.issued]);
		},
	);
});
