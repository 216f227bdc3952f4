/**
 * pi 0.73's response capture (src/provider/response-capture.ts): pi-ai 0.73's Anthropic client takes no fetch, so
 * the extension's requests carry a marker header that the one process-wide fetch wrapper records by, and takes off
 * before the request leaves. Real pi-ai streaming over real HTTP to the fake Messages API on 127.0.0.1, the request
 * path over real config and state files; the broker over the in-memory secret store. (pi-ai 1.x takes a fetch per
 * request instead: that path is tested in request-path.test.ts and end to end on both lines.)
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
	type Api,
	type AssistantMessageEvent,
	createAssistantMessageEventStream,
	getModels,
	type Model,
	streamSimpleAnthropic,
} from "@mariozechner/pi-ai";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { serializeCredentials } from "../src/broker/credentials.ts";
import type { Core } from "../src/core.ts";
import { streamInto } from "../src/provider/multi-account-stream.ts";
import { CAPTURE_HEADER, markedCapture } from "../src/provider/response-capture.ts";
import { SessionAccount } from "../src/session/session-account.ts";
import { readSettings } from "../src/settings.ts";
import { type FakeAnthropicApi, ok, rateLimited, startFakeAnthropicApi } from "./helpers/fake-anthropic-api.ts";
import { newAccessToken, newRefreshToken } from "./helpers/fake-token-endpoint.ts";
import { memoryCore } from "./helpers/memory-broker.ts";
import { MemorySecretStore } from "./helpers/memory-secret-store.ts";

let dir: string;
let api: FakeAnthropicApi;
let core: Core;
const tokens = new Map<string, string>();

beforeEach(async () => {
	dir = mkdtempSync(join(tmpdir(), "pi-mcc-capture-"));
	api = await startFakeAnthropicApi();
	const settings = readSettings({ PI_CODING_AGENT_DIR: dir, HOME: dir, PI_MCC_ANTHROPIC_BASE_URL: api.baseUrl });
	const secrets = new MemorySecretStore();
	core = memoryCore(settings, secrets);
	await core.config.update((config) => {
		config.accounts = [
			{ label: "work", fallbackTo: ["home"] },
			{ label: "home", fallbackTo: [] },
		];
		return { next: config, result: undefined };
	});
	for (const label of ["work", "home"]) {
		const access = newAccessToken();
		const expires = Date.now() + 8 * 60 * 60 * 1000;
		secrets.items.set(label, serializeCredentials({ access, refresh: newRefreshToken(), expires }));
		tokens.set(label, access);
	}
});

afterEach(async () => {
	await api.close();
	rmSync(dir, { recursive: true, force: true });
});

/** One request of a session on "work" through pi-ai 0.73's own streaming, as pi 0.73 makes it. */
async function request(): Promise<AssistantMessageEvent[]> {
	const session = new SessionAccount({ appendEntry: () => {} });
	session.choose("work", "chosen");
	const base = getModels("anthropic").find((entry) => entry.id === "claude-sonnet-4-5") as Model<Api>;
	const model = { ...base, provider: "multi-claude-code" } as Model<Api>;
	const out = createAssistantMessageEventStream();
	const context = { messages: [{ role: "user" as const, content: "hello", timestamp: Date.now() }] };
	const done = streamInto(
		{ core, delegate: streamSimpleAnthropic, perRequestFetch: false },
		session,
		model,
		context,
		undefined,
		out,
	);
	const events: AssistantMessageEvent[] = [];
	for await (const event of out) events.push(event);
	await done;
	return events;
}

describe("the response capture on pi-ai 0.73 (a marker header and one process-wide fetch wrapper)", () => {
	it("records a 429's headers, so its cooldown lasts until the reset Anthropic announced", async () => {
		const reset = Math.floor(Date.now() / 1000) + 2 * 60 * 60;
		api.script(tokens.get("work")!, rateLimited({ retryAfterSec: 120, unifiedReset: reset }));
		api.script(tokens.get("home")!, ok("answer from home"));
		const last = (await request()).at(-1);
		expect(last?.type).toBe("done");
		expect((await core.state.read()).cooldowns.work?.until).toBe(reset * 1000);
	});

	it("takes its marker off before the request leaves: Anthropic never sees it", async () => {
		api.script(tokens.get("work")!, ok("answer from work"));
		await request();
		expect(api.requests).toHaveLength(1);
		expect(api.requests[0]?.headers[CAPTURE_HEADER]).toBeUndefined();
		expect(Object.keys(api.requests[0]?.headers ?? {}).filter((name) => name.includes("multi-claude"))).toEqual([]);
	});

	it("takes a marker off a request whatever form its headers have, even once the marked call is over", async () => {
		const forms: Array<[string, () => RequestInit["headers"]]> = [
			["a Headers object", () => new Headers({ [CAPTURE_HEADER]: "gone", "x-other": "kept" })],
			[
				"pairs",
				() => [
					[CAPTURE_HEADER, "gone"],
					["x-other", "kept"],
				],
			],
			["a plain object in other letter case", () => ({ "X-Multi-Claude-Code-Capture": "gone", "x-other": "kept" })],
		];
		// Installs the process-wide wrapper, then ends the marked call: no record is left.
		markedCapture({}).release();
		for (const [form, headers] of forms) {
			const response = await fetch(`${api.baseUrl}/v1/messages`, {
				method: "POST",
				headers: headers(),
				body: "{}",
			});
			await response.text();
			const seen = api.requests.at(-1)?.headers ?? {};
			expect(
				Object.keys(seen).filter((name) => name.includes("multi-claude")),
				form,
			).toEqual([]);
			expect(seen["x-other"], form).toBe("kept");
		}
	});

	it("passes every other request of the process through unchanged, and records nothing for it", async () => {
		api.script(tokens.get("work")!, ok("answer from work"));
		await request();
		const before = await core.state.read();
		const other = newAccessToken();
		api.script(other, rateLimited({ retryAfterSec: 300 }));
		const response = await fetch(`${api.baseUrl}/v1/messages`, {
			method: "POST",
			headers: { authorization: `Bearer ${other}`, "content-type": "application/json", "x-other": "kept" },
			body: JSON.stringify({ model: "claude-sonnet-4-5", max_tokens: 1, messages: [] }),
		});
		await response.text();
		expect(response.status).toBe(429);
		expect(api.requests.at(-1)?.headers["x-other"]).toBe("kept");
		expect(await core.state.read()).toEqual(before);
	});
});
