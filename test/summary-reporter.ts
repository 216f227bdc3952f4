import { writeFileSync } from "node:fs";
import type { File, Task } from "@vitest/runner";
import type { Reporter } from "vitest/reporters";

export interface TestCounts {
	passed: number;
	failed: number;
	skipped: number;
}

/** The plain closing line CI tooling reads: "tests: N passed, N failed, N skipped". */
export function summaryLine(counts: TestCounts, prefix = "tests:"): string {
	return `${prefix} ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped`;
}

/**
 * Counts the run's tests. Under `npm test` (test/run-tests.ts) the counts go to PI_MCC_SUMMARY_FILE and the runner
 * prints one line per pi line and the total; run alone, this prints the closing line itself.
 */
export default class SummaryReporter implements Reporter {
	onFinished(files: File[] = [], errors: unknown[] = []): void {
		const counts: TestCounts = { passed: 0, failed: 0, skipped: 0 };
		const walk = (task: Task): void => {
			if (task.type === "suite") {
				for (const child of task.tasks) walk(child);
				// A failed hook (beforeAll) leaves the suite's tests unrun: that is a failure, not a skip.
				if (task.result?.state === "fail" && (task.tasks.length === 0 || (task.result.errors?.length ?? 0) > 0))
					counts.failed++;
				return;
			}
			const state = task.result?.state;
			if (task.mode === "skip" || task.mode === "todo") counts.skipped++;
			else if (state === "pass") counts.passed++;
			else counts.failed++;
		};
		for (const file of files) walk(file);
		counts.failed += errors.length;
		const file = process.env.PI_MCC_SUMMARY_FILE;
		if (file) writeFileSync(file, JSON.stringify(counts));
		else process.stdout.write(`\n${summaryLine(counts)}\n`);
	}
}
