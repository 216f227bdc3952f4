/**
 * The one place that knows which pi the tests drive. `npm test` (test/run-tests.ts) runs the whole suite on the
 * pinned line, pi 0.73.1 from the root node_modules on the current Node, then every test file that started pi
 * again on pi 1.x (the prefix test/pi-1x, on Node ≥ 22.19), with PI_MCC_PI_LINE=1.x. Everything that differs
 * between the lines is here: the SDK module, the CLI, the node that runs it, the keybindings module, the credential
 * store the SDK wants and the RPC event that ends a run. The 0.73.1 types stay the compile-time types; 1.x is cast
 * to them at this seam (both lines share the API the harness uses: pi 1.x maps the `@mariozechner/*` names).
 */
import { appendFileSync, existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { Api, Model } from "@mariozechner/pi-ai";
import type * as Pi073 from "@mariozechner/pi-coding-agent";

export const REPO_ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));
/** What every test runs pi with: this extension, its provider and a model it mirrors. */
export const EXTENSION_PATH = join(REPO_ROOT, "index.ts");
export const PROVIDER = "multi-claude-code";
export const STATUS_KEY = "multi-claude-code";
export const DEFAULT_MODEL_ID = "claude-sonnet-4-5";
/** The prefix pi 1.x is installed in (`npm ci` there; test/run-tests.ts does it when it is missing). */
export const PI_1X_PREFIX = resolve(process.env.PI_MCC_PI1X_DIR || join(REPO_ROOT, "test", "pi-1x"));
/** pi 1.x's own engines field (`node >= 22.19.0`): older Nodes fail at its first import. */
export const PI_1X_MIN_NODE: readonly [number, number] = [22, 19];

export type PiLineName = "0.73" | "1.x";
type PiSdk = typeof Pi073;
type ServicesOptions = Omit<Pi073.CreateAgentSessionServicesOptions, "authStorage">;

export interface PiLine {
	name: PiLineName;
	/** The installed pi-coding-agent's version (0.73.1, 1.6.0, …). */
	version: string;
	packageDir: string;
	/** The `pi` bin of the package: what a person runs. */
	cliPath: string;
	/** The node that runs pi's CLI: this process's (the runner starts the 1.x run on Node ≥ 22.19). */
	node: string;
	/** pi's keybindings module (not exported from the package index: loaded by file). */
	keybindingsModule: string;
	/** The RPC event that ends a prompt's run: 1.x settles after agent_end (retries, compaction, queued input). */
	runEndEvent: "agent_end" | "agent_settled";
}

export function nodeAtLeast(version: string, [major, minor]: readonly [number, number]): boolean {
	const [m = 0, n = 0] = version.replace(/^v/, "").split(".").map(Number);
	return m > major || (m === major && n >= minor);
}

function packageDirOf(name: PiLineName): string {
	return name === "1.x"
		? join(PI_1X_PREFIX, "node_modules", "@earendil-works", "pi-coding-agent")
		: join(REPO_ROOT, "node_modules", "@mariozechner", "pi-coding-agent");
}

function describeLine(name: PiLineName): PiLine {
	const packageDir = packageDirOf(name);
	const manifestFile = join(packageDir, "package.json");
	if (!existsSync(manifestFile)) {
		throw new Error(
			name === "1.x"
				? `pi 1.x is not installed in ${PI_1X_PREFIX}: run the tests with \`npm test\`, which installs it there`
				: "pi 0.73.1 is not installed: run `npm ci` first",
		);
	}
	if (name === "1.x" && !nodeAtLeast(process.version, PI_1X_MIN_NODE)) {
		throw new Error(`pi 1.x needs Node >= ${PI_1X_MIN_NODE.join(".")}; this test process runs ${process.version}`);
	}
	const manifest = JSON.parse(readFileSync(manifestFile, "utf8")) as { version: string; bin: { pi: string } };
	return {
		name,
		version: manifest.version,
		packageDir,
		cliPath: join(packageDir, manifest.bin.pi),
		node: process.execPath,
		keybindingsModule: join(packageDir, "dist", "core", "keybindings.js"),
		runEndEvent: name === "1.x" ? "agent_settled" : "agent_end",
	};
}

let current: PiLine | undefined;

/** The line this test process drives (PI_MCC_PI_LINE, default the pinned 0.73 line). */
export function piLine(): PiLine {
	current ??= describeLine(process.env.PI_MCC_PI_LINE === "1.x" ? "1.x" : "0.73");
	return current;
}

/**
 * Tells `npm test` that the current test file starts pi, so that the runner runs it on pi 1.x as well.
 * test/setup-line.ts names the file (PI_MCC_TEST_FILE); the runner names the ledger (PI_MCC_PI_STARTS_FILE).
 */
function notePiStarted(): void {
	const ledger = process.env.PI_MCC_PI_STARTS_FILE;
	const file = process.env.PI_MCC_TEST_FILE;
	if (ledger && file) appendFileSync(ledger, `${file}\n`);
}

/**
 * pi's arguments for a test run of the extension: the provider and model, the extensions, the session dir, and no
 * other resources. Only flags both lines know (0.73 takes an unknown flag for an extension's and exits).
 */
export function extensionRunArgs(extensions: readonly string[], sessionDir: string): string[] {
	return [
		"--provider",
		PROVIDER,
		"--model",
		DEFAULT_MODEL_ID,
		...extensions.flatMap((path) => ["-e", path]),
		"--session-dir",
		sessionDir,
		"-ne",
		"-ns",
		"-np",
		"--no-themes",
		"-nc",
	];
}

/** The command that runs this line's pi CLI with `args`: [node, [cli, …args]]. */
export function piCommand(args: readonly string[]): [string, string[]] {
	const line = piLine();
	notePiStarted();
	return [line.node, [line.cliPath, ...args]];
}

/** Credentials pi itself holds for a session (in memory, never a file). */
export interface PiCredentials {
	/**
	 * An Anthropic OAuth access token for pi's built-in `anthropic` provider, stored as pi's own `/login` stores a
	 * Claude Pro/Max login (an OAuth credential, hours from expiry so pi never refreshes it).
	 */
	anthropicOAuthToken?: string;
}

export interface LineSdk {
	pi: PiSdk;
	/**
	 * createAgentSessionServices with credentials kept in memory: `AuthStorage.inMemory()` on 0.73, a
	 * `ModelRuntime` over an `InMemoryCredentialStore` on 1.x (which has no AuthStorage). Both read the agent
	 * dir's models.json when there is one, as pi does; 1.x keeps its model catalog cache in memory, so neither
	 * line writes a file there.
	 */
	createServices(options: ServicesOptions, credentials?: PiCredentials): Promise<Pi073.AgentSessionServices>;
	/** A registered model: `modelRegistry.find` on 0.73, `modelRuntime.getModel` on 1.x. */
	findModel(services: Pi073.AgentSessionServices, provider: string, id: string): Model<Api> | undefined;
	/** Extra bindExtensions fields: 1.x's `mode` (so ctx.mode and ctx.hasUI look like an RPC host); 0.73 has none. */
	bindMode: { mode?: "rpc" };
	/** pi's effective keybindings for an agent dir (for shortcut lookups). */
	keybindings(agentDir: string): Record<string, unknown>;
}

async function loadSdk(): Promise<LineSdk> {
	const line = piLine();
	notePiStarted();
	const load = (file: string): Promise<unknown> => import(pathToFileURL(file).href);
	const pi = (await load(join(line.packageDir, "dist", "index.js"))) as PiSdk;
	const { KeybindingsManager } = (await load(line.keybindingsModule)) as {
		KeybindingsManager: { create(agentDir?: string): { getEffectiveConfig(): Record<string, unknown> } };
	};
	const keybindings = (agentDir: string) => KeybindingsManager.create(agentDir).getEffectiveConfig();
	const oauth = (access: string) => ({
		type: "oauth" as const,
		access,
		refresh: "sk-ant-ort01-unused-by-the-tests",
		expires: Date.now() + 8 * 60 * 60 * 1000,
	});
	if (line.name === "0.73") {
		return {
			pi,
			createServices(options, credentials = {}) {
				const authStorage = pi.AuthStorage.inMemory();
				if (credentials.anthropicOAuthToken) authStorage.set("anthropic", oauth(credentials.anthropicOAuthToken));
				return pi.createAgentSessionServices({ ...options, authStorage });
			},
			findModel: (services, provider, id) => services.modelRegistry.find(provider, id),
			bindMode: {},
			keybindings,
		};
	}
	interface CredentialStore {
		modify(provider: string, update: () => Promise<ReturnType<typeof oauth>>): Promise<unknown>;
	}
	const ai = (await load(join(PI_1X_PREFIX, "node_modules", "@earendil-works", "pi-ai", "dist", "index.js"))) as {
		InMemoryCredentialStore: new () => CredentialStore;
		InMemoryModelsStore: new () => unknown;
	};
	const { ModelRuntime } = pi as unknown as { ModelRuntime: { create(options: object): Promise<unknown> } };
	type WithRuntime = { modelRuntime: { getModel(provider: string, id: string): Model<Api> | undefined } };
	return {
		pi,
		async createServices(options, piCredentials = {}) {
			// PI_OFFLINE (createTestEnv) keeps ModelRuntime from asking pi.dev for a newer model catalog.
			const credentials = new ai.InMemoryCredentialStore();
			const token = piCredentials.anthropicOAuthToken;
			if (token) await credentials.modify("anthropic", async () => oauth(token));
			const modelRuntime = await ModelRuntime.create({
				credentials,
				modelsPath: options.agentDir ? join(options.agentDir, "models.json") : null,
				modelsStore: new ai.InMemoryModelsStore(),
			});
			return pi.createAgentSessionServices({ ...options, modelRuntime } as ServicesOptions);
		},
		findModel: (services, provider, id) => (services as unknown as WithRuntime).modelRuntime.getModel(provider, id),
		bindMode: { mode: "rpc" },
		keybindings,
	};
}

let sdk: Promise<LineSdk> | undefined;

/** This line's SDK (imported once per test process, by file: the 1.x prefix is outside the module graph). */
export function piSdk(): Promise<LineSdk> {
	sdk ??= loadSdk();
	return sdk;
}
