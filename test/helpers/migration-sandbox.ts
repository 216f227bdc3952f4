import { createHash } from "node:crypto";
import { promises as fs, type Stats } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { newAccessToken, newRefreshToken } from "./fake-token-endpoint.ts";

/** A throwaway HOME with pi's agent directory inside, as the migration sees it. */
export class Sandbox {
	private constructor(readonly home: string) {}

	static async create(): Promise<Sandbox> {
		const sandbox = new Sandbox(await fs.mkdtemp(join(tmpdir(), "pi-mcc-migration-")));
		await fs.mkdir(sandbox.agentDir, { recursive: true, mode: 0o700 });
		return sandbox;
	}

	get agentDir(): string {
		return join(this.home, ".pi", "agent");
	}

	get configFile(): string {
		return join(this.agentDir, "multi-claude-code.json");
	}

	get authFile(): string {
		return join(this.agentDir, "auth.json");
	}

	async write(file: string, text: string, mode = 0o600): Promise<void> {
		await fs.writeFile(file, text, { mode });
		await fs.chmod(file, mode);
	}

	read(file: string): Promise<string> {
		return fs.readFile(file, "utf8");
	}

	async mode(file: string): Promise<number> {
		return (await fs.stat(file)).mode & 0o777;
	}

	/** Every entry under the sandbox with type, mode, size, content hash and mtime: equal means untouched. */
	async snapshot(): Promise<Record<string, string>> {
		const entries: Record<string, string> = {};
		await this.walk(async (path, stat) => {
			const kind = stat.isDirectory() ? "dir" : stat.isSymbolicLink() ? "link" : "file";
			const hash =
				kind === "file"
					? createHash("sha256")
							.update(await fs.readFile(path))
							.digest("hex")
					: "";
			entries[relative(this.home, path)] =
				`${kind} ${(stat.mode & 0o777).toString(8)} ${stat.size} ${hash} ${stat.mtimeMs}`;
		});
		return entries;
	}

	/** Sandbox-relative paths of every file (lock directories and temp files included) holding any secret. */
	async filesContaining(secrets: readonly string[]): Promise<string[]> {
		const hits: string[] = [];
		await this.walk(async (path, stat) => {
			if (stat.isFile() && containsAny(await fs.readFile(path, "utf8"), secrets))
				hits.push(relative(this.home, path));
		});
		return hits.sort();
	}

	/** Temp files left by an interrupted atomic write (`.<name>.<pid>.<hex>.tmp`). */
	async tempFiles(): Promise<string[]> {
		return (await fs.readdir(this.agentDir)).filter((name) => name.endsWith(".tmp"));
	}

	/**
	 * Makes the locks a killed run left behind (the config's, and the accounts' refresh locks the broker takes to
	 * store a login) look abandoned for two minutes, so the next run takes them over at once.
	 */
	async ageLeftoverLocks(): Promise<string[]> {
		const refreshDir = join(this.agentDir, "multi-claude-code-locks");
		const inDir = async (dir: string): Promise<string[]> =>
			(await fs.readdir(dir).catch(() => [] as string[]))
				.filter((name) => name.endsWith(".lock"))
				.map((name) => join(dir, name));
		const locks = [...(await inDir(this.agentDir)), ...(await inDir(refreshDir))];
		const past = new Date(Date.now() - 120_000);
		for (const lock of locks) await fs.utimes(lock, past, past);
		return locks;
	}

	remove(): Promise<void> {
		return fs.rm(this.home, { recursive: true, force: true });
	}

	private async walk(visit: (path: string, stat: Stats) => Promise<void>): Promise<void> {
		const walkDir = async (dir: string): Promise<void> => {
			for (const name of await fs.readdir(dir)) {
				const path = join(dir, name);
				const stat = await fs.lstat(path);
				await visit(path, stat);
				if (stat.isDirectory()) await walkDir(path);
			}
		};
		await walkDir(this.home);
	}
}

/** Each token's random core is searched for on its own too, so even a fragment of one counts as a leak. */
export function containsAny(text: string, secrets: readonly string[]): boolean {
	return secrets.flatMap((token) => [token, token.slice(-24)]).some((secret) => text.includes(secret));
}

export interface LegacyAccountFixture {
	label: string;
	accessToken?: string;
	refreshToken?: string;
	expiresAt?: number;
	fallbackTo?: string | string[];
	[extra: string]: unknown;
}

export function legacyAccount(label: string, extra: Partial<LegacyAccountFixture> = {}): LegacyAccountFixture {
	return {
		label,
		accessToken: newAccessToken("mig"),
		refreshToken: newRefreshToken("mig"),
		expiresAt: Date.now() + 3_600_000,
		...extra,
	};
}

/** The original extension's file, indented as JSON.stringify(…, null, 2) writes it. */
export function legacyText(accounts: readonly LegacyAccountFixture[], top: Record<string, unknown> = {}): string {
	return `${JSON.stringify({ accounts, ...top }, null, 2)}\n`;
}

export function tokensOf(accounts: readonly LegacyAccountFixture[]): string[] {
	return accounts.flatMap((account) =>
		[account.accessToken, account.refreshToken].filter((token): token is string => typeof token === "string"),
	);
}
