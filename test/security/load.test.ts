/**
 * Issue 7, promise 5: several pi processes (separate worker processes, each building the extension's core and
 * running requests through the real provider stream function) share three accounts for a sustained period with
 * access tokens that live a few seconds. Every request carries a token the token endpoint issued and that has not
 * expired; every refresh token is used once (the endpoint rejects reuse, and sees none); no pair is refreshed
 * before its refresh margin (exactly one refresh per expiry, however many processes need the account at once); and
 * concurrent config updates from all processes (a new account, then its chain set with /mcc-fallback) all land.
 *
 * CI runs 6 processes for 20 s; `npm run soak` runs 8 for 5 minutes (PI_MCC_LOAD_SECONDS and PI_MCC_LOAD_PROCESSES
 * change either).
 */
import { promises as fs } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAccountsConfig, parseSharedState } from "../../src/config/stores.ts";
import { setupAccounts } from "../helpers/accounts.ts";
import { requireSecretService } from "../helpers/keyring.ts";
import { startTokenProxy, type TokenProxy } from "./helpers/fault-tools.ts";
import { describeHits, scanText } from "./helpers/leak-scan.ts";
import { type RawAnswer, type RawServer, SSE_HEADERS, startRawServer, validStream } from "./helpers/raw-servers.ts";
import { Worker, type WorkerLine, warmUpWorkers } from "./helpers/workers.ts";
import { createSecurityWorld, type SecurityWorld } from "./helpers/world.ts";

/** `npm run soak` (PI_MCC_SOAK=1): 8 processes for 5 minutes; either can be set on its own. */
const SOAK = process.env.PI_MCC_SOAK === "1";
const PROCESSES = Math.max(2, Number(process.env.PI_MCC_LOAD_PROCESSES) || (SOAK ? 8 : 6));
const SECONDS = Math.max(5, Number(process.env.PI_MCC_LOAD_SECONDS) || (SOAK ? 300 : 20));
/**
 * Access tokens live 6 s and are renewed 4 s before they expire: a refresh every 2 s per account, and a token is
 * still valid when a request on a loaded machine takes a few seconds to reach the API.
 */
const LIFETIME_S = 6;
const MARGIN_MS = 4_000;
const UPDATES_PER_PROCESS = 4;
const ACCOUNTS = ["alpha", "beta", "gamma"];
/** Clock skew allowed between this process and a worker deciding a pair is due. */
const SKEW_MS = 300;

interface Pair {
	account: string;
	access: string;
	refresh: string;
	issuedAt: number;
	expiresAt: number;
}

let world: SecurityWorld;
let proxy: TokenProxy;
let api: RawServer;
const pairs = new Map<string, Pair>();
const byRefresh = new Map<string, Pair>();
const refreshes: Array<{ pair: Pair; at: number; status: number }> = [];
const violations: string[] = [];
const served = { ok: 0, rateLimited: 0, rejected: 0, staleButValid: 0 };

function track(pair: Pair): void {
	pairs.set(pair.access, pair);
	byRefresh.set(pair.refresh, pair);
}

beforeAll(async () => {
	await requireSecretService();
	world = await createSecurityWorld({}, { expiresIn: LIFETIME_S, delayMs: 30 });
	// Every grant passes through this proxy, which learns which account each new pair belongs to.
	proxy = await startTokenProxy(world.tokens.url, {
		onAnswered: (body, status, answer) => {
			const previous = byRefresh.get(String(body.refresh_token ?? ""));
			if (!previous) {
				violations.push(`a refresh with a refresh token no account had (HTTP ${status})`);
				return;
			}
			refreshes.push({ pair: previous, at: Date.now(), status });
			if (status !== 200) return;
			const grant = JSON.parse(answer) as { access_token: string; refresh_token: string; expires_in: number };
			const now = Date.now();
			track({
				account: previous.account,
				access: grant.access_token,
				refresh: grant.refresh_token,
				issuedAt: now,
				expiresAt: now + grant.expires_in * 1000,
			});
		},
	});
	// A Messages API that accepts only tokens the endpoint issued and that have not expired; alpha is often
	// rate limited (1 s), so requests also fall back to beta and gamma.
	api = await startRawServer("/v1/messages");
	let turn = 0;
	api.answerWith((request): RawAnswer => {
		const pair = pairs.get(request.token ?? "");
		const now = Date.now();
		if (!pair || now >= pair.expiresAt) {
			served.rejected++;
			violations.push(
				pair ? `${pair.account}: a request with an expired token` : "a request with a token nobody issued",
			);
			const body = JSON.stringify({
				type: "error",
				error: { type: "authentication_error", message: "invalid token" },
			});
			return { status: 401, headers: { "content-type": "application/json" }, chunks: [body] };
		}
		const newest = [...pairs.values()].filter((p) => p.account === pair.account).at(-1);
		if (newest !== pair) served.staleButValid++;
		if (pair.account === "alpha" && ++turn % 5 === 0) {
			served.rateLimited++;
			const body = JSON.stringify({ type: "error", error: { type: "rate_limit_error", message: "limited" } });
			return { status: 429, headers: { "content-type": "application/json", "retry-after": "1" }, chunks: [body] };
		}
		served.ok++;
		const headers = {
			...SSE_HEADERS,
			"anthropic-ratelimit-unified-status": "allowed",
			"anthropic-ratelimit-unified-5h-utilization": "0.2",
		};
		return { status: 200, headers, chunks: validStream(`answer from ${pair.account}`) };
	});
	world.env.set({ PI_MCC_ANTHROPIC_BASE_URL: api.baseUrl, PI_MCC_TOKEN_URL: proxy.url });
	await warmUpWorkers(world.childEnv());
}, 120_000);

afterAll(async () => {
	await world?.close();
	await proxy?.close();
	await api?.close();
});

describe(`${PROCESSES} pi processes sharing three accounts for ${SECONDS} s, tokens living ${LIFETIME_S} s`, () => {
	it("send only valid tokens, refresh each pair once and only when due, and lose no config update", {
		timeout: (SECONDS + 150) * 1000,
	}, async () => {
		const stored = await setupAccounts({
			accounts: [
				{ label: "alpha", fallbackTo: ["beta", "gamma"], expiresInMs: LIFETIME_S * 1000 },
				{ label: "beta", expiresInMs: LIFETIME_S * 1000 },
				{ label: "gamma", expiresInMs: LIFETIME_S * 1000 },
			],
			tokens: world.tokens,
		});
		for (const [account, tokens] of Object.entries(stored)) {
			track({ account, ...tokens, issuedAt: Date.now(), expiresAt: tokens.expires });
		}
		const env = world.childEnv({
			PI_MCC_REFRESH_MARGIN_MS: String(MARGIN_MS),
			PI_MCC_SEC_SHARED_LABELS: ACCOUNTS.join(","),
		});
		const workers = await Promise.all(
			Array.from({ length: PROCESSES }, (_, index) =>
				Worker.start(
					{ ...env, PI_MCC_SEC_WORKER: String(index), PI_MCC_SEC_PRELOAD_PROVIDER: "1" },
					{ readyWithinMs: 120_000 },
				),
			),
		);
		let summaries: WorkerLine[];
		const started = Date.now();
		try {
			summaries = await Promise.all(
				workers.map((worker) =>
					worker.call(
						{ op: "load", seconds: SECONDS, updates: UPDATES_PER_PROCESS, touchAll: true },
						(SECONDS + 90) * 1000,
					),
				),
			);
		} finally {
			for (const worker of workers) await worker.stop();
		}
		const elapsed = (Date.now() - started) / 1000;

		const requests = summaries.reduce((sum, line) => sum + Number(line.requests), 0);
		const answered = summaries.reduce((sum, line) => sum + Number(line.ok), 0);
		const tokenCalls = summaries.reduce((sum, line) => sum + Number(line.tokens), 0);
		const granted = refreshes.filter((refresh) => refresh.status === 200);
		// A pair is due when its expiry minus the margin has passed; "expiries" are the pairs that became due.
		const due = [...pairs.values()].filter((pair) => pair.expiresAt - MARGIN_MS <= Date.now()).length;
		const perPair = new Map<string, number>();
		for (const refresh of refreshes) perPair.set(refresh.pair.refresh, (perPair.get(refresh.pair.refresh) ?? 0) + 1);
		const early = granted.filter((refresh) => refresh.at < refresh.pair.expiresAt - MARGIN_MS - SKEW_MS);
		console.log(
			`[load] ${PROCESSES} processes × ${elapsed.toFixed(1)} s: ${requests} requests (${answered} answered, ` +
				`${served.rateLimited} rate limited then fallen back, ` +
				`${served.staleButValid} with an older but unexpired ` +
				`token), ${tokenCalls} more token calls; ${granted.length} refreshes for ${due} expiries ` +
				`(${refreshes.length - granted.length} refused); ` +
				`${PROCESSES * UPDATES_PER_PROCESS} config updates`,
		);

		expect(violations).toEqual([]);
		for (const summary of summaries) {
			expect(summary.done, JSON.stringify(summary)).toBe(true);
			expect(summary.errors, JSON.stringify(summary)).toEqual({});
			expect(summary.updateFailures).toEqual([]);
			expect(summary.ok).toBe(summary.requests);
		}
		expect(served.rejected).toBe(0);
		expect(requests).toBeGreaterThanOrEqual(PROCESSES * 5);
		// Exactly one refresh per pair that became due: never two of one token, never one before it was due.
		expect(refreshes.filter((refresh) => refresh.status !== 200)).toEqual([]);
		expect([...perPair.values()].filter((count) => count > 1)).toEqual([]);
		expect(
			early.map((refresh) => `${refresh.pair.account} ${refresh.pair.expiresAt - MARGIN_MS - refresh.at} ms early`),
		).toEqual([]);
		const period = LIFETIME_S - MARGIN_MS / 1000;
		expect(granted.length).toBeGreaterThanOrEqual(ACCOUNTS.length * Math.floor(SECONDS / (2 * period)));
		expect(granted.length).toBeLessThanOrEqual(due);
		expect(due - granted.length).toBeLessThanOrEqual(ACCOUNTS.length);

		// Every config update of every process landed.
		const config = parseAccountsConfig(
			JSON.parse(await fs.readFile(world.env.configFile, "utf8")),
			world.env.configFile,
		);
		for (let index = 0; index < PROCESSES; index++) {
			for (let update = 0; update < UPDATES_PER_PROCESS; update++) {
				const account = config.accounts.find((entry) => entry.label === `w${index}-${update}`);
				expect(account?.fallbackTo, `w${index}-${update}`).toEqual(ACCOUNTS);
			}
		}
		parseSharedState(JSON.parse(await fs.readFile(world.env.stateFile, "utf8")), world.env.stateFile);
		const secrets = world.secrets();
		for (const worker of workers)
			expect(describeHits(scanText(`worker ${worker.pid}`, worker.output, secrets))).toBe("");
	});
});
