/**
 * `pi --mode rpc -e index.ts` as a child process, driven over its JSONL protocol directly (pi's RpcClient hides the
 * process and cannot answer extension dialogs): the tests need the pid (to read /proc), every byte of stdout and
 * stderr (to search them), and answers to the `input` dialog of /mcc-login.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import { join } from "node:path";
import type { AssistantMessage } from "@mariozechner/pi-ai";
import { waitForExit } from "../../helpers/keyring.ts";
import {
	DEFAULT_MODEL_ID,
	EXTENSION_PATH,
	PI_CLI,
	PROVIDER,
	REPO_ROOT,
	type TestEnv,
} from "../../helpers/pi-harness.ts";

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

export interface PromptOutcome {
	text: string;
	stopReason: string | undefined;
	errorMessage: string | undefined;
}

export interface RpcPiOptions {
	env: TestEnv;
	/** The full environment of the process (default: this process's, which createTestEnv prepared). */
	processEnv?: NodeJS.ProcessEnv;
	/** Wrap the command (e.g. in strace): gets node and its arguments, returns what to spawn. */
	wrap?: (command: string, args: readonly string[]) => [string, string[]];
	timeoutMs?: number;
}

export class RpcPi {
	readonly child: ChildProcess;
	readonly uiRequests: UiRequest[] = [];
	private out = "";
	private err = "";
	private buffer = "";
	private nextId = 0;
	private readonly inputs: InputAnswer[] = [];
	private readonly waiters = new Set<(line: Record<string, unknown>) => void>();
	private exited = false;
	private exitReason = "";

	private constructor(
		child: ChildProcess,
		private readonly timeoutMs: number,
	) {
		this.child = child;
		child.stdout?.setEncoding("utf8").on("data", (chunk: string) => this.onStdout(chunk));
		child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
			this.err += chunk;
		});
		child.on("exit", (code, signal) => {
			this.exited = true;
			this.exitReason = `exited (${signal ?? code})`;
			for (const waiter of [...this.waiters]) waiter({ type: "__exit__" });
		});
		child.stdin?.on("error", () => {});
	}

	/** Starts pi and waits until it answers a first command (the extension is loaded by then). */
	static async start(options: RpcPiOptions): Promise<RpcPi> {
		const { env } = options;
		for (const dir of [env.home, env.agentDir, env.cwd, env.sessionDir])
			await fs.mkdir(dir, { recursive: true, mode: 0o700 });
		// pi's own retry would re-send failed requests; the extension's behaviour is what is under test.
		await fs.writeFile(
			join(env.agentDir, "settings.json"),
			JSON.stringify({ retry: { enabled: false }, compaction: { enabled: false } }),
		);
		const args = [
			PI_CLI,
			"--mode",
			"rpc",
			"--provider",
			PROVIDER,
			"--model",
			DEFAULT_MODEL_ID,
			"-e",
			EXTENSION_PATH,
			"--session-dir",
			env.sessionDir,
			"-ne",
			"-ns",
			"-np",
			"--no-themes",
			"-nc",
		];
		const [command, argv] = options.wrap ? options.wrap(process.execPath, args) : [process.execPath, args];
		const child = spawn(command, argv, {
			cwd: env.cwd,
			env: options.processEnv ?? process.env,
			stdio: ["pipe", "pipe", "pipe"],
		});
		const pi = new RpcPi(child, options.timeoutMs ?? 30_000);
		try {
			await pi.request({ type: "get_state" }, 60_000);
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
		return !this.exited;
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

	/** Runs an extension command; resolves when pi has finished it. */
	async command(line: string, timeoutMs = this.timeoutMs): Promise<void> {
		if (!line.startsWith("/")) throw new Error(`not a command: ${line}`);
		const response = await this.request({ type: "prompt", message: line }, timeoutMs);
		if (response.success !== true) throw new Error(`pi refused ${line}: ${JSON.stringify(response)}`);
	}

	/** Sends a user prompt and waits for the agent to finish; returns the last assistant message. */
	async prompt(text: string, timeoutMs = this.timeoutMs): Promise<PromptOutcome> {
		const ended = this.waitFor((line) => line.type === "agent_end", timeoutMs, `the answer to "${text}"`);
		const response = await this.request({ type: "prompt", message: text }, timeoutMs);
		if (response.success !== true) throw new Error(`pi refused the prompt: ${JSON.stringify(response)}`);
		await ended;
		const messages = await this.request({ type: "get_messages" }, timeoutMs);
		const list = ((messages.data as { messages?: unknown[] } | undefined)?.messages ?? []) as AssistantMessage[];
		const last = [...list].reverse().find((message) => message.role === "assistant");
		const text2 = (last?.content ?? []).map((block) => (block.type === "text" ? block.text : "")).join("");
		return { text: text2, stopReason: last?.stopReason, errorMessage: last?.errorMessage };
	}

	/** SIGTERM, then SIGKILL after 3 s; bounded. */
	async stop(): Promise<void> {
		if (this.exited) return;
		this.child.stdin?.end();
		this.child.kill("SIGTERM");
		if (!(await waitForExit(this.child, 3_000))) {
			this.child.kill("SIGKILL");
			await waitForExit(this.child, 3_000);
		}
	}

	private async request(command: Record<string, unknown>, timeoutMs: number): Promise<Record<string, unknown>> {
		const id = `sec-${++this.nextId}`;
		const answered = this.waitFor(
			(line) => line.type === "response" && line.id === id,
			timeoutMs,
			String(command.type),
		);
		this.send({ ...command, id });
		return answered;
	}

	private send(line: Record<string, unknown>): void {
		this.child.stdin?.write(`${JSON.stringify(line)}\n`);
	}

	private waitFor(
		match: (line: Record<string, unknown>) => boolean,
		timeoutMs: number,
		what: string,
	): Promise<Record<string, unknown>> {
		return new Promise((resolve, reject) => {
			const timer = setTimeout(() => {
				this.waiters.delete(deliver);
				reject(
					new Error(`pi (pid ${this.child.pid}) gave no ${what} within ${timeoutMs} ms. stderr:\n${this.err}`),
				);
			}, timeoutMs);
			const deliver = (line: Record<string, unknown>): void => {
				if (line.type === "__exit__") {
					clearTimeout(timer);
					this.waiters.delete(deliver);
					reject(new Error(`pi (pid ${this.child.pid}) ${this.exitReason} before ${what}. stderr:\n${this.err}`));
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

	private onStdout(chunk: string): void {
		this.out += chunk;
		this.buffer += chunk;
		// RPC framing is LF only (U+2028 inside JSON strings is not a line break).
		for (let end = this.buffer.indexOf("\n"); end >= 0; end = this.buffer.indexOf("\n")) {
			const raw = this.buffer.slice(0, end).replace(/\r$/, "");
			this.buffer = this.buffer.slice(end + 1);
			let line: Record<string, unknown>;
			try {
				line = JSON.parse(raw) as Record<string, unknown>;
			} catch {
				continue;
			}
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

export { REPO_ROOT };
