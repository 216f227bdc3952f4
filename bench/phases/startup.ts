/**
 * 4. Start-up: `pi --list-models` (pi's full start: settings, models.json, extensions, model registry; then it
 * prints and exits) with and without this extension, alternating. To explain the difference, in fresh processes:
 * pi's own extension loader (loadExtensions, jiti) timed on index.ts and on an empty TypeScript extension, with
 * the number of statSync calls it makes; what importing @napi-rs/keyring and zod costs (why they are loaded
 * lazily); and what the lazy load of the extension's core costs at the first request (through jiti, as pi loads it).
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";
import { piLine } from "../../test/helpers/pi-line.ts";
import type { BenchContext } from "../lib/context.ts";
import { EXTENSION_PATH, REPO_ROOT } from "../lib/pi.ts";
import { median, round, type Summary, shuffled, summarize } from "../lib/stats.ts";

/** The line's pi (test/helpers/pi-line.ts): its CLI, run on this process's Node (the 1.x half runs on Node 22). */
const LINE = piLine();
export const PI_CLI = LINE.cliPath;
const EMPTY_EXTENSION = join(REPO_ROOT, "bench", "fixtures", "empty-extension.ts");
/**
 * What the extension under test loads on first use: its runtime (src/runtime.ts, createRuntime), or, in versions
 * before it, its runtime loader (src/runtime-loader.ts, loadRuntime).
 */
const EXTENSION_SRC = join(dirname(EXTENSION_PATH), "src");
const LAZY_LOAD = existsSync(join(EXTENSION_SRC, "runtime.ts"))
	? {
			module: join(EXTENSION_SRC, "runtime.ts"),
			call:
				`const settings = await jiti.import(${JSON.stringify(join(EXTENSION_SRC, "settings.ts"))}); ` +
				"module.createRuntime(settings.readSettings(process.env));",
		}
	: { module: join(EXTENSION_SRC, "runtime-loader.ts"), call: "await module.loadRuntime(process.env);" };
export const LAZY_LOAD_NAME = LAZY_LOAD.module.slice(dirname(EXTENSION_PATH).length + 1);
const PI_DIST = join(LINE.packageDir, "dist");
const PI_LOADER = join(PI_DIST, "core", "extensions", "loader.js");
/** The pi-ai an extension gets on this line (pi 1.x hands extensions its compatibility view). */
const PI_AI_FOR_EXTENSIONS =
	LINE.name === "1.x"
		? pathToFileURL(join(PI_DIST, "core", "extensions", "pi-ai-extension-view.js")).href
		: "@mariozechner/pi-ai";
/**
 * pi's CLI gets the environment without JITI_ALIAS (the 1.x half sets it for its own test-code imports): pi's
 * bundled 1.x CLI resolves extension imports through its own virtual modules, which an env alias would override.
 */
function cliEnv(): NodeJS.ProcessEnv {
	const env = { ...process.env };
	delete env.JITI_ALIAS;
	return env;
}

type Arm = "plain" | "empty" | "extension";

export interface LoaderProbe {
	/** pi's loadExtensions([path]) in a fresh process that has already imported pi. */
	extension: Summary;
	emptyExtension: Summary;
	/** median(extension) − median(emptyExtension). */
	extensionOwnMs: number;
	/** fs.statSync calls made while loading (jiti's module resolution), per load. */
	statSyncCalls: { extension: number; emptyExtension: number };
}

export interface StartupResult {
	plain: Summary;
	extension: Summary;
	/** pi -e an empty TypeScript extension: what pi charges for loading any extension (jiti). */
	emptyExtension?: Summary;
	/** median(extension) − median(plain), wall time from spawn to exit. */
	overheadMs: number;
	/** median(extension) − median(emptyExtension): this extension's own part of it. */
	overheadVsEmptyMs?: number;
	/** The same runs' own CPU time (user + system, all threads), a steadier figure on a busy machine. */
	cpu: { plain: Summary; extension: Summary; overheadMs: number };
	/** pi's extension loader alone, this extension versus an empty one (undefined if pi's loader moved). */
	loader?: LoaderProbe;
	/** In a fresh process: import("@napi-rs/keyring"), import("zod"), both; and jiti-importing src/core.ts. */
	imports: { keyring: Summary; zod: Summary; keyringPlusZod: Summary; lazyLoadViaJiti: Summary; lazyModule: string };
}

interface Run {
	ms: number;
	code: number | null;
	stdout: string;
	stderr: string;
}

function run(args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env): Promise<Run> {
	return new Promise((resolve, reject) => {
		const started = performance.now();
		const child = spawn(process.execPath, args, { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
		let stdout = "";
		let stderr = "";
		child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
			stdout += chunk;
		});
		child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
			stderr += chunk;
		});
		const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
		let ms = Number.NaN;
		child.on("error", reject);
		// Timed at the process's exit; resolved once its output is complete.
		child.on("exit", () => {
			ms = performance.now() - started;
		});
		child.on("close", (code) => {
			clearTimeout(timer);
			resolve({ ms, code, stdout, stderr });
		});
	});
}

/** Prints the process's own CPU time (user + system) at exit: steadier than wall time on a busy machine. */
const CPU_MARK = "__PI_MCC_BENCH_CPU_MS__";
const CPU_HOOK = `data:text/javascript,${encodeURIComponent(
	`process.on("exit", () => { const u = process.cpuUsage(); ` +
		`process.stderr.write("\\n${CPU_MARK} " + (u.user + u.system) / 1000 + "\\n"); });`,
)}`;

const ARGS: Record<Arm, string[]> = {
	plain: ["--import", CPU_HOOK, PI_CLI, "--list-models"],
	empty: ["--import", CPU_HOOK, PI_CLI, "-e", EMPTY_EXTENSION, "--list-models"],
	extension: ["--import", CPU_HOOK, PI_CLI, "-e", EXTENSION_PATH, "--list-models"],
};

function cpuMs(stderr: string): number {
	const match = new RegExp(`${CPU_MARK} ([0-9.]+)`).exec(stderr);
	return match ? Number(match[1]) : Number.NaN;
}

/** Loads both extensions with pi's own loader, in the order given, timing each and counting statSync calls. */
function loaderProbe(paths: string[]): string {
	return [
		'import fs from "node:fs";',
		`await import(${JSON.stringify(pathToFileURL(join(PI_DIST, "index.js")).href)});`,
		`const loader = await import(${JSON.stringify(pathToFileURL(PI_LOADER).href)});`,
		"const statSync = fs.statSync;",
		"let stats = 0;",
		"fs.statSync = function (...args) { stats++; return statSync.apply(this, args); };",
		"const out = {};",
		`for (const path of ${JSON.stringify(paths)}) {`,
		"	stats = 0;",
		"	const t0 = performance.now();",
		"	const result = await loader.loadExtensions([path], process.cwd());",
		"	const ms = performance.now() - t0;",
		"	if (result.errors.length > 0) throw new Error(JSON.stringify(result.errors));",
		"	out[path] = { ms, stats };",
		"}",
		"process.stdout.write(JSON.stringify(out));",
	].join("\n");
}

const IMPORT_PROBE = [
	"const t0 = performance.now();",
	'await import("@napi-rs/keyring");',
	"const t1 = performance.now();",
	'await import("zod");',
	"const t2 = performance.now();",
	"process.stdout.write(JSON.stringify({ keyring: t1 - t0, zod: t2 - t1 }));",
].join("\n");

const ZOD_FIRST_PROBE = [
	"const t0 = performance.now();",
	'await import("zod");',
	"const t1 = performance.now();",
	"process.stdout.write(JSON.stringify({ zod: t1 - t0 }));",
].join("\n");

const CORE_PROBE = [
	'import { createJiti } from "jiti";',
	// pi has pi-ai loaded already when the extension first needs its runtime.
	`await import(${JSON.stringify(PI_AI_FOR_EXTENSIONS)});`,
	"const jiti = createJiti(import.meta.url, { moduleCache: false });",
	"const t0 = performance.now();",
	`const module = await jiti.import(${JSON.stringify(LAZY_LOAD.module)});`,
	LAZY_LOAD.call,
	"process.stdout.write(JSON.stringify({ core: performance.now() - t0 }));",
].join("\n");

async function probe(code: string, cwd = REPO_ROOT): Promise<Record<string, number>> {
	const result = await run(["--input-type=module", "-e", code], cwd);
	if (result.code !== 0) throw new Error(`import probe failed: ${result.stderr}`);
	return JSON.parse(result.stdout) as Record<string, number>;
}

export async function startup(ctx: BenchContext): Promise<StartupResult> {
	const times: Record<Arm, number[]> = { plain: [], empty: [], extension: [] };
	const cpu: Record<Arm, number[]> = { plain: [], empty: [], extension: [] };
	const arms = Object.keys(ARGS) as Arm[];
	const warmup = 1;
	const rounds = ctx.budget.n(12, 3);
	for (let i = 0; i < warmup + rounds; i++) {
		for (const arm of shuffled(arms)) {
			const result = await run(ARGS[arm], ctx.env.cwd, cliEnv());
			if (result.code !== 0) throw new Error(`pi --list-models (${arm}) failed: ${result.stderr}`);
			// pi prints the model table to stdout or stderr depending on the version: look at both.
			const listed = `${result.stdout}\n${result.stderr}`.includes("multi-claude-code");
			if (listed !== (arm === "extension")) {
				const output = `${result.stdout} ${result.stderr}`.slice(0, 600);
				throw new Error(`pi --list-models (${arm}) listed the wrong models: ${output}`);
			}
			if (i >= warmup) {
				times[arm].push(result.ms);
				cpu[arm].push(cpuMs(result.stderr));
			}
		}
	}
	const overheadMs = round(median(times.extension) - median(times.plain));
	const overheadVsEmptyMs = round(median(times.extension) - median(times.empty));
	const cpuOverheadMs = round(median(cpu.extension) - median(cpu.plain));
	ctx.log(
		`pi --list-models: plain ${round(median(times.plain))} ms, with an empty extension ` +
			`${round(median(times.empty))} ms, with this one ${round(median(times.extension))} ms ` +
			`→ added ${overheadMs} ms (${overheadVsEmptyMs} ms over the empty one; n=${rounds} each); CPU time added ` +
			`${cpuOverheadMs} ms`,
	);

	let loader: LoaderProbe | undefined;
	if (existsSync(PI_LOADER)) {
		const own: number[] = [];
		const empty: number[] = [];
		const stats = { extension: 0, emptyExtension: 0 };
		// Extra figures: fewer runs (never fewer than 2) when the run is late.
		for (let i = 0; i < ctx.budget.n(6, 2) && (i < 2 || ctx.timeLeftMs() > 25_000); i++) {
			// Both in one process, the order alternating: whichever loads first also pays jiti's first use.
			const order = i % 2 === 0 ? [EXTENSION_PATH, EMPTY_EXTENSION] : [EMPTY_EXTENSION, EXTENSION_PATH];
			const result = (await probe(loaderProbe(order))) as unknown as Record<string, { ms: number; stats: number }>;
			const ext = result[EXTENSION_PATH] as { ms: number; stats: number };
			const emp = result[EMPTY_EXTENSION] as { ms: number; stats: number };
			own.push(ext.ms);
			empty.push(emp.ms);
			stats.extension = ext.stats;
			stats.emptyExtension = emp.stats;
		}
		loader = {
			extension: summarize(own),
			emptyExtension: summarize(empty),
			extensionOwnMs: round(median(own) - median(empty)),
			statSyncCalls: stats,
		};
		ctx.log(
			`pi's extension loader alone: index.ts ${loader.extension.median} ms (${stats.extension} statSync calls), ` +
				`an empty extension ${loader.emptyExtension.median} ms (${stats.emptyExtension})`,
		);
	}

	const keyring: number[] = [];
	const both: number[] = [];
	const zodFirst: number[] = [];
	const core: number[] = [];
	for (let i = 0; i < ctx.budget.n(6, 3) && (i < 3 || ctx.timeLeftMs() > 15_000); i++) {
		const imports = await probe(IMPORT_PROBE);
		keyring.push(imports.keyring as number);
		both.push((imports.keyring as number) + (imports.zod as number));
		zodFirst.push((await probe(ZOD_FIRST_PROBE)).zod as number);
		core.push((await probe(CORE_PROBE)).core as number);
	}
	const result: StartupResult = {
		plain: summarize(times.plain),
		extension: summarize(times.extension),
		emptyExtension: summarize(times.empty),
		overheadMs,
		overheadVsEmptyMs,
		cpu: { plain: summarize(cpu.plain), extension: summarize(cpu.extension), overheadMs: cpuOverheadMs },
		loader,
		imports: {
			keyring: summarize(keyring),
			zod: summarize(zodFirst),
			keyringPlusZod: summarize(both),
			lazyLoadViaJiti: summarize(core),
			lazyModule: LAZY_LOAD_NAME,
		},
	};
	ctx.log(
		`fresh-process imports (median): @napi-rs/keyring ${result.imports.keyring.median} ms, zod ` +
			`${result.imports.zod.median} ms, both ${result.imports.keyringPlusZod.median} ms; the load on first use ` +
			`via jiti ${result.imports.lazyLoadViaJiti.median} ms (${LAZY_LOAD_NAME})`,
	);
	return result;
}
