/**
 * The fake Messages API must look to pi-ai exactly like Anthropic does, or the end-to-end tests prove nothing.
 * These tests drive pi-ai's own Anthropic provider (the code the extension delegates to) against it.
 */
import { type AssistantMessage, type Context, getModel, type Model, streamSimpleAnthropic } from "@mariozechner/pi-ai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
	type Behaviour,
	type FakeAnthropicApi,
	midStreamFailure,
	ok,
	overloaded,
	rateLimited,
	sseErrorBeforeContent,
	startFakeAnthropicApi,
	unauthorized,
	windowless429,
} from "../helpers/fake-anthropic-api.ts";

let api: FakeAnthropicApi;
let model: Model<"anthropic-messages">;
let counter = 0;

beforeAll(async () => {
	api = await startFakeAnthropicApi();
	model = { ...getModel("anthropic", "claude-sonnet-4-5"), baseUrl: api.baseUrl };
});

afterAll(async () => {
	await api.close();
});

interface Outcome {
	message: AssistantMessage;
	events: string[];
	response: { status: number; headers: Record<string, string> } | undefined;
	token: string;
}

async function call(behaviour: Behaviour): Promise<Outcome> {
	const token = `sk-ant-oat01-selftest-${++counter}`;
	api.script(token, behaviour);
	const context: Context = { messages: [{ role: "user", content: "hello", timestamp: Date.now() }] };
	let response: Outcome["response"];
	const stream = streamSimpleAnthropic(model, context, {
		apiKey: token,
		maxRetries: 0,
		onResponse: (r) => {
			response = { status: r.status, headers: r.headers };
		},
	});
	const events: string[] = [];
	for await (const event of stream) events.push(event.type);
	return { message: await stream.result(), events, response, token };
}

describe("the fake Anthropic API as pi-ai's Anthropic provider sees it", () => {
	it("streams a scripted answer that pi-ai assembles into a complete assistant message", async () => {
		const { message, events, token } = await call(ok("Hello from the fake API"));
		expect(message.stopReason).toBe("stop");
		expect(message.errorMessage).toBeUndefined();
		expect(message.content).toEqual([{ type: "text", text: "Hello from the fake API" }]);
		expect(events[0]).toBe("start");
		expect(events).toContain("text_delta");
		expect(events.at(-1)).toBe("done");
		expect(message.usage.input).toBeGreaterThan(0);
		const [request] = api.requestsFor(token);
		expect(request?.path).toBe("/v1/messages");
		expect(request?.model).toBe("claude-sonnet-4-5");
		expect(request?.stream).toBe(true);
	});

	it("records the bearer token and the Claude Code headers pi-ai sends for an OAuth token", async () => {
		const { token } = await call(ok("hi"));
		const [request] = api.requestsFor(token);
		expect(request?.authScheme).toBe("bearer");
		expect(request?.headers.authorization).toBe(`Bearer ${token}`);
		expect(request?.headers["x-api-key"]).toBeUndefined();
		expect(String(request?.headers["anthropic-beta"])).toMatch(/^claude-code-20250219,oauth-2025-04-20/);
		expect(request?.headers["x-app"]).toBe("cli");
	});

	it("reports an HTTP 429 as '429 <json body>' with no response headers visible through onResponse", async () => {
		const { message, events, response, token } = await call(rateLimited({ retryAfterSec: 30 }));
		expect(message.stopReason).toBe("error");
		expect(message.errorMessage).toMatch(/^429 \{"type":"error","error":\{"type":"rate_limit_error"/);
		expect(message.content).toEqual([]);
		expect(events).toEqual(["error"]);
		// The Anthropic SDK throws before pi-ai's onResponse hook runs: retry-after is not reachable that way.
		expect(response).toBeUndefined();
		expect(api.requestsFor(token)).toHaveLength(1);
	});

	it("answers a windowless 429 with only x-should-retry, which maxRetries 0 does not retry", async () => {
		const { message, token } = await call(windowless429());
		expect(message.errorMessage).toMatch(/^429 .*rate_limit_error/);
		expect(api.requestsFor(token)).toHaveLength(1);
	});

	it("reports an HTTP 529 as '529 <json>' naming overloaded_error", async () => {
		const { message, token } = await call(overloaded());
		expect(message.stopReason).toBe("error");
		expect(message.errorMessage).toMatch(/^529 .*overloaded_error/);
		expect(api.requestsFor(token)).toHaveLength(1);
	});

	it("reports an HTTP 401 as '401 <json>' naming authentication_error", async () => {
		const { message } = await call(unauthorized());
		expect(message.errorMessage).toMatch(/^401 .*authentication_error/);
	});

	it("reports an SSE rate_limit_error before content as the bare event JSON, after a 200 response", async () => {
		const { message, events, response } = await call(sseErrorBeforeContent("rate_limit_error"));
		expect(message.stopReason).toBe("error");
		expect(message.errorMessage).toBe(
			'{"type":"error","error":{"type":"rate_limit_error","message":"Rate limited."}}',
		);
		expect(message.content).toEqual([]);
		expect(events).toEqual(["start", "error"]);
		expect(response?.status).toBe(200);
		expect(response?.headers["anthropic-ratelimit-unified-status"]).toBe("allowed");
	});

	it("reports an SSE overloaded_error before content as the bare event JSON", async () => {
		const { message } = await call(sseErrorBeforeContent("overloaded_error"));
		expect(message.errorMessage).toContain('"type":"overloaded_error"');
		expect(message.content).toEqual([]);
	});

	it("keeps the streamed text when an error event arrives mid-stream", async () => {
		const { message, events } = await call(midStreamFailure("Partial answer so far"));
		expect(message.stopReason).toBe("error");
		expect(message.content).toEqual([{ type: "text", text: "Partial answer so far" }]);
		expect(events).toContain("text_delta");
		expect(message.errorMessage).toContain("overloaded_error");
	});

	it("keeps the streamed text when the connection drops mid-stream", async () => {
		const { message } = await call(midStreamFailure("Cut off here", { how: "close" }));
		expect(message.stopReason).toBe("error");
		expect(message.content).toEqual([{ type: "text", text: "Cut off here" }]);
		expect(message.errorMessage).toBe("terminated");
	});

	it("answers a token without a script with 401, and plays a scripted sequence in order", async () => {
		expect(() => api.script("sk-ant-oat01-empty", [])).toThrow();
		const token = "sk-ant-oat01-sequence";
		api.script(token, [rateLimited(), ok("second")]);
		const context: Context = { messages: [{ role: "user", content: "hi", timestamp: Date.now() }] };
		const results: Array<string | undefined> = [];
		for (let i = 0; i < 3; i++) {
			const message = await streamSimpleAnthropic(model, context, { apiKey: token, maxRetries: 0 }).result();
			results.push(
				message.errorMessage ? "error" : message.content[0]?.type === "text" ? message.content[0].text : "",
			);
		}
		expect(results).toEqual(["error", "second", "second"]);
		const strangerOptions = { apiKey: "sk-ant-oat01-nobody", maxRetries: 0 };
		const stranger = await streamSimpleAnthropic(model, context, strangerOptions).result();
		expect(stranger.errorMessage).toMatch(/^401 /);
	});

	it("delays the first byte when asked to", async () => {
		const started = Date.now();
		const { message } = await call(ok("slow", { delayMs: 300 }));
		expect(message.stopReason).toBe("stop");
		expect(Date.now() - started).toBeGreaterThanOrEqual(280);
	});
});
