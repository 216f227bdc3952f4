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
import { type Cooldown, defaultAccount, type UsageSnapshot } from "../config/schema.ts";
import type { Core } from "../core.ts";
import { errorAssistantMessage } from "../host.ts";
import { PROVIDER_ID } from "../manifest.ts";
import { redactSecrets } from "../redact.ts";
import { errorText } from "../text.ts";
import {
	activeCooldowns,
	applyCooldown,
	classifyFailure,
	DEFAULT_COOLDOWN_MS,
	planAttempts,
} from "./fallback-policy.ts";
import { type CapturedResponse, withResponseCapture } from "./response-capture.ts";
import { applyUsage, headlineText, preemptionUntil, readUsageHeaders } from "./usage.ts";

type StreamFn = (model: Model<Api>, context: Context, options?: SimpleStreamOptions) => AssistantMessageEventStream;
type AnthropicStreamFn = (
	model: Model<"anthropic-messages">,
	context: Context,
	options?: SimpleStreamOptions,
) => AssistantMessageEventStream;

/** Told which account answered (or could not be used), so the footer can say so. */
export interface AnswerReporter {
	/** `usage` is the account's headline rate-limit figure ("5h 42%") when the response reported one. */
	answered(origin: string, label: string, usage?: string): void;
	fellBack(from: string, to: string, reason: string): void;
	unusable(label: string, error: AccountError): void;
}

export interface MultiAccountStreamDeps {
	core: Core;
	/** pi-ai's Anthropic streaming (`streamSimpleAnthropic`). */
	delegate: AnthropicStreamFn;
	reporter: AnswerReporter;
	baseUrl?: () => string;
	now?: () => number;
}

/**
 * The provider's `streamSimple`: picks the active account, asks the broker for its token, delegates to pi-ai's
 * Anthropic streaming, and on a rate limit before any content retries on the origin's fallback list.
 */
export function createMultiAccountStream(deps: MultiAccountStreamDeps): StreamFn {
	return (model, context, options) => {
		const out = createAssistantMessageEventStream();
		void streamInto(deps, model, context, options, out);
		return out;
	};
}

/** Same as the stream function, into a stream the caller already handed to pi. Never rejects. */
export async function streamInto(
	deps: MultiAccountStreamDeps,
	model: Model<Api>,
	context: Context,
	options: SimpleStreamOptions | undefined,
	out: AssistantMessageEventStream,
): Promise<void> {
	const now = deps.now ?? Date.now;
	const baseUrl = deps.baseUrl ?? (() => deps.core.settings.anthropicBaseUrl);
	try {
		await runWithFallback(deps, model, context, options, out, now, baseUrl());
	} catch (error) {
		// Anything unexpected still ends the stream with an error event, never a throw into pi.
		const message = errorText(error);
		failStream(out, model, `${PROVIDER_ID}: ${redactSecrets(message)}`);
	}
}

async function runWithFallback(
	deps: MultiAccountStreamDeps,
	model: Model<Api>,
	context: Context,
	options: SimpleStreamOptions | undefined,
	out: AssistantMessageEventStream,
	now: () => number,
	baseUrl: string,
): Promise<void> {
	const { core } = deps;
	// A refused PI_MCC_ANTHROPIC_BASE_URL fails the request before any token leaves the keychain (never the default).
	const refusedBase = core.settings.anthropicBaseUrlProblem;
	if (refusedBase && !deps.baseUrl) return failStream(out, model, `${PROVIDER_ID}: ${refusedBase}`);
	let origin: string;
	let attempts: string[];
	let originToken: Promise<string>;
	try {
		const config = await core.config.read();
		if (config.accounts.length === 0) {
			return failStream(
				out,
				model,
				`${PROVIDER_ID}: no Claude account yet. Run /mcc-login <label> (e.g. /mcc-login personal).`,
			);
		}
		origin = defaultAccount(config)!;
		// The keychain read is the slowest step before the request: it runs while the state file is read.
		originToken = core.broker.getAccessToken(origin);
		originToken.catch(() => {});
		// A broken state file must not block requests: without it, no account counts as cooling down.
		const state = await core.state.read().catch(() => undefined);
		const cooldowns = state ? activeCooldowns(state, now()) : { until: () => undefined };
		const account = config.accounts.find((entry) => entry.label === origin);
		const preempted = preemptionUntil(account?.preemptiveFallbackAt, state?.usage[origin], now());
		attempts = planAttempts(origin, config, {
			until: (label) => cooldowns.until(label) ?? (label === origin ? preempted : undefined),
		});
	} catch (error) {
		return failStream(out, model, `${PROVIDER_ID}: ${errorText(error)}`);
	}

	if (attempts[0] !== origin) {
		// The origin is cooling down and will not be asked, but a revoked or logged-out origin must still fail
		// rather than be silently replaced by its fallbacks. (A refresh that merely could not reach the token
		// endpoint does not stop its fallbacks.)
		const failure = await originToken.then(
			() => undefined,
			(error: unknown) => error,
		);
		if (failure instanceof AccountError && failure.kind !== "refresh_failed" && failure.kind !== "busy") {
			deps.reporter.unusable(origin, failure);
			return failStream(out, model, `${PROVIDER_ID}: ${failure.message}`);
		}
	}
	const limited: string[] = [];
	const skipped: string[] = [];
	const writes: Promise<void>[] = [];
	const settleWrites = async (): Promise<void> => {
		await Promise.allSettled(writes.splice(0));
	};
	let lastLimit: { event: ErrorEvent; token: string; kind: string } | undefined;
	for (let index = 0; index < attempts.length; index++) {
		const label = attempts[index]!;
		if (index > 0 && lastLimit) deps.reporter.fellBack(attempts[index - 1]!, label, lastLimit.kind);
		let token: string;
		try {
			token = await (label === origin ? originToken : core.broker.getAccessToken(label));
		} catch (error) {
			const message = error instanceof AccountError ? error.message : `Account "${label}" is unusable.`;
			// The account the person chose is never silently replaced; a broken fallback target is skipped.
			if (label === origin) {
				if (error instanceof AccountError) deps.reporter.unusable(label, error);
				return failStream(out, model, `${PROVIDER_ID}: ${message}`);
			}
			skipped.push(message);
			continue;
		}
		const captured: CapturedResponse = {};
		const inner = withResponseCapture(captured, () =>
			deps.delegate({ ...model, api: "anthropic-messages" as const, baseUrl }, context, {
				...options,
				apiKey: token,
				// The Anthropic SDK would otherwise retry 429s itself, honouring retry-after without a cap, and the
				// fallback would never get to act.
				maxRetries: 0,
			}),
		);
		const outcome = await forwardOrHoldFailure(inner, out, token, settleWrites);
		// Rate-limit figures ride on every response; they are saved alongside the stream, never in its way.
		const usage = readUsageHeaders(captured.headers, now());
		if (outcome.kind === "forwarded") {
			if (usage) writes.push(saveAttempt(core, label, usage));
			deps.reporter.answered(origin, label, headlineText(usage));
			await settleWrites();
			out.end();
			return;
		}
		const event = outcome.event;
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
			writes.push(saveAttempt(core, label, usage, cooldown));
			limited.push(label);
			lastLimit = { event, token, kind: failure.kind === "overloaded" ? "overloaded" : "rate-limited" };
			continue;
		}
		let text = event.error.errorMessage ?? "the request failed";
		if (failure.kind === "auth") {
			text = `Anthropic refused the token of account "${label}" (${text}). Run /mcc-login ${label} to log in again.`;
		}
		if (usage) writes.push(saveAttempt(core, label, usage));
		await settleWrites();
		return surface(out, event, text, skipped, token);
	}
	await settleWrites();
	if (!lastLimit) {
		return failStream(out, model, `${PROVIDER_ID}: no usable account for "${origin}". ${skipped.join(" ")}`);
	}
	const detail = lastLimit.event.error.errorMessage ?? "rate limited";
	const text =
		limited.length > 1
			? `every account allowed for "${origin}" is rate-limited or overloaded (${limited.join(", ")}): ${detail}`
			: `account "${limited[0]}" is ${lastLimit.kind}: ${detail}.` +
				(attempts.length === 1 ? ` It has no usable fallback; see /mcc-fallback ${origin}.` : "");
	return surface(out, lastLimit.event, text, skipped, lastLimit.token);
}

/** One state-file write per attempt: the account's rate-limit figures and, when it was refused, its cooldown. */
async function saveAttempt(core: Core, label: string, usage?: UsageSnapshot, cooldown?: Cooldown): Promise<void> {
	await core.state
		.update((state) => {
			const changed = (usage ? applyUsage(state, label, usage) : false) || cooldown !== undefined;
			if (cooldown) applyCooldown(state, label, cooldown);
			return changed ? { next: state, result: undefined } : { result: undefined };
		})
		.catch(() => {});
}

type ErrorEvent = Extract<AssistantMessageEvent, { type: "error" }>;

/** Ends the stream with pi-ai's own error event, its text replaced by a redacted, explained one. */
function surface(
	out: AssistantMessageEventStream,
	event: ErrorEvent,
	text: string,
	skipped: string[],
	token: string,
): void {
	const full = skipped.length > 0 ? `${text} Skipped: ${skipped.join(" ")}` : text;
	event.error.errorMessage = `${PROVIDER_ID}: ${redactSecrets(full, [token])}`;
	out.push(event);
	out.end();
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

function failStream(out: AssistantMessageEventStream, model: Model<Api>, message: string): void {
	out.push({ type: "error", reason: "error", error: errorAssistantMessage(model, message) });
	out.end();
}
