/**
 * pi-mcc-migrate as the tests run it: the compiled bin as a child process (built once per `npm test` run, shared by
 * every test file), or the same command in-process.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import type { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import lockfile from "proper-lockfile";
import { runMigrationCli } from "../../src/migration/cli.ts";
import { Output, PAUSE_ENV, PAUSE_MARKER } from "../../src/migration/support.ts";
import { type CommandResult, commandResult } from "./keyring.ts";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/**
 * Compiles the bin once with the package's own tsconfig.build.json, as `npm run build` does, never into dist/ (a
 * concurrent build could hand a child half a file): inside `npm test`'s private keyring (test/run-tests.ts) into
 * its scratch directory (deleted at exit), under a lock so parallel test files share one build; elsewhere into a
 * temp directory of this file's own. Around it, what an installed package has: "type": "module" and its dependencies. Bounded: a hung
 * compiler fails the suite instead of hanging it.
 */
async function build(): Promise<{ script: string; remove: () => Promise<void> }> {
	const scratch = process.env.PI_MCC_TEST_KEYRING_DIR;
	const root = scratch ?? (await fs.mkdtemp(join(tmpdir(), "pi-mcc-migrate-build-")));
	const remove = async (): Promise<void> => {
		if (!scratch) await fs.rm(root, { recursive: true, force: true });
	};
	const outDir = join(root, "migrate-build");
	const script = join(outDir, "scripts", "migrate.js");
	const retries = { retries: 600, minTimeout: 100, maxTimeout: 200 };
	const release = await lockfile.lock(root, { lockfilePath: `${outDir}.lock`, stale: 120_000, retries });
	try {
		if (await fs.stat(join(outDir, ".complete")).catch(() => undefined)) return { script, remove };
		await fs.rm(outDir, { recursive: true, force: true });
		await fs.mkdir(outDir, { recursive: true });
		await fs.writeFile(join(outDir, "package.json"), '{ "type": "module" }\n');
		await fs.symlink(join(ROOT, "node_modules"), join(outDir, "node_modules"), "dir");
		const tsc = join(ROOT, "node_modules", "typescript", "bin", "tsc");
		await new Promise<void>((resolve, reject) => {
			const args = [tsc, "-p", "tsconfig.build.json", "--outDir", outDir];
			execFile(process.execPath, args, { cwd: ROOT, timeout: 120_000 }, (error, out) => {
				if (error) reject(new Error(`building the migration failed: ${error.message}\n${out}`));
				else resolve();
			});
		});
		await fs.writeFile(join(outDir, ".complete"), "");
		return { script, remove };
	} finally {
		await release();
	}
}

let built: ReturnType<typeof build> | undefined;

/** The path of the compiled bin (built on first call). */
export async function migrateScript(): Promise<string> {
	built ??= build();
	return (await built).script;
}

/** Removes a per-file build (the shared one goes with the test keyring's scratch directory). */
export async function removeMigrateBuild(): Promise<void> {
	await (await built)?.remove();
}

/** A runner of the bin with the given base environment, without the pause hook. */
export async function migrateRunner(env: NodeJS.ProcessEnv): Promise<Migrate> {
	const base: Record<string, string> = {};
	for (const [key, value] of Object.entries(env)) if (value !== undefined && key !== PAUSE_ENV) base[key] = value;
	return new Migrate(await migrateScript(), base);
}

export type RunResult = CommandResult;

/** The command in this process (the same code as the bin but its process.exit), its output captured. */
export async function runInProcess(args: readonly string[], env: NodeJS.ProcessEnv): Promise<RunResult> {
	const result: RunResult = { code: null, signal: null, stdout: "", stderr: "" };
	const out = new Output(
		(text) => {
			result.stdout += text;
		},
		(text) => {
			result.stderr += text;
		},
	);
	result.code = await runMigrationCli(args, env, out);
	return result;
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
	run(args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
		return this.start(args, options).result;
	}

	/** Starts the bin with a pause step and resolves once it announces that it is waiting there. */
	async startPaused(args: readonly string[], step: string, options: RunOptions = {}): Promise<PausedRun> {
		const run = this.start(args, { ...options, env: { ...options.env, [PAUSE_ENV]: step } }, false);
		await run.printed(`${PAUSE_MARKER} ${step}\n`, "stderr");
		return run;
	}

	/** Starts the bin without waiting for anything (for kills at random moments). */
	start(args: readonly string[], options: RunOptions = {}, endInput = true): PausedRun {
		const env: Record<string, string> = { ...this.baseEnv };
		for (const [key, value] of Object.entries(options.env ?? {})) {
			if (value === undefined) delete env[key];
			else env[key] = value;
		}
		const node = [process.execPath, this.script, ...args];
		// `exec "$@"` keeps the arguments away from the shell's parser.
		const [command, ...rest] =
			options.fileSizeLimitBlocks === undefined
				? node
				: ["bash", "-c", `ulimit -f ${options.fileSizeLimitBlocks} && exec "$@"`, "bash", ...node];
		const child = spawn(command!, rest, { env, stdio: ["pipe", "pipe", "pipe"] });
		if (endInput) child.stdin?.end();
		return new PausedRun(child, finished(child, options.timeoutMs ?? 20_000));
	}
}

export class PausedRun {
	constructor(
		private readonly child: ChildProcess,
		readonly result: Promise<RunResult>,
	) {}

	/** Resolves once the run has printed `text` (bounded), e.g. its plan, printed under the lock. */
	printed(text: string, stream: "stdout" | "stderr" = "stdout", timeoutMs = 15_000): Promise<void> {
		const source = this.child[stream] as Readable;
		return new Promise((resolve, reject) => {
			let seen = "";
			const stop = (error?: Error): void => {
				clearTimeout(timer);
				source.off("data", onData);
				if (error) reject(error);
				else resolve();
			};
			const timer = setTimeout(
				() => stop(new Error(`"${text}" not printed within ${timeoutMs} ms:\n${seen}`)),
				timeoutMs,
			);
			const onData = (chunk: string): void => {
				seen += chunk;
				if (seen.includes(text)) stop();
			};
			source.on("data", onData);
			void this.result.then((done) =>
				stop(new Error(`exited (${done.code ?? done.signal}) before printing "${text}":\n${done.stderr}`)),
			);
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

async function finished(child: ChildProcess, timeoutMs: number): Promise<RunResult> {
	const { timedOut, ...result } = await commandResult(child, timeoutMs);
	if (timedOut)
		throw new Error(`pi-mcc-migrate did not finish within ${timeoutMs} ms:\n${result.stdout}\n${result.stderr}`);
	return result;
}
