import { type ChildProcess, execFile, spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { PAUSE_ENV, PAUSE_MARKER } from "../../src/migration/pause.ts";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/**
 * Compiles the bin with the package's own tsconfig.build.json, as `npm run build` does, into a private temp dir
 * (so a concurrent build into dist/ can never hand a child half a file). Returns migrate.js's path there, and a
 * cleanup. Bounded: a hung compiler fails the suite instead of hanging it.
 */
export async function buildMigrate(timeoutMs = 90_000): Promise<{ script: string; remove: () => Promise<void> }> {
	const outDir = await fs.mkdtemp(join(tmpdir(), "pi-mcc-migrate-build-"));
	const remove = (): Promise<void> => fs.rm(outDir, { recursive: true, force: true });
	// What an installed package has around dist/: "type": "module" and its dependencies.
	await fs.writeFile(join(outDir, "package.json"), '{ "type": "module" }\n');
	await fs.symlink(join(ROOT, "node_modules"), join(outDir, "node_modules"), "dir");
	const tsc = join(ROOT, "node_modules", "typescript", "bin", "tsc");
	const args = [tsc, "-p", "tsconfig.build.json", "--outDir", outDir];
	await new Promise<void>((resolve, reject) => {
		execFile(process.execPath, args, { cwd: ROOT, timeout: timeoutMs }, (error, out) => {
			if (error) reject(new Error(`building the migration failed: ${error.message}\n${out}`));
			else resolve();
		});
	}).catch(async (error: unknown) => {
		await remove();
		throw error;
	});
	return { script: join(outDir, "scripts", "migrate.js"), remove };
}

export interface RunResult {
	code: number | null;
	signal: NodeJS.Signals | null;
	stdout: string;
	stderr: string;
}

export interface RunOptions {
	/** Extra environment (e.g. the pause step); `undefined` removes a variable. */
	env?: Record<string, string | undefined>;
	/** RLIMIT_FSIZE in 1 KiB blocks: makes the first larger file write fail with EFBIG (Node ignores SIGXFSZ). */
	fileSizeLimitBlocks?: number;
	timeoutMs?: number;
}

/** Runs the compiled bin as a child process, as a person's shell would. */
export class Migrate {
	constructor(
		private readonly script: string,
		private readonly baseEnv: Record<string, string>,
	) {}

	/** Runs the bin to completion (bounded) and returns its exit status and output. */
	async run(args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
		const child = this.spawn(args, options);
		child.stdin?.end();
		return finished(child, options.timeoutMs ?? 20_000);
	}

	/** Starts the bin with a pause step and resolves once it announces that it is waiting there. */
	async startPaused(args: readonly string[], step: string, options: RunOptions = {}): Promise<PausedRun> {
		const child = this.spawn(args, { ...options, env: { ...options.env, [PAUSE_ENV]: step } });
		const result = finished(child, options.timeoutMs ?? 20_000);
		await new Promise<void>((resolve, reject) => {
			let seen = "";
			const timer = setTimeout(() => reject(new Error(`no pause at "${step}" within 15 s:\n${seen}`)), 15_000);
			child.stderr?.on("data", (chunk: Buffer) => {
				seen += chunk.toString();
				if (seen.includes(`${PAUSE_MARKER} ${step}\n`)) {
					clearTimeout(timer);
					resolve();
				}
			});
			void result.then((done) => {
				clearTimeout(timer);
				reject(new Error(`exited (${done.code ?? done.signal}) before pausing at "${step}":\n${done.stderr}`));
			});
		});
		return new PausedRun(child, result);
	}

	/** Starts the bin without waiting for anything (for kills at random moments). */
	start(args: readonly string[], options: RunOptions = {}): PausedRun {
		const child = this.spawn(args, options);
		child.stdin?.end();
		return new PausedRun(child, finished(child, options.timeoutMs ?? 20_000));
	}

	private spawn(args: readonly string[], options: RunOptions): ChildProcess {
		const env: Record<string, string> = { ...this.baseEnv };
		for (const [key, value] of Object.entries(options.env ?? {})) {
			if (value === undefined) delete env[key];
			else env[key] = value;
		}
		const node = [process.execPath, this.script, ...args];
		if (options.fileSizeLimitBlocks === undefined) {
			return spawn(node[0]!, node.slice(1), { env, stdio: ["pipe", "pipe", "pipe"] });
		}
		// `exec "$@"` keeps the arguments away from the shell's parser.
		const script = `ulimit -f ${options.fileSizeLimitBlocks} && exec "$@"`;
		return spawn("bash", ["-c", script, "bash", ...node], { env, stdio: ["pipe", "pipe", "pipe"] });
	}
}

export class PausedRun {
	constructor(
		private readonly child: ChildProcess,
		readonly result: Promise<RunResult>,
	) {}

	/** Resolves once the run has printed `text` on stdout (bounded), e.g. its plan, printed under the lock. */
	printed(text: string, timeoutMs = 15_000): Promise<void> {
		return new Promise((resolve, reject) => {
			let seen = "";
			const timer = setTimeout(() => reject(new Error(`"${text}" not printed within ${timeoutMs} ms`)), timeoutMs);
			const onData = (chunk: Buffer): void => {
				seen += chunk.toString();
				if (!seen.includes(text)) return;
				clearTimeout(timer);
				this.child.stdout?.off("data", onData);
				resolve();
			};
			this.child.stdout?.on("data", onData);
			void this.result.then(() => {
				clearTimeout(timer);
				reject(new Error(`exited before printing "${text}"`));
			});
		});
	}

	/** Lets a paused run go on past its pause step. */
	resume(): Promise<RunResult> {
		this.child.stdin?.end("go\n");
		return this.result;
	}

	/** SIGKILL: no cleanup of any kind runs in the child. */
	kill(): Promise<RunResult> {
		this.child.kill("SIGKILL");
		return this.result;
	}
}

function finished(child: ChildProcess, timeoutMs: number): Promise<RunResult> {
	let stdout = "";
	let stderr = "";
	child.stdout?.on("data", (chunk: Buffer) => {
		stdout += chunk.toString();
	});
	child.stderr?.on("data", (chunk: Buffer) => {
		stderr += chunk.toString();
	});
	return new Promise((resolve, reject) => {
		const timer = setTimeout(() => {
			child.kill("SIGKILL");
			reject(new Error(`pi-mcc-migrate did not finish within ${timeoutMs} ms:\n${stdout}\n${stderr}`));
		}, timeoutMs);
		child.on("error", (error) => {
			clearTimeout(timer);
			reject(error);
		});
		child.on("close", (code, signal) => {
			clearTimeout(timer);
			resolve({ code, signal, stdout, stderr });
		});
	});
}
