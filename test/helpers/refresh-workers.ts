/**
 * Child processes running test/fixtures/refresh-worker.ts through jiti (as pi loads the extension), for the
 * contention tests and the contention benchmark: start one, collect its JSON lines, wait for the next one.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { REPO_ROOT } from "./pi-line.ts";

const WORKER = join(REPO_ROOT, "test", "fixtures", "refresh-worker.ts");
const WORKER_BOOT = `import { createJiti } from "jiti"; await createJiti(import.meta.url).import(${JSON.stringify(WORKER)});`;

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

export interface RefreshWorker {
	child: ChildProcess;
	/** The JSON lines it printed so far. */
	lines: RefreshWorkerLine[];
	/** Everything it printed, stdout and stderr, for failure messages and leak scans. */
	output: string;
	/** Called with every parsed line as it arrives, with performance.now() at its arrival. */
	onLine?: (line: RefreshWorkerLine, at: number) => void;
}

/** Starts a worker on the current Node with `env` (PI_MCC_WORKER_LABEL, the keychain service, the token URL…). */
export function startRefreshWorker(env: NodeJS.ProcessEnv): RefreshWorker {
	const child = spawn(process.execPath, ["--input-type=module", "-e", WORKER_BOOT], {
		cwd: REPO_ROOT,
		env,
		stdio: ["pipe", "pipe", "pipe"],
	});
	const worker: RefreshWorker = { child, lines: [], output: "" };
	createInterface({ input: child.stdout! }).on("line", (text) => {
		const at = performance.now();
		worker.output += `${text}\n`;
		try {
			const line = JSON.parse(text) as RefreshWorkerLine;
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

/** The worker's line number `index` (0: its first), waiting for it at most `withinMs`. */
export async function lineAfter(worker: RefreshWorker, index: number, withinMs: number): Promise<RefreshWorkerLine> {
	const deadline = Date.now() + withinMs;
	while (worker.lines.length <= index) {
		if (Date.now() > deadline) throw new Error(`worker ${worker.child.pid} gave no answer: ${worker.output}`);
		await new Promise((resolve) => setTimeout(resolve, 5));
	}
	return worker.lines[index] as RefreshWorkerLine;
}
