/**
 * Everything behind the extension's commands and provider, built once per environment on first use (see
 * runtime-loader.ts): the keychain/config/broker core, the footer, the fallback stream and the command handlers.
 */
import {
	type Api,
	type AssistantMessageEventStream,
	type Context,
	type Model,
	type SimpleStreamOptions,
	streamSimpleAnthropic,
} from "@mariozechner/pi-ai";
import { AccountFooter } from "./commands/account-footer.ts";
import { type CommandHandlers, createCommandHandlers } from "./commands/command-handlers.ts";
import { createCore } from "./core.ts";
import { streamInto } from "./provider/multi-account-stream.ts";

export interface ExtensionRuntime extends CommandHandlers {
	stream(
		model: Model<Api>,
		context: Context,
		options: SimpleStreamOptions | undefined,
		out: AssistantMessageEventStream,
	): Promise<void>;
}

export function createExtensionRuntime(env: NodeJS.ProcessEnv = process.env): ExtensionRuntime {
	const core = createCore(env);
	const footer = new AccountFooter();
	const deps = { core, footer };
	const streamDeps = { core, delegate: streamSimpleAnthropic, reporter: footer };
	return {
		...createCommandHandlers(deps),
		stream: (model, context, options, out) => streamInto(streamDeps, model, context, options, out),
	};
}
