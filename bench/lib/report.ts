/** results.json's shape, the targets, and RESULTS.md rendered from the results. */
import type { ContentionResult } from "../phases/contention.ts";
import type { FailoverResult } from "../phases/failover.ts";
import type { KeychainResult } from "../phases/keychain.ts";
import type { RequestOverheadResult } from "../phases/request-overhead.ts";
import type { ScalePoint } from "../phases/scale.ts";
import type { StartupResult } from "../phases/startup.ts";
import type { OverheadFigures } from "./paired.ts";
import type { Summary } from "./stats.ts";

export interface Machine {
	cpuModel: string;
	cpuCores: number;
	memoryGiB: number;
	os: string;
	node: string;
	pi: string;
	piAi: string;
	extension: string;
	/** The index.ts that was measured. */
	extensionPath: string;
	keyring: string;
	loadAverageAtStart: number[];
	loadAverageAtEnd: number[];
}

export interface Target {
	key: string;
	value: number | null;
	target: string;
	met: boolean | null;
}

export interface Results {
	generatedAt: string;
	durationSec: number;
	quick: boolean;
	phases: string[];
	machine: Machine;
	requestOverheadMs: number | null;
	requestOverheadP90Ms: number | null;
	requestOverheadRatioAt300ms: number | null;
	failoverOverheadMs: number | null;
	refreshCallsUnderContention: number | null;
	contentionWallMs: Record<string, number> | null;
	startupOverheadMs: number | null;
	keychainGetMs: number | null;
	keychainSetMs: number | null;
	overheadMsAt100Accounts: number | null;
	targets: Target[];
	errors: Record<string, string>;
	details: {
		requestOverhead?: RequestOverheadResult;
		failover?: FailoverResult;
		contention?: ContentionResult[];
		startup?: StartupResult;
		keychain?: KeychainResult;
		scale?: ScalePoint[];
	};
}

export function targets(r: Omit<Results, "targets">): Target[] {
	const atMost = (key: keyof Results, value: number | null, limit: number, unit = " ms"): Target => ({
		key,
		value,
		target: `≤ ${limit}${unit}`,
		met: value === null ? null : value <= limit,
	});
	const rounds = r.details.contention?.flatMap((c) => c.rounds.map((round) => round.tokenRequests)) ?? [];
	return [
		atMost("requestOverheadMs", r.requestOverheadMs, 1.0),
		atMost("requestOverheadP90Ms", r.requestOverheadP90Ms, 3),
		atMost("requestOverheadRatioAt300ms", r.requestOverheadRatioAt300ms, 1.01, ""),
		atMost("failoverOverheadMs", r.failoverOverheadMs, 3),
		{
			key: "refreshCallsUnderContention",
			value: r.refreshCallsUnderContention,
			target: "exactly 1 per round",
			met: rounds.length === 0 ? null : rounds.every((n) => n === 1),
		},
		atMost("startupOverheadMs", r.startupOverheadMs, 20),
	];
}

const fmt = (value: number | null | undefined, digits = 2): string =>
	value === null || value === undefined || !Number.isFinite(value) ? "–" : value.toFixed(digits);

const row = (cells: Array<string | number>): string => `| ${cells.join(" | ")} |`;

function summaryRow(name: string, s: Summary | undefined): string {
	if (!s) return row([name, "–", "–", "–", "–", "–"]);
	return row([name, fmt(s.median), fmt(s.p90), fmt(s.p95), fmt(s.min), String(s.n)]);
}

const SUMMARY_HEAD = [
	row(["", "median ms", "p90 ms", "p95 ms", "min ms", "n"]),
	row(["---", "---:", "---:", "---:", "---:", "---:"]),
];

function comparisonRow(name: string, f: OverheadFigures): string {
	return row([
		name,
		fmt(f.addedMedianMs, 3),
		fmt(f.addedP90Ms, 3),
		fmt(f.addedP95Ms, 3),
		fmt(f.addedBeforeRequestMs, 3),
		fmt(f.addedAfterResponseMs, 3),
		fmt(f.ratio, 4),
	]);
}

function machineSection(r: Results): string[] {
	const m = r.machine;
	const load = m.loadAverageAtEnd.join(" / ");
	return [
		"## Machine",
		"",
		row(["", ""]),
		row(["---", "---"]),
		row(["CPU", `${m.cpuModel}, ${m.cpuCores} cores`]),
		row(["Memory", `${m.memoryGiB.toFixed(1)} GiB`]),
		row(["OS", m.os]),
		row(["Node", m.node]),
		row(["pi (@mariozechner/pi-coding-agent)", `${m.pi} (pi-ai ${m.piAi})`]),
		row(["Extension", `${m.extension} (${m.extensionPath})`]),
		row(["Keychain", m.keyring]),
		row(["Fake servers", "test/helpers/fake-anthropic-api.ts and fake-token-endpoint.ts, on 127.0.0.1"]),
		row(["Load average (1/5/15 min), start → end", `${m.loadAverageAtStart.join(" / ")} → ${load}`]),
		"",
	];
}

function headlineSection(r: Results): string[] {
	const out = ["## Headline figures", "", row(["key", "value", "target", "met"]), row(["---", "---:", "---", "---"])];
	const byKey = new Map(r.targets.map((t) => [t.key, t]));
	const wall = r.contentionWallMs
		? Object.entries(r.contentionWallMs)
				.map(([n, ms]) => `N=${n}: ${fmt(ms, 1)}`)
				.join(", ")
		: "–";
	const keyed: Array<[string, string]> = [
		["requestOverheadMs", fmt(r.requestOverheadMs, 3)],
		["requestOverheadP90Ms", fmt(r.requestOverheadP90Ms, 3)],
		["requestOverheadRatioAt300ms", fmt(r.requestOverheadRatioAt300ms, 4)],
		["failoverOverheadMs", fmt(r.failoverOverheadMs, 3)],
		["refreshCallsUnderContention", String(r.refreshCallsUnderContention ?? "–")],
		["contentionWallMs", wall],
		["startupOverheadMs", fmt(r.startupOverheadMs, 1)],
		["keychainGetMs", fmt(r.keychainGetMs, 3)],
		["keychainSetMs", fmt(r.keychainSetMs, 3)],
		["overheadMsAt100Accounts", fmt(r.overheadMsAt100Accounts, 3)],
	];
	for (const [key, value] of keyed) {
		const target = byKey.get(key);
		const met = target?.met === true ? "yes" : target?.met === false ? "**no**" : "–";
		out.push(row([`\`${key}\``, value, target?.target ?? "(reported)", target ? met : "–"]));
	}
	out.push("");
	for (const [phase, error] of Object.entries(r.errors)) out.push(`**Phase ${phase} failed:** ${error}`, "");
	return out;
}

function requestSection(ro: RequestOverheadResult): string[] {
	return [
		"## 1. Request overhead (prompt → finished reply, real pi SDK)",
		"",
		"Three pi sessions in one process, same model (`claude-sonnet-4-5`), same instant fake server, same " +
			"`sk-ant-oat01-…` token shape, so the same OAuth-shaped request (Bearer; request bodies of " +
			`${ro.payloadBytes.mcc} and ${ro.payloadBytes.anthropic} bytes): ` +
			"**A** pi with the extension, on `multi-claude-code`; **B** plain pi on the built-in `anthropic` provider, " +
			"redirected by `providers.anthropic.baseUrl` in `models.json`; **C** pi with the extension loaded but on " +
			"the built-in `anthropic` provider. Each round runs A, B and C back to back in random order, after " +
			"warm-up; every prompt starts from an empty transcript, after the extension's background writes of the " +
			"previous one have finished (as between a person's prompts). Added = difference of the medians (p90s, " +
			"p95s). A `fetch` wrapper installed first splits it into the time before the HTTP request is sent and " +
			"after the response head arrived.",
		"",
		...SUMMARY_HEAD,
		summaryRow("A: multi-claude-code (extension)", ro.instant.mcc),
		summaryRow("B: anthropic, plain pi", ro.instant.baseline),
		summaryRow("C: anthropic, extension loaded", ro.extensionLoadedVsPlain.mcc),
		summaryRow("A, 300 ms to first token", ro.at300ms.mcc),
		summaryRow("B, 300 ms to first token", ro.at300ms.baseline),
		"",
		row([
			"comparison",
			"added median ms",
			"added p90 ms",
			"added p95 ms",
			"before request",
			"after response",
			"ratio",
		]),
		row(["---", "---:", "---:", "---:", "---:", "---:", "---:"]),
		comparisonRow("**A − B**: the extension, all in (headline)", ro.instant),
		comparisonRow("A − C: its provider path alone", ro.instantVsExtensionLoaded),
		comparisonRow("C − B: pi's cost of having it loaded", ro.extensionLoadedVsPlain),
		comparisonRow("A − B at 300 ms to first token", ro.at300ms),
		"",
		"The extension's per-request steps, each timed alone in the same process (warm caches):",
		"",
		...SUMMARY_HEAD,
		summaryRow("config.read() (unchanged file)", ro.steps.configRead),
		summaryRow("state.read() (unchanged file)", ro.steps.stateRead),
		summaryRow("broker.getAccessToken() (one keychain read)", ro.steps.getAccessToken),
		"",
	];
}

function failoverSection(f: FailoverResult): string[] {
	return [
		"## 2. Failover (429 on the first account, the second one streams)",
		"",
		"Three kinds, interleaved in random order, each after the same preparation (config with the right active " +
			"account; the state file reset, so no cooldown is left): the failover through pi; a direct request to the " +
			"second account through pi; and the 429 round trip alone (pi-ai's `streamSimpleAnthropic` with the first " +
			"account's token and `maxRetries: 0`, as the extension makes its first attempt).",
		"",
		...SUMMARY_HEAD,
		summaryRow("failover (429, then the fallback streams)", f.failover),
		summaryRow("direct request to the second account", f.direct),
		summaryRow("429 round trip alone", f.raw429),
		summaryRow("cooldown write alone (startCooldown)", f.cooldownWrite),
		"",
		"Added by the failover beyond the 429 round trip: median(failover) − median(direct) − median(429) = " +
			`**${fmt(f.overheadMs, 3)} ms**.${f.failures.length > 0 ? ` Failed samples: ${f.failures.length}.` : ""}`,
		"",
	];
}

function contentionSection(results: ContentionResult[]): string[] {
	const out = [
		"## 3. Refresh under contention (separate processes, single-use rotating refresh tokens)",
		"",
		"N processes (each the extension's real `createCore()`, run through jiti) wait at a barrier while the " +
			"account's access token is expired, then all ask the broker for it at once. Token requests per round, and " +
			"the time from the release until the last process has its token (every round checks that all of them hold " +
			"the same new token).",
		"",
		row(["processes", "token requests per round", "wall ms per round", "wall ms (median)", "per-process median ms"]),
		row(["---:", "---", "---", "---:", "---:"]),
	];
	for (const c of results) {
		out.push(
			row([
				c.processes,
				c.rounds.map((x) => x.tokenRequests).join(", "),
				c.rounds.map((x) => fmt(x.wallMs, 1)).join(", "),
				fmt(c.wallMs, 1),
				fmt(c.perProcess.median, 1),
			]),
		);
	}
	out.push("");
	return out;
}

function startupSection(s: StartupResult): string[] {
	const out = [
		"## 4. Start-up (`pi --list-models`, a fresh process each run, alternating)",
		"",
		...SUMMARY_HEAD,
		summaryRow("pi, no extension: wall time", s.plain),
		summaryRow("pi -e index.ts (this extension): wall time", s.extension),
		summaryRow("pi, no extension: CPU time (user + system)", s.cpu.plain),
		summaryRow("pi -e index.ts: CPU time (user + system)", s.cpu.extension),
		"",
		`Added by the extension: **${fmt(s.overheadMs, 1)} ms** median wall time (${fmt(s.cpu.overheadMs, 1)} ms ` +
			"of CPU time).",
		"",
	];
	if (s.loader) {
		out.push(
			"pi's own extension loader (`loadExtensions`, jiti) alone, in fresh processes that have already imported " +
				"pi (both extensions in each process, order alternating):",
			"",
			...SUMMARY_HEAD,
			summaryRow(`index.ts (${s.loader.statSyncCalls.extension} statSync calls)`, s.loader.extension),
			summaryRow(
				`an empty TypeScript extension (${s.loader.statSyncCalls.emptyExtension})`,
				s.loader.emptyExtension,
			),
			"",
		);
	}
	out.push(
		"Imports in a fresh Node process (why the keyring and zod are loaded lazily), and the lazy load itself:",
		"",
		...SUMMARY_HEAD,
		summaryRow('import("@napi-rs/keyring")', s.imports.keyring),
		summaryRow('import("zod")', s.imports.zod),
		summaryRow("both, one after the other", s.imports.keyringPlusZod),
		summaryRow(`the load on first use (jiti: ${s.imports.lazyModule})`, s.imports.lazyLoadViaJiti),
		"",
	);
	return out;
}

function keychainSection(k: KeychainResult): string[] {
	return [
		`## 5. Keychain (${k.backend}, the extension's OsSecretStore, a ${k.secretBytes}-byte item)`,
		"",
		...SUMMARY_HEAD,
		summaryRow("get", k.get),
		summaryRow("set (in place)", k.set),
		summaryRow("first access of a label in a process", k.firstAccess),
		"",
	];
}

function scaleSection(points: ScalePoint[]): string[] {
	const out = [
		"## 6. Scale (accounts configured, every item in the keychain, long fallback chains)",
		"",
		"Request overhead as in 1. (A − B, interleaved), with every account falling back to the next min(N − 1, 64) " +
			"accounts (64 is the config's limit per chain).",
		"",
		row(["accounts", "chain", "config bytes", "added median ms", "added p90 ms", "A median", "config.read", "pairs"]),
		row(["---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"]),
	];
	for (const p of points) {
		out.push(
			row([
				p.accounts,
				p.chainLength,
				p.configBytes,
				fmt(p.overhead.addedMedianMs, 3),
				fmt(p.overhead.addedP90Ms, 3),
				fmt(p.overhead.mcc.median, 3),
				fmt(p.configRead.median, 3),
				p.overhead.mcc.n,
			]),
		);
	}
	out.push("");
	return out;
}

/** Statements read off this run's own figures (no claim here that the run does not measure). */
function findings(r: Results): string[] {
	const d = r.details;
	const lines: string[] = [];
	if (d.requestOverhead) {
		const ro = d.requestOverhead;
		lines.push(
			`Request: of the ${fmt(ro.instant.addedMedianMs, 2)} ms added, ${fmt(ro.instant.addedBeforeRequestMs, 2)} ms ` +
				`fall before the HTTP request leaves and ${fmt(ro.instant.addedAfterResponseMs, 2)} ms after the response ` +
				`head; pi's cost of merely having the extension loaded is ` +
				`${fmt(ro.extensionLoadedVsPlain.addedMedianMs, 2)} ms. ` +
				`One keychain read through the broker takes ${fmt(ro.steps.getAccessToken.median, 2)} ms alone.`,
		);
	}
	if (d.failover) {
		const f = d.failover;
		lines.push(
			`Failover: ${fmt(f.overheadMs, 2)} ms added beyond the 429 round trip; the cooldown write alone ` +
				`(lock, read, validate, write, fsync, rename) takes ${fmt(f.cooldownWrite.median, 2)} ms.`,
		);
	}
	if (d.startup?.loader) {
		const l = d.startup.loader;
		lines.push(
			`Start-up: pi's loader takes ${fmt(l.extension.median, 1)} ms for index.ts and makes ` +
				`${l.statSyncCalls.extension} statSync calls (an empty extension: ${fmt(l.emptyExtension.median, 1)} ms, ` +
				`${l.statSyncCalls.emptyExtension}).` +
				(l.statSyncCalls.extension > 100
					? " Most of those calls are jiti probing candidate files for relative `.js` specifiers that name " +
						"`.ts` files, before it falls back to the `.ts` file."
					: ""),
		);
	}
	if (d.scale) {
		const first = d.scale[0];
		const last = d.scale.at(-1);
		if (first && last) {
			lines.push(
				`Scale: config.read() takes ${fmt(first.configRead.median, 3)} ms with ${first.accounts} account(s) and ` +
					`${fmt(last.configRead.median, 3)} ms with ${last.accounts} (a ${last.configBytes}-byte config); the ` +
					`added request time is ${fmt(first.overhead.addedMedianMs, 2)} and ` +
					`${fmt(last.overhead.addedMedianMs, 2)} ms.`,
			);
		}
	}
	return lines.length > 0 ? ["## Findings (from this run's figures)", "", ...lines.map((l) => `- ${l}`), ""] : [];
}

export function renderMarkdown(r: Results): string {
	const d = r.details;
	const out: string[] = [
		"# Benchmark results: pi-multi-claude-code",
		"",
		`Generated ${r.generatedAt} by \`npm run bench\` in ${r.durationSec.toFixed(0)} s` +
			`${r.quick ? " — **quick run (reduced samples, not for the record)**" : ""}. Everything ran in one ` +
			"process tree against fake servers on 127.0.0.1; `bench/results.json` holds every figure.",
		"",
		...machineSection(r),
		...headlineSection(r),
		...findings(r),
	];
	if (d.requestOverhead) out.push(...requestSection(d.requestOverhead));
	if (d.failover) out.push(...failoverSection(d.failover));
	if (d.contention) out.push(...contentionSection(d.contention));
	if (d.startup) out.push(...startupSection(d.startup));
	if (d.keychain) out.push(...keychainSection(d.keychain));
	if (d.scale) out.push(...scaleSection(d.scale));
	out.push(
		"## Method notes",
		"",
		"- Added times are differences of medians (or percentiles) of interleaved arms, so load shared by the arms " +
			"cancels out; the load average above says how busy the machine was. Figures of record come from a quiet " +
			"machine.",
		"- The extension installs one process-wide `fetch` wrapper (to see status and headers of its own requests). " +
			"Once installed, the built-in arms pass through it too (one AsyncLocalStorage lookup and one async frame, " +
			"about a microsecond), so the request figures leave that cost out.",
		"- Linux: a private throwaway D-Bus session and gnome-keyring (`bench/run-with-keyring.sh`), never yours.",
		"- To profile: `PI_MCC_BENCH_NODE_OPTIONS=--cpu-prof npm run bench -- --quick --only=request`. To measure a " +
			"candidate change without touching src/: `PI_MCC_BENCH_EXTENSION=/path/to/copy/index.ts npm run bench`.",
		"",
	);
	return out.join("\n");
}
