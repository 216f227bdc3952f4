import type { ExtensionContext } from "@mariozechner/pi-coding-agent";
import { caseTwin, defaultAccount } from "../config/schema.ts";
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

/** Label completions for command arguments; quiet (null) when the config cannot be read. */
export function labelCompletions(deps: CommandDeps): (prefix: string) => Promise<LabelCompletion[] | null> {
	return async (prefix) => {
		try {
			const config = await deps.core.config.read();
			const words = prefix.split(/\s+/);
			const last = words.pop() ?? "";
			const head = words.length > 0 ? `${words.join(" ")} ` : "";
			const items = config.accounts
				.filter((account) => account.label.startsWith(last) && !words.includes(account.label))
				.map((account) => ({ value: `${head}${account.label}`, label: account.label }));
			return items.length > 0 ? items : null;
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
	const shown = printable(label);
	// Never act on the account that matches only case-blindly: name it, and do not offer a login that is refused.
	const twin = caseTwin(label, known);
	if (twin !== undefined) return `Unknown account "${shown}". Did you mean "${twin}"? Labels are case-sensitive.`;
	const list = known.length > 0 ? `Known accounts: ${known.join(", ")}.` : "No account yet.";
	return `Unknown account "${shown}". ${list} Add one with /mcc-login ${shown}.`;
}
