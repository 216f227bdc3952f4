/**
 * One security test file's world: the fake Messages API and token endpoint on 127.0.0.1, an isolated HOME /
 * agent dir / session dir / keychain service (test/helpers/pi-harness.ts), and a private temp directory that
 * every child process gets as its TMPDIR, so "every file this run wrote" is one tree to search.
 */
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import { join } from "node:path";
import type { FakeTokenEndpointOptions } from "../../helpers/fake-token-endpoint.ts";
import { createE2eWorld, type E2eWorld } from "../../helpers/pi-harness.ts";

export interface SecurityWorld extends E2eWorld {
	/** The private temp directory (TMPDIR of every child process). */
	tmp: string;
	/** Authorization codes the test registered (secrets for one exchange: searched like tokens). */
	codes: string[];
	/** A fresh authorization code the token endpoint accepts once. */
	newCode(): string;
	/**
	 * Every secret of this run: each access and refresh token the token endpoint issued, every authorization
	 * code and PKCE verifier sent to it, plus `extra`.
	 */
	secrets(extra?: readonly string[]): string[];
	/** The environment for child processes (process.env after createTestEnv, plus overrides). */
	childEnv(overrides?: Record<string, string | undefined>): NodeJS.ProcessEnv;
}

export async function createSecurityWorld(
	extraEnv: Record<string, string | undefined> = {},
	tokenOptions: FakeTokenEndpointOptions = {},
): Promise<SecurityWorld> {
	const world = await createE2eWorld(tokenOptions);
	const tmp = join(world.env.root, "tmp");
	await fs.mkdir(tmp, { recursive: true, mode: 0o700 });
	world.env.set({ TMPDIR: tmp, ...extraEnv });
	const codes: string[] = [];
	return {
		...world,
		tmp,
		codes,
		newCode() {
			const code = `code-${randomBytes(24).toString("base64url")}`;
			codes.push(code);
			world.tokens.registerCode(code);
			return code;
		},
		secrets(extra = []) {
			const verifiers = world.tokens.requests
				.map((request) => request.code_verifier)
				.filter((value): value is string => typeof value === "string" && value.length >= 16);
			return [...new Set([...world.tokens.issued, ...codes, ...verifiers, ...extra])];
		},
		childEnv(overrides = {}) {
			const env: NodeJS.ProcessEnv = { ...process.env };
			for (const [key, value] of Object.entries(overrides)) {
				if (value === undefined) delete env[key];
				else env[key] = value;
			}
			return env;
		},
	};
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
	return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits until `check` holds (bounded). */
export async function until(check: () => boolean | Promise<boolean>, what: string, withinMs = 10_000): Promise<void> {
	const deadline = Date.now() + withinMs;
	while (!(await check())) {
		if (Date.now() > deadline) throw new Error(`timed out after ${withinMs} ms waiting for ${what}`);
		await sleep(10);
	}
}
