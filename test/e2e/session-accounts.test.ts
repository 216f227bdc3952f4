/**
 * The account belongs to the session (issue 13): real pi processes (RPC) and in-process SDK sessions, the real
 * keychain, one shared agent dir. A choice in one session never moves another; a session keeps its account across
 * resume, fork, clone, reload, `--continue` and a restart; a new session starts on the default (`activeLabel`, the
 * account last chosen); fallback starts from the session's own account, while cooldowns stay shared.
 */
import { promises as fs } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { CONFIG_VERSION } from "../../src/config/schema.ts";
import {
	askedAccounts,
	footerMatching,
	footerOn,
	footerTexts,
	labelledAccounts,
	lastFooter,
} from "../helpers/account-sessions.ts";
import { type AccountTokens, testCore } from "../helpers/accounts.ts";
import { useE2eWorld } from "../helpers/e2e-world.ts";
import { rateLimited } from "../helpers/fake-anthropic-api.ts";
import { keychainDelete, type PiSession, waitFor } from "../helpers/pi-harness.ts";
import { type RpcPi, startPiProcess } from "../helpers/rpc-pi.ts";

let accounts: Record<string, AccountTokens>;
// Config order work, side, home; new sessions start on home until a session chooses another.
const world = useE2eWorld(async (current) => {
	accounts = await labelledAccounts(current, [{ label: "work" }, { label: "side" }, { label: "home" }], "home");
});
const asked = () => askedAccounts(world(), accounts);

/** Runs `/mcc-use <label>` and waits for the footer to name it. */
async function use(session: PiSession | RpcPi, label: string): Promise<void> {
	await ("runCommand" in session ? session.runCommand(`/mcc-use ${label}`) : session.command(`/mcc-use ${label}`));
	await footerMatching(session, footerOn(label));
}

/** Another session of this agent dir chooses `label` (so it becomes the default for new sessions). */
async function anotherSessionChooses(label: string): Promise<void> {
	const other = await world().start({ sessionStorage: "memory" });
	await use(other, label);
	await other.dispose();
}

async function configOnDisk(): Promise<{ activeLabel?: string; [key: string]: unknown }> {
	return JSON.parse(await fs.readFile(world().env.configFile, "utf8"));
}

describe("each session keeps the account chosen in it", () => {
	it("A chooses work, B then chooses side: A's next request carries work's token and A's footer still says work; B's carries side's", async () => {
		const a = await startPiProcess(world().env);
		const b = await startPiProcess(world().env);
		await use(a, "work");
		const aSeen = a.statuses().length;
		await use(b, "side");
		expect((await configOnDisk()).activeLabel).toBe("side");
		world().api.clearRequests();
		expect((await a.prompt("from A")).text).toBe("answer from work");
		expect((await b.prompt("from B")).text).toBe("answer from side");
		expect((await a.prompt("from A again")).text).toBe("answer from work");
		expect(asked()).toEqual(["work", "side", "work"]);
		expect(lastFooter(a)).toMatch(footerOn("work"));
		expect(lastFooter(b)).toMatch(footerOn("side"));
		// Never stale: nothing B chose ever reached A's footer.
		expect(
			a
				.statuses()
				.slice(aSeen)
				.filter((text) => !footerOn("work").test(text)),
		).toEqual([]);
	});

	it("two SDK sessions of one pi process keep their own accounts, their requests and their footers", async () => {
		const a = await world().start();
		const b = await world().start();
		await use(a, "work");
		await use(b, "side");
		world().api.clearRequests();
		// On pi 0.73 the stream registered last (B's) serves both: each request still finds its own session.
		expect((await a.prompt("from A")).text).toBe("answer from work");
		expect((await b.prompt("from B")).text).toBe("answer from side");
		expect((await a.prompt("from A again")).text).toBe("answer from work");
		expect(asked()).toEqual(["work", "side", "work"]);
		expect(a.footer()).toMatch(footerOn("work"));
		expect(b.footer()).toMatch(footerOn("side"));
		expect(a.extensionErrors).toEqual([]);
		expect(b.extensionErrors).toEqual([]);
	});

	it("a new session's first request, sent before its extension runtime has loaded, starts from that session's own account", async () => {
		// A's project is bound to work; B (started after A, so on pi 0.73 its stream serves A's requests too) is not.
		const project = join(world().env.root, "bound-app");
		await fs.mkdir(join(project, ".git"), { recursive: true });
		await testCore().config.update((config) => ({
			next: { ...config, projects: [{ path: project, label: "work" }] },
			result: undefined,
		}));
		const a = await world().start({ cwd: project, waitForFooter: false });
		const b = await world().start({ waitForFooter: false });
		world().api.clearRequests();
		expect((await a.prompt("at once from A")).text).toBe("answer from work");
		expect((await b.prompt("at once from B")).text).toBe("answer from home");
		expect(asked()).toEqual(["work", "home"]);
		await footerMatching(a, footerOn("work", true));
		expect(a.extensionErrors).toEqual([]);
	});

	it("the picker and Ctrl+Shift+A change this session only: the other process's next request keeps its token", async () => {
		const other = await startPiProcess(world().env);
		await use(other, "work");
		const otherSeen = other.statuses().length;
		const pi = await world().start();
		await footerMatching(pi, footerOn("work"));
		pi.ui.queueSelect((_title, options) => options.find((option) => option === "side"));
		await pi.runCommand("/mcc-use");
		expect(pi.ui.dialogs.at(-1)?.options).toEqual(["work", "side", "home"]);
		expect(pi.footer()).toMatch(footerOn("side"));
		world().api.clearRequests();
		expect((await other.prompt("other")).text).toBe("answer from work");
		expect((await pi.prompt("picked")).text).toBe("answer from side");
		await pi.pressShortcut("ctrl+shift+a");
		expect(pi.footer()).toMatch(footerOn("home"));
		expect((await other.prompt("other again")).text).toBe("answer from work");
		expect((await pi.prompt("cycled")).text).toBe("answer from home");
		expect(asked()).toEqual(["work", "side", "work", "home"]);
		expect(
			other
				.statuses()
				.slice(otherSeen)
				.filter((text) => !footerOn("work").test(text)),
		).toEqual([]);
	});
});

describe("where a new session starts", () => {
	it("a config that only has activeLabel (today's format) starts new sessions on it; without one, on the first account", async () => {
		const file = world().env.configFile;
		const todays = (activeLabel?: string) => ({
			version: CONFIG_VERSION,
			...(activeLabel ? { activeLabel } : {}),
			accounts: ["work", "side", "home"].map((label) => ({ label, fallbackTo: [] })),
		});
		await fs.writeFile(file, JSON.stringify(todays("side")), { mode: 0o600 });
		const pi = await startPiProcess(world().env);
		await footerMatching(pi, footerOn("side"));
		world().api.clearRequests();
		expect((await pi.prompt("hello")).text).toBe("answer from side");
		expect(asked()).toEqual(["side"]);
		await pi.stop();

		await fs.writeFile(file, JSON.stringify(todays()), { mode: 0o600 });
		const first = await world().start();
		await footerMatching(first, footerOn("work"));
		expect((await first.prompt("hello")).text).toBe("answer from work");
		// The old format keeps working as it is updated: a choice becomes the default for new sessions.
		await use(first, "home");
		expect(await configOnDisk()).toMatchObject({ activeLabel: "home" });
	});
});

describe("a session keeps its account when pi brings it back", () => {
	it("resume (switch_session) restores each session's own account, whatever was chosen since", async () => {
		const pi = await startPiProcess(world().env);
		await use(pi, "side");
		expect((await pi.prompt("in side's session")).text).toBe("answer from side");
		const sideFile = (await pi.state()).sessionFile!;
		await pi.newSession();
		await footerMatching(pi, footerOn("side"));
		await use(pi, "work");
		expect((await pi.prompt("in work's session")).text).toBe("answer from work");
		const workFile = (await pi.state()).sessionFile!;
		world().api.clearRequests();
		await pi.switchSession(sideFile);
		await footerMatching(pi, footerOn("side"));
		expect((await pi.prompt("back in side's")).text).toBe("answer from side");
		await pi.switchSession(workFile);
		await footerMatching(pi, footerOn("work"));
		expect((await pi.prompt("back in work's")).text).toBe("answer from work");
		expect(asked()).toEqual(["side", "work"]);
	});

	it("fork and clone keep the account of the session they copy, not the default chosen since", async () => {
		const pi = await startPiProcess(world().env);
		await use(pi, "side");
		expect((await pi.prompt("one")).text).toBe("answer from side");
		expect((await pi.prompt("two")).text).toBe("answer from side");
		await anotherSessionChooses("work");
		const forkable = (await pi.rpc({ type: "get_fork_messages" })) as { messages: Array<{ entryId: string }> };
		world().api.clearRequests();
		expect(await pi.fork(forkable.messages.at(-1)!.entryId)).toMatchObject({ cancelled: false });
		await footerMatching(pi, footerOn("side"));
		expect((await pi.prompt("in the fork")).text).toBe("answer from side");
		expect(await pi.clone()).toMatchObject({ cancelled: false });
		await footerMatching(pi, footerOn("side"));
		expect((await pi.prompt("in the clone")).text).toBe("answer from side");
		// The default did move: a new session starts on work.
		await pi.newSession();
		await footerMatching(pi, footerOn("work"));
		expect((await pi.prompt("in a new session")).text).toBe("answer from work");
		expect(asked()).toEqual(["side", "side", "work"]);
	});

	it("/reload keeps the session's account", async () => {
		const pi = await startPiProcess(world().env, { testCommands: true });
		await use(pi, "side");
		await anotherSessionChooses("work");
		const paints = pi.statuses().length;
		await pi.reload();
		// The reloaded extension paints the footer afresh: from the session's own record, not the default.
		await waitFor(() => pi.statuses().length > paints, "the footer of the reloaded extension");
		expect(lastFooter(pi)).toMatch(footerOn("side"));
		world().api.clearRequests();
		expect((await pi.prompt("after reload")).text).toBe("answer from side");
		expect(asked()).toEqual(["side"]);
	});

	it("--continue after a pi restart restores the account of the continued session", async () => {
		// A session dir of its own, so the session continued is this test's.
		const env = { ...world().env, sessionDir: join(world().env.root, "sessions-continue") };
		const first = await startPiProcess(env);
		await use(first, "side");
		expect((await first.prompt("before the restart")).text).toBe("answer from side");
		const { sessionFile } = await first.state();
		await first.stop();
		await anotherSessionChooses("work");

		const continued = await startPiProcess(env, { args: ["--continue"] });
		expect((await continued.state()).sessionFile).toBe(sessionFile);
		await footerMatching(continued, footerOn("side"));
		world().api.clearRequests();
		expect((await continued.prompt("after the restart")).text).toBe("answer from side");
		await continued.stop();
		// Without --continue, a restart starts a new session, on the default.
		const fresh = await startPiProcess(env);
		await footerMatching(fresh, footerOn("work"));
		expect((await fresh.prompt("a new session")).text).toBe("answer from work");
		expect(asked()).toEqual(["side", "work"]);
	});

	it("a resumed session whose account was removed since says so, names /mcc-use, and sends nothing", async () => {
		const pi = await startPiProcess(world().env);
		await use(pi, "side");
		expect((await pi.prompt("in side's session")).text).toBe("answer from side");
		const sideFile = (await pi.state()).sessionFile!;
		await pi.newSession();
		await use(pi, "home");
		const remover = await world().start({ sessionStorage: "memory" });
		await remover.runCommand("/mcc-remove side");
		world().api.clearRequests();
		await pi.switchSession(sideFile);
		const footer = await footerMatching(pi, /^claude: side \(removed/);
		expect(footer).toContain("/mcc-use");
		const refused = await pi.prompt("still side?");
		expect(refused.stopReason).toBe("error");
		expect(refused.errorMessage).toContain('"side" was removed');
		expect(refused.errorMessage).toContain("/mcc-use");
		expect(world().api.requests).toHaveLength(0);
		await use(pi, "home");
		expect((await pi.prompt("on home now")).text).toBe("answer from home");
		expect(asked()).toEqual(["home"]);
	});
});

describe("fallback and revocation start from the session's own account", () => {
	it("a session falls back along its own account's list only, and another session shares the cooldown it caused", async () => {
		accounts = await labelledAccounts(
			world(),
			[
				{ label: "work", fallbackTo: ["side", "home"] },
				{ label: "side", fallbackTo: ["spare"] },
				{ label: "home" },
				{ label: "spare" },
			],
			"home",
		);
		world().api.script(accounts.side!.access, rateLimited({ retryAfterSec: 600 }));
		world().api.script(accounts.work!.access, rateLimited({ retryAfterSec: 600 }));
		const a = await startPiProcess(world().env);
		const b = await startPiProcess(world().env);
		await use(a, "side");
		await use(b, "work");
		world().api.clearRequests();
		// side's list, not work's (the default B just chose): directional from the session's own account.
		expect((await a.prompt("from A")).text).toBe("answer from spare");
		expect(asked()).toEqual(["side", "spare"]);
		await footerMatching(a, /^claude: spare.*\(fallback from side\)/);
		world().api.clearRequests();
		// work's list is side, home: side is cooling down since A's request, so B asks home without trying side.
		expect((await b.prompt("from B")).text).toBe("answer from home");
		expect(asked()).toEqual(["work", "home"]);
		await footerMatching(b, /^claude: home.*\(fallback from work\)/);
		expect(footerTexts(a).some((text) => text.includes("work"))).toBe(false);
	});

	it("a revoked session account fails with the fix in that session only, never replaced by a fallback", async () => {
		accounts = await labelledAccounts(
			world(),
			[{ label: "work" }, { label: "side", fallbackTo: ["home"] }, { label: "home" }],
			"home",
		);
		const a = await startPiProcess(world().env);
		await use(a, "side");
		const b = await world().start();
		await use(b, "work");
		await keychainDelete(world().env.keychainService, "side");
		world().api.clearRequests();
		const refused = await a.prompt("on a revoked account");
		expect(refused.stopReason).toBe("error");
		expect(refused.errorMessage).toContain("/mcc-login side");
		expect(world().api.requests).toHaveLength(0);
		expect((await b.prompt("on work")).text).toBe("answer from work");
		expect(asked()).toEqual(["work"]);
	});
});
