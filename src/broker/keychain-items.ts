/**
 * Each account's keychain item as the token broker sees it: read afresh on every call (a rotated pair the keychain
 * refused laid over it while the item still holds what that pair replaces: unsaved-pairs.ts), and written only under
 * the account's refresh lock, compare-and-swap, with every keychain call settled before the lock goes. Apart from
 * token-broker.ts so that the refresh protocol reads as its steps, and every rule about touching the item itself is
 * in one place; the broker (token-broker.ts) is the only user.
 */
import { KeychainError, type SecretStore } from "../keychain/secret-store.ts";
import { AccountError, type RefreshLease, type RefreshLock } from "./broker-types.ts";
import {
	CredentialFormatError,
	CredentialTooLargeError,
	parseCredentials,
	type StoredCredentials,
	sameCredentials,
	serializeCredentials,
} from "./credentials.ts";
import { type UnsavedPair, UnsavedPairs } from "./unsaved-pairs.ts";

const NEVER_LOST: RefreshLease = { isHeld: async () => true };

/** What a refresh read under the lock: the item as stored (for compare-and-swap) and the pair it holds. */
export interface Snapshot {
	stored: string;
	credentials: StoredCredentials;
}

/** What became of a rotated pair: stored, dropped for a newer item (a login), or kept in memory (unsaved). */
export type RotationWrite = "stored" | "newer" | "unsaved";

export class KeychainItems {
	/** Rotated pairs the keychain refused, with their retries (which write through `retryWrite`). */
	readonly unsaved: UnsavedPairs;

	constructor(
		private readonly secrets: SecretStore,
		private readonly lock: RefreshLock,
		retryWriteMs: number,
	) {
		this.unsaved = new UnsavedPairs(retryWriteMs, (label, entry) => this.retryWrite(label, entry));
	}

	get backend(): string {
		return this.secrets.backend;
	}

	/**
	 * The account's pair as the keychain holds it: read afresh on every call, so an item deleted in the keychain UI
	 * is respected by the very next request. Only an unsaved rotation of exactly the stored pair is served from
	 * memory instead; any other keychain state drops it.
	 */
	async read(label: string): Promise<Snapshot> {
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

	async readSecret(label: string): Promise<string | null> {
		try {
			return await this.secrets.get(label);
		} catch (error) {
			throw this.wrapKeychain(label, error);
		}
	}

	/** Deletes the item, and any unsaved pair with it; `false` when there was none. */
	async delete(label: string): Promise<boolean> {
		this.unsaved.forget(label);
		try {
			return await this.secrets.delete(label);
		} catch (error) {
			throw this.wrapKeychain(label, error);
		}
	}

	/**
	 * Runs `fn` under the account's refresh lock and releases the lock only once every keychain call this process
	 * started for the account has settled, so a write abandoned on timeout cannot land after another process took
	 * over.
	 */
	locked<T>(label: string, fn: (lease: RefreshLease) => Promise<T>): Promise<T> {
		return this.lock.run(label, async (lease) => {
			try {
				return await fn(lease ?? NEVER_LOST);
			} finally {
				await this.settle(label);
			}
		});
	}

	/** Stores a login in place and verifies it; a lease lost first is taken again. Called under the lock. */
	async writeLogin(label: string, lease: RefreshLease, credentials: StoredCredentials): Promise<void> {
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
	 * The compare-and-swap write of a rotated pair, under a lease the caller has just checked: written only while the
	 * item is still what the refresh started from. A newer item (a login) wins ("newer"); a deleted one (a removal)
	 * wins too, and the request fails as revoked.
	 */
	async writeRotation(label: string, start: Snapshot, next: StoredCredentials): Promise<RotationWrite> {
		const secret = serializeForKeychain(label, next);
		// What the item may hold and still be ours to replace: what the refresh started from, or what our own
		// failed attempt left there.
		let replaceable = start.stored;
		for (let attempt = 0; attempt < 2; attempt++) {
			const now = await this.peek(label);
			// Unreadable: no compare, so no write; the retries compare once the keychain answers.
			if (now === undefined) break;
			if (sameSecret(now, secret)) return this.stored(label);
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
			if (sameSecret(readBack, secret)) return this.stored(label);
			// The keychain kept something else than what was written.
			if (readBack !== null) replaceable = readBack;
		}
		// The old refresh token is dead at the endpoint: serve the new pair from memory rather than force a login.
		const now = await this.peek(label);
		if (now !== undefined && sameSecret(now, secret)) return this.stored(label);
		if (now !== undefined && now !== replaceable) return this.keepNewer(label, now);
		this.unsaved.keep(label, replaceable, next);
		return "unsaved";
	}

	private stored(label: string): RotationWrite {
		this.unsaved.forget(label);
		return "stored";
	}

	/** The item changed while the refresh was out: the newer state is kept, ours dropped. */
	private keepNewer(label: string, now: string | null): RotationWrite {
		this.unsaved.forget(label);
		if (now === null) {
			throw new AccountError(
				label,
				"revoked",
				`Account "${label}" was removed from the ${this.secrets.backend} while its token was being renewed; the ` +
					`renewed login was dropped, so it stays removed. Run /mcc-login ${label} to restore it.`,
			);
		}
		return "newer";
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

	/** The stored secret, `null` for none, `undefined` when the keychain did not answer. */
	private async peek(label: string): Promise<string | null | undefined> {
		return this.secrets.get(label).catch(() => undefined);
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
