/**
 * A Messages API (or a proxy in front of it) that answers a request with a redirect, in the real pi runtime: the
 * request carries the account's access token, so it is never resent where the redirect points. The second server
 * is a real HTTP server on 127.0.0.1 that would receive the token if the extension let it go there.
 */
import { createServer } from "node:http";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type AccountTokens, setupAccounts } from "../helpers/accounts.ts";
import { useE2eWorld } from "../helpers/e2e-world.ts";
import { httpError, ok } from "../helpers/fake-anthropic-api.ts";
import { type LoopbackServer, serveOnLoopback } from "../helpers/loopback.ts";

const world = useE2eWorld();
let elsewhere: { server: LoopbackServer; requests: Array<{ url?: string; authorization?: string }> };
let accounts: Record<string, AccountTokens>;

beforeEach(async () => {
	const requests: Array<{ url?: string; authorization?: string }> = [];
	const server = createServer((req, res) => {
		requests.push({ url: req.url, authorization: req.headers.authorization });
		res.writeHead(500).end();
	});
	elsewhere = { server: await serveOnLoopback(server), requests };
	accounts = await setupAccounts({
		accounts: [{ label: "work", fallbackTo: ["home"] }, { label: "home" }],
		active: "work",
		tokens: world().tokens,
	});
	world().api.script(accounts.home!.access, ok("answer from home"));
});

afterEach(async () => {
	await elsewhere.server.close();
});

describe("a Messages API that answers with a redirect", () => {
	for (const status of [307, 308]) {
		it(`(${status}) to another server: that server sees no request, and the error says why and what to check`, async () => {
			const target = `http://127.0.0.1:${elsewhere.server.port}/v1/messages?leak=1`;
			world().api.script(accounts.work!.access, httpError(status, "api_error", "moved", { location: target }));
			const pi = await world().start();
			const result = await pi.prompt("hello");
			expect(result.stopReason).toBe("error");
			expect(result.errorMessage).toContain(
				`answered with a redirect (HTTP ${status} to http://127.0.0.1:${elsewhere.server.port}/v1/messages)`,
			);
			expect(result.errorMessage).toContain("nothing was sent where it points");
			expect(result.errorMessage).toContain("PI_MCC_ANTHROPIC_BASE_URL");
			expect(result.errorMessage).not.toContain("leak=1");
			expect(result.errorMessage).not.toContain(accounts.work!.access);
			expect(elsewhere.requests).toEqual([]);
			// A redirect is not a rate limit: no fallback account is asked either.
			expect(world().api.requests.map((request) => request.token)).toEqual([accounts.work!.access]);
		});
	}
});
