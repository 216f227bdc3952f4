/**
 * pi-multi-claude-code: several Claude Pro/Max accounts in pi, tokens only in the OS keychain, directional
 * fallback on rate limits. This file only wires the parts together; see README.md.
 *
 *   pi -e ./index.ts          (or: pi install npm:pi-multi-claude-code)
 */
import { streamSimpleAnthropic } from "@mariozechner/pi-ai";
import type { ExtensionAPI } from "@mariozechner/pi-coding-agent";
import { AccountFooter } from "./src/commands/account-footer.js";
import { registerAccountCommands } from "./src/commands/register-commands.js";
import { loadCore } from "./src/core-loader.js";
import { mirroredAnthropicModels } from "./src/provider/models.js";
import {
	anthropicBaseUrl,
	createMultiAccountStream,
	PROVIDER_ID,
} from "./src/provider/multi-account-stream.js";

/**
 * pi requires an apiKey and reads it as an environment variable name first (a leading "!" runs a command).
 * This value can be neither, and no token is ever put here: tokens come from the keychain per request.
 */
const API_KEY_PLACEHOLDER = "<multi-claude-code: tokens come from the OS keychain>";

export default function multiClaudeCode(pi: ExtensionAPI): void {
	const footer = new AccountFooter();
	const deps = { loadCore: () => loadCore(), footer };
	pi.registerProvider(PROVIDER_ID, {
		name: "Claude (multi-account)",
		baseUrl: anthropicBaseUrl(),
		apiKey: API_KEY_PLACEHOLDER,
		// Its own api id: registering "anthropic-messages" would replace pi's built-in Anthropic streaming for everyone.
		api: PROVIDER_ID,
		models: mirroredAnthropicModels(),
		streamSimple: createMultiAccountStream({ loadCore: deps.loadCore, delegate: streamSimpleAnthropic, reporter: footer }),
	});
	registerAccountCommands(pi, deps);
}
