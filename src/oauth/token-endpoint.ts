import { redactSecrets } from "../redact.ts";
import { DEFAULT_TOKEN_TIMEOUT_MS, endpointUrlProblem, shownUrl } from "../settings.ts";
import { errorText, formatSeconds } from "../text.ts";

/** Anthropic's OAuth client for Claude Pro/Max, as pi-ai's Anthropic OAuth uses it. */
export const ANTHROPIC_OAUTH = {
	clientId: "9d1c250a-e61b-44d9-88ed-5944d1962f5e",
	authorizeUrl: "https://claude.ai/oauth/authorize",
	tokenUrl: "https://platform.claude.com/v1/oauth/token",
	redirectUri: "http://localhost:53692/callback",
	callbackPort: 53692,
	scopes: "org:create_api_key user:profile user:inference user:sessions:claude_code user:mcp_servers user:file_upload",
} as const;

/**
 * What this extension accepts as an OAuth token anywhere (token answers, keychain items, old plaintext files): a
 * string of at least 8 characters without whitespace. Anything else is never stored or sent.
 */
export function isWellFormedToken(value: unknown): value is string {
	return typeof value === "string" && value.length >= 8 && !/\s/.test(value);
}

/** Longer lifetimes are nonsense, and from about 1e305 s on the expiry in ms is not even a finite number. */
const MAX_LIFETIME_S = 10 * 365 * 24 * 60 * 60;

export interface TokenGrant {
	access: string;
	refresh: string;
	/** Lifetime of the access token in ms, as the endpoint stated it. */
	expiresInMs: number;
	/** Lifetime of the refresh token in ms, when the endpoint states one (`refresh_token_expires_in`). */
	refreshExpiresInMs?: number;
	/** Which Claude account the answer says this is, when it says so (unverified; never required). */
	account?: AccountIdentity;
}

/**
 * What a token answer may say about the account (Claude Code's answers carry `account.email_address` and
 * `organization.name`). Not secret, but personal: shown to the person and kept only in their own 0600 config.
 */
export interface AccountIdentity {
	email?: string;
	organization?: string;
}

export interface CodeExchange {
	code: string;
	state: string;
	verifier: string;
	redirectUri: string;
}

/** The one boundary to the OAuth token endpoint. Only the TokenBroker calls it. */
export interface TokenEndpoint {
	readonly url: string;
	/** Why this endpoint refuses to send anything (a refused PI_MCC_TOKEN_URL), with the fix. */
	readonly urlProblem?: string | undefined;
	refresh(refreshToken: string): Promise<TokenGrant>;
	exchangeCode(exchange: CodeExchange): Promise<TokenGrant>;
}

export type TokenEndpointErrorKind =
	| "invalid_grant"
	| "rejected"
	| "server"
	| "unreachable"
	| "no_answer"
	| "malformed"
	/** The endpoint answered with a redirect, which is never followed: nothing was sent where it pointed. */
	| "redirect"
	/** PI_MCC_TOKEN_URL is refused: no request was sent at all. */
	| "refused_url";

/** A failed token request. Its message never contains the request's or the response's tokens. */
export class TokenEndpointError extends Error {
	override readonly name = "TokenEndpointError";
	constructor(
		readonly kind: TokenEndpointErrorKind,
		message: string,
		readonly status?: number,
	) {
		super(message);
	}
}

export interface HttpTokenEndpointOptions {
	/** An override (`PI_MCC_TOKEN_URL`); checked here, so a refused one never receives a request. */
	url?: string;
	timeoutMs?: number;
	clientId?: string;
}

/**
 * The token endpoint over HTTP. It sends refresh tokens and authorization codes, so it only talks to an https:
 * URL (or http: on loopback), never follows a redirect, and names the endpoint without user info or query.
 */
export class HttpTokenEndpoint implements TokenEndpoint {
	readonly url: string;
	/** The URL as messages show it. */
	readonly shownUrl: string;
	/** Why the URL is refused; then every call fails before any request. */
	readonly urlProblem: string | undefined;
	private readonly timeoutMs: number;
	private readonly clientId: string;

	constructor(options: HttpTokenEndpointOptions = {}) {
		this.url = options.url ?? ANTHROPIC_OAUTH.tokenUrl;
		this.shownUrl = shownUrl(this.url);
		this.urlProblem = options.url === undefined ? undefined : endpointUrlProblem("PI_MCC_TOKEN_URL", options.url);
		this.timeoutMs = options.timeoutMs ?? DEFAULT_TOKEN_TIMEOUT_MS;
		this.clientId = options.clientId ?? ANTHROPIC_OAUTH.clientId;
	}

	refresh(refreshToken: string): Promise<TokenGrant> {
		return this.post({ grant_type: "refresh_token", client_id: this.clientId, refresh_token: refreshToken }, [
			refreshToken,
		]);
	}

	exchangeCode({ code, state, verifier, redirectUri }: CodeExchange): Promise<TokenGrant> {
		return this.post(
			{
				grant_type: "authorization_code",
				client_id: this.clientId,
				code,
				state,
				redirect_uri: redirectUri,
				code_verifier: verifier,
			},
			[code, verifier],
		);
	}

	private async post(body: Record<string, string>, sent: string[]): Promise<TokenGrant> {
		if (this.urlProblem) throw new TokenEndpointError("refused_url", this.urlProblem);
		const shown = this.shownUrl;
		let response: Response;
		try {
			response = await fetch(this.url, {
				method: "POST",
				headers: { "Content-Type": "application/json", Accept: "application/json" },
				body: JSON.stringify(body),
				// A redirect would resend the body (the refresh token) to wherever it points, and its answer would be
				// stored as the account's new pair: it is reported, never followed.
				redirect: "manual",
				signal: AbortSignal.timeout(this.timeoutMs),
			});
		} catch (error) {
			const aborted = error instanceof Error && (error.name === "TimeoutError" || error.name === "AbortError");
			throw new TokenEndpointError(
				aborted ? "no_answer" : "unreachable",
				aborted
					? `the token endpoint ${shown} gave no answer within ${formatSeconds(this.timeoutMs)}`
					: `the token endpoint ${shown} could not be reached (${networkCause(error, sent)})`,
			);
		}
		if (isRedirect(response.status)) {
			await response.body?.cancel().catch(() => {});
			throw new TokenEndpointError(
				"redirect",
				`${redirectText(`the token endpoint ${shown}`, response)}; token requests never follow one, so nothing ` +
					"was sent there. Check PI_MCC_TOKEN_URL or the proxy in between",
				response.status,
			);
		}
		let text: string;
		try {
			text = await response.text();
		} catch {
			throw new TokenEndpointError("no_answer", `the token endpoint ${shown} closed the connection mid-answer`);
		}
		if (!response.ok) throw this.failure(response.status, text);
		let data: Record<string, unknown>;
		try {
			data = JSON.parse(text) as Record<string, unknown>;
		} catch {
			throw new TokenEndpointError(
				"malformed",
				`the token endpoint ${shown} answered ${response.status} with a body that is not JSON`,
			);
		}
		const access = data?.access_token;
		const refresh = data?.refresh_token;
		const expiresIn = data?.expires_in;
		if (!isWellFormedToken(access)) {
			throw new TokenEndpointError(
				"malformed",
				`the token endpoint ${shown} answered without a usable access token`,
			);
		}
		if (!isWellFormedToken(refresh)) {
			throw new TokenEndpointError(
				"malformed",
				`the token endpoint ${shown} answered without a usable refresh token`,
			);
		}
		if (typeof expiresIn !== "number" || !Number.isFinite(expiresIn) || expiresIn < 0 || expiresIn > MAX_LIFETIME_S) {
			throw new TokenEndpointError("malformed", `the token endpoint ${shown} answered without a usable expiry`);
		}
		const refreshExpiresIn = data?.refresh_token_expires_in;
		const refreshLifetime =
			typeof refreshExpiresIn === "number" && refreshExpiresIn > 0 && refreshExpiresIn <= MAX_LIFETIME_S
				? { refreshExpiresInMs: refreshExpiresIn * 1000 }
				: {};
		const account = readAccountIdentity(data, [access, refresh, ...sent]);
		return { access, refresh, expiresInMs: expiresIn * 1000, ...refreshLifetime, ...(account ? { account } : {}) };
	}

	/** Only the OAuth error code is kept from the body: descriptions can quote the request's tokens. */
	private failure(status: number, text: string): TokenEndpointError {
		let code: string | undefined;
		try {
			const parsed = JSON.parse(text) as { error?: unknown };
			const candidate =
				typeof parsed.error === "object" && parsed.error !== null
					? (parsed.error as { type?: unknown }).type
					: parsed.error;
			if (typeof candidate === "string" && /^[a-z_]{1,40}$/.test(candidate)) code = candidate;
		} catch {
			// not JSON: no code
		}
		if (code === "invalid_grant") {
			return new TokenEndpointError(
				"invalid_grant",
				`the token endpoint rejected the refresh token (invalid_grant)`,
				status,
			);
		}
		const kind: TokenEndpointErrorKind = status >= 500 ? "server" : "rejected";
		return new TokenEndpointError(
			kind,
			`the token endpoint answered HTTP ${status}${code ? ` (${code})` : ""}`,
			status,
		);
	}
}

const EMAIL_PATTERN = /^[^\s@]{1,64}@[^\s@]{1,190}$/;

/**
 * The account a token answer names, read tolerantly: only well-shaped, bounded, printable strings that hold no
 * token; anything else is ignored (never an error: the answer is usable without it).
 */
export function readAccountIdentity(data: unknown, secrets: readonly string[] = []): AccountIdentity | undefined {
	const record = (value: unknown): Record<string, unknown> | undefined =>
		typeof value === "object" && value !== null && !Array.isArray(value)
			? (value as Record<string, unknown>)
			: undefined;
	const clean = (value: unknown, max: number): string | undefined => {
		if (typeof value !== "string" || value.length === 0 || value.length > max) return undefined;
		if (/[\p{Cc}\p{Cf}]/u.test(value) || value.trim() !== value) return undefined;
		return redactSecrets(value, secrets) === value ? value : undefined;
	};
	const top = record(data);
	const email = clean(record(top?.account)?.email_address, 254);
	const organization = clean(record(top?.organization)?.name, 120);
	const identity: AccountIdentity = {
		...(email && EMAIL_PATTERN.test(email) ? { email } : {}),
		...(organization ? { organization } : {}),
	};
	return identity.email || identity.organization ? identity : undefined;
}

/** 3xx with a target: 301, 302, 303, 307, 308 (and anything else in the range). */
export function isRedirect(status: number): boolean {
	return status >= 300 && status < 400;
}

/** "<what> answered with a redirect (HTTP 307 to https://elsewhere/path)", the target without user info or query. */
export function redirectText(what: string, response: Response): string {
	const location = response.headers.get("location");
	let target = "";
	if (location) {
		try {
			target = ` to ${shownUrl(new URL(location, response.url || undefined).href)}`;
		} catch {
			target = "";
		}
	}
	return `${what} answered with a redirect (HTTP ${response.status}${target})`;
}

function networkCause(error: unknown, sent: string[]): string {
	const cause = error instanceof Error && error.cause instanceof Error ? error.cause : error;
	const code = (cause as { code?: unknown })?.code;
	if (typeof code === "string") return code;
	return redactSecrets(errorText(cause), sent).slice(0, 120);
}
