/**
 * The holder's lease on a file lock: it stays held while its holder runs (proper-lockfile keeps refreshing the lock
 * directory's mtime), and it is seen lost once another process took the lock over, which proper-lockfile does
 * by removing the stale directory and creating its own.
 */
import { promises as fs } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FileLockError, withFileLock } from "../src/fs/file-lock.ts";
import { REPO_ROOT, runCommand, waitFor } from "./helpers/keyring.ts";

let dir: string;

beforeEach(async () => {
	dir = await fs.mkdtemp(join(tmpdir(), "pi-mcc-file-lock-"));
});

afterEach(async () => {
	await fs.rm(dir, { recursive: true, force: true });
});

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function exists(path: string): Promise<boolean> {
	return fs.stat(path).then(
		() => true,
		() => false,
	);
}

describe("a lease on a file lock", () => {
	it("stays held through the holder's own refreshes of the lock, and the lock is removed at the end", async () => {
		const target = join(dir, "work.refresh");
		const seen = await withFileLock(
			target,
			async (lease) => {
				const before = (await fs.stat(`${target}.lock`)).mtimeMs;
				// Stale after 2 s, refreshed every second: two refreshes happen meanwhile.
				await sleep(2_600);
				const after = (await fs.stat(`${target}.lock`)).mtimeMs;
				return { refreshed: after > before, held: await lease.isHeld() };
			},
			{ staleMs: 2_000 },
		);
		expect(seen).toEqual({ refreshed: true, held: true });
		expect(await exists(`${target}.lock`)).toBe(false);
	});

	it("is lost once the directory was removed and created again, and the new holder's directory is left alone", async () => {
		const target = join(dir, "work.refresh");
		const lockPath = `${target}.lock`;
		let lost: unknown;
		await withFileLock(
			target,
			async (lease) => {
				expect(await lease.isHeld()).toBe(true);
				// What a waiter does with a lock it finds stale. On ext4 the new directory usually gets the same inode.
				await fs.rmdir(lockPath);
				await fs.mkdir(lockPath);
				expect(await lease.isHeld()).toBe(false);
				lost = await lease.assertHeld().then(
					() => undefined,
					(error: unknown) => error,
				);
			},
			{ failIfLost: false },
		);
		expect(lost).toBeInstanceOf(FileLockError);
		expect((lost as FileLockError).kind).toBe("lost");
		expect((lost as FileLockError).message).toContain(lockPath);
		expect(await exists(lockPath)).toBe(true);
	});

	it("lost while held makes the call fail with kind lost, unless the caller checks the lease itself", async () => {
		const target = join(dir, "state.json");
		const outcome = await withFileLock(target, async () => {
			await fs.rmdir(`${target}.lock`);
			return "done";
		}).then(
			(value) => value,
			(error: unknown) => error,
		);
		expect(outcome).toBeInstanceOf(FileLockError);
		expect((outcome as FileLockError).kind).toBe("lost");
	});

	it("held by a process whose event loop froze past the stale time is taken over, and that holder sees it lost", async () => {
		const target = join(dir, "work.refresh");
		// The other holder takes the lock, then its event loop stops for 3.5 s (as under SIGSTOP: no refresh of
		// the lock can run), then it looks at its lease and reports; it must not remove a lock it lost.
		const holder = runCommand(
			process.execPath,
			[
				"--input-type=module",
				"-e",
				`import { createJiti } from "jiti";
				const { withFileLock } = await createJiti(import.meta.url).import(${JSON.stringify(join(REPO_ROOT, "src", "fs", "file-lock.ts"))});
				const held = await withFileLock(process.env.LOCK_TARGET, async (lease) => {
					Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 3500);
					return lease.isHeld();
				}, { staleMs: 2000, failIfLost: false });
				process.stdout.write(JSON.stringify({ held }));`,
			],
			{ env: { ...process.env, LOCK_TARGET: target }, cwd: REPO_ROOT, timeoutMs: 30_000 },
		);
		await waitFor(() => exists(`${target}.lock`), "the other process to take the lock", 20_000, 10);
		const takenAt = Date.now();
		let stillOurs = false;
		const mine = withFileLock(
			target,
			async (lease) => {
				const waited = Date.now() - takenAt;
				const result = await holder;
				stillOurs = await lease.isHeld();
				return { waited, result };
			},
			{ staleMs: 2_000, waitMs: 10_000 },
		);
		const { waited, result } = await mine;
		expect(result.code, result.stderr).toBe(0);
		expect(JSON.parse(result.stdout)).toEqual({ held: false });
		expect(waited).toBeGreaterThan(1_500);
		expect(stillOurs).toBe(true);
		expect(await exists(`${target}.lock`)).toBe(false);
	});
});
