import { dirname } from "node:path";
import lockfile from "proper-lockfile";
import { errorText } from "../text.ts";
import { ensurePrivateDir } from "./private-file.ts";

/**
 * A lock whose holder stopped refreshing it this long ago is taken over. pi's own auth.json lock is a different
 * trade-off (30 s); ours guards one HTTP refresh or one small file write, so a dead holder blocks others less.
 */
export const DEFAULT_LOCK_STALE_MS = 10_000;

export interface FileLockOptions {
	/** A lock whose holder stopped refreshing it for this long is taken over (its holder died). */
	staleMs?: number;
	/** How long to wait for the lock before giving up. */
	waitMs?: number;
}

/** A lock that could not be taken in time, could not be taken at all, or was lost while held. */
export class FileLockError extends Error {
	override readonly name = "FileLockError";
	constructor(
		readonly target: string,
		readonly kind: "timeout" | "failed" | "lost",
		message: string,
	) {
		super(message);
	}
}

/**
 * Runs `fn` while holding a cross-process lock on `target`, with the same protocol pi uses for auth.json
 * (proper-lockfile: an atomic `mkdir <target>.lock`, kept fresh while held, taken over once stale).
 */
export async function withFileLock<T>(target: string, fn: () => Promise<T>, options: FileLockOptions = {}): Promise<T> {
	// Kept fresh every few seconds, a held lock is never taken over, and one left behind by a killed process blocks
	// others for the stale time at most.
	const staleMs = options.staleMs ?? DEFAULT_LOCK_STALE_MS;
	const waitMs = options.waitMs ?? 60_000;
	await ensurePrivateDir(dirname(target));
	let release: (() => Promise<void>) | undefined;
	let compromised: Error | undefined;
	try {
		release = await lockfile.lock(target, {
			realpath: false,
			stale: staleMs,
			update: Math.max(1000, Math.min(5000, Math.floor(staleMs / 2))),
			// Short, capped back-off: contenders wait for one HTTP refresh at most, so poll briskly.
			retries: { retries: Math.ceil(waitMs / 250), factor: 1.3, minTimeout: 10, maxTimeout: 250, randomize: true },
			onCompromised: (error) => {
				compromised = error;
			},
		});
	} catch (error) {
		const held = (error as { code?: unknown }).code === "ELOCKED";
		throw new FileLockError(
			target,
			held ? "timeout" : "failed",
			held
				? `Another pi process held the lock ${target}.lock for more than ${Math.round(waitMs / 1000)} s. ` +
						"If no pi is running, remove that directory."
				: `Cannot take the lock ${target}.lock: ${errorText(error)}`,
		);
	}
	try {
		const result = await fn();
		if (compromised) {
			throw new FileLockError(target, "lost", `The lock ${target}.lock was lost while held: ${compromised.message}`);
		}
		return result;
	} finally {
		await release().catch(() => {});
	}
}
