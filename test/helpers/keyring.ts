/**
 * Helpers for the real keychain the tests run against. On Linux `npm test` (test/run-tests.ts) starts a private,
 * throwaway D-Bus session with its own gnome-keyring; tests that lock the keychain or freeze its daemon start an
 * isolated one of their own (`startIsolatedKeyring`) so they never disturb test files running in parallel. On
 * macOS and Windows the tests use the login keychain / Credential Manager under throwaway service names
 * (`uniqueService`), which the runner deletes at the end of the run.
 *
 * Every helper takes the environment that names the bus (default: this process's), and the helpers that signal
 * or unlock a daemon refuse to act on anything but a daemon of a private test session owned by this user.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { appendFileSync, promises as fs } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { AsyncEntry, findCredentialsAsync } from "@napi-rs/keyring";

/** The password the runner gives the private keyring (and `startIsolatedKeyring` gives its own). */
export const TEST_KEYRING_PASSWORD = "pi-mcc-test-keyring";
export const DEFAULT_COLLECTION = "/org/freedesktop/secrets/collection/login";
export const REPO_ROOT = fileURLToPath(new URL("../..", import.meta.url));
/** The service name of people's real items: no test ever uses it. */
export const REAL_SERVICE = "pi-multi-claude-code";
/** Where the runner lists every service name a test made, to delete their items at the end (macOS, Windows). */
export const SERVICE_LEDGER = "keychain-services";

type Env = NodeJS.ProcessEnv;

export interface CommandResult {
	code: number | null;
	signal: NodeJS.Signals | null;
	stdout: string;
	stderr: string;
}

/** Runs a command to completion, killing it after `timeoutMs`; never throws for a non-zero exit. */
export function runCommand(
	command: string,
	args: readonly string[],
	options: { env?: Env; input?: string; timeoutMs?: number; cwd?: string } = {},
): Promise<CommandResult> {
	const child = spawn(command, args, {
		env: options.env ?? process.env,
		cwd: options.cwd,
		stdio: ["pipe", "pipe", "pipe"],
	});
	child.stdin.on("error", () => {});
	child.stdin.end(options.input ?? "");
	return commandResult(child, options.timeoutMs ?? 15_000);
}

/** Collects a started child's output until it closes; after `timeoutMs` it is killed and `timedOut` set. */
export function commandResult(child: ChildProcess, timeoutMs: number): Promise<CommandResult & { timedOut: boolean }> {
	return new Promise((resolve, reject) => {
		let stdout = "";
		let stderr = "";
		let timedOut = false;
		child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
			stdout += chunk;
		});
		child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
			stderr += chunk;
		});
		const timer = setTimeout(() => {
			timedOut = true;
			child.kill("SIGKILL");
		}, timeoutMs);
		child.on("error", (error) => {
			clearTimeout(timer);
			reject(error);
		});
		child.on("close", (code, signal) => {
			clearTimeout(timer);
			resolve({ code, signal, stdout, stderr, timedOut });
		});
	});
}

/**
 * A keychain service name of its own for one test file, so parallel files never see each other's items. It starts
 * with the run's prefix and goes into the run's ledger, so the runner can delete everything the run stored.
 */
export function uniqueService(file: string): string {
	const service = `${process.env.PI_MCC_TEST_SERVICE_PREFIX || "pi-mcc-test"}-${file}-${randomBytes(4).toString("hex")}`;
	const runDir = process.env.PI_MCC_TEST_RUN_DIR;
	if (runDir) appendFileSync(join(runDir, SERVICE_LEDGER), `${service}\n`);
	return service;
}

/** Polls `check` until it returns a truthy value (bounded); for effects nobody awaits, like a footer repaint. */
export async function waitFor<T>(
	check: () => T | Promise<T>,
	what: string,
	timeoutMs = 5_000,
	everyMs = 20,
): Promise<NonNullable<T>> {
	const deadline = Date.now() + timeoutMs;
	for (;;) {
		const last = await check();
		if (last) return last as NonNullable<T>;
		if (Date.now() > deadline) {
			throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${String(last)})`);
		}
		await new Promise((resolve) => setTimeout(resolve, everyMs));
	}
}

/**
 * Runs `setup` once, on first call, and hands every later caller the same result (or the same failure). Used
 * from `beforeEach` rather than `beforeAll`: a failing beforeAll leaves its tests reported as skipped, while a
 * failing beforeEach fails each test, so a missing Secret Service can never pass for a skipped suite.
 */
export function once<T>(setup: () => Promise<T>): () => Promise<T> {
	let result: Promise<T> | undefined;
	return () => {
		result ??= setup();
		return result;
	};
}

/**
 * Throws (so the test fails, never skips) when no Secret Service owns its name on the session bus. On macOS and
 * Windows the platform keychain is part of the system: nothing to check.
 */
export async function requireSecretService(env: Env = process.env): Promise<void> {
	if (process.platform !== "linux") return;
	const address = env.DBUS_SESSION_BUS_ADDRESS;
	const hint =
		"The keychain tests need a real Secret Service: run them with `npm test` (it starts a private gnome-keyring), " +
		"or install dbus, gnome-keyring and libsecret-tools.";
	if (!address) throw new Error(`No D-Bus session bus is set. ${hint}`);
	const result = await runCommand(
		"dbus-send",
		[
			"--session",
			"--print-reply",
			"--dest=org.freedesktop.DBus",
			"/org/freedesktop/DBus",
			"org.freedesktop.DBus.NameHasOwner",
			"string:org.freedesktop.secrets",
		],
		{ env, timeoutMs: 5_000 },
	).catch((error: unknown) => ({ code: 1, stdout: "", stderr: String(error) }));
	if (result.code !== 0 || !/boolean true/.test(result.stdout)) {
		throw new Error(`No Secret Service (org.freedesktop.secrets) on the session bus ${address}. ${hint}`);
	}
}

// ---- an independent view of the keychain: secret-tool on Linux (as a person would use it), elsewhere the
// platform keychain through @napi-rs/keyring itself, from the test process rather than the code under test.

function platformEntry(service: string, label: string): AsyncEntry {
	if (service === REAL_SERVICE) throw new Error(`Refusing to touch the real keychain service "${REAL_SERVICE}"`);
	return new AsyncEntry(service, label);
}

/** The secret stored for (service, label), or null when there is no item. */
export async function readKeychainItem(service: string, label: string, env: Env = process.env): Promise<string | null> {
	if (process.platform !== "linux") return platformEntry(service, label).getPassword();
	const result = await runCommand("secret-tool", ["lookup", "service", service, "username", label], { env });
	if (result.code === 0) return result.stdout;
	if (result.stdout === "" && !/error|locked|cannot|failed/i.test(result.stderr)) return null;
	throw new Error(`secret-tool lookup failed (exit ${result.code}): ${result.stderr.trim()}`);
}

/** Writes an item the way a person (or another program) would. */
export async function writeKeychainItem(
	service: string,
	label: string,
	secret: string,
	env: Env = process.env,
): Promise<void> {
	if (process.platform !== "linux") return platformEntry(service, label).setPassword(secret);
	const result = await runCommand(
		"secret-tool",
		["store", `--label=keyring:${label}@${service}`, "service", service, "username", label],
		{ env, input: secret },
	);
	if (result.code !== 0) throw new Error(`secret-tool store failed (exit ${result.code}): ${result.stderr.trim()}`);
}

/** Deletes the item as a person would (`secret-tool clear service <service> username <label>` on Linux). */
export async function deleteKeychainItem(service: string, label: string, env: Env = process.env): Promise<void> {
	if (process.platform !== "linux") {
		await platformEntry(service, label).deleteCredential();
		return;
	}
	const result = await runCommand("secret-tool", ["clear", "service", service, "username", label], { env });
	// secret-tool clear exits 1 when nothing matched; anything on stderr is a real failure.
	if (result.code !== 0 && result.stderr.trim() !== "") {
		throw new Error(`secret-tool clear failed (exit ${result.code}): ${result.stderr.trim()}`);
	}
}

/** Deletes every item of `service`; returns how many the platform keychain held (Linux: -1, not counted). */
export async function clearKeychainService(service: string, env: Env = process.env): Promise<number> {
	if (process.platform === "linux") {
		await runCommand("secret-tool", ["clear", "service", service], { env });
		return -1;
	}
	const found = await findCredentialsAsync(service);
	for (const { account } of found) await platformEntry(service, account).deleteCredential();
	return found.length;
}

/** The same helpers under the names the tests first had (they used secret-tool only). */
export const secretToolLookup = readKeychainItem;
export const secretToolStore = writeKeychainItem;
export const secretToolClear = deleteKeychainItem;

export interface SearchedItem {
	/** The item's D-Bus path as secret-tool prints it in brackets. */
	path: string;
	label?: string;
	secret?: string;
	schema?: string;
	attributes: Record<string, string>;
}

/**
 * Linux only: `secret-tool search --all service <service> [username <label>]`, parsed. secret-tool prints items on stdout
 * and their attributes on stderr, both in the same item order; attribute blocks are matched to items in order.
 */
export async function secretToolSearch(
	service: string,
	label?: string,
	env: Env = process.env,
): Promise<{ items: SearchedItem[]; stdout: string; stderr: string }> {
	const args = ["search", "--all", "service", service];
	if (label !== undefined) args.push("username", label);
	const result = await runCommand("secret-tool", args, { env });
	const items: SearchedItem[] = [];
	for (const line of result.stdout.split("\n")) {
		const header = /^\[(.+)\]$/.exec(line);
		if (header?.[1]) {
			items.push({ path: header[1], attributes: {} });
			continue;
		}
		const field = /^(label|secret|schema) = (.*)$/.exec(line);
		const current = items[items.length - 1];
		if (field?.[1] && current) current[field[1] as "label" | "secret" | "schema"] = field[2] ?? "";
	}
	let index = -1;
	let seen = new Set<string>();
	for (const line of result.stderr.split("\n")) {
		const attribute = /^attribute\.([^ ]+) = (.*)$/.exec(line);
		if (!attribute?.[1]) continue;
		if (index < 0 || seen.has(attribute[1])) {
			index++;
			seen = new Set();
		}
		seen.add(attribute[1]);
		const item = items[index];
		if (item) item.attributes[attribute[1]] = attribute[2] ?? "";
	}
	return { items, stdout: result.stdout, stderr: result.stderr };
}

async function dbusSend(env: Env, args: readonly string[]): Promise<string> {
	const result = await runCommand("dbus-send", ["--session", "--print-reply", ...args], { env, timeoutMs: 10_000 });
	if (result.code !== 0) throw new Error(`dbus-send ${args.join(" ")} failed: ${result.stderr.trim()}`);
	return result.stdout;
}

/** Locks the default ("login") collection through the Secret Service `Lock` method. */
export async function lockDefaultCollection(env: Env = process.env): Promise<void> {
	await dbusSend(env, [
		"--dest=org.freedesktop.secrets",
		"/org/freedesktop/secrets",
		"org.freedesktop.Secret.Service.Lock",
		`array:objpath:${DEFAULT_COLLECTION}`,
	]);
	if (!(await isDefaultCollectionLocked(env))) throw new Error("The default collection did not lock");
}

export async function isDefaultCollectionLocked(env: Env = process.env): Promise<boolean> {
	const reply = await dbusSend(env, [
		"--dest=org.freedesktop.secrets",
		DEFAULT_COLLECTION,
		"org.freedesktop.DBus.Properties.Get",
		"string:org.freedesktop.Secret.Collection",
		"string:Locked",
	]);
	return /boolean true/.test(reply);
}

/**
 * Unlocks the default collection of the running daemon the way pam_gnome_keyring does at login: the password
 * goes over the daemon's control socket (`$XDG_RUNTIME_DIR/keyring/control`, op GKD_CONTROL_OP_UNLOCK). Running
 * `gnome-keyring-daemon --unlock` again instead starts a second daemon that steals the control socket.
 */
export async function unlockDefaultCollection(env: Env = process.env): Promise<void> {
	const runtime = requirePrivateRuntimeDir(env);
	const result = await controlSocketUnlock(join(runtime, "keyring", "control"), TEST_KEYRING_PASSWORD);
	if (result !== 0) {
		throw new Error(`gnome-keyring refused the unlock (control result ${result}, 1 = wrong password)`);
	}
	if (await isDefaultCollectionLocked(env)) throw new Error("The default collection is still locked after unlock");
}

function controlSocketUnlock(socketPath: string, password: string): Promise<number> {
	return new Promise((resolve, reject) => {
		const secret = Buffer.from(password, "utf8");
		const packet = Buffer.alloc(13 + secret.length);
		packet.writeUInt8(0, 0); // the credentials byte: the daemon checks the peer's uid on the socket
		packet.writeUInt32BE(12 + secret.length, 1); // packet length: itself, the op and the string
		packet.writeUInt32BE(1, 5); // GKD_CONTROL_OP_UNLOCK
		packet.writeUInt32BE(secret.length, 9);
		secret.copy(packet, 13);
		const socket = createConnection(socketPath);
		let reply = Buffer.alloc(0);
		const timer = setTimeout(() => {
			socket.destroy();
			reject(new Error(`gnome-keyring's control socket ${socketPath} did not answer within 10 s`));
		}, 10_000);
		socket.on("connect", () => socket.write(packet));
		socket.on("data", (chunk: Buffer) => {
			reply = Buffer.concat([reply, chunk]);
			if (reply.length >= 8) {
				clearTimeout(timer);
				socket.end();
				resolve(reply.readUInt32BE(4));
			}
		});
		socket.on("error", (error) => {
			clearTimeout(timer);
			reject(error);
		});
	});
}

/** The runtime dir of a private test keyring; refuses a developer's real session. */
function requirePrivateRuntimeDir(env: Env): string {
	const runtime = env.XDG_RUNTIME_DIR;
	const privateRoot = env.PI_MCC_ISOLATED_KEYRING_DIR ?? env.PI_MCC_TEST_KEYRING_DIR;
	if (!runtime || !privateRoot || !runtime.startsWith(`${privateRoot}/`)) {
		throw new Error(
			"Refusing to touch a keyring daemon outside a private test session (run the tests with `npm test`).",
		);
	}
	return runtime;
}

/**
 * The pid of the gnome-keyring-daemon that owns org.freedesktop.secrets on the given bus, checked to be this
 * user's process and a daemon of the private test session (its XDG_RUNTIME_DIR is the session's).
 */
export async function secretServiceDaemonPid(env: Env = process.env): Promise<number> {
	const runtime = requirePrivateRuntimeDir(env);
	const reply = await dbusSend(env, [
		"--dest=org.freedesktop.DBus",
		"/org/freedesktop/DBus",
		"org.freedesktop.DBus.GetConnectionUnixProcessID",
		"string:org.freedesktop.secrets",
	]);
	const pid = Number(/uint32 (\d+)/.exec(reply)?.[1]);
	if (!Number.isInteger(pid) || pid <= 1) throw new Error(`No pid for org.freedesktop.secrets: ${reply.trim()}`);
	const status = await fs.readFile(`/proc/${pid}/status`, "utf8");
	const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]);
	if (uid !== process.getuid?.()) throw new Error(`Process ${pid} belongs to uid ${uid}: not signalling it`);
	const name = /^Name:\s+(.+)$/m.exec(status)?.[1] ?? "";
	if (!name.startsWith("gnome-keyring")) throw new Error(`Process ${pid} is "${name}", not gnome-keyring-daemon`);
	const environ = (await fs.readFile(`/proc/${pid}/environ`, "utf8")).split("\0");
	if (!environ.includes(`XDG_RUNTIME_DIR=${runtime}`)) {
		throw new Error(`Process ${pid} is not the daemon of this private test session: not signalling it`);
	}
	return pid;
}

/** Freezes the private session's keyring daemon (SIGSTOP); always pair with `continueDaemon` in a finally. */
export async function stopDaemon(env: Env = process.env): Promise<number> {
	const pid = await secretServiceDaemonPid(env);
	process.kill(pid, "SIGSTOP");
	return pid;
}

/**
 * Lets a daemon frozen by `stopDaemon` run again: give the pid `stopDaemon` returned, or the environment (the
 * bus itself still answers who owns org.freedesktop.secrets while the daemon is frozen).
 */
export async function continueDaemon(target: number | Env = process.env): Promise<void> {
	const pid = typeof target === "number" ? target : await secretServiceDaemonPid(target);
	resumeProcess(pid);
}

/** SIGCONT to `pid`, if it still exists: a test must never leave a process stopped. */
export function resumeProcess(pid: number): void {
	try {
		process.kill(pid, "SIGCONT");
	} catch (error) {
		if ((error as { code?: unknown }).code !== "ESRCH") throw error;
	}
}

export interface IsolatedKeyring {
	/** The environment that reaches this keyring: pass it to helpers and to child processes. */
	env: Env;
	daemonPid: number;
	stop(): Promise<void>;
}

/**
 * Starts a D-Bus session bus and an unlocked gnome-keyring of its own (same password as the test keyring), for
 * tests that lock the collection or freeze the daemon: the keyring the other test files use stays untouched.
 */
export async function startIsolatedKeyring(): Promise<IsolatedKeyring> {
	const dir = await fs.mkdtemp(join(tmpdir(), "pi-mcc-iso-keyring-"));
	const runtime = join(dir, "runtime");
	await fs.mkdir(runtime, { mode: 0o700 });
	await fs.mkdir(join(dir, "data"), { mode: 0o700 });
	const base: Env = {
		...process.env,
		XDG_RUNTIME_DIR: runtime,
		XDG_DATA_HOME: join(dir, "data"),
		PI_MCC_ISOLATED_KEYRING_DIR: dir,
	};
	delete base.DBUS_SESSION_BUS_ADDRESS;
	delete base.PI_MCC_TEST_KEYRING_DIR;
	const children: ChildProcess[] = [];
	const stop = async (): Promise<void> => {
		for (const child of children.reverse()) {
			if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) continue;
			resumeProcess(child.pid);
			child.kill("SIGTERM");
			const exited = await waitForExit(child, 5_000);
			if (!exited) child.kill("SIGKILL");
		}
		await fs.rm(dir, { recursive: true, force: true });
	};
	try {
		const busAddress = `--address=unix:path=${join(runtime, "bus")}`;
		const bus = spawn("dbus-daemon", ["--session", "--nofork", "--nopidfile", busAddress, "--print-address=1"], {
			env: base,
			stdio: ["ignore", "pipe", "ignore"],
		});
		children.push(bus);
		const address = (await stdoutLines(bus)(10_000, "dbus-daemon's address")).trim();
		const env: Env = { ...base, DBUS_SESSION_BUS_ADDRESS: address };
		const daemon = spawn("gnome-keyring-daemon", ["--foreground", "--unlock", "--components=secrets"], {
			env,
			stdio: ["pipe", "ignore", "ignore"],
		});
		children.push(daemon);
		daemon.stdin?.end(TEST_KEYRING_PASSWORD);
		const owned = () =>
			requireSecretService(env).then(
				() => true,
				() => false,
			);
		await waitFor(owned, "the isolated gnome-keyring to take org.freedesktop.secrets", 10_000, 100);
		const daemonPid = await secretServiceDaemonPid(env);
		if (daemonPid !== daemon.pid) {
			throw new Error(`org.freedesktop.secrets is owned by ${daemonPid}, not ${daemon.pid}`);
		}
		return { env, daemonPid, stop };
	} catch (error) {
		await stop();
		throw error;
	}
}

/** Reads a child's stdout line by line, each read bounded (polled with waitFor); rejects once it has exited. */
function stdoutLines(child: ChildProcess): (withinMs: number, what: string) => Promise<string> {
	const lines: string[] = [];
	let read = 0;
	createInterface({ input: child.stdout! }).on("line", (line) => lines.push(line));
	return async (withinMs, what) => {
		await waitFor(() => lines.length > read || child.exitCode !== null, what, withinMs, 10);
		if (lines.length <= read) throw new Error(`exited (${child.exitCode}) before ${what}`);
		return lines[read++] ?? "";
	};
}

export function waitForExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
	if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
	return new Promise((resolve) => {
		const timer = setTimeout(() => resolve(false), timeoutMs);
		child.once("exit", () => {
			clearTimeout(timer);
			resolve(true);
		});
	});
}

export type ProbeCommand =
	| { op: "get"; label: string }
	| { op: "set"; label: string; secret: string }
	| { op: "delete"; label: string }
	/** Resolves once no call abandoned on its bound is still running for the label (OsSecretStore.settled). */
	| { op: "settled"; label: string };

export interface ProbeResult {
	ok: boolean;
	value?: string | boolean | null;
	/** Set when the call threw. */
	error?: { name: string; kind?: string; message: string };
	/** How long the store call took, measured inside the probe. */
	ms: number;
}

export interface KeychainProbe {
	run(command: ProbeCommand): Promise<ProbeResult>;
	close(): Promise<void>;
}

// Runs an OsSecretStore in a child process, one JSON command per stdin line, one JSON result per stdout line.
const PROBE_SCRIPT = `
import { createJiti } from "jiti";
import { createInterface } from "node:readline";
const jiti = createJiti(import.meta.url);
const { OsSecretStore } = await jiti.import(process.env.PI_MCC_PROBE_MODULE);
const store = new OsSecretStore({
	service: process.env.PI_MCC_PROBE_SERVICE,
	timeoutMs: Number(process.env.PI_MCC_PROBE_TIMEOUT_MS),
});
process.stdout.write(JSON.stringify({ ready: true }) + "\\n");
for await (const line of createInterface({ input: process.stdin })) {
	const command = JSON.parse(line);
	const started = performance.now();
	let result;
	try {
		const value =
			command.op === "get" ? await store.get(command.label)
			: command.op === "set" ? await store.set(command.label, command.secret)
			: command.op === "settled" ? await store.settled(command.label)
			: await store.delete(command.label);
		result = { ok: true, value: value ?? null };
	} catch (error) {
		const message = String(error?.message ?? error);
		result = { ok: false, error: { name: error?.name, kind: error?.kind, message } };
	}
	result.ms = performance.now() - started;
	process.stdout.write(JSON.stringify(result) + "\\n");
}
`;

/**
 * An OsSecretStore living in a child process whose environment reaches the given bus (an isolated keyring, or
 * no bus at all), so a test can freeze or lock that keyring without the test runner's own process touching it.
 */
export async function startKeychainProbe(options: {
	env: Env;
	service: string;
	timeoutMs: number;
	/** Bound on one command's answer (default timeoutMs + 10 s). */
	answerWithinMs?: number;
}): Promise<KeychainProbe> {
	const child = spawn(process.execPath, ["--input-type=module", "-e", PROBE_SCRIPT], {
		cwd: REPO_ROOT,
		env: {
			...options.env,
			PI_MCC_PROBE_MODULE: join(REPO_ROOT, "src", "keychain", "os-secret-store.ts"),
			PI_MCC_PROBE_SERVICE: options.service,
			PI_MCC_PROBE_TIMEOUT_MS: String(options.timeoutMs),
		},
		stdio: ["pipe", "pipe", "pipe"],
	});
	let stderr = "";
	child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
		stderr += chunk;
	});
	const lines = stdoutLines(child);
	const answerWithinMs = options.answerWithinMs ?? options.timeoutMs + 10_000;
	const nextLine = (withinMs: number): Promise<string> =>
		lines(withinMs, "the keychain probe's answer").catch((error: Error) => {
			throw new Error(`${error.message}. Its stderr: ${stderr}`);
		});
	const close = async (): Promise<void> => {
		child.stdin?.end();
		if (!(await waitForExit(child, 5_000))) child.kill("SIGKILL");
	};
	try {
		const hello = JSON.parse(await nextLine(20_000)) as { ready?: boolean };
		if (!hello.ready) throw new Error(`Unexpected first line from the keychain probe: ${JSON.stringify(hello)}`);
	} catch (error) {
		await close();
		throw error;
	}
	return {
		async run(command) {
			child.stdin?.write(`${JSON.stringify(command)}\n`);
			return JSON.parse(await nextLine(answerWithinMs)) as ProbeResult;
		},
		close,
	};
}
