import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

const root = resolve(import.meta.dirname, "..");
const piBin = join(root, "node_modules", "@mariozechner", "pi-coding-agent", "dist", "cli.js");
// Asynchronous on purpose: a synchronous npm call would block the test worker's event loop for many seconds.
const run = promisify(execFile);

async function runPi(args: string[], env: NodeJS.ProcessEnv): Promise<{ status: number; output: string }> {
	try {
		const { stdout, stderr } = await run(process.execPath, [piBin, ...args], {
			env,
			encoding: "utf8",
			timeout: 60_000,
		});
		return { status: 0, output: `${stdout}${stderr}` };
	} catch (error) {
		const failed = error as { code?: number; stdout?: string; stderr?: string };
		return { status: typeof failed.code === "number" ? failed.code : 1, output: `${failed.stdout}${failed.stderr}` };
	}
}

/**
 * The published shape: what `npm pack` puts in the tarball, installed the way pi installs a package (production
 * dependencies only; pi packages come from pi itself), loaded by the real pi.
 */
describe("the npm package", () => {
	let work: string;
	let unpacked: string;
	let files: string[];

	beforeAll(async () => {
		work = mkdtempSync(join(tmpdir(), "pi-mcc-pack-"));
		const { stdout } = await run("npm", ["pack", "--json", "--pack-destination", work], {
			cwd: root,
			encoding: "utf8",
			timeout: 120_000,
		});
		const packed = JSON.parse(stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
		files = packed[0]!.files.map((file) => file.path);
		await run("tar", ["-xzf", join(work, packed[0]!.filename), "-C", work], { timeout: 30_000 });
		unpacked = join(work, "package");
		// Offline: only the npm cache that `npm ci` filled, so no network is touched. Peers are left to pi.
		await run(
			"npm",
			["install", "--omit=dev", "--omit=peer", "--offline", "--ignore-scripts", "--no-audit", "--no-fund"],
			{
				cwd: unpacked,
				encoding: "utf8",
				timeout: 180_000,
			},
		);
	}, 300_000);

	afterAll(() => {
		if (work) rmSync(work, { recursive: true, force: true });
	});

	test("the tarball holds the extension and its sources, and no tests or local state", () => {
		expect(files).toContain("index.ts");
		expect(files).toContain("package.json");
		expect(files).toContain("README.md");
		expect(files.some((file) => file.startsWith("src/keychain/"))).toBe(true);
		expect(files.some((file) => file.startsWith("test/"))).toBe(false);
		expect(files.some((file) => file.startsWith("node_modules/"))).toBe(false);
		expect(files.some((file) => /multi-claude-code(-state)?\.json$/.test(file))).toBe(false);
	});

	test("the manifest declares the pi extension, the pi-package keyword and pi as a peer", () => {
		const manifest = JSON.parse(readFileSync(join(unpacked, "package.json"), "utf8"));
		expect(manifest.pi.extensions).toEqual(["./index.ts"]);
		expect(manifest.keywords).toContain("pi-package");
		expect(Object.keys(manifest.peerDependencies)).toEqual(
			expect.arrayContaining(["@mariozechner/pi-coding-agent", "@mariozechner/pi-ai"]),
		);
		expect(Object.keys(manifest.dependencies)).toEqual(expect.arrayContaining(["@napi-rs/keyring", "zod", "open"]));
	});

	test("pi installs the unpacked package and lists the multi-claude-code provider", async () => {
		const home = mkdtempSync(join(tmpdir(), "pi-mcc-home-"));
		const env = { ...process.env, HOME: home, PI_CODING_AGENT_DIR: join(home, "agent"), PI_OFFLINE: "1" };
		try {
			const install = await runPi(["install", unpacked], env);
			expect(install.status, install.output).toBe(0);
			const settings = JSON.parse(readFileSync(join(home, "agent", "settings.json"), "utf8"));
			expect(JSON.stringify(settings.packages)).toContain("package");
			const list = await runPi(["--list-models", "multi-claude-code"], env);
			expect(list.status, list.output).toBe(0);
			// pi prints the model table on stderr; both streams are searched.
			const output = list.output;
			const rows = output.split("\n").filter((line) => line.startsWith("multi-claude-code"));
			expect(rows.length).toBeGreaterThan(10);
			expect(output).toContain("claude-sonnet-4-5");
			expect(output).not.toMatch(/Failed to load extension|Cannot find module/);
		} finally {
			rmSync(home, { recursive: true, force: true });
		}
	}, 120_000);
});
