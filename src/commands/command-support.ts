import type { ExtensionContext } from "@mariozechner/pi-coding-agent";
import { defaultAccount } from "../config/schema.ts";
import type { Core } from "../core.ts";
import { headlineText } from "../provider/usage.ts";
import { redactSecrets } from "../redact.ts";
import { errorText, printable } from "../text.ts";
import type { AccountFooter } from "./account-footer.ts";

/** The shape pi's argument completion takes (pi-tui's AutocompleteItem). */
export interface LabelCompletion {
	value: string;
	label: string;
}

export interface CommandDeps {
	/** Built by the lazily loaded runtime, so commands never wait for it. */
	core: Core;
	footer: AccountFooter;
}

/** Every command failure ends here: a notification that says what to do, never a throw into pi, never a token. */
export function reportFailure(ctx: ExtensionContext, error: unknown): void {
	const message = errorText(error);
	ctx.ui.notify(redactSecrets(message), "error");
}

/** Splits command arguments on whitespace. */
export function splitArgs(args: string): string[] {
	return args.trim().split(/\s+/).filter(Boolean);
}

/**
 * Label completions for command arguments, and the command's flags (`--copy-code`) once a word starts with "-" or
 * a label is typed; quiet (null) when the config cannot be read.
 */
export function labelCompletions(
	deps: CommandDeps,
): (prefix: string, flags?: readonly string[]) => Promise<LabelCompletion[] | null> {
	return async (prefix, flags = []) => {
		try {
			const words = prefix.split(/\s+/);
			const last = words.pop() ?? "";
			const head = words.length > 0 ? `${words.join(" ")} ` : "";
			const typedFlag = flags.some((flag) => words.includes(flag));
			const offerFlags = !typedFlag && (last.startsWith("-") || words.some((word) => !word.startsWith("-") && word));
			const flagItems = offerFlags
				? flags.filter((flag) => flag.startsWith(last)).map((flag) => ({ value: `${head}${flag}`, label: flag }))
				: [];
			if (last.startsWith("-")) return flagItems.length > 0 ? flagItems : null;
			const config = await deps.core.config.read();
			const items = config.accounts
				.filter((account) => account.label.startsWith(last) && !words.includes(account.label))
				.map((account) => ({ value: `${head}${account.label}`, label: account.label }));
			const all = [...items, ...flagItems];
			return all.length > 0 ? all : null;
		} catch {
			return null;
		}
	};
}

/** Refreshes the footer from the config and the active account's keychain state. */
export async function refreshFooter(deps: CommandDeps): Promise<void> {
	const { core } = deps;
	const config = await core.config.read();
	const active = defaultAccount(config);
	const usage = active
		? await core.state.read().then(
				(state) => state.usage[active],
				() => undefined,
			)
		: undefined;
	deps.footer.showActive(active, active ? await core.broker.describe(active) : undefined, headlineText(usage));
}

export function unknownLabelText(label: string, known: string[]): string {
	const list = known.length > 0 ? `Known accounts: ${known.join(", ")}.` : "No account yet.";
	const shown = printable(label);
	return `Unknown account "${shown}". ${list} Add one with /mcc-login ${shown}.`;
}
