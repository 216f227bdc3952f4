/**
 * Two real pi sessions built with pi's SDK, the way pi's own modes build them: one with this extension loaded
 * from index.ts (through pi's resource loader and jiti, like `pi -e ./index.ts`) talking through the
 * `multi-claude-code` provider, and one plain pi without the extension talking through pi's built-in `anthropic`
 * provider. Both reach the same fake Messages API (the built-in one through `providers.anthropic.baseUrl` in
 * models.json) with an OAuth-shaped `sk-ant-oat01-…` token, so both send the same request.
 */
import { promises as fs } from "node:fs";
import { join } from "node:path";
import type { AssistantMessage } from "@mariozechner/pi-ai";
import type { AgentSession, ExtensionUIContext } from "@mariozechner/pi-coding-agent";
import { createRecordingUi, withTimeout } from "../../test/helpers/pi-harness.ts";
import { piLine, piSdk, REPO_ROOT as ROOT } from "../../test/helpers/pi-line.ts";
import { startMarks, stopMarks } from "./fetch-timing.ts";

export const REPO_ROOT = ROOT;
/** The extension under test: index.ts, or (to try a candidate change without touching src/) PI_MCC_BENCH_EXTENSION. */
export const EXTENSION_PATH = process.env.PI_MCC_BENCH_EXTENSION || join(REPO_ROOT, "index.ts");
export const MODEL_ID = "claude-sonnet-4-5";

/** Bounds on pi's own steps: a prompt to the instant fake server takes milliseconds, a session's end less. */
const PROMPT_TIMEOUT_MS = 20_000;
const SESSION_STEP_TIMEOUT_MS = 5_000;

export interface TimedPrompt {
	ms: number;
	/** From the prompt call until the HTTP request was sent (NaN when no request was seen). */
	beforeRequestMs: number;
	/** From the response head until pi's prompt() resolved. */
	afterResponseMs: number;
	ok: boolean;
	text: string;
	error?: string;
}

export interface BenchSession {
	label: string;
	/** The current pi session (a new one after `renew`). */
	readonly session: AgentSession;
	/** Sends one user prompt on an empty transcript and times it from the call until pi's prompt() resolves. */
	prompt(text: string): Promise<TimedPrompt>;
	/**
	 * Switches this session to another account with `/mcc-use` (a session keeps the account it started on,
	 * whatever the config's default says later). Not timed.
	 */
	useAccount(label: string): Promise<void>;
	/**
	 * Replaces the pi session with a new one, set up the same way (pi's end of a session, then a new start). pi
	 * 1.x's prompts slow down as a session's entries pile up (~3.5 ms per 100 prompts), so long runs renew their
	 * sessions every few dozen rounds; the first prompts of a new session are not timed.
	 */
	renew(): Promise<void>;
	dispose(): Promise<void>;
}

/** Points pi's built-in anthropic provider at the fake API (docs/models.md, "Overriding Built-in Providers"). */
export async function writeModelsJson(agentDir: string, baseUrl: string): Promise<void> {
	const file = join(agentDir, "models.json");
	const models = { providers: { anthropic: { baseUrl } } };
	await fs.writeFile(file, `${JSON.stringify(models, null, "\t")}\n`, { mode: 0o600 });
}

export interface SessionOptions {
	cwd: string;
	agentDir: string;
	/** Load the extension (from index.ts, as `pi -e` does) or not. */
	withExtension: boolean;
	/** The provider the session talks through (multi-claude-code needs the extension). */
	provider: "multi-claude-code" | "anthropic";
	/** Runtime API key for the built-in anthropic provider (an `sk-ant-oat01-…` token). */
	anthropicToken?: string;
}

export async function createBenchSession(options: SessionOptions): Promise<BenchSession> {
	let session = await startSession(options);
	const end = async (ended: AgentSession) => {
		// As pi does before it disposes a session: the extension hears of its end (and forgets that session).
		const shutdown = ended.extensionRunner?.emit({ type: "session_shutdown", reason: "quit" } as never);
		await withTimeout(Promise.resolve(shutdown), SESSION_STEP_TIMEOUT_MS, "session_shutdown").catch(() => {});
		ended.dispose();
	};
	return {
		label: `${options.provider}${options.withExtension ? " (extension loaded)" : " (plain pi)"}`,
		get session() {
			return session;
		},
		async prompt(text) {
			// A fresh transcript for every sample, so every request carries the same payload.
			session.agent.state.messages = [];
			const marks = startMarks();
			const started = performance.now();
			await withTimeout(session.prompt(text), PROMPT_TIMEOUT_MS, `prompt "${text}"`, () => void session.abort());
			const ended = performance.now();
			stopMarks();
			const ms = ended - started;
			const beforeRequestMs = marks.firstCall === undefined ? Number.NaN : marks.firstCall - started;
			const afterResponseMs = marks.lastResponse === undefined ? Number.NaN : ended - marks.lastResponse;
			const reply = [...session.messages].reverse().find((m): m is AssistantMessage => m.role === "assistant");
			const replyText = reply
				? reply.content.map((block) => (block.type === "text" ? block.text : "")).join("")
				: "";
			const ok = reply?.stopReason === "stop";
			const error = ok ? undefined : (reply?.errorMessage ?? "no assistant reply");
			return { ms, beforeRequestMs, afterResponseMs, ok, text: replyText, error };
		},
		async useAccount(label) {
			await withTimeout(session.prompt(`/mcc-use ${label}`), PROMPT_TIMEOUT_MS, `/mcc-use ${label}`);
		},
		async renew() {
			const old = session;
			session = await startSession(options);
			await end(old);
		},
		dispose: () => end(session),
	};
}

async function startSession(options: SessionOptions): Promise<AgentSession> {
	// The line's SDK (test/helpers/pi-line.ts): pi 0.73.1, or pi 1.x when PI_MCC_PI_LINE=1.x (on Node >= 22.19).
	const sdk = await piSdk();
	const { pi } = sdk;
	const services = await sdk.createServices(
		{
			cwd: options.cwd,
			agentDir: options.agentDir,
			// pi 1.x would otherwise replay idle requests to keep the prompt cache warm (0.73 ignores the key).
			settingsManager: pi.SettingsManager.inMemory({
				retry: { enabled: false },
				compaction: { enabled: false },
				cacheWarming: "off",
			} as Parameters<typeof pi.SettingsManager.inMemory>[0]),
			resourceLoaderOptions: {
				additionalExtensionPaths: options.withExtension ? [EXTENSION_PATH] : [],
				noExtensions: true,
				noSkills: true,
				noPromptTemplates: true,
				noThemes: true,
				noContextFiles: true,
			},
		},
		{ anthropicOAuthToken: options.anthropicToken },
	);
	const errors = [
		...services.resourceLoader.getExtensions().errors.map((e) => `${e.path}: ${e.error}`),
		...services.diagnostics.filter((d) => d.type === "error").map((d) => d.message),
	];
	if (errors.length > 0) throw new Error(`pi could not set the session up: ${errors.join("; ")}`);
	const { provider } = options;
	const model = sdk.findModel(services, provider, MODEL_ID);
	if (!model) throw new Error(`pi ${piLine().version}'s model registry has no ${provider}/${MODEL_ID}`);
	if (provider === "anthropic" && !String(model.baseUrl).startsWith("http://127.0.0.1:")) {
		throw new Error(`models.json did not redirect the anthropic provider to the fake API (baseUrl ${model.baseUrl})`);
	}
	const { session } = await pi.createAgentSessionFromServices({
		services,
		sessionManager: pi.SessionManager.inMemory(options.cwd),
		model,
		thinkingLevel: "off",
	});
	// As pi's modes do: bind a UI (the extension's session_start attaches its footer to it).
	const bind = session.bindExtensions({ ...sdk.bindMode, uiContext: silentUi(), onError: () => {} });
	await withTimeout(bind, PROMPT_TIMEOUT_MS, "binding the extension (session_start)");
	return session;
}

/** An ExtensionUIContext for the benchmark: the tests' recording UI (recording a footer text costs nothing). */
export function silentUi(): ExtensionUIContext {
	return createRecordingUi().context;
}
