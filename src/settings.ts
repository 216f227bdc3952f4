/**
 * Every environment variable the extension reads, read here once into one typed value that is passed down.
 * Deliberately import-light (node builtins only): index.ts reads the Messages API base URL at registration.
 */
import { homedir } from "node:os";
import { join } from "node:path";

export const DEFAULT_ANTHROPIC_BASE_URL = "https://api.anthropic.com";
/** The service name under which every keychain item is stored; a person searches their keychain UI for it. */
export const KEYCHAIN_SERVICE = "pi-multi-claude-code";
export const DEFAULT_KEYCHAIN_TIMEOUT_MS = 20_000;
export const DEFAULT_TOKEN_TIMEOUT_MS = 30_000;
export const DEFAULT_REFRESH_MARGIN_MS = 5 * 60 * 1000;
/** Anthropic's registered redirect for Claude Pro/Max logins is http://localhost:53692/callback. */
export const DEFAULT_CALLBACK_PORT = 53692;
/** How long /mcc-login waits for the browser's redirect or a pasted code before it gives up. */
export const DEFAULT_LOGIN_TIMEOUT_MS = 10 * 60 * 1000;

export interface ExtensionPaths {
	/** pi's agent directory (`~/.pi/agent`, or `PI_CODING_AGENT_DIR` as pi itself honours it). */
	agentDir: string;
	/** Labels, defaults, fallback chains and project bindings: no secrets. */
	configFile: string;
	/** Cooldowns, usage figures and needs-login marks shared by concurrent pi sessions: no secrets. */
	stateFile: string;
	/** Targets of the per-account refresh locks (proper-lockfile puts `<target>.lock` next to them). */
	lockDir: string;
}

export interface Settings {
	paths: ExtensionPaths;
	/** `PI_MCC_KEYCHAIN_SERVICE`: tests and benchmarks use a throwaway service name. */
	keychainService: string;
	/** `PI_MCC_KEYCHAIN_TIMEOUT_MS`: bound on one keychain call (long enough to answer a macOS prompt). */
	keychainTimeoutMs: number;
	/** `PI_MCC_TOKEN_URL`: the OAuth token endpoint, when overridden (tests, proxies). */
	tokenUrl: string | undefined;
	/** `PI_MCC_TOKEN_TIMEOUT_MS`. */
	tokenTimeoutMs: number;
	/** `PI_MCC_ANTHROPIC_BASE_URL`: the Messages API and the OAuth usage endpoint. */
	anthropicBaseUrl: string;
	/** Whether `PI_MCC_ANTHROPIC_BASE_URL` is set. */
	anthropicBaseUrlOverridden: boolean;
	/** `PI_MCC_REFRESH_MARGIN_MS`: refresh when the access token expires within this margin. */
	refreshMarginMs: number;
	/**
	 * `PI_MCC_CALLBACK_PORT`: where /mcc-login listens for the browser's redirect (127.0.0.1 and ::1; a free port
	 * when it is taken); 0 = paste only.
	 */
	callbackPort: number;
	/** `PI_MCC_LOGIN_TIMEOUT_MS`: bound on /mcc-login's wait for the code (a test knob; default 10 min). */
	loginTimeoutMs: number;
	/** `PI_MCC_NO_BROWSER=1`: never open a browser (the login URL is always shown anyway). */
	openBrowser: boolean;
	/** `WSL_DISTRO_NAME`: WSL has no Secret Service of its own, and its fix differs. */
	wsl: boolean;
	/** Test-only: `PI_MCC_MIGRATE_PAUSE_AT=<step>` stops the migration at a step (crash-safety tests). */
	migratePauseAt: string | undefined;
}

export function readSettings(env: NodeJS.ProcessEnv = process.env): Settings {
	const anthropicOverride = nonEmpty(env.PI_MCC_ANTHROPIC_BASE_URL);
	return {
		paths: resolvePaths(env),
		keychainService: nonEmpty(env.PI_MCC_KEYCHAIN_SERVICE) ?? KEYCHAIN_SERVICE,
		keychainTimeoutMs: positiveNumber(env.PI_MCC_KEYCHAIN_TIMEOUT_MS) ?? DEFAULT_KEYCHAIN_TIMEOUT_MS,
		tokenUrl: nonEmpty(env.PI_MCC_TOKEN_URL),
		tokenTimeoutMs: positiveNumber(env.PI_MCC_TOKEN_TIMEOUT_MS) ?? DEFAULT_TOKEN_TIMEOUT_MS,
		anthropicBaseUrl: anthropicOverride ?? DEFAULT_ANTHROPIC_BASE_URL,
		anthropicBaseUrlOverridden: anthropicOverride !== undefined,
		refreshMarginMs: nonNegativeNumber(env.PI_MCC_REFRESH_MARGIN_MS) ?? DEFAULT_REFRESH_MARGIN_MS,
		callbackPort: port(env.PI_MCC_CALLBACK_PORT) ?? DEFAULT_CALLBACK_PORT,
		loginTimeoutMs: positiveNumber(env.PI_MCC_LOGIN_TIMEOUT_MS) ?? DEFAULT_LOGIN_TIMEOUT_MS,
		openBrowser: env.PI_MCC_NO_BROWSER !== "1",
		wsl: Boolean(env.WSL_DISTRO_NAME),
		migratePauseAt: nonEmpty(env.PI_MCC_MIGRATE_PAUSE_AT),
	};
}

/** What makes two settings need different runtimes (agent dir, keychain service, endpoints). */
export function settingsKey(env: NodeJS.ProcessEnv = process.env): string {
	return [
		env.PI_CODING_AGENT_DIR,
		env.HOME,
		env.PI_MCC_KEYCHAIN_SERVICE,
		env.PI_MCC_TOKEN_URL,
		env.PI_MCC_ANTHROPIC_BASE_URL,
	].join("\u0000");
}

export function resolvePaths(env: NodeJS.ProcessEnv = process.env): ExtensionPaths {
	const agentDir = resolveAgentDir(env);
	return {
		agentDir,
		configFile: join(agentDir, "multi-claude-code.json"),
		stateFile: join(agentDir, "multi-claude-code-state.json"),
		lockDir: join(agentDir, "multi-claude-code-locks"),
	};
}

function resolveAgentDir(env: NodeJS.ProcessEnv): string {
	const fromEnv = env.PI_CODING_AGENT_DIR;
	if (fromEnv) {
		if (fromEnv === "~") return homedir();
		if (fromEnv.startsWith("~/")) return join(homedir(), fromEnv.slice(2));
		return fromEnv;
	}
	return join(homedir(), ".pi", "agent");
}

function nonEmpty(raw: string | undefined): string | undefined {
	return raw === undefined || raw === "" ? undefined : raw;
}

function nonNegativeNumber(raw: string | undefined): number | undefined {
	if (!raw) return undefined;
	const value = Number(raw);
	return Number.isFinite(value) && value >= 0 ? value : undefined;
}

function positiveNumber(raw: string | undefined): number | undefined {
	const value = nonNegativeNumber(raw);
	return value !== undefined && value > 0 ? value : undefined;
}

function port(raw: string | undefined): number | undefined {
	const value = nonNegativeNumber(raw);
	return value !== undefined && Number.isInteger(value) && value < 65536 ? value : undefined;
}
