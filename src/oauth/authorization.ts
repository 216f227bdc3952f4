/**
 * Anthropic's authorization-code + PKCE login, up to the code. pi-ai has an Anthropic OAuth login of its own, but
 * it hands the finished token pair to its caller for pi's auth.json; here the pair must go straight from the
 * exchange into the keychain through the broker, so only the protocol's constants are shared with it. Like pi-ai
 * 1.x it offers two ways back: the browser's redirect to a loopback port (any port: Anthropic accepts any
 * loopback port, and pi-ai 1.x relies on it), and "copy code", where Anthropic's own page shows the code to paste.
 */
import { createHash, randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { redactSecrets } from "../redact.ts";
import { printable } from "../text.ts";
import { ANTHROPIC_OAUTH } from "./token-endpoint.ts";

/** Where Anthropic sends the browser in copy-code login: a page that shows `code#state` to paste. */
export const COPY_CODE_REDIRECT_URI = "https://platform.claude.com/oauth/code/callback";
export const CALLBACK_PATH = "/callback";

export interface Pkce {
	verifier: string;
	challenge: string;
}

export function createPkce(): Pkce {
	const verifier = randomBytes(32).toString("base64url");
	return { verifier, challenge: createHash("sha256").update(verifier).digest("base64url") };
}

/** A fresh `state`, independent of the PKCE verifier (the state travels in URLs and browser history). */
export function createState(): string {
	return randomBytes(24).toString("base64url");
}

/** The redirect a browser login names: the loopback port actually listened on (the same in the exchange). */
export function loopbackRedirectUri(port: number): string {
	return `http://localhost:${port}${CALLBACK_PATH}`;
}

/** The URL a person opens to authorise this extension; `redirectUri` must be the one the exchange sends. */
export function buildAuthorizeUrl(pkce: Pkce, state: string, redirectUri: string): string {
	const params = new URLSearchParams({
		code: "true",
		client_id: ANTHROPIC_OAUTH.clientId,
		response_type: "code",
		redirect_uri: redirectUri,
		scope: ANTHROPIC_OAUTH.scopes,
		code_challenge: pkce.challenge,
		code_challenge_method: "S256",
		state,
	});
	return `${ANTHROPIC_OAUTH.authorizeUrl}?${params.toString()}`;
}

/** Accepts what people paste: the final redirect URL, `code#state`, a query string, or the bare code. */
export function parseAuthorizationInput(input: string): { code?: string; state?: string } {
	const value = input.trim();
	if (!value) return {};
	// Only web URLs: "abc:def#state" would parse as a URL of scheme "abc" and lose the code.
	if (/^https?:\/\//i.test(value)) {
		try {
			const url = new URL(value);
			const hash = new URLSearchParams(url.hash.slice(1));
			return {
				code: url.searchParams.get("code") ?? hash.get("code") ?? undefined,
				state: url.searchParams.get("state") ?? hash.get("state") ?? undefined,
			};
		} catch {
			// not a URL after all
		}
	}
	if (value.includes("#")) {
		const [code, state] = value.split("#", 2);
		return { code: code || undefined, state: state || undefined };
	}
	if (value.includes("code=")) {
		const params = new URLSearchParams(value);
		return { code: params.get("code") ?? undefined, state: params.get("state") ?? undefined };
	}
	return { code: value };
}

/** How the browser's redirect ended the wait. */
export type CallbackOutcome =
	| { kind: "code"; code: string; state: string }
	/** Anthropic (or the person) refused: `error=access_denied` and the like, with this login's state. */
	| { kind: "refused"; error: string; description?: string }
	| { kind: "closed" };

export interface CallbackServer {
	/** The port listened on, on 127.0.0.1 and (where the system has one) ::1. */
	port: number;
	/** `http://localhost:<port>/callback`, for the authorize URL and the exchange alike. */
	redirectUri: string;
	/** The loopback addresses listened on. */
	addresses: string[];
	/** Settles once: the browser came back (with a code or a refusal), or the server was closed. */
	outcome: Promise<CallbackOutcome>;
	close(): void;
}

export type CallbackStart =
	| {
			kind: "listening";
			server: CallbackServer;
			/** The port asked for was taken (by the address that was): this server listens on another one. */
			busy?: { port: number; address: string };
	  }
	| { kind: "unavailable"; reason: string };

/** The two loopback addresses a browser may try for `localhost`, IPv4 first. */
const LOOPBACKS = ["127.0.0.1", "::1"] as const;
/** Free ports tried on both addresses before giving up (the second address can lose a race for the first's). */
const FREE_PORT_ATTEMPTS = 5;
/** No IPv6 loopback on this system: ::1 is skipped, since no browser can reach it either. */
const NO_ADDRESS = new Set(["EADDRNOTAVAIL", "EAFNOSUPPORT"]);

/**
 * Listens for the browser's redirect on `port` on both loopback addresses, so no other local process can take the
 * one a browser tries first for `localhost`. When either address has the port taken, listens on a free port
 * (the same on both) and says which address was busy; `unavailable` when no port can be opened at all.
 */
export async function startCallbackServer(port: number, expectedState: string): Promise<CallbackStart> {
	const first = await listenOnLoopbacks(port);
	if ("servers" in first) return { kind: "listening", server: callbackServer(first.servers, expectedState) };
	const busy = { port, address: first.address };
	let last = first;
	for (let attempt = 0; attempt < FREE_PORT_ATTEMPTS; attempt++) {
		const next = await listenOnLoopbacks(0);
		if ("servers" in next) return { kind: "listening", server: callbackServer(next.servers, expectedState), busy };
		last = next;
	}
	return { kind: "unavailable", reason: `${last.address}: ${last.code}` };
}

type Listening = { servers: Server[] } | { address: string; code: string };

async function listenOnLoopbacks(port: number): Promise<Listening> {
	const servers: Server[] = [];
	let bound = port;
	for (const address of LOOPBACKS) {
		const server = createServer();
		const failure = await new Promise<string | undefined>((resolve) => {
			server.once("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? "error"));
			server.listen(bound, address, () => resolve(undefined));
		});
		if (failure === undefined) {
			servers.push(server);
			bound = (server.address() as AddressInfo).port;
			continue;
		}
		if (address === "::1" && NO_ADDRESS.has(failure)) break;
		for (const open of servers) open.close();
		return { address, code: failure };
	}
	return { servers };
}

function callbackServer(servers: Server[], expectedState: string): CallbackServer {
	const addresses = servers.map((server) => server.address() as AddressInfo);
	const port = addresses[0]?.port ?? 0;
	let settled = false;
	let settle: (outcome: CallbackOutcome) => void = () => {};
	const outcome = new Promise<CallbackOutcome>((resolve) => {
		settle = (value) => {
			if (settled) return;
			settled = true;
			resolve(value);
		};
	});
	const handle = (req: IncomingMessage, res: ServerResponse): void => {
		const answer = callbackAnswer(req.method, req.url, expectedState, settled);
		res.writeHead(answer.status, {
			"Content-Type": "text/plain; charset=utf-8",
			"Cache-Control": "no-store",
			Connection: "close",
		});
		res.end(answer.page);
		if (answer.outcome) settle(answer.outcome);
	};
	for (const server of servers) server.on("request", handle);
	return {
		port,
		redirectUri: loopbackRedirectUri(port),
		addresses: addresses.map((address) => address.address),
		outcome,
		close() {
			settle({ kind: "closed" });
			for (const server of servers) {
				server.close();
				server.closeAllConnections?.();
			}
		},
	};
}

export interface CallbackAnswer {
	status: number;
	page: string;
	/** Set when this request ends the wait. */
	outcome?: CallbackOutcome;
}

/**
 * What the callback server answers one request, and whether it ends the wait. A request without this login's
 * state is not ours (another tab, another login, a guess): 400, and the wait goes on.
 */
export function callbackAnswer(
	method: string | undefined,
	rawUrl: string | undefined,
	expectedState: string,
	settled: boolean,
): CallbackAnswer {
	const url = new URL(rawUrl ?? "/", "http://localhost");
	if (method !== "GET" || url.pathname !== CALLBACK_PATH) {
		return { status: 404, page: "Not found." };
	}
	if (url.searchParams.get("state") !== expectedState) {
		return { status: 400, page: "This is not the login this pi session is waiting for." };
	}
	if (settled) return { status: 409, page: "This login has already been handled. You can close this window." };
	const error = url.searchParams.get("error");
	if (error !== null) {
		const code = /^[a-z_]{1,40}$/.test(error) ? error : "error";
		const rawDescription = url.searchParams.get("error_description");
		const description = rawDescription ? printable(redactSecrets(rawDescription), 200) : undefined;
		return {
			status: 400,
			page: `The login was refused (${code}${description ? `: ${description}` : ""}). Nothing was changed; you can close this window.`,
			outcome: { kind: "refused", error: code, ...(description ? { description } : {}) },
		};
	}
	const code = url.searchParams.get("code");
	if (!code) return { status: 400, page: "The redirect carries no authorization code." };
	return {
		status: 200,
		page: "Claude account authorised. You can close this window and return to pi.",
		outcome: { kind: "code", code, state: expectedState },
	};
}

/** How the wait for the code ended. */
export type AuthorizationWait =
	| { kind: "caught"; code: string; state: string }
	| { kind: "pasted"; input: string }
	| { kind: "cancelled" }
	| { kind: "refused"; error: string; description?: string }
	| { kind: "timeout" };

/**
 * Waits for the code: the browser's redirect (when a callback server listens) raced against the paste prompt,
 * bounded by `timeoutMs`. Whatever ends the wait dismisses the prompt (its signal) and, on time-out, closes the
 * server: nothing is left listening or asking.
 */
export async function waitForAuthorization(options: {
	callback: CallbackServer | undefined;
	ask: (signal: AbortSignal) => Promise<string | undefined>;
	timeoutMs: number;
}): Promise<AuthorizationWait> {
	const { callback, ask, timeoutMs } = options;
	const dismiss = new AbortController();
	let timer: NodeJS.Timeout | undefined;
	const expired = new Promise<AuthorizationWait>((resolve) => {
		timer = setTimeout(() => resolve({ kind: "timeout" }), timeoutMs);
		timer.unref?.();
	});
	// A prompt that cannot open (a stale session's ctx throws at once) ends the wait like a dismissed one.
	const pasted = Promise.resolve(dismiss.signal)
		.then(ask)
		.then(
			(input): AuthorizationWait => (input?.trim() ? { kind: "pasted", input } : { kind: "cancelled" }),
			(): AuthorizationWait => ({ kind: "cancelled" }),
		);
	const caught = callback
		? callback.outcome.then((outcome): AuthorizationWait | Promise<never> => {
				if (outcome.kind === "code") return { kind: "caught", code: outcome.code, state: outcome.state };
				if (outcome.kind === "refused") return outcome;
				return new Promise<never>(() => {});
			})
		: new Promise<never>(() => {});
	try {
		const first = await Promise.race([expired, caught, pasted]);
		if (first.kind === "timeout") callback?.close();
		return first;
	} finally {
		clearTimeout(timer);
		dismiss.abort();
	}
}
