import { describe, expect, it } from "vitest";
import { classifyFailure, DEFAULT_COOLDOWN_MS } from "../src/provider/fallback-policy.ts";
import { parseResetTime, parseRetryAfter } from "../src/provider/usage.ts";

const now = Date.parse("2026-11-24T12:00:00Z");
const body429 =
	'429 {"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed your rate limit"}}';

describe("rate-limit signals", () => {
	it("an HTTP 429 with retry-after cools the account down for that long", () => {
		const result = classifyFailure({ status: 429, headers: { "retry-after": "120" }, errorMessage: body429 }, now);
		expect(result).toEqual({ kind: "rate_limit", cooldownUntil: now + 120_000, cooldownSource: "retry-after" });
	});

	it("the unified reset header wins over retry-after: it is when the limit really resets", () => {
		const reset = String(Math.floor(now / 1000) + 3 * 3600);
		const result = classifyFailure(
			{ status: 429, headers: { "retry-after": "10", "anthropic-ratelimit-unified-reset": reset } },
			now,
		);
		expect(result.cooldownUntil).toBe(Number(reset) * 1000);
		expect(result.cooldownSource).toBe("unified-reset");
	});

	it("a windowless 429 (only x-should-retry) is a rate limit with the default one-hour cooldown", () => {
		const result = classifyFailure({ status: 429, headers: { "x-should-retry": "true" } }, now);
		expect(result).toEqual({
			kind: "rate_limit",
			cooldownUntil: now + DEFAULT_COOLDOWN_MS,
			cooldownSource: "default",
		});
	});

	it("a 429 known only from pi-ai's error text is still a rate limit", () => {
		expect(classifyFailure({ errorMessage: body429 }, now).kind).toBe("rate_limit");
	});

	it("529 and overloaded_error are overloads", () => {
		expect(classifyFailure({ status: 529 }, now).kind).toBe("overloaded");
		expect(
			classifyFailure({ status: 200, errorMessage: '{"type":"overloaded_error","message":"Overloaded"}' }, now).kind,
		).toBe("overloaded");
	});

	it("a rate_limit_error SSE event inside a 200 response is a rate limit", () => {
		const result = classifyFailure(
			{ status: 200, errorMessage: '{"type":"rate_limit_error","message":"limit"}' },
			now,
		);
		expect(result.kind).toBe("rate_limit");
	});

	it("401, 403 and invalid_grant mean log in again, never a fallback", () => {
		expect(classifyFailure({ status: 401, errorMessage: "401 authentication_error" }, now).kind).toBe("auth");
		expect(classifyFailure({ errorMessage: '403 {"error":{"type":"permission_error"}}' }, now).kind).toBe("auth");
		expect(classifyFailure({ errorMessage: "invalid_grant" }, now).kind).toBe("auth");
	});

	it("other failures are passed through", () => {
		expect(classifyFailure({ status: 500, errorMessage: "500 internal" }, now).kind).toBe("other");
		expect(classifyFailure({ errorMessage: "fetch failed" }, now).kind).toBe("other");
	});
});

describe("header parsing", () => {
	it("reset times in epoch seconds, epoch milliseconds and ISO dates are understood", () => {
		expect(parseResetTime("1795608000", now)).toBe(1795608000_000);
		expect(parseResetTime("1795608000000", now)).toBe(1795608000000);
		expect(parseResetTime("2026-11-24T13:00:00Z", now)).toBe(Date.parse("2026-11-24T13:00:00Z"));
	});

	it("malformed values are ignored", () => {
		expect(parseResetTime("soon", now)).toBeUndefined();
		expect(parseRetryAfter("later", now)).toBeUndefined();
		expect(classifyFailure({ status: 429, headers: { "retry-after": "garbage" } }, now).cooldownSource).toBe(
			"default",
		);
	});

	it("a cooldown is never longer than eight days nor shorter than a second", () => {
		const far = classifyFailure({ status: 429, headers: { "retry-after": String(365 * 24 * 3600) } }, now);
		expect(far.cooldownUntil).toBe(now + 8 * 24 * 3600 * 1000);
		const zero = classifyFailure({ status: 429, headers: { "retry-after": "0" } }, now);
		expect(zero.cooldownUntil).toBe(now + 1000);
	});
});
