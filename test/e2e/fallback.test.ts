/**
 * Directional fallback in the real pi runtime: which accounts a rate-limited request is retried on, in what
 * order, how often, and which failures never fall back. Every account's token is scripted on the fake API,
 * so the recorded requests show exactly which accounts were asked.
 */
import { promises as fs } from "node:fs";
import { describe, expect, it } from "vitest";
import { type AccountSpec, type AccountTokens, readState, setCooldown, setupAccounts } from "../helpers/accounts.ts";
import { useE2eWorld } from "../helpers/e2e-world.ts";
import {
	type Behaviour,
	midStreamFailure,
	ok,
	overloaded,
	rateLimited,
	sseErrorBeforeContent,
	unauthorized,
	windowless429,
} from "../helpers/fake-anthropic-api.ts";
import { type PiSession, sessionFiles } from "../helpers/pi-harness.ts";

const world = useE2eWorld();
let accounts: Record<string, AccountTokens>;

/** enterprise → [personal, side]; personal → [side] unless told otherwise; side has no list. */
async function setup(
	behaviours: Record<string, Behaviour>,
	options: { personalFallback?: string[]; enterpriseFallback?: string[]; active?: string } = {},
): Promise<PiSession> {
	const specs: AccountSpec[] = [
		{ label: "enterprise", fallbackTo: options.enterpriseFallback ?? ["personal", "side"] },
		{ label: "personal", fallbackTo: options.personalFallback ?? ["side"] },
		{ label: "side" },
	];
	accounts = await setupAccounts({ accounts: specs, active: options.active ?? "enterprise", tokens: world().tokens });
	for (const [label, pair] of Object.entries(accounts)) {
		world().api.script(pair.access, behaviours[label] ?? ok(`answer from ${label}`));
	}
	return world().start();
}

/** The labels of the accounts the fake API was asked by, in order. */
function asked(): string[] {
	const byToken = new Map(Object.entries(accounts).map(([label, pair]) => [pair.access, label]));
	return world().api.requests.map((request) => byToken.get(request.token ?? "") ?? `unknown:${request.token}`);
}

describe("directional fallback on rate limits", () => {
	it("answers from personal when enterprise gets a 429, and the footer says personal answered", async () => {
		const pi = await setup({ enterprise: rateLimited() });
		const result = await pi.prompt("hello");
		expect(result.stopReason).toBe("stop");
		expect(result.text).toBe("answer from personal");
		expect(asked()).toEqual(["enterprise", "personal"]);
		expect(pi.footer()).toContain("personal");
		expect(pi.footer()).toContain("enterprise");
	});

	it("goes on to side when enterprise and personal are both rate limited", async () => {
		const pi = await setup({ enterprise: rateLimited(), personal: rateLimited() });
		const result = await pi.prompt("hello");
		expect(result.text).toBe("answer from side");
		expect(asked()).toEqual(["enterprise", "personal", "side"]);
		expect(pi.footer()).toContain("side");
	});

	it("surfaces the rate-limit error after exactly one request per allowed account when all are limited", async () => {
		const pi = await setup({ enterprise: rateLimited(), personal: rateLimited(), side: rateLimited() });
		const result = await pi.prompt("hello");
		expect(result.stopReason).toBe("error");
		expect(result.text).toBe("");
		expect(result.errorMessage).toMatch(/rate.?limit/i);
		expect(asked()).toEqual(["enterprise", "personal", "side"]);
	});

	it("fails on personal's own 429 when personal has no fallback list, and never asks enterprise", async () => {
		const pi = await setup({ personal: rateLimited() }, { active: "personal", personalFallback: [] });
		const result = await pi.prompt("hello");
		expect(result.stopReason).toBe("error");
		expect(result.errorMessage).toMatch(/rate.?limit/i);
		expect(result.errorMessage).toContain("personal");
		expect(asked()).toEqual(["personal"]);
	});

	it("does not follow personal's own list when enterprise hops to personal (chains are not transitive)", async () => {
		const pi = await setup(
			{ enterprise: rateLimited(), personal: rateLimited() },
			{ enterpriseFallback: ["personal"], personalFallback: ["side"] },
		);
		const result = await pi.prompt("hello");
		expect(result.stopReason).toBe("error");
		expect(asked()).toEqual(["enterprise", "personal"]);
	});

	it("uses personal's own list when personal itself is the active account", async () => {
		const pi = await setup({ personal: rateLimited() }, { active: "personal", personalFallback: ["side"] });
		const result = await pi.prompt("hello");
		expect(result.text).toBe("answer from side");
		expect(asked()).toEqual(["personal", "side"]);
	});

	it("falls back on a 200 response whose stream opens with a rate_limit_error event", async () => {
		const pi = await setup({ enterprise: sseErrorBeforeContent("rate_limit_error") });
		const result = await pi.prompt("hello");
		expect(result.text).toBe("answer from personal");
		expect(asked()).toEqual(["enterprise", "personal"]);
	});

	it("falls back on a 200 response whose stream opens with an overloaded_error event", async () => {
		const pi = await setup({ enterprise: sseErrorBeforeContent("overloaded_error") });
		const result = await pi.prompt("hello");
		expect(result.text).toBe("answer from personal");
		expect(asked()).toEqual(["enterprise", "personal"]);
	});

	it("falls back on an HTTP 529 overloaded_error", async () => {
		const pi = await setup({ enterprise: overloaded() });
		const result = await pi.prompt("hello");
		expect(result.text).toBe("answer from personal");
		expect(asked()).toEqual(["enterprise", "personal"]);
	});

	it("falls back on a 429 that carries no rate-limit window headers at all", async () => {
		const pi = await setup({ enterprise: windowless429() });
		const result = await pi.prompt("hello");
		expect(result.text).toBe("answer from personal");
		expect(asked()).toEqual(["enterprise", "personal"]);
		const cooldown = (await readState()).cooldowns.enterprise;
		expect(cooldown).toBeDefined();
		expect(cooldown?.until ?? 0).toBeGreaterThan(Date.now());
	});

	it("tries at most five fallback accounts for one request", async () => {
		const labels = ["a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7"];
		accounts = await setupAccounts({
			accounts: labels.map((label, index) => ({ label, fallbackTo: index === 0 ? labels.slice(1) : [] })),
			active: "a0",
			tokens: world().tokens,
		});
		for (const pair of Object.values(accounts)) world().api.script(pair.access, rateLimited());
		world().api.script(accounts.a7?.access ?? "", ok("answer from a7"));
		const pi = await world().start();
		const result = await pi.prompt("hello");
		expect(result.stopReason).toBe("error");
		expect(asked()).toEqual(["a0", "a1", "a2", "a3", "a4", "a5"]);
	});
});

describe("failures that never fall back", () => {
	it("does not fall back on a 401 and tells the person to log the account in again", async () => {
		const pi = await setup({ enterprise: unauthorized() });
		const result = await pi.prompt("hello");
		expect(result.stopReason).toBe("error");
		expect(result.errorMessage).toContain("enterprise");
		expect(result.errorMessage).toContain("/mcc-login enterprise");
		expect(asked()).toEqual(["enterprise"]);
		expect((await readState()).cooldowns.enterprise).toBeUndefined();
	});

	it("keeps the partial text and does not retry when the stream fails after content has arrived", async () => {
		const pi = await setup({ enterprise: midStreamFailure("The first half of an answer") });
		const result = await pi.prompt("hello");
		expect(result.stopReason).toBe("error");
		expect(result.text).toBe("The first half of an answer");
		expect(result.errorMessage).toBeDefined();
		expect(asked()).toEqual(["enterprise"]);
	});

	it("keeps the partial text and does not retry when the connection drops after content has arrived", async () => {
		const pi = await setup({ enterprise: midStreamFailure("Cut off mid", { how: "close" }) });
		const result = await pi.prompt("hello");
		expect(result.stopReason).toBe("error");
		expect(result.text).toBe("Cut off mid");
		expect(asked()).toEqual(["enterprise"]);
	});

	it("passes a rate_limit_error that arrives after content through without a retry", async () => {
		const pi = await setup({ enterprise: midStreamFailure("Some text", { errorType: "rate_limit_error" }) });
		const result = await pi.prompt("hello");
		expect(result.stopReason).toBe("error");
		expect(result.text).toBe("Some text");
		expect(asked()).toEqual(["enterprise"]);
	});
});

describe("cooldowns", () => {
	it("records the cooldown in the shared state file until the reset time Anthropic announced", async () => {
		const reset = Math.floor(Date.now() / 1000) + 2 * 60 * 60;
		const pi = await setup({ enterprise: rateLimited({ retryAfterSec: 120, unifiedReset: reset }) });
		await pi.prompt("hello");
		const state = await readState();
		expect(state.cooldowns.enterprise?.until).toBe(reset * 1000);
		expect(state.cooldowns.enterprise?.reason).toBe("rate_limit");
		expect(state.cooldowns.personal).toBeUndefined();
		const stateText = await fs.readFile(world().env.stateFile, "utf8");
		for (const pair of Object.values(accounts)) expect(stateText).not.toContain(pair.access);
	});

	it("skips a cooling account on the next request of the same session without asking it", async () => {
		const pi = await setup({ enterprise: rateLimited() });
		expect((await pi.prompt("first")).text).toBe("answer from personal");
		expect((await pi.prompt("second")).text).toBe("answer from personal");
		expect(asked()).toEqual(["enterprise", "personal", "personal"]);
	});

	it("goes straight to the first fallback that is not cooling down when the active account is cooling", async () => {
		const pi = await setup({});
		await setCooldown("enterprise", Date.now() + 60_000);
		await setCooldown("personal", Date.now() + 60_000);
		const result = await pi.prompt("hello");
		expect(result.text).toBe("answer from side");
		expect(asked()).toEqual(["side"]);
	});

	it("still asks the active account when it and all its fallbacks are cooling down", async () => {
		const pi = await setup({});
		for (const label of ["enterprise", "personal", "side"]) await setCooldown(label, Date.now() + 60_000);
		const result = await pi.prompt("hello");
		expect(result.text).toBe("answer from enterprise");
		expect(asked()).toEqual(["enterprise"]);
	});

	it("shows the cooling account and every fallback list in /mcc-status", async () => {
		const pi = await setup({ enterprise: rateLimited({ retryAfterSec: 3600 }) });
		await pi.prompt("hello");
		await pi.runCommand("/mcc-status");
		const status = pi.ui.notifications.at(-1)?.message ?? "";
		const line = (label: string) => status.split("\n").find((l) => new RegExp(`\\b${label}:`).test(l)) ?? "";
		expect(line("enterprise")).toMatch(/cool/i);
		expect(line("enterprise")).toMatch(/personal.*side/);
		expect(line("personal")).not.toMatch(/cool/i);
		for (const pair of Object.values(accounts)) expect(status).not.toContain(pair.access);
	});

	it("sets the fallback chain with /mcc-fallback and the next rate limit follows it", async () => {
		const pi = await setup({ enterprise: rateLimited() }, { enterpriseFallback: [] });
		await pi.runCommand("/mcc-fallback enterprise side");
		expect(pi.ui.notifications.at(-1)?.type).toBe("info");
		const result = await pi.prompt("hello");
		expect(result.text).toBe("answer from side");
		expect(asked()).toEqual(["enterprise", "side"]);
	});
});

describe("error texts", () => {
	it("removes a token that Anthropic's error body echoes before pi shows or stores the error", async () => {
		const pi = await setup({});
		const token = accounts.enterprise?.access ?? "";
		world().api.script(token, unauthorized({ message: `Invalid bearer token: ${token}` }));
		const result = await pi.prompt("hello");
		expect(result.stopReason).toBe("error");
		expect(result.errorMessage).toBeDefined();
		expect(result.errorMessage).not.toContain(token);
		for (const file of await sessionFiles(world().env)) {
			expect(await fs.readFile(file, "utf8")).not.toContain(token);
		}
	});
});
