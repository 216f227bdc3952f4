import { promises as fs } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { AccountsConfig } from "../src/config/schema.ts";
import { caseTwin, labelCaseClash, labelProblem } from "../src/config/schema.ts";
import { ConfigError, createConfigStore, createStateStore, MIGRATE_COMMAND } from "../src/config/stores.ts";
import { MAX_FILE_BYTES } from "../src/fs/private-file.ts";
import { printable } from "../src/text.ts";
import { rejection } from "./helpers/expect-error.ts";
import { REPO_ROOT, runCommand } from "./helpers/keyring.ts";

let dir: string;
let file: string;

beforeEach(async () => {
	dir = await fs.mkdtemp(join(tmpdir(), "pi-mcc-config-"));
	file = join(dir, "multi-claude-code.json");
});

afterEach(async () => {
	await fs.rm(dir, { recursive: true, force: true });
});

function addAccount(label: string, fallbackTo: string[] = []) {
	return (config: AccountsConfig) => {
		config.accounts.push({ label, fallbackTo });
		return { next: config, result: label };
	};
}

async function writeRaw(content: string | Buffer, mode = 0o600): Promise<Buffer> {
	const bytes = typeof content === "string" ? Buffer.from(content, "utf8") : content;
	await fs.writeFile(file, bytes, { mode });
	await fs.chmod(file, mode);
	return bytes;
}

const legacyAccess = "sk-ant-oat01-LEGACYaccessTOKENabcdefghijklmnopqrstuvwxyz0123456789";
const legacyRefresh = "sk-ant-ort01-LEGACYrefreshTOKENabcdefghijklmnopqrstuvwxyz0123456789";

interface BadFile {
	name: string;
	content: string;
	kind: ConfigError["kind"];
	says: RegExp;
	/** Text that must not appear in the message. */
	hides?: string[];
}

const v1 = (accounts: unknown, extra: Record<string, unknown> = {}): string =>
	JSON.stringify({ version: 1, accounts, ...extra });

const badFiles: BadFile[] = [
	{ name: "broken JSON", content: '{"version":1,"accounts":[', kind: "invalid", says: /is not valid JSON/ },
	{ name: "an empty file", content: "", kind: "invalid", says: /is not valid JSON/ },
	{
		// V8's SyntaxError quotes the text around the error: the message must not.
		name: "broken JSON around an unquoted token",
		content: `{"accounts":[{"label":"a","accessToken": ${"sk-ant-oat01-UNQUOTEDtokenABCDEFGHIJKLMNOPQRSTUVWXYZ012345"}}]}`,
		kind: "invalid",
		says: /is not valid JSON/,
		hides: ["sk-ant", "UNQUOTEDtoken", "ssToken"],
	},
	{ name: "a JSON array", content: "[]", kind: "invalid", says: /must hold a JSON object/ },
	{ name: "no version field", content: '{"accounts":[]}', kind: "invalid", says: /no "version" field/ },
	{ name: "an unknown version", content: '{"version":2,"accounts":[]}', kind: "invalid", says: /version/ },
	{ name: "accounts that are not a list", content: v1("a"), kind: "invalid", says: /accounts:/ },
	{ name: "a label that is a number", content: v1([{ label: 5 }]), kind: "invalid", says: /accounts\[0\]\.label/ },
	{
		name: "fallbackTo that is a string",
		content: v1([{ label: "a", fallbackTo: "b" }]),
		kind: "invalid",
		says: /accounts\[0\]\.fallbackTo/,
	},
	{
		name: "a negative loggedInAt",
		content: v1([{ label: "a", loggedInAt: -1 }]),
		kind: "invalid",
		says: /accounts\[0\]\.loggedInAt/,
	},
	{
		name: "a fallback to an unknown account",
		content: v1([{ label: "a", fallbackTo: ["ghost"] }]),
		kind: "invalid",
		says: /accounts\[0\]\.fallbackTo\[0\]: unknown account "ghost"/,
	},
	{
		name: "an account that falls back to itself",
		content: v1([{ label: "a", fallbackTo: ["a"] }]),
		kind: "invalid",
		says: /accounts\[0\]\.fallbackTo\[0\]: an account cannot fall back to itself/,
	},
	{
		name: "a fallback listed twice",
		content: v1([{ label: "a", fallbackTo: ["b", "b"] }, { label: "b" }]),
		kind: "invalid",
		says: /accounts\[0\]\.fallbackTo\[1\]: "b" is listed twice/,
	},
	{
		name: "duplicate labels",
		content: v1([{ label: "a" }, { label: "b" }, { label: "a" }]),
		kind: "invalid",
		says: /accounts\[2\]\.label: duplicate label "a"/,
	},
	{
		name: "an unknown active label",
		content: v1([{ label: "a" }], { activeLabel: "b" }),
		kind: "invalid",
		says: /activeLabel: unknown account "b"/,
	},
	{
		name: "two labels that differ only in letter case",
		content: v1([{ label: "work" }, { label: "home" }, { label: "Work" }]),
		kind: "invalid",
		says: /accounts\[2\]\.label: "Work" differs from "work" only in letter case.*remove one of the two accounts/,
	},
	{
		name: "a fallback that names an account in other letter case",
		content: v1([{ label: "work", fallbackTo: ["Home"] }, { label: "home" }]),
		kind: "invalid",
		says: /accounts\[0\]\.fallbackTo\[0\]: unknown account "Home" \(did you mean "home"\?/,
	},
	{
		name: "an active label in other letter case",
		content: v1([{ label: "work" }], { activeLabel: "WORK" }),
		kind: "invalid",
		says: /activeLabel: unknown account "WORK" \(did you mean "work"\?/,
	},
	...["../x", "a b", "ünïcödé", "bell\u0007label", "esc\u001b[31mred", "x".repeat(65), "", "-leading", "a/b"].map(
		(label): BadFile => ({
			name: `the bad label ${JSON.stringify(label).slice(0, 24)}`,
			content: v1([{ label }]),
			kind: "invalid",
			says: /accounts\[0\]\.label: not a valid label/,
		}),
	),
	{
		name: "a legacy file with plaintext tokens",
		content: JSON.stringify({
			accounts: [{ label: "a", accessToken: legacyAccess, refreshToken: legacyRefresh, expiresAt: 1 }],
		}),
		kind: "legacy",
		says: /accounts\[0\]\.accessToken.*accounts\[0\]\.refreshToken.*npx pi-mcc-migrate/s,
		hides: [legacyAccess, legacyRefresh, legacyAccess.slice(13), "LEGACY"],
	},
	{
		name: "a current file with a token pasted into an unexpected field",
		content: v1([{ label: "a", note: legacyAccess }]),
		kind: "legacy",
		says: /accounts\[0\]\.note/,
		hides: [legacyAccess, "LEGACY"],
	},
	{
		name: "a __proto__ key at the top level",
		content: '{"version":1,"accounts":[{"label":"a"}],"__proto__":{"activeLabel":"b"}}',
		kind: "invalid",
		says: /__proto__/,
	},
	{
		name: "a __proto__ key inside an account",
		content: '{"version":1,"accounts":[{"label":"a","__proto__":{"fallbackTo":["x"]}}]}',
		kind: "invalid",
		says: /__proto__/,
	},
];

describe("a config file this extension cannot use", () => {
	for (const bad of badFiles) {
		it(`holding ${bad.name} is refused with a ConfigError naming the file, and left byte-identical`, async () => {
			const store = createConfigStore(file);
			const before = await writeRaw(bad.content);
			const error = await rejection(store.read(), ConfigError);
			expect(error.kind).toBe(bad.kind);
			expect(error.file).toBe(file);
			expect(error.message).toContain(file);
			expect(error.message).toMatch(bad.says);
			for (const hidden of bad.hides ?? []) {
				expect(error.message.includes(hidden), `message shows ${hidden}`).toBe(false);
			}
			expect(error.message).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f]/);
			// update() refuses to write over it, and nothing else is left in the directory.
			const refused = await rejection(store.update(addAccount("new")), ConfigError);
			expect(refused.kind).toBe(bad.kind);
			expect(await fs.readFile(file)).toEqual(before);
			expect(await fs.readdir(dir)).toEqual([basename(file)]);
		});
	}

	it("the legacy message names the migration command exactly", async () => {
		await writeRaw(badFiles.find((bad) => bad.kind === "legacy")?.content ?? "");
		const error = await rejection(createConfigStore(file).read(), ConfigError);
		expect(MIGRATE_COMMAND).toBe("npx pi-mcc-migrate");
		expect(error.message).toContain("`npx pi-mcc-migrate`");
	});

	it("larger than 1 MiB is refused unread", async () => {
		const padding = " ".repeat(MAX_FILE_BYTES);
		const before = await writeRaw(`{"version":1,"accounts":[]${padding}}`);
		const store = createConfigStore(file);
		const error = await rejection(store.read(), ConfigError);
		expect(error.kind).toBe("invalid");
		expect(error.message).toContain(file);
		expect(error.message).toContain(String(before.length));
		expect((await rejection(store.update(addAccount("new")), ConfigError)).kind).toBe("invalid");
		expect((await fs.readFile(file)).equals(before)).toBe(true);
	});

	it("exactly 1 MiB is still read", async () => {
		const head = '{"version":1,"accounts":[]';
		await writeRaw(`${head}${" ".repeat(MAX_FILE_BYTES - head.length - 1)}}`);
		expect((await fs.stat(file)).size).toBe(MAX_FILE_BYTES);
		expect(await createConfigStore(file).read()).toEqual({ version: 1, accounts: [] });
	});

	it("that is a symbolic link is refused, and neither the link nor its target is changed", async () => {
		const target = join(dir, "elsewhere.json");
		const content = Buffer.from(v1([{ label: "a" }]));
		await fs.writeFile(target, content, { mode: 0o600 });
		await fs.symlink(target, file);
		const store = createConfigStore(file);
		const error = await rejection(store.read(), ConfigError);
		expect(error.kind).toBe("unsafe");
		expect(error.message).toContain(file);
		expect(error.message).toContain("symbolic link");
		expect((await rejection(store.update(addAccount("new")), ConfigError)).kind).toBe("unsafe");
		expect((await fs.lstat(file)).isSymbolicLink()).toBe(true);
		expect(await fs.readlink(file)).toBe(target);
		expect((await fs.readFile(target)).equals(content)).toBe(true);
	});

	for (const [who, mode] of [
		["its group", 0o620],
		["other users", 0o602],
		["everyone", 0o666],
	] as const) {
		it(`writable by ${who} (mode ${mode.toString(8)}) is refused with the chmod that fixes it`, async () => {
			const before = await writeRaw(v1([{ label: "a" }]), mode);
			const store = createConfigStore(file);
			const error = await rejection(store.read(), ConfigError);
			expect(error.kind).toBe("unsafe");
			expect(error.message).toContain(file);
			expect(error.message).toContain(`chmod 600 '${file}'`);
			expect((await rejection(store.update(addAccount("new")), ConfigError)).kind).toBe("unsafe");
			expect((await fs.readFile(file)).equals(before)).toBe(true);
			expect((await fs.stat(file)).mode & 0o777).toBe(mode);
		});
	}

	it("that is a directory is refused as not a regular file", async () => {
		await fs.mkdir(file);
		const error = await rejection(createConfigStore(file).read(), ConfigError);
		expect(error.kind).toBe("unsafe");
		expect(error.message).toContain(`${file} is not a regular file`);
	});

	it("a state file holding a token-like value is refused without quoting it", async () => {
		const stateFile = join(dir, "multi-claude-code-state.json");
		const content = JSON.stringify({ version: 1, needsLogin: { a: { since: 1, reason: legacyRefresh } } });
		await fs.writeFile(stateFile, content, { mode: 0o600 });
		const error = await rejection(createStateStore(stateFile).read(), ConfigError);
		expect(error.kind).toBe("unsafe");
		expect(error.message).toContain(stateFile);
		expect(error.message.includes(legacyRefresh)).toBe(false);
		expect(await fs.readFile(stateFile, "utf8")).toBe(content);
	});
});

describe("account labels", () => {
	it("accepts plain labels up to 64 characters", () => {
		for (const label of ["personal", "work", "side-project", "a", "A.b_c-9", "x".repeat(64)]) {
			expect(labelProblem(label), label).toBeUndefined();
		}
	});

	it("explains what is wrong with a bad label, showing control characters as ?", () => {
		expect(labelProblem("")).toBe("a label cannot be empty");
		expect(labelProblem("x".repeat(65))).toBe("a label has at most 64 characters");
		for (const label of ["../x", "a b", "ünïcödé", "-x", ".hidden", "a/b", "a;rm"]) {
			expect(labelProblem(label), label).toContain("is not a valid label");
		}
		const withControls = labelProblem("bell\u0007\u001b[2J\u202e");
		expect(withControls).toContain('"bell??[2J?"');
		expect(withControls).not.toMatch(/[\u0000-\u001f\u007f\u202e]/);
		expect(printable("y".repeat(100), 10)).toBe(`${"y".repeat(10)}…`);
	});
});

describe("labels that differ only in letter case", () => {
	it("are one label to the case-blind comparison, and distinct labels are not", () => {
		expect(caseTwin("Work", ["home", "work"])).toBe("work");
		expect(caseTwin("WORK", ["work"])).toBe("work");
		expect(caseTwin("work", ["work", "home"])).toBeUndefined();
		expect(caseTwin("works", ["work"])).toBeUndefined();
		expect(caseTwin("work", [])).toBeUndefined();
	});

	it("are refused for a new account with the existing label and the command that logs it in again", () => {
		const clash = labelCaseClash("Work", ["home", "work"]);
		expect(clash).toContain('"work" already exists');
		expect(clash).toContain("/mcc-login work");
		expect(clash).toMatch(/Windows Credential Manager/);
		expect(labelCaseClash("work", ["home", "work"])).toBeUndefined();
		expect(labelCaseClash("side", ["home", "work"])).toBeUndefined();
	});

	it("cannot be written into the config by an update, which leaves the file as it was", async () => {
		const store = createConfigStore(file);
		await store.update(addAccount("work"));
		const before = await fs.readFile(file);
		const error = await rejection(store.update(addAccount("Work")), ConfigError);
		expect(error.kind).toBe("invalid");
		expect(error.message).toMatch(/accounts\[1\]\.label: "Work" differs from "work" only in letter case/);
		expect((await fs.readFile(file)).equals(before)).toBe(true);
		// Other labels are still welcome.
		await store.update(addAccount("works"));
		expect((await store.read()).accounts.map((account) => account.label)).toEqual(["work", "works"]);
	});
});

describe("files the stores write", () => {
	it("are mode 0600 in directories created 0700, even under a permissive umask", async () => {
		const nested = join(dir, "agent", "deeper", "multi-claude-code.json");
		const previous = process.umask(0);
		try {
			await createConfigStore(nested).update(addAccount("personal"));
		} finally {
			process.umask(previous);
		}
		expect((await fs.stat(nested)).mode & 0o777).toBe(0o600);
		expect((await fs.stat(join(dir, "agent"))).mode & 0o777).toBe(0o700);
		expect((await fs.stat(join(dir, "agent", "deeper"))).mode & 0o777).toBe(0o700);
	});

	it("a readable file it rewrites is replaced by a new 0600 file, never edited in place", async () => {
		await writeRaw(v1([{ label: "a" }]), 0o644);
		const inodeBefore = (await fs.stat(file)).ino;
		await createConfigStore(file).update(addAccount("b"));
		const after = await fs.stat(file);
		expect(after.mode & 0o777).toBe(0o600);
		expect(after.ino).not.toBe(inodeBefore);
		expect(await fs.readdir(dir)).toEqual([basename(file)]);
	});

	it("what update() writes is what read() returns, in a tab-indented file ending with a newline", async () => {
		const store = createConfigStore(file);
		expect(await store.read()).toEqual({ version: 1, accounts: [] });
		expect(await fs.readdir(dir)).toEqual([]);
		expect(await store.update(addAccount("personal"))).toBe("personal");
		await store.update((config) => {
			config.accounts.push({ label: "work", fallbackTo: ["personal"], loggedInAt: 1_700_000_000_000 });
			config.activeLabel = "work";
			return { next: config, result: undefined };
		});
		const text = await fs.readFile(file, "utf8");
		expect(text.endsWith("}\n")).toBe(true);
		expect(text).toContain('\n\t"accounts": [');
		expect(await store.read()).toEqual({
			version: 1,
			activeLabel: "work",
			accounts: [
				{ label: "personal", fallbackTo: [] },
				{ label: "work", fallbackTo: ["personal"], loggedInAt: 1_700_000_000_000 },
			],
		});
		// A second store (another pi session) sees the same content.
		expect(await createConfigStore(file).read()).toEqual(await store.read());
	});

	it("an update that changes nothing does not write", async () => {
		const store = createConfigStore(file);
		expect(await store.update(() => ({ result: 42 }))).toBe(42);
		await expect(fs.stat(file)).rejects.toMatchObject({ code: "ENOENT" });
		await store.update(addAccount("a"));
		const mtime = (await fs.stat(file)).mtimeMs;
		const ino = (await fs.stat(file)).ino;
		await store.update(() => ({ result: undefined }));
		expect((await fs.stat(file)).ino).toBe(ino);
		expect((await fs.stat(file)).mtimeMs).toBe(mtime);
	});

	it("an update that would write an invalid config is refused and the file stays as it was", async () => {
		const store = createConfigStore(file);
		await store.update(addAccount("a"));
		const before = await fs.readFile(file);
		for (const change of [addAccount("a"), addAccount("b", ["ghost"]), addAccount("../evil")]) {
			const error = await rejection(store.update(change), ConfigError);
			expect(error.kind).toBe("invalid");
		}
		expect((await fs.readFile(file)).equals(before)).toBe(true);
		expect(await fs.readdir(dir)).toEqual([basename(file)]);
	});

	it("the shared state file keeps needs-login marks, 0600, with no secrets", async () => {
		const stateFile = join(dir, "state", "multi-claude-code-state.json");
		const state = createStateStore(stateFile);
		await state.update((current) => {
			current.needsLogin.work = { since: 5, reason: "refresh token rejected (invalid_grant)" };
			return { next: current, result: undefined };
		});
		expect((await fs.stat(stateFile)).mode & 0o777).toBe(0o600);
		const { needsLogin } = await state.read();
		expect(needsLogin).toEqual({ work: { since: 5, reason: "refresh token rejected (invalid_grant)" } });
	});
});

// Each process runs `PER_PROCESS` update() calls at once, each adding an account of its own.
const UPDATER_SCRIPT = `
import { createJiti } from "jiti";
const jiti = createJiti(import.meta.url);
const { createConfigStore } = await jiti.import(process.env.PI_MCC_CONFIG_MODULE);
const store = createConfigStore(process.env.PI_MCC_CONFIG_FILE);
const prefix = process.env.PI_MCC_UPDATER_PREFIX;
const count = Number(process.env.PI_MCC_UPDATER_COUNT);
const added = await Promise.all(
	Array.from({ length: count }, (_, i) =>
		store.update((config) => {
			config.accounts.push({ label: prefix + "-" + i, fallbackTo: [] });
			return { next: config, result: prefix + "-" + i };
		}),
	),
);
process.stdout.write(JSON.stringify(added) + "\\n");
`;

// Processes on a loaded two-core machine: allow for it (every wait inside is bounded).
const SLOW = { timeout: 120_000 };

describe("concurrent updates from several processes", () => {
	it("lose no account when 4 processes each run 10 concurrent updates, and leave no temp files", SLOW, async () => {
		const PROCESSES = 4;
		const PER_PROCESS = 10;
		const updater = (prefix: string, count: number) =>
			runCommand(process.execPath, ["--input-type=module", "-e", UPDATER_SCRIPT], {
				cwd: REPO_ROOT,
				timeoutMs: 60_000,
				env: {
					...process.env,
					PI_MCC_CONFIG_MODULE: join(REPO_ROOT, "src", "config", "stores.ts"),
					PI_MCC_CONFIG_FILE: file,
					PI_MCC_UPDATER_PREFIX: prefix,
					PI_MCC_UPDATER_COUNT: String(count),
				},
			});
		// One process that changes nothing loads the modules first, so the four do not all transpile them at once.
		const warmup = await updater("warmup", 0);
		expect(warmup.code, warmup.stderr).toBe(0);
		expect(JSON.parse(warmup.stdout)).toEqual([]);
		const results = await Promise.all(Array.from({ length: PROCESSES }, (_, p) => updater(`p${p}`, PER_PROCESS)));
		for (const result of results) expect(result.code, result.stderr).toBe(0);
		const reported = results.flatMap((result) => JSON.parse(result.stdout) as string[]);
		expect(reported).toHaveLength(PROCESSES * PER_PROCESS);
		const config = await createConfigStore(file).read();
		const labels = config.accounts.map((account) => account.label).sort();
		const expected = Array.from({ length: PROCESSES }, (_, p) =>
			Array.from({ length: PER_PROCESS }, (_, i) => `p${p}-${i}`),
		)
			.flat()
			.sort();
		expect(labels).toEqual(expected);
		expect(await fs.readdir(dir)).toEqual([basename(file)]);
		expect((await fs.stat(file)).mode & 0o777).toBe(0o600);
	});
});
