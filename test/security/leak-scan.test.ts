/**
 * Issue 7, promise 2: after a full run in the real pi runtime (a separate `pi --mode rpc` process with this
 * extension and session files on disk) that touches every path where a token passes — migration of the old
 * plaintext config, /mcc-login with a pasted code, requests, a forced refresh, a token endpoint whose error
 * bodies echo the tokens, a 429 whose body echoes the token, fallback, /mcc-status, /mcc-remove — no token the
 * fake servers issued (nor any authorization code or PKCE verifier, nor the middle part of any of them) is in any
 * file under the isolated HOME, agent dir, session dir and temp dir, nor in anything pi or the migration printed.
 */
import { promises as fs } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ok, rateLimited } from "../helpers/fake-anthropic-api.ts";
import { requireSecretService } from "../helpers/keyring.ts";
import { migrateRunner, removeMigrateBuild } from "../helpers/migration-cli.ts";
import { keychainLookup, sessionFiles } from "../helpers/pi-harness.ts";
import { lastLoginState, RpcPi } from "../helpers/rpc-pi.ts";
import {
	describeHits,
	type Hit,
	needleCount,
	plantCanary,
	scanText,
	scanTree,
	splitCanary,
} from "./helpers/leak-scan.ts";
import { createSecurityWorld, type SecurityWorld, sleep } from "./helpers/world.ts";

let world: SecurityWorld;

beforeAll(async () => {
	await requireSecretService();
	world = await createSecurityWorld({ PI_MCC_REFRESH_MARGIN_MS: "1000", PI_MCC_TOKEN_TIMEOUT_MS: "5000" });
}, 60_000);

afterAll(async () => {
	await world?.close();
	await removeMigrateBuild();
});

/** The pair the token endpoint issued last (grants and mintPair push access, then refresh). */
function lastPair(): { access: string; refresh: string } {
	const [access, refresh] = world.tokens.issued.slice(-2);
	if (!access || !refresh) throw new Error("no pair issued yet");
	return { access, refresh };
}

describe("a full run in the real pi runtime", () => {
	it("leaves no token, code or verifier in any file, session, log or output", { timeout: 150_000 }, async () => {
		const outputs: Array<{ where: string; text: string }> = [];
		const steps: string[] = [];

		// The old plaintext config, as the original extension left it: pi must refuse it without quoting it.
		const legacy = world.tokens.mintPair();
		const legacyFile = {
			accounts: [
				{
					label: "legacy",
					accessToken: legacy.access,
					refreshToken: legacy.refresh,
					expiresAt: Date.now() + 8 * 3_600_000,
				},
			],
			activeLabel: "legacy",
		};
		await fs.writeFile(world.env.configFile, `${JSON.stringify(legacyFile, null, 2)}\n`, { mode: 0o600 });
		world.api.script(legacy.access, ok("answer from legacy"));

		const pi = await RpcPi.start({ env: world.env });
		try {
			const refused = await pi.prompt("hello before the migration");
			expect(refused.stopReason).toBe("error");
			expect(refused.errorMessage).toContain("pi-mcc-migrate");
			steps.push("request refused on the plaintext config");

			const migrate = await migrateRunner(world.childEnv());
			const migrated = await migrate.run([]);
			outputs.push(
				{ where: "migration stdout", text: migrated.stdout },
				{ where: "migration stderr", text: migrated.stderr },
			);
			expect(migrated.code, migrated.stderr).toBe(0);
			expect(await keychainLookup(world.env.keychainService, "legacy")).toContain(legacy.refresh);
			expect((await pi.prompt("hello after the migration")).text).toBe("answer from legacy");
			steps.push("migration, then a request from the migrated account");

			// /mcc-login with a pasted "code#state", and with a pasted redirect URL.
			const workCode = world.newCode();
			pi.queueInput((_request, self) => `${workCode}#${lastLoginState(self)}`);
			await pi.command("/mcc-login work --browser");
			const work = lastPair();
			const personalCode = world.newCode();
			pi.queueInput(
				(_request, self) => `http://localhost:53692/callback?code=${personalCode}&state=${lastLoginState(self)}`,
			);
			await pi.command("/mcc-login personal --browser");
			const personal = lastPair();
			expect(await keychainLookup(world.env.keychainService, "work")).toContain(work.refresh);
			expect(await keychainLookup(world.env.keychainService, "personal")).toContain(personal.refresh);
			world.api.script(work.access, ok("answer from work"));
			world.api.script(personal.access, ok("answer from personal"));
			await pi.command("/mcc-fallback work personal");
			await pi.command("/mcc-use work");
			expect((await pi.prompt("hello work")).text).toBe("answer from work");
			steps.push("two logins with pasted codes, a request");

			// A forced refresh: a login whose access token lives 2 s, with a 1 s refresh margin.
			world.tokens.setExpiresIn(2);
			const reloginCode = world.newCode();
			pi.queueInput((_request, self) => `${reloginCode}#${lastLoginState(self)}`);
			await pi.command("/mcc-login work --browser");
			const shortLived = lastPair();
			world.api.setDefault(ok("answer with a renewed token"));
			await sleep(1_200);
			const refreshesBefore = world.tokens.requests.filter((r) => r.grant_type === "refresh_token").length;
			expect((await pi.prompt("hello after expiry")).text).toBe("answer with a renewed token");
			const refreshes = world.tokens.requests.filter((r) => r.grant_type === "refresh_token");
			expect(refreshes.length).toBe(refreshesBefore + 1);
			expect(refreshes.at(-1)?.refresh_token).toBe(shortLived.refresh);
			steps.push("a forced refresh");

			// The token endpoint now quotes every secret it receives in its error bodies.
			world.tokens.setMode("echo");
			await sleep(1_200);
			const failedRefresh = await pi.prompt("hello while the token endpoint echoes");
			expect(failedRefresh.stopReason).toBe("error");
			expect(failedRefresh.errorMessage).toContain("could not be renewed");
			const echoCode = world.newCode();
			pi.queueInput((_request, self) => `${echoCode}#${lastLoginState(self)}`);
			await pi.command("/mcc-login side --browser");
			expect(pi.notifications().at(-1)).toContain('Login of "side" failed');
			await pi.command("/mcc-status --refresh");
			expect(pi.notifications().at(-1)).toContain("usage not refreshed");
			const echoed = world.tokens.requests.filter(
				(r) => r.refresh_token !== undefined || r.code !== undefined,
			).length;
			expect(echoed).toBeGreaterThanOrEqual(3);
			steps.push("refresh, login and status against an echoing token endpoint");

			// Back to normal; the renewed pair's access token gets a 429 whose body quotes it: fallback to personal.
			world.tokens.setMode("ok");
			world.tokens.setExpiresIn(28_800);
			expect((await pi.prompt("hello after the endpoint recovered")).text).toBe("answer with a renewed token");
			const renewed = lastPair();
			world.api.script(
				renewed.access,
				rateLimited({ retryAfterSec: 600, message: `Limit reached for ${renewed.access}` }),
			);
			const fellBack = await pi.prompt("hello into a rate limit");
			expect(fellBack.text).toBe("answer from personal");
			expect(pi.statuses().some((status) => status.includes("fallback from work"))).toBe(true);
			world.api.script(personal.access, rateLimited({ message: `Limit reached for ${personal.access}` }));
			await pi.command("/mcc-use personal");
			const limited = await pi.prompt("hello into a rate limit without fallback");
			expect(limited.stopReason).toBe("error");
			expect(limited.errorMessage).toContain("rate");
			world.api.script(personal.access, ok("answer from personal"));
			steps.push("a 429 with fallback, a 429 without, both bodies quoting the token");

			await pi.command("/mcc-status");
			await pi.command("/mcc-fallback");
			await pi.command("/mcc-remove work");
			expect(await keychainLookup(world.env.keychainService, "work")).toBeUndefined();
			await pi.command("/mcc-use nobody");
			await pi.command("/mcc-status");
			expect((await pi.prompt("hello at the end")).text).toBe("answer from personal");
			steps.push("/mcc-status, /mcc-fallback, /mcc-remove, /mcc-use of an unknown label, a last request");
		} finally {
			await pi.stop();
		}
		outputs.push({ where: "pi stdout", text: pi.stdout() }, { where: "pi stderr", text: pi.stderr() });
		outputs.push({ where: "notifications", text: pi.notifications().join("\n") });
		outputs.push({ where: "footer", text: pi.statuses().join("\n") });

		const secrets = world.secrets();
		const tokens = world.tokens.issued.length;
		// legacy, work, personal, work again, its refresh, the renewal after the echo: six pairs.
		expect(tokens).toBe(12);
		const roots = [
			world.env.root,
			...(process.env.XDG_DATA_HOME ? [join(process.env.XDG_DATA_HOME, "keyrings")] : []),
		];
		// A planted fragment of a made-up token proves the scan finds what is there.
		const canary = await plantCanary(world.tmp);
		const files = await scanTree(roots, [...secrets, canary.token]);
		const { canary: found, real } = splitCanary(files.hits, secrets.length);
		expect(found).toEqual([{ where: canary.file, token: secrets.length, kind: "middle" }]);
		const sessions = await sessionFiles(world.env);
		const hits: Hit[] = [...real];
		let outputBytes = 0;
		for (const output of outputs) {
			outputBytes += Buffer.byteLength(output.text);
			hits.push(...scanText(output.where, output.text, secrets));
		}
		console.log(
			`[leak-scan] ${steps.length} scenario steps; ${files.files} files scanned (${files.bytes} bytes, ` +
				`${sessions.length} session .jsonl), ${outputs.length} outputs (${outputBytes} bytes); ${secrets.length} ` +
				`secrets searched (${tokens} tokens, ${world.codes.length} codes, verifiers), ${needleCount(secrets)} ` +
				`needles with middle parts; hits: ${hits.length}`,
		);

		expect(describeHits(hits)).toBe("");
		// The scan really covered what matters: the config, the state file and a session that holds the errors.
		expect(files.files).toBeGreaterThanOrEqual(3);
		expect(sessions.length).toBeGreaterThanOrEqual(1);
		for (const file of [world.env.configFile, world.env.stateFile, ...sessions])
			expect(files.scanned).toContain(file);
		const sessionText = (await Promise.all(sessions.map((file) => fs.readFile(file, "utf8")))).join("\n");
		expect(sessionText).toContain("could not be renewed");
		expect(sessionText).toContain("answer from personal");
		expect(pi.stdout().length).toBeGreaterThan(10_000);
	});
});
