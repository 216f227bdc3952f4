/**
 * Projects bound to accounts (issue 13): `/mcc-use <label> --project` binds the session's project (its git work
 * tree's root, else its directory) in the user's own config; new sessions there and below start on the bound
 * account, elsewhere on the default. Real pi processes and SDK sessions, the real keychain, one agent dir.
 */
import { promises as fs } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";
import {
	askedAccounts,
	footerMatching,
	footerOn,
	labelledAccounts,
	lastNotification,
} from "../helpers/account-sessions.ts";
import type { AccountTokens } from "../helpers/accounts.ts";
import { useE2eWorld } from "../helpers/e2e-world.ts";
import { runCommand } from "../helpers/keyring.ts";
import type { PiSession } from "../helpers/pi-harness.ts";
import { startPiProcess } from "../helpers/rpc-pi.ts";

let accounts: Record<string, AccountTokens>;
const world = useE2eWorld(async (current) => {
	accounts = await labelledAccounts(current, [{ label: "work" }, { label: "side" }, { label: "home" }], "home");
});
const asked = () => askedAccounts(world(), accounts);
let projects = 0;

/** A new git work tree (with a `src/deep` directory) under the test's root; its path has no symlink in it. */
async function gitProject(name: string): Promise<string> {
	const dir = join(world().env.root, `${name}-${++projects}`);
	await fs.mkdir(join(dir, "src", "deep"), { recursive: true });
	const init = await runCommand("git", ["init", "-q", dir], { timeoutMs: 20_000 });
	if (init.code !== 0) throw new Error(`git init failed: ${init.stderr}`);
	return dir;
}

/** Every file and directory under `dir`, with its size and modification time: what "nothing written" compares. */
async function snapshot(dir: string): Promise<string[]> {
	const entries: string[] = [];
	for (const name of await fs.readdir(dir, { recursive: true })) {
		const stats = await fs.lstat(join(dir, name));
		entries.push(`${relative(dir, join(dir, name))} ${stats.size} ${stats.mtimeMs}`);
	}
	return entries.sort();
}

async function bindings(): Promise<unknown> {
	return (JSON.parse(await fs.readFile(world().env.configFile, "utf8")) as { projects?: unknown }).projects;
}

/** The argument completions pi would show for `/mcc-use <prefix>`. */
async function completions(pi: PiSession, prefix: string): Promise<string[]> {
	const command = pi.session.extensionRunner.getCommand("mcc-use");
	const items = await command?.getArgumentCompletions?.(prefix);
	return (items ?? []).map((item) => item.value);
}

describe("a project bound to an account", () => {
	it("new sessions in the bound project and below start on it, one in a sibling on the last account chosen; nothing is written inside the project", async () => {
		const app = await gitProject("app");
		const sibling = join(world().env.root, "sibling");
		const before = await snapshot(app);
		// Bound from a directory below the root: the binding is the git work tree's root.
		const binder = await startPiProcess(world().env, { cwd: join(app, "src") });
		await binder.command("/mcc-use side --project");
		await footerMatching(binder, footerOn("side", true));
		expect(binder.notifications()).toContain(`New sessions in ${app} (and below) start on "side".`);
		await binder.stop();
		expect(await bindings()).toEqual([{ path: app, label: "side" }]);

		// A session that started on the binding can still switch (that choice becomes the default elsewhere).
		const inApp = await startPiProcess(world().env, { cwd: app });
		await footerMatching(inApp, footerOn("side", true));
		world().api.clearRequests();
		expect((await inApp.prompt("in the project")).text).toBe("answer from side");
		await inApp.command("/mcc-use work");
		await footerMatching(inApp, footerOn("work"));
		expect((await inApp.prompt("switched")).text).toBe("answer from work");
		await inApp.stop();
		const starts: Array<[string, string, boolean]> = [
			[join(app, "src", "deep"), "side", true],
			[sibling, "work", false],
		];
		for (const [cwd, label, project] of starts) {
			const pi = await startPiProcess(world().env, { cwd });
			await footerMatching(pi, footerOn(label, project));
			expect((await pi.prompt(`in ${cwd}`)).text).toBe(`answer from ${label}`);
			await pi.stop();
		}
		expect(asked()).toEqual(["side", "work", "side", "work"]);
		expect(await snapshot(app)).toEqual(before);
	});

	it("/mcc-use --project binds it, /mcc-status lists it, the footer says (project); /mcc-use --project off removes it", async () => {
		const app = await gitProject("status");
		const pi = await world().start({ cwd: app });
		await footerMatching(pi, footerOn("home"));
		await pi.runCommand("/mcc-use side --project");
		expect(pi.footer()).toMatch(footerOn("side", true));
		world().api.clearRequests();
		expect((await pi.prompt("bound")).text).toBe("answer from side");
		expect(asked()).toEqual(["side"]);
		// Still said after a request: the footer never loses where the account comes from.
		expect(pi.footer()).toMatch(footerOn("side", true));

		await pi.runCommand("/mcc-status");
		const status = lastNotification(pi) ?? "";
		expect(status).toMatch(/^\* side: this session's account \(project binding\)/m);
		expect(status).toContain("Project bindings");
		expect(status.split("\n")).toContain(`  ${app} → side`);
		// A binding does not move the default for new sessions elsewhere.
		expect(status).toMatch(/^ {2}home: .*default for new sessions/m);

		await pi.runCommand("/mcc-use --project off");
		expect(lastNotification(pi)).toContain(`Removed the binding of ${app} to "side"`);
		expect(await bindings()).toBeUndefined();
		expect(pi.footer()).toMatch(footerOn("side"));
		await pi.runCommand("/mcc-status");
		expect(lastNotification(pi)).not.toContain("Project bindings");
		await pi.newSession();
		await footerMatching(pi, footerOn("home"));
		expect((await pi.prompt("unbound")).text).toBe("answer from home");
	});

	it("a cloned repository cannot choose an account: a config inside the project is never read", async () => {
		const cloned = await gitProject("cloned");
		const planted = JSON.stringify({
			version: 1,
			activeLabel: "side",
			accounts: [{ label: "side", fallbackTo: [] }],
			projects: [{ path: cloned, label: "side" }],
		});
		await fs.mkdir(join(cloned, ".pi", "agent"), { recursive: true });
		for (const file of ["multi-claude-code.json", join(".pi", "agent", "multi-claude-code.json")]) {
			await fs.writeFile(join(cloned, file), planted);
		}
		const pi = await world().start({ cwd: cloned });
		await footerMatching(pi, footerOn("home"));
		world().api.clearRequests();
		expect((await pi.prompt("in a cloned repository")).text).toBe("answer from home");
		expect(asked()).toEqual(["home"]);
	});

	it("a binding whose directory was deleted is listed as no longer existing, not dropped", async () => {
		const gone = join(world().env.root, "gone-project");
		const binder = await world().start({ cwd: gone });
		await binder.runCommand("/mcc-use home --project");
		await binder.dispose();
		await fs.rm(gone, { recursive: true, force: true });
		const pi = await world().start();
		await pi.runCommand("/mcc-status");
		expect(lastNotification(pi)).toContain(`${gone} → home (directory no longer exists)`);
		expect(await bindings()).toEqual([{ path: gone, label: "home" }]);
	});

	it("/mcc-remove of a bound account removes its bindings and names them", async () => {
		const app = await gitProject("removed");
		const plain = join(world().env.root, "plain-project");
		for (const cwd of [app, plain]) {
			const binder = await world().start({ cwd, sessionStorage: "memory" });
			await binder.runCommand("/mcc-use side --project");
			await binder.dispose();
		}
		const keeper = await world().start({ cwd: join(world().env.root, "kept"), sessionStorage: "memory" });
		await keeper.runCommand("/mcc-use work --project");
		expect(await bindings()).toHaveLength(3);
		const pi = await world().start();
		await pi.runCommand("/mcc-remove side");
		expect(lastNotification(pi)).toContain(`Its project bindings were removed too: ${app}, ${plain}.`);
		expect(await bindings()).toEqual([{ path: join(world().env.root, "kept"), label: "work" }]);
		const after = await world().start({ cwd: join(app, "src") });
		await footerMatching(after, footerOn("home"));
		expect((await after.prompt("after the removal")).text).toBe("answer from home");
	});

	it("compares paths after resolving symlinks: a session in a symlinked path starts on the bound account", async () => {
		const app = await gitProject("linked");
		const link = join(world().env.root, "link-to-linked");
		await fs.symlink(app, link);
		const binder = await world().start({ cwd: app, sessionStorage: "memory" });
		await binder.runCommand("/mcc-use side --project");
		await binder.dispose();
		// The session's directory is the link: only a resolved comparison finds the binding.
		const viaLink = await world().start({ cwd: join(link, "src") });
		expect(viaLink.session.sessionManager.getCwd()).toBe(join(link, "src"));
		await footerMatching(viaLink, footerOn("side", true));
		world().api.clearRequests();
		expect((await viaLink.prompt("through the link")).text).toBe("answer from side");
		expect(asked()).toEqual(["side"]);
		// Bound through the link, the binding names the real directory.
		await viaLink.runCommand("/mcc-use --project off");
		await viaLink.runCommand("/mcc-use home --project");
		expect(await bindings()).toEqual([{ path: app, label: "home" }]);
		const real = await world().start({ cwd: join(app, "src", "deep") });
		await footerMatching(real, footerOn("home", true));
	});

	it("completes /mcc-use's --project flag and, after it, off and the labels", async () => {
		const pi = await world().start();
		expect(await completions(pi, "--")).toEqual(["--project"]);
		expect(await completions(pi, "--project ")).toEqual([
			"--project off",
			"--project work",
			"--project side",
			"--project home",
		]);
		expect(await completions(pi, "--project o")).toEqual(["--project off"]);
		expect(await completions(pi, "side --")).toEqual(["side --project"]);
		expect(await completions(pi, "s")).toEqual(["side"]);
	});
});
