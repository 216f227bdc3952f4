import type { TokenBroker } from "../broker/token-broker.ts";
import { labelProblem } from "../config/schema.ts";
import { writePrivateFileAtomic } from "../fs/private-file.ts";
import { errorText } from "../text.ts";
import { addAccountToConfig, labelClash, readAddableConfig } from "./config-account.ts";
import { removeTopLevelMember } from "./json-members.ts";
import { keychainStatus, storeAccounts } from "./keychain-writes.ts";
import { noticeHeldLock } from "./lock-notice.ts";
import { MigrationError, PartialStoreError, USAGE_EXIT_CODE } from "./migration-error.ts";
import type { Output } from "./output.ts";
import { pauseAt } from "./pause.ts";
import { PI_ANTHROPIC_KEY, PI_AUTH_LOCK_STALE_MS, readPiAuth, withPiAuthLock } from "./pi-auth.ts";
import { type AccountPlan, conflictExplanation, planAccounts, planLines } from "./plan.ts";

const KEEP_ADVICE = "import pi's login under another label";

export interface PiAuthImportOptions {
	label: string;
	configFile: string;
	authFile: string;
	broker: TokenBroker;
	keychain: string;
	replace: boolean;
	dryRun: boolean;
	out: Output;
}

/**
 * Moves pi's own Anthropic OAuth login (auth.json) into the keychain as a labelled account. A refresh token kept
 * in two places breaks at the first rotation, so it is moved, not copied: the keychain copy is written and read
 * back, the label added to the config, and only then is the `anthropic` entry cut out of auth.json, all under
 * pi's auth.json lock. Each step is checked on a re-run, so a crash at any point is finished by running again.
 */
export async function importPiAuth(options: PiAuthImportOptions): Promise<number> {
	const { label, configFile, authFile, out } = options;
	const problem = labelProblem(label);
	if (problem) throw new MigrationError(`--from-pi-auth: ${problem}.`, USAGE_EXIT_CODE);
	// Checked first, without locks, so a config that cannot take the account changes nothing anywhere.
	await checkConfigTakes(configFile, label);
	const before = await readPiAuth(authFile);
	if (before?.credentials) out.protect([before.credentials.access, before.credentials.refresh]);
	if (!before?.credentials) return nothingToImport(options);
	withoutAnthropic(before.text, authFile);
	// Keychain reads only: a conflict or an unreachable keychain is reported before anything is locked or written.
	const preview = await planAccounts(options.broker, [{ label, credentials: before.credentials }], options.replace);
	if (options.dryRun) return dryRun(preview, options);
	stopOnConflicts(preview, options);
	await noticeHeldLock(authFile, PI_AUTH_LOCK_STALE_MS / 1000, out);
	return withPiAuthLock(authFile, async () => {
		await pauseAt("pi-auth-locked");
		const auth = await readPiAuth(authFile);
		if (!auth?.credentials) return nothingToImport(options);
		out.protect([auth.credentials.access, auth.credentials.refresh]);
		const trimmed = withoutAnthropic(auth.text, authFile);
		await checkConfigTakes(configFile, label);
		const plans = await planAccounts(options.broker, [{ label, credentials: auth.credentials }], options.replace);
		stopOnConflicts(plans, options);
		report(plans, options);
		await moveLogin(auth.text, trimmed, plans, options);
		return 0;
	});
}

async function moveLogin(
	authText: string,
	trimmed: string,
	plans: readonly AccountPlan[],
	options: PiAuthImportOptions,
): Promise<void> {
	const { label, configFile, authFile, out } = options;
	try {
		await storeAccounts(options.broker, plans);
	} catch (error) {
		const stored = error instanceof PartialStoreError ? error.inKeychain : [];
		throw new MigrationError(
			`${errorText(error)}\n${authFile} and ${configFile} were not changed. ${keychainStatus(stored)}`,
		);
	}
	await pauseAt("pi-auth-stored");
	let added: "added" | "present";
	try {
		added = await addAccountToConfig(configFile, label);
		await pauseAt("pi-auth-config-written");
		// pi edits auth.json only under the lock held here; anything else that changed it would be lost.
		if ((await readPiAuth(authFile))?.text !== authText) {
			throw new MigrationError(`${authFile} was changed by something else while the import ran.`);
		}
		await writePrivateFileAtomic(authFile, trimmed);
	} catch (error) {
		throw new MigrationError(
			`${errorText(error)}\nThe login is safely in the keychain as "${label}", and ${authFile} still holds it ` +
				"(it was not rewritten). Fix the problem and run the same command again to finish the move.",
		);
	}
	await pauseAt("pi-auth-removed");
	const where = added === "added" ? `in the keychain, added to ${configFile}` : "in the keychain";
	out.info(`Done: pi's Anthropic login is now the account "${label}" (${where}).`);
	out.info(
		`The "${PI_ANTHROPIC_KEY}" entry was removed from ${authFile}; its other entries are unchanged. pi's built-in ` +
			"Anthropic provider is now logged out: if you still want it, run /login in pi again (that creates a " +
			"separate login, so the two never share a refresh token).",
	);
}

/** auth.json without its `anthropic` entry, every other byte kept; checked before anything is written. */
function withoutAnthropic(text: string, authFile: string): string {
	try {
		return removeTopLevelMember(text, PI_ANTHROPIC_KEY);
	} catch (error) {
		throw new MigrationError(
			`The "${PI_ANTHROPIC_KEY}" entry cannot be cut out of ${authFile} without touching the rest ` +
				`(${errorText(error)}). Nothing was changed.`,
		);
	}
}

async function checkConfigTakes(configFile: string, label: string): Promise<void> {
	const clash = labelClash(await readAddableConfig(configFile), label);
	if (clash) throw new MigrationError(`${clash} Nothing was changed.`);
}

async function nothingToImport({ label, configFile, authFile, out }: PiAuthImportOptions): Promise<number> {
	const config = await readAddableConfig(configFile);
	if (config.accounts.some((account) => account.label === label)) {
		out.info(`No Anthropic OAuth login in ${authFile}, and "${label}" is already an account: nothing to import.`);
		return 0;
	}
	throw new MigrationError(
		`No Anthropic OAuth login (an "${PI_ANTHROPIC_KEY}" entry) in ${authFile} to import. Nothing was changed.`,
	);
}

function stopOnConflicts(plans: readonly AccountPlan[], options: PiAuthImportOptions): void {
	const conflicts = plans.filter((plan) => plan.action === "conflict");
	if (conflicts.length === 0) return;
	report(plans, options);
	throw new MigrationError(`${conflictExplanation(conflicts, options.keychain, KEEP_ADVICE)} Nothing was changed.`);
}

function dryRun(plans: readonly AccountPlan[], options: PiAuthImportOptions): number {
	report(plans, options);
	const conflicts = plans.filter((plan) => plan.action === "conflict");
	if (conflicts.length > 0) {
		const why = conflictExplanation(conflicts, options.keychain, KEEP_ADVICE);
		options.out.error(`A real run would stop here: ${why}`);
	}
	options.out.info("Dry run: nothing was changed.");
	return conflicts.length > 0 ? 1 : 0;
}

function report(plans: readonly AccountPlan[], options: PiAuthImportOptions): void {
	const { label, configFile, authFile, keychain, out } = options;
	out.info(`Importing pi's Anthropic login from ${authFile} as "${label}" into the ${keychain}:`);
	for (const line of planLines(plans)) out.info(line);
	out.info(`  then add "${label}" to ${configFile} (if it is not there yet)`);
	out.info(`  then remove the "${PI_ANTHROPIC_KEY}" entry from ${authFile}, keeping every other entry byte for byte`);
}
