/**
 * The request path (src/provider/multi-account-stream.ts) with in-memory parts: the broker over the memory secret
 * store and the scripted token endpoint, real config and state files in a temp dir, and a scripted delegate in
 * place of pi-ai's Anthropic streaming. The same behaviour is tested end to end in test/e2e/fallback.test.ts.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
	type Api,
	type AssistantMessage,
	type AssistantMessageEvent,
	createAssistantMessageEventStream,
	getModels,
	type Model,
	type SimpleStreamOptions,
} from "@mariozechner/pi-ai";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { serializeCredentials } from "../src/broker/credentials.ts";
import type { Core } from "../src/core.ts";
import { type AnthropicStreamFn, streamInto } from "../src/provider/multi-account-stream.ts";
import { PREFETCH_MAX_AGE_MS, SessionAccount } from "../src/session/session-account.ts";
import { readSettings } from "../src/settings.ts";
import { newAccessToken, newRefreshToken } from "./helpers/fake-token-endpoint.ts";
import { FakeClock, memoryCore } from "./helpers/memory-broker.ts";
import { MemorySecretStore } from "./helpers/memory-secret-store.ts";

const HOUR = 60 * 60 * 1000;
const START = Date.UTC(2026, 0, 15, 9, 0, 0);

/** What the scripted API answers one request with. */
type Reply =
	| { answer: string }
	| { status: number; headers?: Record<string, string>; message: string }
	| { partial: string; error: string };

/** pi-ai's Anthropic streaming, scripted per token: records each call and answers from a queue per account. */
class ScriptedApi {
	readonly calls: Array<{ label: string; options: SimpleStreamOptions | undefined; model: Model<Api> }> = [];
	private readonly replies = new Map<string, Reply[]>();
	private readonly labels = new Map<string, string>();

	constructor(private readonly now: () => number) {}

	account(label: string, token: string): void {
		this.labels.set(token, label);
	}

	reply(label: string, ...replies: Reply[]): void {
		this.replies.set(label, [...(this.replies.get(label) ?? []), ...replies]);
	}

	readonly delegate: AnthropicStreamFn = (model, _context, options) => {
		const out = createAssistantMessageEventStream();
		const label = this.labels.get(options?.apiKey ?? "") ?? "unknown token";
		this.calls.push({ label, options, model });
		const reply = this.replies.get(label)?.shift() ?? { answer: `answer from ${label}` };
		void this.play(reply, model, options, out);
		return out;
	};

	private async play(
		reply: Reply,
		model: Model<Api>,
		options: SimpleStreamOptions | undefined,
		out: ReturnType<typeof createAssistantMessageEventStream>,
	): Promise<void> {
		// The HTTP exchange goes through the request's own fetch, as pi-ai 1.x does: that is where status and
		// headers are captured.
		const status = "status" in reply ? reply.status : 200;
		const headers = "status" in reply ? (reply.headers ?? {}) : {};
		const fetch = (options as { fetch?: typeof globalThis.fetch } | undefined)?.fetch;
		this.pending = { status, headers };
		await fetch?.("https://api.anthropic.test/v1/messages", { method: "POST" });
		// pi-ai reads the body before it reports a failure: a test may look at what happened meanwhile.
		await this.whileReadingBody?.();
		const message = (text: string, stopReason: AssistantMessage["stopReason"], error?: string): AssistantMessage => ({
			role: "assistant",
			content: text ? [{ type: "text", text }] : [],
			api: "anthropic-messages",
			provider: model.provider,
			model: model.id,
			usage: {
				input: 1,
				output: 1,
				cacheRead: 0,
				cacheWrite: 0,
				totalTokens: 2,
				cost: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0, total: 0 },
			},
			stopReason,
			...(error ? { errorMessage: error } : {}),
			timestamp: this.now(),
		});
		out.push({ type: "start", partial: message("", "stop") });
		if ("status" in reply) {
			out.push({ type: "error", reason: "error", error: message("", "error", `${reply.status} ${reply.message}`) });
		} else if ("partial" in reply) {
			out.push({ type: "text_start", contentIndex: 0, partial: message("", "stop") });
			out.push({
				type: "text_delta",
				contentIndex: 0,
				delta: reply.partial,
				partial: message(reply.partial, "stop"),
			});
			out.push({ type: "error", reason: "error", error: message(reply.partial, "error", reply.error) });
		} else {
			out.push({ type: "text_start", contentIndex: 0, partial: message("", "stop") });
			out.push({ type: "text_delta", contentIndex: 0, delta: reply.answer, partial: message(reply.answer, "stop") });
			out.push({ type: "text_end", contentIndex: 0, content: reply.answer, partial: message(reply.answer, "stop") });
			out.push({ type: "done", reason: "stop", message: message(reply.answer, "stop") });
		}
		out.end();
	}

	/** The fetch pi hands the provider; the scripted exchange answers it with the reply's status and headers. */
	readonly fetch: typeof globalThis.fetch = async () => {
		const { status, headers } = this.pending ?? { status: 200, headers: {} };
		return new Response(null, { status, headers });
	};
	private pending: { status: number; headers: Record<string, string> } | undefined;
	/** Runs between a response head and the events pi-ai makes of it. */
	whileReadingBody: (() => Promise<void>) | undefined;
}

interface World {
	dir: string;
	core: Core;
	store: MemorySecretStore;
	clock: FakeClock;
	api: ScriptedApi;
	tokens: Map<string, string>;
	session: SessionAccount;
	entries: Array<{ label: string; source: string }>;
	/** Adds accounts (all logged in, tokens fresh for 8 h) and their fallback lists. */
	accounts(spec: Record<string, string[]>, activeLabel?: string): Promise<void>;
	request(options?: SimpleStreamOptions): Promise<{ text: string; error?: string; events: AssistantMessageEvent[] }>;
}

let world: World;

beforeEach(() => {
	const dir = mkdtempSync(join(tmpdir(), "pi-mcc-request-"));
	const settings = readSettings({ PI_CODING_AGENT_DIR: dir, HOME: dir });
	const clock = new FakeClock(START);
	const store = new MemorySecretStore();
	const core = memoryCore(settings, store, clock);
	const api = new ScriptedApi(() => clock.now());
	const tokens = new Map<string, string>();
	const entries: World["entries"] = [];
	const session = new SessionAccount({ appendEntry: (_type, data) => void entries.push(data as never) });
	const model = getModels("anthropic").find((entry) => entry.id === "claude-sonnet-4-5") as Model<Api>;
	world = {
		dir,
		core,
		store,
		clock,
		api,
		tokens,
		session,
		entries,
		async accounts(spec, activeLabel) {
			await core.config.update((config) => {
				config.accounts = Object.entries(spec).map(([label, fallbackTo]) => ({ label, fallbackTo }));
				if (activeLabel) config.activeLabel = activeLabel;
				return { next: config, result: undefined };
			});
			for (const label of Object.keys(spec)) {
				const access = newAccessToken();
				store.items.set(
					label,
					serializeCredentials({ access, refresh: newRefreshToken(), expires: clock.now() + 8 * HOUR }),
				);
				tokens.set(label, access);
				api.account(label, access);
			}
		},
		async request(options) {
			const out = createAssistantMessageEventStream();
			const deps = { core, delegate: api.delegate, perRequestFetch: true, now: () => clock.now() };
			const context = { messages: [{ role: "user" as const, content: "hello", timestamp: clock.now() }] };
			const withFetch = { ...options, fetch: api.fetch } as SimpleStreamOptions;
			const done = streamInto(deps, session, { ...model, provider: "multi-claude-code" }, context, withFetch, out);
			const events: AssistantMessageEvent[] = [];
			for await (const event of out) events.push(event);
			await done;
			const last = events.at(-1);
			const message = last?.type === "done" ? last.message : last?.type === "error" ? last.error : undefined;
			const text = (message?.content ?? []).map((block) => (block.type === "text" ? block.text : "")).join("");
			return { text, ...(message?.errorMessage ? { error: message.errorMessage } : {}), events };
		},
	};
});

afterEach(() => {
	rmSync(world.dir, { recursive: true, force: true });
});

/** Scripts account `label` to answer HTTP `status` with `headers`, in the reply and in the captured response. */
function refuse(label: string, status: number, headers: Record<string, string> = {}): void {
	world.api.reply(label, { status, headers, message: status === 429 ? "rate_limit_error" : "overloaded_error" });
}

async function cooldownOf(label: string): Promise<number | undefined> {
	return (await world.core.state.read()).cooldowns[label]?.until;
}

describe("a request of a session", () => {
	it("starts from the session's own account and carries its token", async () => {
		await world.accounts({ work: [], home: [] }, "home");
		world.session.choose("work", "chosen");
		const result = await world.request();
		expect(result.text).toBe("answer from work");
		expect(world.api.calls.map((call) => call.label)).toEqual(["work"]);
		expect(world.api.calls[0]?.options?.apiKey).toBe(world.tokens.get("work"));
	});

	it("of a session without an account yet adopts the default for new sessions and records it", async () => {
		await world.accounts({ work: [], home: [] }, "home");
		expect((await world.request()).text).toBe("answer from home");
		expect(world.entries).toEqual([{ label: "home", source: "default" }]);
	});

	it("passes pi's options and hooks through unchanged, with only the token and the SDK retries replaced", async () => {
		await world.accounts({ work: [] });
		const onPayload = (payload: unknown): unknown => payload;
		const signal = new AbortController().signal;
		await world.request({ onPayload, signal, sessionId: "s-1", maxTokens: 777, apiKey: "placeholder" });
		const options = world.api.calls[0]?.options as SimpleStreamOptions & { fetch?: unknown };
		expect(options.onPayload).toBe(onPayload);
		expect(options.signal).toBe(signal);
		expect(options.sessionId).toBe("s-1");
		expect(options.maxTokens).toBe(777);
		expect(options.maxRetries).toBe(0);
		expect(options.apiKey).toBe(world.tokens.get("work"));
		expect(typeof options.fetch).toBe("function");
		expect(world.api.calls[0]?.model.api).toBe("anthropic-messages");
	});

	it("fails with the fix when there is no account at all", async () => {
		const result = await world.request();
		expect(result.error).toContain("/mcc-login <label>");
		expect(world.api.calls).toHaveLength(0);
	});

	it("whose account was removed fails and says how to fix it, and never uses another account", async () => {
		await world.accounts({ work: [], home: [] });
		world.session.choose("gone", "chosen");
		const result = await world.request();
		expect(result.error).toContain('this session\'s account "gone" was removed');
		expect(result.error).toContain("/mcc-use <label>");
		expect(world.api.calls).toHaveLength(0);
	});
});

describe("fallback on a rate limit before any content", () => {
	it("cools the account down and retries on the next account of the origin's own list", async () => {
		await world.accounts({ work: ["home", "side"], home: [], side: [] });
		world.session.choose("work", "chosen");
		refuse("work", 429, { "retry-after": "120" });
		const result = await world.request();
		expect(result.text).toBe("answer from home");
		expect(world.api.calls.map((call) => call.label)).toEqual(["work", "home"]);
		expect(await cooldownOf("work")).toBe(START + 120_000);
	});

	it("starts the cooldown write and the next account's token read as soon as the 429's head arrives", async () => {
		await world.accounts({ work: ["home"], home: [] });
		world.session.choose("work", "chosen");
		refuse("work", 429, { "retry-after": "120" });
		let seen: { homeReads: number; cooldown: number | undefined } | undefined;
		world.api.whileReadingBody = async () => {
			world.api.whileReadingBody = undefined;
			const homeReads = world.store.count("get", "home");
			// The write is under way (its lock, read and rename take a few event-loop turns): bounded wait.
			for (let i = 0; i < 200 && (await cooldownOf("work")) === undefined; i++) {
				await new Promise((resolve) => setTimeout(resolve, 5));
			}
			seen = { homeReads, cooldown: await cooldownOf("work") };
		};
		expect((await world.request()).text).toBe("answer from home");
		expect(seen).toEqual({ homeReads: 1, cooldown: START + 120_000 });
		expect(world.store.count("get", "home")).toBe(1);
	});

	it("is not transitive: a hop does not follow the list of the account it hopped to", async () => {
		await world.accounts({ work: ["home"], home: ["side"], side: [] });
		world.session.choose("work", "chosen");
		refuse("work", 429);
		refuse("home", 429);
		const result = await world.request();
		expect(world.api.calls.map((call) => call.label)).toEqual(["work", "home"]);
		expect(result.error).toContain('every account allowed for "work" is rate-limited or overloaded (work, home)');
	});

	it("is directional: the target's session never reaches the source", async () => {
		await world.accounts({ work: ["home"], home: [] });
		world.session.choose("home", "chosen");
		refuse("home", 429);
		const result = await world.request();
		expect(world.api.calls.map((call) => call.label)).toEqual(["home"]);
		expect(result.error).toContain("It has no usable fallback; see /mcc-fallback home.");
	});

	it("takes at most five hops after the origin", async () => {
		const targets = ["a1", "a2", "a3", "a4", "a5", "a6"];
		await world.accounts({ work: targets, ...Object.fromEntries(targets.map((label) => [label, []])) });
		world.session.choose("work", "chosen");
		for (const label of ["work", ...targets]) refuse(label, 429);
		await world.request();
		expect(world.api.calls.map((call) => call.label)).toEqual(["work", "a1", "a2", "a3", "a4", "a5"]);
	});

	it("treats an overload (529) like a rate limit", async () => {
		await world.accounts({ work: ["home"], home: [] });
		world.session.choose("work", "chosen");
		refuse("work", 529);
		const result = await world.request();
		expect(result.text).toBe("answer from home");
		expect((await world.core.state.read()).cooldowns.work?.reason).toBe("overloaded");
	});

	it("goes straight to the first available fallback while the origin cools down", async () => {
		await world.accounts({ work: ["home"], home: [] });
		world.session.choose("work", "chosen");
		await world.core.state.update((state) => {
			state.cooldowns.work = { until: START + HOUR, reason: "rate_limit", setAt: START };
			return { next: state, result: undefined };
		});
		const result = await world.request();
		expect(result.text).toBe("answer from home");
		expect(world.api.calls.map((call) => call.label)).toEqual(["home"]);
	});

	it("never replaces a revoked origin, even one that cools down", async () => {
		await world.accounts({ work: ["home"], home: [] });
		world.session.choose("work", "chosen");
		await world.core.state.update((state) => {
			state.cooldowns.work = { until: START + HOUR, reason: "rate_limit", setAt: START };
			return { next: state, result: undefined };
		});
		world.store.items.delete("work");
		const result = await world.request();
		expect(result.error).toContain('Account "work" has no item');
		expect(result.error).toContain("/mcc-login work");
		expect(world.api.calls).toHaveLength(0);
	});

	it("skips a fallback target that cannot be used and says so", async () => {
		await world.accounts({ work: ["home", "side"], home: [], side: [] });
		world.session.choose("work", "chosen");
		world.store.items.delete("home");
		refuse("work", 429);
		const result = await world.request();
		expect(result.text).toBe("answer from side");
		expect(world.api.calls.map((call) => call.label)).toEqual(["work", "side"]);
	});

	it("is not triggered by a refused token (401): that account must log in again", async () => {
		await world.accounts({ work: ["home"], home: [] });
		world.session.choose("work", "chosen");
		world.api.reply("work", { status: 401, message: "authentication_error" });
		const result = await world.request();
		expect(world.api.calls.map((call) => call.label)).toEqual(["work"]);
		expect(result.error).toContain("Run /mcc-login work to log in again.");
		expect(await cooldownOf("work")).toBeUndefined();
	});

	it("does not happen once content has streamed: the error passes through with the partial answer", async () => {
		await world.accounts({ work: ["home"], home: [] });
		world.session.choose("work", "chosen");
		world.api.reply("work", { partial: "half an ans", error: "429 rate_limit_error" });
		const result = await world.request();
		expect(world.api.calls.map((call) => call.label)).toEqual(["work"]);
		expect(result.text).toBe("half an ans");
		expect(result.error).toBe("429 rate_limit_error");
		expect(result.events.map((event) => event.type)).toEqual(["start", "text_start", "text_delta", "error"]);
	});

	it("never sends a cache-warming replay to another account", async () => {
		await world.accounts({ work: ["home"], home: [] });
		world.session.choose("work", "chosen");
		refuse("work", 429);
		const replay = { maxTokens: 1, disableContinuation: true } as SimpleStreamOptions;
		const result = await world.request(replay);
		expect(world.api.calls.map((call) => call.label)).toEqual(["work"]);
		expect(result.error).toContain("rate-limited");
	});

	it("does not continue the session's server-side thread on another account than the last to answer", async () => {
		await world.accounts({ work: ["home"], home: [] });
		world.session.choose("work", "chosen");
		await world.request();
		refuse("work", 429);
		await world.request();
		const [first, limited, fallback] = world.api.calls.map(
			(call) => (call.options as { disableContinuation?: boolean }).disableContinuation,
		);
		expect([first, limited, fallback]).toEqual([undefined, undefined, true]);
	});
});

describe("the token read started at the turn's start", () => {
	it("serves the turn's request instead of a second keychain read", async () => {
		await world.accounts({ work: [] });
		world.session.choose("work", "chosen");
		world.session.prefetch(world.core.broker, world.clock.now());
		const reads = world.store.count("get", "work");
		expect((await world.request()).text).toBe("answer from work");
		expect(world.store.count("get", "work")).toBe(reads);
	});

	it("serves one request only, and is read again when it is older than the bound", async () => {
		await world.accounts({ work: [] });
		world.session.choose("work", "chosen");
		world.session.prefetch(world.core.broker, world.clock.now());
		await world.request();
		const afterFirst = world.store.count("get", "work");
		await world.request();
		expect(world.store.count("get", "work")).toBe(afterFirst + 1);
		world.session.prefetch(world.core.broker, world.clock.now());
		world.clock.advance(PREFETCH_MAX_AGE_MS + 1);
		const beforeStale = world.store.count("get", "work");
		await world.request();
		expect(world.store.count("get", "work")).toBe(beforeStale + 1);
	});

	it("can be waited for before the request: it settles once the read is in, and never rejects", async () => {
		await world.accounts({ work: [] });
		world.session.choose("work", "chosen");
		await expect(world.session.prefetchSettled()).resolves.toBeUndefined();
		world.store.items.delete("work");
		world.session.prefetch(world.core.broker, world.clock.now());
		await expect(world.session.prefetchSettled()).resolves.toBeUndefined();
		const reads = world.store.count("get", "work");
		expect((await world.request()).error).toContain('Account "work" has no item');
		expect(world.store.count("get", "work")).toBe(reads);
	});

	it("sees a deletion made before the turn began: the revoked account is never used", async () => {
		await world.accounts({ work: ["home"], home: [] });
		world.session.choose("work", "chosen");
		world.store.items.delete("work");
		world.session.prefetch(world.core.broker, world.clock.now());
		const result = await world.request();
		expect(result.error).toContain('Account "work" has no item');
		expect(world.api.calls).toHaveLength(0);
	});
});

describe("a broken shared state file", () => {
	it("left empty (a power cut after an unflushed write) does not block a request, and its 429's cooldown replaces it", async () => {
		await world.accounts({ work: ["home"], home: [] });
		world.session.choose("work", "chosen");
		writeFileSync(world.core.paths.stateFile, "", { mode: 0o600 });
		refuse("work", 429, { "retry-after": "120" });
		expect((await world.request()).text).toBe("answer from home");
		expect(await cooldownOf("work")).toBe(START + 120_000);
	});

	it("that cannot be parsed does not block a request, and stays untouched", async () => {
		await world.accounts({ work: ["home"], home: [] });
		world.session.choose("work", "chosen");
		const torn = '{"version":1,"cooldowns":{"wo';
		writeFileSync(world.core.paths.stateFile, torn, { mode: 0o600 });
		refuse("work", 429, { "retry-after": "120" });
		expect((await world.request()).text).toBe("answer from home");
		expect(readFileSync(world.core.paths.stateFile, "utf8")).toBe(torn);
	});
});
