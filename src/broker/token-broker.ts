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
import { type UnsavedPair, UnsavedPairs } from "./unsaved-pairs.ts";

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

/** The holder's view of an account's refresh lock: a holder frozen past the stale time loses it to a waiter. */
export interface RefreshLease {
	/** Whether no other process took the lock over since this one took it. */
	isHeld(): Promise<boolean>;
}

/**
 * Serialises refreshes, logins and removals of one account across processes (a lock file beside the config),
 * and remembers which process has a refresh out, so that a holder frozen mid-request (its lock taken over) never
 * sees its refresh token sent a second time by another process.
 */
export interface RefreshLock {
	/** Runs `fn` holding the lock. A lock that gives no lease (an in-process one) counts as never lost. */
	run<T>(label: string, fn: (lease?: RefreshLease) => Promise<T>): Promise<T>;
	/**
	 * The live process other than this one that sent the refresh of the pair expiring at `from` and has not
	 * finished (e.g. "pi process 1234, which is stopped"), or `undefined`. A process that died does not count.
	 * Optional, like the two below: a lock within one process has no other process to hear about.
	 */
	otherSender?(label: string, from: number): Promise<string | undefined>;
	/** Recorded before the refresh token leaves: this process sends the refresh of the pair expiring at `from`. */
	sending?(label: string, from: number): Promise<void>;
	/** This process's refresh has an outcome; its record goes (one another process wrote since stays). */
	sent?(label: string): Promise<void>;
}

const NEVER_LOST: RefreshLease = { isHeld: async () => true };

/** Which pair Anthropic rejected, by the access token's expiry (not secret). */
export type RejectedPair = Pick<StoredCredentials, "expires">;

/**
 * Remembers, across processes, which accounts Anthropic told to log in again (invalid_grant). A mark names the
 * pair that was rejected: it stops refreshes of that pair only, never of a newer one another process stored.
 */
export interface LoginMarks {
	/** Whether the account is marked; given a pair, whether it is the pair marked (a mark naming none counts). */
	isMarked(label: string, pair?: RejectedPair): Promise<boolean>;
	mark(label: string, reason: string, pair?: RejectedPair): Promise<void>;
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
	/** How long a request waits for another process that has this account's refresh out (default 60 s). */
	waitMs?: number;
	/**
	 * A rotated pair the keychain would not store is written again after this long, then after twice that, … (at
	 * most 10 times on a timer), and on later requests at most this often (default 5 s).
	 */
	retryWriteMs?: number;
}

/** How often a waiting request looks again whether another process's refresh has ended. */
const WAIT_POLL_MS = 200;

/** What a refresh read under the lock: the item as stored (for compare-and-swap) and the pair it holds. */
interface Snapshot {
	stored: string;
	credentials: StoredCredentials;
}

type Step = { kind: "done"; access: string } | { kind: "wait"; why: string } | { kind: "again" };

export interface RefreshOptions {
	/** Refresh even when the access token is fresh (e.g. to make a copied refresh token worthless). */
	force?: boolean;
}

/**
 * The only code that reads, refreshes or writes tokens. Every call reads the keychain afresh, so an item
 * deleted in the keychain UI is respected by the very next request; nothing caches a token (a rotated pair the
 * keychain refused is held only while the keychain still holds the very pair it replaces: unsaved-pairs.ts).
 */
export class TokenBroker {
	private readonly secrets: SecretStore;
	private readonly endpoint: TokenEndpoint;
	private readonly lock: RefreshLock;
	private readonly marks: LoginMarks;
	private readonly clock: Clock;
	private readonly refreshMarginMs: number;
	private readonly waitMs: number;
	private readonly inFlight = new Map<string, Promise<string>>();
	private readonly unsaved: UnsavedPairs;

	constructor(options: TokenBrokerOptions) {
		this.secrets = options.secrets;
		this.endpoint = options.endpoint;
		this.lock = options.lock;
		this.marks = options.marks;
		this.clock = options.clock ?? systemClock;
		this.refreshMarginMs = options.refreshMarginMs ?? DEFAULT_REFRESH_MARGIN_MS;
		this.waitMs = options.waitMs ?? 60_000;
		this.unsaved = new UnsavedPairs(options.retryWriteMs ?? 5_000, (label, entry) => this.retryWrite(label, entry));
	}

	get backend(): string {
		return this.secrets.backend;
	}

	get tokenUrl(): string {
		return this.endpoint.url;
	}

	/** A valid access token for the account, refreshed first when it expires within the margin. */
	async getAccessToken(label: string): Promise<string> {
		const { credentials } = await this.read(label);
		this.unsaved.retrySoon(label);
		if (this.isFresh(credentials)) return credentials.access;
		// One refresh per account per process at a time; the file lock does the same across processes.
		let pending = this.inFlight.get(label);
		if (!pending) {
			pending = this.refreshUnderLock(label).finally(() => this.inFlight.delete(label));
			this.inFlight.set(label, pending);
		}
		return pending;
	}

	/**
	 * Stores a fresh login (replacing any earlier pair in place), verifies it, and clears a needs-login mark.
	 * Under the account's refresh lock, so a refresh running elsewhere cannot write its older pair over it.
	 */
	async storeLogin(label: string, credentials: StoredCredentials): Promise<void> {
		await this.locked(label, async (lease) => {
			this.unsaved.forget(label);
			await this.writeLogin(label, lease, credentials);
			await this.marks.clear(label);
		});
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
					`Login of "${label}" failed: ${withoutStop(error.message)}. Run /mcc-login ${label} again.`,
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
		await this.refreshUnderLock(label, { force: true });
	}

	/**
	 * Deletes the account's keychain item; `false` when there was none. Under the refresh lock when it can be had,
	 * so no refresh in progress writes the item back; if the lock cannot be had, the item is deleted anyway (a
	 * refresh re-reads the item before writing and leaves a deleted one deleted).
	 */
	async remove(label: string): Promise<boolean> {
		const removeItem = async (): Promise<boolean> => {
			this.unsaved.forget(label);
			let removed: boolean;
			try {
				removed = await this.secrets.delete(label);
			} catch (error) {
				throw this.wrapKeychain(label, error);
			}
			await this.marks.clear(label);
			return removed;
		};
		try {
			return await this.locked(label, removeItem);
		} catch (error) {
			// The lock could not be had (busy, or its directory refused): a removal is never held back by that.
			if (error instanceof AccountError && (error.kind === "busy" || error.kind === "refresh_failed")) {
				return removeItem();
			}
			throw error;
		}
	}

	/** Compares the stored item with a token pair without revealing either. */
	async compareStored(label: string, credentials: StoredCredentials): Promise<StoredComparison> {
		const secret = await this.readSecret(label);
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
			const { credentials } = await this.read(label);
			const fresh = this.isFresh(credentials);
			if (!fresh && (await this.marks.isMarked(label, credentials))) {
				return { label, status: "needs_login", expiresAt: credentials.expires, detail: needsLoginText(label) };
			}
			const unsaved = this.unsaved.has(label)
				? {
						detail:
							`The renewed login of "${label}" is not in the ${this.secrets.backend} yet (the keychain refused it): ` +
							`this pi keeps using it and keeps trying to store it. If this pi ends first, run /mcc-login ${label}.`,
					}
				: {};
			return {
				label,
				status: fresh ? "ok" : "expired",
				expiresAt: credentials.expires,
				...(credentials.refreshExpires !== undefined ? { refreshExpiresAt: credentials.refreshExpires } : {}),
				...unsaved,
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

	/**
	 * Refreshes the account under its lock: at most one refresh of a pair anywhere, stored compare-and-swap.
	 * `force` refreshes a fresh pair too (once; if another process rotated it meanwhile, that counts).
	 */
	async refreshUnderLock(label: string, options: RefreshOptions = {}): Promise<string> {
		const deadline = performance.now() + this.waitMs;
		let force = options.force ?? false;
		let firstSeen: string | undefined;
		for (let round = 0; ; round++) {
			const step = await this.locked(label, async (lease) => {
				const snapshot = await this.read(label);
				firstSeen ??= snapshot.stored;
				// A pair another process stored since the first look is a rotation too.
				if (snapshot.stored !== firstSeen) force = false;
				return this.refreshHeld(label, lease, snapshot, force);
			});
			if (step.kind === "done") return step.access;
			const why = step.kind === "wait" ? step.why : changingText(label);
			if (performance.now() >= deadline || (step.kind === "again" && round >= 20)) {
				throw new AccountError(label, "busy", why);
			}
			if (step.kind === "wait") await sleep(WAIT_POLL_MS);
		}
	}

	/** One attempt under the lock, from what the keychain held when the lock was taken. */
	private async refreshHeld(label: string, lease: RefreshLease, start: Snapshot, force: boolean): Promise<Step> {
		const source = start.credentials;
		// Another process may have refreshed while this one waited for the lock: its pair is in the keychain,
		// and the refresh token this process read before is already dead.
		if (!force && this.isFresh(source)) return { kind: "done", access: source.access };
		if (await this.marks.isMarked(label, source)) throw new AccountError(label, "needs_login", needsLoginText(label));
		const sender = await this.lock.otherSender?.(label, source.expires);
		if (sender) {
			return {
				kind: "wait",
				why:
					`Account "${label}": ${sender} sent this account's refresh and has not stored the answer yet; this ` +
					"process waits for it rather than send the same refresh token twice. If that process is stopped " +
					"(Ctrl-Z), resume it (fg) or end it.",
			};
		}
		// A holder frozen past the stale time may have lost the lock to a process that is refreshing right now.
		if (!(await lease.isHeld())) return { kind: "wait", why: lostLockText(label) };
		await this.lock.sending?.(label, source.expires);
		let next: StoredCredentials;
		try {
			next = this.fromGrant(await this.endpoint.refresh(source.refresh), source);
		} catch (error) {
			await this.lock.sent?.(label).catch(() => {});
			return this.refreshRefused(label, start, error, force);
		}
		try {
			return await this.storeRotation(label, lease, start, next, 0);
		} finally {
			await this.lock.sent?.(label).catch(() => {});
		}
	}

	private async refreshRefused(label: string, start: Snapshot, error: unknown, force: boolean): Promise<Step> {
		if (error instanceof TokenEndpointError && error.kind === "invalid_grant") {
			// Another process may have stored a newer pair meanwhile: then the rejection says nothing about it.
			if ((await this.readSecret(label)) !== start.stored) return { kind: "again" };
			await this.marks.mark(label, "refresh token rejected (invalid_grant)", start.credentials);
			throw new AccountError(label, "needs_login", needsLoginText(label));
		}
		const reason = error instanceof TokenEndpointError ? withoutStop(error.message) : "unexpected failure";
		const retry =
			error instanceof TokenEndpointError && (error.kind === "refused_url" || error.kind === "redirect")
				? ""
				: "; try again when the token endpoint answers";
		const what = force
			? "its token pair could not be rotated"
			: "its access token has expired and could not be renewed";
		throw new AccountError(
			label,
			"refresh_failed",
			`Account "${label}": ${what}: ${reason}. The stored login is unchanged${retry}.`,
		);
	}

	/**
	 * Stores a rotated pair compare-and-swap: right before writing, the lock must still be held and the item must
	 * still be what the refresh started from. A newer item (a login) or a deleted one (a removal) wins and ours is
	 * dropped. A lock lost while the request was out is taken again first: the endpoint has already invalidated
	 * the old refresh token, so this pair must not be dropped for that.
	 */
	private async storeRotation(
		label: string,
		lease: RefreshLease,
		start: Snapshot,
		next: StoredCredentials,
		relocks: number,
	): Promise<Step> {
		if (!(await lease.isHeld())) {
			if (relocks >= 3) throw new AccountError(label, "busy", lostLockText(label));
			return this.locked(label, (again) => this.storeRotation(label, again, start, next, relocks + 1));
		}
		const secret = serializeForKeychain(label, next);
		// What the item may hold and still be ours to replace: what the refresh started from, or what our own
		// failed attempt left there.
		let replaceable = start.stored;
		for (let attempt = 0; attempt < 2; attempt++) {
			const now = await this.peek(label);
			// Unreadable: no compare, so no write; the retries compare once the keychain answers.
			if (now === undefined) break;
			if (sameSecret(now, secret)) return this.rotated(label, next);
			if (now !== replaceable) return this.keepNewer(label, now);
			try {
				await this.secrets.set(label, secret);
			} catch {
				// A write abandoned on its time bound may still land: know which before looking again.
				await this.settle(label);
				continue;
			}
			const readBack = await this.peek(label);
			if (readBack === undefined) continue;
			if (sameSecret(readBack, secret)) return this.rotated(label, next);
			// The keychain kept something else than what was written.
			if (readBack !== null) replaceable = readBack;
		}
		// The old refresh token is dead at the endpoint: serve the new pair from memory rather than force a login.
		const now = await this.peek(label);
		if (now !== undefined && sameSecret(now, secret)) return this.rotated(label, next);
		if (now !== undefined && now !== replaceable) return this.keepNewer(label, now);
		this.unsaved.keep(label, replaceable, next);
		await this.marks.clear(label).catch(() => {});
		return { kind: "done", access: next.access };
	}

	private async rotated(label: string, next: StoredCredentials): Promise<Step> {
		this.unsaved.forget(label);
		// Any successful refresh ends a needs-login mark (one set for an older pair by another process, too).
		await this.marks.clear(label).catch(() => {});
		return { kind: "done", access: next.access };
	}

	/** The item changed while the refresh was out: the newer state is kept, ours dropped. */
	private keepNewer(label: string, now: string | null): Step {
		this.unsaved.forget(label);
		if (now === null) {
			throw new AccountError(
				label,
				"revoked",
				`Account "${label}" was removed from the ${this.secrets.backend} while its token was being renewed; the ` +
					`renewed login was dropped, so it stays removed. Run /mcc-login ${label} to restore it.`,
			);
		}
		return { kind: "again" };
	}

	private async writeLogin(label: string, lease: RefreshLease, credentials: StoredCredentials): Promise<void> {
		const secret = serializeForKeychain(label, credentials);
		let lastError: unknown;
		for (let attempt = 0; attempt < 2; attempt++) {
			if (!(await lease.isHeld())) {
				return this.locked(label, (again) => this.writeLogin(label, again, credentials));
			}
			try {
				await this.secrets.set(label, secret);
				const readBack = await this.secrets.get(label);
				if (sameSecret(readBack, secret)) return;
				lastError = new Error("the keychain returned something else than what was written");
			} catch (error) {
				lastError = error;
				await this.settle(label);
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

	/**
	 * Another try at storing an unsaved pair, compare-and-swap under the lock: whether the pair is settled (stored,
	 * or dropped for a deleted item or another login).
	 */
	private retryWrite(label: string, entry: UnsavedPair): Promise<boolean> {
		return this.locked(label, async (lease) => {
			if (!(await lease.isHeld())) return false;
			const secret = serializeForKeychain(label, entry.pair);
			const now = await this.readSecret(label);
			if (sameSecret(now, secret) || now !== entry.replaces) return true;
			await this.secrets.set(label, secret).catch(() => this.settle(label));
			const readBack = await this.readSecret(label);
			if (sameSecret(readBack, secret)) return true;
			// A keychain that kept something else than what was written: that is what the next try replaces.
			if (readBack !== null) entry.replaces = readBack;
			return false;
		});
	}

	/** Waits until no keychain call this process abandoned for the account can still land (bounded by the store). */
	private async settle(label: string): Promise<void> {
		await this.secrets.settled?.(label).catch(() => {});
	}

	/**
	 * Runs `fn` under the account's refresh lock and releases the lock only once every keychain call this process
	 * started for the account has settled, so a write abandoned on timeout cannot land after another process took
	 * over.
	 */
	private locked<T>(label: string, fn: (lease: RefreshLease) => Promise<T>): Promise<T> {
		return this.lock.run(label, async (lease) => {
			try {
				return await fn(lease ?? NEVER_LOST);
			} finally {
				await this.settle(label);
			}
		});
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

	/** The stored secret, `null` for none, `undefined` when the keychain did not answer. */
	private async peek(label: string): Promise<string | null | undefined> {
		return this.secrets.get(label).catch(() => undefined);
	}

	private async readSecret(label: string): Promise<string | null> {
		try {
			return await this.secrets.get(label);
		} catch (error) {
			throw this.wrapKeychain(label, error);
		}
	}

	/**
	 * The account's pair as the keychain holds it: read afresh on every call, so an item deleted in the keychain UI
	 * is respected by the very next request. Only an unsaved rotation of exactly the stored pair is served from
	 * memory instead; any other keychain state drops it.
	 */
	private async read(label: string): Promise<Snapshot> {
		const secret = await this.readSecret(label);
		const unsaved = this.unsaved.get(label);
		if (unsaved && secret === unsaved.replaces) return { stored: secret, credentials: unsaved.pair };
		if (unsaved) this.unsaved.forget(label);
		if (secret === null) {
			throw new AccountError(
				label,
				"revoked",
				`Account "${label}" has no item in the ${this.secrets.backend} (it was deleted there, or never logged ` +
					`in). Run /mcc-login ${label} to restore it, or /mcc-remove ${label} to forget it.`,
			);
		}
		try {
			return { stored: secret, credentials: parseCredentials(secret) };
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

	private wrapKeychain(label: string, error: unknown): AccountError {
		if (error instanceof AccountError) return error;
		const message =
			error instanceof KeychainError ? error.message : `The ${this.secrets.backend} failed for account "${label}".`;
		return new AccountError(label, "keychain", message);
	}
}

/** Never replace an item with one this broker could not read back. */
function serializeForKeychain(label: string, credentials: StoredCredentials): string {
	try {
		const secret = serializeCredentials(credentials);
		parseCredentials(secret);
		return secret;
	} catch (error) {
		if (error instanceof CredentialTooLargeError) {
			throw new AccountError(label, "refresh_failed", tooLargeText(label, error));
		}
		const reason = error instanceof CredentialFormatError ? error.message : "it cannot be stored";
		throw new AccountError(
			label,
			"needs_login",
			`The new login of "${label}" could not be stored (${reason}); the keychain item was not changed. ` +
				`Run /mcc-login ${label}.`,
		);
	}
}

/** The keychain holds what was written: the same text, or text that reads as the same pair. */
function sameSecret(stored: string | null, written: string): boolean {
	if (stored === null) return false;
	if (stored === written) return true;
	try {
		return sameCredentials(parseCredentials(stored), parseCredentials(written));
	} catch {
		return false;
	}
}

function withoutStop(text: string): string {
	return text.replace(/\.$/, "");
}

function sleep(ms: number): Promise<void> {
	return new Promise((resolve) => setTimeout(resolve, ms));
}

function changingText(label: string): string {
	return `Account "${label}": its keychain item kept changing while its token was being renewed. Try again.`;
}

function lostLockText(label: string): string {
	return (
		`Account "${label}": another pi process took over this account's refresh lock while this one was not running ` +
		"(suspended or stopped); it did not send its refresh. Try again."
	);
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
