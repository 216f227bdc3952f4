/**
 * The token broker: the only code that reads, refreshes or writes tokens, with the boundaries it needs (a secret
 * store, a token endpoint, a refresh lock, needs-login marks, a clock), each an interface so a test swaps only
 * what it must.
 */
import { KeychainError, type SecretStore } from "../keychain/secret-store.ts";
import { type CodeExchange, type TokenEndpoint, TokenEndpointError, type TokenGrant } from "../oauth/token-endpoint.ts";
import { DEFAULT_REFRESH_MARGIN_MS } from "../settings.ts";
import { errorText } from "../text.ts";
import {
	CredentialFormatError,
	CredentialTooLargeError,
	parseCredentials,
	type StoredCredentials,
	sameCredentials,
	serializeCredentials,
} from "./credentials.ts";

export type AccountErrorKind = "revoked" | "needs_login" | "unusable" | "keychain" | "refresh_failed" | "busy";

/**
 * Why one account cannot be used right now. The message names the account and the command that fixes it,
 * and never contains a token.
 */
export class AccountError extends Error {
	override readonly name = "AccountError";
	constructor(
		readonly label: string,
		readonly kind: AccountErrorKind,
		message: string,
	) {
		super(message);
	}
}

/** Time as the broker sees it; a test swaps it to make tokens expire without waiting. */
export interface Clock {
	now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

/** Serialises refreshes of one account across processes (a lock file beside the config). */
export interface RefreshLock {
	run<T>(label: string, fn: () => Promise<T>): Promise<T>;
}

/** Remembers, across processes, which accounts Anthropic told to log in again (invalid_grant). */
export interface LoginMarks {
	isMarked(label: string): Promise<boolean>;
	mark(label: string, reason: string): Promise<void>;
	clear(label: string): Promise<void>;
}

export type AccountStatus = "ok" | "expired" | "revoked" | "needs_login" | "unusable" | "keychain_error";

export interface AccountHealth {
	label: string;
	status: AccountStatus;
	/** Access-token expiry when the item is readable. */
	expiresAt?: number;
	/** Refresh-token expiry, when the token endpoint ever stated one. */
	refreshExpiresAt?: number;
	/** What is wrong, with the fix, for every status but ok/expired. */
	detail?: string;
}

/** How an existing keychain item compares with a token pair (for migration and re-login). */
export type StoredComparison = "absent" | "same" | "different" | "unreadable";

export interface TokenBrokerOptions {
	secrets: SecretStore;
	endpoint: TokenEndpoint;
	lock: RefreshLock;
	marks: LoginMarks;
	clock?: Clock;
	/** Refresh when the access token expires within this margin. */
	refreshMarginMs?: number;
}

/**
 * The only code that reads, refreshes or writes tokens. Every call reads the keychain afresh, so an item
 * deleted in the keychain UI is respected by the very next request; nothing caches a token.
 */
export class TokenBroker {
	private readonly secrets: SecretStore;
	private readonly endpoint: TokenEndpoint;
	private readonly lock: RefreshLock;
	private readonly marks: LoginMarks;
	private readonly clock: Clock;
	private readonly refreshMarginMs: number;
	private readonly inFlight = new Map<string, Promise<string>>();

	constructor(options: TokenBrokerOptions) {
		this.secrets = options.secrets;
		this.endpoint = options.endpoint;
		this.lock = options.lock;
		this.marks = options.marks;
		this.clock = options.clock ?? systemClock;
		this.refreshMarginMs = options.refreshMarginMs ?? DEFAULT_REFRESH_MARGIN_MS;
	}

	get backend(): string {
		return this.secrets.backend;
	}

	get tokenUrl(): string {
		return this.endpoint.url;
	}

	/** A valid access token for the account, refreshed first when it expires within the margin. */
	async getAccessToken(label: string): Promise<string> {
		const credentials = await this.load(label);
		if (this.isFresh(credentials)) return credentials.access;
		// One refresh per account per process at a time; the file lock does the same across processes.
		let pending = this.inFlight.get(label);
		if (!pending) {
			pending = this.refreshUnderLock(label).finally(() => this.inFlight.delete(label));
			this.inFlight.set(label, pending);
		}
		return pending;
	}

	/** Stores a fresh login (replacing any earlier pair in place), verifies it, and clears a needs-login mark. */
	async storeLogin(label: string, credentials: StoredCredentials): Promise<void> {
		await this.writeVerified(label, credentials);
		await this.marks.clear(label);
	}

	/** Completes an OAuth authorization-code login: exchanges the code and stores the pair. */
	async loginWithCode(
		label: string,
		exchange: CodeExchange,
	): Promise<{ expires: number; account?: TokenGrant["account"] }> {
		let credentials: StoredCredentials;
		let account: TokenGrant["account"];
		try {
			const grant = await this.endpoint.exchangeCode(exchange);
			credentials = this.fromGrant(grant);
			account = grant.account;
		} catch (error) {
			if (error instanceof TokenEndpointError) {
				throw new AccountError(
					label,
					"needs_login",
					`Login of "${label}" failed: ${error.message}. Run /mcc-login ${label} again.`,
				);
			}
			throw error;
		}
		await this.storeLogin(label, credentials);
		return { expires: credentials.expires, ...(account ? { account } : {}) };
	}

	/**
	 * Refreshes the account's pair once now, however fresh it is, under its refresh lock, and stores the new pair
	 * before returning: the refresh token any copy of the old pair holds is then spent (pi-mcc-migrate --rotate).
	 */
	async rotate(label: string): Promise<void> {
		await this.refreshUnderLock(label, true);
	}

	/** Deletes the account's keychain item; `false` when there was none. */
	async remove(label: string): Promise<boolean> {
		try {
			const removed = await this.secrets.delete(label);
			await this.marks.clear(label);
			return removed;
		} catch (error) {
			throw this.wrapKeychain(label, error);
		}
	}

	/** Compares the stored item with a token pair without revealing either. */
	async compareStored(label: string, credentials: StoredCredentials): Promise<StoredComparison> {
		let secret: string | null;
		try {
			secret = await this.secrets.get(label);
		} catch (error) {
			throw this.wrapKeychain(label, error);
		}
		if (secret === null) return "absent";
		try {
			const stored = parseCredentials(secret);
			return stored.access === credentials.access && stored.refresh === credentials.refresh ? "same" : "different";
		} catch {
			return "unreadable";
		}
	}

	/** The account's state for /mcc-status; never throws and never reveals a token. */
	async describe(label: string): Promise<AccountHealth> {
		try {
			const credentials = await this.load(label);
			const fresh = this.isFresh(credentials);
			if (!fresh && (await this.marks.isMarked(label))) {
				return { label, status: "needs_login", expiresAt: credentials.expires, detail: needsLoginText(label) };
			}
			return {
				label,
				status: fresh ? "ok" : "expired",
				expiresAt: credentials.expires,
				...(credentials.refreshExpires !== undefined ? { refreshExpiresAt: credentials.refreshExpires } : {}),
			};
		} catch (error) {
			if (error instanceof AccountError) {
				const status: AccountStatus =
					error.kind === "revoked" ? "revoked" : error.kind === "unusable" ? "unusable" : "keychain_error";
				return { label, status, detail: error.message };
			}
			return { label, status: "keychain_error", detail: errorText(error) };
		}
	}

	private fromGrant(grant: TokenGrant, previous?: StoredCredentials): StoredCredentials {
		const now = this.clock.now();
		const refreshExpires =
			grant.refreshExpiresInMs !== undefined ? now + grant.refreshExpiresInMs : previous?.refreshExpires;
		return {
			access: grant.access,
			refresh: grant.refresh,
			expires: now + grant.expiresInMs,
			...(refreshExpires !== undefined ? { refreshExpires } : {}),
		};
	}

	private isFresh(credentials: StoredCredentials): boolean {
		return credentials.expires - this.refreshMarginMs > this.clock.now();
	}

	private async load(label: string): Promise<StoredCredentials> {
		let secret: string | null;
		try {
			secret = await this.secrets.get(label);
		} catch (error) {
			throw this.wrapKeychain(label, error);
		}
		if (secret === null) {
			throw new AccountError(
				label,
				"revoked",
				`Account "${label}" has no item in the ${this.secrets.backend} (it was deleted there, or never logged ` +
					`in). Run /mcc-login ${label} to restore it, or /mcc-remove ${label} to forget it.`,
			);
		}
		try {
			return parseCredentials(secret);
		} catch (error) {
			const reason = error instanceof CredentialFormatError ? error.message : "it cannot be read";
			throw new AccountError(
				label,
				"unusable",
				`Account "${label}" cannot be used: its ${this.secrets.backend} item was changed outside this extension ` +
					`(${reason}). Run /mcc-login ${label} to replace it, or /mcc-remove ${label} to forget it.`,
			);
		}
	}

	private async refreshUnderLock(label: string, force = false): Promise<string> {
		return this.lock.run(label, async () => {
			// Another process may have refreshed while this one waited for the lock: its pair is in the keychain,
			// and the refresh token this process read before is already dead.
			const current = await this.load(label);
			if (!force && this.isFresh(current)) return current.access;
			if (await this.marks.isMarked(label)) throw new AccountError(label, "needs_login", needsLoginText(label));
			let next: StoredCredentials;
			try {
				const grant = await this.endpoint.refresh(current.refresh);
				next = this.fromGrant(grant, current);
			} catch (error) {
				if (error instanceof TokenEndpointError && error.kind === "invalid_grant") {
					await this.marks.mark(label, "refresh token rejected (invalid_grant)");
					throw new AccountError(label, "needs_login", needsLoginText(label));
				}
				const reason = error instanceof TokenEndpointError ? error.message : "unexpected failure";
				const what = force
					? "its token pair could not be rotated"
					: "its access token has expired and could not be renewed";
				throw new AccountError(
					label,
					"refresh_failed",
					`Account "${label}": ${what}: ${reason}. ` +
						"The stored login is unchanged; try again when the token endpoint answers.",
				);
			}
			// The old refresh token is dead now: store the new pair before anyone uses it.
			await this.writeVerified(label, next);
			return next.access;
		});
	}

	private async writeVerified(label: string, credentials: StoredCredentials): Promise<void> {
		let secret: string;
		try {
			secret = serializeCredentials(credentials);
			// Never replace an item with one this broker could not read back.
			parseCredentials(secret);
		} catch (error) {
			if (error instanceof CredentialTooLargeError)
				throw new AccountError(label, "refresh_failed", tooLargeText(label, error));
			const reason = error instanceof CredentialFormatError ? error.message : "it cannot be stored";
			throw new AccountError(
				label,
				"needs_login",
				`The new login of "${label}" could not be stored (${reason}); the keychain item was not changed. ` +
					`Run /mcc-login ${label}.`,
			);
		}
		let lastError: unknown;
		for (let attempt = 0; attempt < 2; attempt++) {
			try {
				await this.secrets.set(label, secret);
				const readBack = await this.secrets.get(label);
				if (readBack !== null && sameCredentials(parseCredentials(readBack), credentials)) return;
				lastError = new Error("the keychain returned something else than what was written");
			} catch (error) {
				lastError = error;
			}
		}
		const wrapped = this.wrapKeychain(label, lastError);
		throw new AccountError(
			label,
			"keychain",
			`${wrapped.message} The new login of "${label}" could not be stored; run /mcc-login ${label} once the ` +
				"keychain works.",
		);
	}

	private wrapKeychain(label: string, error: unknown): AccountError {
		if (error instanceof AccountError) return error;
		const message =
			error instanceof KeychainError ? error.message : `The ${this.secrets.backend} failed for account "${label}".`;
		return new AccountError(label, "keychain", message);
	}
}

function needsLoginText(label: string): string {
	return `Account "${label}" must log in again: Anthropic rejected its refresh token. Run /mcc-login ${label}.`;
}

/** A pair too large for a Windows item: nothing is written, so the stored login stays as it was. */
function tooLargeText(label: string, error: CredentialTooLargeError): string {
	return (
		`The new login of "${label}" was not stored: ${error.message}, a limit this extension applies on every ` +
		`system so accounts work everywhere. Nothing was written: the stored login of "${label}", if any, is ` +
		`unchanged (after a refresh, if Anthropic already retired its refresh token, "${label}" will ask for ` +
		`/mcc-login ${label}). Tokens this large mean Anthropic ` +
		"changed their format: update pi-multi-claude-code, or report it if no update handles it."
	);
}
