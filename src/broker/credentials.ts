import { MAX_SECRET_BYTES, storedSecretBytes } from "../keychain/secret-store.ts";
import { isWellFormedToken } from "../oauth/token-endpoint.ts";

export { MAX_SECRET_BYTES };

/** What one keychain item holds: the account's token pair and the access token's expiry. */
export interface StoredCredentials {
	access: string;
	refresh: string;
	/** Access-token expiry, ms since epoch, as the token endpoint gave it. */
	expires: number;
	/** Refresh-token expiry, when the token endpoint states one (ms since epoch). */
	refreshExpires?: number;
}

export class CredentialFormatError extends Error {
	override readonly name = "CredentialFormatError";
}

/** A pair that Windows Credential Manager could not hold; refused on every system before anything is written. */
export class CredentialTooLargeError extends CredentialFormatError {
	constructor(readonly bytes: number) {
		super(
			`the token pair takes ${bytes} bytes as Windows Credential Manager stores it (UTF-16), over the ` +
				`${MAX_SECRET_BYTES} bytes one item holds there`,
		);
	}
}

export function serializeCredentials(credentials: StoredCredentials): string {
	const { access, refresh, expires, refreshExpires } = credentials;
	const text = JSON.stringify({
		v: 1,
		access,
		refresh,
		expires,
		...(refreshExpires !== undefined ? { refreshExpires } : {}),
	});
	const bytes = storedSecretBytes(text);
	if (bytes > MAX_SECRET_BYTES) throw new CredentialTooLargeError(bytes);
	return text;
}

/** Parses a keychain secret; the error says what is wrong without quoting the secret. */
export function parseCredentials(secret: string): StoredCredentials {
	let raw: unknown;
	try {
		raw = JSON.parse(secret);
	} catch {
		throw new CredentialFormatError("its secret is not the JSON this extension writes");
	}
	if (raw === null || typeof raw !== "object") throw new CredentialFormatError("its secret is not a JSON object");
	const { v, access, refresh, expires, refreshExpires } = raw as Record<string, unknown>;
	if (v !== 1) throw new CredentialFormatError("its secret has an unknown format version");
	if (!isWellFormedToken(access)) {
		throw new CredentialFormatError("its access token is missing or malformed");
	}
	if (!isWellFormedToken(refresh)) {
		throw new CredentialFormatError("its refresh token is missing or malformed");
	}
	if (typeof expires !== "number" || !Number.isFinite(expires)) {
		throw new CredentialFormatError("its expiry is missing or malformed");
	}
	if (refreshExpires !== undefined && (typeof refreshExpires !== "number" || !Number.isFinite(refreshExpires))) {
		throw new CredentialFormatError("its refresh-token expiry is malformed");
	}
	return { access, refresh, expires, ...(refreshExpires !== undefined ? { refreshExpires } : {}) };
}

export function sameCredentials(a: StoredCredentials, b: StoredCredentials): boolean {
	return (
		a.access === b.access &&
		a.refresh === b.refresh &&
		a.expires === b.expires &&
		a.refreshExpires === b.refreshExpires
	);
}
