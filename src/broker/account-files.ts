/**
 * What the broker keeps beside the config, shared by every pi process of the user: one refresh lock per account
 * and the needs-login marks (in the shared state file). Neither holds a secret.
 */
import { join } from "node:path";
import type { SharedState } from "../config/schema.ts";
import type { JsonFileStore } from "../config/stores.ts";
import { FileLockError, withFileLock } from "../fs/file-lock.ts";
import { AccountError, type LoginMarks, type RefreshLock } from "./token-broker.ts";

/** One lock file per account beside the config, so refreshes of different accounts do not wait on each other. */
export class FileRefreshLock implements RefreshLock {
	constructor(
		private readonly lockDir: string,
		private readonly waitMs = 60_000,
	) {}

	async run<T>(label: string, fn: () => Promise<T>): Promise<T> {
		try {
			return await withFileLock(join(this.lockDir, `${label}.refresh`), fn, { waitMs: this.waitMs });
		} catch (error) {
			if (error instanceof FileLockError) {
				throw new AccountError(label, "busy", `Account "${label}": ${error.message}`);
			}
			throw error;
		}
	}
}

/** Needs-login marks kept in the shared state file, so every pi session reports them the same way. */
export class StateLoginMarks implements LoginMarks {
	constructor(private readonly state: JsonFileStore<SharedState>) {}

	async isMarked(label: string): Promise<boolean> {
		return (await this.state.read()).needsLogin[label] !== undefined;
	}

	async mark(label: string, reason: string): Promise<void> {
		await this.state.update((state) => {
			state.needsLogin[label] = { since: Date.now(), reason };
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
