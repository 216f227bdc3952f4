/**
 * The strongest "never in a file, not even briefly" check there is: run a process under strace, record every
 * write(2)-family call with its data, and search the data of every write that went to a file. Writes to sockets
 * and pipes (HTTP to the token endpoint, D-Bus to the keychain) are expected to carry tokens and are skipped; the
 * trace log itself therefore holds tokens, so it lives in a private directory outside every scanned tree and is
 * deleted after reading.
 *
 * strace is optional: CI images may not have it (or may forbid ptrace); callers then rely on TreeWatcher alone.
 */
import { promises as fs } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCommand } from "../../helpers/keyring.ts";
import { type Hit, scanText } from "./leak-scan.ts";

const WRITE_CALLS = "trace=write,pwrite64,writev,pwritev,pwritev2";

let available: Promise<boolean> | undefined;

/** Whether `strace -f` can trace a child here (installed, and ptrace allowed). */
export function straceAvailable(): Promise<boolean> {
	const probe = ["-f", "-qq", "--seccomp-bpf", "-e", WRITE_CALLS, "-o", "/dev/null", "--", "true"];
	available ??= runCommand("strace", probe, { timeoutMs: 10_000 })
		.then((result) => result.code === 0)
		.catch(() => false);
	return available;
}

export interface SyscallTrace {
	/** The command and arguments to spawn instead of `command args…`. */
	wrap(command: string, args: readonly string[]): [string, string[]];
	/** Parses the log: every write to a file, searched for the tokens. Deletes the log. */
	finish(tokens: readonly string[]): Promise<TraceReport>;
}

export interface TraceReport {
	/** Distinct files written to. */
	files: Set<string>;
	/** write calls that went to files. */
	writes: number;
	/** Bytes those calls wrote (their return values). */
	bytes: number;
	hits: Hit[];
}

/** `parent`: where the log's private directory goes — never inside a tree that is searched for tokens. */
export async function startSyscallTrace(parent = tmpdir()): Promise<SyscallTrace> {
	const dir = await fs.mkdtemp(join(parent, "pi-mcc-strace-"));
	await fs.chmod(dir, 0o700);
	const log = join(dir, "trace.log");
	return {
		wrap(command, args) {
			// -y: file descriptors with their paths; -s: whole data (our files are far smaller than 1 MiB per write).
			// --seccomp-bpf: only the traced calls stop the process, so it runs at nearly full speed.
			const flags = ["-f", "-qq", "--seccomp-bpf", "-y", "-s", "1048576", "-e", WRITE_CALLS, "-o", log];
			return ["strace", [...flags, "--", command, ...args]];
		},
		async finish(tokens) {
			const report: TraceReport = { files: new Set(), writes: 0, bytes: 0, hits: [] };
			try {
				const text = await fs.readFile(log, "utf8").catch(() => "");
				for (const line of text.split("\n")) {
					// `1234 write(17</path/to/file>, "data"…, 42) = 42`, possibly `<unfinished …>` with a resumed part.
					const call = /^\d+\s+(?:write|pwrite64|writev|pwritev2?)\((\d+)<([^>]*)>,/.exec(line);
					if (!call?.[2]) continue;
					const path = call[2];
					if (!path.startsWith("/") || path.startsWith("/dev/") || path.startsWith("/proc/")) continue;
					report.files.add(path);
					report.writes++;
					const result = /\)\s+=\s+(\d+)\s*$/.exec(line);
					report.bytes += Number(result?.[1] ?? 0);
					report.hits.push(...scanText(`write to ${path}`, line, tokens));
				}
			} finally {
				await fs.rm(dir, { recursive: true, force: true });
			}
			return report;
		},
	};
}
