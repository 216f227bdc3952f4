/**
 * Anthropic's authorization-code + PKCE login, up to the code. pi-ai has an Anthropic OAuth login of its own, but
 * it hands the finished token pair to its caller for pi's auth.json; here the pair must go straight from the
 * exchange into the keychain through the broker, so only the protocol's constants are shared with it.
 */
import { createHash, randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import { ANTHROPIC_OAUTH } from "./token-endpoint.ts";

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

/** The URL a person opens to authorise this extension for their Claude account. */
export function buildAuthorizeUrl(
	pkce: Pkce,
	state: string,
	redirectUri: string = ANTHROPIC_OAUTH.redirectUri,
): string {
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
	try {
		const url = new URL(value);
		return { code: url.searchParams.get("code") ?? undefined, state: url.searchParams.get("state") ?? undefined };
	} catch {
		// not a URL
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

export interface CallbackServer {
	/** Resolves with the code when the browser comes back, or `null` once closed. */
	code: Promise<{ code: string; state: string } | null>;
	close(): void;
}

/**
 * Listens on 127.0.0.1 for the browser's redirect. Returns `undefined` when the port is taken (another login
 * in progress, or pi's own /login): the pasted code still works then.
 */
export async function startCallbackServer(port: number, expectedState: string): Promise<CallbackServer | undefined> {
	let settle: (value: { code: string; state: string } | null) => void = () => {};
	const code = new Promise<{ code: string; state: string } | null>((resolve) => {
		settle = resolve;
	});
	const server: Server = createServer((req, res) => {
		const url = new URL(req.url ?? "/", "http://localhost");
		const got = url.searchParams.get("code");
		const state = url.searchParams.get("state");
		if (url.pathname !== "/callback" || !got || state !== expectedState) {
			res.writeHead(400, { "Content-Type": "text/plain; charset=utf-8" });
			res.end("This is not the login this pi session is waiting for.");
			return;
		}
		res.writeHead(200, { "Content-Type": "text/plain; charset=utf-8" });
		res.end("Claude account authorised. You can close this window and return to pi.");
		settle({ code: got, state });
	});
	const listening = await new Promise<boolean>((resolve) => {
		server.once("error", () => resolve(false));
		server.listen(port, "127.0.0.1", () => resolve(true));
	});
	if (!listening) return undefined;
	return {
		code,
		close: () => {
			settle(null);
			server.close();
			server.closeAllConnections?.();
		},
	};
}
