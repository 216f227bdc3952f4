/**
 * What pi calls into, made safe: an extension must never take its host down. Every handler runs through
 * `guarded`, which catches everything; a `ctx` that went stale (the session was replaced or reloaded while a
 * handler awaited) means "that session is gone", never an error. Import-light: index.ts uses it at start-up.
 */
import type { Api, AssistantMessage, AssistantMessageEventStream, Model } from "@mariozechner/pi-ai";
import type { ExtensionContext } from "@mariozechner/pi-coding-agent";
import { PROVIDER_ID } from "./manifest.ts";
import { redactSecrets } from "./redact.ts";
import { errorText } from "./text.ts";

/** pi invalidates an extension's ctx and api after session replacement or reload; every member then throws. */
export function isStaleContextError(error: unknown): boolean {
	return /\bstale after (session replacement|.*reload)/i.test(errorText(error));
}

/**
 * Runs a handler pi called. A stale ctx ends it quietly; any other failure is shown on that ctx when it is still
 * live, and never escapes (no rejection reaches pi, none is left unhandled).
 */
export async function guarded(ctx: Pick<ExtensionContext, "ui"> | undefined, run: () => unknown): Promise<void> {
	try {
		await run();
	} catch (error) {
		if (isStaleContextError(error)) return;
		notifySafely(ctx, `${PROVIDER_ID}: ${redactSecrets(errorText(error))}`, "error");
	}
}

/** A notification that cannot throw: a stale or UI-less ctx drops it. */
export function notifySafely(
	ctx: Pick<ExtensionContext, "ui"> | undefined,
	message: string,
	type: "info" | "warning" | "error",
): void {
	try {
		ctx?.ui.notify(message, type);
	} catch {
		// the session is gone, or it has no UI: nobody to tell
	}
}

/** Ends a provider stream with one error event (a request that failed before pi-ai was ever called). */
export function failStream(out: AssistantMessageEventStream, model: Model<Api>, message: string): void {
	out.push({ type: "error", reason: "error", error: errorAssistantMessage(model, message) });
	out.end();
}

/** An assistant message that carries only an error, for requests that end before pi-ai is ever called. */
export function errorAssistantMessage(model: Model<Api>, message: string): AssistantMessage {
	return {
		role: "assistant",
		content: [],
		api: "anthropic-messages",
		provider: model.provider,
		model: model.id,
		usage: {
			input: 0,
			output: 0,
			cacheRead: 0,
			cacheWrite: 0,
			totalTokens: 0,
			cost: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0, total: 0 },
		},
		stopReason: "error",
		errorMessage: message,
		timestamp: Date.now(),
	};
}
