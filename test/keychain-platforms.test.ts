/**
 * What each platform's keychain failures mean and what the person is told to do, as a pure function of the
 * library's message and an injected platform, so the macOS and Windows rules are proven on Linux too.
 *
 * The messages below are the library's own texts, as @napi-rs/keyring 2.1.2 rejects with them: the Display text of
 * a keyring-core 1.0.1 Error wrapping the platform store's error. Sources:
 * - keyring-core 1.0.1 Display prefixes ("Platform failure: ", "Couldn't access platform storage: ", "Value of '…'
 *   is longer than the platform limit of … chars", "Entry is matched by … credentials: ", "Secret data is
 *   malformed: "): read out of the installed binary node_modules/@napi-rs/keyring-linux-x64-gnu/
 *   keyring.linux-x64-gnu.node 2.1.2, next to its source path keyring-core-1.0.1/src/lib.rs (the mirrored
 *   keyring-core repository stops at 0.7.2, which worded them differently).
 * - Linux: dbus-secret-service 4.1.0 src/error.rs (Display of Locked, NoResult, Prompt, Unavailable, Dbus);
 *   dbus-secret-service-keyring-store 1.0.0 src/errors.rs (Locked, NoResult, Prompt → NoStorageAccess, the rest →
 *   PlatformFailure). Measured here against gnome-keyring: a locked collection gives the "unlock prompt was
 *   dismissed" text, an unreachable bus the "Failed to connect to socket" text. The reply timeout is libdbus's.
 * - macOS: apple-native-keyring-store 1.0.0 src/keychain.rs `decode_error` (-25300 → NoEntry; -61, -25291,
 *   -25292, -25294, -25295 → NoStorageAccess; every other code → PlatformFailure); security-framework 3.7
 *   src/base.rs (Display is SecCopyErrorMessageString's text, else "error code <n>"); the texts are Apple's, from
 *   SecBase.h, whose comments "are used to create SecErrorMessages.strings".
 * - Windows: windows-native-keyring-store src/utils.rs (`PlatformError` Display "Windows ERROR_…" / "Windows
 *   error code <n>"; `decode_error`: ERROR_NOT_FOUND → NoEntry, ERROR_NO_SUCH_LOGON_SESSION → NoStorageAccess;
 *   `validate_password`: TooLong("password encoded as UTF-16", CRED_MAX_CREDENTIAL_BLOB_SIZE = 2560)).
 */
import { describe, expect, it } from "vitest";
import {
	backendName,
	classifyKeyringFailure,
	type KeychainHost,
	keychainTimeout,
	keyringFailure,
	windowsTarget,
} from "../src/keychain/keyring-failures.ts";
import { OsSecretStore } from "../src/keychain/os-secret-store.ts";

const SERVICE = "pi-multi-claude-code";
const NODE = "/opt/homebrew/Cellar/node/24.1.0/bin/node";

const linux: KeychainHost = { platform: "linux", wsl: false, execPath: "/usr/bin/node", service: SERVICE };
const wsl: KeychainHost = { ...linux, wsl: true };
const mac: KeychainHost = { platform: "darwin", wsl: false, execPath: NODE, service: SERVICE };
const windows: KeychainHost = {
	platform: "win32",
	wsl: false,
	execPath: "C:\\Program Files\\nodejs\\node.exe",
	service: SERVICE,
};

const LINUX = {
	locked: "Couldn't access platform storage: Secret Service: object locked",
	promptDismissed: "Couldn't access platform storage: Secret Service: unlock prompt was dismissed",
	noResult: "Couldn't access platform storage: Secret Service: no result found",
	noBus: "Platform failure: DBus error: Failed to connect to socket /nonexistent/x: No such file or directory",
	noProvider: "Platform failure: No DBus session or Secret Service provider found",
	noReply:
		"Platform failure: DBus error: Did not receive a reply. Possible causes include: the remote application did " +
		"not send a reply, the message bus security policy blocked the reply, the reply timeout expired, or the " +
		"network connection was broken.",
	socketRefused: "Platform failure: DBus error: Failed to connect to socket /run/user/1000/bus: Permission denied",
	crypto: "Platform failure: Crypto error: Unpad Error",
};

const MACOS = {
	interactionNotAllowed: "Platform failure: User interaction is not allowed.",
	interactionRequired: "Platform failure: User interaction is required, but is currently not allowed.",
	authFailed: "Platform failure: The user name or passphrase you entered is not correct.",
	userCanceled: "Platform failure: User canceled the operation.",
	bareInteraction: "Platform failure: error code -25308",
	bareAuthFailed: "Platform failure: error code -25293",
	notAvailable: "Couldn't access platform storage: No keychain is available. You may need to restart your computer.",
	noSuchKeychain: "Couldn't access platform storage: The specified keychain could not be found.",
	writePermissions: "Couldn't access platform storage: Write permissions error.",
	noDefault: "Platform failure: A default keychain could not be found.",
	duplicate: "Platform failure: The specified item already exists in the keychain.",
};

const WINDOWS = {
	noLogonSession: "Couldn't access platform storage: Windows ERROR_NO_SUCH_LOGON_SESSION",
	accessDenied: "Platform failure: Windows error code 5",
	invalidParameter: "Platform failure: Windows ERROR_INVALID_PARAMETER",
	tooLong: "Value of 'password encoded as UTF-16' is longer than the platform limit of 2560 chars",
};

describe("keychain failures on Linux (Secret Service)", () => {
	it("a locked collection, or its unlock prompt dismissed, is kind locked and says how to unlock", () => {
		for (const message of [LINUX.locked, LINUX.promptDismissed]) {
			const failure = classifyKeyringFailure(message, linux, "work");
			expect(failure.kind, message).toBe("locked");
			expect(failure.fix).toContain("gnome-keyring-daemon --unlock");
			expect(failure.detail).toBe(message);
		}
	});

	it("no bus, no provider or no collection is kind unavailable with the dbus-run-session fix, in WSL the WSL one", () => {
		for (const message of [LINUX.noBus, LINUX.noProvider, LINUX.noResult]) {
			const failure = classifyKeyringFailure(message, linux, "work");
			expect(failure.kind, message).toBe("unavailable");
			expect(failure.fix).toContain("No Secret Service is reachable");
			expect(failure.fix).toContain("dbus-run-session");
			expect(failure.fix).toContain("never stored in a file");
			const inWsl = classifyKeyringFailure(message, wsl, "work");
			expect(inWsl.kind).toBe("unavailable");
			expect(inWsl.fix).toContain("WSL has no Secret Service of its own");
			expect(inWsl.fix).toContain("sudo apt-get install dbus gnome-keyring");
		}
	});

	it("libdbus's reply timeout is kind timeout", () => {
		expect(classifyKeyringFailure(LINUX.noReply, linux, "work").kind).toBe("timeout");
	});

	it("a bus that refuses this process is kind denied and names the sandbox as the likely cause", () => {
		const failure = classifyKeyringFailure(LINUX.socketRefused, linux, "work");
		expect(failure.kind).toBe("denied");
		expect(failure.fix).toMatch(/Flatpak or Snap/);
	});

	it("anything else is kind failed and keeps the library's text for the bug report", () => {
		const error = keyringFailure(LINUX.crypto, "read", "work", linux);
		expect(error.kind).toBe("failed");
		expect(error.message).toBe(
			`Could not read the Secret Service keychain item of account "work": The keychain reported an error. (${LINUX.crypto})`,
		);
	});
});

describe("keychain failures on macOS", () => {
	it("a dialog that cannot be shown names both causes — a locked keychain, a changed node — and their fixes", () => {
		for (const message of [MACOS.interactionNotAllowed, MACOS.interactionRequired, MACOS.bareInteraction]) {
			const error = keyringFailure(message, "read", "work", mac);
			expect(error.kind, message).toBe("locked");
			expect(error.message).toContain('Could not read the macOS Keychain item of account "work"');
			expect(error.message).toContain("security unlock-keychain ~/Library/Keychains/login.keychain-db");
			expect(error.message).toContain("another `node` binary");
			expect(error.message).toContain(`this one is ${NODE}`);
			expect(error.message).toContain('"Always Allow"');
			expect(error.message).toContain(`"${SERVICE}" item of account "work", Access Control, add ${NODE}`);
		}
	});

	it("a dialog answered with Deny or closed is kind denied and says to click Always Allow or trust this node", () => {
		for (const message of [MACOS.authFailed, MACOS.userCanceled, MACOS.bareAuthFailed]) {
			const error = keyringFailure(message, "write", "side", mac);
			expect(error.kind, message).toBe("denied");
			expect(error.message).toContain("Deny or closed");
			expect(error.message).toContain('click "Always Allow"');
			expect(error.message).toContain(`"${SERVICE}" item of account "side", Access Control, add ${NODE}`);
			expect(error.message).toContain("Homebrew or nvm upgrade");
		}
	});

	it("no usable login keychain is kind unavailable, and never offers a file instead", () => {
		for (const message of [MACOS.notAvailable, MACOS.noSuchKeychain, MACOS.writePermissions, MACOS.noDefault]) {
			const failure = classifyKeyringFailure(message, mac, "work");
			expect(failure.kind, message).toBe("unavailable");
			expect(failure.fix).toContain("security default-keychain");
			expect(failure.fix).toContain("never stored in a file");
		}
	});

	it("any other OSStatus is kind failed with Apple's text", () => {
		const failure = classifyKeyringFailure(MACOS.duplicate, mac, "work");
		expect(failure.kind).toBe("failed");
		expect(failure.detail).toBe(MACOS.duplicate);
	});

	it("a call that does not answer in time says a macOS dialog may be waiting, naming this node", () => {
		const error = keychainTimeout("read", "work", 20_000, mac);
		expect(error.kind).toBe("timeout");
		expect(error.message).toContain('did not answer a read of account "work" within 20 s');
		expect(error.message).toContain(`whether this \`node\` (${NODE}) may use the item`);
		expect(error.message).toContain('"Always Allow"');
	});
});

describe("keychain failures on Windows", () => {
	it("a logon session without credentials (a service, SSH with a key) is kind unavailable with what to run", () => {
		const failure = classifyKeyringFailure(WINDOWS.noLogonSession, windows, "work");
		expect(failure.kind).toBe("unavailable");
		expect(failure.fix).toContain("over SSH signed in with a key");
		expect(failure.fix).toContain("desktop session");
		expect(failure.fix).toContain("never stored in a file");
	});

	it("access denied is kind denied and names the item for cmdkey", () => {
		const failure = classifyKeyringFailure(WINDOWS.accessDenied, windows, "work");
		expect(failure.kind).toBe("denied");
		expect(failure.fix).toContain(`cmdkey /list:work.${SERVICE}`);
	});

	it("the library's own size refusal is kind too_large, and other codes are failed with the item's name", () => {
		expect(classifyKeyringFailure(WINDOWS.tooLong, windows, "work").kind).toBe("too_large");
		const other = classifyKeyringFailure(WINDOWS.invalidParameter, windows, "work");
		expect(other.kind).toBe("failed");
		expect(other.fix).toContain(`cmdkey /list:work.${SERVICE}`);
		expect(other.detail).toBe(WINDOWS.invalidParameter);
	});

	it("items are named <label>.<service>, as keyring-rs names Credential Manager targets", () => {
		expect(windowsTarget(windows, "side-project")).toBe(`side-project.${SERVICE}`);
		expect(backendName("win32")).toBe("Windows Credential Manager");
	});
});

describe("failures that read alike on every platform", () => {
	it("an ambiguous entry says to delete the duplicates, and never shows the entries the library appends", () => {
		const message = 'Entry is matched by 2 credentials: [Entry { inner: Cred { service: "x", data: "a-secret" } }]';
		for (const host of [linux, mac, windows]) {
			const error = keyringFailure(message, "read", "work", host);
			expect(error.kind).toBe("failed");
			expect(error.message).toContain('Several keychain items match account "work"');
			expect(error.message).toContain("(Entry is matched by 2 credentials)");
			expect(error.message).not.toContain("a-secret");
		}
	});

	it("an item holding data this extension did not write says to log in again, without the data", () => {
		const error = keyringFailure("Secret data is malformed: [123, 34, 97]", "read", "work", windows);
		expect(error.message).toContain("/mcc-login work");
		expect(error.message).not.toContain("123, 34");
	});

	it("a platform's advice is given only on that platform", () => {
		const onLinux = classifyKeyringFailure(MACOS.interactionNotAllowed, linux, "work");
		expect(onLinux.kind).toBe("failed");
		expect(onLinux.fix).not.toContain("Always Allow");
		const onMac = classifyKeyringFailure(LINUX.noBus, mac, "work");
		expect(onMac.fix).not.toContain("dbus-run-session");
		expect(keychainTimeout("write", "work", 20_000, linux).message).toContain("restart the keychain daemon");
		expect(keychainTimeout("write", "work", 20_000, linux).message).toContain("(the write may still happen");
	});

	it("a very long library text is cut to one line of 200 characters", () => {
		const long = `Platform failure: DBus error: ${"x".repeat(300)}\nsecond line`;
		const failure = classifyKeyringFailure(long, linux, "work");
		expect(failure.detail).toHaveLength(201);
		expect(failure.detail).not.toContain("\n");
	});
});

describe("the store built for an injected platform", () => {
	it("names that platform's backend in its errors", async () => {
		const store = new OsSecretStore({ service: SERVICE, platform: "darwin", execPath: NODE });
		expect(store.backend).toBe("macOS Keychain");
		// Refused before the keychain is touched, so this runs on any machine.
		const refused = await store.set("work", "x".repeat(1281)).then(
			() => undefined,
			(error: unknown) => error,
		);
		expect(refused).toMatchObject({ name: "KeychainError", kind: "too_large" });
		expect((refused as Error).message).toContain('macOS Keychain item of account "work"');
	});
});
