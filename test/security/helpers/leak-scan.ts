/**
 * Searching for secrets wherever they must never be: files (every file under a tree, and every version of every
 * file that appeared while a run was watched, however briefly), captured output, and the command line and
 * environment of processes. Every token is searched whole and by its distinctive middle part, so a fragment (a
 * truncated error snippet) counts as a leak too. Hits name the token by its index, never by its value.
 */
import { createHash, randomBytes } from "node:crypto";
import { type FSWatcher, promises as fs, type Stats, watch } from "node:fs";
import { join } from "node:path";

export interface Hit {
	/** The file, process field or output the needle was found in. */
	where: string;
	/** Index of the token in the list searched. */
	token: number;
	kind: "whole" | "middle";
}

/** What a scan covered, for the report and for "it really scanned something" assertions. */
export interface ScanReport {
	files: number;
	bytes: number;
	hits: Hit[];
	/** Paths of the files read. */
	scanned: string[];
}

/**
 * The part of a token that identifies it on its own: the middle of its random body (after `sk-ant-xxx01-`),
 * at most 24 characters.
 */
export function middleOf(token: string): string {
	const body = token.replace(/^sk-ant-[a-z]{2,4}\d{0,2}-/i, "");
	const length = Math.min(24, Math.floor(body.length / 2));
	const start = Math.floor((body.length - length) / 2);
	return body.slice(start, start + length);
}

interface Needle {
	token: number;
	kind: Hit["kind"];
	bytes: Buffer;
}

function needlesOf(tokens: readonly string[]): Needle[] {
	const needles: Needle[] = [];
	tokens.forEach((token, index) => {
		if (token.length < 8) throw new Error(`token #${index} is too short to search for`);
		needles.push({ token: index, kind: "whole", bytes: Buffer.from(token) });
		const middle = middleOf(token);
		if (middle.length >= 12) needles.push({ token: index, kind: "middle", bytes: Buffer.from(middle) });
	});
	return needles;
}

/** How many strings a search for these tokens looks for (whole tokens and middle parts). */
export function needleCount(tokens: readonly string[]): number {
	return needlesOf(tokens).length;
}

/** Hits of the tokens in one text or buffer; a token found whole is not reported again by its middle. */
export function scanText(where: string, text: string | Buffer, tokens: readonly string[]): Hit[] {
	const haystack = typeof text === "string" ? Buffer.from(text) : text;
	const hits: Hit[] = [];
	const found = new Set<number>();
	for (const needle of needlesOf(tokens)) {
		if (found.has(needle.token)) continue;
		if (haystack.indexOf(needle.bytes) >= 0) {
			hits.push({ where, token: needle.token, kind: needle.kind });
			found.add(needle.token);
		}
	}
	return hits;
}

/** Describes hits for a failure message without revealing the tokens. */
export function describeHits(hits: readonly Hit[]): string {
	return hits.map((hit) => `token #${hit.token} (${hit.kind}) in ${hit.where}`).join("\n");
}

/**
 * Walks the trees under `roots` (at most 40 deep; symbolic links are never followed): `onDir` for each directory,
 * `onFile` for each regular file with its stat. Directories that vanish meanwhile are passed over.
 */
async function walkTrees(
	roots: readonly string[],
	onFile: (path: string, stat: Stats) => void | Promise<void>,
	onDir: (dir: string) => void = () => {},
): Promise<void> {
	const walk = async (dir: string, depth: number): Promise<void> => {
		if (depth > 40) return;
		onDir(dir);
		const names = await fs.readdir(dir).catch(() => [] as string[]);
		for (const name of names) {
			const path = join(dir, name);
			const stat = await fs.lstat(path).catch(() => undefined);
			if (stat?.isDirectory()) await walk(path, depth + 1);
			else if (stat?.isFile()) await onFile(path, stat);
		}
	};
	for (const root of roots) await walk(root, 0);
}

/** Every regular file under the roots (symbolic links are listed, never followed). */
export async function listFiles(roots: readonly string[]): Promise<string[]> {
	const files: string[] = [];
	await walkTrees(roots, (path) => void files.push(path));
	return files.sort();
}

/** Reads every regular file under the roots and searches each for every token. */
export async function scanTree(roots: readonly string[], tokens: readonly string[]): Promise<ScanReport> {
	const report: ScanReport = { files: 0, bytes: 0, hits: [], scanned: [] };
	for (const file of await listFiles(roots)) {
		const content = await fs.readFile(file).catch(() => undefined);
		if (!content) continue;
		report.files++;
		report.bytes += content.length;
		report.scanned.push(file);
		report.hits.push(...scanText(file, content, tokens));
	}
	return report;
}

/** The command line and environment of a process, as any process of the same user (cmdline: of any user) reads them. */
export async function processSurfaces(pid: number): Promise<{ cmdline: Buffer; environ: Buffer }> {
	const [cmdline, environ] = await Promise.all([
		fs.readFile(`/proc/${pid}/cmdline`),
		fs.readFile(`/proc/${pid}/environ`),
	]);
	return { cmdline, environ };
}

/** The given processes and all their descendants (children, grandchildren, …), from one pass over /proc. */
export async function processTree(roots: readonly number[]): Promise<number[]> {
	const parents = new Map<number, number>();
	for (const name of await fs.readdir("/proc")) {
		if (!/^\d+$/.test(name)) continue;
		const stat = await fs.readFile(`/proc/${name}/stat`, "utf8").catch(() => undefined);
		// The command name may hold spaces and parentheses: the fields start after the last ")".
		const fields = stat?.slice(stat.lastIndexOf(")") + 2).split(" ");
		const ppid = Number(fields?.[1]);
		if (Number.isInteger(ppid)) parents.set(Number(name), ppid);
	}
	const found = [...roots];
	let frontier = [...roots];
	while (frontier.length > 0 && found.length < 1000) {
		const next: number[] = [];
		for (const [child, parent] of parents) if (frontier.includes(parent)) next.push(child);
		found.push(...next);
		frontier = next;
	}
	return found;
}

/** The pids of a process's descendants. */
export async function descendants(pid: number): Promise<number[]> {
	return (await processTree([pid])).slice(1);
}

export interface ProcessCheck {
	/** How many processes were read (the process and its descendants). */
	processes: number;
	hits: Hit[];
}

/** Searches the command line and environment of a process and all its descendants for the tokens. */
export async function scanProcessTree(pid: number, tokens: readonly string[], name: string): Promise<ProcessCheck> {
	const check: ProcessCheck = { processes: 0, hits: [] };
	for (const target of await processTree([pid])) {
		const surfaces = await processSurfaces(target).catch(() => undefined);
		if (!surfaces) continue;
		check.processes++;
		check.hits.push(...scanText(`${name} (pid ${target}) cmdline`, surfaces.cmdline, tokens));
		check.hits.push(...scanText(`${name} (pid ${target}) environ`, surfaces.environ, tokens));
	}
	return check;
}

export interface WatchReport {
	/** Every file path that existed at some point while watching. */
	seen: Set<string>;
	/** Distinct contents read per path (a file seen in several versions has several). */
	versions: Map<string, Buffer[]>;
	bytes: number;
}

const MAX_CAPTURED_BYTES = 256 * 1024 * 1024;

/**
 * Watches directory trees while something runs: one fs.watch per directory (new directories are added as they
 * appear; Node's recursive mode misses short-lived files on Linux) plus a full re-scan every few milliseconds.
 * Every file is read as soon as it is seen or changes, so a temp file that exists for a moment is still caught
 * in most cases; its name is recorded even when it is gone before it can be read.
 */
export class TreeWatcher {
	private readonly watchers = new Map<string, FSWatcher>();
	private readonly seen = new Set<string>();
	private readonly versions = new Map<string, Buffer[]>();
	private readonly hashes = new Map<string, Set<string>>();
	private readonly lastStat = new Map<string, string>();
	private bytes = 0;
	private timer: NodeJS.Timeout | undefined;
	private scanning: Promise<void> | undefined;
	private stopped = false;

	constructor(
		private readonly roots: readonly string[],
		private readonly intervalMs = 10,
	) {}

	async start(): Promise<void> {
		await this.rescan();
		const tick = (): void => {
			if (this.stopped) return;
			this.scanning = this.rescan().finally(() => {
				this.timer = setTimeout(tick, this.intervalMs);
			});
		};
		this.timer = setTimeout(tick, this.intervalMs);
	}

	async stop(): Promise<WatchReport> {
		// One last full pass, then nothing more.
		await this.scanning;
		await this.rescan();
		this.stopped = true;
		clearTimeout(this.timer);
		await this.scanning;
		for (const watcher of this.watchers.values()) watcher.close();
		this.watchers.clear();
		return { seen: new Set(this.seen), versions: new Map(this.versions), bytes: this.bytes };
	}

	private watchDir(dir: string): void {
		if (this.watchers.has(dir) || this.stopped) return;
		try {
			const watcher = watch(dir, { persistent: false }, (_event, name) => {
				if (name) void this.capture(join(dir, name.toString()));
			});
			watcher.on("error", () => {
				watcher.close();
				this.watchers.delete(dir);
			});
			this.watchers.set(dir, watcher);
		} catch {
			// The directory is gone already; the re-scans still cover its parent.
		}
	}

	private async rescan(): Promise<void> {
		await walkTrees(
			this.roots,
			(path, stat) => this.capture(path, `${stat.ino}:${stat.size}:${stat.mtimeMs}`),
			(dir) => this.watchDir(dir),
		);
	}

	private async capture(path: string, statKey?: string): Promise<void> {
		let key = statKey;
		if (key === undefined) {
			const stat = await fs.lstat(path).catch(() => undefined);
			if (!stat) {
				// Gone already: its name at least is known (it held what was renamed over its target).
				this.seen.add(path);
				return;
			}
			if (stat.isDirectory()) {
				this.watchDir(path);
				return;
			}
			if (!stat.isFile()) return;
			key = `${stat.ino}:${stat.size}:${stat.mtimeMs}`;
		}
		this.seen.add(path);
		if (this.lastStat.get(path) === key) return;
		this.lastStat.set(path, key);
		const content = await fs.readFile(path).catch(() => undefined);
		if (!content || this.bytes + content.length > MAX_CAPTURED_BYTES) return;
		const hash = createHash("sha256").update(content).digest("hex");
		let hashes = this.hashes.get(path);
		if (!hashes) {
			hashes = new Set();
			this.hashes.set(path, hashes);
		}
		if (hashes.has(hash)) return;
		hashes.add(hash);
		const list = this.versions.get(path) ?? [];
		list.push(content);
		this.versions.set(path, list);
		this.bytes += content.length;
	}
}

/** Searches every captured version of every watched file (`exempt` skips versions that may hold tokens). */
export function scanWatched(
	report: WatchReport,
	tokens: readonly string[],
	exempt?: (path: string, content: Buffer) => boolean,
): Hit[] {
	const hits: Hit[] = [];
	for (const [path, versions] of report.versions) {
		for (const content of versions) {
			if (exempt?.(path, content)) continue;
			hits.push(...scanText(path, content, tokens));
		}
	}
	return hits;
}

/**
 * A file holding only the middle part of a made-up token, so a scan can prove it finds a fragment where there is
 * one. Search for `token` along with the real secrets, then `splitCanary` the hits.
 */
export async function plantCanary(dir: string): Promise<{ token: string; file: string }> {
	const token = `sk-ant-oat01-${randomBytes(48).toString("base64url")}`;
	const file = join(dir, "leak-scan-canary.txt");
	await fs.writeFile(file, `a truncated snippet: …${middleOf(token)}…\n`);
	return { token, file };
}

/** Separates the canary's hits (at `index` in the searched list) from the real ones. */
export function splitCanary(hits: readonly Hit[], index: number): { canary: Hit[]; real: Hit[] } {
	return { canary: hits.filter((hit) => hit.token === index), real: hits.filter((hit) => hit.token !== index) };
}
