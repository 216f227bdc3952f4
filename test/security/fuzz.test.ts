/**
 * Issue 7, promise 4: hostile input, generated from a seeded PRNG (the seed is printed; PI_MCC_FUZZ_SEED=<seed>
 * repeats a run): config files, account labels through the /mcc-* commands, token endpoint answers, and Messages
 * API streams. Never a crash (commands and the provider always end with a message; the pi session answers the next
 * valid request), never a token in an error or notification, never a changed file (or keychain item) after a
 * refused input. Every part is bounded in time; the whole file fuzzes for at most about 30 s.
 */

import { createHash } from "node:crypto";
import { promises as fs } from "node:fs";
import {
	type Api,
	type AssistantMessageEvent,
	type Context,
	getModels,
	type Model,
	streamSimpleAnthropic,
} from "@mariozechner/pi-ai";
import type { ExtensionCommandContext } from "@mariozechner/pi-coding-agent";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseCredentials } from "../../src/broker/credentials.ts";
import { AccountError, TokenBroker } from "../../src/broker/token-broker.ts";
import type { CommandDeps } from "../../src/commands/command-support.ts";
import { fallbackCommand } from "../../src/commands/fallback-command.ts";
import { loginCommand } from "../../src/commands/login-command.ts";
import { removeCommand } from "../../src/commands/remove-command.ts";
import { statusCommand } from "../../src/commands/status-command.ts";
import { useCommand } from "../../src/commands/use-command.ts";
import { labelProblem } from "../../src/config/schema.ts";
import { ConfigError } from "../../src/config/stores.ts";
import { type Core, createCore } from "../../src/core.ts";
import { OsSecretStore } from "../../src/keychain/os-secret-store.ts";
import { HttpTokenEndpoint } from "../../src/oauth/token-endpoint.ts";
import { createMultiAccountStream } from "../../src/provider/multi-account-stream.ts";
import { SessionAccount } from "../../src/session/session-account.ts";
import { readSettings } from "../../src/settings.ts";
import { setupAccounts } from "../helpers/accounts.ts";
import { ok } from "../helpers/fake-anthropic-api.ts";
import { newAccessToken, newRefreshToken } from "../helpers/fake-token-endpoint.ts";
import { requireSecretService, secretToolSearch } from "../helpers/keyring.ts";
import { MemorySecretStore } from "../helpers/memory-secret-store.ts";
import { createRecordingUi, type RecordingUi, sessionFiles } from "../helpers/pi-harness.ts";
import {
	hostileLabels,
	randomConfig,
	randomMessagesAnswer,
	randomTokenAnswer,
	type TokenAnswerPlan,
} from "./helpers/fuzz-inputs.ts";
import { describeHits, listFiles, scanText } from "./helpers/leak-scan.ts";
import { createPrng, seedFromEnv } from "./helpers/prng.ts";
import { type RawServer, SSE_HEADERS, startRawServer, validStream } from "./helpers/raw-servers.ts";
import { createSecurityWorld, type SecurityWorld } from "./helpers/world.ts";

const seed = seedFromEnv();
const random = createPrng(seed);
const DAY_MS = 24 * 3_600_000;

interface Tally {
	tried: number;
	refused: number;
	accepted: number;
	failures: string[];
	/** Inputs by generator kind. */
	kinds: Record<string, number>;
}

const tallies: Record<string, Tally> = {};
function tally(target: string): Tally {
	tallies[target] ??= { tried: 0, refused: 0, accepted: 0, failures: [], kinds: {} };
	return tallies[target] as Tally;
}

let world: SecurityWorld;
let core: Core;
let deps: CommandDeps;
let ui: RecordingUi;
let ctx: ExtensionCommandContext;

beforeAll(async () => {
	await requireSecretService();
	console.log(`[fuzz] seed ${seed} (PI_MCC_FUZZ_SEED=${seed} repeats this run)`);
	world = await createSecurityWorld();
	core = createCore(readSettings(process.env));
	const session = new SessionAccount({ appendEntry: () => {} });
	deps = { core, session };
	ui = createRecordingUi();
	session.footer.attach(ui.context);
	ctx = { ui: ui.context, hasUI: true } as unknown as ExtensionCommandContext;
}, 60_000);

afterAll(async () => {
	for (const [target, t] of Object.entries(tallies)) {
		console.log(
			`[fuzz] ${target}: ${t.tried} tried, ${t.refused} refused cleanly, ${t.accepted} accepted, ` +
				`${t.failures.length} failures; kinds ${JSON.stringify(t.kinds)}`,
		);
	}
	await world?.close();
});

function hash(content: Buffer | string | undefined): string {
	return content === undefined ? "absent" : createHash("sha256").update(content).digest("hex");
}

async function fileHash(file: string): Promise<string> {
	return hash(await fs.readFile(file).catch(() => undefined));
}

/** Control characters that would reach a terminal (newlines and tabs in multi-line messages are fine). */
function hasRawControl(text: string): boolean {
	return /[\u0000-\u0008\u000b-\u001f\u007f\u202a-\u202e\u2066-\u2069]/.test(text);
}

function model(): Model<Api> {
	const base = getModels("anthropic").find((entry) => entry.id === "claude-sonnet-4-5");
	if (!base) throw new Error("no claude-sonnet-4-5");
	return { ...base, provider: "multi-claude-code", api: "multi-claude-code" } as unknown as Model<Api>;
}

/** One request of a new session through the real provider stream function; every event, bounded in time. */
async function providerRequest(baseUrl: string | undefined, withinMs = 5_000): Promise<AssistantMessageEvent[]> {
	const session = new SessionAccount({ appendEntry: () => {} });
	session.footer.attach(ui.context);
	const stream = createMultiAccountStream(
		{ core, delegate: streamSimpleAnthropic, perRequestFetch: false, ...(baseUrl ? { baseUrl } : {}) },
		session,
	);
	const context: Context = { messages: [{ role: "user", content: "hello", timestamp: Date.now() }] };
	const events: AssistantMessageEvent[] = [];
	const signal = AbortSignal.timeout(withinMs);
	for await (const event of stream(model(), context, { signal })) {
		events.push(event);
		if (events.length > 10_000) throw new Error("endless stream");
	}
	return events;
}

function terminal(events: AssistantMessageEvent[]): { kind: "done" | "error" | "none"; text: string } {
	const last = events.at(-1);
	if (last?.type === "done") {
		return { kind: "done", text: last.message.content.map((b) => (b.type === "text" ? b.text : "")).join("") };
	}
	if (last?.type === "error") return { kind: "error", text: last.error.errorMessage ?? "" };
	return { kind: "none", text: "" };
}

describe("fuzzed config files", () => {
	it("are refused with a message and left byte-identical, or used as they are; nothing crashes", {
		timeout: 60_000,
	}, async () => {
		const t = tally("config file");
		const planted = [newAccessToken("fuzz"), newRefreshToken("fuzz")];
		const deadline = Date.now() + 7_000;
		while (Date.now() < deadline && t.tried < 400) {
			const input = randomConfig(random, planted);
			t.tried++;
			t.kinds[input.kind] = (t.kinds[input.kind] ?? 0) + 1;
			await fs.writeFile(world.env.configFile, input.content, { mode: 0o600 });
			await fs.chmod(world.env.configFile, 0o600);
			const before = hash(input.content);
			const stateBefore = await fileHash(world.env.stateFile);
			const shown = ui.notifications.length;
			const fail = (what: string) => t.failures.push(`${input.kind}: ${what}`);
			let accounts: string[] | undefined;
			let refusal: unknown;
			try {
				accounts = (await core.config.read()).accounts.map((account) => account.label);
			} catch (error) {
				refusal = error;
			}
			if (refusal !== undefined && !(refusal instanceof ConfigError)) {
				fail(`read failed with ${(refusal as Error)?.name}: ${String((refusal as Error)?.message).slice(0, 80)}`);
			}
			const first = accounts?.[0] ?? "nobody";
			const commands: Array<[string, () => Promise<void>]> = [
				["/mcc-use", () => useCommand(deps, first, ctx)],
				["/mcc-fallback", () => fallbackCommand(deps, "", ctx)],
				["/mcc-fallback a b", () => fallbackCommand(deps, `${first} ${accounts?.[1] ?? "other"}`, ctx)],
				["/mcc-remove", () => removeCommand(deps, "nobody-here", ctx)],
				["/mcc-login", () => loginCommand(deps, "fuzzed --copy-code", ctx)],
			];
			if ((accounts?.length ?? 0) <= 20) commands.push(["/mcc-status", () => statusCommand(deps, "", ctx)]);
			for (const [name, run] of commands) {
				if (name === "/mcc-login") ui.queueInput(undefined);
				await run().catch((error: unknown) => fail(`${name} threw ${String(error)}`));
			}
			const events = await providerRequest(undefined).catch((error: unknown) => {
				fail(`the provider threw ${String(error)}`);
				return [];
			});
			if (terminal(events).kind === "none") fail("the provider stream ended without done or error");
			const messages = ui.notifications.slice(shown).map((note) => note.message);
			if (messages.length < commands.length)
				fail(`only ${messages.length} notifications for ${commands.length} commands`);
			const text = [...messages, terminal(events).text].join("\n");
			const hits = scanText("messages", text, planted);
			if (hits.length > 0) fail(`a planted token was shown: ${describeHits(hits)}`);
			if (({} as Record<string, unknown>).polluted !== undefined) fail("Object.prototype was polluted");
			if (refusal !== undefined) {
				if ((await fileHash(world.env.configFile)) !== before) fail("a refused config file was changed");
				if ((await fileHash(world.env.stateFile)) !== stateBefore)
					fail("the state file changed after a refused config");
				if (refusal instanceof ConfigError) t.refused++;
			} else {
				t.accepted++;
				await core.config
					.read()
					.catch((error: unknown) => fail(`an accepted config became unreadable: ${String(error)}`));
			}
		}
		expect(t.tried).toBeGreaterThanOrEqual(30);
		expect(t.refused).toBeGreaterThan(0);
		expect(t.accepted).toBeGreaterThan(0);
		expect(t.failures).toEqual([]);
	});
});

describe("fuzzed account labels through the commands", () => {
	it("are refused with a readable message and change no file, no lock and no keychain item", {
		timeout: 60_000,
	}, async () => {
		const t = tally("labels");
		await fs.rm(world.env.configFile, { force: true });
		await setupAccounts({
			accounts: [{ label: "home" }, { label: "work", fallbackTo: ["home"] }],
			tokens: world.tokens,
		});
		const itemsBefore = (await secretToolSearch(world.env.keychainService)).items.length;
		const filesBefore = (await listFiles([world.env.home])).join("\n");
		const configBefore = await fileHash(world.env.configFile);
		const stateBefore = await fileHash(world.env.stateFile);
		const deadline = Date.now() + 5_000;
		const controlEchoes: string[] = [];
		const labels = hostileLabels(random, 200);
		for (const label of labels) {
			if (Date.now() > deadline) break;
			t.tried++;
			const kind = labelProblem(label) ? "invalid" : "valid but unknown";
			t.kinds[kind] = (t.kinds[kind] ?? 0) + 1;
			const fail = (what: string) => t.failures.push(`${JSON.stringify(label.slice(0, 40))}: ${what}`);
			const commands: Array<[string, () => Promise<void>]> = [
				["/mcc-login", () => loginCommand(deps, `${label} --copy-code`, ctx)],
				["/mcc-use", () => useCommand(deps, label, ctx)],
				["/mcc-fallback L home", () => fallbackCommand(deps, `${label} home`, ctx)],
				["/mcc-fallback work L", () => fallbackCommand(deps, `work ${label}`, ctx)],
				["/mcc-fallback L --early", () => fallbackCommand(deps, `${label} --early 80`, ctx)],
				["/mcc-remove", () => removeCommand(deps, label, ctx)],
			];
			for (const [name, run] of commands) {
				const shown = ui.notifications.length;
				if (name === "/mcc-login") ui.queueInput(undefined);
				await run().catch((error: unknown) => fail(`${name} threw ${String(error)}`));
				const notes = ui.notifications.slice(shown);
				const last = notes.at(-1);
				// A refusal (or, for a valid label, a login cancelled at the code prompt) is always said.
				if (!last || (last.type === "info" && name !== "/mcc-login"))
					fail(`${name} gave no refusal: ${last?.message}`);
				if (notes.some((note) => hasRawControl(note.message)))
					controlEchoes.push(`${name} ${JSON.stringify(label.slice(0, 20))}`);
			}
			if ((await fileHash(world.env.configFile)) !== configBefore) fail("the config changed");
			if ((await fileHash(world.env.stateFile)) !== stateBefore) fail("the state file changed");
			else t.refused++;
		}
		const filesAfter = (await listFiles([world.env.home])).join("\n");
		if (filesAfter !== filesBefore)
			t.failures.push(`files appeared or vanished:\n${filesBefore}\n---\n${filesAfter}`);
		expect((await secretToolSearch(world.env.keychainService)).items.length).toBe(itemsBefore);
		// Reported, not failed here: "a label is shown without its control characters" below asserts it.
		t.kinds["refusals echoing raw control characters"] = controlEchoes.length;
		expect(t.tried).toBeGreaterThanOrEqual(40);
		expect(t.failures).toEqual([]);
	});

	it("typed into a real pi session are refused the same way, and the session answers the next request", {
		timeout: 60_000,
	}, async () => {
		const pi = await world.start();
		const configBefore = await fileHash(world.env.configFile);
		const labels = ["../../x", "$(id)", "\u202eevil", "a".repeat(65), "名前", "a;b", "`id`", "x\u0000y"];
		try {
			for (const label of labels) {
				for (const line of [`/mcc-use ${label}`, `/mcc-remove ${label}`, `/mcc-fallback ${label} home`]) {
					const shown = pi.ui.notifications.length;
					await pi.runCommand(line);
					expect(pi.ui.notifications.length).toBe(shown + 1);
					expect(pi.ui.notifications.at(-1)?.type).toBe("error");
				}
			}
			expect(await fileHash(world.env.configFile)).toBe(configBefore);
			expect(pi.extensionErrors).toEqual([]);
			world.api.script(await core.broker.getAccessToken("home"), ok("still answering"));
			await pi.runCommand("/mcc-use home");
			expect((await pi.prompt("hello")).text).toBe("still answering");
		} finally {
			await world.disposeSessions();
		}
	});
});

describe("fuzzed token endpoint answers", () => {
	it("end in a stored grant or a typed error that quotes no token, with the keychain item untouched", {
		timeout: 60_000,
	}, async () => {
		const t = tally("token endpoint");
		const server = await startRawServer("/v1/oauth/token");
		// The real broker and HTTP token endpoint over an in-memory keychain: hundreds of refreshes in seconds, and
		// every write it makes is visible. (The defects below are shown over the real keychain too.)
		const store = new MemorySecretStore();
		const marked = new Set<string>();
		const broker = new TokenBroker({
			secrets: store,
			endpoint: new HttpTokenEndpoint({ url: server.url, timeoutMs: 2_000 }),
			lock: { run: (_label, fn) => fn() },
			marks: {
				isMarked: async (label) => marked.has(label),
				mark: async (label) => void marked.add(label),
				clear: async (label) => void marked.delete(label),
			},
			refreshMarginMs: DAY_MS,
		});
		const label = "fz";
		const untyped: string[] = [];

		let plan: TokenAnswerPlan | undefined;
		server.answerWith((request) => {
			plan = randomTokenAnswer(random, request, () => newAccessToken("grant"));
			return plan.answer;
		});
		try {
			const deadline = Date.now() + 6_000;
			while (Date.now() < deadline && t.tried < 400) {
				const start = {
					access: newAccessToken("start"),
					refresh: newRefreshToken("start"),
					expires: Date.now() + 3_600_000,
				};
				await broker.storeLogin(label, start);
				const before = await store.get(label);
				plan = undefined;
				t.tried++;
				let token: string | undefined;
				let error: unknown;
				try {
					token = await broker.getAccessToken(label);
				} catch (caught) {
					error = caught;
				}
				const current = plan as TokenAnswerPlan | undefined;
				const kind = current?.kind ?? "no request";

				t.kinds[kind] = (t.kinds[kind] ?? 0) + 1;
				const fail = (what: string) => t.failures.push(`${kind}: ${what}`);
				const after = await store.get(label);
				const secrets = [start.access, start.refresh, ...(current?.planted ?? [])];
				if (token !== undefined) {
					t.accepted++;
					if (!current?.grant) fail("a token came back from an answer that is not a valid grant");
					else if (token !== current.grant.access) fail("the token handed out is not the granted one");
					try {
						const stored = parseCredentials(after ?? "");
						if (stored.refresh !== current?.grant?.refresh)
							fail("the stored refresh token is not the granted one");
					} catch {
						fail("after a grant the keychain item cannot be read");
					}
					continue;
				}
				const message = error instanceof Error ? error.message : String(error);
				const hits = scanText("error", message, secrets);
				if (hits.length > 0) fail(`the error quotes a token: ${describeHits(hits)}`);
				// Reported, not failed here: "a grant too large for a keychain item" below asserts the type.
				if (!(error instanceof AccountError)) untyped.push(`${kind}: ${String((error as Error)?.name)}`);
				if (after !== before) {
					let readable = true;
					try {
						parseCredentials(after ?? "");
					} catch {
						readable = false;
					}
					fail(
						readable
							? "the keychain item changed after a refused answer"
							: "the keychain item was replaced by one that cannot be read",
					);
				} else t.refused++;
			}
		} finally {
			await server.close();
		}
		t.kinds["refusals that are not an AccountError"] = untyped.length;

		expect(t.tried).toBeGreaterThanOrEqual(30);
		expect(t.accepted).toBeGreaterThan(0);
		expect(t.refused).toBeGreaterThan(0);
		expect(t.failures).toEqual([]);
	});
});

describe("fuzzed Messages API streams", () => {
	let server: RawServer;

	beforeAll(async () => {
		server = await startRawServer("/v1/messages");
	});

	afterAll(async () => {
		await server?.close();
	});

	it("always end the provider's stream with one answer or one error that quotes no token", {
		timeout: 60_000,
	}, async () => {
		const t = tally("messages stream");
		await fs.rm(world.env.stateFile, { force: true });
		const accounts = await setupAccounts({ accounts: [{ label: "sse" }], tokens: world.tokens });
		const token = accounts.sse?.access ?? "";
		let kind = "";
		server.answerWith((request) => {
			const planned = randomMessagesAnswer(random, request);
			kind = planned.kind;
			return planned.answer;
		});
		const deadline = Date.now() + 8_000;
		while (Date.now() < deadline && t.tried < 300) {
			t.tried++;
			kind = "no request";
			const fail = (what: string) => t.failures.push(`${kind}: ${what}`);
			let events: AssistantMessageEvent[] = [];
			try {
				events = await providerRequest(server.baseUrl, 4_000);
			} catch (error) {
				fail(`the stream threw ${String(error)}`);
			}
			t.kinds[kind] = (t.kinds[kind] ?? 0) + 1;
			const end = terminal(events);
			const terminals = events.filter((event) => event.type === "done" || event.type === "error").length;
			if (end.kind === "none" || terminals !== 1) fail(`${terminals} terminal events, last ${events.at(-1)?.type}`);
			if (kind === "valid" && end.kind !== "done") fail(`a valid stream failed: ${end.text.slice(0, 100)}`);
			const hits = scanText("stream", JSON.stringify(events), [token]);
			if (hits.length > 0) fail(`the token reached the stream's events: ${end.text.slice(0, 60)}`);
			if (end.kind === "error") t.refused++;
			else t.accepted++;
		}
		// The provider still works.
		server.answerWith(() => ({ status: 200, headers: SSE_HEADERS, chunks: validStream("all good") }));
		expect(terminal(await providerRequest(server.baseUrl)).text).toBe("all good");
		expect(t.tried).toBeGreaterThanOrEqual(30);
		expect(t.failures).toEqual([]);
	});

	it("never crash a real pi session: it answers the next valid request and stores no token", {
		timeout: 60_000,
	}, async () => {
		const t = tally("messages stream in pi");
		world.env.set({ PI_MCC_ANTHROPIC_BASE_URL: server.baseUrl });
		const accounts = await setupAccounts({ accounts: [{ label: "sse" }], tokens: world.tokens });
		const token = accounts.sse?.access ?? "";
		try {
			const pi = await world.start();
			let kind = "";
			server.answerWith((request) => {
				const planned = randomMessagesAnswer(random, request);
				kind = planned.kind;
				return planned.answer;
			});
			for (let i = 0; i < 10; i++) {
				const result = await pi.prompt(`fuzz ${i}`);
				t.tried++;
				t.kinds[kind] = (t.kinds[kind] ?? 0) + 1;
				if (result.stopReason === "error") t.refused++;
				else t.accepted++;
				if (result.errorMessage?.includes(token)) t.failures.push(`${kind}: the error shows the token`);
			}
			server.answerWith(() => ({ status: 200, headers: SSE_HEADERS, chunks: validStream("pi survived") }));
			expect((await pi.prompt("a valid request")).text).toBe("pi survived");
			expect(pi.extensionErrors).toEqual([]);
			const files = await sessionFiles(world.env);
			expect(files.length).toBeGreaterThan(0);
			for (const file of files) expect(describeHits(scanText(file, await fs.readFile(file), [token]))).toBe("");
			expect(t.failures).toEqual([]);
		} finally {
			world.env.set({ PI_MCC_ANTHROPIC_BASE_URL: world.api.baseUrl });
			await world.disposeSessions();
		}
	});
});

describe("regressions the fuzzing found (each was a defect in src/, fixed; see SECURITY.md)", () => {
	async function refreshAgainst(
		answer: Record<string, unknown>,
	): Promise<{ error: unknown; before: string | null; after: string | null }> {
		const server = await startRawServer("/v1/oauth/token");
		server.answerWith(() => ({
			status: 200,
			headers: { "content-type": "application/json" },
			chunks: [JSON.stringify(answer)],
		}));
		const fuzzCore = createCore(
			readSettings({
				...process.env,
				PI_MCC_TOKEN_URL: server.url,
				PI_MCC_REFRESH_MARGIN_MS: String(DAY_MS),
			}),
		);
		const store = new OsSecretStore({ service: world.env.keychainService });
		const label = "edge";
		try {
			await fuzzCore.broker.storeLogin(label, {
				access: newAccessToken("edge"),
				refresh: newRefreshToken("edge"),
				expires: Date.now() + 3_600_000,
			});
			const before = await store.get(label);
			const error = await fuzzCore.broker.getAccessToken(label).then(
				() => undefined,
				(caught: unknown) => caught,
			);
			return { error, before, after: await store.get(label) };
		} finally {
			await server.close();
			await store.delete(label).catch(() => false);
		}
	}

	for (const [field, value] of [
		["expires_in", 1e306],
		["refresh_token_expires_in", 1.7e308],
	] as const) {
		it(`a grant whose ${field} overflows a date leaves a keychain item the broker can read`, async () => {
			const answer = {
				access_token: newAccessToken("new"),
				refresh_token: newRefreshToken("new"),
				expires_in: 3600,
			};
			const { error, before, after } = await refreshAgainst({ ...answer, [field]: value });
			// Either refused (and the old item kept as it was) or stored readable: never an item nobody can use.
			expect(() => parseCredentials(after ?? "")).not.toThrow();
			if (error !== undefined) {
				expect(error).toBeInstanceOf(AccountError);
				expect(after).toBe(before);
			}
		});
	}

	it("a grant too large for a keychain item fails with a typed error that names the account", async () => {
		const access = `${newAccessToken("big")}${"A".repeat(3_000)}`;
		const { error, before, after } = await refreshAgainst({
			access_token: access,
			refresh_token: newRefreshToken("big"),
			expires_in: 3600,
		});
		expect(error).toBeInstanceOf(AccountError);
		expect((error as AccountError).label).toBe("edge");
		expect((error as Error).message).toContain("/mcc-login edge");
		expect(after).toBe(before);
	});

	it("a label's control characters never reach a refusal as they are (shown as ?, as printable() does)", async () => {
		const shown = ui.notifications.length;
		await useCommand(deps, "\u001b[31mred", ctx);
		await removeCommand(deps, "a\u0000b", ctx);
		await fallbackCommand(deps, "work \u0007bell", ctx);
		await fallbackCommand(deps, "\u202eevil home", ctx);
		const notes = ui.notifications.slice(shown);
		expect(notes).toHaveLength(4);
		for (const note of notes) expect(hasRawControl(note.message), JSON.stringify(note.message)).toBe(false);
	});
});
