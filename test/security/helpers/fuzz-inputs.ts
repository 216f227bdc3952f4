/**
 * Generators of hostile input for the fuzz tests, all driven by a seeded PRNG so a run repeats from its seed:
 * config files, account labels, token endpoint answers and Messages API streams. Secrets handed in are planted
 * into the inputs, so a test can check that no error message ever repeats them.
 */
import type { Prng } from "./prng.ts";
import { type RawAnswer, type RawRequest, SSE_HEADERS, sseEvent, validStream } from "./raw-servers.ts";

export interface ConfigInput {
	kind: string;
	content: Buffer;
}

const UNICODE_SAMPLES = [
	"\u202e",
	"\u200b",
	"\ufeff",
	"\u0000",
	"\u001b[31m",
	"\r",
	"\u2028",
	"é",
	"е",
	"ｗｏｒｋ",
	"👩‍💻",
	"\ud800",
	"ß",
	"İ",
	"\u0301",
	"名前",
];

/** A random JSON value of any type, nesting at most `depth`. */
export function randomJson(random: Prng, depth = 3, strings: readonly string[] = []): unknown {
	const roll = random.int(0, depth > 0 ? 9 : 5);
	switch (roll) {
		case 0:
			return null;
		case 1:
			return random.chance(0.5);
		case 2:
			return random.pick([0, -1, 1, 1.5, 2 ** 53, -(2 ** 31), 1e308, -1e308, 5e-324, 1e306]);
		case 3:
			return random.string(random.int(0, 12), "abc-_.0123456789XYZ");
		case 4:
			return strings.length > 0 && random.chance(0.5) ? random.pick(strings) : random.pick(UNICODE_SAMPLES);
		case 5:
			return random.string(random.int(0, 70), "ab-_.9é👩\u202e\u0000 /$;`|&");
		case 6:
		case 7:
			return Array.from({ length: random.int(0, 4) }, () => randomJson(random, depth - 1, strings));
		default: {
			const object: Record<string, unknown> = {};
			for (let i = random.int(0, 4); i > 0; i--) {
				const key = random.pick([
					"label",
					"version",
					"accounts",
					"fallbackTo",
					"activeLabel",
					"x",
					"constructor",
					"toString",
					"__proto__",
					"é",
				]);
				object[key] = randomJson(random, depth - 1, strings);
			}
			return object;
		}
	}
}

function validConfig(random: Prng): Record<string, unknown> {
	const labels = Array.from(
		{ length: random.int(1, 5) },
		(_, i) => `acct${i}${random.string(random.int(0, 5), "abc-_.9")}`,
	);
	const accounts = labels.map((label) => ({
		label,
		fallbackTo: random.chance(0.5) ? labels.filter((other) => other !== label && random.chance(0.5)).slice(0, 5) : [],
		...(random.chance(0.3) ? { loggedInAt: random.int(0, 2 ** 40) } : {}),
	}));
	return { version: 1, activeLabel: random.pick(labels), accounts };
}

/** Sets a random path inside `value` to `replacement`. */
function mutate(random: Prng, value: unknown, replacement: unknown): unknown {
	if (Array.isArray(value) && value.length > 0 && random.chance(0.7)) {
		const copy = [...value];
		const at = random.int(0, copy.length - 1);
		copy[at] = mutate(random, copy[at], replacement);
		return copy;
	}
	if (value !== null && typeof value === "object" && !Array.isArray(value) && random.chance(0.8)) {
		const copy = { ...(value as Record<string, unknown>) };
		const keys = Object.keys(copy);
		if (keys.length > 0) {
			const key = random.pick(keys);
			copy[key] = mutate(random, copy[key], replacement);
			return copy;
		}
	}
	return replacement;
}

export function randomConfig(random: Prng, secrets: readonly string[]): ConfigInput {
	const kind = random.pick([
		"random bytes",
		"deep nesting",
		"huge array",
		"prototype keys",
		"wrong types",
		"unicode labels",
		"tokens inside",
		"valid",
		"truncated",
		"not quite JSON",
		"oversized",
	]);
	const text = (value: unknown): Buffer =>
		Buffer.from(JSON.stringify(value, null, random.chance(0.5) ? "\t" : undefined));
	switch (kind) {
		case "random bytes":
			return { kind, content: random.bytes(random.int(0, 3000)) };
		case "deep nesting": {
			const depth = random.pick([100, 1_000, 10_000, 100_000]);
			const inner = random.chance(0.5)
				? `${"[".repeat(depth)}${"]".repeat(depth)}`
				: `${'{"a":'.repeat(depth)}1${"}".repeat(depth)}`;
			const where = random.pick(["accounts", "extra", "activeLabel"]);
			return { kind, content: Buffer.from(`{"version":1,"${where}":${inner}}`) };
		}
		case "huge array": {
			const count = random.pick([501, 5_000, 20_000]);
			const field = random.pick(["accounts", "fallbackTo"]);
			const items = Array.from({ length: count }, (_, i) => (field === "accounts" ? { label: `a${i}` } : `a${i}`));
			const config =
				field === "accounts"
					? { version: 1, accounts: items }
					: { version: 1, accounts: [{ label: "a", fallbackTo: items }] };
			return { kind, content: text(config) };
		}
		case "prototype keys":
			return {
				kind,
				content: Buffer.from(
					random.pick([
						'{"__proto__":{"polluted":true},"version":1,"accounts":[]}',
						'{"version":1,"accounts":[{"label":"a","fallbackTo":[],"__proto__":{"polluted":true}}]}',
						'{"version":1,"accounts":[],"constructor":{"prototype":{"polluted":true}}}',
						'{"version":1,"accounts":[{"label":"constructor","fallbackTo":["__proto__"]}]}',
						'{"version":1,"accounts":[{"label":"toString","fallbackTo":[]}],"activeLabel":"hasOwnProperty"}',
						'{"version":1,"accounts":[],"prototype":{"polluted":true},"__defineGetter__":1}',
					]),
				),
			};
		case "wrong types":
			return { kind, content: text(mutate(random, validConfig(random), randomJson(random, 2, secrets))) };
		case "unicode labels": {
			const config = validConfig(random);
			const middle = random.string(random.int(0, 8), "abcé");
			const label = `${random.pick(UNICODE_SAMPLES)}${middle}${random.pick(UNICODE_SAMPLES)}`;
			return { kind, content: text(mutate(random, config, label)) };
		}
		case "tokens inside": {
			const config = validConfig(random);
			const secret = random.pick(secrets);
			const key = random.pick(["token", "refreshToken", "accessToken", "secret", "note", "x"]);
			return { kind, content: text(mutate(random, config, random.chance(0.5) ? { [key]: secret } : secret)) };
		}
		case "valid":
			return { kind, content: text(validConfig(random)) };
		case "truncated": {
			const full = text(validConfig(random));
			return { kind, content: full.subarray(0, random.int(0, full.length - 1)) };
		}
		case "not quite JSON":
			return {
				kind,
				content: Buffer.from(
					random.pick([
						"{version: 1, accounts: []}",
						'{"version":1,"accounts":[],}',
						'// comment\n{"version":1,"accounts":[]}',
						'\ufeff{"version":1,"accounts":[]}',
						"",
						"null",
						"[]",
						'"a string"',
						"1e999",
					]),
				),
			};
		default: {
			const config = validConfig(random);
			return {
				kind: "oversized",
				content: text({ ...config, padding: "x".repeat(random.pick([1_100_000, 2_000_000])) }),
			};
		}
	}
}

/** One argument each: labels with whitespace would be split into several arguments before any check. */
const EVIL_LABELS = [
	"$(touch /tmp/pwned)",
	"`id`",
	"a;rm -rf ~",
	"a|b",
	"a&&b",
	"'quoted'",
	'"dq"',
	"../../etc/passwd",
	"..",
	".",
	"../x",
	"a/b",
	"a\\b",
	"/abs",
	"~",
	"-rf",
	"--early",
	"*",
	"a\u0000b",
	"\u001b[31mred\u001b[0m",
	"\u001b]0;title\u0007",
	"\u202eevil",
	"zero\u200bwidth",
	"work\u0301",
	"ｗｏｒｋ",
	"wоrk",
	"👩‍💻",
	"名前",
	"a".repeat(65),
	"a".repeat(1_000),
	"b".repeat(100_000),
	"x\ud800y",
	"%2e%2e%2f",
	"con",
	"NUL",
	"__proto__",
	"constructor",
];

/** The fixed hostile labels, then random ones (never with whitespace: a label is one argument). */
export function hostileLabels(random: Prng, extra: number): string[] {
	const labels = [...EVIL_LABELS];
	for (let i = 0; i < extra; i++) {
		const length = random.pick([1, 2, 10, 63, 64, 65, 200]);
		labels.push(random.string(length, "aZ09._-/\\$`;|&'\"<>(){}[]*?~!#%^=+,:@é\u202e\u200b\u0007\u001b👩名"));
	}
	return labels.filter((label) => label !== "" && !/\s/.test(label));
}

/** The access token a grant answer must carry for the broker to accept it, when the answer is a valid grant. */
export interface TokenAnswerPlan {
	kind: string;
	answer: RawAnswer;
	/** Set when the answer is a grant the broker should accept. */
	grant?: { access: string; refresh: string };
	/** Secrets planted into this answer (besides the request's own). */
	planted: string[];
}

export function randomTokenAnswer(random: Prng, request: RawRequest, makeToken: () => string): TokenAnswerPlan {
	let sent: Record<string, unknown> = {};
	try {
		sent = JSON.parse(request.body) as Record<string, unknown>;
	} catch {
		// nothing sent
	}
	const echo = String(sent.refresh_token ?? "");
	const access = makeToken();
	const refresh = makeToken();
	const json = (
		status: number,
		body: unknown,
		kind: string,
		grant?: { access: string; refresh: string },
	): TokenAnswerPlan => ({
		kind,
		answer: { status, headers: { "content-type": "application/json" }, chunks: [JSON.stringify(body)] },
		planted: [access, refresh],
		...(grant ? { grant } : {}),
	});
	const kind = random.pick([
		"valid grant",
		"lifetime edge",
		"missing field",
		"wrong types",
		"bad token text",
		"oversized token",
		"oauth error",
		"echoing error",
		"not json",
		"truncated",
		"random json",
		"odd status",
	]);
	switch (kind) {
		case "valid grant":
			return json(
				200,
				{ access_token: access, refresh_token: refresh, expires_in: random.int(0, 86_400), token_type: "Bearer" },
				kind,
				{
					access,
					refresh,
				},
			);
		case "lifetime edge": {
			const expiresIn = random.pick([0, 1, 2 ** 31, 1e12, 1e300, 1e306, 1.7e308, 2 ** 53]);
			const refreshIn = random.pick([undefined, -1, 0, 1e306, 1.7e308, 30 * 86_400]);
			return json(
				200,
				{
					access_token: access,
					refresh_token: refresh,
					expires_in: expiresIn,
					...(refreshIn !== undefined ? { refresh_token_expires_in: refreshIn } : {}),
				},
				kind,
				{ access, refresh },
			);
		}
		case "missing field": {
			const body: Record<string, unknown> = { access_token: access, refresh_token: refresh, expires_in: 3600 };
			delete body[random.pick(["access_token", "refresh_token", "expires_in"])];
			return json(200, body, kind);
		}
		case "wrong types": {
			const body: Record<string, unknown> = { access_token: access, refresh_token: refresh, expires_in: 3600 };
			const field = random.pick(["access_token", "refresh_token", "expires_in"]);
			body[field] =
				field === "expires_in"
					? random.pick([null, [], {}, true, "3600", -5, "NaN"])
					: random.pick([null, 42, [], {}, true]);
			return json(200, body, kind);
		}
		case "bad token text": {
			const bad = random.pick([`${access} x`, `${access}\n`, "short", "", `\t${access}`, `${access}\u2028`]);
			const which = random.pick(["access", "refresh", "both"]);
			return json(
				200,
				{
					access_token: which === "refresh" ? access : bad,
					refresh_token: which === "access" ? refresh : bad,
					expires_in: 3600,
				},
				kind,
			);
		}
		case "oversized token": {
			// 1 300 more characters still fit a keychain item (2 560 bytes); 3 000 do not.
			const padded = `${access}${"A".repeat(random.pick([1_300, 3_000]))}`;
			const fits = padded.length < 2_000;
			return json(
				200,
				{ access_token: padded, refresh_token: refresh, expires_in: 3600 },
				kind,
				fits ? { access: padded, refresh } : undefined,
			);
		}
		case "oauth error": {
			const error = random.pick([
				"invalid_grant",
				"invalid_request",
				"invalid_client",
				"server_error",
				"UPPER",
				"x".repeat(60),
			]);
			const status = random.pick([400, 401, 403, 429, 500, 502, 503]);
			return json(status, random.chance(0.5) ? { error } : { error: { type: error, message: "nope" } }, kind);
		}
		case "echoing error": {
			const status = random.pick([400, 401, 500]);
			return json(
				status,
				{
					error: random.pick(["invalid_grant", "invalid_request"]),
					error_description: `bad ${echo} and ${access}`,
					refresh_token: echo,
					received: sent,
				},
				kind,
			);
		}
		case "not json":
			return {
				kind,
				answer: {
					status: random.pick([200, 400, 500]),
					headers: { "content-type": "text/html" },
					chunks: [
						random.pick([`<html>${echo}</html>`, "", "\u0000\u0001", random.bytes(200).toString("latin1")]),
					],
				},
				planted: [],
			};
		case "truncated": {
			const full = JSON.stringify({ access_token: access, refresh_token: refresh, expires_in: 3600 });
			return {
				kind,
				answer: {
					status: 200,
					headers: { "content-type": "application/json" },
					chunks: [full.slice(0, random.int(0, full.length - 1))],
					finish: random.pick(["end", "destroy"] as const),
				},
				planted: [access, refresh],
			};
		}
		case "random json":
			return json(random.pick([200, 400]), randomJson(random, 3, [access, echo]), kind);
		default:
			return json(
				random.pick([204, 301, 304, 418, 599]),
				{ access_token: access, refresh_token: refresh, expires_in: 3600 },
				"odd status",
			);
	}
}

/** A random answer of the Messages API: valid, truncated, garbled, hostile, or an error quoting the token. */
export function randomMessagesAnswer(random: Prng, request: RawRequest): { kind: string; answer: RawAnswer } {
	const token = request.token ?? "";
	const events = validStream(`fuzz ${random.string(random.int(0, 20), "abc é👩")}`);
	const kind = random.pick([
		"valid",
		"truncated",
		"garbled event",
		"unknown events",
		"shuffled",
		"error event",
		"http error",
		"bytes",
		"split frames",
		"destroyed",
		"empty",
	]);
	const sse = (chunks: string[], finish: RawAnswer["finish"] = "end"): RawAnswer => ({
		status: 200,
		headers: SSE_HEADERS,
		chunks,
		finish,
	});
	switch (kind) {
		case "valid":
			return { kind, answer: sse(events) };
		case "truncated": {
			const whole = events.join("");
			return {
				kind,
				answer: sse([whole.slice(0, random.int(0, whole.length - 1))], random.pick(["end", "destroy"] as const)),
			};
		}
		case "garbled event": {
			const copy = [...events];
			const at = random.int(0, copy.length - 1);
			copy[at] = random.pick([
				sseEvent("content_block_delta", "{not json"),
				sseEvent("content_block_delta", { type: "content_block_delta", index: 7, delta: { type: "text_delta" } }),
				sseEvent("message_start", { type: "message_start" }),
				sseEvent("content_block_delta", {
					type: "content_block_delta",
					index: 0,
					delta: { type: "text_delta", text: 5 },
				}),
				sseEvent("message_delta", { type: "message_delta", delta: null, usage: "x" }),
				`data: ${JSON.stringify(randomJson(random, 3, [token]))}\n\n`,
			]);
			return { kind, answer: sse(copy) };
		}
		case "unknown events": {
			const copy = [...events];
			copy.splice(
				random.int(0, copy.length),
				0,
				sseEvent(random.string(8, "abcxyz_"), randomJson(random, 2, [token])),
			);
			return { kind, answer: sse(copy) };
		}
		case "shuffled": {
			const copy = [...events];
			for (let i = copy.length - 1; i > 0; i--) {
				const j = random.int(0, i);
				[copy[i], copy[j]] = [copy[j] as string, copy[i] as string];
			}
			return { kind, answer: sse(copy) };
		}
		case "error event": {
			const type = random.pick([
				"rate_limit_error",
				"overloaded_error",
				"api_error",
				"authentication_error",
				"invalid_request_error",
				"x",
			]);
			const error = sseEvent("error", {
				type: "error",
				error: { type, message: `failed for ${token} (Bearer ${token})` },
			});
			const cut = random.int(0, events.length - 1);
			return { kind, answer: sse([...events.slice(0, cut), error]) };
		}
		case "http error": {
			const status = random.pick([400, 401, 403, 404, 413, 429, 500, 502, 529]);
			const body = random.chance(0.7)
				? JSON.stringify({ type: "error", error: { type: "api_error", message: `token ${token} refused` } })
				: `<html>${token}</html>`;
			return {
				kind,
				answer: {
					status,
					headers: {
						"content-type": random.pick(["application/json", "text/html"]),
						"retry-after": random.pick(["1", "-5", "abc", "99999999999"]),
					},
					chunks: [body],
				},
			};
		}
		case "bytes":
			return { kind, answer: sse([random.bytes(random.int(1, 500)).toString("latin1")]) };
		case "split frames": {
			const whole = events.join("").replace(/\n/g, random.pick(["\r\n", "\n", "\r"]));
			const chunks: string[] = [];
			for (let at = 0; at < whole.length; ) {
				const size = random.int(1, 40);
				chunks.push(whole.slice(at, at + size));
				at += size;
			}
			return { kind, answer: { ...sse(chunks), gapMs: random.chance(0.2) ? 1 : 0 } };
		}
		case "destroyed":
			return { kind, answer: sse(events.slice(0, random.int(0, events.length - 1)), "destroy") };
		default:
			return { kind: "empty", answer: sse([]) };
	}
}
