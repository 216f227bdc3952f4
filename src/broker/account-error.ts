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
