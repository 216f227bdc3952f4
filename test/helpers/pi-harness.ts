/**
 * Drives the real pi runtime (the SDK behind pi's interactive, print and RPC modes) with this extension loaded
 * from index.ts, the way `pi -e ./index.ts` loads it: through pi's resource loader and jiti, on the line this
 * test process drives (test/helpers/pi-line.ts: pi 0.73.1 or pi 1.x). The UI is a recording stand-in:
 * notifications and footer statuses are kept, dialogs are answered from queues. Sessions live in pi's
 * AgentSessionRuntime, as in pi's own modes, so a test can replace them (new, fork, switch, reload).
 *
 * Sessions of one process are not isolated from each other: 0.73 evaluates the extension again per session but
 * sends every request to the streamSimple registered last, and 1.x shares one extension module (one runtime, one
 * footer) per cwd. Prompt one session at a time, or give concurrent sessions different cwds and env keys.
 */
import { promises as fs, mkdtempSync, realpathSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AssistantMessage } from "@mariozechner/pi-ai";
import type {
	AgentSession,
	AgentSessionRuntime,
	ExtensionError,
	ExtensionUIContext,
	ExtensionUIDialogOptions,
	Theme,
} from "@mariozechner/pi-coding-agent";
import { type FakeAnthropicApi, startFakeAnthropicApi } from "./fake-anthropic-api.ts";
import {
	type FakeTokenEndpoint,
	type FakeTokenEndpointOptions,
	startFakeTokenEndpoint,
} from "./fake-token-endpoint.ts";
import { clearKeychainService, deleteKeychainItem, readKeychainItem, uniqueService, waitFor } from "./keyring.ts";
import { DEFAULT_MODEL_ID, EXTENSION_PATH, type PiCredentials, PROVIDER, piSdk, STATUS_KEY } from "./pi-line.ts";

export { DEFAULT_MODEL_ID, EXTENSION_PATH, PROVIDER, REPO_ROOT, STATUS_KEY } from "./pi-line.ts";
/** The line's pi CLI, for tests that run it with process.execPath (piCommand also picks the node and notes it). */
export { startPiProcess } from "./rpc-pi.ts";
export { waitFor };

// ---- isolated environment -----------------------------------------------------------------------------------

export interface TestEnvOptions {
	/** Messages API base URL (PI_MCC_ANTHROPIC_BASE_URL), usually a FakeAnthropicApi's baseUrl. */
	anthropicBaseUrl?: string;
	/** OAuth token endpoint (PI_MCC_TOKEN_URL). */
	tokenUrl?: string;
	/** Extra variables to set (undefined deletes). */
	extra?: Record<string, string | undefined>;
}

export interface TestEnv {
	root: string;
	home: string;
	agentDir: string;
	cwd: string;
	sessionDir: string;
	keychainService: string;
	configFile: string;
	stateFile: string;
	/** Changes variables of the environment later (e.g. once a fake server's URL is known). */
	set(vars: Record<string, string | undefined>): void;
	/** Restores the variables this env changed, deletes its keychain items and its temp directory. */
	cleanup(): Promise<void>;
}

/**
 * The environment of a pi that is ours alone (tests and the bench): its HOME, agent dir and keychain service, the
 * fake servers' URLs, no browser, no network of pi's own, and none of the developer's real credentials (`undefined`
 * means: removed).
 */
export function isolatedPiVariables(where: {
	home: string;
	agentDir: string;
	keychainService: string;
	anthropicBaseUrl?: string | undefined;
	tokenUrl?: string | undefined;
}): Record<string, string | undefined> {
	return {
		HOME: where.home,
		PI_CODING_AGENT_DIR: where.agentDir,
		PI_MCC_KEYCHAIN_SERVICE: where.keychainService,
		PI_MCC_ANTHROPIC_BASE_URL: where.anthropicBaseUrl,
		PI_MCC_TOKEN_URL: where.tokenUrl,
		PI_MCC_NO_BROWSER: "1",
		PI_MCC_CALLBACK_PORT: "0",
		PI_OFFLINE: "1",
		PI_SKIP_VERSION_CHECK: "1",
		PI_TELEMETRY: "0",
		ANTHROPIC_API_KEY: undefined,
		ANTHROPIC_OAUTH_TOKEN: undefined,
		ANTHROPIC_BASE_URL: undefined,
		PI_MCC_REFRESH_MARGIN_MS: undefined,
	};
}

/**
 * A private temp HOME, agent dir, cwd and keychain service for one test file, exported into process.env (which
 * the extension reads when pi loads it). Call before starting sessions; vitest runs each file in its own
 * process, so files never see each other's variables.
 */
export function createTestEnv(options: TestEnvOptions = {}): TestEnv {
	const root = realpathSync(mkdtempSync(join(tmpdir(), "pi-mcc-e2e-")));
	const home = join(root, "home");
	const agentDir = join(home, ".pi", "agent");
	const cwd = join(root, "project");
	const sessionDir = join(root, "sessions");
	const keychainService = uniqueService("e2e");
	const saved = new Map<string, string | undefined>();
	const set = (vars: Record<string, string | undefined>) => {
		for (const [name, value] of Object.entries(vars)) {
			if (!saved.has(name)) saved.set(name, process.env[name]);
			if (value === undefined) delete process.env[name];
			else process.env[name] = value;
		}
	};
	set({ ...isolatedPiVariables({ home, agentDir, keychainService, ...options }), ...options.extra });
	return {
		root,
		home,
		agentDir,
		cwd,
		sessionDir,
		keychainService,
		configFile: join(agentDir, "multi-claude-code.json"),
		stateFile: join(agentDir, "multi-claude-code-state.json"),
		set,
		async cleanup() {
			await clearKeychainService(keychainService).catch(() => {});
			for (const [name, value] of saved) {
				if (value === undefined) delete process.env[name];
				else process.env[name] = value;
			}
			// A write that outlived its session (pi 1.x's model store, a state write after the answer) may still be
			// landing: rm retries what is not empty yet, instead of failing the file's cleanup.
			await fs.rm(root, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
		},
	};
}

export async function prepareDirs(env: TestEnv): Promise<void> {
	for (const dir of [env.home, env.agentDir, env.cwd, env.sessionDir]) {
		await fs.mkdir(dir, { recursive: true, mode: 0o700 });
	}
}

// ---- keychain: the independent view of test/helpers/keyring.ts, under the names the e2e tests use ----------

/** The secret stored for `label`, or undefined when there is none. */
export async function keychainLookup(service: string, label: string): Promise<string | undefined> {
	return (await readKeychainItem(service, label)) ?? undefined;
}

/** Deletes the item of `label`, as a user would in the keychain UI. */
export const keychainDelete = (service: string, label: string): Promise<void> => deleteKeychainItem(service, label);
export { clearKeychainService };

// ---- recording UI -------------------------------------------------------------------------------------------

export interface Notification {
	message: string;
	type: "info" | "warning" | "error";
}

export interface DialogCall {
	kind: "select" | "confirm" | "input" | "editor";
	title: string;
	detail?: string;
	options?: string[];
	answer: string | boolean | undefined;
}

type SelectAnswer = string | undefined | ((title: string, options: string[]) => string | undefined);
/**
 * A fixed answer, or one computed when the dialog opens (e.g. from a URL notified just before); a computed one may
 * come later (a promise), and sees the dialog's options (its abort signal dismisses the dialog, as pi's do).
 */
type InputAnswer =
	| string
	| undefined
	| ((
			title: string,
			placeholder: string | undefined,
			opts: ExtensionUIDialogOptions | undefined,
	  ) => string | undefined | Promise<string | undefined>);

export interface RecordingUi {
	context: ExtensionUIContext;
	notifications: Notification[];
	/** Every setStatus call per key, in order (undefined = cleared). */
	statuses: Map<string, Array<string | undefined>>;
	dialogs: DialogCall[];
	queueInput(...answers: InputAnswer[]): void;
	queueSelect(...answers: SelectAnswer[]): void;
	queueConfirm(...answers: boolean[]): void;
	/** The current status text for `key`. */
	status(key: string): string | undefined;
	/** Every string the UI ever showed (notifications, statuses, dialog titles and options). */
	allText(): string[];
}

/** A theme stand-in that renders every style as plain text, so footer assertions see the words only. */
function plainTheme(): Theme {
	const identity = (...args: unknown[]) => {
		const text = [...args].reverse().find((arg) => typeof arg === "string");
		return typeof text === "string" ? text : "";
	};
	return new Proxy({} as Theme, {
		get: (_target, property) => (property === "then" ? undefined : identity),
	});
}

export function createRecordingUi(): RecordingUi {
	const notifications: Notification[] = [];
	const statuses = new Map<string, Array<string | undefined>>();
	const dialogs: DialogCall[] = [];
	const inputs: InputAnswer[] = [];
	const selects: SelectAnswer[] = [];
	const confirms: boolean[] = [];
	const theme = plainTheme();
	let editorText = "";
	const context: ExtensionUIContext = {
		async select(title, options) {
			const next = selects.shift();
			const answer = typeof next === "function" ? next(title, options) : next;
			dialogs.push({ kind: "select", title, options: [...options], answer });
			return answer;
		},
		async confirm(title, message) {
			const answer = confirms.shift() ?? false;
			dialogs.push({ kind: "confirm", title, detail: message, answer });
			return answer;
		},
		async input(title, placeholder, opts) {
			const next = inputs.shift();
			const answer = typeof next === "function" ? await next(title, placeholder, opts) : next;
			dialogs.push({ kind: "input", title, detail: placeholder, answer });
			return answer;
		},
		async editor(title, prefill) {
			dialogs.push({ kind: "editor", title, detail: prefill, answer: undefined });
			return undefined;
		},
		notify(message, type = "info") {
			notifications.push({ message, type });
		},
		onTerminalInput: () => () => {},
		setStatus(key, text) {
			let history = statuses.get(key);
			if (!history) {
				history = [];
				statuses.set(key, history);
			}
			history.push(text);
		},
		setWorkingMessage: () => {},
		setWorkingVisible: () => {},
		setWorkingIndicator: () => {},
		setHiddenThinkingLabel: () => {},
		setWidget: () => {},
		setFooter: () => {},
		setHeader: () => {},
		setTitle: () => {},
		custom: async () => undefined as never,
		pasteToEditor: (text) => {
			editorText += text;
		},
		setEditorText: (text) => {
			editorText = text;
		},
		getEditorText: () => editorText,
		addAutocompleteProvider: () => {},
		setEditorComponent: () => {},
		getEditorComponent: () => undefined,
		get theme() {
			return theme;
		},
		getAllThemes: () => [],
		getTheme: () => undefined,
		setTheme: () => ({ success: false, error: "UI not available in tests" }),
		getToolsExpanded: () => false,
		setToolsExpanded: () => {},
	};
	return {
		context,
		notifications,
		statuses,
		dialogs,
		queueInput: (...answers) => void inputs.push(...answers),
		queueSelect: (...answers) => void selects.push(...answers),
		queueConfirm: (...answers) => void confirms.push(...answers),
		status: (key) => statuses.get(key)?.at(-1),
		allText() {
			const texts: string[] = notifications.map((n) => n.message);
			for (const history of statuses.values()) for (const text of history) if (text !== undefined) texts.push(text);
			for (const dialog of dialogs) {
				texts.push(dialog.title, ...(dialog.detail ? [dialog.detail] : []), ...(dialog.options ?? []));
			}
			return texts;
		},
	};
}

// ---- sessions -----------------------------------------------------------------------------------------------

export interface PromptResult {
	text: string;
	stopReason: AssistantMessage["stopReason"] | undefined;
	errorMessage: string | undefined;
	message: AssistantMessage | undefined;
}

export interface PiSessionOptions {
	env: TestEnv;
	/** The directory the session runs in (default env.cwd), e.g. a project, a directory below one or a symlink. */
	cwd?: string;
	modelId?: string;
	/** "file" (default) writes the session .jsonl under env.sessionDir; "memory" keeps it in memory. */
	sessionStorage?: "file" | "memory";
	/** Bound on each prompt / command / shortcut (default 20 s). */
	timeoutMs?: number;
	/** Wait for the extension's first footer status before returning (default true). */
	waitForFooter?: boolean;
	/** More extensions to load after index.ts (test fixtures), as further `-e` paths would. */
	extensionPaths?: string[];
	/** Credentials pi itself holds (e.g. a token for its built-in anthropic provider); none by default. */
	piCredentials?: PiCredentials;
}

export interface PiSession {
	/** The current session (a new object after each replacement). */
	readonly session: AgentSession;
	runtime: AgentSessionRuntime;
	ui: RecordingUi;
	/** Errors pi reported from extension handlers (a throwing command, event handler or shortcut). */
	extensionErrors: ExtensionError[];
	/** Sends a user prompt through pi and returns the resulting assistant message. */
	prompt(text: string): Promise<PromptResult>;
	/** Runs an extension command as typed in the editor (`/mcc-use work`); fails if no such command exists. */
	runCommand(line: string): Promise<void>;
	/** Presses a shortcut registered by an extension, with the context interactive mode gives shortcut handlers. */
	pressShortcut(key: string): Promise<void>;
	/** Shortcut conflicts pi found while resolving extension shortcuts against the keybindings. */
	shortcutDiagnostics(): string[];
	/** The extension's current footer text. */
	footer(): string | undefined;
	/** Every footer text shown so far. */
	footerHistory(): Array<string | undefined>;
	/** Registered command names. */
	commands(): string[];
	/** Replaces the session with a new, empty one (`/new`). */
	newSession(): Promise<{ cancelled: boolean }>;
	/** Forks the session at `entryId` (a user message's entry), as `/fork` does. */
	fork(entryId: string): Promise<{ cancelled: boolean }>;
	/** Replaces the session with the one saved in `sessionFile` (`/resume`). */
	switchSession(sessionFile: string): Promise<{ cancelled: boolean }>;
	/** Reloads extensions, settings and resources (`/reload`). */
	reload(): Promise<void>;
	/** Emits session_shutdown (as pi does on quit) and disposes the session. */
	dispose(): Promise<void>;
}

export async function withTimeout<T>(
	promise: Promise<T>,
	ms: number,
	what: string,
	onTimeout?: () => void,
): Promise<T> {
	let timer: NodeJS.Timeout | undefined;
	const expired = new Promise<never>((_, reject) => {
		timer = setTimeout(() => {
			onTimeout?.();
			reject(new Error(`${what} did not finish within ${ms} ms`));
		}, ms);
	});
	try {
		return await Promise.race([promise, expired]);
	} finally {
		clearTimeout(timer);
	}
}

function textOf(message: AssistantMessage): string {
	return message.content
		.filter((block): block is Extract<AssistantMessage["content"][number], { type: "text" }> => block.type === "text")
		.map((block) => block.text)
		.join("");
}

/**
 * Starts a pi session with the extension loaded, bound to a recording UI (as interactive mode binds its own). Every
 * session of the runtime (after a replacement too) gets fresh services, as pi's CLI builds them, and the same UI.
 */
export async function startPiSession(options: PiSessionOptions): Promise<PiSession> {
	const { env } = options;
	const cwd = options.cwd ?? env.cwd;
	const timeoutMs = options.timeoutMs ?? 20_000;
	await prepareDirs(env);
	await fs.mkdir(cwd, { recursive: true, mode: 0o700 });
	const sdk = await piSdk();
	const { pi } = sdk;
	const modelId = options.modelId ?? DEFAULT_MODEL_ID;
	const createRuntime: Parameters<typeof pi.createAgentSessionRuntime>[0] = async (target) => {
		const services = await sdk.createServices(
			{
				cwd: target.cwd,
				agentDir: target.agentDir,
				settingsManager: pi.SettingsManager.inMemory({
					retry: { enabled: false },
					compaction: { enabled: false },
				}),
				resourceLoaderOptions: {
					additionalExtensionPaths: [EXTENSION_PATH, ...(options.extensionPaths ?? [])],
					noSkills: true,
					noPromptTemplates: true,
					noThemes: true,
					noContextFiles: true,
				},
			},
			options.piCredentials,
		);
		const loadErrors = services.resourceLoader.getExtensions().errors;
		const serviceErrors = services.diagnostics.filter((d) => d.type === "error");
		if (loadErrors.length > 0 || serviceErrors.length > 0) {
			const problems = [...loadErrors.map((e) => `${e.path}: ${e.error}`), ...serviceErrors.map((d) => d.message)];
			throw new Error(`pi could not load the extension: ${problems.join("; ")}`);
		}
		const model = sdk.findModel(services, PROVIDER, modelId);
		if (!model) throw new Error(`pi's model registry has no ${PROVIDER}/${modelId}: the provider was not registered`);
		const created = await pi.createAgentSessionFromServices({
			services,
			sessionManager: target.sessionManager,
			sessionStartEvent: target.sessionStartEvent,
			model,
			thinkingLevel: "off",
		});
		return { ...created, services, diagnostics: services.diagnostics };
	};
	const sessionManager =
		options.sessionStorage === "memory"
			? pi.SessionManager.inMemory(cwd)
			: pi.SessionManager.create(cwd, env.sessionDir);
	const runtime = await pi.createAgentSessionRuntime(createRuntime, {
		cwd,
		agentDir: env.agentDir,
		sessionManager,
	});
	const ui = createRecordingUi();
	const extensionErrors: ExtensionError[] = [];
	// As pi's modes do: every session is bound once, here (a replacement rebinds through setRebindSession, which
	// emits its session_start); extension commands reach the runtime through the command context's actions.
	const bind = (session: AgentSession) =>
		session.bindExtensions({
			...sdk.bindMode,
			uiContext: ui.context,
			onError: (error) => extensionErrors.push(error),
			commandContextActions: {
				waitForIdle: () => session.agent.waitForIdle(),
				newSession: (replacement) => runtime.newSession(replacement),
				fork: (entryId, forkOptions) => runtime.fork(entryId, forkOptions),
				navigateTree: (targetId, treeOptions) => session.navigateTree(targetId, treeOptions),
				switchSession: (file, switchOptions) => runtime.switchSession(file, switchOptions),
				reload: () => session.reload(),
			},
		});
	runtime.setRebindSession(bind);
	await withTimeout(bind(runtime.session), timeoutMs, "binding the extension (session_start)");
	// The extension paints its footer from session_start without pi awaiting it; wait for that first paint so a
	// late start-up refresh cannot overwrite what a test's first request puts there.
	if (options.waitForFooter ?? true) {
		await waitFor(
			() => (ui.statuses.get(STATUS_KEY)?.length ?? 0) > 0,
			"the extension's first footer status",
			timeoutMs,
		);
	}
	let disposed = false;
	const runner = () => runtime.session.extensionRunner;
	const bounded = <T>(what: string, promise: Promise<T>) => withTimeout(promise, timeoutMs, what);

	const harness: PiSession = {
		get session() {
			return runtime.session;
		},
		runtime,
		ui,
		extensionErrors,
		async prompt(text) {
			if (text.startsWith("/")) throw new Error("prompt() is for user prompts; use runCommand() for commands");
			const { session } = runtime;
			const before = session.messages.length;
			await withTimeout(session.prompt(text), timeoutMs, `prompt "${text}"`, () => void session.abort());
			const added = session.messages.slice(before);
			const message = [...added].reverse().find((m): m is AssistantMessage => m.role === "assistant");
			return {
				text: message ? textOf(message) : "",
				stopReason: message?.stopReason,
				errorMessage: message?.errorMessage,
				message,
			};
		},
		async runCommand(line) {
			if (!line.startsWith("/")) throw new Error(`not a command: ${line}`);
			const name = line.slice(1).split(" ")[0] ?? "";
			if (!runner().getCommand(name)) {
				throw new Error(
					`no extension command /${name} is registered (registered: ${harness.commands().join(", ")})`,
				);
			}
			const { session } = runtime;
			const before = session.messages.length;
			await bounded(`command ${line}`, session.prompt(line));
			if (session.messages.length !== before && session.messages.slice(before).some((m) => m.role === "user")) {
				throw new Error(`${line} was sent to the model as a prompt instead of running as a command`);
			}
		},
		async pressShortcut(key) {
			const shortcuts = runner().getShortcuts(sdk.keybindings(env.agentDir) as never);
			const shortcut = shortcuts.get(key.toLowerCase() as never);
			if (!shortcut) {
				throw new Error(
					`no extension shortcut ${key} is active (active: ${[...shortcuts.keys()].join(", ") || "none"})`,
				);
			}
			// Interactive mode runs the handler with an ExtensionContext built on its UI; the runner's context is
			// that same context over the bound UI.
			await bounded(`shortcut ${key}`, Promise.resolve(shortcut.handler(runner().createContext())));
		},
		shortcutDiagnostics: () =>
			runner()
				.getShortcutDiagnostics()
				.map((d) => d.message),
		footer: () => ui.status(STATUS_KEY),
		footerHistory: () => [...(ui.statuses.get(STATUS_KEY) ?? [])],
		commands: () =>
			runner()
				.getRegisteredCommands()
				.map((c) => c.name),
		newSession: () => bounded("a new session", runtime.newSession()),
		fork: (entryId) => bounded(`a fork at ${entryId}`, runtime.fork(entryId)),
		switchSession: (file) => bounded(`a switch to ${file}`, runtime.switchSession(file)),
		reload: () => bounded("a reload", runtime.session.reload()),
		async dispose() {
			if (disposed) return;
			disposed = true;
			if (runtime.session.isStreaming) await withTimeout(runtime.session.abort(), 5_000, "abort").catch(() => {});
			// session_shutdown (reason "quit"), then the session is disposed.
			await withTimeout(runtime.dispose(), 5_000, "session_shutdown");
		},
	};
	return harness;
}

/** Session .jsonl files written under the env's session dir. */
export async function sessionFiles(env: TestEnv): Promise<string[]> {
	const found: string[] = [];
	const walk = async (dir: string) => {
		let entries: import("node:fs").Dirent[];
		try {
			entries = await fs.readdir(dir, { withFileTypes: true });
		} catch {
			return;
		}
		for (const entry of entries) {
			const path = join(dir, entry.name);
			if (entry.isDirectory()) await walk(path);
			else if (entry.name.endsWith(".jsonl")) found.push(path);
		}
	};
	await walk(env.sessionDir);
	return found;
}

// ---- one test file's world ----------------------------------------------------------------------------------

export interface E2eWorld {
	api: FakeAnthropicApi;
	tokens: FakeTokenEndpoint;
	env: TestEnv;
	/** Starts a pi session in this world; it is disposed by disposeSessions() / close(). */
	start(options?: Omit<PiSessionOptions, "env">): Promise<PiSession>;
	disposeSessions(): Promise<void>;
	close(): Promise<void>;
}

/** A fake Messages API, a fake token endpoint and an isolated environment pointing at both. */
export async function createE2eWorld(tokenOptions: FakeTokenEndpointOptions = {}): Promise<E2eWorld> {
	const api = await startFakeAnthropicApi();
	const tokens = await startFakeTokenEndpoint(tokenOptions);
	const env = createTestEnv({ anthropicBaseUrl: api.baseUrl, tokenUrl: tokens.url });
	await prepareDirs(env);
	const sessions: PiSession[] = [];
	const disposeSessions = async () => {
		const open = sessions.splice(0);
		for (const session of open) await session.dispose().catch(() => {});
	};
	return {
		api,
		tokens,
		env,
		async start(options = {}) {
			const session = await startPiSession({ ...options, env });
			sessions.push(session);
			return session;
		},
		disposeSessions,
		async close() {
			await disposeSessions();
			await env.cleanup();
			await api.close();
			await tokens.close();
		},
	};
}
