/**
 * The extension's surface as pi sees it at start-up: names, descriptions and provider settings. Deliberately free
 * of imports, so registering it costs pi next to nothing; everything behind it loads on first use.
 */
export const PROVIDER_ID = "multi-claude-code";

/**
 * pi requires an apiKey and reads it as an environment variable name first (a leading "!" runs a command).
 * This value can be neither, and no token is ever put here: tokens come from the keychain per request.
 */
export const API_KEY_PLACEHOLDER = "<multi-claude-code: tokens come from the OS keychain>";

export const CYCLE_SHORTCUT = "ctrl+shift+a";

export type CommandName = "mcc-login" | "mcc-use" | "mcc-fallback" | "mcc-status" | "mcc-remove";

export const COMMANDS: ReadonlyArray<{ name: CommandName; description: string; completes: boolean }> = [
	{
		name: "mcc-login",
		description:
			"Log in a Claude Pro/Max account under a label (tokens go to the OS keychain; --copy-code: headless)",
		completes: true,
	},
	{
		name: "mcc-use",
		description: "Switch this session's Claude account (no label: pick one); --project binds this project to it",
		completes: true,
	},
	{
		name: "mcc-fallback",
		description: "Show fallback chains; <source> clears one; <source> <targets…> sets one; --early <pct>",
		completes: true,
	},
	{
		name: "mcc-status",
		description: "Claude accounts: token state, usage, cooldowns, fallback lists, keychain backend (--refresh)",
		completes: false,
	},
	{
		name: "mcc-remove",
		description: "Remove a Claude account: deletes its keychain item and its label",
		completes: true,
	},
];
