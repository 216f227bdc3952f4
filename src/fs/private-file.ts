import { randomBytes } from "node:crypto";
import { constants, promises as fs } from "node:fs";
import { basename, dirname, join } from "node:path";
import { errorText } from "../text.ts";

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
 */
export async function statPrivateFile(file: string): Promise<PrivateFileStat | undefined> {
	let stat: Awaited<ReturnType<typeof fs.lstat>>;
	try {
		stat = await fs.lstat(file);
	} catch (error) {
		if (isErrno(error, "ENOENT")) return undefined;
		throw new PrivateFileError(file, "unreadable", `Cannot read ${file}: ${errnoText(error)}.`);
	}
	if (stat.isSymbolicLink()) {
		throw new PrivateFileError(
			file,
			"unsafe",
			`${file} is a symbolic link. It is not followed, so writes cannot be redirected elsewhere: replace it ` +
				"with a regular file (e.g. copy the target's content over it).",
		);
	}
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
	return { version: `${stat.dev}:${stat.ino}:${stat.size}:${stat.mtimeMs}:${stat.ctimeMs}`, size: stat.size };
}

/** Reads a file after the checks of `statPrivateFile`; `undefined` when it does not exist. */
export async function readPrivateFile(file: string): Promise<string | undefined> {
	if (!(await statPrivateFile(file))) return undefined;
	try {
		const handle = await fs.open(file, constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0));
		try {
			return await handle.readFile("utf8");
		} finally {
			await handle.close();
		}
	} catch (error) {
		if (isErrno(error, "ENOENT")) return undefined;
		throw new PrivateFileError(file, "unreadable", `Cannot read ${file}: ${errnoText(error)}.`);
	}
}

/**
 * Replaces `file` atomically: the content goes to a temp file in the same directory, created 0600 from the
 * start (never briefly world-readable), flushed, then renamed over the target. A crash leaves either the old
 * file or the new one, never half of one. Directories it has to create are 0700.
 */
export async function writePrivateFileAtomic(file: string, content: string): Promise<void> {
	const dir = dirname(file);
	await ensurePrivateDir(dir);
	const temp = join(dir, `.${basename(file)}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`);
	let handle: fs.FileHandle | undefined;
	try {
		handle = await fs.open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
		await handle.writeFile(content, "utf8");
		await handle.sync();
		await handle.close();
		handle = undefined;
		await fs.rename(temp, file);
	} catch (error) {
		await handle?.close().catch(() => {});
		await fs.rm(temp, { force: true }).catch(() => {});
		throw new PrivateFileError(file, "unreadable", `Cannot write ${file}: ${errnoText(error)}.`);
	}
}

export async function ensurePrivateDir(dir: string): Promise<void> {
	await fs.mkdir(dir, { recursive: true, mode: 0o700 });
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
