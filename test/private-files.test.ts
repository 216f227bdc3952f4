/**
 * The directories and files beside pi's agent dir, as another user or a killed process could leave them: a
 * directory someone else owns or can write to, a file swapped between its check and its opening, and the temp
 * files of a write that was killed.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FileRefreshLock } from "../src/broker/account-files.ts";
import { AccountError } from "../src/broker/token-broker.ts";
import { ConfigError, createConfigStore } from "../src/config/stores.ts";
import {
	PrivateFileError,
	readPrivateFile,
	removeStaleTempFiles,
	writePrivateFileAtomic,
} from "../src/fs/private-file.ts";
import { rejection } from "./helpers/expect-error.ts";
import { REPO_ROOT, resumeProcess, runCommand, waitForExit } from "./helpers/keyring.ts";

let dir: string;
const children: ChildProcess[] = [];

beforeEach(async () => {
	dir = await fs.mkdtemp(join(tmpdir(), "pi-mcc-private-files-"));
});

afterEach(async () => {
	for (const child of children.splice(0)) {
		if (child.pid) resumeProcess(child.pid);
		child.kill("SIGKILL");
		await waitForExit(child, 5_000);
	}
	await fs.rm(dir, { recursive: true, force: true });
});

const isRoot = process.getuid?.() === 0;

/**
 * A directory at `path` that belongs to another user: as root, one given to nobody (uid 65534); otherwise a
 * symbolic link to `/`, which root owns (the checks follow links: `~/.pi` may legitimately be one).
 */
async function foreignDirectory(path: string): Promise<void> {
	if (isRoot) {
		await fs.mkdir(path, { mode: 0o755 });
		await fs.chown(path, 65534, 65534);
	} else {
		await fs.symlink("/", path);
	}
}

/** A child process that lives until the test ends (a writer that is still at work). */
function liveProcess(): ChildProcess {
	const child = spawn(process.execPath, ["-e", "setTimeout(() => {}, 60000)"], { stdio: "ignore" });
	children.push(child);
	return child;
}

/** The pid of a process that has exited (a writer that was killed). */
async function deadPid(): Promise<number> {
	const child = spawn(process.execPath, ["-e", ""], { stdio: "ignore" });
	await waitForExit(child, 10_000);
	if (!child.pid) throw new Error("no pid");
	return child.pid;
}

describe("a directory the extension keeps its files or locks in", () => {
	for (const mode of [0o770, 0o707, 0o777, 0o1777]) {
		it(`writable by others (mode ${mode.toString(8)}) is refused with the chmod that fixes it; nothing is written there`, async () => {
			const agentDir = join(dir, "agent");
			await fs.mkdir(agentDir);
			await fs.chmod(agentDir, mode);
			const file = join(agentDir, "multi-claude-code.json");
			const error = await rejection(
				createConfigStore(file).update((config) => ({ next: config, result: undefined })),
				ConfigError,
			);
			expect(error.kind).toBe("unsafe");
			expect(error.message).toContain(`The directory ${agentDir} is writable by other users`);
			expect(error.message).toContain(`chmod go-w '${agentDir}'`);
			expect(await fs.readdir(agentDir)).toEqual([]);
			// Fixed as the message says, it is used.
			await fs.chmod(agentDir, mode & ~0o022);
			await createConfigStore(file).update((config) => ({ next: config, result: undefined }));
			expect(await fs.readdir(agentDir)).toEqual(["multi-claude-code.json"]);
		});
	}

	it("owned by another user is refused for the config, and nothing is written there", async () => {
		const agentDir = join(dir, "agent");
		await foreignDirectory(agentDir);
		const before = await fs.readdir(agentDir);
		const error = await rejection(
			createConfigStore(join(agentDir, "multi-claude-code.json")).update((config) => ({
				next: config,
				result: undefined,
			})),
			ConfigError,
		);
		expect(error.kind).toBe("unsafe");
		expect(error.message).toContain("belongs to another user");
		expect(error.message).toContain("PI_CODING_AGENT_DIR");
		expect(await fs.readdir(agentDir)).toEqual(before);
	});

	it("a refresh lock directory pre-created by another user (holding a lock) is refused at once, not waited for", async () => {
		const agentDir = join(dir, "agent");
		await fs.mkdir(agentDir, { mode: 0o700 });
		const lockDir = join(agentDir, "multi-claude-code-locks");
		await foreignDirectory(lockDir);
		if (isRoot) {
			// A lock it keeps fresh forever.
			await fs.mkdir(join(lockDir, "work.refresh.lock"));
			await fs.chown(join(lockDir, "work.refresh.lock"), 65534, 65534);
		}
		const before = await fs.readdir(lockDir);
		let ran = false;
		const error = await new FileRefreshLock(lockDir, { waitMs: 1_000 })
			.run("work", async () => {
				ran = true;
			})
			.then(
				() => undefined,
				(caught: unknown) => caught,
			);
		expect(error).toBeInstanceOf(AccountError);
		expect((error as AccountError).kind).toBe("refresh_failed");
		expect((error as AccountError).message).toContain(`The directory ${lockDir} belongs to another user`);
		expect(ran).toBe(false);
		expect(await fs.readdir(lockDir)).toEqual(before);
	});

	it("reached through a symbolic link to a private directory of this user is used", async () => {
		const real = join(dir, "real-agent");
		await fs.mkdir(real, { mode: 0o700 });
		await fs.symlink(real, join(dir, "agent"));
		await createConfigStore(join(dir, "agent", "multi-claude-code.json")).update((config) => ({
			next: config,
			result: undefined,
		}));
		expect(await fs.readdir(real)).toEqual(["multi-claude-code.json"]);
	});
});

// Swaps a 0666 file (someone else could have written it) and a 0600 one in at the target, as fast as it can.
const SWAPPER = `
const fs = require("node:fs");
const [target, ms] = [process.env.SWAP_TARGET, Number(process.env.SWAP_MS)];
const end = Date.now() + ms;
let n = 0;
while (Date.now() < end) {
	const good = target + ".g" + (n % 2);
	fs.writeFileSync(good, "mine", { mode: 0o600 });
	fs.renameSync(good, target);
	const bad = target + ".b" + (n % 2);
	fs.writeFileSync(bad, "planted");
	fs.chmodSync(bad, 0o666);
	fs.renameSync(bad, target);
	n++;
}
process.stdout.write(String(n));
`;

describe("a file swapped between its check and its opening", () => {
	it("is never read: while another process keeps swapping in a world-writable file, only the private one is", async () => {
		const target = join(dir, "multi-claude-code.json");
		await fs.writeFile(target, "mine", { mode: 0o600 });
		const swapping = runCommand(process.execPath, ["-e", SWAPPER], {
			env: { ...process.env, SWAP_TARGET: target, SWAP_MS: "2500" },
			timeoutMs: 20_000,
			cwd: REPO_ROOT,
		});
		let done = false;
		void swapping.finally(() => {
			done = true;
		});
		const seen = { mine: 0, planted: 0, refused: 0, missing: 0 };
		while (!done) {
			try {
				const text = await readPrivateFile(target);
				if (text === "mine") seen.mine++;
				else if (text === "planted") seen.planted++;
				else seen.missing++;
			} catch (error) {
				if (!(error instanceof PrivateFileError)) throw error;
				seen.refused++;
			}
		}
		const swapped = await swapping;
		console.log(`[private-files] ${swapped.stdout} swaps; reads: ${JSON.stringify(seen)}`);
		expect(swapped.code, swapped.stderr).toBe(0);
		expect(seen.planted).toBe(0);
		// The race was real: the planted file was there to be refused, and the private one was read too.
		expect(seen.refused).toBeGreaterThan(0);
		expect(seen.mine).toBeGreaterThan(0);
	});

	it("a FIFO planted in its place is refused without blocking the read", async () => {
		const target = join(dir, "multi-claude-code.json");
		const made = await runCommand("mkfifo", ["-m", "600", target]);
		expect(made.code, made.stderr).toBe(0);
		const error = await readPrivateFile(target).then(
			() => undefined,
			(caught: unknown) => caught,
		);
		expect(error).toBeInstanceOf(PrivateFileError);
		expect((error as PrivateFileError).message).toContain("is not a regular file");
	});
});

describe("temp files a killed write left behind", () => {
	const hex = (): string => randomBytes(6).toString("hex");

	it("are removed by the next write; those of live or stopped writers, other names and other files are kept", async () => {
		const file = join(dir, "multi-claude-code.json");
		const dead = await deadPid();
		const live = liveProcess();
		const stopped = liveProcess();
		await new Promise((resolve) => setTimeout(resolve, 100));
		process.kill(stopped.pid ?? 0, "SIGSTOP");
		const names = {
			dead: `.multi-claude-code.json.${dead}.${hex()}.tmp`,
			live: `.multi-claude-code.json.${live.pid}.${hex()}.tmp`,
			stopped: `.multi-claude-code.json.${stopped.pid}.${hex()}.tmp`,
			otherTarget: `.multi-claude-code-state.json.${dead}.${hex()}.tmp`,
			notHex: `.multi-claude-code.json.${dead}.not-hex-at-all.tmp`,
			noPid: `.multi-claude-code.json.x${dead}.${hex()}.tmp`,
			backup: "multi-claude-code.json.bak",
			link: `.multi-claude-code.json.${dead}.${hex()}.tmp`,
			directory: `.multi-claude-code.json.${dead}.${hex()}.tmp`,
		};
		for (const [what, name] of Object.entries(names)) {
			if (what === "link" || what === "directory") continue;
			await fs.writeFile(join(dir, name), `left by ${what}`, { mode: 0o600 });
		}
		const elsewhere = join(dir, "elsewhere.txt");
		await fs.writeFile(elsewhere, "not a temp file");
		await fs.symlink(elsewhere, join(dir, names.link));
		await fs.mkdir(join(dir, names.directory));
		let foreign: string | undefined;
		if (isRoot) {
			foreign = `.multi-claude-code.json.${dead}.${hex()}.tmp`;
			await fs.writeFile(join(dir, foreign), "another user's", { mode: 0o600 });
			await fs.chown(join(dir, foreign), 65534, 65534);
		}

		await writePrivateFileAtomic(file, '{"version":1,"accounts":[]}\n');

		const left = new Set(await fs.readdir(dir));
		expect(left.has(names.dead)).toBe(false);
		for (const kept of [
			"live",
			"stopped",
			"otherTarget",
			"notHex",
			"noPid",
			"backup",
			"link",
			"directory",
		] as const) {
			expect(left.has(names[kept]), `${kept} was removed`).toBe(true);
		}
		if (foreign) expect(left.has(foreign)).toBe(true);
		expect(await fs.readFile(elsewhere, "utf8")).toBe("not a temp file");
		expect(await fs.readFile(file, "utf8")).toBe('{"version":1,"accounts":[]}\n');
	});

	it("whose pid now belongs to a process started after the file was written are removed (Linux)", async () => {
		const file = join(dir, "auth.json");
		const live = liveProcess();
		await new Promise((resolve) => setTimeout(resolve, 100));
		const name = `.auth.json.${live.pid}.${hex()}.tmp`;
		await fs.writeFile(join(dir, name), "left by a writer long gone", { mode: 0o600 });
		const anHourAgo = new Date(Date.now() - 60 * 60 * 1000);
		await fs.utimes(join(dir, name), anHourAgo, anHourAgo);
		const removed = await removeStaleTempFiles(file);
		if (process.platform === "linux") expect(removed).toEqual([name]);
		else expect(removed).toEqual([]);
	});

	it("of this process's own writes in progress are never removed", async () => {
		const file = join(dir, "multi-claude-code-state.json");
		const big = `${JSON.stringify({ version: 1, pad: "x".repeat(400_000) })}\n`;
		const outcomes = await Promise.all(
			Array.from({ length: 20 }, async (_, i) => {
				const writing = writePrivateFileAtomic(file, big).then(
					() => "written",
					(error: unknown) => String(error),
				);
				await new Promise((resolve) => setTimeout(resolve, i % 3));
				await removeStaleTempFiles(file);
				return writing;
			}),
		);
		expect(outcomes).toEqual(Array.from({ length: 20 }, () => "written"));
		expect((await fs.readdir(dir)).filter((name) => name.endsWith(".tmp"))).toEqual([]);
	});
});
