/**
 * Every environment variable the extension reads, read here once into one typed value that is passed down.
 * Deliberately import-light (node builtins only): index.ts reads the Messages API base URL at registration.
 */
import { isIPv4 } from "node:net";
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
/**
 * A lock whose holder stopped refreshing it this long ago is taken over. pi's own auth.json lock is a different
 * trade-off (30 s); ours guards one HTTP refresh or one small file write, so a dead holder blocks others less.
 * (src/fs/file-lock.ts re-exports it; it lives here so that this file stays import-light.)
 */
export const DEFAULT_LOCK_STALE_MS = 10_000;
/** proper-lockfile's floor: a shorter stale time is raised to this. */
export const MIN_LOCK_STALE_MS = 2_000;

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
	/** `PI_MCC_TOKEN_URL`: the OAuth token endpoint, when overridden (tests, proxies), exactly as given. */
	tokenUrl: string | undefined;
	/** `PI_MCC_TOKEN_TIMEOUT_MS`. */
	tokenTimeoutMs: number;
	/** `PI_MCC_ANTHROPIC_BASE_URL`: the Messages API and the OAuth usage endpoint. */
	anthropicBaseUrl: string;
	/** Whether `PI_MCC_ANTHROPIC_BASE_URL` is set. */
	anthropicBaseUrlOverridden: boolean;
	/** Why `PI_MCC_ANTHROPIC_BASE_URL` is refused (then no request carries a token at all), with the fix. */
	anthropicBaseUrlProblem: string | undefined;
	/** `PI_MCC_REFRESH_MARGIN_MS`: refresh when the access token expires within this margin. */
	refreshMarginMs: number;
	/** `PI_MCC_LOCK_STALE_MS`: refresh locks of a holder silent this long are taken over (tests shorten it). */
	lockStaleMs: number;
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
		// Never the default in place of a refused override: requests fail with the problem instead.
		anthropicBaseUrl: anthropicOverride ?? DEFAULT_ANTHROPIC_BASE_URL,
		anthropicBaseUrlOverridden: anthropicOverride !== undefined,
		anthropicBaseUrlProblem:
			anthropicOverride === undefined
				? undefined
				: endpointUrlProblem("PI_MCC_ANTHROPIC_BASE_URL", anthropicOverride),
		refreshMarginMs: nonNegativeNumber(env.PI_MCC_REFRESH_MARGIN_MS) ?? DEFAULT_REFRESH_MARGIN_MS,
		lockStaleMs: Math.max(MIN_LOCK_STALE_MS, positiveNumber(env.PI_MCC_LOCK_STALE_MS) ?? DEFAULT_LOCK_STALE_MS),
		callbackPort: port(env.PI_MCC_CALLBACK_PORT) ?? DEFAULT_CALLBACK_PORT,
		loginTimeoutMs: positiveNumber(env.PI_MCC_LOGIN_TIMEOUT_MS) ?? DEFAULT_LOGIN_TIMEOUT_MS,
		openBrowser: env.PI_MCC_NO_BROWSER !== "1",
		wsl: Boolean(env.WSL_DISTRO_NAME),
		migratePauseAt: nonEmpty(env.PI_MCC_MIGRATE_PAUSE_AT),
	};
}

/**
 * What makes two environments need different runtimes: every setting. pi 1.x keeps one evaluation of the
 * extension per working directory, so a runtime outlives the session that built it; one built from other
 * settings (another agent dir, callback port, timeout) must not be reused.
 */
export function settingsKey(env: NodeJS.ProcessEnv = process.env): string {
	return JSON.stringify(readSettings(env));
}

/**
 * Why an endpoint override may not receive tokens, or `undefined` when it may: it must be an absolute `https:`
 * URL, or `http:` to this machine's loopback (127.0.0.0/8, ::1, localhost), and carry no user name or password.
 * The message names the variable and the fix and never quotes a password, a query or an unparseable value.
 */
export function endpointUrlProblem(variable: string, raw: string): string | undefined {
	let url: URL;
	try {
		url = new URL(raw);
	} catch {
		return (
			`${variable} is refused: it is not an absolute URL (e.g. https://proxy.example.com/…). Fix it or unset ` +
			"it; nothing is sent until then."
		);
	}
	if (url.username !== "" || url.password !== "") {
		return (
			`${variable} is refused: it carries a user name or password (${shownUrl(raw)}), which would travel with ` +
			"every token. Remove them from the URL; nothing is sent until then."
		);
	}
	if (url.protocol === "https:") return undefined;
	if (url.protocol === "http:" && isLoopbackHost(url.hostname)) return undefined;
	const what =
		url.protocol === "http:"
			? `it sends tokens unencrypted over http: to ${url.hostname}, which is not this machine's loopback`
			: `its scheme ${url.protocol} is not https:`;
	return (
		`${variable} is refused: ${what} (${shownUrl(raw)}). Use an https: URL, or http: only to 127.0.0.1, [::1] ` +
		"or localhost, or unset it; nothing is sent until then."
	);
}

/** A URL as messages show it: no user name, password, query or fragment (any of them can carry a secret). */
export function shownUrl(raw: string): string {
	try {
		const url = new URL(raw);
		url.username = "";
		url.password = "";
		url.search = "";
		url.hash = "";
		return url.href;
	} catch {
		return "(not a URL)";
	}
}

/** 127.0.0.0/8, ::1 and localhost; the URL parser has already normalised `127.1`, `0x7f.1` and the like. */
function isLoopbackHost(hostname: string): boolean {
	if (hostname === "localhost" || hostname === "[::1]") return true;
	return isIPv4(hostname) && hostname.startsWith("127.");
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
