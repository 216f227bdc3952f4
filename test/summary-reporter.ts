import type { File, Task } from "@vitest/runner";
import type { Reporter } from "vitest/reporters";

/** Prints one plain closing line ("tests: N passed, N failed, N skipped") that CI tooling reads. */
export default class SummaryReporter implements Reporter {
	onFinished(files: File[] = [], errors: unknown[] = []): void {
		let passed = 0;
		let failed = 0;
		let skipped = 0;
		const walk = (task: Task): void => {
			if (task.type === "suite") {
				for (const child of task.tasks) walk(child);
				// A failed hook (beforeAll) leaves the suite's tests unrun: that is a failure, not a skip.
				if (task.result?.state === "fail" && (task.tasks.length === 0 || (task.result.errors?.length ?? 0) > 0))
					failed++;
				return;
			}
			const state = task.result?.state;
			if (task.mode === "skip" || task.mode === "todo") skipped++;
			else if (state === "pass") passed++;
			else failed++;
		};
		for (const file of files) walk(file);
		failed += errors.length;
		process.stdout.write(`\ntests: ${passed} passed, ${failed} failed, ${skipped} skipped\n`);
	}
}
