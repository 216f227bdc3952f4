import { type AccountsConfig, emptyConfig } from "../config/schema.ts";
import { MIGRATE_COMMAND } from "../config/stores.ts";
import { withFileLock } from "../fs/file-lock.ts";
import { writePrivateFileAtomic } from "../fs/private-file.ts";
import { type ConfigSnapshot, checkNewConfig, readConfigSnapshot, serializeConfig } from "./config-file.ts";
import { MigrationError } from "./migration-error.ts";

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
