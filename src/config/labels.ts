/**
 * Account labels name keychain items, lock files and command arguments, so they are kept to a short, plain
 * charset: no path separators, whitespace, control characters or shell metacharacters.
 */
export const LABEL_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function labelProblem(label: string): string | undefined {
	if (label.length === 0) return "a label cannot be empty";
	if (label.length > 64) return "a label has at most 64 characters";
	if (!LABEL_PATTERN.test(label)) {
		return (
			`"${printable(label)}" is not a valid label: use letters, digits, ".", "_" and "-", ` +
			"starting with a letter or digit (e.g. personal, work, side-project)"
		);
	}
	return undefined;
}

/** Renders untrusted text for a message without letting control characters reach the terminal. */
export function printable(text: string, max = 64): string {
	const flat = Array.from(text)
		.map((ch) => (/[\p{Cc}\p{Cf}]/u.test(ch) ? "?" : ch))
		.join("");
	return flat.length > max ? `${flat.slice(0, max)}…` : flat;
}
