import { ConfigError } from "./errors.ts";
import { JsonFileStore } from "./json-file-store.ts";
import { findPlaintextSecrets } from "./plaintext-secrets.ts";
import { type AccountsConfig, configSchema, describeIssues, emptyConfig } from "./schema.ts";

/** The command that moves plaintext tokens into the keychain (the migration script's package bin). */
export const MIGRATE_COMMAND = "npx pi-mcc-migrate";

export function parseAccountsConfig(raw: unknown, file: string): AccountsConfig {
	const secrets = findPlaintextSecrets(raw);
	if (secrets.length > 0) {
		throw new ConfigError(
			file,
			"legacy",
			`${file} holds plaintext tokens (${secrets.slice(0, 3).join(", ")}${secrets.length > 3 ? ", …" : ""}), the ` +
				`old storage format. They are not used. Run \`${MIGRATE_COMMAND}\` to move them into the OS keychain ` +
				"(add --dry-run to see the plan first).",
		);
	}
	if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
		throw new ConfigError(file, "invalid", `${file} must hold a JSON object. It was left untouched.`);
	}
	if (!("version" in raw)) {
		throw new ConfigError(
			file,
			"invalid",
			`${file} has no "version" field, so it is not a multi-claude-code config this version understands. ` +
				"It was left untouched.",
		);
	}
	const result = configSchema.safeParse(raw);
	if (!result.success) {
		throw new ConfigError(
			file,
			"invalid",
			`${file} is not a valid multi-claude-code config: ${describeIssues(result.error)}. It was left untouched.`,
		);
	}
	return result.data;
}

export function createConfigStore(file: string): JsonFileStore<AccountsConfig> {
	return new JsonFileStore({ file, parse: parseAccountsConfig, empty: emptyConfig });
}
