/**
 * A configuration or state file that cannot be used as it is. The message names the file and what is wrong,
 * and the file is never rewritten while it is in this state.
 */
export class ConfigError extends Error {
	override readonly name = "ConfigError";
	constructor(
		readonly file: string,
		readonly kind: "unreadable" | "invalid" | "legacy" | "unsafe" | "locked",
		message: string,
	) {
		super(message);
	}
}
