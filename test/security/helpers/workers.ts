/**
 * Child processes running test/security/fixtures/security-worker.ts through jiti (what pi uses to load
 * extensions): each builds the extension's core from its own environment, as a pi process does.
 */
import type { ChildProcess } from "node:child_process";
import { join } from "node:path";
import { REPO_ROOT, waitForExit } from "../../helpers/keyring.ts";
import { startWorkerProcess, type WorkerProcess } from "../../helpers/worker-process.ts";

export const WORKER_FILE = join(REPO_ROOT, "test", "security", "fixtures", "security-worker.ts");

export type WorkerLine = Record<string, unknown> & { pid?: number; id?: unknown };

export class Worker {
	private nextId = 0;

	private constructor(private readonly worker: WorkerProcess<WorkerLine>) {}

	get child(): ChildProcess {
		return this.worker.child;
	}

	get lines(): WorkerLine[] {
		return this.worker.lines;
	}

	/** Everything it printed on stdout and stderr, for failure messages and leak scans. */
	get output(): string {
		return this.worker.output;
	}

	/** Starts a worker; `wrap` may put it under another command (strace). Resolves once it is ready. */
	static async start(
		env: NodeJS.ProcessEnv,
		options: { wrap?: (command: string, args: readonly string[]) => [string, string[]]; readyWithinMs?: number } = {},
	): Promise<Worker> {
		const worker = new Worker(startWorkerProcess<WorkerLine>(WORKER_FILE, env, options.wrap));
		try {
			await worker.waitLine((line) => line.ready === true, options.readyWithinMs ?? 60_000, "ready");
		} catch (error) {
			worker.kill();
			throw error;
		}
		return worker;
	}

	get pid(): number {
		if (this.child.pid === undefined) throw new Error("worker has no pid");
		return this.child.pid;
	}

	get exited(): boolean {
		return this.child.exitCode !== null || this.child.signalCode !== null;
	}

	/** Sends a command; returns its id. */
	send(command: Record<string, unknown>): string {
		const id = `c${++this.nextId}`;
		this.child.stdin?.write(`${JSON.stringify({ ...command, id })}\n`);
		return id;
	}

	/** Sends a command and waits for its one answer. */
	async call(command: Record<string, unknown>, withinMs = 30_000): Promise<WorkerLine> {
		const id = this.send(command);
		return this.waitLine((line) => line.id === id, withinMs, String(command.op));
	}

	/** The first line (already printed or still to come) that matches; bounded. */
	async waitLine(match: (line: WorkerLine) => boolean, withinMs: number, what: string): Promise<WorkerLine> {
		const deadline = Date.now() + withinMs;
		for (;;) {
			const found = this.lines.find(match);
			if (found) return found;
			if (this.exited) throw new Error(`worker ${this.child.pid} exited before ${what}: ${this.output}`);
			if (Date.now() > deadline)
				throw new Error(`worker ${this.child.pid} gave no ${what} in ${withinMs} ms: ${this.output}`);
			await new Promise((resolve) => setTimeout(resolve, 5));
		}
	}

	/** SIGKILL: nothing in the worker gets to clean up. */
	kill(): void {
		if (!this.exited) this.child.kill("SIGKILL");
	}

	/** Waits for the process to be gone (bounded). */
	async gone(withinMs = 10_000): Promise<void> {
		if (!(await waitForExit(this.child, withinMs))) throw new Error(`worker ${this.child.pid} did not exit`);
	}

	async stop(): Promise<void> {
		if (this.exited) return;
		this.child.stdin?.end(`${JSON.stringify({ op: "exit" })}\n`);
		if (!(await waitForExit(this.child, 5_000))) {
			this.child.kill("SIGKILL");
			await waitForExit(this.child, 5_000);
		}
	}
}

/** Loads the worker's modules once, so several workers starting together do not all transpile them at once. */
export async function warmUpWorkers(env: NodeJS.ProcessEnv): Promise<void> {
	const worker = await Worker.start({ ...env, PI_MCC_SEC_PRELOAD_PROVIDER: "1" }, { readyWithinMs: 90_000 });
	await worker.stop();
}
