/**
 * `npm run bench` (through bench/run-with-keyring.sh): proves the token broker and the fallback are nearly free.
 * Runs every measurement in this one process tree against fake servers on 127.0.0.1 and writes
 * bench/results.json and bench/RESULTS.md. Options: --quick (reduced samples, for development; writes
 * bench/results.quick.json and bench/RESULTS.quick.md instead), --only=<phase,…> (request, failover, keychain,
 * scale, contention, startup; implies the quick file names too unless combined with --record), --render (writes
 * RESULTS.md again from results.json).
 */
import { promises as fs, readFileSync } from "node:fs";
import { cpus, loadavg, type as osType, release, totalmem } from "node:os";
import { join } from "node:path";
import { startFakeAnthropicApi } from "../test/helpers/fake-anthropic-api.ts";
import { newAccessToken, startFakeTokenEndpoint } from "../test/helpers/fake-token-endpoint.ts";
import { type BenchContext, budget } from "./lib/context.ts";
import { createBenchEnv } from "./lib/env.ts";
import { installFetchTiming } from "./lib/fetch-timing.ts";
import { createBenchSession, EXTENSION_PATH, REPO_ROOT, writeModelsJson } from "./lib/pi.ts";
import { type Machine, type Results, renderMarkdown, targets } from "./lib/report.ts";
import { round } from "./lib/stats.ts";
import { contention } from "./phases/contention.ts";
import { failover } from "./phases/failover.ts";
import { keychain } from "./phases/keychain.ts";
import { requestOverhead, storeBenchAccount } from "./phases/request-overhead.ts";
import { scale } from "./phases/scale.ts";
import { startup } from "./phases/startup.ts";

const PHASES = ["request", "failover", "keychain", "scale", "contention", "startup"] as const;
/** Optional extra samples stop being taken after this (the whole run must finish within 5 minutes). */
const DEADLINE_MS = 240_000;
type Phase = (typeof PHASES)[number];

function parseArgs(argv: string[]): { quick: boolean; only: Phase[]; record: boolean } {
	let quick = false;
	let record = false;
	let only: Phase[] = [...PHASES];
	for (const arg of argv) {
		if (arg === "--quick") quick = true;
		else if (arg === "--record") record = true;
		else if (arg.startsWith("--only=")) {
			const names = arg.slice("--only=".length).split(",").filter(Boolean);
			for (const name of names) {
				if (!(PHASES as readonly string[]).includes(name)) {
					throw new Error(`unknown phase "${name}" (${PHASES.join(", ")})`);
				}
			}
			only = PHASES.filter((phase) => names.includes(phase));
		} else throw new Error(`unknown argument "${arg}" (--quick, --only=${PHASES.join(",")}, --record)`);
	}
	return { quick, only, record: record || (!quick && only.length === PHASES.length) };
}

function packageVersion(name: string): string {
	const file = join(REPO_ROOT, "node_modules", ...name.split("/"), "package.json");
	return (JSON.parse(readFileSync(file, "utf8")) as { version: string }).version;
}

function machine(loadAtStart: number[]): Machine {
	const cpuList = cpus();
	const own = JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as { name: string; version: string };
	return {
		cpuModel: cpuList[0]?.model.trim() ?? "unknown",
		cpuCores: cpuList.length,
		memoryGiB: round(totalmem() / 1024 ** 3, 1),
		os: `${osType()} ${release()} (${process.platform}/${process.arch})`,
		node: process.version,
		pi: packageVersion("@mariozechner/pi-coding-agent"),
		piAi: packageVersion("@mariozechner/pi-ai"),
		extension: `${own.name} ${own.version}`,
		extensionPath: EXTENSION_PATH,
		keyring: process.env.PI_MCC_BENCH_KEYRING ?? "OS keychain (not started through bench/run-with-keyring.sh)",
		loadAverageAtStart: loadAtStart,
		loadAverageAtEnd: loadavg().map((x) => round(x, 2)),
	};
}

/** `--render`: writes RESULTS.md again from results.json (after a change to the report's layout). */
async function render(): Promise<number> {
	const results = JSON.parse(await fs.readFile(join(REPO_ROOT, "bench", "results.json"), "utf8")) as Results;
	await fs.writeFile(join(REPO_ROOT, "bench", "RESULTS.md"), renderMarkdown(results));
	return 0;
}

async function main(): Promise<number> {
	if (process.argv.slice(2).join(" ") === "--render") return render();
	const options = parseArgs(process.argv.slice(2));
	if (process.platform === "linux" && process.env.PI_MCC_INSIDE_TEST_KEYRING !== "1") {
		throw new Error(
			"run the benchmark with `npm run bench` (bench/run-with-keyring.sh): it needs its private keyring",
		);
	}
	const startedAt = performance.now();
	const loadAtStart = loadavg().map((x) => round(x, 2));
	const log = (line: string) => process.stdout.write(`${line}\n`);
	log(`pi-multi-claude-code benchmark${options.quick ? " (quick)" : ""}: ${options.only.join(", ")}`);

	const api = await startFakeAnthropicApi();
	const tokenEndpoint = await startFakeTokenEndpoint();
	const env = await createBenchEnv({ anthropicBaseUrl: api.baseUrl, tokenUrl: tokenEndpoint.url });
	await writeModelsJson(env.agentDir, api.baseUrl);
	const anthropicToken = newAccessToken();
	const benchToken = await storeBenchAccount({ env });
	await env.writeConfig([{ label: "bench", fallbackTo: [] }], "bench");
	// The state file the bench writes between samples must be one the extension accepts.
	await env.resetState();
	await env.core.state.read();
	// Before any session exists: the extension's own fetch wrapper then wraps this one, and both arms pass through it.
	installFetchTiming();
	const base = { cwd: env.cwd, agentDir: env.agentDir, anthropicToken };
	const mcc = await createBenchSession({ ...base, withExtension: true, provider: "multi-claude-code" });
	const anthropic = await createBenchSession({ ...base, withExtension: false, provider: "anthropic" });
	const anthropicWithExtension = await createBenchSession({ ...base, withExtension: true, provider: "anthropic" });

	const results: Omit<Results, "targets"> = {
		generatedAt: new Date().toISOString(),
		durationSec: 0,
		quick: options.quick,
		phases: options.only,
		machine: machine(loadAtStart),
		requestOverheadMs: null,
		requestOverheadP90Ms: null,
		requestOverheadRatioAt300ms: null,
		failoverOverheadMs: null,
		refreshCallsUnderContention: null,
		contentionWallMs: null,
		startupOverheadMs: null,
		keychainGetMs: null,
		keychainSetMs: null,
		overheadMsAt100Accounts: null,
		errors: {},
		details: {},
	};
	const d = results.details;
	const runners: Record<Phase, (ctx: BenchContext) => Promise<void>> = {
		async request(ctx) {
			d.requestOverhead = await requestOverhead(ctx);
			results.requestOverheadMs = d.requestOverhead.instant.addedMedianMs;
			results.requestOverheadP90Ms = d.requestOverhead.instant.addedP90Ms;
			results.requestOverheadRatioAt300ms = d.requestOverhead.at300ms.ratio;
		},
		async failover(ctx) {
			d.failover = await failover(ctx);
			results.failoverOverheadMs = d.failover.overheadMs;
		},
		async keychain(ctx) {
			d.keychain = await keychain(ctx);
			results.keychainGetMs = d.keychain.get.median;
			results.keychainSetMs = d.keychain.set.median;
		},
		async scale(ctx) {
			d.scale = await scale(ctx);
			results.overheadMsAt100Accounts = d.scale.find((p) => p.accounts === 100)?.overhead.addedMedianMs ?? null;
		},
		async contention(ctx) {
			d.contention = await contention(ctx);
			results.refreshCallsUnderContention = Math.max(...d.contention.map((c) => c.maxTokenRequests));
			results.contentionWallMs = Object.fromEntries(d.contention.map((c) => [String(c.processes), c.wallMs]));
		},
		async startup(ctx) {
			d.startup = await startup(ctx);
			results.startupOverheadMs = d.startup.overheadMs;
		},
	};

	try {
		for (const phase of options.only) {
			const phaseStarted = performance.now();
			log(`\n[${phase}]`);
			const ctx: BenchContext = {
				env,
				api,
				tokenEndpoint,
				mcc,
				anthropic,
				anthropicWithExtension,
				benchToken,
				anthropicToken,
				budget: budget(options.quick),
				timeLeftMs: () => DEADLINE_MS - (performance.now() - startedAt),
				log: (line) => log(`  ${line}`),
			};
			try {
				await runners[phase](ctx);
			} catch (error) {
				results.errors[phase] = error instanceof Error ? (error.stack ?? error.message) : String(error);
				log(`  FAILED: ${results.errors[phase]}`);
			}
			log(`  (${((performance.now() - phaseStarted) / 1000).toFixed(1)} s)`);
		}
	} finally {
		mcc.dispose();
		anthropic.dispose();
		anthropicWithExtension.dispose();
		await env.cleanup().catch(() => {});
		await api.close().catch(() => {});
		await tokenEndpoint.close().catch(() => {});
	}

	results.durationSec = round((performance.now() - startedAt) / 1000, 1);
	results.machine.loadAverageAtEnd = loadavg().map((x) => round(x, 2));
	const final: Results = { ...results, targets: targets(results) };
	const suffix = options.record ? "" : ".quick";
	const jsonFile = join(REPO_ROOT, "bench", `results${suffix}.json`);
	const mdFile = join(REPO_ROOT, "bench", `RESULTS${suffix}.md`);
	await fs.writeFile(jsonFile, `${JSON.stringify(final, null, "\t")}\n`);
	await fs.writeFile(mdFile, renderMarkdown(final));
	log(`\nTargets:`);
	for (const t of final.targets) {
		const verdict = t.met === null ? "not measured" : t.met ? "met" : "MISSED";
		log(`  ${t.key}: ${t.value ?? "–"} (target ${t.target}) ${verdict}`);
	}
	log(`\nWrote ${jsonFile} and ${mdFile} in ${results.durationSec} s.`);
	return Object.keys(results.errors).length > 0 ? 1 : 0;
}

main().then(
	(code) => process.exit(code),
	(error: unknown) => {
		process.stderr.write(
			`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
		);
		process.exit(1);
	},
);
