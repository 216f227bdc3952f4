/**
 * Usage-aware accounts in the real pi runtime: Anthropic's rate-limit headers on every response become per-account
 * figures in the shared state file, the footer and /mcc-status; cooldowns end at the reset the server gave; and the
 * opt-in early fallback moves a nearly exhausted account's requests along its own list.
 */
import { describe, expect, it } from "vitest";
import { type AccountTokens, readState, setupAccounts } from "../helpers/accounts.ts";
import { useE2eWorld } from "../helpers/e2e-world.ts";
import { type Behaviour, ok, rateLimited } from "../helpers/fake-anthropic-api.ts";
import { type PiSession, waitFor } from "../helpers/pi-harness.ts";

const world = useE2eWorld();
let accounts: Record<string, AccountTokens>;

const inSeconds = (s: number): string => String(Math.floor(Date.now() / 1000) + s);

function usageHeaders(fiveHour: string, sevenDay: string): Record<string, string> {
	return {
		"anthropic-ratelimit-unified-status": "allowed",
		"anthropic-ratelimit-unified-representative-claim": "five_hour",
		"anthropic-ratelimit-unified-5h-utilization": fiveHour,
		"anthropic-ratelimit-unified-5h-reset": inSeconds(2 * 3600),
		"anthropic-ratelimit-unified-7d-utilization": sevenDay,
		"anthropic-ratelimit-unified-7d-reset": inSeconds(5 * 24 * 3600),
	};
}

async function setup(behaviours: Record<string, Behaviour>): Promise<PiSession> {
	accounts = await setupAccounts({
		accounts: [{ label: "work", fallbackTo: ["personal"] }, { label: "personal" }],
		active: "work",
		tokens: world().tokens,
	});
	for (const [label, pair] of Object.entries(accounts)) {
		world().api.script(pair.access, behaviours[label] ?? ok(`answer from ${label}`));
	}
	return world().start();
}

/** The figures saved for "work" since `since`: saved beside the stream, not before its end, so wait, don't race. */
function usageSavedSince(since: number) {
	return waitFor(async () => {
		const saved = (await readState()).usage.work;
		return saved && saved.at >= since ? saved : undefined;
	}, "the usage figures in the state file");
}

function asked(): string[] {
	const byToken = new Map(Object.entries(accounts).map(([label, pair]) => [pair.access, label]));
	return world().api.requests.map((request) => byToken.get(request.token ?? "") ?? "unknown");
}

describe("rate-limit figures from response headers", () => {
	it("keeps each account's utilisation in the state file and shows the headline figure in the footer", async () => {
		const pi = await setup({ work: ok("answer from work", { headers: usageHeaders("0.42", "0.9") }) });
		const before = Date.now();
		const result = await pi.prompt("hello");
		expect(result.text).toBe("answer from work");
		const usage = await usageSavedSince(before);
		expect(usage?.windows["5h"]?.utilization).toBe(0.42);
		expect(usage?.windows["7d"]?.utilization).toBe(0.9);
		expect(usage?.representativeClaim).toBe("five_hour");
		// The representative window is the headline, not the fullest one.
		expect(pi.footer()).toBe("claude: work · 5h 42%");
	});

	it("shows every window with its reset in /mcc-status", async () => {
		const pi = await setup({ work: ok("answer from work", { headers: usageHeaders("0.42", "0.9") }) });
		await pi.prompt("hello");
		await pi.runCommand("/mcc-status");
		const status = pi.ui.notifications.at(-1)?.message ?? "";
		const line = status.split("\n").find((l) => /\bwork:/.test(l)) ?? "";
		expect(line).toMatch(/5h 42% \(resets in (1 h 59 min|2 h 0 min)\)/);
		expect(line).toMatch(/7d 90% \(resets in 5 days\)/);
		for (const pair of Object.values(accounts)) expect(status).not.toContain(pair.access);
	});

	it("ignores malformed figures without failing the request", async () => {
		const pi = await setup({
			work: ok("answer from work", {
				headers: {
					"anthropic-ratelimit-unified-5h-utilization": "a lot",
					"anthropic-ratelimit-unified-reset": "soon",
					"anthropic-ratelimit-unified-7d-utilization": "0.25",
				},
			}),
		});
		const before = Date.now();
		const result = await pi.prompt("hello");
		expect(result.text).toBe("answer from work");
		const usage = await usageSavedSince(before);
		expect(usage.windows).toEqual({ "7d": { utilization: 0.25 } });
		expect(usage.resetsAt).toBeUndefined();
	});
});

describe("cooldowns that end when the limit resets", () => {
	it("cools a rate-limited account down until the unified reset the server gave", async () => {
		const reset = Math.floor(Date.now() / 1000) + 3 * 3600;
		const pi = await setup({ work: rateLimited({ retryAfterSec: 60, unifiedReset: reset }) });
		const result = await pi.prompt("hello");
		expect(result.text).toBe("answer from personal");
		expect((await readState()).cooldowns.work?.until).toBe(reset * 1000);
	});
});

describe("early fallback (opt-in per source account)", () => {
	it("is off by default: a nearly exhausted account still answers", async () => {
		const pi = await setup({ work: ok("answer from work", { headers: usageHeaders("0.97", "0.5") }) });
		await pi.prompt("first");
		world().api.clearRequests();
		const result = await pi.prompt("second");
		expect(result.text).toBe("answer from work");
		expect(asked()).toEqual(["work"]);
	});

	it("once set with /mcc-fallback --early, sends requests along the source's own list past the threshold", async () => {
		const pi = await setup({ work: ok("answer from work", { headers: usageHeaders("0.97", "0.5") }) });
		await pi.runCommand("/mcc-fallback work --early 95");
		expect(pi.ui.notifications.at(-1)?.type).toBe("info");
		await pi.prompt("first");
		world().api.clearRequests();
		const result = await pi.prompt("second");
		expect(result.text).toBe("answer from personal");
		expect(asked()).toEqual(["personal"]);
	});

	it("refuses a threshold outside 50–100 % and changes nothing", async () => {
		const pi = await setup({});
		await pi.runCommand("/mcc-fallback work --early 20");
		expect(pi.ui.notifications.at(-1)?.type).toBe("warning");
		await pi.runCommand("/mcc-fallback work --early off");
		expect(pi.ui.notifications.at(-1)?.message).toMatch(/only when Anthropic refuses/);
	});
});
