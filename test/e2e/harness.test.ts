/**
 * The test harness itself, on the line this process drives (`npm test` runs this file on pi 0.73.1 and pi 1.x):
 * the SDK session and the RPC process are that line's pi, and both replace sessions the ways pi's own modes do
 * (new, fork, switch/resume, clone, reload) with the extension answering after each. Smoke tests for the
 * mechanisms; the extension's behaviour across replacements has tests of its own.
 */
import * as piAi from "@mariozechner/pi-ai";
import { describe, expect, it } from "vitest";
import { setupAccounts } from "../helpers/accounts.ts";
import { useE2eWorld } from "../helpers/e2e-world.ts";
import { ok } from "../helpers/fake-anthropic-api.ts";
import { runCommand } from "../helpers/keyring.ts";
import { type PiSession, waitFor } from "../helpers/pi-harness.ts";
import { nodeAtLeast, PI_1X_MIN_NODE, piCommand, piLine, piSdk } from "../helpers/pi-line.ts";
import { checkStartedPis, startPiProcess } from "../helpers/rpc-pi.ts";

const world = useE2eWorld(async (current) => {
	const accounts = await setupAccounts({ accounts: [{ label: "work" }], tokens: current.tokens });
	current.api.script(accounts.work!.access, ok("answer from work"));
});

/** A replacement repainted the footer (its session_start ran) and the new session still answers through it. */
async function answersAfter(pi: PiSession, paintsBefore: number): Promise<void> {
	await waitFor(() => pi.footerHistory().length > paintsBefore, "the new session's footer");
	expect((await pi.prompt("still there?")).text).toBe("answer from work");
	expect(pi.extensionErrors).toEqual([]);
}

describe("the pi line under test", () => {
	it("is the one the runner chose, for the SDK, the CLI and pi-ai alike, on a Node it supports", async () => {
		const line = piLine();
		const { pi } = await piSdk();
		expect(line.name).toBe(process.env.PI_MCC_PI_LINE === "1.x" ? "1.x" : "0.73");
		expect(pi.VERSION).toBe(line.version);
		expect(line.version.startsWith(line.name === "1.x" ? "1." : "0.73.")).toBe(true);
		if (line.name === "1.x") expect(nodeAtLeast(process.version, PI_1X_MIN_NODE)).toBe(true);
		// Test code importing pi-ai gets the line's own: on 1.x the module pi gives extensions (vitest.config.ts).
		const aiVersion = (piAi as { PI_AI_VERSION?: string }).PI_AI_VERSION;
		expect(aiVersion?.split(".")[0]).toBe(line.name === "1.x" ? "1" : undefined);
		const [node, args] = piCommand(["--version"]);
		const printed = await runCommand(node, args, { timeoutMs: 30_000 });
		expect(`${printed.stdout}${printed.stderr}`.trim()).toContain(line.version);
	});
});

describe("session replacement through the SDK", () => {
	it("fork, new, switch and reload each give a session the extension answers in", async () => {
		const pi = await world().start();
		expect((await pi.prompt("first")).text).toBe("answer from work");
		expect((await pi.prompt("second")).text).toBe("answer from work");
		const first = pi.session;
		const firstFile = first.sessionFile;
		const secondUser = first.sessionManager
			.getEntries()
			.filter((entry) => entry.type === "message" && entry.message.role === "user")[1];

		let paints = pi.footerHistory().length;
		expect((await pi.fork(secondUser!.id)).cancelled).toBe(false);
		expect(pi.session).not.toBe(first);
		// Forked before the second prompt: the first exchange only.
		expect(pi.session.messages.filter((message) => message.role === "user")).toHaveLength(1);
		await answersAfter(pi, paints);

		paints = pi.footerHistory().length;
		expect(await pi.newSession()).toEqual({ cancelled: false });
		expect(pi.session.messages).toEqual([]);
		expect(pi.session.sessionFile).not.toBe(firstFile);
		await answersAfter(pi, paints);

		paints = pi.footerHistory().length;
		expect(await pi.switchSession(firstFile!)).toEqual({ cancelled: false });
		expect(pi.session.sessionFile).toBe(firstFile);
		expect(pi.session.messages.filter((message) => message.role === "user")).toHaveLength(2);
		await answersAfter(pi, paints);

		paints = pi.footerHistory().length;
		await pi.reload();
		expect(pi.commands()).toContain("mcc-status");
		await answersAfter(pi, paints);
	});
});

describe("session replacement over RPC", () => {
	it("new_session, switch_session, fork, clone and /test-reload each leave pi answering, alive and clean", async () => {
		const pi = await startPiProcess(world().env, { testCommands: true });
		expect((await pi.prompt("first")).text).toBe("answer from work");
		expect((await pi.prompt("second")).text).toBe("answer from work");
		const { sessionFile } = await pi.state();
		const forkable = (await pi.rpc({ type: "get_fork_messages" })) as { messages: Array<{ entryId: string }> };

		const replacements: Array<[string, () => Promise<unknown>]> = [
			["new_session", () => pi.newSession()],
			["switch_session", () => pi.switchSession(sessionFile!)],
			["fork", () => pi.fork(forkable.messages.at(-1)!.entryId)],
			["clone", () => pi.clone()],
			["reload", () => pi.reload()],
		];
		for (const [name, replace] of replacements) {
			const paints = pi.statuses().length;
			const result = await replace();
			if (result !== undefined) expect(result, name).toMatchObject({ cancelled: false });
			await waitFor(() => pi.statuses().length > paints, `the footer after ${name}`);
			expect((await pi.prompt(`after ${name}`)).text, name).toBe("answer from work");
		}
		expect((await pi.state()).sessionFile).not.toBe(sessionFile);
		expect(pi.alive).toBe(true);
		expect(pi.problems()).toEqual([]);
		await pi.stop();
	});
});

describe("a pi process that goes wrong", () => {
	it("fails the test that started it, even when the test never looked", async () => {
		const pi = await startPiProcess(world().env, { testCommands: true });
		await pi.command("/test-crash");
		await waitFor(() => !pi.alive, "pi to exit after the escaped rejection", 10_000);
		expect(pi.problems()).toContain("it exited on its own with code 1");
		// What test/setup-line.ts runs after every test: here it must report this pi (and so fail a test).
		await expect(checkStartedPis()).rejects.toThrow(/exited on its own with code 1[\s\S]*test-crash/);
	});
});
