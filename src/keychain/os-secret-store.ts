import { AsyncEntry } from "@napi-rs/keyring";
import { DEFAULT_KEYCHAIN_TIMEOUT_MS, KEYCHAIN_SERVICE } from "../settings.ts";
import { errorText, formatSeconds } from "../text.ts";
import { KeychainError, type KeychainErrorKind, type SecretStore } from "./secret-store.ts";

export interface OsSecretStoreOptions {
	service?: string;
	/** Bound on one keychain call: long enough for a person to answer a macOS access prompt. */
	timeoutMs?: number;
	platform?: NodeJS.Platform;
	/** Running inside WSL, where a missing Secret Service has its own fix. */
	wsl?: boolean;
}

/**
 * SecretStore over `@napi-rs/keyring`. On Linux it is pinned to the Secret Service: unpinned, the library
 * silently falls back to the kernel keyutils store, which forgets every token at reboot.
 */
export class OsSecretStore implements SecretStore {
	readonly backend: string;
	private readonly service: string;
	private readonly timeoutMs: number;
	private readonly platform: NodeJS.Platform;
	private readonly wsl: boolean;
	// Constructing an entry opens a platform session (~5 ms, and on Linux a blocking D-Bus round trip), so
	// each label's entry is built once and reused.
	private readonly entries = new Map<string, AsyncEntry>();
	/** Calls that outlived their bound and are still running, per label: a write among them may still land. */
	private readonly abandoned = new Map<string, Set<Promise<unknown>>>();

	constructor(options: OsSecretStoreOptions = {}) {
		this.service = options.service ?? KEYCHAIN_SERVICE;
		this.timeoutMs = options.timeoutMs ?? DEFAULT_KEYCHAIN_TIMEOUT_MS;
		this.platform = options.platform ?? process.platform;
		this.wsl = options.wsl ?? false;
		this.backend = backendName(this.platform);
	}

	get(label: string): Promise<string | null> {
		return this.bounded("read", label, (entry, signal) => entry.getPassword(signal));
	}

	set(label: string, secret: string): Promise<void> {
		// setPassword updates the existing item in place (no delete-then-add window where the account is gone).
		return this.bounded("write", label, (entry, signal) => entry.setPassword(secret, signal));
	}

	delete(label: string): Promise<boolean> {
		return this.bounded("delete", label, (entry, signal) => entry.deleteCredential(signal));
	}

	/**
	 * Resolves once every call abandoned on its bound for the label has settled, or after three more bounds (a
	 * daemon that stays frozen is not waited for forever; whatever it still applies on waking is out of reach).
	 */
	async settled(label: string): Promise<void> {
		const pending = this.abandoned.get(label);
		if (!pending || pending.size === 0) return;
		let timer: NodeJS.Timeout | undefined;
		const bound = new Promise<void>((resolve) => {
			timer = setTimeout(resolve, 3 * this.timeoutMs);
		});
		try {
			await Promise.race([Promise.allSettled([...pending]), bound]);
		} finally {
			clearTimeout(timer);
		}
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
		operation: string,
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
				reject(
					new KeychainError(
						"timeout",
						`The ${this.backend} did not answer a ${operation} of account "${label}" within ` +
							`${formatSeconds(this.timeoutMs)}: the keychain daemon may be frozen or an unlock prompt is waiting for an ` +
							"answer. Answer the prompt or restart the keychain daemon, then try again" +
							(operation === "read" ? "." : ` (the ${operation} may still happen once the keychain answers).`),
					),
				);
			}, this.timeoutMs);
		});
		let running: Promise<T> | undefined;
		try {
			running = call(this.entry(label), abort.signal);
			return await Promise.race([running, expired]);
		} catch (error) {
			// Only the bound's own error leaves the call running; `settled` waits for it.
			if (running && error instanceof KeychainError && error.kind === "timeout") this.abandon(label, running);
			if (error instanceof KeychainError) throw error;
			throw describeKeyringFailure(error, operation, label, this.backend, this.platform, this.wsl);
		} finally {
			clearTimeout(timer);
		}
	}

	private abandon(label: string, running: Promise<unknown>): void {
		let pending = this.abandoned.get(label);
		if (!pending) {
			pending = new Set();
			this.abandoned.set(label, pending);
		}
		pending.add(running);
		const done = (): void => {
			pending.delete(running);
		};
		running.then(done, done);
	}
}

function backendName(platform: NodeJS.Platform): string {
	if (platform === "darwin") return "macOS Keychain";
	if (platform === "win32") return "Windows Credential Manager";
	return "Secret Service keychain";
}

const FIXES: Record<KeychainErrorKind, Partial<Record<NodeJS.Platform | "default", string>>> = {
	unavailable: {
		linux:
			"No Secret Service is reachable on this D-Bus session. On a desktop, log in to a GNOME/KDE session " +
			"(gnome-keyring or KWallet) or enable KeePassXC's Secret Service integration. Headless or over SSH: " +
			"start one, e.g. `dbus-run-session -- sh -c 'gnome-keyring-daemon --unlock --components=secrets; pi'` " +
			'(see "Keychain troubleshooting" in the README). Tokens are never stored in a file instead.',
		default: "The OS keychain is not available to this process. Tokens are never stored in a file instead.",
	},
	locked: {
		linux:
			"The keychain collection is locked. Unlock it (Seahorse, your desktop's unlock prompt, or " +
			"`gnome-keyring-daemon --unlock` on a headless session), then try again.",
		darwin:
			"The login keychain is locked (common in SSH sessions). Run `security unlock-keychain " +
			"~/Library/Keychains/login.keychain-db`, then try again.",
		default: "The keychain is locked. Unlock it, then try again.",
	},
	timeout: { default: "The keychain did not answer. Restart the keychain daemon, then try again." },
	denied: {
		darwin:
			"The macOS Keychain refused access. Allow the access prompt, or in Keychain Access open the " +
			'"pi-multi-claude-code" item and allow this program under Access Control.',
		default: "The keychain refused access to this item. Check its access rules, then try again.",
	},
	failed: { default: "The keychain reported an error." },
};

const WSL_FIX =
	"WSL has no Secret Service of its own. Install one inside the distribution (`sudo apt-get install dbus gnome-keyring`) " +
	"and start pi under it: `dbus-run-session -- sh -c 'gnome-keyring-daemon --unlock --components=secrets; pi'` " +
	'(see "Keychain troubleshooting" in the README). Tokens are never stored in a file instead.';

/** Maps the library's untyped errors to one typed error with the fix for this platform. */
function describeKeyringFailure(
	error: unknown,
	operation: string,
	label: string,
	backend: string,
	platform: NodeJS.Platform,
	inWsl: boolean,
): KeychainError {
	const detail = errorText(error);
	const kind = classifyKeyringMessage(detail);
	const fixes = FIXES[kind];
	const wsl = platform === "linux" && kind === "unavailable" && inWsl;
	const fix = (wsl ? WSL_FIX : undefined) ?? fixes[platform] ?? fixes.default ?? "";
	return new KeychainError(
		kind,
		`Could not ${operation} the ${backend} item of account "${label}": ${fix} (${oneLine(detail)})`,
	);
}

function classifyKeyringMessage(message: string): KeychainErrorKind {
	const text = message.toLowerCase();
	if (/did not receive a reply|timed out|timeout/.test(text)) return "timeout";
	if (/unlock prompt|locked|interaction is not allowed|user interaction/.test(text)) return "locked";
	if (/access denied|permission|not permitted|authorization|errsecauthfailed/.test(text)) return "denied";
	if (
		/failed to connect|autolaunch|serviceunknown|was not provided|no such file|not available|no result found|object does not exist|dbus/.test(
			text,
		)
	)
		return "unavailable";
	return "failed";
}

function oneLine(text: string): string {
	const flat = text.replace(/\s+/g, " ").trim();
	return flat.length > 200 ? `${flat.slice(0, 200)}…` : flat;
}
