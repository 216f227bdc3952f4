import type { ExtensionCommandContext, ExtensionContext } from "@mariozechner/pi-coding-agent";
import type { CommandName } from "../manifest.ts";
import { type CommandDeps, type LabelCompletion, labelCompletions, refreshFooter } from "./command-support.ts";
import { fallbackCommand } from "./fallback-command.ts";
import { loginCommand } from "./login-command.ts";
import { removeCommand } from "./remove-command.ts";
import { statusCommand } from "./status-command.ts";
import { cycleAccounts, useCommand } from "./use-command.ts";

export interface CommandHandlers {
	run: Record<CommandName, (args: string, ctx: ExtensionCommandContext) => Promise<void>>;
	completeLabels: (prefix: string) => Promise<LabelCompletion[] | null>;
	cycle: (ctx: ExtensionContext) => Promise<void>;
	sessionStarted: (ctx: ExtensionContext) => void;
}

/** What the /mcc-* commands, the account-cycling shortcut and the start of a session do. */
export function createCommandHandlers(deps: CommandDeps): CommandHandlers {
	return {
		run: {
			"mcc-login": (args, ctx) => loginCommand(deps, args, ctx),
			"mcc-use": (args, ctx) => useCommand(deps, args, ctx),
			"mcc-fallback": (args, ctx) => fallbackCommand(deps, args, ctx),
			"mcc-status": (args, ctx) => statusCommand(deps, args, ctx),
			"mcc-remove": (args, ctx) => removeCommand(deps, args, ctx),
		},
		completeLabels: labelCompletions(deps),
		cycle: (ctx) => cycleAccounts(deps, ctx),
		sessionStarted: (ctx) => {
			deps.footer.attach(ctx.ui);
			refreshFooter(deps).catch((error: unknown) => {
				deps.footer.showActive(undefined);
				if (error instanceof Error && error.name === "ConfigError") ctx.ui.notify(error.message, "warning");
			});
		},
	};
}
