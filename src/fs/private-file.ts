/**
 * Private files and directories: files 0600 in 0700 directories, read only when they are safe to trust (no
 * symlink, ours, not writable by others; checked by lstat and again on the opened file by fstat), written by an
 * atomic replace (a temp file of our own naming, renamed over the target; temp files a killed write left behind are
 * removed later). Reading, writing and the directory checks share one trust rule and one error type, so they stay
 * in one module of a little over 300 lines rather than three that would each export the other's checks.
 */
import { randomBytes } from "node:crypto";
import {
	closeSync,
	constants,
	promises as fs,
	fstatSync,
	lstatSync,
	openSync,
	renameSync,
	type Stats,
	statSync,
	writeFileSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import { errorText } from "../text.ts";
import { mayStillBeWriting } from "./process-identity.ts";

/**
 * A private file that cannot be used as it is: unreadable, unsafe to trust (a symlink, someone else's, writable by
 * others) or too large to be ours. The message names the file and the fix; the file is never rewritten then.
 */
export class PrivateFileError extends Error {
	override readonly name = "PrivateFileError";
	constructor(
		readonly file: string,
		readonly kind: "unreadable" | "unsafe" | "too_large",
		message: string,
	) {
		super(message);
	}
}

/** Larger files are refused unread: ours stay far below this, so anything bigger is not one of ours. */
export const MAX_FILE_BYTES = 1024 * 1024;

export interface PrivateFileStat {
	/** Changes whenever the file is replaced or rewritten: lets readers skip re-parsing an unchanged file. */
	version: string;
	size: number;
}

/**
 * Checks a file this extension owns, refusing anything it should not trust: a symlink (which could point the
 * next atomic write at another file), a non-regular file, one writable by other users, one owned by someone
 * else, or one too large to be ours. Returns `undefined` when the file does not exist.
 * Synchronous: one lstat of a small local file takes a few µs, its async form ~50 µs of waiting on the thread
 * pool, and this runs on every request (to tell an unchanged config or state file).
 */
export function statPrivateFile(file: string): PrivateFileStat | undefined {
	let stat: Stats;
	try {
		stat = lstatSync(file);
	} catch (error) {
		if (isErrno(error, "ENOENT")) return undefined;
		throw new PrivateFileError(file, "unreadable", `Cannot read ${file}: ${errnoText(error)}.`);
	}
	checkTrustedFile(file, stat);
	return { version: versionOf(stat), size: stat.size };
}

/** The checks of `statPrivateFile` on one stat result: an lstat before opening, an fstat of what was opened. */
function checkTrustedFile(file: string, stat: Stats): void {
	if (stat.isSymbolicLink()) throw symlinkError(file);
	if (!stat.isFile()) throw new PrivateFileError(file, "unsafe", `${file} is not a regular file.`);
	if (process.platform !== "win32") {
		const uid = process.getuid?.();
		if (uid !== undefined && stat.uid !== uid) {
			throw new PrivateFileError(
				file,
				"unsafe",
				`${file} belongs to another user (uid ${stat.uid}); it is not trusted.`,
			);
		}
		if ((stat.mode & 0o022) !== 0) {
			throw new PrivateFileError(
				file,
				"unsafe",
				`${file} is writable by other users (mode ${(stat.mode & 0o777).toString(8)}), so its accounts and ` +
					`fallback chains cannot be trusted. Check its content, then run: chmod 600 '${file}'`,
			);
		}
	}
	if (stat.size > MAX_FILE_BYTES) {
		throw new PrivateFileError(
			file,
			"too_large",
			`${file} is ${stat.size} bytes, more than this extension ever writes.`,
		);
	}
}

function symlinkError(file: string): PrivateFileError {
	return new PrivateFileError(
		file,
		"unsafe",
		`${file} is a symbolic link. It is not followed, so writes cannot be redirected elsewhere: replace it ` +
			"with a regular file (e.g. copy the target's content over it).",
	);
}

function versionOf(stat: Stats): string {
	return `${stat.dev}:${stat.ino}:${stat.size}:${stat.mtimeMs}:${stat.ctimeMs}`;
}

/** How often a file replaced between its check and its opening is checked again (another writer is at work). */
const REPLACED_RETRIES = 5;

/**
 * Reads a file after the checks of `statPrivateFile`; `undefined` when it does not exist. The opened file is
 * checked again (fstat): it must be the very file that was checked, so one swapped in between is never read.
 */
export async function readPrivateFile(file: string): Promise<string | undefined> {
	for (let attempt = 0; ; attempt++) {
		const checked = await fs.lstat(file).catch((error: unknown) => {
			if (isErrno(error, "ENOENT")) return undefined;
			throw new PrivateFileError(file, "unreadable", `Cannot read ${file}: ${errnoText(error)}.`);
		});
		if (!checked) return undefined;
		checkTrustedFile(file, checked);
		let handle: fs.FileHandle;
		try {
			// O_NONBLOCK: a FIFO planted in its place must not hang the read (the fstat below refuses it).
			handle = await fs.open(file, constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0) | (constants.O_NONBLOCK ?? 0));
		} catch (error) {
			if (isErrno(error, "ENOENT")) return undefined;
			if (isErrno(error, "ELOOP")) throw symlinkError(file);
			throw new PrivateFileError(file, "unreadable", `Cannot read ${file}: ${errnoText(error)}.`);
		}
		try {
			const opened = await handle.stat();
			checkTrustedFile(file, opened);
			if (opened.dev === checked.dev && opened.ino === checked.ino) return await handle.readFile("utf8");
		} catch (error) {
			if (error instanceof PrivateFileError) throw error;
			throw new PrivateFileError(file, "unreadable", `Cannot read ${file}: ${errnoText(error)}.`);
		} finally {
			await handle.close().catch(() => {});
		}
		// Replaced by another file between the check and the open (an atomic write of another process, or a swap).
		if (attempt >= REPLACED_RETRIES) {
			throw new PrivateFileError(
				file,
				"unsafe",
				`${file} was replaced every time it was about to be read (${REPLACED_RETRIES + 1} times); something ` +
					"keeps swapping it. It was not read.",
			);
		}
	}
}

/** The temp files this process is writing right now: never stale, whatever their age. */
const writing = new Set<string>();

/** `.<name>.<pid>.<12 hex>.tmp`: what `writePrivateFileAtomic` names its temp file beside `<name>`. */
function tempNameFor(file: string): string {
	return `.${basename(file)}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
}

export interface WriteOptions {
	/**
	 * Flush the content to the disk before the rename (default true), so that after a power cut the file holds
	 * either the old content or the new one. Without it (only for files whose loss costs nothing), the rename is
	 * still atomic for every reader, but after a power cut the file may be empty: its reader must accept that.
	 */
	durable?: boolean;
	/** Told right after the rename: from then on every reader sees the new content. */
	onReplaced?: () => void;
}

/**
 * Replaces `file` atomically: the content goes to a temp file in the same directory, created 0600 from the
 * start (never briefly world-readable), flushed, then renamed over the target. A crash leaves either the old
 * file or the new one, never half of one (and a temp file that the next write removes). Directories it has to
 * create are 0700; existing ones are checked (`ensurePrivateDir`). Returns what `statPrivateFile` reports for the
 * file while it stays as written, or `undefined` when that cannot be told (it changed at once), so a writer can
 * keep what it wrote as the file's known content.
 */
export async function writePrivateFileAtomic(
	file: string,
	content: string,
	options: WriteOptions = {},
): Promise<PrivateFileStat | undefined> {
	const dir = dirname(file);
	await ensurePrivateDir(dir);
	await removeStaleTempFilesSometimes(file);
	const temp = join(dir, tempNameFor(file));
	writing.add(temp);
	let written: Stats;
	try {
		if (options.durable ?? true) {
			written = await writeDurably(temp, content);
			await fs.rename(temp, file);
		} else {
			written = writeAtOnce(temp, content);
			renameSync(temp, file);
		}
	} catch (error) {
		await fs.rm(temp, { force: true }).catch(() => {});
		throw new PrivateFileError(file, "unreadable", `Cannot write ${file}: ${errnoText(error)}.`);
	} finally {
		writing.delete(temp);
	}
	options.onReplaced?.();
	// The rename changes the file's ctime, so its version is taken from the path, and only if the path still holds
	// the very file written (same inode, size and mtime): anything else put there meanwhile is not mistaken for it.
	const now = lstatSync(file, { throwIfNoEntry: false });
	const same =
		now?.isFile() &&
		now.dev === written.dev &&
		now.ino === written.ino &&
		now.size === written.size &&
		now.mtimeMs === written.mtimeMs;
	return now && same ? { version: versionOf(now), size: now.size } : undefined;
}

const CREATE_NEW = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL;

/** The temp file's content, flushed to the disk; returns its stat. */
async function writeDurably(temp: string, content: string): Promise<Stats> {
	const handle = await fs.open(temp, CREATE_NEW, 0o600);
	try {
		await handle.writeFile(content, "utf8");
		await handle.sync();
		return await handle.stat();
	} finally {
		await handle.close();
	}
}

/**
 * The temp file's content without a flush, in one go (the rename after it too): a few system calls on a small file
 * in the page cache take ~0.1 ms together, while the same steps async took one event-loop turn each, and a busy pi
 * (pi-ai 1.x builds a request in ~2 ms of synchronous work) made each turn wait: a fallback's answer waits for this.
 */
function writeAtOnce(temp: string, content: string): Stats {
	const fd = openSync(temp, CREATE_NEW, 0o600);
	try {
		writeFileSync(fd, content, "utf8");
		return fstatSync(fd);
	} finally {
		closeSync(fd);
	}
}

/** A scan per target file at most this often per process: a killed writer's temp file goes on the next run. */
const STALE_SCAN_INTERVAL_MS = 60_000;
const lastScan = new Map<string, number>();

async function removeStaleTempFilesSometimes(file: string): Promise<void> {
	const now = Date.now();
	if (now - (lastScan.get(file) ?? Number.NEGATIVE_INFINITY) < STALE_SCAN_INTERVAL_MS) return;
	lastScan.set(file, now);
	await removeStaleTempFiles(file).catch(() => []);
}

/**
 * The temp files a killed `writePrivateFileAtomic` of `file` left behind (a killed migration's temp file of pi's
 * auth.json holds tokens), by name. Only files of exactly its naming (`.<name>.<pid>.<12 hex>.tmp`) count, only
 * regular files of this user, and never one whose writer may still be at work: this process's own writes in
 * progress, and any whose pid is alive and was not reused since the file was written (a stopped writer included).
 */
export async function staleTempFiles(file: string): Promise<string[]> {
	const dir = dirname(file);
	const pattern = new RegExp(`^\\.${escapeRegExp(basename(file))}\\.(\\d{1,10})\\.[0-9a-f]{12}\\.tmp$`);
	let names: string[];
	try {
		names = await fs.readdir(dir);
	} catch {
		return [];
	}
	const stale: string[] = [];
	for (const name of names) {
		const pid = Number(pattern.exec(name)?.[1]);
		if (!Number.isInteger(pid) || pid <= 0) continue;
		const path = join(dir, name);
		if (writing.has(path)) continue;
		const stat = await fs.lstat(path).catch(() => undefined);
		if (!stat?.isFile() || stat.nlink !== 1) continue;
		if (process.platform !== "win32" && stat.uid !== process.getuid?.()) continue;
		if (pid !== process.pid && mayStillBeWriting(pid, stat.mtimeMs)) continue;
		stale.push(name);
	}
	return stale;
}

/** Removes the temp files `staleTempFiles` names; returns the names removed. */
export async function removeStaleTempFiles(file: string): Promise<string[]> {
	const removed: string[] = [];
	for (const name of await staleTempFiles(file)) {
		await fs.unlink(join(dirname(file), name)).then(
			() => removed.push(name),
			() => {},
		);
	}
	return removed;
}

function escapeRegExp(text: string): string {
	return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * Creates a directory this extension keeps files or locks in (0700, with its parents), or checks an existing one:
 * it must be a directory of this user that no one else can write to. Anyone who can write there could replace
 * the config, or hold a refresh lock forever (e.g. a `multi-claude-code-locks/` pre-created in a shared dir).
 */
export async function ensurePrivateDir(dir: string): Promise<void> {
	// An existing directory (every write but the first) takes one synchronous stat, a few µs: this runs on every
	// write of the state file, twice (its lock, then the file).
	let stat: Stats | undefined;
	try {
		stat = statSync(dir);
	} catch (error) {
		if (!isErrno(error, "ENOENT")) throw dirError(dir, error);
	}
	if (!stat) {
		await fs.mkdir(dir, { recursive: true, mode: 0o700 });
		stat = await fs.stat(dir).catch((error: unknown) => {
			throw dirError(dir, error);
		});
	}
	checkDirStat(dir, stat);
}

function dirError(dir: string, error: unknown): PrivateFileError {
	return new PrivateFileError(dir, "unreadable", `Cannot use the directory ${dir}: ${errnoText(error)}.`);
}

/** The checks of `ensurePrivateDir` on an existing directory (symlinks followed: `~/.pi` may be one). */
function checkDirStat(dir: string, stat: Stats): void {
	if (!stat.isDirectory()) throw new PrivateFileError(dir, "unsafe", `${dir} is not a directory.`);
	if (process.platform === "win32") return;
	const uid = process.getuid?.();
	if (uid !== undefined && stat.uid !== uid) {
		throw new PrivateFileError(
			dir,
			"unsafe",
			`The directory ${dir} belongs to another user (uid ${stat.uid}), who could replace this extension's files ` +
				"or hold its locks there; it is not used. Point PI_CODING_AGENT_DIR at a directory of your own, or move " +
				"that one aside.",
		);
	}
	if ((stat.mode & 0o022) !== 0) {
		throw new PrivateFileError(
			dir,
			"unsafe",
			`The directory ${dir} is writable by other users (mode ${(stat.mode & 0o777).toString(8)}), who could ` +
				`replace this extension's files or hold its locks there; it is not used. Run: chmod go-w '${dir}'`,
		);
	}
}

function isErrno(error: unknown, code: string): boolean {
	return typeof error === "object" && error !== null && (error as { code?: unknown }).code === code;
}

function errnoText(error: unknown): string {
	if (typeof error === "object" && error !== null && "code" in error) {
		const code = String((error as { code?: unknown }).code);
		if (code === "EACCES" || code === "EPERM") return "permission denied";
		if (code === "ENOSPC") return "no space left on the device";
		if (code === "EROFS") return "the file system is read-only";
		return code;
	}
	return errorText(error);
}
