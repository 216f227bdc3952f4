/**
 * `pi --mode rpc -e index.ts` as a child process, driven over its JSONL protocol directly, on the line the test
 * process drives (test/helpers/pi-line.ts): its CLI, run by its node. pi's own RpcClient is not used: it spawns
 * `node` from PATH, hides the process, cannot answer extension dialogs, and its 1.x version waits for an event
 * 0.73 never sends. Tests get the pid (to read /proc), every byte of stdout and stderr, answers to `input`
 * dialogs, and the session-replacement commands (new_session, switch_session, fork, clone; reload through the
 * test-only `/test-reload` command of test/fixtures/test-commands.ts).
 *
 * Every pi started here is checked after each test (test/setup-line.ts): a test fails when pi exited non-zero on
 * its own or printed a stale-ctx error or an uncaught exception, even if the test itself did not look.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import { join } from "node:path";
import type { AssistantMessage } from "@mariozechner/pi-ai";
import { waitForExit } from "./keyring.ts";
import type { PromptResult, TestEnv } from "./pi-harness.ts";
import { EXTENSION_PATH, extensionRunArgs, piCommand, piLine, REPO_ROOT } from "./pi-line.ts";

export const TEST_COMMANDS_PATH = join(REPO_ROOT, "test", "fixtures", "test-commands.ts");
/** What pi prints when an extension used a replaced session's ctx, or when a rejection escaped: always a bug. */
export const CRASH_SIGNS = [/This extension ctx is stale/, /uncaughtException/, /Unhandled(Promise)?Rejection/i];

export interface UiRequest {
	id: string;
	method: string;
	title?: string;
	message?: string;
	statusKey?: string;
	statusText?: string;
	notifyType?: string;
	placeholder?: string;
	[field: string]: unknown;
}

export type InputAnswer = (request: UiRequest, pi: RpcPi) => string | undefined;
export type RpcLine = Record<string, unknown>;
export type PromptOutcome = Omit<PromptResult, "message">;

export interface RpcPiOptions {
	env: TestEnv;
	/** The full environment of the process (default: this process's, which createTestEnv prepared). */
	processEnv?: NodeJS.ProcessEnv;
	/** Wrap the command (e.g. in strace): gets node and its arguments, returns what to spawn. */
	wrap?: (command: string, args: readonly string[]) => [string, string[]];
	/** Also load the test-only commands `/test-reload` (for `reload()`) and `/test-crash`. */
	testCommands?: boolean;
	/** The directory pi runs in (default env.cwd), e.g. a project or a directory below one; created if missing. */
	cwd?: string;
	/** More flags after the harness's own, e.g. `--continue` (both lines must know them: 0.73 exits on others). */
	args?: readonly string[];
	timeoutMs?: number;
}

/** Every RpcPi started in this test process and not yet checked (test/setup-line.ts checks them after each test). */
const started = new Set<RpcPi>();

export class RpcPi {
	readonly child: ChildProcess;
	readonly uiRequests: UiRequest[] = [];
	/** Every JSON line pi printed, in order (events, responses, UI requests). */
	readonly lines: RpcLine[] = [];
	private out = "";
	private err = "";
	private buffer = "";
	private nextId = 0;
	private readonly inputs: InputAnswer[] = [];
	private readonly waiters = new Set<(line: RpcLine) => void>();
	private exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
	private stopping = false;

	private constructor(
		child: ChildProcess,
		private readonly timeoutMs: number,
		private readonly testCommands: boolean,
	) {
		this.child = child;
		child.stdout?.setEncoding("utf8").on("data", (chunk: string) => this.onStdout(chunk));
		child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
			this.err += chunk;
		});
		child.on("exit", (code, signal) => {
			this.exit = { code, signal };
			for (const waiter of [...this.waiters]) waiter({ type: "__exit__" });
		});
		child.stdin?.on("error", () => {});
	}

	/** Starts pi and waits until it answers a first command (the extension is loaded by then). */
	static async start(options: RpcPiOptions): Promise<RpcPi> {
		const { env } = options;
		const cwd = options.cwd ?? env.cwd;
		for (const dir of [env.home, env.agentDir, cwd, env.sessionDir])
			await fs.mkdir(dir, { recursive: true, mode: 0o700 });
		// pi's own retry would re-send failed requests; the extension's behaviour is what is under test.
		await fs.writeFile(
			join(env.agentDir, "settings.json"),
			JSON.stringify({ retry: { enabled: false }, compaction: { enabled: false } }),
		);
		const extensions = options.testCommands ? [EXTENSION_PATH, TEST_COMMANDS_PATH] : [EXTENSION_PATH];
		const [node, args] = piCommand([
			"--mode",
			"rpc",
			...extensionRunArgs(extensions, env.sessionDir),
			...(options.args ?? []),
		]);
		const [command, argv] = options.wrap ? options.wrap(node, args) : [node, args];
		const child = spawn(command, argv, {
			cwd,
			env: options.processEnv ?? process.env,
			stdio: ["pipe", "pipe", "pipe"],
		});
		const pi = new RpcPi(child, options.timeoutMs ?? 30_000, options.testCommands ?? false);
		started.add(pi);
		try {
			await pi.rpc({ type: "get_state" }, 60_000);
		} catch (error) {
			await pi.stop();
			throw error;
		}
		return pi;
	}

	get pid(): number {
		if (this.child.pid === undefined) throw new Error("pi has no pid");
		return this.child.pid;
	}

	get alive(): boolean {
		return this.exit === undefined;
	}

	/** Everything pi wrote to stdout (every event, every UI request) and stderr. */
	stdout(): string {
		return this.out;
	}

	stderr(): string {
		return this.err;
	}

	notifications(): string[] {
		return this.uiRequests.filter((r) => r.method === "notify").map((r) => String(r.message ?? ""));
	}

	/** Every footer text the extension set, in order. */
	statuses(): string[] {
		return this.uiRequests
			.filter((r) => r.method === "setStatus" && typeof r.statusText === "string")
			.map((r) => String(r.statusText));
	}

	/** Answers the next `input` dialog (a function of the request; `undefined` cancels it). */
	queueInput(answer: InputAnswer): void {
		this.inputs.push(answer);
	}

	/** Runs an extension command; resolves when pi has finished it (both lines answer after the handler). */
	async command(line: string, timeoutMs = this.timeoutMs): Promise<void> {
		if (!line.startsWith("/")) throw new Error(`not a command: ${line}`);
		await this.rpc({ type: "prompt", message: line }, timeoutMs);
	}

	/** Sends a user prompt and waits for the run to end; returns the last assistant message. */
	async prompt(text: string, timeoutMs = this.timeoutMs): Promise<PromptOutcome> {
		const endEvent = piLine().runEndEvent;
		const ended = this.waitFor((line) => line.type === endEvent, timeoutMs, `${endEvent} after "${text}"`);
		// 1.x answers with data.disposition ("started", "queued", "handled"); 0.73 with no data.
		await this.rpc({ type: "prompt", message: text }, timeoutMs);
		await ended;
		const { messages = [] } = (await this.rpc({ type: "get_messages" }, timeoutMs)) as { messages?: unknown[] };
		const last = [...(messages as AssistantMessage[])].reverse().find((message) => message.role === "assistant");
		const answer = (last?.content ?? []).map((block) => (block.type === "text" ? block.text : "")).join("");
		return { text: answer, stopReason: last?.stopReason, errorMessage: last?.errorMessage };
	}

	/** `get_state`: the session file, id, model, message count… */
	async state(): Promise<{ sessionFile?: string; sessionId?: string; messageCount?: number; [key: string]: unknown }> {
		return (await this.rpc({ type: "get_state" })) as { sessionFile?: string };
	}

	/** RPC mode's session replacements: a new session, a saved one, a fork at a user message's entry, a clone. */
	readonly newSession = () => this.replace({ type: "new_session" });
	readonly switchSession = (sessionPath: string) => this.replace({ type: "switch_session", sessionPath });
	readonly fork = (entryId: string) => this.replace({ type: "fork", entryId });
	readonly clone = () => this.replace({ type: "clone" });

	private async replace(command: RpcLine & { type: string }): Promise<{ cancelled: boolean }> {
		return (await this.rpc(command)) as { cancelled: boolean };
	}

	/** Reloads the session through `/test-reload` (start with `testCommands: true`). */
	async reload(): Promise<void> {
		if (!this.testCommands) throw new Error("start this pi with `testCommands: true` to reload it");
		await this.command("/test-reload");
	}

	/**
	 * Sends one RPC command and returns its response's data; throws on `success: false`. 0.73 answers an
	 * unknown command without its id, so such an answer is matched by the command name.
	 */
	async rpc(command: RpcLine & { type: string }, timeoutMs = this.timeoutMs): Promise<unknown> {
		const id = `t-${++this.nextId}`;
		const response = this.waitFor(
			(line) =>
				line.type === "response" &&
				(line.id === id || (line.id === undefined && line.command === command.type && line.success === false)),
			timeoutMs,
			`an answer to ${command.type}`,
		);
		this.send({ ...command, id });
		const answer = await response;
		if (answer.success !== true) throw new Error(`pi refused ${command.type}: ${JSON.stringify(answer)}`);
		return answer.data;
	}

	/** Waits (bounded) for the next line pi prints that matches; rejects if pi exits first. */
	waitFor(match: (line: RpcLine) => boolean, timeoutMs: number, what: string): Promise<RpcLine> {
		return new Promise((resolve, reject) => {
			const timer = setTimeout(() => {
				this.waiters.delete(deliver);
				reject(
					new Error(`pi (pid ${this.child.pid}) gave no ${what} within ${timeoutMs} ms. stderr:\n${this.err}`),
				);
			}, timeoutMs);
			const deliver = (line: RpcLine): void => {
				if (line.type === "__exit__") {
					clearTimeout(timer);
					this.waiters.delete(deliver);
					const how = this.exit?.signal ?? this.exit?.code;
					reject(new Error(`pi (pid ${this.child.pid}) exited (${how}) before ${what}. stderr:\n${this.err}`));
					return;
				}
				if (!match(line)) return;
				clearTimeout(timer);
				this.waiters.delete(deliver);
				resolve(line);
			};
			this.waiters.add(deliver);
		});
	}

	/** SIGTERM, then SIGKILL after 3 s; bounded. */
	async stop(): Promise<void> {
		this.stopping = true;
		if (this.exit) return;
		this.child.stdin?.end();
		this.child.kill("SIGTERM");
		if (!(await waitForExit(this.child, 3_000))) {
			this.child.kill("SIGKILL");
			await waitForExit(this.child, 3_000);
		}
	}

	/** What went wrong with this pi regardless of what the test asserted: a crash sign, or a non-zero exit. */
	problems(): string[] {
		const found = CRASH_SIGNS.filter((sign) => sign.test(this.err)).map((sign) => `stderr matches ${sign}`);
		// A signal is a test's own doing; an exit code other than 0 that nobody asked for is pi giving up.
		if (this.exit && !this.stopping && this.exit.code !== null && this.exit.code !== 0) {
			found.push(`it exited on its own with code ${this.exit.code}`);
		}
		return found;
	}

	private send(line: RpcLine): void {
		this.child.stdin?.write(`${JSON.stringify(line)}\n`);
	}

	private onStdout(chunk: string): void {
		this.out += chunk;
		this.buffer += chunk;
		// RPC framing is LF only (U+2028 inside JSON strings is not a line break).
		for (let end = this.buffer.indexOf("\n"); end >= 0; end = this.buffer.indexOf("\n")) {
			const raw = this.buffer.slice(0, end).replace(/\r$/, "");
			this.buffer = this.buffer.slice(end + 1);
			let line: RpcLine;
			try {
				line = JSON.parse(raw) as RpcLine;
			} catch {
				continue;
			}
			this.lines.push(line);
			if (line.type === "extension_ui_request") this.onUiRequest(line as unknown as UiRequest);
			for (const waiter of [...this.waiters]) waiter(line);
		}
	}

	private onUiRequest(request: UiRequest): void {
		this.uiRequests.push(request);
		if (request.method === "input") {
			const answer = this.inputs.shift();
			const value = answer?.(request, this);
			this.send(
				value === undefined
					? { type: "extension_ui_response", id: request.id, cancelled: true }
					: { type: "extension_ui_response", id: request.id, value },
			);
		} else if (request.method === "select" || request.method === "confirm" || request.method === "editor") {
			this.send({ type: "extension_ui_response", id: request.id, cancelled: true });
		}
	}
}

/**
 * Stops every pi the last test started and throws when any of them showed a problem (test/setup-line.ts runs it
 * after each test, so a crash fails the test that caused it).
 */
export async function checkStartedPis(): Promise<void> {
	const pis = [...started];
	started.clear();
	const report: string[] = [];
	for (const pi of pis) {
		const problems = pi.problems();
		await pi.stop();
		if (problems.length > 0) report.push(`pi (pid ${pi.child.pid}): ${problems.join("; ")}\n${pi.stderr()}`);
	}
	if (report.length > 0) throw new Error(`a pi process of this test went wrong:\n${report.join("\n")}`);
}

/** `pi --mode rpc` in the test's environment: for what must hold across processes, not only across sessions. */
export function startPiProcess(env: TestEnv, options: Omit<RpcPiOptions, "env"> = {}): Promise<RpcPi> {
	return RpcPi.start({ env, ...options });
}

/** The login URL /mcc-login showed last, and its `state`. */
export function lastLoginState(pi: RpcPi): string {
	const url = [...pi.notifications()]
		.reverse()
		.map((text) => /https:\/\/\S+/.exec(text)?.[0])
		.find(Boolean);
	const state = url ? new URL(url).searchParams.get("state") : null;
	if (!state) throw new Error("no login URL with a state was shown");
	return state;
}
