/**
 * The published shape, on the line this process drives (`npm test` runs this file on pi 0.73.1 and on pi 1.x):
 * what `npm pack` puts in the tarball, installed with the npm command that line's pi runs for `pi install npm:…`,
 * then installed into pi and loaded by it.
 *
 * Offline, and with no warm cache: the install runs with `--offline` from the npm cache that `npm ci` filled. A
 * fresh resolution would need full registry documents that `npm ci` never downloads (npm ci reads versions from
 * the lockfile), so the consumer root gets a lockfile, as a consumer who installed before would have: the
 * tarball's own entries of the repository's lockfile (its dependencies, and on 0.73 its peers, which that npm
 * command installs too). The tarball's devDependencies are never resolved: npm ignores a dependency's.
 */
import { createHash } from "node:crypto";
import { promises as fs, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCommand } from "./helpers/keyring.ts";
import { piCommand, piLine, REPO_ROOT } from "./helpers/pi-line.ts";

const line = piLine();
const manifest = JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as {
	name: string;
	version: string;
	files: string[];
	dependencies: Record<string, string>;
	peerDependencies: Record<string, string>;
	[field: string]: unknown;
};

/** npm itself: the one running `npm test` (npm_execpath) on this process's Node, else npm from PATH. */
async function npm(args: string[], cwd: string, timeoutMs: number): Promise<string> {
	const cli = process.env.npm_execpath;
	const [command, argv] = cli?.endsWith(".js") ? [process.execPath, [cli, ...args]] : ["npm", args];
	const result = await runCommand(command, argv, { cwd, timeoutMs });
	if (result.code !== 0) throw new Error(`npm ${args.join(" ")} failed (${result.code}):\n${result.stderr}`);
	return result.stdout;
}

/**
 * The consumer's lockfile: the tarball as a file dependency, plus every entry of the repository's lockfile its
 * dependencies (and, with peers, its peers') reach, at the same places in node_modules.
 */
function consumerLock(tarball: string, root: string, withPeers: boolean): object {
	const lock = JSON.parse(readFileSync(join(REPO_ROOT, "package-lock.json"), "utf8")) as {
		packages: Record<string, Record<string, unknown>>;
	};
	type Deps = Record<string, string> | undefined;
	// Node's lookup: the nearest node_modules/<name> at or above the package at `from`.
	const where = (from: string, name: string): string | undefined => {
		for (let at = from; ; at = at.slice(0, Math.max(0, at.lastIndexOf("/node_modules/")))) {
			const path = `${at ? `${at}/` : ""}node_modules/${name}`;
			if (lock.packages[path]) return path;
			if (!at) return undefined;
		}
	};
	const kept = new Map<string, Record<string, unknown>>();
	const visit = (from: string, deps: Deps[]): void => {
		for (const name of deps.flatMap((list) => Object.keys(list ?? {}))) {
			const path = where(from, name);
			if (!path || kept.has(path)) continue;
			const { dev, devOptional, peer, ...entry } = lock.packages[path] ?? {};
			kept.set(path, entry);
			visit(path, [
				entry.dependencies,
				entry.optionalDependencies,
				withPeers ? entry.peerDependencies : {},
			] as Deps[]);
		}
	};
	visit("", [manifest.dependencies, withPeers ? manifest.peerDependencies : {}]);
	const spec = `file:${relative(root, tarball).replaceAll("\\", "/")}`;
	const integrity = `sha512-${createHash("sha512").update(readFileSync(tarball)).digest("base64")}`;
	const { name, version, license, dependencies, peerDependencies, bin, engines } = manifest;
	return {
		name: "pi-extensions",
		lockfileVersion: 3,
		requires: true,
		packages: {
			"": { name: "pi-extensions", dependencies: { [name]: spec } },
			[`node_modules/${name}`]: {
				version,
				resolved: spec,
				integrity,
				license,
				dependencies,
				peerDependencies,
				bin,
				engines,
			},
			...Object.fromEntries([...kept].sort(([a], [b]) => a.localeCompare(b))),
		},
	};
}

async function listFiles(dir: string, base = dir): Promise<string[]> {
	const found: string[] = [];
	for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
		const path = join(dir, entry.name);
		if (entry.isDirectory()) found.push(...(await listFiles(path, base)));
		else found.push(relative(base, path).replaceAll("\\", "/"));
	}
	return found.sort();
}

async function runPi(args: string[], env: NodeJS.ProcessEnv): Promise<{ status: number | null; output: string }> {
	const [node, argv] = piCommand(args);
	const result = await runCommand(node, argv, { env, timeoutMs: 60_000 });
	return { status: result.code, output: `${result.stdout}${result.stderr}` };
}

describe(`the npm package, installed the way pi ${line.version} installs one`, () => {
	let work: string;
	let root: string;
	let installed: string;
	let packed: string[];

	beforeAll(async () => {
		work = mkdtempSync(join(tmpdir(), "pi-mcc-pack-"));
		const out = await npm(["pack", "--json", "--pack-destination", work], REPO_ROOT, 120_000);
		const [tarball] = JSON.parse(out) as Array<{ filename: string; files: Array<{ path: string }> }>;
		packed = tarball!.files.map((file) => file.path).sort();
		const tgz = join(work, tarball!.filename);
		// pi 1.x: `npm install <spec> --prefix <root> --legacy-peer-deps` into a root it makes like this one;
		// pi 0.73: `npm install <spec> --prefix <root>`, so npm installs the "*" peers as well.
		root = join(work, "pi-root");
		await fs.mkdir(root);
		await fs.writeFile(join(root, "package.json"), JSON.stringify({ name: "pi-extensions", private: true }));
		const lock = consumerLock(tgz, root, line.name === "0.73");
		await fs.writeFile(join(root, "package-lock.json"), JSON.stringify(lock, null, 2));
		const peers = line.name === "1.x" ? ["--legacy-peer-deps"] : [];
		// No install scripts anywhere in the tree are needed, and npm versions disagree on which they run.
		const flags = ["--offline", "--ignore-scripts", "--no-audit", "--no-fund"];
		await npm(["install", tgz, "--prefix", root, ...peers, ...flags], root, 180_000);
		installed = join(root, "node_modules", manifest.name);
	}, 300_000);

	afterAll(() => {
		if (work) rmSync(work, { recursive: true, force: true });
	});

	it("the tarball holds exactly what package.json `files` names, and no tests or local state", () => {
		const named = (path: string, entry: string) => path === entry || path.startsWith(`${entry}/`);
		// npm adds package.json itself; everything else comes from `files`, and every entry of `files` is there.
		expect(packed.filter((path) => path !== "package.json" && !manifest.files.some((e) => named(path, e)))).toEqual(
			[],
		);
		for (const entry of manifest.files)
			expect(
				packed.some((path) => named(path, entry)),
				entry,
			).toBe(true);
		expect(packed).toContain("index.ts");
		expect(packed.some((path) => path.startsWith("src/keychain/"))).toBe(true);
		expect(packed.some((path) => /^(test|bench|node_modules)\//.test(path))).toBe(false);
		expect(packed.some((path) => /multi-claude-code(-state)?\.json$/.test(path))).toBe(false);
	});

	it("the manifest declares the extension, the pi-package keyword, pi's packages as `*` peers and engines", () => {
		const shipped = JSON.parse(readFileSync(join(installed, "package.json"), "utf8"));
		expect(shipped.pi.extensions).toEqual(["./index.ts"]);
		expect(shipped.keywords).toContain("pi-package");
		expect(shipped.peerDependencies).toEqual({ "@mariozechner/pi-ai": "*", "@mariozechner/pi-coding-agent": "*" });
		expect(Object.keys(shipped.dependencies).sort()).toEqual(["@napi-rs/keyring", "open", "proper-lockfile", "zod"]);
		expect(shipped.engines.node).toMatch(/^>=\s*20\.6/);
		// The supported pi lines, which include the one under test ("0.73.x || 1.x").
		const lines = String(shipped.engines.pi)
			.split("||")
			.map((range) => range.trim().replace(/x$/, ""));
		expect(lines).toEqual(["0.73.", "1."]);
		expect(lines.some((prefix) => line.version.startsWith(prefix))).toBe(true);
	});

	it("npm installs the tarball offline: exactly its files, its runtime dependencies, none of its dev tools", async () => {
		expect(await listFiles(installed)).toEqual(packed);
		const modules = await fs.readdir(join(root, "node_modules"));
		for (const dependency of Object.keys(manifest.dependencies)) {
			expect(modules, dependency).toContain(dependency.split("/")[0]);
		}
		expect(modules).not.toContain("vitest");
		expect(modules).not.toContain("typescript");
		expect(modules).not.toContain("@biomejs");
		// pi 1.x keeps host packages out (they are its own); npm 7+ installs 0.73's "*" peers, which pi ignores.
		const peers = await fs.readdir(join(root, "node_modules", "@mariozechner")).catch(() => []);
		if (line.name === "1.x") expect(peers).toEqual([]);
		else expect(peers).toEqual(expect.arrayContaining(["pi-ai", "pi-coding-agent"]));
	});

	it(`pi ${line.version} installs the package and lists the multi-claude-code provider`, async () => {
		const home = mkdtempSync(join(tmpdir(), "pi-mcc-home-"));
		const agentDir = join(home, "agent");
		const env = { ...process.env, HOME: home, PI_CODING_AGENT_DIR: agentDir, PI_OFFLINE: "1", PI_TELEMETRY: "0" };
		try {
			const install = await runPi(["install", installed], env);
			expect(install.status, install.output).toBe(0);
			const settings = JSON.parse(readFileSync(join(agentDir, "settings.json"), "utf8"));
			expect(JSON.stringify(settings.packages)).toContain(manifest.name);
			const list = await runPi(["--list-models", "multi-claude-code"], env);
			expect(list.status, list.output).toBe(0);
			// pi prints the model table on stderr; both streams are searched.
			const rows = list.output.split("\n").filter((row) => row.startsWith("multi-claude-code"));
			expect(rows.length).toBeGreaterThan(10);
			expect(list.output).toContain("claude-sonnet-4-5");
			expect(list.output).not.toMatch(/Failed to load extension|Cannot find module|peerDependencies/);
		} finally {
			rmSync(home, { recursive: true, force: true });
		}
	}, 120_000);
});
