/**
 * The token broker: the only code that reads, refreshes or writes tokens. This file holds its public API and the
 * refresh protocol (one refresh of a pair anywhere: the lock, the "sending" record, the lease checks, the
 * needs-login marks); how the keychain item itself is read and written compare-and-swap is keychain-items.ts, and
 * the boundary types are broker-types.ts. A little over 300 lines on purpose: the API and the protocol share their
 * state and call into each other, and apart they would be one module holding the other's internals.
 */
import { type CodeExchange, type TokenEndpoint, TokenEndpointError, type TokenGrant } from "../oauth/token-endpoint.ts";
import { DEFAULT_REFRESH_MARGIN_MS } from "../settings.ts";
import { errorText } from "../text.ts";
import {
	AccountError,
	type AccountHealth,
	type AccountStatus,
	type Clock,
	type LoginMarks,
	type RefreshLease,
	type RefreshLock,
	type RefreshOptions,
	type StoredComparison,
	systemClock,
	type TokenBrokerOptions,
} from "./broker-types.ts";
import { parseCredentials, type StoredCredentials } from "./credentials.ts";
import { KeychainItems, type Snapshot } from "./keychain-items.ts";

// Re-exported: callers import the broker and its contract (AccountError, the boundary types) from one place.
export * from "./broker-types.ts";

/** How often a waiting request looks again whether another process's refresh has ended. */
const WAIT_POLL_MS = 200;

type Step = { kind: "done"; access: string } | { kind: "wait"; why: string } | { kind: "again" };

/**
 * The only code that reads, refreshes or writes tokens. Every call reads the keychain afresh, so an item
 * deleted in the keychain UI is respected by the very next request; nothing caches a token (a rotated pair the
 * keychain refused is held only while the keychain still holds the very pair it replaces: unsaved-pairs.ts).
 */
export class TokenBroker {
	private readonly endpoint: TokenEndpoint;
	private readonly lock: RefreshLock;
	private readonly marks: LoginMarks;
	private readonly clock: Clock;
	private readonly refreshMarginMs: number;
	private readonly waitMs: number;
	private readonly inFlight = new Map<string, Promise<string>>();
	private readonly items: KeychainItems;

	constructor(options: TokenBrokerOptions) {
		this.endpoint = options.endpoint;
		this.lock = options.lock;
		this.marks = options.marks;
		this.clock = options.clock ?? systemClock;
		this.refreshMarginMs = options.refreshMarginMs ?? DEFAULT_REFRESH_MARGIN_MS;
		this.waitMs = options.waitMs ?? 60_000;
		this.items = new KeychainItems(options.secrets, options.lock, options.retryWriteMs ?? 5_000);
	}

	get backend(): string {
		return this.items.backend;
	}

	/** Why the token endpoint sends nothing (a refused PI_MCC_TOKEN_URL), for /mcc-status. */
	get tokenUrlProblem(): string | undefined {
		return this.endpoint.urlProblem;
	}

	/** A valid access token for the account, refreshed first when it expires within the margin. */
	async getAccessToken(label: string): Promise<string> {
		const { credentials } = await this.items.read(label);
		this.items.unsaved.retrySoon(label);
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
		await this.items.locked(label, async (lease) => {
			this.items.unsaved.forget(label);
			await this.items.writeLogin(label, lease, credentials);
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
			const removed = await this.items.delete(label);
			await this.marks.clear(label);
			return removed;
		};
		try {
			return await this.items.locked(label, removeItem);
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
		const secret = await this.items.readSecret(label);
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
			const { credentials } = await this.items.read(label);
			const fresh = this.isFresh(credentials);
			if (!fresh && (await this.marks.isMarked(label, credentials))) {
				return { label, status: "needs_login", expiresAt: credentials.expires, detail: needsLoginText(label) };
			}
			const unsaved = this.items.unsaved.has(label)
				? {
						detail:
							`The renewed login of "${label}" is not in the ${this.items.backend} yet (the keychain refused it): ` +
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
			const step = await this.items.locked(label, async (lease) => {
				const snapshot = await this.items.read(label);
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
			if ((await this.items.readSecret(label)) !== start.stored) return { kind: "again" };
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
			return this.items.locked(label, (again) => this.storeRotation(label, again, start, next, relocks + 1));
		}
		const written = await this.items.writeRotation(label, start, next);
		if (written === "newer") return { kind: "again" };
		// Any successful refresh ends a needs-login mark (one set for an older pair by another process, too); so does
		// a pair kept in memory.
		await this.marks.clear(label).catch(() => {});
		return { kind: "done", access: next.access };
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
