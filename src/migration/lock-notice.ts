import { promises as fs } from "node:fs";
import type { Output } from "./output.ts";

/**
 * Says so when a lock is already held before waiting for it: a run killed earlier leaves its lock behind, and
 * waiting silently for it to go stale would look like a hang.
 */
export async function noticeHeldLock(target: string, staleSeconds: number, out: Output): Promise<void> {
	const held = await fs.stat(`${target}.lock`).then(
		() => true,
		() => false,
	);
	if (held) {
		out.info(
			`Waiting for ${target}.lock: another process holds it, or a run that was killed left it behind (then it ` +
				`is taken over after ${staleSeconds} s).`,
		);
	}
}
