/**
 * The compiled migration bin (`pi-mcc-migrate`, dist/scripts/migrate.js as `npm run build` makes it), built once
 * per `npm test` run for all security test files: into the private scratch directory test/run-with-keyring.sh
 * creates (and deletes at exit), under a lock so parallel files build it only once. Elsewhere (macOS, Windows)
 * each file builds its own copy with test/helpers/migration-cli.ts's buildMigrate.
 */
import { execFile } from "node:child_process";
import { promises as fs } from "node:fs";
import { join } from "node:path";
import lockfile from "proper-lockfile";
import { buildMigrate, Migrate, ROOT } from "../../helpers/migration-cli.ts";

let built: Promise<{ script: string; remove: () => Promise<void> }> | undefined;

async function buildShared(dir: string): Promise<string> {
	const outDir = join(dir, "security-migrate-build");
	const script = join(outDir, "scripts", "migrate.js");
	const marker = join(outDir, ".complete");
	await fs.mkdir(dir, { recursive: true });
	const release = await lockfile.lock(dir, {
		lockfilePath: join(dir, "security-migrate-build.lock"),
		stale: 120_000,
		retries: { retries: 600, minTimeout: 100, maxTimeout: 200 },
	});
	try {
		if (
			await fs.stat(marker).then(
				() => true,
				() => false,
			)
		)
			return script;
		await fs.rm(outDir, { recursive: true, force: true });
		await fs.mkdir(outDir, { recursive: true });
		await fs.writeFile(join(outDir, "package.json"), '{ "type": "module" }\n');
		await fs.symlink(join(ROOT, "node_modules"), join(outDir, "node_modules"), "dir");
		const tsc = join(ROOT, "node_modules", "typescript", "bin", "tsc");
		await new Promise<void>((resolve, reject) => {
			execFile(
				process.execPath,
				[tsc, "-p", "tsconfig.build.json", "--outDir", outDir],
				{ cwd: ROOT, timeout: 120_000 },
				(error, out) =>
					error ? reject(new Error(`building the migration failed: ${error.message}\n${out}`)) : resolve(),
			);
		});
		await fs.writeFile(marker, "");
		return script;
	} finally {
		await release();
	}
}

/** The path of the compiled bin (built on first call). */
export function migrateScript(): Promise<string> {
	const scratch = process.env.PI_MCC_TEST_KEYRING_DIR;
	built ??= scratch ? buildShared(scratch).then((script) => ({ script, remove: async () => {} })) : buildMigrate();
	return built.then((result) => result.script);
}

/** Removes a per-file build (the shared one goes with the test keyring's scratch directory). */
export async function removeMigrateBuild(): Promise<void> {
	await (await built)?.remove();
}

/** A runner of the bin with the given base environment (every value a string). */
export async function migrateRunner(env: NodeJS.ProcessEnv): Promise<Migrate> {
	const base: Record<string, string> = {};
	for (const [key, value] of Object.entries(env)) if (value !== undefined) base[key] = value;
	delete base.PI_MCC_MIGRATE_PAUSE_AT;
	return new Migrate(await migrateScript(), base);
}
