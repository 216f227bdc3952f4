import { describe, expect, it } from "vitest";
import type { UsageSnapshot } from "../src/config/schema.ts";
import { headlineText, parseUtilization, preemptionUntil, readUsageHeaders } from "../src/provider/usage.ts";

const now = Date.parse("2026-11-24T12:00:00Z");
const inSeconds = (s: number) => String(Math.floor(now / 1000) + s);

describe("rate-limit headers", () => {
	it("unified status, reset, representative claim and per-window figures are read", () => {
		const usage = readUsageHeaders(
			{
				"anthropic-ratelimit-unified-status": "allowed_warning",
				"anthropic-ratelimit-unified-reset": inSeconds(3600),
				"anthropic-ratelimit-unified-representative-claim": "five_hour",
				"anthropic-ratelimit-unified-5h-utilization": "0.42",
				"anthropic-ratelimit-unified-5h-reset": inSeconds(3600),
				"anthropic-ratelimit-unified-7d-utilization": "0.9",
				"content-type": "text/event-stream",
			},
			now,
		);
		expect(usage).toEqual({
			at: now,
			status: "allowed_warning",
			resetsAt: (Math.floor(now / 1000) + 3600) * 1000,
			representativeClaim: "five_hour",
			windows: {
				"5h": { utilization: 0.42, resetsAt: (Math.floor(now / 1000) + 3600) * 1000 },
				"7d": { utilization: 0.9 },
			},
		});
		// The representative window is the headline, even though another one is fuller.
		expect(headlineText(usage)).toBe("5h 42%");
	});

	it("responses without the headers record nothing", () => {
		expect(readUsageHeaders({ "content-type": "application/json" }, now)).toBeUndefined();
		expect(readUsageHeaders(undefined, now)).toBeUndefined();
	});

	it("unknown or malformed values are ignored, never a crash", () => {
		const usage = readUsageHeaders(
			{
				"anthropic-ratelimit-unified-5h-utilization": "lots",
				"anthropic-ratelimit-unified-7d-utilization": "-1",
				"anthropic-ratelimit-unified-status": "<script>",
				"anthropic-ratelimit-unified-reset": "tomorrow-ish",
				"anthropic-ratelimit-unified-overage-utilization": "0.1",
				"anthropic-ratelimit-unified-__proto__-utilization": "0.5",
			},
			now,
		);
		expect(usage?.windows).toEqual({ overage: { utilization: 0.1 } });
		expect(usage?.status).toBeUndefined();
		expect(Object.getPrototypeOf(usage?.windows)).toBe(Object.prototype);
		expect(({} as Record<string, unknown>).utilization).toBeUndefined();
		expect(parseUtilization("42")).toBe(0.42);
		expect(parseUtilization("420")).toBeUndefined();
	});

	it("without a representative claim the fullest window is the headline", () => {
		const usage: UsageSnapshot = { at: now, windows: { "5h": { utilization: 0.1 }, "7d": { utilization: 0.75 } } };
		expect(headlineText(usage)).toBe("7d 75%");
	});
});

describe("pre-emptive fallback (opt-in)", () => {
	const full: UsageSnapshot = { at: now, windows: { "5h": { utilization: 0.96, resetsAt: now + 600_000 } } };

	it("an account past its threshold counts as cooling until the window resets", () => {
		expect(preemptionUntil(0.95, full, now)).toBe(now + 600_000);
	});

	it("it is off unless configured, and below the threshold nothing changes", () => {
		expect(preemptionUntil(undefined, full, now)).toBeUndefined();
		expect(preemptionUntil(0.97, full, now)).toBeUndefined();
	});

	it("a window that has already reset no longer holds the account back", () => {
		expect(preemptionUntil(0.95, full, now + 700_000)).toBeUndefined();
	});
});
