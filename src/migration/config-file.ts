import type { AccountsConfig } from "../config/schema.ts";
import { ConfigError, findPlaintextSecrets, parseAccountsConfig } from "../config/stores.ts";
import { PrivateFileError, readPrivateFile } from "../fs/private-file.ts";
import { MigrationError } from "./migration-error.ts";

/** What the accounts config file holds, as far as the migration is concerned. */
export type ConfigSnapshot =
	| { kind: "missing" }
	| { kind: "current"; text: string; config: AccountsConfig }
	| { kind: "legacy"; text: string; raw: Record<string, unknown> };

/**
 * Reads and classifies the config file. Anything it cannot classify with certainty is an error that leaves the
 * file alone: the old format is recognised by its `accounts` list without a `version`, the new one by `version`.
 */
export async function readConfigSnapshot(file: string): Promise<ConfigSnapshot> {
	const text = await readOrExplain(file);
	if (text === undefined) return { kind: "missing" };
	const raw = parseJsonQuietly(text, file, true);
	if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
		throw new MigrationError(
			`${file} does not hold a JSON object, so it is not a multi-claude-code config. ${UNCHANGED}`,
		);
	}
	const record = raw as Record<string, unknown>;
	if ("version" in record) {
		const secrets = findPlaintextSecrets(record);
		if (secrets.length > 0) {
			throw new MigrationError(
				`${file} has a "version" field like the new format but also holds tokens (${secrets.slice(0, 3).join(", ")}): ` +
					`this migration does not know that shape. Remove those fields by hand, then log the accounts in again ` +
					`with /mcc-login. ${UNCHANGED}`,
			);
		}
		return { kind: "current", text, config: parseOrExplain(record, file) };
	}
	if (!Array.isArray(record.accounts)) {
		throw new MigrationError(
			`${file} has neither a "version" (new format) nor an "accounts" list (old format), so it is not a ` +
				`multi-claude-code config this migration knows. ${UNCHANGED}`,
		);
	}
	return { kind: "legacy", text, raw: record };
}

export const UNCHANGED = "Nothing was changed.";

/** The same serialisation as the extension's own config store, so a migrated file looks like one it wrote. */
export function serializeConfig(config: AccountsConfig): string {
	return `${JSON.stringify(config, null, "\t")}\n`;
}

/** Validates a config about to be written with the extension's own rules. */
export function checkNewConfig(config: AccountsConfig, file: string): AccountsConfig {
	return parseOrExplain(JSON.parse(JSON.stringify(config)), file);
}

/**
 * JSON.parse's SyntaxError quotes the text around the error, which here can be a token: only the fact that the
 * file is not JSON is reported.
 */
export function parseJsonQuietly(text: string, file: string, refuseProtoKey = false): unknown {
	let protoKey = false;
	let value: unknown;
	try {
		value = JSON.parse(text, (key, child: unknown) => {
			if (key === "__proto__") protoKey = true;
			return child;
		});
	} catch {
		throw new MigrationError(`${file} is not valid JSON. Fix it (or move it away) and run again. ${UNCHANGED}`);
	}
	// Copying such a key (as validation does) would set a prototype instead and drop the field silently.
	if (protoKey && refuseProtoKey) {
		throw new MigrationError(
			`${file} has a "__proto__" key, which no multi-claude-code version writes. ${UNCHANGED}`,
		);
	}
	return value;
}

async function readOrExplain(file: string): Promise<string | undefined> {
	try {
		return await readPrivateFile(file);
	} catch (error) {
		if (error instanceof PrivateFileError) throw new MigrationError(`${error.message} ${UNCHANGED}`);
		throw error;
	}
}

function parseOrExplain(raw: unknown, file: string): AccountsConfig {
	try {
		return parseAccountsConfig(raw, file);
	} catch (error) {
		if (error instanceof ConfigError) throw new MigrationError(error.message);
		throw error;
	}
}
