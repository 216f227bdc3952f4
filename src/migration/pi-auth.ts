import { promises as fs } from "node:fs";
import { basename, dirname, join } from "node:path";
import { z } from "zod";
import type { StoredCredentials } from "../broker/credentials.ts";
import { withFileLock } from "../fs/file-lock.ts";
import { PrivateFileError, readPrivateFile } from "../fs/private-file.ts";
import { parseJsonQuietly, UNCHANGED } from "./config-file.ts";
import { MigrationError } from "./migration-error.ts";

/** pi's provider id for its built-in Anthropic (Claude Pro/Max) login in auth.json. */
export const PI_ANTHROPIC_KEY = "anthropic";

/** pi's lock timing for auth.json: its holders refresh the lock every 15 s, so it only counts as stale at 30 s. */
export const PI_AUTH_LOCK_STALE_MS = 30_000;

const piOAuthSchema = z.looseObject({
	type: z.literal("oauth"),
	access: z.string().min(8).regex(/^\S+$/),
	refresh: z.string().min(8).regex(/^\S+$/),
	expires: z.number(),
});

export function piAuthFile(agentDir: string): string {
	return join(agentDir, "auth.json");
}

export interface PiAuthContent {
	text: string;
	/** pi's Anthropic OAuth login, when auth.json holds one. */
	credentials?: StoredCredentials;
}

/** Reads auth.json (with the checks this extension applies to its own files: no symlink, not shared-writable). */
export async function readPiAuth(file: string): Promise<PiAuthContent | undefined> {
	let text: string | undefined;
	try {
		text = await readPrivateFile(file);
	} catch (error) {
		if (error instanceof PrivateFileError) throw new MigrationError(`${error.message} ${UNCHANGED}`);
		throw error;
	}
	if (text === undefined) return undefined;
	const data = parseJsonQuietly(text, file);
	if (data === null || typeof data !== "object" || Array.isArray(data)) {
		throw new MigrationError(`${file} does not hold a JSON object as pi writes it. ${UNCHANGED}`);
	}
	if (!Object.hasOwn(data, PI_ANTHROPIC_KEY)) return { text };
	const entry = (data as Record<string, unknown>)[PI_ANTHROPIC_KEY];
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
	return { text, credentials: { access, refresh, expires } };
}

/**
 * Holds pi's own lock on auth.json, so no pi process refreshes (and so rotates) the Anthropic token while it
 * moves. pi locks the path as given in one place and its real path in another (proper-lockfile's default), so
 * when the two differ (a symlinked directory) both are held.
 */
export async function withPiAuthLock<T>(file: string, fn: () => Promise<T>): Promise<T> {
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
