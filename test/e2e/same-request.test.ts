/**
 * The same request as pi's own provider: for every model pi lists for `anthropic` and every thinking level pi
 * offers for it, a prompt through `multi-claude-code/<id>` reaches the Messages API as exactly the request pi's
 * built-in `anthropic/<id>` sends — the same body, byte for byte, and the same headers in the same order, on both
 * pi lines. Both providers talk to one fake Messages API with one OAuth-shaped token: pi holds it as its own
 * Claude Pro/Max login (in memory, test/helpers/pi-line.ts), the extension reads it from the keychain
 * (setupAccounts), and the agent dir's models.json points pi's anthropic provider at the fake API. The only header
 * left out of the comparison is the credential, and it is checked on its own (`Bearer <the same token>`).
 *
 * How: one real pi session (SDK, index.ts plus test/fixtures/request-probe.ts loaded) runs the whole grid. Per
 * model and level it selects `anthropic/<id>`, sets the level, and prompts with a text and a tiny PNG; the fake API
 * answers with a call of the fixture's tool (after a signed thinking block when thinking is on), pi runs the tool
 * (its result is text), and the second request carries the tool result. Then the same with
 * `multi-claude-code/<id>`. Both requests of each run are compared. So pi's own agent loop builds the context
 * (system prompt, tools, image, thinking block, tool result) on both lines, as it does for a person, rather than a
 * context built by hand for a line's stream function. Between runs the session goes back to the root
 * of its tree (as /tree does), so every run starts from the same empty conversation — in the same session, so
 * the session id, the system prompt and the tools are the same by construction, not by a field left out. pi's own
 * built-in tools are active, plus the fixture's. Nothing in either body or the headers is ignored.
 *
 * What the fake API cannot show: message threads (pi 1.x sends them only to api.anthropic.com) and server-side
 * fallbacks' answers; the request fields that enable them are compared all the same.
 *
 * Measured (0 differences on both lines):
 *   pi 0.73.1: 23 models, 89 model × level cases (2 requests each per provider: 178 request pairs compared)
 *   pi 1.6.0:  18 models, 104 model × level cases (208 request pairs)
 * The test prints the figures of the run as one line per pi line ("same request, pi …"). The grid took about 4 s
 * on 0.73.1 and 40 s on 1.6.0 on a loaded 2-core machine (pi 1.x processes the prompt's image every time).
 *
 * pi's request hooks pass through our provider: before_provider_request (onPayload) sees and can replace its
 * payload, after_provider_response (onResponse) reports its successful response, provider_stream_event
 * (onProviderStreamEvent, pi 1.x only) reports its stream, and pi's abort closes its HTTP request. onResponse does
 * NOT fire for a 429, on either line (measured: 0 after_provider_response events for a 429, through our provider
 * and through pi's own, on pi 0.73.1 and on pi 1.6.0: the Anthropic SDK throws on a non-2xx status before pi-ai's
 * onResponse runs). So onResponse cannot replace response-capture.ts, which reads retry-after and the rate-limit
 * reset of a 429; the test asserting this fails the day a pi fires it, and then says so.
 */
import { promises as fs } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Api, ImageContent, Model } from "@mariozechner/pi-ai";
import { describe, expect, it, onTestFinished, vi } from "vitest";
import { PROBE_TOOL, requestProbe, TINY_PNG } from "../fixtures/request-probe.ts";
import { setupAccounts } from "../helpers/accounts.ts";
import { useE2eWorld } from "../helpers/e2e-world.ts";
import {
	type Behaviour,
	type FakeAnthropicApi,
	ok,
	type RecordedRequest,
	rateLimited,
	startFakeAnthropicApi,
	toolUse,
} from "../helpers/fake-anthropic-api.ts";
import { newAccessToken } from "../helpers/fake-token-endpoint.ts";
import { type PiSession, PROVIDER, waitFor, withTimeout } from "../helpers/pi-harness.ts";
import { piLine } from "../helpers/pi-line.ts";

const FIXTURE = fileURLToPath(new URL("../fixtures/request-probe.ts", import.meta.url));
const BUILTIN = "anthropic";
/**
 * Per pi version: how many Anthropic models it lists, and how many model × thinking level cases the grid runs. A
 * new pi version must be looked at, then added (the grid must not shrink unnoticed).
 */
const GRID: Record<string, { models: number; cases: number }> = {
	"0.73.1": { models: 23, cases: 89 },
	"1.6.0": { models: 18, cases: 104 },
};
const IMAGE: ImageContent = { type: "image", data: TINY_PNG, mimeType: "image/png" };
const PROMPT_TIMEOUT_MS = 30_000;

const world = useE2eWorld(() => {
	const probe = requestProbe();
	probe.payloads.length = 0;
	probe.responses.length = 0;
	probe.streamEvents.length = 0;
	probe.replacePayload = undefined;
});
/** One token for both providers: pi's own login and the extension's account hold the same string. */
const token = newAccessToken("shared");

// ---- set-up ---------------------------------------------------------------------------------------------------

/** The agent dir's models.json, which pi reads when a session's services are created. */
async function writeModelsJson(anthropic: Record<string, unknown>): Promise<void> {
	const file = join(world().env.agentDir, "models.json");
	await fs.writeFile(file, `${JSON.stringify({ providers: { [BUILTIN]: anthropic } }, null, "\t")}\n`, {
		mode: 0o600,
	});
}

/** A session with the extension and the probe fixture, one account holding `token`, and pi's own login to it. */
async function startSession(anthropic: Record<string, unknown> = { baseUrl: world().api.baseUrl }): Promise<PiSession> {
	await writeModelsJson(anthropic);
	await setupAccounts({ accounts: [{ label: "only", access: token }] });
	return world().start({
		extensionPaths: [FIXTURE],
		piCredentials: { anthropicOAuthToken: token },
		sessionStorage: "memory",
		timeoutMs: PROMPT_TIMEOUT_MS,
	});
}

interface ModelRegistry {
	getAll(): Model<Api>[];
	find(provider: string, id: string): Model<Api> | undefined;
}

/** pi's live model registry, as extensions see it (ctx.modelRegistry, on both lines). */
function registryOf(pi: PiSession): ModelRegistry {
	return (pi.session.extensionRunner.createContext() as unknown as { modelRegistry: ModelRegistry }).modelRegistry;
}

function modelOf(pi: PiSession, provider: string, id: string): Model<Api> {
	const model = registryOf(pi).find(provider, id);
	if (!model) throw new Error(`pi's registry has no ${provider}/${id}`);
	return model;
}

/**
 * Selects `provider/id` at `level` and takes the session back to the root of its tree: an empty conversation.
 * Returns the level pi set (it clamps a level the model does not support).
 */
async function select(pi: PiSession, provider: string, id: string, level?: string): Promise<string> {
	const { session } = pi;
	session.sessionManager.resetLeaf();
	// pi 0.73 sends the agent's messages, pi 1.x the session tree's branch; both are empty now.
	session.agent.state.messages = [];
	await session.setModel(modelOf(pi, provider, id));
	if (level !== undefined) session.setThinkingLevel(level as Parameters<typeof session.setThinkingLevel>[0]);
	return session.thinkingLevel;
}

interface Run {
	requests: RecordedRequest[];
	stopReason: string | undefined;
	text: string;
}

/** One prompt (text and image), answered as `script` says; what reached the fake API, and how the turn ended. */
async function run(pi: PiSession, text: string, script: Behaviour[], api: FakeAnthropicApi = world().api) {
	api.script(token, script);
	const before = api.requests.length;
	await withTimeout(pi.session.prompt(text, { images: [IMAGE] }), PROMPT_TIMEOUT_MS, `prompt "${text}"`, () => {
		void pi.session.abort();
	});
	const last = pi.session.messages.at(-1);
	const reply = last?.role === "assistant" ? last : undefined;
	return {
		requests: api.requests.slice(before),
		stopReason: reply?.stopReason,
		text: reply ? reply.content.map((block) => (block.type === "text" ? block.text : "")).join("") : "",
	} satisfies Run;
}

// ---- comparison -----------------------------------------------------------------------------------------------

const CREDENTIAL_HEADERS = new Set(["authorization", "x-api-key"]);

/** Every header but the credential, as [lower-case name, value], in the order they were sent. */
function headerLines(request: RecordedRequest): Array<[string, string]> {
	const lines: Array<[string, string]> = [];
	for (let i = 0; i + 1 < request.rawHeaders.length; i += 2) {
		const name = (request.rawHeaders[i] ?? "").toLowerCase();
		if (!CREDENTIAL_HEADERS.has(name)) lines.push([name, request.rawHeaders[i + 1] ?? ""]);
	}
	return lines;
}

/** JSON paths where two values differ (for a readable report; equality itself is checked on the raw bytes). */
function jsonDifferences(a: unknown, b: unknown, path = "body"): string[] {
	if (JSON.stringify(a) === JSON.stringify(b)) return [];
	if (a && b && typeof a === "object" && typeof b === "object" && Array.isArray(a) === Array.isArray(b)) {
		const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])];
		const nested = keys.flatMap((key) =>
			jsonDifferences((a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key], `${path}.${key}`),
		);
		// Same members in another order: the bytes differ, every member is equal.
		return nested.length > 0 ? nested : [`${path}: the same members in another order`];
	}
	const show = (value: unknown) => (value === undefined ? "(absent)" : JSON.stringify(value).slice(0, 300));
	return [`${path}: ${show(a)} (anthropic) ≠ ${show(b)} (${PROVIDER})`];
}

/** What differs between pi's request and ours, beyond the credential (which must be the same bearer token). */
function requestDifferences(theirs: RecordedRequest, ours: RecordedRequest): string[] {
	const found: string[] = [];
	for (const request of [theirs, ours]) {
		if (request.headers.authorization !== `Bearer ${token}` || request.headers["x-api-key"] !== undefined) {
			found.push(`credential: ${request.authScheme} ≠ Bearer <the shared token>`);
		}
	}
	if (theirs.method !== ours.method || theirs.url !== ours.url) {
		found.push(`target: ${theirs.method} ${theirs.url} ≠ ${ours.method} ${ours.url}`);
	}
	if (theirs.rawBody !== ours.rawBody) found.push(...jsonDifferences(theirs.body, ours.body));
	const a = headerLines(theirs);
	const b = headerLines(ours);
	if (JSON.stringify(a) !== JSON.stringify(b)) {
		const left = new Map(a);
		const right = new Map(b);
		for (const name of new Set([...left.keys(), ...right.keys()])) {
			if (left.get(name) !== right.get(name)) {
				found.push(`header ${name}: ${left.get(name) ?? "(absent)"} ≠ ${right.get(name) ?? "(absent)"}`);
			}
		}
		if (found.length === 0) found.push(`header order: ${a.map(([n]) => n)} ≠ ${b.map(([n]) => n)}`);
	}
	return found;
}

/** The fields of a mirrored model that differ from pi's own model of that id, with the values. */
function modelDifferences(theirs: Model<Api>, ours: Model<Api>): Record<string, [unknown, unknown]> {
	const differing: Record<string, [unknown, unknown]> = {};
	const a = theirs as unknown as Record<string, unknown>;
	const b = ours as unknown as Record<string, unknown>;
	for (const key of new Set([...Object.keys(a), ...Object.keys(b)])) {
		// An absent field and one set to undefined are the same model (pi 1.x sets `headers: undefined` on
		// extension models; their headers travel per request).
		if (JSON.stringify(a[key]) !== JSON.stringify(b[key])) differing[key] = [a[key], b[key]];
	}
	return differing;
}

// ---- the tests --------------------------------------------------------------------------------------------------

describe("multi-claude-code mirrors pi's own Anthropic models", () => {
	it("lists exactly the models pi lists for anthropic, each with pi's fields, only provider and api its own", async () => {
		const pi = await startSession();
		const all = registryOf(pi).getAll();
		const theirs = all.filter((model) => model.provider === BUILTIN);
		const ours = all.filter((model) => model.provider === PROVIDER);
		expect(theirs.length, `pi ${piLine().version}'s Anthropic model count`).toBe(GRID[piLine().version]?.models);
		expect(ours.map((model) => model.id).sort()).toEqual(theirs.map((model) => model.id).sort());
		// pi 0.73 registers a provider's stream per api id for everyone: ours must not be pi's Anthropic one there.
		const api = piLine().name === "1.x" ? "anthropic-messages" : PROVIDER;
		for (const model of theirs) {
			const mirrored = modelOf(pi, PROVIDER, model.id);
			const differing = modelDifferences(model, mirrored);
			const { provider, api: apiDifference, compat, ...rest } = differing;
			expect(provider, model.id).toEqual([BUILTIN, PROVIDER]);
			if (api === model.api) expect(apiDifference, model.id).toBeUndefined();
			else expect(apiDifference, model.id).toEqual([model.api, api]);
			// Both reach the fake API here (models.json, PI_MCC_ANTHROPIC_BASE_URL): an equal baseUrl is expected.
			expect(rest, `${model.id}: fields other than provider, api and compat`).toEqual({});
			if (compat) {
				// Server-side fallbacks name their provider (pi-ai prices a fallback's answer by it): ours, else equal.
				const fallbacks = (compat[0] as { allowedFallbackModels?: Array<{ provider: string }> })
					.allowedFallbackModels;
				const renamed = {
					...(compat[0] as object),
					allowedFallbackModels: fallbacks?.map((entry) =>
						entry.provider === BUILTIN ? { ...entry, provider: PROVIDER } : entry,
					),
				};
				expect(compat[1], `${model.id}: compat`).toEqual(renamed);
			}
		}
	});
});

describe("a request through multi-claude-code is the request pi's own anthropic provider sends", () => {
	it("has the same body and headers for every mirrored model and every thinking level it supports", async () => {
		const pi = await startSession();
		const ids = registryOf(pi)
			.getAll()
			.filter((model) => model.provider === BUILTIN)
			.map((model) => model.id);
		expect(ids.length, `pi ${piLine().version}'s Anthropic model count`).toBe(GRID[piLine().version]?.models);
		const differences: string[] = [];
		let cases = 0;
		let compared = 0;
		// The Anthropic SDK warns on every request to a deprecated model or with budget thinking, through both
		// providers alike: hundreds of lines that would bury the test's own output. Other warnings pass.
		const warn = console.warn;
		const quiet = vi.spyOn(console, "warn").mockImplementation((...args: unknown[]) => {
			if (!/is deprecated|Please migrate to a newer model/.test(String(args[0]))) warn(...args);
		});
		onTestFinished(() => quiet.mockRestore());
		for (const id of ids) {
			await select(pi, BUILTIN, id);
			const levels = pi.session.getAvailableThinkingLevels();
			await select(pi, PROVIDER, id);
			const ourLevels = pi.session.getAvailableThinkingLevels();
			if (JSON.stringify(ourLevels) !== JSON.stringify(levels)) {
				differences.push(`${id}: thinking levels ${levels} (anthropic) ≠ ${ourLevels} (${PROVIDER})`);
			}
			// "off" is among them unless the model cannot run without thinking (pi 1.x: thinkingLevelMap off: null).
			expect(levels.length, `${id}: the thinking levels pi offers`).toBeGreaterThan(0);
			for (const level of levels) {
				cases++;
				const key = `case-${cases}`;
				// The same answers for both providers (fixed tool call id, thinking signature), so the
				// conversation each one sends back is the same.
				const call = toolUse(
					PROBE_TOOL,
					{ key },
					{
						id: `toolu_${key}`,
						...(level === "off" ? {} : { thinking: { text: `thinking about ${key}`, signature: `sig-${key}` } }),
					},
				);
				const runs: Run[] = [];
				for (const provider of [BUILTIN, PROVIDER]) {
					const set = await select(pi, provider, id, level);
					if (set !== level) differences.push(`${id} @ ${level}: pi set ${provider}'s level to ${set}`);
					runs.push(await run(pi, `Look ${key} up, then describe the image.`, [call, ok(`done ${key}`)]));
				}
				const [theirs, ours] = runs as [Run, Run];
				const label = `${id} @ ${level}`;
				for (const [who, result] of [
					[BUILTIN, theirs],
					[PROVIDER, ours],
				] as const) {
					// Each run must be the whole exchange (a tool call, pi running the tool, the answer), so the
					// comparison covers tools, an image and a tool result.
					expect(
						result.requests.map((r) => r.answered),
						`${label} via ${who}`,
					).toEqual(["toolUse", "ok"]);
					expect(result.stopReason, `${label} via ${who}`).toBe("stop");
					expect(result.text, `${label} via ${who}`).toBe(`done ${key}`);
					const second = result.requests[1]?.rawBody ?? "";
					expect(second, `${label} via ${who}: the tool result`).toContain(`value of ${key}: 42`);
					expect(second, `${label} via ${who}: the image`).toContain(TINY_PNG);
					const tools = (result.requests[1]?.body as { tools?: Array<{ name: string }> } | undefined)?.tools ?? [];
					expect(
						tools.map((tool) => tool.name),
						`${label} via ${who}: the tools`,
					).toContain(PROBE_TOOL);
					expect(tools.length, `${label} via ${who}: pi's built-in tools too`).toBeGreaterThan(1);
				}
				for (let i = 0; i < 2; i++) {
					compared++;
					const found = requestDifferences(theirs.requests[i]!, ours.requests[i]!);
					differences.push(...found.map((difference) => `${label}, request ${i + 1}: ${difference}`));
				}
			}
		}
		console.log(
			`same request, pi ${piLine().version}: ${ids.length} models, ${cases} model × level cases, ` +
				`${compared} request pairs compared, ${differences.length} differences`,
		);
		// The first differences in full (a broken mirror differs in thousands of places), and how many there are.
		expect(differences.slice(0, 40), `${differences.length} differences`).toEqual([]);
		expect(cases, `pi ${piLine().version}'s model × level cases`).toBe(GRID[piLine().version]?.cases);
	}, 240_000);
});

describe("pi's request hooks reach the requests of multi-claude-code", () => {
	const model = "claude-sonnet-4-5";

	it("before_provider_request sees our provider's payload, and the payload it returns is the one sent", async () => {
		const pi = await startSession();
		expect(await select(pi, PROVIDER, model, "off")).toBe("off");
		const probe = requestProbe();
		probe.replacePayload = (payload) => ({
			...(payload as object),
			max_tokens: 777,
			metadata: { user_id: "replaced-by-the-fixture" },
		});
		const result = await run(pi, "hello", [ok("hi")]);
		expect(result.stopReason).toBe("stop");
		expect(result.requests).toHaveLength(1);
		expect(probe.payloads).toHaveLength(1);
		const seen = probe.payloads[0]!;
		expect(seen.provider).toBe(PROVIDER);
		expect(JSON.stringify(seen.payload)).toContain("hello");
		const replaced: Record<string, unknown> = {
			...(seen.payload as Record<string, unknown>),
			max_tokens: 777,
			metadata: { user_id: "replaced-by-the-fixture" },
		};
		// pi-ai 1.x puts the beta features into the payload as `betas`; the Anthropic SDK's beta client sends them
		// as the anthropic-beta header, not in the body (pi 0.73 sets that header directly).
		const { betas, ...body } = replaced;
		expect(result.requests[0]!.body).toEqual(body);
		if (betas !== undefined)
			expect(result.requests[0]!.headers["anthropic-beta"]).toBe((betas as string[]).join(","));
		else expect(piLine().name).toBe("0.73");
	});

	it("after_provider_response reports our provider's successful response, with its status and headers", async () => {
		const pi = await startSession();
		expect(await select(pi, PROVIDER, model, "off")).toBe("off");
		const result = await run(pi, "hello", [
			ok("hi", { headers: { "anthropic-ratelimit-unified-5h-utilization": "0.25" } }),
		]);
		expect(result.stopReason).toBe("stop");
		const { responses } = requestProbe();
		expect(responses).toHaveLength(1);
		expect(responses[0]!.status).toBe(200);
		expect(responses[0]!.headers).toMatchObject({
			"anthropic-ratelimit-unified-status": "allowed",
			"anthropic-ratelimit-unified-5h-utilization": "0.25",
			"content-type": "text/event-stream; charset=utf-8",
		});
	});

	it("provider_stream_event reports our provider's stream events on pi 1.x (pi 0.73 has no such event)", async () => {
		const pi = await startSession();
		expect(await select(pi, PROVIDER, model, "off")).toBe("off");
		const result = await run(pi, "hello", [ok("hi there")]);
		expect(result.stopReason).toBe("stop");
		const { streamEvents } = requestProbe();
		if (piLine().name === "0.73") {
			expect(streamEvents).toEqual([]);
			return;
		}
		expect(streamEvents.map((event) => event.type)).toEqual(
			expect.arrayContaining(["message_start", "content_block_delta", "message_stop"]),
		);
		for (const event of streamEvents) {
			expect(event).toMatchObject({ provider: PROVIDER, api: "anthropic-messages", model });
		}
	});

	it("pi's abort closes our provider's HTTP request, and the turn ends as aborted", async () => {
		const pi = await startSession();
		expect(await select(pi, PROVIDER, model, "off")).toBe("off");
		const api = world().api;
		api.script(token, ok("too late", { delayMs: 20_000 }));
		const prompt = pi.session.prompt("wait for it", { images: [IMAGE] });
		const request = await waitFor(() => api.requests[0], "our provider's request to reach the fake API");
		expect(request.clientClosed).toBe(false);
		await withTimeout(pi.session.abort(), 5_000, "pi's abort");
		await waitFor(() => request.clientClosed, "the fake API to see the connection closed", 5_000);
		await withTimeout(prompt, 5_000, "the aborted prompt");
		const last = pi.session.messages.at(-1);
		expect(last?.role === "assistant" ? last.stopReason : undefined).toBe("aborted");
		expect(api.requests).toHaveLength(1);
	});

	it("after_provider_response does not fire for a 429 on this pi line: the response capture must stay", async () => {
		const pi = await startSession();
		// x-should-retry: false, so that no SDK or pi-ai retry of pi's own provider repeats the request.
		const limited = rateLimited({ retryAfterSec: 30, extraHeaders: { "x-should-retry": "false" } });
		for (const provider of [BUILTIN, PROVIDER]) {
			expect(await select(pi, provider, model, "off")).toBe("off");
			const probe = requestProbe();
			const before = { payloads: probe.payloads.length, responses: probe.responses.length };
			const result = await run(pi, `hello via ${provider}`, [limited]);
			expect(result.stopReason, provider).toBe("error");
			expect(
				result.requests.map((request) => request.answered),
				provider,
			).toEqual(["httpError"]);
			expect(probe.payloads.length - before.payloads, `${provider}: before_provider_request`).toBe(1);
			expect(
				probe.responses.length - before.responses,
				`${provider}: after_provider_response fired for a 429 on pi ${piLine().version}. pi now reports ` +
					"failed responses: check whether onResponse can replace src/provider/response-capture.ts",
			).toBe(0);
		}
	});
});

describe("the mirrored models follow pi's Anthropic list at run time", () => {
	it("shows a models.json override of an anthropic model after session start, and keeps our own baseUrl", async () => {
		// pi's anthropic provider goes to a second fake API: the two baseUrls differ, so ours is seen to stay ours.
		const elsewhere = await startFakeAnthropicApi();
		try {
			const id = "claude-sonnet-4-5";
			const pi = await startSession({
				baseUrl: elsewhere.baseUrl,
				modelOverrides: { [id]: { maxTokens: 12_345, contextWindow: 98_765 } },
			});
			const theirs = modelOf(pi, BUILTIN, id);
			const ours = modelOf(pi, PROVIDER, id);
			expect(theirs).toMatchObject({ maxTokens: 12_345, contextWindow: 98_765, baseUrl: elsewhere.baseUrl });
			expect(ours).toMatchObject({ maxTokens: 12_345, contextWindow: 98_765, baseUrl: world().api.baseUrl });
			// The session's model was chosen before session_start, from the catalog mirror; pi refreshes it when the
			// extension registers the live list again, so it follows too.
			expect(pi.session.model).toMatchObject({ provider: PROVIDER, id, maxTokens: 12_345, contextWindow: 98_765 });
			// So the first request already has the overridden max_tokens, and is the one pi's own provider sends.
			const viaUs = await run(pi, "hello", [ok("hi")]);
			expect(await select(pi, BUILTIN, id, "off")).toBe("off");
			const viaPi = await run(pi, "hello", [ok("hi")], elsewhere);
			expect(viaUs.requests).toHaveLength(1);
			expect(viaPi.requests).toHaveLength(1);
			expect((viaUs.requests[0]!.body as { max_tokens: number }).max_tokens).toBe(12_345);
			expect(viaUs.requests[0]!.rawBody).toBe(viaPi.requests[0]!.rawBody);
		} finally {
			await elsewhere.close();
		}
	});
});
