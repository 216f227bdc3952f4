/**
 * pi-multi-claude-code: several Claude Pro/Max accounts in pi, tokens only in the OS keychain, directional
 * fallback on rate limits. This file only wires names to handlers; the handlers load on first use
 * (src/runtime-loader.ts), so pi's start-up pays for this file and the model list only. See README.md.
 *
 *   pi -e ./index.ts          (or: pi install npm:pi-multi-claude-code)
 */
import { createAssistantMessageEventStream } from "@mariozechner/pi-ai";
import type { ExtensionAPI } from "@mariozechner/pi-coding-agent";
import { API_KEY_PLACEHOLDER, anthropicBaseUrl, COMMANDS, CYCLE_SHORTCUT, PROVIDER_ID } from "./src/manifest.ts";
import { errorAssistantMessage } from "./src/provider/error-message.ts";
import { mirroredAnthropicModels } from "./src/provider/models.ts";
import { loadRuntime } from "./src/runtime-loader.ts";

function loadFailure(error: unknown): string {
	const detail = error instanceof Error ? error.message : String(error);
	return `${PROVIDER_ID}: the extension could not load its keychain layer (${detail}). Reinstall it (npm install).`;
}

export default function multiClaudeCode(pi: ExtensionAPI): void {
	pi.registerProvider(PROVIDER_ID, {
		name: "Claude (multi-account)",
		baseUrl: anthropicBaseUrl(),
		apiKey: API_KEY_PLACEHOLDER,
		// Its own api id: registering "anthropic-messages" would replace pi's built-in Anthropic streaming for everyone.
		api: PROVIDER_ID,
		models: mirroredAnthropicModels(),
		streamSimple: (model, context, options) => {
			const out = createAssistantMessageEventStream();
			loadRuntime().then(
				(runtime) => runtime.stream(model, context, options, out),
				(error: unknown) => {
					out.push({ type: "error", reason: "error", error: errorAssistantMessage(model, loadFailure(error)) });
					out.end();
				},
			);
			return out;
		},
	});
	for (const command of COMMANDS) {
		pi.registerCommand(command.name, {
			description: command.description,
			...(command.completesLabels
				? {
						getArgumentCompletions: (prefix: string) =>
							loadRuntime().then(
								(runtime) => runtime.completeLabels(prefix),
								() => null,
							),
					}
				: {}),
			handler: (args, ctx) =>
				loadRuntime().then(
					(runtime) => runtime.run[command.name](args, ctx),
					(error: unknown) => ctx.ui.notify(loadFailure(error), "error"),
				),
		});
	}
	pi.registerShortcut(CYCLE_SHORTCUT, {
		description: "Cycle Claude accounts (multi-claude-code)",
		handler: (ctx) =>
			loadRuntime().then(
				(runtime) => runtime.cycle(ctx),
				(error: unknown) => ctx.ui.notify(loadFailure(error), "error"),
			),
	});
	pi.on("session_start", (_event, ctx) => {
		// Not awaited: the footer fills in once the runtime has loaded in the background; pi's start goes on.
		loadRuntime().then(
			(runtime) => runtime.sessionStarted(ctx),
			() => {},
		);
	});
}
