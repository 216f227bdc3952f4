/**
 * `pi-mcc-migrate [--file PATH]`: the original extension's plaintext config, converted to the new format, its
 * tokens moved into the keychain, then the file rewritten without them.
 */
import { z } from "zod";
import { CredentialFormatError, type StoredCredentials, serializeCredentials } from "../broker/credentials.ts";
import {
	type AccountEntry,
	type AccountsConfig,
	CONFIG_VERSION,
	describeIssues,
	labelProblem,
} from "../config/schema.ts";
import { findPlaintextSecrets, MIGRATE_COMMAND } from "../config/stores.ts";
import { DEFAULT_LOCK_STALE_MS, withFileLock } from "../fs/file-lock.ts";
import { readPrivateFile, writePrivateFileAtomic } from "../fs/private-file.ts";
import { isWellFormedToken } from "../oauth/token-endpoint.ts";
import { errorText, printable } from "../text.ts";
import { checkNewConfig, readConfigSnapshot, serializeConfig } from "./config-file.ts";
import { type AccountTokens, keychainStatus } from "./keychain-plan.ts";
import { MigrationError, UNCHANGED } from "./support.ts";
import { type MoveOptions, moveTokens, type PendingMove } from "./token-move.ts";

/**
 * Moves the tokens of an old-format config into the keychain, then rewrites the file without them (atomically,
 * under the config's own lock, only once every token is in the keychain and read back). `fileGiven`: the person
 * named the file (--file), so a missing one is an error, not "nothing to do".
 */
export function migrateConfigFile(file: string, fileGiven: boolean, options: MoveOptions): Promise<number> {
	return moveTokens(
		{
			file,
			withLock: (fn) => withFileLock(file, fn),
			lockStaleMs: DEFAULT_LOCK_STALE_MS,
			rewrites: [file],
			steps: { locked: "locked", verified: "verified", written: "written" },
			keepAdvice: "remove that account from the file and run again",
			command: fileGiven ? `${MIGRATE_COMMAND} --file ${file}` : MIGRATE_COMMAND,
			read: async () => {
				const snapshot = await readConfigSnapshot(file);
				if (snapshot.kind === "missing") {
					if (fileGiven) throw new MigrationError(`${file} does not exist.`);
					options.out.info(`There is no ${file}: nothing to migrate.`);
					return { done: true, rotate: [] };
				}
				if (snapshot.kind === "current") {
					options.out.info(
						`${file} is already migrated (no tokens in it; they live in the keychain): nothing to do.`,
					);
					return { done: true, rotate: snapshot.config.accounts.map((account) => account.label) };
				}
				return fileMove(file, snapshot.text, convertLegacyConfig(snapshot.raw, file), options.keychain);
			},
		},
		options,
	);
}

function fileMove(file: string, originalText: string, conversion: LegacyConversion, keychain: string): PendingMove {
	return {
		accounts: conversion.accounts,
		heading: `Migrating ${file} (old format, tokens in the file) into the ${keychain}:`,
		after: [
			`  then rewrite ${file} in the new format, without tokens (mode 0600)`,
			...conversion.notes.map((note) => `  note: ${note}`),
		],
		preview: `The file would then read:\n${serializeConfig(conversion.config).trimEnd()}`,
		untouched: `${file} was not changed.`,
		commit: async (inKeychain) => {
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
			const count = conversion.accounts.length === 1 ? "1 account" : `${conversion.accounts.length} accounts`;
			return [`Done: ${count} in the keychain; ${file} was rewritten without tokens (mode 0600).`];
		},
	};
}

/**
 * The original extension's file: `{ accounts: [{ label, accessToken, refreshToken, expiresAt, fallbackTo? }],
 * activeLabel? }`. Fields are loose on purpose: anything else it holds is carried over when it is not secret.
 */
const legacyAccountSchema = z.looseObject({
	label: z.string(),
	accessToken: z.string().nullish(),
	refreshToken: z.string().nullish(),
	expiresAt: z.number().nullish(),
	fallbackTo: z.union([z.string(), z.array(z.string()).max(64)]).nullish(),
});

const legacyFileSchema = z.looseObject({
	accounts: z.array(legacyAccountSchema).max(500),
	activeLabel: z.string().nullish(),
});

type LegacyAccountInput = z.infer<typeof legacyAccountSchema>;

const ACCOUNT_FIELDS = new Set(["label", "accessToken", "refreshToken", "expiresAt", "fallbackTo"]);
const FILE_FIELDS = new Set(["accounts", "activeLabel"]);

interface LegacyConversion {
	accounts: AccountTokens[];
	/** The file's new content: validated by the extension's own config parser, holds no secret. */
	config: AccountsConfig;
	/** Things dropped because they pointed at nothing (a fallback to an unknown account, …). */
	notes: string[];
}

/** Converts the old file; every problem is collected and reported at once, naming fields, never values. */
export function convertLegacyConfig(raw: Record<string, unknown>, file: string): LegacyConversion {
	const parsed = legacyFileSchema.safeParse(raw);
	if (!parsed.success) {
		throw new MigrationError(
			`${file} is not in the old multi-claude-code format (${describeIssues(parsed.error)}). ${UNCHANGED}`,
		);
	}
	const problems: string[] = [];
	const notes: string[] = [];
	const inputs = parsed.data.accounts;
	const labels = collectLabels(inputs, problems);
	const accounts: AccountTokens[] = [];
	const entries: AccountEntry[] = [];
	inputs.forEach((input, index) => {
		const where = `accounts[${index}]`;
		if (labelProblem(input.label)) return;
		const credentials = credentialsOf(input, where, problems);
		if (credentials) accounts.push({ label: input.label, credentials });
		const fallbackTo = fallbacksOf(input, labels, where, notes);
		entries.push({ label: input.label, fallbackTo, ...carryOver(input, ACCOUNT_FIELDS, where, problems) });
	});
	const extras = carryOver(parsed.data, FILE_FIELDS, "", problems);
	let activeLabel = parsed.data.activeLabel ?? undefined;
	if (activeLabel !== undefined && !labels.has(activeLabel)) {
		notes.push(`activeLabel "${printable(activeLabel)}" is not one of the accounts: dropped.`);
		activeLabel = undefined;
	}
	if (problems.length > 0) throw new MigrationError(problemReport(file, problems));
	const config = checkNewConfig(
		{ version: CONFIG_VERSION, ...(activeLabel ? { activeLabel } : {}), accounts: entries, ...extras },
		file,
	);
	return { accounts, config, notes };
}

/** Valid labels; problems for invalid and duplicate ones (case-blind: Windows Credential Manager is). */
function collectLabels(inputs: readonly LegacyAccountInput[], problems: string[]): Set<string> {
	const labels = new Set<string>();
	const folded = new Map<string, string>();
	inputs.forEach((input, index) => {
		const problem = labelProblem(input.label);
		if (problem) {
			problems.push(`accounts[${index}].label: ${problem}. Rename it in the file (and in any fallbackTo)`);
			return;
		}
		const earlier = folded.get(input.label.toLowerCase());
		if (earlier === input.label) problems.push(`accounts[${index}].label: "${input.label}" appears twice`);
		else if (earlier !== undefined) {
			problems.push(
				`accounts[${index}].label: "${input.label}" and "${earlier}" differ only in letter case, which some ` +
					"keychains (Windows Credential Manager) treat as the same item",
			);
		}
		folded.set(input.label.toLowerCase(), input.label);
		labels.add(input.label);
	});
	return labels;
}

function credentialsOf(input: LegacyAccountInput, where: string, problems: string[]): StoredCredentials | undefined {
	const label = input.label;
	const access = input.accessToken ?? "";
	const refresh = input.refreshToken ?? "";
	const relogin = `remove "${label}" from the file, run the migration, then log it in again with /mcc-login ${label}`;
	if (refresh === "") {
		problems.push(`${where} ("${label}") has no refresh token, so it cannot stay logged in: ${relogin}`);
		return undefined;
	}
	if (!isWellFormedToken(refresh)) {
		problems.push(`${where}.refreshToken ("${label}") is malformed (too short or has spaces): ${relogin}`);
		return undefined;
	}
	if (!isWellFormedToken(access)) {
		problems.push(`${where}.accessToken ("${label}") is missing or malformed: ${relogin}`);
		return undefined;
	}
	// No expiry recorded: 0 makes the broker renew the access token on first use, which is always safe.
	const credentials = { access, refresh, expires: input.expiresAt ?? 0 };
	try {
		serializeCredentials(credentials);
	} catch (error) {
		if (!(error instanceof CredentialFormatError)) throw error;
		problems.push(`${where} ("${label}"): ${error.message}`);
		return undefined;
	}
	return credentials;
}

/** A fallback that names no account (or itself, or twice) carries no information: dropped, with a note. */
function fallbacksOf(input: LegacyAccountInput, labels: Set<string>, where: string, notes: string[]): string[] {
	const raw = input.fallbackTo ?? [];
	const targets = typeof raw === "string" ? [raw] : raw;
	const kept: string[] = [];
	for (const target of targets) {
		if (target === input.label) {
			notes.push(`${where}.fallbackTo: "${input.label}" falls back to itself: dropped.`);
		} else if (!labels.has(target)) {
			notes.push(`${where}.fallbackTo: "${printable(target)}" is not one of the accounts: dropped.`);
		} else if (!kept.includes(target)) {
			kept.push(target);
		}
	}
	return kept;
}

/**
 * Fields the new format does not define are kept as they are, unless they look secret: those cannot be moved
 * into the keychain item (it holds the token pair only), and dropping them silently could lose something.
 */
function carryOver(
	source: Record<string, unknown>,
	known: ReadonlySet<string>,
	where: string,
	problems: string[],
): Record<string, unknown> {
	const kept: Record<string, unknown> = {};
	for (const [key, value] of Object.entries(source)) {
		if (known.has(key)) continue;
		const path = where ? `${where}.${key}` : key;
		if (findPlaintextSecrets({ [key]: value }).length > 0) {
			problems.push(`${path} looks secret and is not a token this migration moves: remove it from the file`);
		} else kept[key] = value;
	}
	return kept;
}

function problemReport(file: string, problems: readonly string[]): string {
	const shown = problems.slice(0, 10).map((problem) => `  - ${problem}`);
	const more = problems.length > 10 ? [`  - … and ${problems.length - 10} more`] : [];
	return [`${file} cannot be migrated as it is:`, ...shown, ...more, UNCHANGED].join("\n");
}
