import { AsyncEntry } from "@napi-rs/keyring";
import { DEFAULT_KEYCHAIN_TIMEOUT_MS, KEYCHAIN_SERVICE } from "../settings.ts";
import { errorText } from "../text.ts";
import {
	backendName,
	type KeychainHost,
	type KeychainOperation,
	keychainTimeout,
	keyringFailure,
} from "./keyring-failures.ts";
import { KeychainError, MAX_SECRET_BYTES, type SecretStore, storedSecretBytes } from "./secret-store.ts";

export interface OsSecretStoreOptions {
	service?: string;
	/** Bound on one keychain call: long enough for a person to answer a macOS access prompt. */
	timeoutMs?: number;
	platform?: NodeJS.Platform;
	/** Running inside WSL, where a missing Secret Service has its own fix. */
	wsl?: boolean;
	/** The `node` binary macOS asks about (default process.execPath). */
	execPath?: string;
}

/**
 * SecretStore over `@napi-rs/keyring`. On Linux it is pinned to the Secret Service: unpinned, the library
 * silently falls back to the kernel keyutils store, which forgets every token at reboot.
 */
export class OsSecretStore implements SecretStore {
	readonly backend: string;
	private readonly service: string;
	private readonly timeoutMs: number;
	private readonly host: KeychainHost;
	// Constructing an entry opens a platform session (~5 ms, and on Linux a blocking D-Bus round trip), so
	// each label's entry is built once and reused.
	private readonly entries = new Map<string, AsyncEntry>();

	constructor(options: OsSecretStoreOptions = {}) {
		this.service = options.service ?? KEYCHAIN_SERVICE;
		this.timeoutMs = options.timeoutMs ?? DEFAULT_KEYCHAIN_TIMEOUT_MS;
		this.host = {
			platform: options.platform ?? process.platform,
			wsl: options.wsl ?? false,
			execPath: options.execPath ?? process.execPath,
			service: this.service,
		};
		this.backend = backendName(this.host.platform);
	}

	get(label: string): Promise<string | null> {
		return this.bounded("read", label, (entry, signal) => entry.getPassword(signal));
	}

	set(label: string, secret: string): Promise<void> {
		// Windows' limit, refused here on every system before anything is written (see MAX_SECRET_BYTES).
		const bytes = storedSecretBytes(secret);
		if (bytes > MAX_SECRET_BYTES) {
			return Promise.reject(
				new KeychainError(
					"too_large",
					`Did not write the ${this.backend} item of account "${label}": the secret takes ${bytes} bytes as ` +
						`Windows Credential Manager stores it (UTF-16), over the ${MAX_SECRET_BYTES} bytes one item holds ` +
						"there. That limit applies on every system, so accounts work the same everywhere; nothing was written.",
				),
			);
		}
		// setPassword, not setSecret: it updates the existing item in place (no delete-then-add window where the
		// account is gone), and on Windows it keeps the UTF-16 text every earlier version wrote and can read.
		return this.bounded("write", label, (entry, signal) => entry.setPassword(secret, signal));
	}

	delete(label: string): Promise<boolean> {
		return this.bounded("delete", label, (entry, signal) => entry.deleteCredential(signal));
	}

	private entry(label: string): AsyncEntry {
		let entry = this.entries.get(label);
		if (!entry) {
			entry = new AsyncEntry(this.service, label, { linux: { store: "secret-service" } });
			this.entries.set(label, entry);
		}
		return entry;
	}

	private async bounded<T>(
		operation: KeychainOperation,
		label: string,
		call: (entry: AsyncEntry, signal: AbortSignal) => Promise<T>,
	): Promise<T> {
		const abort = new AbortController();
		let timer: NodeJS.Timeout | undefined;
		// The library's own abort does not interrupt a D-Bus call that is waiting for a frozen daemon, so the
		// bound is enforced here with a race; the abandoned call settles (or not) on its own.
		const expired = new Promise<never>((_, reject) => {
			timer = setTimeout(() => {
				abort.abort();
				reject(keychainTimeout(operation, label, this.timeoutMs, this.host));
			}, this.timeoutMs);
		});
		try {
			return await Promise.race([call(this.entry(label), abort.signal), expired]);
		} catch (error) {
			if (error instanceof KeychainError) throw error;
			throw keyringFailure(errorText(error), operation, label, this.host);
		} finally {
			clearTimeout(timer);
		}
	}
}
