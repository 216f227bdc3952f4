/**
 * The request path, the heart of the provider: a request of a session starts from that session's account, asks
 * the broker for its token, delegates to pi-ai's Anthropic streaming, and on a rate limit or overload before any
 * content retries on the origin's own fallback list (directional, not transitive, at most 5 hops). Three steps
 * share one `Request`: plan the attempts, try one account, end without an answer. They stay in one file on purpose:
 * each reads and updates the same `Request` (tokens in flight, the held failure, the cooldowns being written), and
 * split across modules that state would have to be exported; the policy itself lives in fallback-policy.ts.
 */
import {
	type Api,
	type AssistantMessageEvent,
	type AssistantMessageEventStream,
	type Context,
	createAssistantMessageEventStream,
	type Model,
	type SimpleStreamOptions,
} from "@mariozechner/pi-ai";
import { AccountError } from "../broker/token-broker.ts";
import type { AccountsConfig, Cooldown, SharedState, UsageSnapshot } from "../config/schema.ts";
import type { Core } from "../core.ts";
import { failStream } from "../host.ts";
import { PROVIDER_ID } from "../manifest.ts";
import { redactSecrets } from "../redact.ts";
import type { SessionAccount } from "../session/session-account.ts";
import { errorText } from "../text.ts";
import {
	activeCooldowns,
	applyCooldown,
	classifyFailure,
	DEFAULT_COOLDOWN_MS,
	planAttempts,
} from "./fallback-policy.ts";
import { ANTHROPIC_API } from "./models.ts";
import { type CapturedResponse, markedCapture, recordingFetch } from "./response-capture.ts";
import { applyUsage, headlineText, preemptionUntil, readUsageHeaders } from "./usage.ts";

/** pi-ai's Anthropic streaming (`streamSimpleAnthropic`), or a scripted stand-in in unit tests. */
export type AnthropicStreamFn = (
	model: Model<"anthropic-messages">,
	context: Context,
	options?: SimpleStreamOptions,
) => AssistantMessageEventStream;

/** Told which account answered (or could not be used), so the session's footer can say so. */
export interface AnswerReporter {
	/** `usage` is the account's headline rate-limit figure ("5h 42%") when the response reported one. */
	answered(origin: string, label: string, usage?: string): void;
	fellBack(from: string, to: string, reason: string): void;
	unusable(label: string, error: AccountError): void;
}

export interface RequestDeps {
	core: Core;
	delegate: AnthropicStreamFn;
	/**
	 * pi-ai 1.x takes a fetch per request, so the response is captured through it; pi-ai 0.73 does not, and a
	 * process-wide wrapper captures the requests marked as this provider's instead (see response-capture.ts).
	 */
	perRequestFetch: boolean;
	now?: () => number;
	/** The Messages API (default: the settings' PI_MCC_ANTHROPIC_BASE_URL, else Anthropic's). */
	baseUrl?: string;
}

type ErrorEvent = Extract<AssistantMessageEvent, { type: "error" }>;
type Options = SimpleStreamOptions & { fetch?: typeof globalThis.fetch; disableContinuation?: boolean };

/** Everything one request's steps share. */
interface Request {
	deps: RequestDeps;
	session: SessionAccount;
	model: Model<Api>;
	context: Context;
	options: Options | undefined;
	out: AssistantMessageEventStream;
	now: () => number;
	/** The session's account: fallbacks are taken from its list only, and it is never silently replaced. */
	origin: string;
	/** Its token, read while the plan is made (or since the turn started: see SessionAccount.prefetch). */
	originToken: Promise<string>;
	attempts: string[];
	/** Accounts that answered with a rate limit or overload, in order. */
	limited: string[];
	/** Fallback targets that could not be used (revoked, keychain), with why. */
	skipped: string[];
	/** State-file writes (usage figures, cooldowns) in flight: the last event waits for them. */
	writes: Promise<void>[];
	lastLimit?: { event: ErrorEvent; token: string; kind: "rate-limited" | "overloaded" };
	/** The next account's token read, started as the previous account's 429/529 head arrived; taken once. */
	nextToken?: { label: string; token: Promise<string> };
}

/** The provider's stream function for one session, for callers outside pi (worker processes, tests). */
export function createMultiAccountStream(
	deps: RequestDeps,
	session: SessionAccount,
): (model: Model<Api>, context: Context, options?: SimpleStreamOptions) => AssistantMessageEventStream {
	return (model, context, options) => {
		const out = createAssistantMessageEventStream();
		void streamInto(deps, session, model, context, options, out);
		return out;
	};
}

/** The provider's stream for a request of `session`, into a stream already handed to pi. Never rejects. */
export async function streamInto(
	deps: RequestDeps,
	session: SessionAccount,
	model: Model<Api>,
	context: Context,
	options: SimpleStreamOptions | undefined,
	out: AssistantMessageEventStream,
): Promise<void> {
	try {
		const request = await planRequest(deps, session, model, context, options, out);
		if (!request) return;
		for (let index = 0; index < request.attempts.length; index++) {
			if ((await tryAccount(request, index)) === "ended") return;
		}
		await endWithoutAnswer(request);
	} catch (error) {
		// Anything unexpected still ends the stream with an error event, never a throw into pi.
		failStream(out, model, `${PROVIDER_ID}: ${redactSecrets(errorText(error))}`);
	}
}

/**
 * Step 1: the origin, its token read (started first: it is the slowest step), and the accounts to try. A revoked
 * or logged-out origin fails even when it is cooling down and its fallbacks would be asked: the account the
 * person chose is never silently replaced. `undefined` when the request already ended.
 */
async function planRequest(
	deps: RequestDeps,
	session: SessionAccount,
	model: Model<Api>,
	context: Context,
	options: Options | undefined,
	out: AssistantMessageEventStream,
): Promise<Request | undefined> {
	const { core } = deps;
	// A refused PI_MCC_ANTHROPIC_BASE_URL fails the request before any token leaves the keychain (never the default).
	const refusedBase = core.settings.anthropicBaseUrlProblem;
	if (refusedBase && !deps.baseUrl) {
		failStream(out, model, `${PROVIDER_ID}: ${refusedBase}`);
		return undefined;
	}
	const now = deps.now ?? Date.now;
	// The keychain read is the slowest step before the request: it starts first (or already did, when the turn
	// started), and the config and state files are read meanwhile. A broken state file must not block requests:
	// without it, no account counts as cooling down.
	const known = session.label;
	const early = known ? readToken(deps, session, known, now()) : undefined;
	const [config, state] = await Promise.all([core.config.read(), core.state.read().catch(() => undefined)]);
	const origin = await session.resolve(config);
	if (!origin) {
		failStream(
			out,
			model,
			`${PROVIDER_ID}: no Claude account yet. Run /mcc-login <label> (e.g. /mcc-login personal).`,
		);
		return undefined;
	}
	const account = config.accounts.find((entry) => entry.label === origin);
	if (!account) {
		session.footer.show({ label: origin, removed: true });
		failStream(out, model, `${PROVIDER_ID}: ${removedText(origin, config)}`);
		return undefined;
	}
	const originToken = origin === known && early ? early : readToken(deps, session, origin, now());
	const cooldowns = state ? activeCooldowns(state, now()) : { until: () => undefined };
	const preempted = preemptionUntil(account.preemptiveFallbackAt, state?.usage[origin], now());
	const attempts = isCacheWarmingReplay(options)
		? [origin]
		: planAttempts(origin, config, {
				until: (label) => cooldowns.until(label) ?? (label === origin ? preempted : undefined),
			});
	const request: Request = {
		deps,
		session,
		model,
		context,
		options,
		out,
		now,
		origin,
		originToken,
		attempts,
		limited: [],
		skipped: [],
		writes: [],
	};
	if (attempts[0] !== origin) {
		// A refresh that merely could not reach the token endpoint (or a busy lock) does not stop the fallbacks.
		const failure = await originToken.then(
			() => undefined,
			(error: unknown) => error,
		);
		if (failure instanceof AccountError && failure.kind !== "refresh_failed" && failure.kind !== "busy") {
			session.footer.unusable(origin, failure);
			failStream(out, model, `${PROVIDER_ID}: ${failure.message}`);
			return undefined;
		}
	}
	return request;
}

/**
 * Step 2: one account. "ended" when the stream is done (an answer, or an error that is not the account's limit);
 * "next" when the next account may be asked (it was limited, or it is a fallback that cannot be used).
 */
async function tryAccount(request: Request, index: number): Promise<"ended" | "next"> {
	const { deps, session, model, out, origin, now } = request;
	const label = request.attempts[index]!;
	if (index > 0 && request.lastLimit)
		session.footer.fellBack(request.attempts[index - 1]!, label, request.lastLimit.kind);
	let token: string;
	try {
		token = await (label === origin ? request.originToken : takeNextToken(request, label));
	} catch (error) {
		const message = error instanceof AccountError ? error.message : `Account "${label}" is unusable.`;
		if (label !== origin) {
			request.skipped.push(message);
			return "next";
		}
		if (error instanceof AccountError) session.footer.unusable(label, error);
		failStream(out, model, `${PROVIDER_ID}: ${message}`);
		return "ended";
	}
	const captured: CapturedResponse = {};
	// A 429 or 529 is known from its response head, before pi-ai has read the body and reported it: the cooldown
	// write and the next account's token read start then, and the fallback waits less for either.
	let earlyCooldown = false;
	captured.onHead = () => {
		if (earlyCooldown || request.options?.signal?.aborted) return;
		const limit = limitFrom(captured, now());
		if (!limit) return;
		earlyCooldown = true;
		request.writes.push(saveAttempt(deps.core, label, readUsageHeaders(captured.headers, now()), limit));
		const next = request.attempts[index + 1];
		if (next && next !== origin) request.nextToken = { label: next, token: readNextToken(deps, next) };
	};
	const delegated = delegate(request, label, token, captured);
	let outcome: Outcome;
	try {
		outcome = await forwardOrHoldFailure(delegated.stream, out, token, () => settle(request));
	} finally {
		delegated.release();
		captured.onHead = undefined;
	}
	// Rate-limit figures ride on every response; they are saved alongside the stream, never in its way.
	const usage = readUsageHeaders(captured.headers, now());
	if (outcome.kind === "forwarded") {
		// After pi has handled the answer (one event-loop turn later): the figures are for later requests and
		// other sessions, and their write's work would otherwise delay pi's own handling of the answer.
		if (usage) request.writes.push(nextTurn(() => saveAttempt(deps.core, label, usage)));
		session.lastAnswered = label;
		session.footer.answered(origin, label, headlineText(usage));
		await settle(request);
		out.end();
		return "ended";
	}
	const { event } = outcome;
	const failure = classifyFailure(
		{ status: captured.status, headers: captured.headers, errorMessage: event.error.errorMessage },
		now(),
	);
	if (event.reason !== "aborted" && (failure.kind === "rate_limit" || failure.kind === "overloaded")) {
		// Not awaited here: the next account is asked while the cooldown is written. The stream's last event
		// waits for the write, so a session that starts after this answer already sees the cooldown.
		const cooldown = {
			until: failure.cooldownUntil ?? now() + DEFAULT_COOLDOWN_MS,
			reason: failure.kind,
			setAt: now(),
		};
		if (!earlyCooldown) request.writes.push(saveAttempt(deps.core, label, usage, cooldown));
		request.limited.push(label);
		request.lastLimit = { event, token, kind: failure.kind === "overloaded" ? "overloaded" : "rate-limited" };
		return "next";
	}
	let text = event.error.errorMessage ?? "the request failed";
	if (captured.redirect) {
		text =
			`${captured.redirect}: requests carrying a token never follow one, so nothing was sent where it points. ` +
			"Check PI_MCC_ANTHROPIC_BASE_URL and any proxy between you and Anthropic.";
	} else if (failure.kind === "auth") {
		text = `Anthropic refused the token of account "${label}" (${text}). Run /mcc-login ${label} to log in again.`;
	}
	if (usage) request.writes.push(saveAttempt(deps.core, label, usage));
	await settle(request);
	surface(request, event, text, token);
	return "ended";
}

/** Step 3: every allowed account was limited (or unusable): one error that says which, and what to do. */
async function endWithoutAnswer(request: Request): Promise<void> {
	const { origin, limited, lastLimit } = request;
	await settle(request);
	if (!lastLimit) {
		failStream(
			request.out,
			request.model,
			`${PROVIDER_ID}: no usable account for "${origin}". ${request.skipped.join(" ")}`,
		);
		return;
	}
	const detail = lastLimit.event.error.errorMessage ?? "rate limited";
	const text =
		limited.length > 1
			? `every account allowed for "${origin}" is rate-limited or overloaded (${limited.join(", ")}): ${detail}`
			: `account "${limited[0]}" is ${lastLimit.kind}: ${detail}.` +
				(request.attempts.length === 1 ? ` It has no usable fallback; see /mcc-fallback ${origin}.` : "");
	surface(request, lastLimit.event, text, lastLimit.token);
}

/**
 * pi-ai's Anthropic streaming for one account: the request pi built, unchanged (every option and hook passes
 * through: onPayload, onResponse, onProviderStreamEvent, the signal, headers, session id), with the account's token.
 */
function delegate(
	request: Request,
	label: string,
	token: string,
	captured: CapturedResponse,
): { stream: AssistantMessageEventStream; release(): void } {
	const { deps, options, session } = request;
	const switched = session.lastAnswered !== undefined && session.lastAnswered !== label;
	// pi-ai 1.x: a wrapper of the request's own fetch; 0.73: a marker header the process-wide wrapper records by.
	const marked = deps.perRequestFetch ? undefined : markedCapture(captured);
	const delegated: Options = {
		...options,
		apiKey: token,
		// The Anthropic SDK would otherwise retry 429s itself, honouring retry-after without a cap, and the fallback
		// would never get to act (pi-ai 1.x already sends 0 to the SDK and retries by options.maxRetries itself).
		maxRetries: 0,
		// pi-ai 1.x continues a session's message thread on the server; another account cannot continue it.
		...(switched ? { disableContinuation: true } : {}),
		...(marked ? { headers: { ...options?.headers, ...marked.headers } } : {}),
		...(deps.perRequestFetch ? { fetch: recordingFetch(captured, options?.fetch) } : {}),
	};
	const model = {
		...request.model,
		api: ANTHROPIC_API,
		baseUrl: deps.baseUrl ?? deps.core.settings.anthropicBaseUrl,
	} as Model<"anthropic-messages">;
	try {
		return { stream: deps.delegate(model, request.context, delegated), release: () => marked?.release() };
	} catch (error) {
		marked?.release();
		throw error;
	}
}

/** The cooldown a 429 or 529 response head calls for (the same as once pi-ai reports it), else `undefined`. */
function limitFrom(captured: CapturedResponse, now: number): Cooldown | undefined {
	if (captured.status !== 429 && captured.status !== 529) return undefined;
	const failure = classifyFailure({ status: captured.status, headers: captured.headers }, now);
	if (failure.kind !== "rate_limit" && failure.kind !== "overloaded") return undefined;
	return { until: failure.cooldownUntil ?? now + DEFAULT_COOLDOWN_MS, reason: failure.kind, setAt: now };
}

/** A fallback's token: the read started at its predecessor's 429 head when there is one for it, else a read now. */
function takeNextToken(request: Request, label: string): Promise<string> {
	const next = request.nextToken;
	request.nextToken = undefined;
	return next?.label === label ? next.token : request.deps.core.broker.getAccessToken(label);
}

function readNextToken(deps: RequestDeps, label: string): Promise<string> {
	const token = deps.core.broker.getAccessToken(label);
	// Awaited by the next attempt; one that never comes (the request ended) must not leave it unhandled.
	token.catch(() => {});
	return token;
}

/** The session's token: the read started at the turn's start when there is one for it, else a read now. */
function readToken(deps: RequestDeps, session: SessionAccount, label: string, now: number): Promise<string> {
	const token = session.takePrefetched(label, now) ?? deps.core.broker.getAccessToken(label);
	// Awaited by the attempt; a request that ends before it (a removed account) must not leave it unhandled.
	token.catch(() => {});
	return token;
}

/** pi 1.x keeps an idle prompt cache warm by replaying a request with one output token: never another account's. */
function isCacheWarmingReplay(options: Options | undefined): boolean {
	return options?.maxTokens === 1 && options.disableContinuation === true;
}

function nextTurn(run: () => Promise<void>): Promise<void> {
	return new Promise((resolve) => setImmediate(() => resolve(run())));
}

async function settle(request: Request): Promise<void> {
	await Promise.allSettled(request.writes.splice(0));
}

/**
 * One state-file write per attempt: the account's rate-limit figures and, when it was refused, its cooldown.
 * Resolves once the new content is in place for every reader (the lock is released after that, in the
 * background), or once the write ended without writing; never rejects.
 */
function saveAttempt(core: Core, label: string, usage?: UsageSnapshot, cooldown?: Cooldown): Promise<void> {
	return new Promise((visible) => {
		const change = (state: SharedState) => {
			const changed = (usage ? applyUsage(state, label, usage) : false) || cooldown !== undefined;
			if (cooldown) applyCooldown(state, label, cooldown);
			return changed ? { next: state, result: undefined } : { result: undefined };
		};
		core.state.update(change, { onWritten: () => visible() }).then(
			() => visible(),
			() => visible(),
		);
	});
}

/** Ends the stream with pi-ai's own error event, its text replaced by a redacted, explained one. */
function surface(request: Request, event: ErrorEvent, text: string, token: string): void {
	const full = request.skipped.length > 0 ? `${text} Skipped: ${request.skipped.join(" ")}` : text;
	event.error.errorMessage = `${PROVIDER_ID}: ${redactSecrets(full, [token])}`;
	request.out.push(event);
	request.out.end();
}

function removedText(label: string, config: Readonly<AccountsConfig>): string {
	const known = config.accounts.map((account) => account.label);
	const others = known.length > 0 ? ` Known accounts: ${known.join(", ")}.` : "";
	return (
		`this session's account "${label}" was removed.${others} Run /mcc-use <label> to switch this session, or ` +
		`/mcc-login ${label} to add it again.`
	);
}

type Outcome = { kind: "forwarded" } | { kind: "failed"; event: ErrorEvent };

/**
 * Holds back `start` until the first content event or the end. An error before any content is returned to
 * the caller undelivered (it may fall back); once content has streamed, everything passes through untouched
 * except that error texts are redacted.
 */
async function forwardOrHoldFailure(
	inner: AssistantMessageEventStream,
	out: AssistantMessageEventStream,
	token: string,
	beforeLastEvent: () => Promise<void>,
): Promise<Outcome> {
	const held: AssistantMessageEvent[] = [];
	let streaming = false;
	for await (const event of inner) {
		if (!streaming) {
			if (event.type === "start") {
				held.push(event);
				continue;
			}
			if (event.type === "error") return { kind: "failed", event };
			streaming = true;
			for (const early of held) out.push(early);
		}
		if (event.type === "error" && event.error.errorMessage) {
			event.error.errorMessage = redactSecrets(event.error.errorMessage, [token]);
		}
		if (event.type === "done" || event.type === "error") {
			await beforeLastEvent();
			out.push(event);
			return { kind: "forwarded" };
		}
		out.push(event);
	}
	if (!streaming) for (const early of held) out.push(early);
	return { kind: "forwarded" };
}
