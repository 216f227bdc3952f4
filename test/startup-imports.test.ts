import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { describe, expect, it } from "vitest";

const root = resolve(import.meta.dirname, "..");
/** Packages that must load on first use only: together they cost pi about 55 ms at every start. */
const HEAVY = ["zod", "@napi-rs/keyring", "proper-lockfile", "open"];

/** Value imports (not `import type`, not type-only specifier lists) of a TypeScript file, static ones only. */
function valueImports(file: string): string[] {
	const source = readFileSync(file, "utf8");
	const found: string[] = [];
	for (const match of source.matchAll(/^import\s+(type\s+)?([\s\S]*?)\s+from\s+"([^"]+)";/gm)) {
		if (match[1]) continue;
		const clause = match[2]!;
		const names = /^\{([\s\S]*)\}$/.exec(clause.trim());
		if (names && names[1]!.split(",").every((name) => name.trim() === "" || name.trim().startsWith("type ")))
			continue;
		found.push(match[3]!);
	}
	for (const match of source.matchAll(/^import\s+"([^"]+)";/gm)) found.push(match[1]!);
	return found;
}

function eagerGraph(entry: string): { files: Set<string>; packages: Map<string, string> } {
	const files = new Set<string>();
	const packages = new Map<string, string>();
	const queue = [entry];
	while (queue.length > 0 && files.size < 500) {
		const file = queue.pop()!;
		if (files.has(file)) continue;
		files.add(file);
		for (const specifier of valueImports(file)) {
			if (specifier.startsWith(".")) queue.push(join(dirname(file), specifier.replace(/\.js$/, ".ts")));
			else packages.set(specifier, file);
		}
	}
	return { files, packages };
}

describe("pi start-up cost", () => {
	it("loading index.ts pulls in neither the keyring nor zod: they load on first use", () => {
		const { files, packages } = eagerGraph(join(root, "index.ts"));
		expect(files.size).toBeGreaterThan(3);
		for (const heavy of HEAVY) {
			const importer = [...packages.entries()].find(([name]) => name === heavy || name.startsWith(`${heavy}/`));
			expect(importer, `${heavy} is imported eagerly by ${importer?.[1]}`).toBeUndefined();
		}
		expect([...files].some((file) => file.endsWith("/src/core.ts"))).toBe(false);
	});

	it("index.ts loads only the names pi registers: every handler loads on first use", () => {
		const { files } = eagerGraph(join(root, "index.ts"));
		const relative = [...files].map((file) => file.slice(root.length + 1)).sort();
		expect(relative).toEqual([
			"index.ts",
			"src/host.ts",
			"src/manifest.ts",
			"src/provider/models.ts",
			"src/redact.ts",
			"src/session/registry.ts",
			"src/settings.ts",
			"src/text.ts",
		]);
	});

	it("the lazily loaded core does import them, so the check above is looking at the right graph", () => {
		const { packages } = eagerGraph(join(root, "src", "core.ts"));
		expect(packages.has("@napi-rs/keyring")).toBe(true);
		expect(packages.has("zod")).toBe(true);
	});
});
