/**
 * Which process wrote a record or a temp file, and whether that process may still be at work. A pid alone is not
 * enough: pids are reused, so on Linux a process is also told apart by when it started (from /proc), and a
 * record from another host (a shared home directory) is never judged dead from here.
 */
import { readFileSync } from "node:fs";
import { hostname } from "node:os";

/** Enough to recognise the same process again: its pid, its host and (on Linux) when it started. */
export interface ProcessMark {
	pid: number;
	host: string;
	/** ms since epoch, from /proc; absent where the platform does not say. */
	startedAt?: number;
}

/**
 * `self`: this very process. `running` / `stopped` (SIGSTOP, Ctrl-Z, a debugger): the process that wrote the mark
 * still exists. `dead`: it exited, or its pid now belongs to another process. `unknown`: it ran on another host.
 */
export type ProcessState = "self" | "running" | "stopped" | "dead" | "unknown";

/** Linux reports start times in clock ticks of USER_HZ, which is 100 on every architecture it runs on today. */
const USER_HZ = 100;
/** Start times computed from /proc agree to a tick; allow for a boot-time rounding of one second. */
const START_TOLERANCE_MS = 1_500;

let self: ProcessMark | undefined;

export function thisProcess(): ProcessMark {
	if (!self) {
		const startedAt = linuxProcess(process.pid)?.startedAt;
		self = { pid: process.pid, host: hostname(), ...(startedAt !== undefined ? { startedAt } : {}) };
	}
	return self;
}

/** What became of the process that left `mark`. */
export function processState(mark: ProcessMark): ProcessState {
	const me = thisProcess();
	if (mark.host !== me.host) return "unknown";
	if (mark.pid === me.pid && sameStart(mark.startedAt, me.startedAt)) return "self";
	if (!Number.isInteger(mark.pid) || mark.pid <= 0) return "dead";
	try {
		process.kill(mark.pid, 0);
	} catch {
		// ESRCH: no such process. EPERM: a process of another user, so not the one that wrote our file.
		return "dead";
	}
	const info = linuxProcess(mark.pid);
	if (!info) return "running";
	if (info.state === "Z" || info.state === "X") return "dead";
	if (!sameStart(mark.startedAt, info.startedAt)) return "dead";
	return info.state === "T" || info.state === "t" ? "stopped" : "running";
}

/**
 * Whether the process now holding `pid` could have written a file last modified at `modifiedAt`: not when the pid
 * is free, and not when the process holding it started after the file was last written (the pid was reused).
 */
export function mayStillBeWriting(pid: number, modifiedAt: number): boolean {
	const state = processState({ pid, host: thisProcess().host });
	if (state === "dead") return false;
	if (state === "self" || state === "unknown") return true;
	const startedAt = linuxProcess(pid)?.startedAt;
	return startedAt === undefined || startedAt <= modifiedAt + START_TOLERANCE_MS;
}

function sameStart(a: number | undefined, b: number | undefined): boolean {
	return a === undefined || b === undefined || Math.abs(a - b) <= START_TOLERANCE_MS;
}

let bootTimeMs: number | undefined | null;

/** State letter and start time of a Linux process, from /proc/<pid>/stat; `undefined` elsewhere. */
function linuxProcess(pid: number): { state: string; startedAt?: number } | undefined {
	if (process.platform !== "linux") return undefined;
	let stat: string;
	try {
		stat = readFileSync(`/proc/${pid}/stat`, "utf8");
	} catch {
		return undefined;
	}
	// "pid (comm) state ppid …": comm may contain spaces and parentheses, so split after the last ")".
	const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
	const state = fields[0] ?? "?";
	const ticks = Number(fields[19]);
	const boot = bootTime();
	if (!Number.isFinite(ticks) || boot === undefined) return { state };
	return { state, startedAt: boot + (ticks * 1000) / USER_HZ };
}

function bootTime(): number | undefined {
	if (bootTimeMs === undefined) {
		try {
			const btime = /^btime (\d+)$/m.exec(readFileSync("/proc/stat", "utf8"))?.[1];
			bootTimeMs = btime ? Number(btime) * 1000 : null;
		} catch {
			bootTimeMs = null;
		}
	}
	return bootTimeMs ?? undefined;
}
