/** Anthropic credentials (`sk-ant-oat01-…`, `sk-ant-ort01-…`, `sk-ant-api03-…`) and bearer values. */
const TOKEN_SHAPES = [/sk-ant-[A-Za-z0-9]{2,6}-[A-Za-z0-9_-]{8,}/g, /(bearer\s+)[A-Za-z0-9._~+/-]{16,}=*/gi];

/**
 * Removes anything token-shaped, and each of the given known secrets, from text that may reach a person or a
 * file (error messages, notifications). pi-ai and the Anthropic SDK embed HTTP bodies in their errors, and a
 * misbehaving server can echo a token back: nothing from them is shown unredacted.
 */
export function redactSecrets(text: string, known: readonly (string | undefined)[] = []): string {
	let out = text;
	for (const secret of known) {
		if (secret && secret.length >= 8) out = out.split(secret).join("[redacted]");
	}
	for (const shape of TOKEN_SHAPES) {
		out = out.replace(shape, (_match, prefix?: string) =>
			typeof prefix === "string" && /^bearer/i.test(prefix) ? `${prefix}[redacted]` : "[redacted]",
		);
	}
	return out;
}
