/**
 * Test hook for crash-safety tests: with PI_MCC_MIGRATE_PAUSE_AT=<step>, the script announces the step on stderr
 * and waits for a line on stdin (or at most 30 s), so a test can SIGKILL it, or change the world and resume it,
 * at an exact point. Without the variable this is a no-op.
 */
export const PAUSE_ENV = "PI_MCC_MIGRATE_PAUSE_AT";
export const PAUSE_MARKER = "pi-mcc-migrate: paused at";
const MAX_PAUSE_MS = 30_000;

export async function pauseAt(step: string): Promise<void> {
	if (process.env[PAUSE_ENV] !== step) return;
	process.stderr.write(`${PAUSE_MARKER} ${step}\n`);
	await new Promise<void>((resolve) => {
		const done = (): void => {
			clearTimeout(timer);
			process.stdin.off("data", done);
			process.stdin.off("end", done);
			process.stdin.pause();
			resolve();
		};
		const timer = setTimeout(done, MAX_PAUSE_MS);
		process.stdin.on("data", done);
		process.stdin.on("end", done);
		process.stdin.resume();
	});
}
