import { describe, expect, it } from "vitest";
import type { AccountsConfig } from "../src/config/schema.ts";
import { type CooldownView, MAX_FALLBACK_HOPS, planAttempts } from "../src/provider/fallback-policy.ts";

function config(chains: Record<string, string[]>): AccountsConfig {
	return {
		version: 1,
		accounts: Object.entries(chains).map(([label, fallbackTo]) => ({ label, fallbackTo })),
	};
}

function cooling(...labels: string[]): CooldownView {
	return { until: (label) => (labels.includes(label) ? Date.now() + 60_000 : undefined) };
}

const chains = config({ enterprise: ["personal", "side"], personal: ["side"], side: [] });

describe("directional fallback plan", () => {
	it("the origin comes first, then its own list in order", () => {
		expect(planAttempts("enterprise", chains, cooling())).toEqual(["enterprise", "personal", "side"]);
	});

	it("an account with no list is tried alone: it fails on its own limit", () => {
		expect(planAttempts("side", chains, cooling())).toEqual(["side"]);
	});

	it("chains are not transitive: personal never reaches enterprise", () => {
		expect(planAttempts("personal", chains, cooling())).toEqual(["personal", "side"]);
		expect(planAttempts("personal", chains, cooling())).not.toContain("enterprise");
	});

	it("accounts cooling down are skipped", () => {
		expect(planAttempts("enterprise", chains, cooling("personal"))).toEqual(["enterprise", "side"]);
	});

	it("a cooling origin goes straight to its first available fallback", () => {
		expect(planAttempts("enterprise", chains, cooling("enterprise"))).toEqual(["personal", "side"]);
	});

	it("a cooling origin with nothing else available is still tried, its limit may have reset", () => {
		expect(planAttempts("side", chains, cooling("side"))).toEqual(["side"]);
		expect(planAttempts("enterprise", chains, cooling("enterprise", "personal", "side"))).toEqual(["enterprise"]);
	});

	it(`at most ${MAX_FALLBACK_HOPS} hops follow the origin`, () => {
		const many = config({ a: ["b", "c", "d", "e", "f", "g", "h"], b: [], c: [], d: [], e: [], f: [], g: [], h: [] });
		const plan = planAttempts("a", many, cooling());
		expect(plan).toEqual(["a", "b", "c", "d", "e", "f"]);
		expect(plan.length - 1).toBe(MAX_FALLBACK_HOPS);
	});

	it("a list entry for an account that no longer exists is ignored", () => {
		const stale: AccountsConfig = {
			version: 1,
			accounts: [
				{ label: "a", fallbackTo: ["gone", "b"] },
				{ label: "b", fallbackTo: [] },
			],
		};
		expect(planAttempts("a", stale, cooling())).toEqual(["a", "b"]);
	});
});
