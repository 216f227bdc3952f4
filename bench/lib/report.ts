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

/** One pi line's figures (results.json: the pinned line at the top level, pi 1.x under `pi1x`). */
export interface LineResults {
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

export interface Results extends LineResults {
	/** The same keys, measured on the current pi 1.x line (Node >= 22.19, in a child process). */
	pi1x?: LineResults;
	/** The whole run, both lines (each line's own time is its `durationSec`). */
	totalDurationSec?: number;
}

export function targets(r: Omit<LineResults, "targets">): Target[] {
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

/** The lines of a run, in column order: the pinned one (top level), then pi 1.x (`pi1x`) when it ran. */
function linesOf(r: Results): LineResults[] {
	return r.pi1x ? [r, r.pi1x] : [r];
}

function lineName(line: LineResults): string {
	return `pi ${line.machine.pi}`;
}

/** A table with one column per line: `cell` gives a row's value on a line ("–" when the line lacks it). */
function lineTable(
	lines: LineResults[],
	head: string,
	rows: Array<[string, (line: LineResults) => string | undefined]>,
): string[] {
	return [
		row([head, ...lines.map(lineName)]),
		row(["---", ...lines.map(() => "---:")]),
		...rows.map(([name, cell]) => row([name, ...lines.map((line) => cell(line) ?? "–")])),
		"",
	];
}

/** "median / p90 (n)" of a summary. */
function spread(s: Summary | undefined, digits = 2): string | undefined {
	return s ? `${fmt(s.median, digits)} / ${fmt(s.p90, digits)} (n=${s.n})` : undefined;
}

function machineSection(r: Results): string[] {
	const lines = linesOf(r);
	const m = r.machine;
	const load = (line: LineResults) =>
		`${line.machine.loadAverageAtStart.join(" / ")} → ${line.machine.loadAverageAtEnd.join(" / ")}`;
	return [
		"## Machine",
		"",
		`${m.cpuModel}, ${m.cpuCores} cores, ${fmt(m.memoryGiB, 1)} GiB, ${m.os}. Keychain: ${m.keyring}. Fake ` +
			"servers: test/helpers/fake-anthropic-api.ts and fake-token-endpoint.ts, on 127.0.0.1. Extension: " +
			`${m.extension} (${m.extensionPath}).`,
		"",
		...lineTable(lines, "", [
			["pi-coding-agent (pi-ai)", (line) => `${line.machine.pi} (${line.machine.piAi})`],
			["Node", (line) => line.machine.node],
			["phases run", (line) => line.phases.join(", ") || "none"],
			["duration", (line) => `${fmt(line.durationSec, 0)} s`],
			["load average (1/5/15 min), start → end", load],
		]),
	];
}

function verdict(target: Target | undefined): string {
	if (!target) return "";
	return target.met === true ? " (met)" : target.met === false ? " (**missed**)" : "";
}

function headlineSection(r: Results): string[] {
	const lines = linesOf(r);
	const keyed: Array<[string, (line: LineResults) => string]> = [
		["requestOverheadMs", (l) => fmt(l.requestOverheadMs, 3)],
		["requestOverheadP90Ms", (l) => fmt(l.requestOverheadP90Ms, 3)],
		["requestOverheadRatioAt300ms", (l) => fmt(l.requestOverheadRatioAt300ms, 4)],
		["failoverOverheadMs", (l) => fmt(l.failoverOverheadMs, 3)],
		["refreshCallsUnderContention", (l) => String(l.refreshCallsUnderContention ?? "–")],
		[
			"contentionWallMs",
			(l) =>
				l.contentionWallMs
					? Object.entries(l.contentionWallMs)
							.map(([n, ms]) => `N=${n}: ${fmt(ms, 1)}`)
							.join(", ")
					: "–",
		],
		["startupOverheadMs", (l) => fmt(l.startupOverheadMs, 1)],
		["keychainGetMs", (l) => fmt(l.keychainGetMs, 3)],
		["keychainSetMs", (l) => fmt(l.keychainSetMs, 3)],
		["overheadMsAt100Accounts", (l) => fmt(l.overheadMsAt100Accounts, 3)],
	];
	const out = [
		"## Headline figures",
		"",
		row(["key", "target", ...lines.map(lineName)]),
		row(["---", "---", ...lines.map(() => "---:")]),
	];
	for (const [key, value] of keyed) {
		const target = r.targets.find((t) => t.key === key);
		const cells = lines.map((line) => `${value(line)}${verdict(line.targets.find((t) => t.key === key))}`);
		out.push(row([`\`${key}\``, target?.target ?? "(reported)", ...cells]));
	}
	out.push("");
	for (const line of lines) {
		for (const [phase, error] of Object.entries(line.errors)) {
			out.push(
				`**${lineName(line)}, phase ${phase} failed:** ${error.split("\n")[0]} (the stack is in results.json)`,
				"",
			);
		}
	}
	return out;
}

function requestSection(lines: LineResults[]): string[] {
	const ro = (line: LineResults) => line.details.requestOverhead;
	const bytes = (line: LineResults) => {
		const p = ro(line)?.payloadBytes;
		return p ? `${p.mcc} / ${p.anthropic}` : undefined;
	};
	const added = (pick: (r: RequestOverheadResult) => OverheadFigures, field: keyof OverheadFigures, digits = 3) => {
		return (line: LineResults) => {
			const r = ro(line);
			return r ? fmt(pick(r)[field] as number, digits) : undefined;
		};
	};
	const comparison = (title: string, pick: (r: RequestOverheadResult) => OverheadFigures): string[] => [
		`**${title}**`,
		"",
		...lineTable(lines, "", [
			["added median ms", added(pick, "addedMedianMs")],
			["median of the per-round differences ms", added(pick, "addedPairedMedianMs")],
			["added p90 ms", added(pick, "addedP90Ms")],
			["added p95 ms", added(pick, "addedP95Ms")],
			["of the median: before the request is sent", added(pick, "addedBeforeRequestMs")],
			["of the median: after the response head", added(pick, "addedAfterResponseMs")],
			["ratio of the medians", added(pick, "ratio", 4)],
		]),
	];
	return [
		"## 1. Request overhead (prompt → finished reply, real pi SDK)",
		"",
		"Three pi sessions in one process per line, same model (`claude-sonnet-4-5`), same instant fake server, same " +
			"`sk-ant-oat01-…` token shape, so the same OAuth-shaped request (Bearer): **A** pi with the extension, on " +
			"`multi-claude-code`; **B** plain pi on the built-in `anthropic` provider, redirected by " +
			"`providers.anthropic.baseUrl` in `models.json`; **C** pi with the extension loaded but on the built-in " +
			"`anthropic` provider. Each round runs A, B and C back to back in random order, after warm-up; every " +
			"prompt starts from an empty transcript, after the extension's background writes of the previous one have " +
			"finished (as between a person's prompts). Added = difference of the medians (p90s, p95s). A `fetch` " +
			"wrapper installed first splits it into the time before the HTTP request is sent and after the response " +
			"head arrived. Cells are median / p90 ms (n).",
		"",
		...lineTable(lines, "arm", [
			["A: multi-claude-code (extension)", (l) => spread(ro(l)?.instant.mcc)],
			["B: anthropic, plain pi", (l) => spread(ro(l)?.instant.baseline)],
			["C: anthropic, extension loaded", (l) => spread(ro(l)?.extensionLoadedVsPlain.mcc)],
			["A, 300 ms to first token", (l) => spread(ro(l)?.at300ms.mcc)],
			["B, 300 ms to first token", (l) => spread(ro(l)?.at300ms.baseline)],
			["request body bytes, A / B", bytes],
		]),
		...comparison("A − B: the extension, all in (the headline)", (r) => r.instant),
		...comparison("A − C: its provider path alone", (r) => r.instantVsExtensionLoaded),
		...comparison("C − B: pi's cost of having it loaded", (r) => r.extensionLoadedVsPlain),
		...comparison("A − B at 300 ms to first token", (r) => r.at300ms),
		"The extension's per-request steps, each timed alone in the same process (warm caches), median / p90 ms:",
		"",
		...lineTable(lines, "step", [
			["config.read() (unchanged file)", (l) => spread(ro(l)?.steps.configRead, 3)],
			["state.read() (unchanged file)", (l) => spread(ro(l)?.steps.stateRead, 3)],
			["broker.getAccessToken() (one keychain read)", (l) => spread(ro(l)?.steps.getAccessToken, 3)],
		]),
	];
}

function failoverSection(lines: LineResults[]): string[] {
	const f = (line: LineResults) => line.details.failover;
	return [
		"## 2. Failover (429 on the first account, the second one streams)",
		"",
		"Three kinds, interleaved in random order, each after the same preparation (config with the right active " +
			"account; the state file reset, so no cooldown is left): the failover through pi; a direct request to the " +
			"second account through pi; and the 429 round trip alone (pi-ai's `streamSimpleAnthropic` with the first " +
			"account's token and `maxRetries: 0`, as the extension makes its first attempt). Added by the failover " +
			"beyond the 429 round trip = median(failover) − median(direct) − median(429). Cells are median / p90 ms (n).",
		"",
		...lineTable(lines, "", [
			["failover (429, then the fallback streams)", (l) => spread(f(l)?.failover)],
			["direct request to the second account", (l) => spread(f(l)?.direct)],
			["429 round trip alone", (l) => spread(f(l)?.raw429)],
			["cooldown write alone (startCooldown)", (l) => spread(f(l)?.cooldownWrite, 3)],
			["**added by the failover, ms**", (l) => (f(l) ? `**${fmt(f(l)?.overheadMs, 3)}**` : undefined)],
			["failed samples", (l) => (f(l) ? String(f(l)?.failures.length) : undefined)],
		]),
	];
}

function contentionSection(lines: LineResults[]): string[] {
	const at = (line: LineResults, n: number) => line.details.contention?.find((c) => c.processes === n);
	const sizes = [...new Set(lines.flatMap((l) => l.details.contention?.map((c) => c.processes) ?? []))];
	return [
		"## 3. Refresh under contention (separate processes, single-use rotating refresh tokens)",
		"",
		"N processes (each the extension's real `createCore()`, run through jiti on the line's Node) wait at a barrier " +
			"while the account's access token is expired, then all ask the broker for it at once. Cells: token requests " +
			"per round; the time from the release until the last process has its token (median of the rounds, ms); " +
			"every round checks that all of them hold the same new token.",
		"",
		...lineTable(
			lines,
			"processes",
			sizes.map((n) => [
				String(n),
				(l) => {
					const c = at(l, n);
					return c ? `${c.rounds.map((x) => x.tokenRequests).join(", ")}; ${fmt(c.wallMs, 1)} ms` : undefined;
				},
			]),
		),
	];
}

function startupSection(lines: LineResults[]): string[] {
	const s = (line: LineResults) => line.details.startup;
	return [
		"## 4. Start-up (`pi --list-models`, a fresh process each run, alternating)",
		"",
		"The line's own pi CLI on the line's Node: without an extension, with an empty TypeScript extension (what " +
			"pi charges for loading any extension: pi 1.x loads jiti only then) and with `-e index.ts`, alternating. " +
			"Then, in fresh processes: pi's " +
			"extension loader alone (`loadExtensions`, jiti) on index.ts and on an empty TypeScript extension (both in " +
			"each process, order alternating), imports of the keyring and zod, and the lazy load of the extension's " +
			"runtime on first use. Cells are median / p90 ms (n).",
		"",
		...lineTable(lines, "", [
			["pi, no extension: wall time", (l) => spread(s(l)?.plain, 1)],
			["pi -e an empty TypeScript extension: wall time", (l) => spread(s(l)?.emptyExtension, 1)],
			["pi -e index.ts: wall time", (l) => spread(s(l)?.extension, 1)],
			["pi, no extension: CPU time (user + system)", (l) => spread(s(l)?.cpu.plain, 1)],
			["pi -e index.ts: CPU time", (l) => spread(s(l)?.cpu.extension, 1)],
			["**added by the extension (wall), ms**", (l) => (s(l) ? `**${fmt(s(l)?.overheadMs, 1)}**` : undefined)],
			["of it, over the empty extension (wall), ms", (l) => fmt(s(l)?.overheadVsEmptyMs, 1)],
			["added CPU time, ms", (l) => fmt(s(l)?.cpu.overheadMs, 1)],
			[
				"pi's loader: index.ts (statSync calls)",
				(l) => {
					const loader = s(l)?.loader;
					return loader ? `${spread(loader.extension, 1)} (${loader.statSyncCalls.extension})` : undefined;
				},
			],
			[
				"pi's loader: an empty extension (statSync calls)",
				(l) => {
					const loader = s(l)?.loader;
					return loader
						? `${spread(loader.emptyExtension, 1)} (${loader.statSyncCalls.emptyExtension})`
						: undefined;
				},
			],
			['import("@napi-rs/keyring")', (l) => spread(s(l)?.imports.keyring, 1)],
			['import("zod")', (l) => spread(s(l)?.imports.zod, 1)],
			["both, one after the other", (l) => spread(s(l)?.imports.keyringPlusZod, 1)],
			[
				"the load on first use (jiti)",
				(l) => {
					const imports = s(l)?.imports;
					return imports ? `${spread(imports.lazyLoadViaJiti, 1)}, ${imports.lazyModule}` : undefined;
				},
			],
		]),
	];
}

function keychainSection(lines: LineResults[]): string[] {
	const k = (line: LineResults) => line.details.keychain;
	const first = lines.map(k).find(Boolean);
	return [
		`## 5. Keychain (${first?.backend ?? "–"}, the extension's OsSecretStore, a ${first?.secretBytes ?? "–"}-byte item)`,
		"",
		"The same keychain from each line's Node. Cells are median / p90 ms (n).",
		"",
		...lineTable(lines, "", [
			["get", (l) => spread(k(l)?.get, 3)],
			["set (in place)", (l) => spread(k(l)?.set, 3)],
			["first access of a label in a process", (l) => spread(k(l)?.firstAccess, 3)],
		]),
	];
}

function scaleSection(lines: LineResults[]): string[] {
	const at = (line: LineResults, n: number) => line.details.scale?.find((p) => p.accounts === n);
	const sizes = [...new Set(lines.flatMap((l) => l.details.scale?.map((p) => p.accounts) ?? []))];
	const first = lines.map((l) => l.details.scale).find(Boolean);
	return [
		"## 6. Scale (accounts configured, every item in the keychain, long fallback chains)",
		"",
		"Request overhead as in 1. (A − B, interleaved), with every account falling back to the next min(N − 1, 64) " +
			"accounts (64 is the config's limit per chain). Cells: added median / added p90 ms (pairs); config.read() " +
			"alone, median ms.",
		"",
		...lineTable(
			lines,
			"accounts (chain, config bytes)",
			sizes.map((n) => {
				const point = first?.find((p) => p.accounts === n);
				return [
					`${n} (${point?.chainLength ?? "–"}, ${point?.configBytes ?? "–"})`,
					(l) => {
						const p = at(l, n);
						return p
							? `${fmt(p.overhead.addedMedianMs, 3)} / ${fmt(p.overhead.addedP90Ms, 3)} (${p.overhead.mcc.n}); ` +
									`config.read ${fmt(p.configRead.median, 3)}`
							: undefined;
					},
				];
			}),
		),
	];
}

/** Statements read off one line's own figures (no claim here that the run does not measure). */
function findings(line: LineResults): string[] {
	const d = line.details;
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
				`takes ${fmt(f.cooldownWrite.median, 2)} ms.`,
		);
	}
	if (d.startup?.loader) {
		const l = d.startup.loader;
		lines.push(
			`Start-up: pi's loader takes ${fmt(l.extension.median, 1)} ms for index.ts and makes ` +
				`${l.statSyncCalls.extension} statSync calls (an empty extension: ${fmt(l.emptyExtension.median, 1)} ms, ` +
				`${l.statSyncCalls.emptyExtension}).`,
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
	return lines.length > 0 ? [`**${lineName(line)}**`, "", ...lines.map((l) => `- ${l}`), ""] : [];
}

export function renderMarkdown(r: Results): string {
	const lines = linesOf(r);
	const has = (phase: keyof LineResults["details"]) => lines.some((line) => line.details[phase] !== undefined);
	const findingLines = lines.flatMap(findings);
	const out: string[] = [
		"# Benchmark results: pi-multi-claude-code",
		"",
		`Generated ${r.generatedAt} by \`npm run bench\` in ${(r.totalDurationSec ?? r.durationSec).toFixed(0)} s` +
			`${r.quick ? " — **quick run (reduced samples, not for the record)**" : ""}, on ` +
			`${lines.map(lineName).join(" and ")}. Every phase ran on each line in one process tree (the pi 1.x half in ` +
			"a child process on its own Node) against fake servers on 127.0.0.1; `bench/results.json` holds every " +
			"figure (the pinned line at the top level, pi 1.x under `pi1x`).",
		"",
		...machineSection(r),
		...headlineSection(r),
		...(findingLines.length > 0 ? ["## Findings (from this run's figures)", "", ...findingLines] : []),
	];
	if (has("requestOverhead")) out.push(...requestSection(lines));
	if (has("failover")) out.push(...failoverSection(lines));
	if (has("contention")) out.push(...contentionSection(lines));
	if (has("startup")) out.push(...startupSection(lines));
	if (has("keychain")) out.push(...keychainSection(lines));
	if (has("scale")) out.push(...scaleSection(lines));
	out.push(
		"## Method notes",
		"",
		"- Added times are differences of medians (or percentiles) of interleaved arms, so load shared by the arms " +
			"cancels out; the load average above says how busy the machine was. The two lines run one after the " +
			"other, so they may see different load.",
		"- Linux: a private throwaway D-Bus session and gnome-keyring (`bench/run-with-keyring.sh`), never yours.",
		"- To profile: `PI_MCC_BENCH_NODE_OPTIONS=--cpu-prof npm run bench -- --quick --only=request` (the pi 1.x " +
			"child gets the same options). To measure a candidate change without touching src/: " +
			"`PI_MCC_BENCH_EXTENSION=/path/to/copy/index.ts npm run bench`. One line only: `--line=0.73` or `--line=1.x`.",
		"",
	);
	return out.join("\n");
}
