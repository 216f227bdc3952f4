/**
 * Two real pi sessions built with pi's SDK, the way pi's own modes build them: one with this extension loaded
 * from index.ts (through pi's resource loader and jiti, like `pi -e ./index.ts`) talking through the
 * `multi-claude-code` provider, and one plain pi without the extension talking through pi's built-in `anthropic`
 * provider. Both reach the same fake Messages API (the built-in one through `providers.anthropic.baseUrl` in
 * models.json) with an OAuth-shaped `sk-ant-oat01-…` token, so both send the same request.
 */
import { promises as fs } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { AssistantMessage } from "@mariozechner/pi-ai";
import {
	type AgentSession,
	AuthStorage,
	createAgentSessionFromServices,
	createAgentSessionServices,
	type ExtensionUIContext,
	SessionManager,
	SettingsManager,
} from "@mariozechner/pi-coding-agent";
import { createRecordingUi } from "../../test/helpers/pi-harness.ts";
import { startMarks, stopMarks } from "./fetch-timing.ts";

export const REPO_ROOT = fileURLToPath(new URL("../..", import.meta.url));
/** The extension under test: index.ts, or (to try a candidate change without touching src/) PI_MCC_BENCH_EXTENSION. */
export const EXTENSION_PATH = process.env.PI_MCC_BENCH_EXTENSION || join(REPO_ROOT, "index.ts");
export const MCC_PROVIDER = "multi-claude-code";
export const MODEL_ID = "claude-sonnet-4-5";

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
	session: AgentSession;
	/** Sends one user prompt on an empty transcript and times it from the call until pi's prompt() resolves. */
	prompt(text: string): Promise<TimedPrompt>;
	dispose(): void;
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
	const authStorage = AuthStorage.inMemory();
	if (options.anthropicToken) authStorage.setRuntimeApiKey("anthropic", options.anthropicToken);
	const services = await createAgentSessionServices({
		cwd: options.cwd,
		agentDir: options.agentDir,
		authStorage,
		settingsManager: SettingsManager.inMemory({ retry: { enabled: false }, compaction: { enabled: false } }),
		resourceLoaderOptions: {
			additionalExtensionPaths: options.withExtension ? [EXTENSION_PATH] : [],
			noExtensions: true,
			noSkills: true,
			noPromptTemplates: true,
			noThemes: true,
			noContextFiles: true,
		},
	});
	const errors = [
		...services.resourceLoader.getExtensions().errors.map((e) => `${e.path}: ${e.error}`),
		...services.diagnostics.filter((d) => d.type === "error").map((d) => d.message),
	];
	if (errors.length > 0) throw new Error(`pi could not set the session up: ${errors.join("; ")}`);
	const { provider } = options;
	const model = services.modelRegistry.find(provider, MODEL_ID);
	if (!model) throw new Error(`pi's model registry has no ${provider}/${MODEL_ID}`);
	if (provider === "anthropic" && !String(model.baseUrl).startsWith("http://127.0.0.1:")) {
		throw new Error(`models.json did not redirect the anthropic provider to the fake API (baseUrl ${model.baseUrl})`);
	}
	const { session } = await createAgentSessionFromServices({
		services,
		sessionManager: SessionManager.inMemory(options.cwd),
		model,
		thinkingLevel: "off",
	});
	// As pi's modes do: bind a UI (the extension's session_start attaches its footer to it).
	await session.bindExtensions({ uiContext: silentUi(), onError: () => {} });
	return {
		label: `${provider}${options.withExtension ? " (extension loaded)" : " (plain pi)"}`,
		session,
		async prompt(text) {
			// A fresh transcript for every sample, so every request carries the same payload.
			session.agent.state.messages = [];
			const marks = startMarks();
			const started = performance.now();
			await session.prompt(text);
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
		dispose: () => session.dispose(),
	};
}

/** An ExtensionUIContext for the benchmark: the tests' recording UI (recording a footer text costs nothing). */
export function silentUi(): ExtensionUIContext {
	return createRecordingUi().context;
}
