import { ConfigError } from "./errors.ts";
import { JsonFileStore } from "./json-file-store.ts";
import { findPlaintextSecrets } from "./plaintext-secrets.ts";
import { describeIssues, emptyState, type SharedState, stateSchema, withLabelMaps } from "./schema.ts";

export function parseSharedState(raw: unknown, file: string): SharedState {
	if (findPlaintextSecrets(raw).length > 0) {
		throw new ConfigError(file, "unsafe", `${file} holds token-like values; it should never. Delete the file.`);
	}
	const result = stateSchema.safeParse(raw);
	if (!result.success) {
		throw new ConfigError(
			file,
			"invalid",
			`${file} is not a valid multi-claude-code state file: ${describeIssues(result.error)}. It only holds ` +
				"cooldowns and needs-login marks: delete it to reset them.",
		);
	}
	return withLabelMaps(result.data);
}

export function createStateStore(file: string): JsonFileStore<SharedState> {
	return new JsonFileStore({ file, parse: parseSharedState, empty: emptyState });
}
