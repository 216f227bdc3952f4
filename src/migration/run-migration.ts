import type { TokenBroker } from "../broker/token-broker.ts";
import { MIGRATE_COMMAND } from "../config/stores.ts";
import { DEFAULT_LOCK_STALE_MS, withFileLock } from "../fs/file-lock.ts";
import { readPrivateFile, writePrivateFileAtomic } from "../fs/private-file.ts";
import { errorText } from "../text.ts";
import { type ConfigSnapshot, readConfigSnapshot, serializeConfig, UNCHANGED } from "./config-file.ts";
import { keychainStatus, storeAccounts } from "./keychain-writes.ts";
import { convertLegacyConfig, type LegacyConversion } from "./legacy-format.ts";
import { noticeHeldLock } from "./lock-notice.ts";
import { MigrationError, PartialStoreError } from "./migration-error.ts";
import type { Output } from "./output.ts";
import { pauseAt } from "./pause.ts";
import { type AccountPlan, conflictExplanation, planAccounts, planLines } from "./plan.ts";

const KEEP_ADVICE = "remove that account from the file and run again";
/** withFileLock's default, which the extension's own config writes use too. */
const CONFIG_LOCK_STALE_SECONDS = DEFAULT_LOCK_STALE_MS / 1000;

export interface MigrateFileOptions {
	file: string;
	/** The person named the file (--file): a missing one is then an error, not "nothing to do". */
	fileGiven: boolean;
	broker: TokenBroker;
	/** e.g. `Secret Service keychain (service "pi-multi-claude-code")`. */
	keychain: string;
	replace: boolean;
	dryRun: boolean;
	out: Output;
}

/**
 * Moves the tokens of an old-format config into the keychain, then rewrites the file without them. The file is
 * replaced (atomically) only after every token is in the keychain and read back, so a failure or a crash at any
 * point leaves each token in the file, in the keychain, or both; a re-run finishes the job.
 */
export async function migrateConfigFile(options: MigrateFileOptions): Promise<number> {
	const { file, out } = options;
	// Checked before taking the lock, so bad input and "nothing to do" leave no trace (not even a lock directory).
	const first = await readConfigSnapshot(file);
	const early = nothingToDo(first, options);
	if (early !== undefined || first.kind !== "legacy") return early ?? 0;
	const preview = convertLegacyConfig(first.raw, file);
	out.protect(preview.secrets);
	// Keychain reads only: an unreachable keychain or a conflict is reported before anything is locked or written.
	const previewPlans = await planAccounts(options.broker, preview.accounts, options.replace);
	if (options.dryRun) return dryRun(preview, previewPlans, options);
	stopOnConflicts(preview, previewPlans, options);
	await noticeHeldLock(file, CONFIG_LOCK_STALE_SECONDS, out);
	return withFileLock(file, async () => {
		await pauseAt("locked");
		// The authoritative read: another run may have finished while this one waited for the lock.
		const snapshot = await readConfigSnapshot(file);
		const done = nothingToDo(snapshot, options);
		if (done !== undefined || snapshot.kind !== "legacy") return done ?? 0;
		const conversion = convertLegacyConfig(snapshot.raw, file);
		out.protect(conversion.secrets);
		const plans = await planAccounts(options.broker, conversion.accounts, options.replace);
		stopOnConflicts(conversion, plans, options);
		report(conversion, plans, options);
		await moveTokens(snapshot.text, conversion, plans, options);
		return 0;
	});
}

async function moveTokens(
	originalText: string,
	conversion: LegacyConversion,
	plans: readonly AccountPlan[],
	{ file, broker, out }: MigrateFileOptions,
): Promise<void> {
	let inKeychain: string[];
	try {
		inKeychain = await storeAccounts(broker, plans, (label) => pauseAt(`stored:${label}`));
	} catch (error) {
		const stored = error instanceof PartialStoreError ? error.inKeychain : [];
		throw new MigrationError(`${errorText(error)}\n${file} was not changed. ${keychainStatus(stored)}`);
	}
	await pauseAt("verified");
	try {
		// Anything that edited the file without the lock since it was read would be lost by the rewrite.
		if ((await readPrivateFile(file)) !== originalText) {
			throw new MigrationError(`${file} was changed by something else while the migration ran.`);
		}
		await writePrivateFileAtomic(file, serializeConfig(conversion.config));
	} catch (error) {
		throw new MigrationError(
			`${errorText(error)}\n${file} was not rewritten and still holds its tokens. ${keychainStatus(inKeychain)} ` +
				`Fix the problem and run \`${MIGRATE_COMMAND}\` again to finish.`,
		);
	}
	await pauseAt("written");
	const count = plans.length === 1 ? "1 account" : `${plans.length} accounts`;
	out.info(`Done: ${count} in the keychain; ${file} was rewritten without tokens (mode 0600).`);
	out.info(
		"If that file was ever copied (backups, sync, snapshots), those copies still hold the old tokens: log the " +
			"accounts in again (/mcc-login <label>) to make them worthless.",
	);
}

function nothingToDo(snapshot: ConfigSnapshot, { file, fileGiven, out }: MigrateFileOptions): number | undefined {
	if (snapshot.kind === "missing") {
		if (fileGiven) throw new MigrationError(`${file} does not exist.`);
		out.info(`There is no ${file}: nothing to migrate.`);
		return 0;
	}
	if (snapshot.kind === "current") {
		out.info(`${file} is already migrated (no tokens in it; they live in the keychain): nothing to do.`);
		return 0;
	}
	return undefined;
}

function stopOnConflicts(
	conversion: LegacyConversion,
	plans: readonly AccountPlan[],
	options: MigrateFileOptions,
): void {
	const conflicts = plans.filter((plan) => plan.action === "conflict");
	if (conflicts.length === 0) return;
	report(conversion, plans, options);
	throw new MigrationError(`${conflictExplanation(conflicts, options.keychain, KEEP_ADVICE)} ${UNCHANGED}`);
}

function dryRun(conversion: LegacyConversion, plans: readonly AccountPlan[], options: MigrateFileOptions): number {
	report(conversion, plans, options);
	options.out.info(`The file would then read:\n${serializeConfig(conversion.config).trimEnd()}`);
	const conflicts = plans.filter((plan) => plan.action === "conflict");
	if (conflicts.length > 0) {
		options.out.error(`A real run would stop here: ${conflictExplanation(conflicts, options.keychain, KEEP_ADVICE)}`);
		options.out.info("Dry run: nothing was changed.");
		return 1;
	}
	options.out.info("Dry run: nothing was changed.");
	return 0;
}

function report(conversion: LegacyConversion, plans: readonly AccountPlan[], options: MigrateFileOptions): void {
	const { out, file, keychain } = options;
	out.info(`Migrating ${file} (old format, tokens in the file) into the ${keychain}:`);
	if (plans.length === 0) out.info("  (no accounts)");
	for (const line of planLines(plans)) out.info(line);
	out.info(`  then rewrite ${file} in the new format, without tokens (mode 0600)`);
	for (const note of conversion.notes) out.info(`  note: ${note}`);
}
