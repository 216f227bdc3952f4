/**
 * Child processes that run a TypeScript file of this repository through jiti (as pi loads the extension) and
 * answer in JSON lines: the refresh worker of the contention test and bench (test/fixtures/refresh-worker.ts,
 * started here) and the security tests' worker (test/security/helpers/workers.ts) share this one runner.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { errorText } from "../../src/text.ts";
import { waitFor } from "./keyring.ts";
import { REPO_ROOT } from "./pi-line.ts";

export interface WorkerProcess<Line> {
	child: ChildProcess;
	/** The JSON lines it printed so far. */
	lines: Line[];
	/** Everything it printed, stdout and stderr, for failure messages and leak scans. */
	output: string;
	/** Called with every parsed line as it arrives, with performance.now() at its arrival. */
	onLine?: (line: Line, at: number) => void;
}

/** Starts `file` on the current Node with `env`; `wrap` may put it under another command (strace). */
export function startWorkerProcess<Line>(
	file: string,
	env: NodeJS.ProcessEnv,
	wrap?: (command: string, args: readonly string[]) => [string, string[]],
): WorkerProcess<Line> {
	const boot = `import { createJiti } from "jiti"; await createJiti(import.meta.url).import(${JSON.stringify(file)});`;
	const args = ["--input-type=module", "-e", boot];
	const [command, argv] = wrap ? wrap(process.execPath, args) : [process.execPath, args];
	const child = spawn(command, argv, { cwd: REPO_ROOT, env, stdio: ["pipe", "pipe", "pipe"] });
	const worker: WorkerProcess<Line> = { child, lines: [], output: "" };
	createInterface({ input: child.stdout! }).on("line", (text) => {
		const at = performance.now();
		worker.output += `${text}\n`;
		try {
			const line = JSON.parse(text) as Line;
			worker.lines.push(line);
			worker.onLine?.(line, at);
		} catch {
			// kept in output for the failure message
		}
	});
	child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
		worker.output += chunk;
	});
	// A worker that already exited must not turn a late write into an unhandled error.
	child.stdin!.on("error", () => {});
	return worker;
}

/** One line a refresh worker printed (see test/fixtures/refresh-worker.ts). */
export interface RefreshWorkerLine {
	pid: number;
	warm?: boolean;
	ready?: boolean;
	status?: string;
	round?: string;
	sha256?: string;
	error?: { name: string; kind?: string; message: string };
	fatal?: string;
	startedAt?: number;
	endedAt?: number;
	ms?: number;
}

export type RefreshWorker = WorkerProcess<RefreshWorkerLine>;

/** A refresh worker with `env` (PI_MCC_WORKER_LABEL, the keychain service, the token URL…). */
export function startRefreshWorker(env: NodeJS.ProcessEnv): RefreshWorker {
	return startWorkerProcess(join(REPO_ROOT, "test", "fixtures", "refresh-worker.ts"), env);
}

/** The worker's line number `index` (0: its first), waiting for it at most `withinMs`. */
export function lineAfter(worker: RefreshWorker, index: number, withinMs: number): Promise<RefreshWorkerLine> {
	return waitFor(() => worker.lines[index], `line ${index} of worker ${worker.child.pid}`, withinMs, 5).catch(
		(error: unknown) => {
			throw new Error(`${errorText(error)}: ${worker.output}`);
		},
	);
}
