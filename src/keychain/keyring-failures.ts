/**
 * What a failure of the OS keychain means on each platform, and what a person does about it. A pure function of
 * the library's message, the platform and a few facts about the process, so every platform's rules are tested on
 * any machine (test/keychain-platforms.test.ts quotes the library's real strings, with their sources).
 *
 * `@napi-rs/keyring` 2.1.2 rejects with the Display text of a keyring-core 1.0.1 `Error` (measured on Linux:
 * "Platform failure: DBus error: Failed to connect to socket …"). Its variants read:
 *   PlatformFailure  "Platform failure: <the platform's error>"
 *   NoStorageAccess  "Couldn't access platform storage: <the platform's error>"
 *   TooLong          "Value of '<attribute>' is longer than the platform limit of <n> chars"
 *   Invalid          "Value of '<attribute>' is invalid: <reason>"
 *   Ambiguous        "Entry is matched by <n> credentials: <entries>"
 * NoEntry ("No matching credential found") never arrives: the binding turns it into null (read) or false (delete).
 * The platform's error is, per store: Linux — dbus-secret-service 4.1 ("Secret Service: object locked", "DBus error:
 * …"); macOS — Apple's SecCopyErrorMessageString text for the OSStatus, or "error code <n>" when it has none
 * (security-framework 3.x `Error` Display); Windows — "Windows ERROR_…" or "Windows error code <n>"
 * (windows-native-keyring-store `PlatformError`).
 */
import { formatSeconds } from "../text.ts";
import { KeychainError, type KeychainErrorKind } from "./secret-store.ts";

export type KeychainOperation = "read" | "write" | "delete";

/** The facts about this process that decide what a failure means and how it is fixed. */
export interface KeychainHost {
	platform: NodeJS.Platform;
	/** Linux inside WSL, where a missing Secret Service has its own fix. */
	wsl: boolean;
	/** The `node` binary (process.execPath): on macOS, the program an item's access list must trust. */
	execPath: string;
	/** The keychain service name (item names derive from it). */
	service: string;
}

export interface KeyringFailure {
	kind: KeychainErrorKind;
	fix: string;
	/** The library's text as shown to a person: one line, and cut where it could carry item data. */
	detail: string;
}

interface Rule {
	match: RegExp;
	kind: KeychainErrorKind;
	fix: (host: KeychainHost, label: string) => string;
}

const NO_FILE = "Tokens are never stored in a file instead.";

/** Failures that read the same on every platform (keyring-core's own variants). */
const COMMON_RULES: Rule[] = [
	{
		match: /^Value of '[^']*' is longer than the platform limit of \d+ chars/,
		kind: "too_large",
		fix: () =>
			"The secret is larger than this keychain holds in one item; nothing was written. This is a bug in " +
			"pi-multi-claude-code (it checks the size first): please report it.",
	},
	{
		match: /^Entry is matched by \d+ credentials/,
		kind: "failed",
		fix: (_host, label) =>
			`Several keychain items match account "${label}" (another program wrote one with the same service and ` +
			`account). Delete them (README, "Revoking an account"), then run /mcc-login ${label}.`,
	},
	{
		match: /^(Secret|Store) data is malformed/,
		kind: "failed",
		fix: (_host, label) =>
			`The item holds data this extension did not write. Run /mcc-login ${label} to replace it, or ` +
			`/mcc-remove ${label} to forget the account.`,
	},
];

/** The Secret Service (Linux, and the BSDs, where the binding uses the same D-Bus store). */
const SECRET_SERVICE_RULES: Rule[] = [
	{
		// libdbus's own reply timeout (about 25 s), when a daemon holds a call without answering.
		match: /Did not receive a reply|timed out|timeout/i,
		kind: "timeout",
		fix: () => "The keychain did not answer. Restart the keychain daemon, then try again.",
	},
	{
		match: /Secret Service: (object locked|unlock prompt was dismissed)/,
		kind: "locked",
		fix: () =>
			"The keychain collection is locked. Unlock it (Seahorse, your desktop's unlock prompt, or " +
			"`gnome-keyring-daemon --unlock` on a headless session), then try again.",
	},
	{
		match: /Permission denied|Rejected send message|AccessDenied/,
		kind: "denied",
		fix: () =>
			"The D-Bus session refused this process (a sandbox such as Flatpak or Snap, AppArmor, or another " +
			"user's bus). Run pi as the desktop user outside the sandbox, then try again.",
	},
	{
		match: /No DBus session or Secret Service provider found|Secret Service: no result found|DBus error: /,
		kind: "unavailable",
		fix: (host) =>
			host.wsl
				? "WSL has no Secret Service of its own. Install one inside the distribution (`sudo apt-get install " +
					"dbus gnome-keyring`) and start pi under it: `dbus-run-session -- sh -c 'gnome-keyring-daemon " +
					`--unlock --components=secrets; pi'\` (see "Keychain troubleshooting" in the README). ${NO_FILE}`
				: "No Secret Service is reachable on this D-Bus session. On a desktop, log in to a GNOME/KDE session " +
					"(gnome-keyring or KWallet) or enable KeePassXC's Secret Service integration. Headless or over SSH: " +
					"start one, e.g. `dbus-run-session -- sh -c 'gnome-keyring-daemon --unlock --components=secrets; pi'` " +
					`(see "Keychain troubleshooting" in the README). ${NO_FILE}`,
	},
];

/** Why macOS asks: the item's access list trusts the `node` that created it, and upgrades replace `node`. */
function nodeChanged(host: KeychainHost): string {
	return (
		"the item was created by another `node` binary (macOS lets only the program that created an item read it " +
		`without asking, and a Homebrew or nvm upgrade replaces \`node\`; this one is ${host.execPath})`
	);
}

function accessControlSteps(host: KeychainHost, label: string): string {
	return (
		`in Keychain Access open the "${host.service}" item of account "${label}", Access Control, add ` +
		`${host.execPath} with "+", Save Changes (README, "macOS: after a node upgrade")`
	);
}

/**
 * macOS: apple-native-keyring-store 1.0.0 maps -25300 to NoEntry and -61, -25291, -25292, -25294, -25295 to
 * NoStorageAccess; every other OSStatus arrives as PlatformFailure with Apple's message.
 */
const MACOS_RULES: Rule[] = [
	{
		// errSecInteractionNotAllowed -25308, errSecInteractionRequired -25315: a dialog was needed, none possible.
		match: /User interaction is (not allowed|required)|error code -(25308|25315)\b/,
		kind: "locked",
		fix: (host, label) =>
			"macOS has to ask you before this process may use the item, but this session cannot show a dialog (SSH, " +
			"a background service). Either the login keychain is locked: run `security unlock-keychain " +
			`~/Library/Keychains/login.keychain-db\`; or ${nodeChanged(host)}: run pi once in a desktop session and ` +
			`click "Always Allow", or ${accessControlSteps(host, label)}.`,
	},
	{
		// errSecAuthFailed -25293 (Deny, or a wrong keychain password), errSecUserCanceled -128 (dialog closed).
		match: /The user name or passphrase you entered is not correct|User canceled the operation|error code -(25293|128)\b/,
		kind: "denied",
		fix: (host, label) =>
			"macOS refused access: its dialog was answered with Deny or closed, or the keychain password was not " +
			`accepted. macOS asks when ${nodeChanged(host)}. Run the command again and click "Always Allow", or ` +
			`${accessControlSteps(host, label)}.`,
	},
	{
		// -61 errSecWrPerm, -25291 errSecNotAvailable, -25292 errSecReadOnly, -25294 errSecNoSuchKeychain,
		// -25295 errSecInvalidKeychain (all NoStorageAccess), -25307 errSecNoDefaultKeychain.
		match: /^Couldn't access platform storage: |A default keychain could not be found|error code -25307\b/,
		kind: "unavailable",
		fix: () =>
			"macOS has no usable login keychain for this user (missing, read-only or damaged). Check it in Keychain " +
			'Access (a "login" keychain must exist and be the default: `security default-keychain` names it), then ' +
			`try again. ${NO_FILE}`,
	},
];

/**
 * Windows: windows-native-keyring-store maps ERROR_NOT_FOUND to NoEntry and ERROR_NO_SUCH_LOGON_SESSION to
 * NoStorageAccess; every other GetLastError code arrives as PlatformFailure.
 */
const WINDOWS_RULES: Rule[] = [
	{
		match: /ERROR_NO_SUCH_LOGON_SESSION|error code 1312\b/,
		kind: "unavailable",
		fix: () =>
			"This Windows logon session has no credential store: pi runs as a service, as a scheduled task that runs " +
			"whether or not you are logged on, or over SSH signed in with a key (such sessions carry no credentials). " +
			`Run pi from your desktop session, or sign in over SSH with your password. ${NO_FILE}`,
	},
	{
		match: /Windows error code 5$/,
		kind: "denied",
		fix: (host, label) =>
			"Windows refused this process access to Credential Manager. Run pi as yourself in your own session, then " +
			`try again (\`cmdkey /list:${windowsTarget(host, label)}\` shows whether the item exists).`,
	},
];

function rulesFor(platform: NodeJS.Platform): Rule[] {
	if (platform === "darwin") return MACOS_RULES;
	if (platform === "win32") return WINDOWS_RULES;
	if (platform === "linux" || platform === "freebsd" || platform === "openbsd") return SECRET_SERVICE_RULES;
	return [];
}

function defaultFix(host: KeychainHost, label: string): string {
	if (host.platform === "win32") {
		return `Credential Manager reported an error (\`cmdkey /list:${windowsTarget(host, label)}\` shows the item).`;
	}
	return "The keychain reported an error.";
}

/** The Credential Manager target name keyring-rs uses: `<user>.<service>` (prefix and suffix empty, divider "."). */
export function windowsTarget(host: Pick<KeychainHost, "service">, label: string): string {
	return `${label}.${host.service}`;
}

export function backendName(platform: NodeJS.Platform): string {
	if (platform === "darwin") return "macOS Keychain";
	if (platform === "win32") return "Windows Credential Manager";
	return "Secret Service keychain";
}

/** What the library's message means on this host, and the fix. */
export function classifyKeyringFailure(message: string, host: KeychainHost, label: string): KeyringFailure {
	const flat = message.replace(/\s+/g, " ").trim();
	const rule = [...COMMON_RULES, ...rulesFor(host.platform)].find((candidate) => candidate.match.test(flat));
	return {
		kind: rule?.kind ?? "failed",
		fix: rule ? rule.fix(host, label) : defaultFix(host, label),
		detail: shownDetail(flat),
	};
}

/** The typed error for a failed keychain call. */
export function keyringFailure(
	message: string,
	operation: KeychainOperation,
	label: string,
	host: KeychainHost,
): KeychainError {
	const { kind, fix, detail } = classifyKeyringFailure(message, host, label);
	return new KeychainError(
		kind,
		`Could not ${operation} the ${backendName(host.platform)} item of account "${label}": ${fix} (${detail})`,
	);
}

/** The typed error for a keychain call that did not answer within the bound. */
export function keychainTimeout(
	operation: KeychainOperation,
	label: string,
	timeoutMs: number,
	host: KeychainHost,
): KeychainError {
	const waiting =
		host.platform === "darwin"
			? "macOS may be showing a dialog that waits for an answer: the keychain password, or whether this `node` " +
				`(${host.execPath}) may use the item, which macOS asks again after a Homebrew or nvm upgrade replaced ` +
				'`node`. Answer it ("Always Allow"), then try again'
			: host.platform === "win32"
				? "Credential Manager may be stuck. Try again; if it keeps happening, sign out and in (or restart the " +
					"Credential Manager service, VaultSvc)"
				: "the keychain daemon may be frozen or an unlock prompt is waiting for an answer. Answer the prompt or " +
					"restart the keychain daemon, then try again";
	return new KeychainError(
		"timeout",
		`The ${backendName(host.platform)} did not answer a ${operation} of account "${label}" within ` +
			`${formatSeconds(timeoutMs)}: ${waiting}` +
			(operation === "read" ? "." : ` (the ${operation} may still happen once the keychain answers).`),
	);
}

/** One line, at most 200 characters, and never the entries or data a few variants append. */
function shownDetail(flat: string): string {
	const cut = /^(Entry is matched by \d+ credentials|(Secret|Store) data is malformed)/.exec(flat);
	if (cut) return cut[0];
	return flat.length > 200 ? `${flat.slice(0, 200)}…` : flat;
}
