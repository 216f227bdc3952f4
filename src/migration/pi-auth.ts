/**
 * `pi-mcc-migrate --from-pi-auth LABEL`: pi's own Anthropic OAuth login, kept in plaintext in auth.json, moved
 * into the keychain as a labelled account.
 */
import { promises as fs } from "node:fs";
import { basename, dirname, join } from "node:path";
import { z } from "zod";
import type { StoredCredentials } from "../broker/credentials.ts";
import { labelProblem } from "../config/schema.ts";
import { MIGRATE_COMMAND } from "../config/stores.ts";
import { withFileLock } from "../fs/file-lock.ts";
import { writePrivateFileAtomic } from "../fs/private-file.ts";
import { errorText } from "../text.ts";
import { addAccountToConfig, labelClash, readAddableConfig, readOrExplain } from "./config-file.ts";
import { MigrationError, parseJsonQuietly, UNCHANGED, USAGE_EXIT_CODE } from "./support.ts";
import { type Done, type MoveOptions, moveTokens, type PendingMove } from "./token-move.ts";

/** pi's provider id for its built-in Anthropic (Claude Pro/Max) login in auth.json. */
const PI_ANTHROPIC_KEY = "anthropic";

/** pi's lock timing for auth.json: its holders refresh the lock every 15 s, so it only counts as stale at 30 s. */
const PI_AUTH_LOCK_STALE_MS = 30_000;

const piOAuthSchema = z.looseObject({
	type: z.literal("oauth"),
	access: z.string().min(8).regex(/^\S+$/),
	refresh: z.string().min(8).regex(/^\S+$/),
	expires: z.number(),
});

export function piAuthFile(agentDir: string): string {
	return join(agentDir, "auth.json");
}

interface PiAuthContent {
	text: string;
	data: Record<string, unknown>;
	/** pi's Anthropic OAuth login, when auth.json holds one. */
	credentials?: StoredCredentials;
}

export interface PiAuthImport {
	label: string;
	configFile: string;
	authFile: string;
}

/**
 * Moves the login, not a copy: a refresh token kept in two places breaks at the first rotation. The keychain
 * copy is written and read back, the label added to the config, and only then is the `anthropic` entry removed
 * from auth.json, all under pi's auth.json lock. Each step is checked on a re-run, so a crash at any point is
 * finished by running again.
 */
export async function importPiAuth(
	{ label, configFile, authFile }: PiAuthImport,
	options: MoveOptions,
): Promise<number> {
	const problem = labelProblem(label);
	if (problem) throw new MigrationError(`--from-pi-auth: ${problem}.`, USAGE_EXIT_CODE);
	return moveTokens(
		{
			file: authFile,
			withLock: (fn) => withPiAuthLock(authFile, fn),
			lockStaleMs: PI_AUTH_LOCK_STALE_MS,
			rewrites: [authFile, configFile],
			steps: { locked: "pi-auth-locked", verified: "pi-auth-stored", written: "pi-auth-removed" },
			keepAdvice: "import pi's login under another label",
			command: `${MIGRATE_COMMAND} --from-pi-auth ${label}`,
			read: async () => {
				// Checked first, so a config that cannot take the account changes nothing anywhere.
				const clash = labelClash(await readAddableConfig(configFile), label);
				if (clash) throw new MigrationError(`${clash} ${UNCHANGED}`);
				const auth = await readPiAuth(authFile);
				if (!auth?.credentials) return nothingToImport(label, configFile, authFile, options);
				return loginMove(label, configFile, authFile, { ...auth, credentials: auth.credentials }, options);
			},
		},
		options,
	);
}

function loginMove(
	label: string,
	configFile: string,
	authFile: string,
	auth: Required<PiAuthContent>,
	{ keychain, pause }: MoveOptions,
): PendingMove {
	return {
		accounts: [{ label, credentials: auth.credentials }],
		heading: `Importing pi's Anthropic login from ${authFile} as "${label}" into the ${keychain}:`,
		after: [
			`  then add "${label}" to ${configFile} (if it is not there yet)`,
			`  then remove the "${PI_ANTHROPIC_KEY}" entry from ${authFile}, keeping every other entry`,
		],
		untouched: `${authFile} and ${configFile} were not changed.`,
		commit: async () => {
			let added: "added" | "present";
			try {
				added = await addAccountToConfig(configFile, label);
				await pause("pi-auth-config-written");
				// pi edits auth.json only under the lock held here; anything else that changed it would be lost.
				if ((await readPiAuth(authFile))?.text !== auth.text) {
					throw new MigrationError(`${authFile} was changed by something else while the import ran.`);
				}
				// The whole file, as pi's own AuthStorage writes it on every change (JSON.stringify(data, null, 2),
				// mode 0600): pi normalises its layout at its next write anyway, so keeping the other entries byte for
				// byte would protect nothing pi itself keeps. Atomic, unlike pi's in-place write.
				const { [PI_ANTHROPIC_KEY]: _moved, ...others } = auth.data;
				await writePrivateFileAtomic(authFile, JSON.stringify(others, null, 2));
			} catch (error) {
				throw new MigrationError(
					`${errorText(error)}\nThe login is safely in the keychain as "${label}", and ${authFile} still holds it ` +
						"(it was not rewritten). Fix the problem and run the same command again to finish the move.",
				);
			}
			const where = added === "added" ? `in the keychain, added to ${configFile}` : "in the keychain";
			return [
				`Done: pi's Anthropic login is now the account "${label}" (${where}).`,
				`The "${PI_ANTHROPIC_KEY}" entry was removed from ${authFile}; its other entries are unchanged. pi's ` +
					"built-in Anthropic provider is now logged out: if you still want it, run /login in pi again (that " +
					"creates a separate login, so the two never share a refresh token).",
			];
		},
	};
}

async function nothingToImport(
	label: string,
	configFile: string,
	authFile: string,
	{ out }: MoveOptions,
): Promise<Done> {
	const config = await readAddableConfig(configFile);
	if (!config.accounts.some((account) => account.label === label)) {
		throw new MigrationError(
			`No Anthropic OAuth login (an "${PI_ANTHROPIC_KEY}" entry) in ${authFile} to import. ${UNCHANGED}`,
		);
	}
	out.info(`No Anthropic OAuth login in ${authFile}, and "${label}" is already an account: nothing to import.`);
	return { done: true, rotate: [label] };
}

/** Reads auth.json (with the checks this extension applies to its own files: no symlink, not shared-writable). */
async function readPiAuth(file: string): Promise<PiAuthContent | undefined> {
	const text = await readOrExplain(file);
	if (text === undefined) return undefined;
	const data = parseJsonQuietly(text, file);
	if (data === null || typeof data !== "object" || Array.isArray(data)) {
		throw new MigrationError(`${file} does not hold a JSON object as pi writes it. ${UNCHANGED}`);
	}
	const content = { text, data: data as Record<string, unknown> };
	if (!Object.hasOwn(data, PI_ANTHROPIC_KEY)) return content;
	const entry = content.data[PI_ANTHROPIC_KEY];
	const parsed = piOAuthSchema.safeParse(entry);
	if (!parsed.success) {
		const type = (entry as { type?: unknown } | null)?.type;
		throw new MigrationError(
			type === "oauth"
				? `The "${PI_ANTHROPIC_KEY}" login in ${file} is incomplete (its access or refresh token or expiry is ` +
						`missing or malformed), so there is nothing usable to import. ${UNCHANGED}`
				: `The "${PI_ANTHROPIC_KEY}" entry in ${file} is not an OAuth (Claude Pro/Max) login, so there is no ` +
						`refresh token to import. ${UNCHANGED}`,
		);
	}
	const { access, refresh, expires } = parsed.data;
	return { ...content, credentials: { access, refresh, expires } };
}

/**
 * Holds pi's own lock on auth.json, so no pi process refreshes (and so rotates) the Anthropic token while it
 * moves. pi locks the path as given in one place and its real path in another (proper-lockfile's default), so
 * when the two differ (a symlinked directory) both are held.
 */
async function withPiAuthLock<T>(file: string, fn: () => Promise<T>): Promise<T> {
	const options = { staleMs: PI_AUTH_LOCK_STALE_MS };
	const real = await realFile(file);
	if (real === file) return withFileLock(file, fn, options);
	return withFileLock(file, () => withFileLock(real, fn, options), options);
}

async function realFile(file: string): Promise<string> {
	try {
		return join(await fs.realpath(dirname(file)), basename(file));
	} catch {
		return file;
	}
}
