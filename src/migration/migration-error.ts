/** Exit code for a command line the script cannot act on (unknown flag, bad label argument). */
export const USAGE_EXIT_CODE = 2;

/**
 * The migration stopped. The message says what was (not) changed and what to do next; it is built from labels,
 * paths and field names only, never from a token.
 */
export class MigrationError extends Error {
	override readonly name: string = "MigrationError";
	constructor(
		message: string,
		readonly exitCode = 1,
	) {
		super(message);
	}
}

/** A step failed after some tokens were already in the keychain: the caller says which, so none seems lost. */
export class PartialStoreError extends MigrationError {
	override readonly name: string = "PartialStoreError";
	constructor(
		message: string,
		readonly inKeychain: readonly string[],
	) {
		super(message);
	}
}
