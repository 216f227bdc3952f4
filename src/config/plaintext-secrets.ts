/** Field names under which the original extension (or a hand edit) kept tokens in the JSON file. */
const SECRET_KEYS = new Set([
	"accesstoken",
	"refreshtoken",
	"access_token",
	"refresh_token",
	"access",
	"refresh",
	"token",
	"apikey",
	"api_key",
	"password",
	"secret",
]);

/**
 * Where a parsed JSON value holds something secret: a field named like a token, or any string that looks like
 * an Anthropic credential. Returns the JSON paths (never the values), bounded in depth and count.
 */
export function findPlaintextSecrets(value: unknown, path = "", depth = 0, found: string[] = []): string[] {
	if (found.length >= 20 || depth > 32) return found;
	if (typeof value === "string") {
		if (/sk-ant-[a-z]{2,4}\d{0,2}-/i.test(value)) found.push(path || "(top level)");
		return found;
	}
	if (Array.isArray(value)) {
		value.forEach((item, index) => {
			findPlaintextSecrets(item, `${path}[${index}]`, depth + 1, found);
		});
		return found;
	}
	if (value !== null && typeof value === "object") {
		for (const [key, child] of Object.entries(value)) {
			const childPath = path ? `${path}.${key}` : key;
			if (SECRET_KEYS.has(key.toLowerCase()) && child !== null && child !== "") found.push(childPath);
			else findPlaintextSecrets(child, childPath, depth + 1, found);
		}
	}
	return found;
}
