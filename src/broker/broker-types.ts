/**
 * What the token broker shares with the code around it: the error and results it hands out, and the interfaces of
 * the parts it is given (a refresh lock, needs-login marks, a clock), each an interface so a test swaps only what it
 * must. Apart from the broker so that this contract reads in one short file, without the refresh protocol around
 * it; token-broker.ts re-exports all of it, so callers keep one import path.
 */
import type { SecretStore } from "../keychain/secret-store.ts";
import type { TokenEndpoint } from "../oauth/token-endpoint.ts";
import type { StoredCredentials } from "./credentials.ts";

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

export interface RefreshOptions {
	/** Refresh even when the access token is fresh (e.g. to make a copied refresh token worthless). */
	force?: boolean;
}
