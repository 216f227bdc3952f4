/**
 * The one boundary between this extension and the OS keychain. Deliberately as small as go-keyring's surface:
 * one secret per account label, read, written in place, deleted.
 */
export interface SecretStore {
	/** Human-readable name of the backend, e.g. "Secret Service (gnome-keyring, KWallet, KeePassXC)". */
	readonly backend: string;
	/** The stored secret, or `null` when no item exists for the label (never throws for "not found"). */
	get(label: string): Promise<string | null>;
	/** Creates or replaces the item in place. */
	set(label: string, secret: string): Promise<void>;
	/** Deletes the item; `false` when there was none. */
	delete(label: string): Promise<boolean>;
}

export type KeychainErrorKind = "unavailable" | "locked" | "timeout" | "denied" | "too_large" | "failed";

/**
 * A keychain failure that a person can act on. The message never contains a secret: it is built from the
 * operation, the label and the platform's error text, which describes the store and never echoes a secret.
 */
export class KeychainError extends Error {
	override readonly name = "KeychainError";
	constructor(
		readonly kind: KeychainErrorKind,
		message: string,
	) {
		super(message);
	}
}

/**
 * The most one keychain item may hold, on every system: Windows Credential Manager's CRED_MAX_CREDENTIAL_BLOB_SIZE
 * (5 × 512 bytes). The other keychains take more, but a config and its accounts move between systems, and a pair
 * that only fits on Linux would be a dead account on Windows.
 */
export const MAX_SECRET_BYTES = 2560;

/**
 * The bytes Windows stores for a secret written with `setPassword`: windows-native-keyring-store converts the
 * string to UTF-16LE (`validate_password`: `encode_utf16()`, two bytes per code unit) and refuses more than
 * CRED_MAX_CREDENTIAL_BLOB_SIZE. A JavaScript string's length is its count of UTF-16 code units, exactly.
 */
export function storedSecretBytes(secret: string): number {
	return secret.length * 2;
}
