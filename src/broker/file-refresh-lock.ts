import { join } from "node:path";
import { ConfigError } from "../config/errors.ts";
import { withFileLock } from "../config/file-lock.ts";
import { AccountError } from "./account-error.ts";
import type { RefreshLock } from "./token-broker.ts";

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
			if (error instanceof ConfigError && error.kind === "locked") {
				throw new AccountError(label, "busy", `Account "${label}": ${error.message}`);
			}
			throw error;
		}
	}
}
