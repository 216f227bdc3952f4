/**
 * What the broker keeps beside the config, shared by every pi process of the user: one refresh lock per account,
 * a record of which process has that account's refresh out, and the needs-login marks (in the shared state
 * file). None holds a secret.
 */
import { promises as fs } from "node:fs";
import { dirname, join } from "node:path";
import type { SharedState } from "../config/schema.ts";
import type { JsonFileStore } from "../config/stores.ts";
import { FileLockError, withFileLock } from "../fs/file-lock.ts";
import { ensurePrivateDir, PrivateFileError, readPrivateFile, writePrivateFileAtomic } from "../fs/private-file.ts";
import { processState, thisProcess } from "../fs/process-identity.ts";
import { DEFAULT_LOCK_STALE_MS } from "../settings.ts";
import {
	AccountError,
	type LoginMarks,
	type RefreshLease,
	type RefreshLock,
	type RejectedPair,
} from "./token-broker.ts";

/** A sender on another host cannot be checked from here; after this long its request has surely ended. */
const FOREIGN_SENDER_MS = 10 * 60 * 1000;

/** `<label>.sending`: who sent the refresh of which pair (by its expiry). No token. */
interface SendingRecord {
	pid: number;
	host: string;
	startedAt?: number;
	/** Expiry of the pair whose refresh token was sent. */
	from: number;
	/** When it was sent (ms since epoch). */
	at: number;
}

export interface FileRefreshLockOptions {
	/** How long to wait for the lock (default 60 s). */
	waitMs?: number;
	/** A lock whose holder stopped refreshing it this long ago is taken over (default 10 s). */
	staleMs?: number;
}

/**
 * One lock file per account beside the config, so refreshes of different accounts do not wait on each other.
 * Beside each lock, while a refresh is out, a record of the process that sent it: a holder frozen mid-request
 * loses its lock once stale, but the next holder then sees that a live process has the refresh token out.
 */
export class FileRefreshLock implements RefreshLock {
	private readonly waitMs: number;
	private readonly staleMs: number;

	constructor(
		private readonly lockDir: string,
		options: FileRefreshLockOptions = {},
	) {
		this.waitMs = options.waitMs ?? 60_000;
		this.staleMs = options.staleMs ?? DEFAULT_LOCK_STALE_MS;
	}

	async run<T>(label: string, fn: (lease: RefreshLease) => Promise<T>): Promise<T> {
		try {
			// The agent dir too: whoever can write there can replace the lock directory.
			await ensurePrivateDir(dirname(this.lockDir));
			return await withFileLock(join(this.lockDir, `${label}.refresh`), (lease) => fn({ isHeld: lease.isHeld }), {
				waitMs: this.waitMs,
				staleMs: this.staleMs,
				// The broker asks the lease before every step that matters, and knows what to do when it is lost.
				failIfLost: false,
			});
		} catch (error) {
			if (error instanceof FileLockError) {
				throw new AccountError(label, "busy", `Account "${label}": ${error.message}`);
			}
			if (error instanceof PrivateFileError) {
				throw new AccountError(label, "refresh_failed", `Account "${label}": ${error.message}`);
			}
			throw error;
		}
	}

	async otherSender(label: string, from: number): Promise<string | undefined> {
		const record = await this.readRecord(label);
		if (!record || record.from !== from) return undefined;
		const state = processState(record);
		if (state === "self" || state === "dead") return undefined;
		if (state === "unknown") {
			if (Date.now() - record.at > FOREIGN_SENDER_MS) return undefined;
			return `a pi process on ${record.host} (pid ${record.pid})`;
		}
		return state === "stopped" ? `pi process ${record.pid}, which is stopped,` : `pi process ${record.pid}`;
	}

	async sending(label: string, from: number): Promise<void> {
		const record: SendingRecord = { ...thisProcess(), from, at: Date.now() };
		try {
			await writePrivateFileAtomic(this.recordFile(label), `${JSON.stringify(record)}\n`);
		} catch (error) {
			// Nothing was sent yet: without the record, this refresh is not sent at all.
			if (error instanceof PrivateFileError) {
				throw new AccountError(
					label,
					"refresh_failed",
					`Account "${label}": its token was not renewed: ${error.message}`,
				);
			}
			throw error;
		}
	}

	async sent(label: string): Promise<void> {
		const record = await this.readRecord(label);
		const me = thisProcess();
		if (!record || record.pid !== me.pid || record.host !== me.host) return;
		await fs.rm(this.recordFile(label), { force: true });
	}

	private recordFile(label: string): string {
		return join(this.lockDir, `${label}.sending`);
	}

	/** The record, or `undefined` when there is none or it is not one this extension wrote. */
	private async readRecord(label: string): Promise<SendingRecord | undefined> {
		let text: string | undefined;
		try {
			text = await readPrivateFile(this.recordFile(label));
		} catch {
			return undefined;
		}
		if (text === undefined) return undefined;
		try {
			const raw = JSON.parse(text) as Partial<SendingRecord>;
			const { pid, host, startedAt, from, at } = raw;
			if (
				typeof pid !== "number" ||
				typeof host !== "string" ||
				typeof from !== "number" ||
				typeof at !== "number"
			) {
				return undefined;
			}
			return { pid, host, from, at, ...(typeof startedAt === "number" ? { startedAt } : {}) };
		} catch {
			return undefined;
		}
	}
}

/** Needs-login marks kept in the shared state file, so every pi session reports them the same way. */
export class StateLoginMarks implements LoginMarks {
	constructor(private readonly state: JsonFileStore<SharedState>) {}

	async isMarked(label: string, pair?: RejectedPair): Promise<boolean> {
		const mark = (await this.state.read()).needsLogin[label];
		if (mark === undefined) return false;
		// A mark from before marks named their pair stops every refresh, as it always did, until a login clears it.
		return pair === undefined || mark.pairExpires === undefined || mark.pairExpires === pair.expires;
	}

	async mark(label: string, reason: string, pair?: RejectedPair): Promise<void> {
		await this.state.update((state) => {
			state.needsLogin[label] = { since: Date.now(), reason, ...(pair ? { pairExpires: pair.expires } : {}) };
			return { next: state, result: undefined };
		});
	}

	async clear(label: string): Promise<void> {
		if (!(await this.isMarked(label))) return;
		await this.state.update((state) => {
			if (state.needsLogin[label] === undefined) return { result: undefined };
			delete state.needsLogin[label];
			return { next: state, result: undefined };
		});
	}
}
