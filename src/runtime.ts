/**
 * Everything behind the extension's names, built once per settings on first use (index.ts loads this module
 * lazily): the keychain/config/broker core, the footer, the fallback stream and the command handlers. Adding a
 * command means a line in manifest.ts and a line in `run` below.
 */
import {
	type Api,
	type AssistantMessageEventStream,
	type Context,
	type Model,
	type SimpleStreamOptions,
	streamSimpleAnthropic,
} from "@mariozechner/pi-ai";
import type { ExtensionCommandContext, ExtensionContext } from "@mariozechner/pi-coding-agent";
import { AccountFooter } from "./commands/account-footer.ts";
import { type CommandDeps, type LabelCompletion, labelCompletions, refreshFooter } from "./commands/command-support.ts";
import { fallbackCommand } from "./commands/fallback-command.ts";
import { loginCommand } from "./commands/login-command.ts";
import { removeCommand } from "./commands/remove-command.ts";
import { statusCommand } from "./commands/status-command.ts";
import { cycleAccounts, useCommand } from "./commands/use-command.ts";
import { ConfigError } from "./config/stores.ts";
import { createCore } from "./core.ts";
import { notifySafely } from "./host.ts";
import type { CommandName } from "./manifest.ts";
import { streamInto } from "./provider/multi-account-stream.ts";
import type { Settings } from "./settings.ts";

export interface Runtime {
	stream(
		model: Model<Api>,
		context: Context,
		options: SimpleStreamOptions | undefined,
		out: AssistantMessageEventStream,
	): Promise<void>;
	run: Record<CommandName, (args: string, ctx: ExtensionCommandContext) => Promise<void>>;
	completeLabels(prefix: string, flags?: readonly string[]): Promise<LabelCompletion[] | null>;
	cycle(ctx: ExtensionContext): Promise<void>;
	sessionStarted(ctx: ExtensionContext): Promise<void>;
}

export function createRuntime(settings: Settings): Runtime {
	const core = createCore(settings);
	const footer = new AccountFooter();
	const deps: CommandDeps = { core, footer };
	const streamDeps = { core, delegate: streamSimpleAnthropic, reporter: footer };
	return {
		stream: (model, context, options, out) => streamInto(streamDeps, model, context, options, out),
		run: {
			"mcc-login": (args, ctx) => loginCommand(deps, args, ctx),
			"mcc-use": (args, ctx) => useCommand(deps, args, ctx),
			"mcc-fallback": (args, ctx) => fallbackCommand(deps, args, ctx),
			"mcc-status": (args, ctx) => statusCommand(deps, args, ctx),
			"mcc-remove": (args, ctx) => removeCommand(deps, args, ctx),
		},
		completeLabels: labelCompletions(deps),
		cycle: (ctx) => cycleAccounts(deps, ctx),
		async sessionStarted(ctx) {
			footer.attach(ctx.ui);
			try {
				await refreshFooter(deps);
			} catch (error) {
				footer.showActive(undefined);
				if (error instanceof ConfigError) notifySafely(ctx, error.message, "warning");
			}
		},
	};
}
