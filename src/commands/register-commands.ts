import type { ExtensionAPI } from "@mariozechner/pi-coding-agent";
import { type CommandDeps, labelCompletions, refreshFooter } from "./command-support.js";
import { fallbackCommand } from "./fallback-command.js";
import { loginCommand } from "./login-command.js";
import { removeCommand } from "./remove-command.js";
import { statusCommand } from "./status-command.js";
import { cycleAccounts, useCommand } from "./use-command.js";

export const CYCLE_SHORTCUT = "ctrl+shift+a";

/** The /mcc-* commands, the account-cycling shortcut, and the footer's start-of-session refresh. */
export function registerAccountCommands(pi: ExtensionAPI, deps: CommandDeps): void {
	const complete = labelCompletions(deps);
	pi.registerCommand("mcc-login", {
		description: "Log in a Claude Pro/Max account under a label (tokens go to the OS keychain)",
		getArgumentCompletions: complete,
		handler: (args, ctx) => loginCommand(deps, args, ctx),
	});
	pi.registerCommand("mcc-use", {
		description: "Switch the active Claude account (no label: pick one)",
		getArgumentCompletions: complete,
		handler: (args, ctx) => useCommand(deps, args, ctx),
	});
	pi.registerCommand("mcc-fallback", {
		description: "Show fallback chains; <source> clears one; <source> <targets…> sets one",
		getArgumentCompletions: complete,
		handler: (args, ctx) => fallbackCommand(deps, args, ctx),
	});
	pi.registerCommand("mcc-status", {
		description: "Claude accounts: token state, cooldowns, fallback lists, keychain backend",
		handler: (args, ctx) => statusCommand(deps, args, ctx),
	});
	pi.registerCommand("mcc-remove", {
		description: "Remove a Claude account: deletes its keychain item and its label",
		getArgumentCompletions: complete,
		handler: (args, ctx) => removeCommand(deps, args, ctx),
	});
	pi.registerShortcut(CYCLE_SHORTCUT, {
		description: "Cycle Claude accounts (multi-claude-code)",
		handler: (ctx) => cycleAccounts(deps, ctx),
	});
	pi.on("session_start", (_event, ctx) => {
		deps.footer.attach(ctx.ui);
		// Not awaited: the keychain layer loads in the background, so pi's start is not held up by it.
		refreshFooter(deps).catch((error: unknown) => {
			deps.footer.showActive(undefined);
			if (error instanceof Error && error.name === "ConfigError") ctx.ui.notify(error.message, "warning");
		});
	});
}
