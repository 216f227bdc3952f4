/**
 * A real HTTP server on 127.0.0.1 that imitates Anthropic's OAuth token endpoint closely enough for the
 * broker: JSON grants in, `{access_token, refresh_token, expires_in}` out, single-use rotating refresh tokens
 * (a reused one is refused, and `reusedRefreshTokens()` names it), answers delayed on request, and a handful of
 * failure modes (rejection, server error, an error body that echoes the request's token, no answer, a reset
 * connection, a body that is not JSON, a redirect).
 */

import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { serveOnLoopback } from "./loopback.ts";

export type FakeTokenMode = "ok" | "invalid_grant" | "http500" | "echo" | "hang" | "reset" | "garbage" | "redirect";

/** One request body as the endpoint received it (`grant_type` is "" when the body had none). */
export interface FakeTokenRequest {
	grant_type: string;
	client_id?: string;
	refresh_token?: string;
	code?: string;
	state?: string;
	redirect_uri?: string;
	code_verifier?: string;
	[field: string]: unknown;
}

export interface FakeTokenPair {
	access: string;
	refresh: string;
}

export interface FakeTokenEndpointOptions {
	mode?: FakeTokenMode;
	/** Lifetime stated in `expires_in` of every grant, in seconds (default 28 800, Anthropic's 8 h). */
	expiresIn?: number;
	/** Wait this long before answering each request, so concurrent callers overlap (default 0). */
	delayMs?: number;
	/** When set, a grant with another `client_id` is refused with 400 invalid_client. */
	clientId?: string;
	/** Path the endpoint answers on (default Anthropic's `/v1/oauth/token`). */
	path?: string;
	/** Length of every token minted (default: Anthropic's usual 109 characters). */
	tokenLength?: number;
}

export interface FakeTokenEndpoint {
	/** Full URL of the token endpoint, e.g. `http://127.0.0.1:41234/v1/oauth/token`. */
	readonly url: string;
	readonly port: number;
	/** Every request body received, in order of arrival. */
	readonly requests: FakeTokenRequest[];
	/** Every access and refresh token this endpoint ever issued (grants and mintPair), for leak scans. */
	readonly issued: string[];
	/** Refresh tokens that arrived more than once (the endpoint refuses every use but the first). */
	reusedRefreshTokens(): string[];
	setMode(mode: FakeTokenMode): void;
	/** Mode "redirect" from now on: every request is answered `status` with `Location: location`. */
	redirectTo(status: 301 | 302 | 303 | 307 | 308, location: string): void;
	setExpiresIn(seconds: number): void;
	setDelay(ms: number): void;
	/** Tokens minted from now on are this many characters long (undefined: the usual 109). */
	setTokenLength(length: number | undefined): void;
	/** Issues a pair as a login would; its refresh token is valid for one refresh. */
	mintPair(): FakeTokenPair;
	/** Makes a refresh token the test made up valid for one refresh. */
	registerRefreshToken(token: string): void;
	/**
	 * Makes an authorization code valid for one exchange; `answer` adds fields to that exchange's answer (e.g.
	 * `account: { email_address }`, as Claude Code's token answers name the account).
	 */
	registerCode(code: string, answer?: Record<string, unknown>): void;
	/** Stops the server, cutting every open connection (including ones left hanging by mode "hang"). */
	close(): Promise<void>;
}

export const FAKE_TOKEN_PATH = "/v1/oauth/token";
const MAX_BODY_BYTES = 64 * 1024;

/**
 * A random token shaped like Claude's OAuth tokens (so pi-ai sends Bearer + Claude Code headers): as long as real
 * ones, or, with a hint, short and named (`sk-ant-oat01-<hint>-<24 hex>`) for tests that read them in messages.
 */
export function newAccessToken(hint?: string): string {
	return `sk-ant-oat01-${tokenBody(hint)}`;
}

export function newRefreshToken(hint?: string): string {
	return `sk-ant-ort01-${tokenBody(hint)}`;
}

function tokenBody(hint: string | undefined): string {
	return hint === undefined ? randomBytes(72).toString("base64url") : `${hint}-${randomBytes(12).toString("hex")}`;
}

export async function startFakeTokenEndpoint(options: FakeTokenEndpointOptions = {}): Promise<FakeTokenEndpoint> {
	let mode: FakeTokenMode = options.mode ?? "ok";
	let expiresIn = options.expiresIn ?? 28_800;
	let delayMs = options.delayMs ?? 0;
	let tokenLength = options.tokenLength;
	let redirect = { status: 307, location: "" };
	const path = options.path ?? FAKE_TOKEN_PATH;
	const requests: FakeTokenRequest[] = [];
	const issued: string[] = [];
	const liveRefresh = new Set<string>();
	const liveCodes = new Map<string, Record<string, unknown>>();
	const timers = new Set<NodeJS.Timeout>();
	let closing = false;

	const sized = (token: string): string =>
		tokenLength === undefined || tokenLength === token.length
			? token
			: (token + randomBytes(tokenLength).toString("base64url")).slice(0, tokenLength);
	const mintPair = (): FakeTokenPair => {
		const pair = { access: sized(newAccessToken()), refresh: sized(newRefreshToken()) };
		issued.push(pair.access, pair.refresh);
		liveRefresh.add(pair.refresh);
		return pair;
	};

	const sendJson = (res: ServerResponse, status: number, body: unknown): void => {
		const text = JSON.stringify(body);
		res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
		res.end(text);
	};

	const oauthError = (res: ServerResponse, status: number, error: string, description: string): void => {
		sendJson(res, status, { error, error_description: description });
	};

	const answer = (req: IncomingMessage, res: ServerResponse, body: FakeTokenRequest | undefined): void => {
		if (closing) {
			res.socket?.destroy();
			return;
		}
		if (!body) {
			oauthError(res, 400, "invalid_request", "Request body must be a JSON object");
			return;
		}
		let extra: Record<string, unknown> = {};
		const sentSecret = body.grant_type === "authorization_code" ? body.code : body.refresh_token;
		switch (mode) {
			case "redirect":
				res.writeHead(redirect.status, { Location: redirect.location, "Content-Length": 0 });
				res.end();
				return;
			case "hang":
				// Never answer; close() cuts the connection.
				return;
			case "reset":
				req.socket.resetAndDestroy();
				return;
			case "garbage":
				res.writeHead(200, { "Content-Type": "text/html" });
				res.end("<html><body>502 Bad Gateway (upstream sent garbage)</body></html>");
				return;
			case "http500":
				sendJson(res, 500, { error: { type: "api_error", message: "Internal server error" } });
				return;
			case "invalid_grant":
				oauthError(res, 400, "invalid_grant", "Refresh token not found or invalid");
				return;
			case "echo":
				// A misbehaving server that quotes the request's secret back, in the description and as a field.
				sendJson(res, 400, {
					error: "invalid_request",
					error_description: `Could not process token ${String(sentSecret)} for ${String(body.client_id)}`,
					refresh_token: body.refresh_token,
					code: body.code,
					received: body,
				});
				return;
			case "ok":
				break;
		}
		if (typeof body.client_id !== "string" || body.client_id.length === 0) {
			oauthError(res, 400, "invalid_request", "client_id is required");
			return;
		}
		if (options.clientId !== undefined && body.client_id !== options.clientId) {
			oauthError(res, 400, "invalid_client", "Unknown client");
			return;
		}
		if (body.grant_type === "refresh_token") {
			const token = body.refresh_token;
			// Single use: the token is consumed on arrival, so a concurrent second use of it is refused too.
			if (typeof token !== "string" || !liveRefresh.delete(token)) {
				oauthError(res, 400, "invalid_grant", "Refresh token not found or invalid");
				return;
			}
		} else if (body.grant_type === "authorization_code") {
			if (typeof body.code_verifier !== "string" || body.code_verifier.length === 0) {
				oauthError(res, 400, "invalid_request", "code_verifier is required");
				return;
			}
			if (typeof body.code !== "string" || !liveCodes.has(body.code)) {
				oauthError(res, 400, "invalid_grant", "Invalid authorization code");
				return;
			}
			extra = liveCodes.get(body.code) ?? {};
			liveCodes.delete(body.code);
		} else {
			oauthError(res, 400, "unsupported_grant_type", "Unsupported grant type");
			return;
		}
		const pair = mintPair();
		sendJson(res, 200, {
			token_type: "Bearer",
			access_token: pair.access,
			refresh_token: pair.refresh,
			expires_in: expiresIn,
			scope: "user:inference user:profile",
			...extra,
		});
	};

	const server = createServer((req, res) => {
		const url = new URL(req.url ?? "/", "http://127.0.0.1");
		if (url.pathname !== path) {
			req.resume();
			oauthError(res, 404, "not_found", "Not found");
			return;
		}
		if (req.method !== "POST") {
			req.resume();
			res.setHeader("Allow", "POST");
			oauthError(res, 405, "method_not_allowed", "Use POST");
			return;
		}
		const chunks: Buffer[] = [];
		let size = 0;
		req.on("data", (chunk: Buffer) => {
			size += chunk.length;
			if (size > MAX_BODY_BYTES) {
				req.socket.destroy();
				return;
			}
			chunks.push(chunk);
		});
		req.on("end", () => {
			const body = parseBody(Buffer.concat(chunks).toString("utf8"));
			requests.push(body ?? { grant_type: "" });
			if (delayMs <= 0) {
				answer(req, res, body);
				return;
			}
			const timer = setTimeout(() => {
				timers.delete(timer);
				answer(req, res, body);
			}, delayMs);
			timers.add(timer);
		});
	});
	const listening = await serveOnLoopback(server);
	const port = listening.port;

	return {
		url: `http://127.0.0.1:${port}${path}`,
		port,
		requests,
		issued,
		setMode(next) {
			mode = next;
		},
		redirectTo(status, location) {
			redirect = { status, location };
			mode = "redirect";
		},
		setExpiresIn(seconds) {
			expiresIn = seconds;
		},
		setDelay(ms) {
			delayMs = ms;
		},
		setTokenLength(length) {
			tokenLength = length;
		},
		mintPair,
		reusedRefreshTokens() {
			const seen = new Map<string, number>();
			for (const { refresh_token: token } of requests) {
				if (typeof token === "string") seen.set(token, (seen.get(token) ?? 0) + 1);
			}
			return [...seen].filter(([, count]) => count > 1).map(([token]) => token);
		},
		registerRefreshToken(token) {
			liveRefresh.add(token);
		},
		registerCode(code, answer = {}) {
			liveCodes.set(code, answer);
		},
		async close() {
			if (closing) return;
			closing = true;
			for (const timer of timers) clearTimeout(timer);
			timers.clear();
			await listening.close();
		},
	};
}

function parseBody(text: string): FakeTokenRequest | undefined {
	let raw: unknown;
	try {
		raw = JSON.parse(text);
	} catch {
		return undefined;
	}
	if (raw === null || typeof raw !== "object" || Array.isArray(raw)) return undefined;
	const fields = raw as Record<string, unknown>;
	return { ...fields, grant_type: typeof fields.grant_type === "string" ? fields.grant_type : "" };
}
