/** The accounts config as the migration reads, classifies and extends it. */
import { type AccountsConfig, emptyConfig } from "../config/schema.ts";
import { ConfigError, findPlaintextSecrets, MIGRATE_COMMAND, parseAccountsConfig } from "../config/stores.ts";
import { withFileLock } from "../fs/file-lock.ts";
import { PrivateFileError, readPrivateFile, writePrivateFileAtomic } from "../fs/private-file.ts";
import { MigrationError, parseJsonQuietly, UNCHANGED } from "./support.ts";

/** What the accounts config file holds, as far as the migration is concerned. */
type ConfigSnapshot =
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

/** The same serialisation as the extension's own config store, so a migrated file looks like one it wrote. */
export function serializeConfig(config: AccountsConfig): string {
	return `${JSON.stringify(config, null, "\t")}\n`;
}

/** Validates a config about to be written with the extension's own rules. */
export function checkNewConfig(config: AccountsConfig, file: string): AccountsConfig {
	return parseOrExplain(JSON.parse(JSON.stringify(config)), file);
}

/** The config as an account can be added to it; an old-format file must be migrated first. */
export async function readAddableConfig(file: string): Promise<AccountsConfig> {
	return addableConfig(await readConfigSnapshot(file), file);
}

/** Checks that `label` can join the config: not a case-only variant of an existing label. */
export function labelClash(config: AccountsConfig, label: string): string | undefined {
	const other = config.accounts.find(
		(account) => account.label !== label && account.label.toLowerCase() === label.toLowerCase(),
	);
	if (!other) return undefined;
	return (
		`The config already has an account "${other.label}", which differs from "${label}" only in letter case; ` +
		"some keychains (Windows Credential Manager) treat them as the same item. Choose another label."
	);
}

/** Adds the account (no fallbacks) under the config lock, creating the file if needed; idempotent. */
export async function addAccountToConfig(file: string, label: string): Promise<"added" | "present"> {
	return withFileLock(file, async () => {
		const config = addableConfig(await readConfigSnapshot(file), file);
		if (config.accounts.some((account) => account.label === label)) return "present";
		const clash = labelClash(config, label);
		if (clash) throw new MigrationError(clash);
		config.accounts.push({ label, fallbackTo: [] });
		await writePrivateFileAtomic(file, serializeConfig(checkNewConfig(config, file)));
		return "added";
	});
}

function addableConfig(snapshot: ConfigSnapshot, file: string): AccountsConfig {
	if (snapshot.kind === "missing") return emptyConfig();
	if (snapshot.kind === "current") return snapshot.config;
	throw new MigrationError(
		`${file} still holds plaintext tokens (old format). Migrate it first with \`${MIGRATE_COMMAND}\`, then ` +
			"import pi's login. Nothing was changed.",
	);
}

/** Reads a file with the checks this extension applies to its own files (no symlink, not shared-writable). */
export async function readOrExplain(file: string): Promise<string | undefined> {
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
