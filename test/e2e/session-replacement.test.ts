/**
 * Never throw into pi (issue 12, item 3): sessions replaced in quick succession in the real runtime, in-process
 * (SDK) and as a pi process (RPC), right after start (before the extension's lazily loaded runtime is there: the
 * window in which pi 0.73 died of a stale ctx thrown from session_start) and between requests. pi stays up, every
 * request is answered by the live session's account, pi reports no extension error, nothing escapes as an
 * unhandled rejection, and the footer ends on the live session's account. Commands and the shortcut that are
 * still running while their session is replaced end quietly.
 */
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { footerMatching, footerOn, labelledAccounts, lastFooter } from "../helpers/account-sessions.ts";
import type { AccountTokens } from "../helpers/accounts.ts";
import { useE2eWorld } from "../helpers/e2e-world.ts";
import type { PiSession } from "../helpers/pi-harness.ts";
import { type RpcPi, startPiProcess } from "../helpers/rpc-pi.ts";

const ROUNDS = 5;
/** Long enough for a late write of a replaced session to land, were there one. */
const SETTLE_MS = 500;

let accounts: Record<string, AccountTokens>;
// New sessions start on work (the default); one saved session per test is on home.
const world = useE2eWorld(async (current) => {
	accounts = await labelledAccounts(current, [{ label: "work" }, { label: "home" }], "work");
});

/** Rejections and exceptions that escaped in this (the SDK sessions') process. */
const escaped: unknown[] = [];
const record = (reason: unknown) => void escaped.push(reason);
beforeAll(() => {
	process.on("unhandledRejection", record);
	process.on("uncaughtException", record);
});
afterAll(() => {
	process.off("unhandledRejection", record);
	process.off("uncaughtException", record);
});
beforeEach(() => {
	escaped.length = 0;
});

type Pi = PiSession | RpcPi;
const isSdk = (pi: Pi): pi is PiSession => "runCommand" in pi;
const run = (pi: Pi, line: string) => (isSdk(pi) ? pi.runCommand(line) : pi.command(line));

/** A prompt, answered by `label`'s token, and the footer on `label` afterwards. */
async function answeredBy(pi: Pi, label: string, what: string): Promise<void> {
	const result = await pi.prompt(what);
	expect(result.text, what).toBe(`answer from ${label}`);
	expect(world().api.requests.at(-1)?.token, what).toBe(accounts[label]!.access);
	await footerMatching(pi, footerOn(label));
}

/** A prompt answered by whichever account the live session is on: its label, the footer checked to name it. */
async function answeredByLiveAccount(pi: Pi, what: string): Promise<string> {
	const result = await pi.prompt(what);
	const label = /^answer from (\w+)$/.exec(result.text)?.[1];
	expect(label && accounts[label], `the answer to ${what}: ${JSON.stringify(result)}`).toBeTruthy();
	expect(world().api.requests.at(-1)?.token, what).toBe(accounts[label!]!.access);
	await footerMatching(pi, footerOn(label!));
	return label!;
}

/** A saved session on home (two exchanges, so it can be forked after an answer); this pi then starts on work. */
async function savedHomeSession(pi: Pi): Promise<string> {
	await run(pi, "/mcc-use home");
	await answeredBy(pi, "home", "home one");
	await answeredBy(pi, "home", "home two");
	const file = isSdk(pi) ? pi.session.sessionFile : (await pi.state()).sessionFile;
	await pi.newSession();
	await run(pi, "/mcc-use work");
	await footerMatching(pi, footerOn("work"));
	if (!file) throw new Error("the home session was not saved");
	return file;
}

let directories = 0;
const freshDirectory = () => join(world().env.root, `fresh-${++directories}`);

/**
 * A saved session on home and one on work, in two directories: a switch between them changes the directory, and
 * pi 1.x then loads the extension afresh (it keeps it loaded per directory), so every switch opens the window
 * before the extension's runtime is there again, as every replacement does on pi 0.73.
 */
async function savedSessionsInTwoDirectories(): Promise<{ homeFile: string; workFile: string }> {
	const home = await world().start();
	const homeFile = await savedHomeSession(home);
	await home.dispose();
	const work = await world().start({ cwd: freshDirectory() });
	await answeredBy(work, "work", "work one");
	const workFile = work.session.sessionFile;
	await work.dispose();
	if (!workFile) throw new Error("the work session was not saved");
	return { homeFile, workFile };
}

/** The entry id of the current session's last user message (a fork there keeps every earlier answer). */
async function lastUserEntry(pi: Pi): Promise<string> {
	if (!isSdk(pi)) {
		const { messages } = (await pi.rpc({ type: "get_fork_messages" })) as { messages: Array<{ entryId: string }> };
		return messages.at(-1)!.entryId;
	}
	const users = pi.session.sessionManager
		.getEntries()
		.filter((entry) => entry.type === "message" && entry.message.role === "user");
	return users.at(-1)!.id;
}

/** What must hold after every test here: nothing escaped, pi reported no extension error, pi is up. */
async function expectClean(pi: Pi, label: string): Promise<void> {
	await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
	expect(lastFooter(pi), "the footer after everything settled").toMatch(footerOn(label));
	expect(escaped).toEqual([]);
	if (isSdk(pi)) {
		expect(pi.extensionErrors).toEqual([]);
	} else {
		expect(pi.lines.filter((line) => line.type === "extension_error")).toEqual([]);
		expect(pi.alive).toBe(true);
		expect(pi.problems()).toEqual([]);
	}
}

/** Starts each action (a command, the shortcut) and replaces the session while it runs; then lets it end. */
async function raceWithReplacement(pi: Pi, actions: Array<() => Promise<unknown>>): Promise<void> {
	for (const action of actions) {
		const running = action();
		await pi.newSession();
		await running;
	}
}

/** New, work's and home's session, ROUNDS times from pi's start on (before the extension has loaded); then asks. */
async function replaceRightAfterStart(pi: Pi, sessions: { homeFile: string; workFile: string }): Promise<void> {
	for (let round = 1; round <= ROUNDS; round++) {
		await pi.newSession();
		await pi.switchSession(sessions.workFile);
		await pi.switchSession(sessions.homeFile);
	}
	await answeredBy(pi, "home", "after the replacements");
	await expectClean(pi, "home");
}

/** Rounds of new, fork, switch/resume, (clone), reload with a request after each, and bursts without one. */
async function replaceBetweenRequests(pi: Pi): Promise<void> {
	const homeFile = await savedHomeSession(pi);
	for (let round = 1; round <= ROUNDS; round++) {
		// A burst: replacements back to back, each new session's start still under way when the next comes.
		await pi.newSession();
		await pi.switchSession(homeFile);
		await pi.newSession();
		await answeredBy(pi, "work", `round ${round}: new`);
		await pi.switchSession(homeFile);
		await answeredBy(pi, "home", `round ${round}: resumed`);
		expect(await pi.fork(await lastUserEntry(pi))).toMatchObject({ cancelled: false });
		await answeredBy(pi, "home", `round ${round}: forked`);
		if (!isSdk(pi)) {
			expect(await pi.clone()).toMatchObject({ cancelled: false });
			await answeredBy(pi, "home", `round ${round}: cloned`);
		}
		await pi.reload();
		await answeredBy(pi, "home", `round ${round}: reloaded`);
	}
}

describe("sessions replaced in quick succession in the SDK", () => {
	it("replaced right after start, before the extension has loaded, pi answers in the live session", async () => {
		const sessions = await savedSessionsInTwoDirectories();
		await replaceRightAfterStart(await world().start({ cwd: freshDirectory(), waitForFooter: false }), sessions);
	});

	it("new, fork, resume and reload between requests: every request answered, the footer on the live session", async () => {
		const pi = await world().start();
		await replaceBetweenRequests(pi);
		await expectClean(pi, "home");
	}, 120_000);

	it("a command and the shortcut still running while their session is replaced end quietly", async () => {
		const pi = await world().start();
		await raceWithReplacement(pi, [() => run(pi, "/mcc-status"), () => run(pi, "/mcc-use home")]);
		await raceWithReplacement(pi, [() => pi.pressShortcut("ctrl+shift+a")]);
		// Whichever account the raced commands left as the default, the live session answers on its own.
		await expectClean(pi, await answeredByLiveAccount(pi, "after the raced commands"));
	});
});

describe("sessions replaced in quick succession in a pi process (RPC)", () => {
	it("replaced right after start, before the extension has loaded, pi stays up and answers", async () => {
		const sessions = await savedSessionsInTwoDirectories();
		await replaceRightAfterStart(await startPiProcess(world().env, { cwd: freshDirectory() }), sessions);
	}, 120_000);

	it("new_session, fork, switch_session, clone and reload between requests: pi stays up, every request answered", async () => {
		const pi = await startPiProcess(world().env, { testCommands: true });
		await replaceBetweenRequests(pi);
		await expectClean(pi, "home");
	}, 240_000);

	it("a command still running while its session is replaced ends without an unhandled rejection", async () => {
		const pi = await startPiProcess(world().env);
		await raceWithReplacement(pi, [() => run(pi, "/mcc-status"), () => run(pi, "/mcc-use home")]);
		await expectClean(pi, await answeredByLiveAccount(pi, "after the raced commands"));
	});
});
