/**
 * A real HTTP server on 127.0.0.1 that imitates Anthropic's Messages API (`POST /v1/messages`, SSE streaming)
 * closely enough for pi-ai's Anthropic provider. What it answers is scripted per bearer token, so a test can
 * say "the token of account X is rate limited" and check which tokens the extension actually sent.
 */
import { randomBytes } from "node:crypto";
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";

export type AnthropicErrorType =
	| "rate_limit_error"
	| "overloaded_error"
	| "authentication_error"
	| "permission_error"
	| "invalid_request_error"
	| "api_error";

interface BehaviourBase {
	/** Time before the response head (and so the first token) is sent. */
	delayMs?: number;
}

export type Behaviour =
	| (BehaviourBase & { kind: "ok"; text: string; chunks?: string[]; headers?: Record<string, string> })
	| (BehaviourBase & {
			kind: "httpError";
			status: number;
			errorType: AnthropicErrorType;
			message: string;
			headers: Record<string, string>;
	  })
	| (BehaviourBase & {
			kind: "toolUse";
			id: string;
			name: string;
			input: Record<string, unknown>;
			/** A thinking block (with its signature) streamed before the tool call, as a thinking model answers. */
			thinking?: { text: string; signature: string };
	  })
	| (BehaviourBase & { kind: "sseErrorBeforeContent"; errorType: AnthropicErrorType; message: string })
	| (BehaviourBase & {
			kind: "midStreamFailure";
			partialText: string;
			/** "error-event": an SSE `error` event after the deltas; "close": the socket is destroyed instead. */
			how: "error-event" | "close";
			errorType: AnthropicErrorType;
	  });

export type BehaviourKind = Behaviour["kind"];

export interface RecordedRequest {
	/** The bearer token (`authorization: Bearer …`), or the `x-api-key` when no bearer was sent. */
	token: string | undefined;
	authScheme: "bearer" | "x-api-key" | "none";
	method: string;
	path: string;
	/** The request target as sent, query included (e.g. `/v1/messages?beta=true`). */
	url: string;
	model: string | undefined;
	stream: boolean | undefined;
	headers: IncomingHttpHeaders;
	/** Every header line as received, in order, names as the client spelled them: [name, value, name, value, …]. */
	rawHeaders: string[];
	body: unknown;
	/** The body exactly as received (UTF-8). */
	rawBody: string;
	/** The client closed the connection before the answer was complete (e.g. an aborted request). */
	clientClosed: boolean;
	/** What the server answered with. */
	answered: BehaviourKind | "unknown-token" | "not-found";
	at: number;
}

export interface FakeAnthropicApi {
	/** E.g. `http://127.0.0.1:41234`; the SDK posts to `${baseUrl}/v1/messages`. */
	baseUrl: string;
	/** Every request received, in order. */
	requests: RecordedRequest[];
	/**
	 * What requests carrying `token` get. An array is played in order, its last entry repeating; a single
	 * behaviour repeats for every request. Replaces any earlier script for the token.
	 */
	script(token: string, behaviour: Behaviour | Behaviour[]): void;
	/** What tokens without a script get (default: 401 authentication_error). */
	setDefault(behaviour: Behaviour): void;
	/** Requests that carried `token`. */
	requestsFor(token: string): RecordedRequest[];
	/** The bearer tokens of all requests, in order. */
	tokens(): Array<string | undefined>;
	/** Forgets recorded requests (scripts stay). */
	clearRequests(): void;
	close(): Promise<void>;
}

// ---- behaviours -------------------------------------------------------------------------------------------

/** A streamed answer; `headers` are added to the response head (e.g. unified rate-limit figures). */
export function ok(
	text: string,
	options: { chunks?: string[]; delayMs?: number; headers?: Record<string, string> } = {},
): Behaviour {
	return { kind: "ok", text, chunks: options.chunks, delayMs: options.delayMs, headers: options.headers };
}

export interface RateLimitOptions {
	retryAfterSec?: number;
	/** Epoch seconds for `anthropic-ratelimit-unified-reset` (default: now + retryAfterSec). */
	unifiedReset?: number;
	extraHeaders?: Record<string, string>;
	message?: string;
	delayMs?: number;
}

/** HTTP 429 rate_limit_error the way a Claude subscription's exhausted window answers. */
export function rateLimited(options: RateLimitOptions = {}): Behaviour {
	const retryAfter = options.retryAfterSec ?? 60;
	const reset = options.unifiedReset ?? Math.floor(Date.now() / 1000) + retryAfter;
	return {
		kind: "httpError",
		status: 429,
		errorType: "rate_limit_error",
		message: options.message ?? "This request would exceed your account's rate limit. Please try again later.",
		headers: {
			"retry-after": String(retryAfter),
			"anthropic-ratelimit-unified-status": "rejected",
			"anthropic-ratelimit-unified-reset": String(reset),
			...options.extraHeaders,
		},
		delayMs: options.delayMs,
	};
}

/** A streamed answer that calls a tool (stop_reason tool_use), optionally after a signed thinking block. */
export function toolUse(
	name: string,
	input: Record<string, unknown>,
	options: { id?: string; thinking?: { text: string; signature: string }; delayMs?: number } = {},
): Behaviour {
	return {
		kind: "toolUse",
		id: options.id ?? `toolu_fake_${randomBytes(8).toString("hex")}`,
		name,
		input,
		thinking: options.thinking,
		delayMs: options.delayMs,
	};
}

/** HTTP 429 with no window information at all: only `x-should-retry: true`. */
export function windowless429(options: { delayMs?: number } = {}): Behaviour {
	return {
		kind: "httpError",
		status: 429,
		errorType: "rate_limit_error",
		message: "Rate limited.",
		headers: { "x-should-retry": "true" },
		delayMs: options.delayMs,
	};
}

/** HTTP 529 overloaded_error. */
export function overloaded(options: { delayMs?: number } = {}): Behaviour {
	return {
		kind: "httpError",
		status: 529,
		errorType: "overloaded_error",
		message: "Overloaded",
		headers: { "x-should-retry": "true" },
		delayMs: options.delayMs,
	};
}

/** HTTP 401 authentication_error (a revoked or invalid OAuth token). */
export function unauthorized(options: { message?: string; delayMs?: number } = {}): Behaviour {
	return {
		kind: "httpError",
		status: 401,
		errorType: "authentication_error",
		message: options.message ?? "Invalid bearer token",
		headers: {},
		delayMs: options.delayMs,
	};
}

/** Any other HTTP error answer. */
export function httpError(
	status: number,
	errorType: AnthropicErrorType,
	message: string,
	headers: Record<string, string> = {},
): Behaviour {
	return { kind: "httpError", status, errorType, message, headers };
}

/** HTTP 200, `message_start`, then an SSE `error` event before any content block. */
export function sseErrorBeforeContent(
	errorType: "rate_limit_error" | "overloaded_error" = "overloaded_error",
	options: { message?: string; delayMs?: number } = {},
): Behaviour {
	const message = options.message ?? (errorType === "overloaded_error" ? "Overloaded" : "Rate limited.");
	return { kind: "sseErrorBeforeContent", errorType, message, delayMs: options.delayMs };
}

/** Some text deltas, then an SSE error event (default) or an abrupt socket close. */
export function midStreamFailure(
	partialText: string,
	options: { how?: "error-event" | "close"; errorType?: AnthropicErrorType; delayMs?: number } = {},
): Behaviour {
	return {
		kind: "midStreamFailure",
		partialText,
		how: options.how ?? "error-event",
		errorType: options.errorType ?? "overloaded_error",
		delayMs: options.delayMs,
	};
}

// ---- server -----------------------------------------------------------------------------------------------

const MAX_BODY_BYTES = 8 * 1024 * 1024;

export async function startFakeAnthropicApi(): Promise<FakeAnthropicApi> {
	const requests: RecordedRequest[] = [];
	const scripts = new Map<string, { queue: Behaviour[] }>();
	let fallback: Behaviour = unauthorized();
	const sockets = new Set<Socket>();
	const timers = new Set<NodeJS.Timeout>();

	const next = (token: string | undefined): Behaviour | undefined => {
		if (token === undefined) return undefined;
		const entry = scripts.get(token);
		if (!entry) return undefined;
		const behaviour = entry.queue.length > 1 ? entry.queue.shift() : entry.queue[0];
		return behaviour;
	};

	const sleep = (ms: number) =>
		new Promise<void>((resolve) => {
			const timer = setTimeout(() => {
				timers.delete(timer);
				resolve();
			}, ms);
			timers.add(timer);
		});

	const server = createServer((req, res) => {
		void handle(req, res).catch(() => {
			if (!res.headersSent) res.writeHead(500);
			res.destroy();
		});
	});
	server.on("connection", (socket) => {
		sockets.add(socket);
		socket.on("close", () => sockets.delete(socket));
	});

	async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
		const raw = await readBody(req);
		let body: unknown;
		try {
			body = raw.length > 0 ? JSON.parse(raw) : undefined;
		} catch {
			body = raw;
		}
		const auth = req.headers.authorization;
		const bearer = typeof auth === "string" && /^Bearer /i.test(auth) ? auth.slice(7).trim() : undefined;
		const apiKey = typeof req.headers["x-api-key"] === "string" ? req.headers["x-api-key"] : undefined;
		const token = bearer ?? apiKey;
		const parsed = body !== null && typeof body === "object" ? (body as Record<string, unknown>) : {};
		const path = (req.url ?? "/").split("?")[0] ?? "/";
		const record: RecordedRequest = {
			token,
			authScheme: bearer !== undefined ? "bearer" : apiKey !== undefined ? "x-api-key" : "none",
			method: req.method ?? "GET",
			path,
			url: req.url ?? "/",
			model: typeof parsed.model === "string" ? parsed.model : undefined,
			stream: typeof parsed.stream === "boolean" ? parsed.stream : undefined,
			headers: req.headers,
			rawHeaders: [...req.rawHeaders],
			body,
			rawBody: raw,
			clientClosed: false,
			answered: "unknown-token",
			at: Date.now(),
		};
		requests.push(record);
		let serverClosed = false;
		res.on("close", () => {
			if (!res.writableEnded && !serverClosed) record.clientClosed = true;
		});

		if (req.method !== "POST" || path !== "/v1/messages") {
			record.answered = "not-found";
			sendJsonError(res, 404, "not_found_error", `Not found: ${req.method} ${path}`, {});
			return;
		}
		const scripted = next(token);
		const behaviour = scripted ?? fallback;
		record.answered = scripted ? behaviour.kind : "unknown-token";
		if (behaviour.delayMs) await sleep(behaviour.delayMs);
		if (res.destroyed) return;
		const model = record.model ?? "claude-sonnet-4-5";
		switch (behaviour.kind) {
			case "ok":
				await streamText(res, model, behaviour.chunks ?? splitText(behaviour.text), behaviour.headers);
				return;
			case "toolUse":
				streamToolUse(res, model, behaviour);
				return;
			case "httpError":
				sendJsonError(res, behaviour.status, behaviour.errorType, behaviour.message, behaviour.headers);
				return;
			case "sseErrorBeforeContent":
				startStream(res);
				writeEvent(res, "message_start", messageStart(model));
				writeEvent(res, "ping", { type: "ping" });
				writeEvent(res, "error", errorBody(behaviour.errorType, behaviour.message));
				res.end();
				return;
			case "midStreamFailure": {
				startStream(res);
				writeEvent(res, "message_start", messageStart(model));
				writeEvent(res, "content_block_start", {
					type: "content_block_start",
					index: 0,
					content_block: { type: "text", text: "" },
				});
				for (const chunk of splitText(behaviour.partialText)) {
					writeEvent(res, "content_block_delta", {
						type: "content_block_delta",
						index: 0,
						delta: { type: "text_delta", text: chunk },
					});
				}
				// Let the client see the deltas before the failure.
				await sleep(30);
				if (behaviour.how === "error-event") {
					writeEvent(res, "error", errorBody(behaviour.errorType, "Internal server error"));
					res.end();
				} else {
					serverClosed = true;
					res.socket?.destroy();
				}
				return;
			}
		}
	}

	await new Promise<void>((resolve, reject) => {
		server.once("error", reject);
		server.listen(0, "127.0.0.1", () => {
			server.off("error", reject);
			resolve();
		});
	});
	const { port } = server.address() as AddressInfo;

	return {
		baseUrl: `http://127.0.0.1:${port}`,
		requests,
		script(token, behaviour) {
			const queue = Array.isArray(behaviour) ? [...behaviour] : [behaviour];
			if (queue.length === 0) throw new Error("script needs at least one behaviour");
			scripts.set(token, { queue });
		},
		setDefault(behaviour) {
			fallback = behaviour;
		},
		requestsFor(token) {
			return requests.filter((r) => r.token === token);
		},
		tokens() {
			return requests.map((r) => r.token);
		},
		clearRequests() {
			requests.length = 0;
		},
		async close() {
			for (const timer of timers) clearTimeout(timer);
			timers.clear();
			for (const socket of sockets) socket.destroy();
			await new Promise<void>((resolve) => server.close(() => resolve()));
		},
	};
}

function readBody(req: IncomingMessage): Promise<string> {
	return new Promise((resolve, reject) => {
		const chunks: Buffer[] = [];
		let size = 0;
		req.on("data", (chunk: Buffer) => {
			size += chunk.length;
			if (size > MAX_BODY_BYTES) {
				reject(new Error("request body too large"));
				req.destroy();
				return;
			}
			chunks.push(chunk);
		});
		req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
		req.on("error", reject);
	});
}

function requestId(): string {
	return `req_fake_${randomBytes(8).toString("hex")}`;
}

function errorBody(type: AnthropicErrorType, message: string): Record<string, unknown> {
	return { type: "error", error: { type, message } };
}

function sendJsonError(
	res: ServerResponse,
	status: number,
	type: AnthropicErrorType | "not_found_error",
	message: string,
	headers: Record<string, string>,
): void {
	const body = JSON.stringify({ type: "error", error: { type, message }, request_id: requestId() });
	res.writeHead(status, {
		"content-type": "application/json",
		"content-length": Buffer.byteLength(body),
		"request-id": requestId(),
		...headers,
	});
	res.end(body);
}

function startStream(res: ServerResponse, headers: Record<string, string> = {}): void {
	res.writeHead(200, {
		"content-type": "text/event-stream; charset=utf-8",
		"cache-control": "no-cache",
		connection: "keep-alive",
		"request-id": requestId(),
		"anthropic-ratelimit-unified-status": "allowed",
		...headers,
	});
	res.flushHeaders();
}

function writeEvent(res: ServerResponse, event: string, data: unknown): void {
	res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
}

/** The `message_start` event of a streamed answer, as the Messages API sends it. */
export function messageStart(model: string): Record<string, unknown> {
	return {
		type: "message_start",
		message: {
			id: `msg_fake_${randomBytes(8).toString("hex")}`,
			type: "message",
			role: "assistant",
			model,
			content: [],
			stop_reason: null,
			stop_sequence: null,
			usage: { input_tokens: 12, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: 1 },
		},
	};
}

async function streamText(
	res: ServerResponse,
	model: string,
	chunks: string[],
	headers?: Record<string, string>,
): Promise<void> {
	startStream(res, headers);
	writeEvent(res, "message_start", messageStart(model));
	writeEvent(res, "content_block_start", {
		type: "content_block_start",
		index: 0,
		content_block: { type: "text", text: "" },
	});
	writeEvent(res, "ping", { type: "ping" });
	for (const chunk of chunks) {
		writeEvent(res, "content_block_delta", {
			type: "content_block_delta",
			index: 0,
			delta: { type: "text_delta", text: chunk },
		});
	}
	writeEvent(res, "content_block_stop", { type: "content_block_stop", index: 0 });
	writeEvent(res, "message_delta", {
		type: "message_delta",
		delta: { stop_reason: "end_turn", stop_sequence: null },
		usage: { output_tokens: Math.max(1, chunks.length) },
	});
	writeEvent(res, "message_stop", { type: "message_stop" });
	res.end();
}

function streamToolUse(res: ServerResponse, model: string, call: Extract<Behaviour, { kind: "toolUse" }>): void {
	startStream(res);
	writeEvent(res, "message_start", messageStart(model));
	let index = 0;
	if (call.thinking) {
		writeEvent(res, "content_block_start", {
			type: "content_block_start",
			index,
			content_block: { type: "thinking", thinking: "", signature: "" },
		});
		writeEvent(res, "content_block_delta", {
			type: "content_block_delta",
			index,
			delta: { type: "thinking_delta", thinking: call.thinking.text },
		});
		writeEvent(res, "content_block_delta", {
			type: "content_block_delta",
			index,
			delta: { type: "signature_delta", signature: call.thinking.signature },
		});
		writeEvent(res, "content_block_stop", { type: "content_block_stop", index });
		index++;
	}
	writeEvent(res, "content_block_start", {
		type: "content_block_start",
		index,
		content_block: { type: "tool_use", id: call.id, name: call.name, input: {} },
	});
	writeEvent(res, "content_block_delta", {
		type: "content_block_delta",
		index,
		delta: { type: "input_json_delta", partial_json: JSON.stringify(call.input) },
	});
	writeEvent(res, "content_block_stop", { type: "content_block_stop", index });
	writeEvent(res, "message_delta", {
		type: "message_delta",
		delta: { stop_reason: "tool_use", stop_sequence: null },
		usage: { output_tokens: 8 },
	});
	writeEvent(res, "message_stop", { type: "message_stop" });
	res.end();
}

/** Splits text into a few deltas (at word boundaries), as the real API streams it. */
function splitText(text: string): string[] {
	if (text.length === 0) return [];
	const parts = text.match(/\S+\s*|\s+/g) ?? [text];
	return parts;
}
