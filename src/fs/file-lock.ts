import * as nodeFs from "node:fs";
import { dirname } from "node:path";
import lockfile from "proper-lockfile";
import { DEFAULT_LOCK_STALE_MS } from "../settings.ts";
import { errorText } from "../text.ts";
import { ensurePrivateDir } from "./private-file.ts";

export { DEFAULT_LOCK_STALE_MS };

export interface FileLockOptions {
	/** A lock whose holder stopped refreshing it for this long is taken over (its holder died). */
	staleMs?: number;
	/** How long to wait for the lock before giving up. */
	waitMs?: number;
	/**
	 * Throw a FileLockError "lost" when the lock turns out lost after `fn` returned (default true). A caller that
	 * checks the lease itself before every step that matters, and knows what to do then, turns it off.
	 */
	failIfLost?: boolean;
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
 * The holder's view of a lock it took. A holder frozen past the stale time (Ctrl-Z, a suspended laptop, a paused
 * VM) loses the lock to a waiter without noticing: it asks here right before each step another holder must not
 * overlap with (sending a refresh token, writing the keychain).
 */
export interface FileLockLease {
	/**
	 * Whether this process still holds the lock: proper-lockfile has not seen it compromised, and the lock
	 * directory on disk is still the one this process created (same inode and birth time; its mtime one this
	 * process set). A takeover removes and recreates the directory, so it changes all of these.
	 */
	isHeld(): Promise<boolean>;
	/** Throws a FileLockError of kind "lost" unless `isHeld()`. */
	assertHeld(): Promise<void>;
}

/**
 * Runs `fn` while holding a cross-process lock on `target`, with the same protocol pi uses for auth.json
 * (proper-lockfile: an atomic `mkdir <target>.lock`, kept fresh while held, taken over once stale). `fn` gets the
 * lease; callers that only need mutual exclusion ignore it. A lock found lost at the end is not removed: the
 * directory then belongs to whoever took it over.
 */
export async function withFileLock<T>(
	target: string,
	fn: (lease: FileLockLease) => Promise<T>,
	options: FileLockOptions = {},
): Promise<T> {
	// Kept fresh every few seconds, a held lock is never taken over, and one left behind by a killed process blocks
	// others for the stale time at most.
	const staleMs = options.staleMs ?? DEFAULT_LOCK_STALE_MS;
	const waitMs = options.waitMs ?? 60_000;
	await ensurePrivateDir(dirname(target));
	const lockPath = `${target}.lock`;
	const watch = new LockWatch(lockPath);
	let release: () => Promise<void>;
	try {
		release = await lockfile.lock(target, {
			realpath: false,
			stale: staleMs,
			update: Math.max(1000, Math.min(5000, Math.floor(staleMs / 2))),
			// Short, capped back-off: contenders wait for one HTTP refresh at most, so poll briskly.
			retries: { retries: Math.ceil(waitMs / 250), factor: 1.3, minTimeout: 10, maxTimeout: 250, randomize: true },
			fs: watch.fs,
			onCompromised: (error) => {
				watch.compromised = error;
			},
		});
	} catch (error) {
		const held = (error as { code?: unknown }).code === "ELOCKED";
		throw new FileLockError(
			target,
			held ? "timeout" : "failed",
			held
				? `Another pi process held the lock ${lockPath} for more than ${Math.round(waitMs / 1000)} s. ` +
						"If no pi is running, remove that directory."
				: `Cannot take the lock ${lockPath}: ${errorText(error)}`,
		);
	}
	await watch.taken();
	const lease: FileLockLease = {
		isHeld: () => watch.isHeld(),
		async assertHeld() {
			if (!(await watch.isHeld())) {
				const why = watch.compromised ? `: ${watch.compromised.message}` : "";
				throw new FileLockError(
					target,
					"lost",
					`The lock ${lockPath} was taken over by another process while this one was not running${why}.`,
				);
			}
		},
	};
	try {
		const result = await fn(lease);
		if (options.failIfLost ?? true) await lease.assertHeld();
		return result;
	} finally {
		// Always released (proper-lockfile forgets the lock and stops refreshing it); the directory itself is only
		// removed while it is still ours (see LockWatch).
		await release().catch(() => {});
	}
}

/**
 * Tells a held lock directory from one another process recreated. proper-lockfile refreshes the directory's mtime
 * through the `fs` it is given, so every mtime this process set is seen here; a takeover (rmdir + mkdir by
 * another process) gives a new birth time (inode numbers are often reused at once on ext4) and an mtime this
 * process never set. The same `fs` makes proper-lockfile's own removals (on release, and at process exit) leave a
 * directory alone once it is no longer ours: a holder that lost its lock must never delete the new holder's.
 */
class LockWatch {
	compromised: Error | undefined;
	readonly fs: typeof nodeFs;
	private readonly ours = new Set<number>();
	private identity: { dev: bigint; ino: bigint; birthtimeNs: bigint } | undefined;

	constructor(private readonly lockPath: string) {
		const { utimes, rmdir, rmdirSync } = nodeFs;
		this.fs = {
			...nodeFs,
			utimes: ((
				path: nodeFs.PathLike,
				atime: nodeFs.TimeLike,
				mtime: nodeFs.TimeLike,
				done: nodeFs.NoParamCallback,
			) => {
				// Counted before the call: a check racing the update must not mistake our own new mtime for a takeover.
				if (path === lockPath && mtime instanceof Date) this.ours.add(mtime.getTime());
				utimes(path, atime, mtime, done);
			}) as typeof nodeFs.utimes,
			rmdir: ((path: nodeFs.PathLike, done: nodeFs.NoParamCallback) => {
				if (path !== lockPath || !this.identity) return rmdir(path, done);
				nodeFs.promises.stat(lockPath, { bigint: true }).then(
					(stat) => (this.matches(stat) ? rmdir(path, done) : done(null)),
					() => done(null),
				);
			}) as typeof nodeFs.rmdir,
			rmdirSync: ((path: nodeFs.PathLike) => {
				if (path !== lockPath || !this.identity) return rmdirSync(path);
				let stat: nodeFs.BigIntStats | undefined;
				try {
					stat = nodeFs.statSync(lockPath, { bigint: true });
				} catch {
					return;
				}
				if (this.matches(stat)) rmdirSync(path);
			}) as typeof nodeFs.rmdirSync,
		};
	}

	/** Right after proper-lockfile created the directory: what it looks like while it is ours. */
	async taken(): Promise<void> {
		const stat = await nodeFs.promises.stat(this.lockPath, { bigint: true }).catch(() => undefined);
		if (stat) {
			this.ours.add(mtimeOf(stat));
			this.identity = { dev: stat.dev, ino: stat.ino, birthtimeNs: stat.birthtimeNs };
		}
	}

	async isHeld(): Promise<boolean> {
		if (this.compromised || !this.identity) return false;
		const stat = await nodeFs.promises.stat(this.lockPath, { bigint: true }).catch(() => undefined);
		return stat !== undefined && this.matches(stat);
	}

	/** Whether the directory on disk is the one this process created and still keeps fresh. */
	private matches(stat: nodeFs.BigIntStats): boolean {
		const identity = this.identity;
		if (!identity || stat.dev !== identity.dev || stat.ino !== identity.ino) return false;
		// Zero where the file system keeps no birth time; the mtime check below still applies there.
		if (identity.birthtimeNs !== 0n && stat.birthtimeNs !== identity.birthtimeNs) return false;
		const mtime = mtimeOf(stat);
		if (this.ours.has(mtime)) return true;
		// File systems with whole-second mtimes store what proper-lockfile set rounded down.
		return mtime % 1000 === 0 && [...this.ours].some((set) => Math.floor(set / 1000) * 1000 === mtime);
	}
}

/**
 * The mtime in whole ms as proper-lockfile sees it (`stat.mtime.getTime()`, rounded): utimes stores ms values at
 * µs resolution, often one µs short (…792.999 for …793), which a truncating `mtimeMs` would read as another ms.
 */
function mtimeOf(stat: nodeFs.BigIntStats): number {
	return Math.round(Number(stat.mtimeNs / 1000n) / 1000);
}
