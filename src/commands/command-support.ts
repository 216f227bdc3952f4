import type { ExtensionContext } from "@mariozechner/pi-coding-agent";
import { caseTwin } from "../config/schema.ts";
import type { Core } from "../core.ts";
import { headlineText } from "../provider/usage.ts";
import { redactSecrets } from "../redact.ts";
import type { SessionAccount } from "../session/session-account.ts";
import { errorText, printable } from "../text.ts";

/** The shape pi's argument completion takes (pi-tui's AutocompleteItem). */
export interface LabelCompletion {
	value: string;
	label: string;
}

export interface CommandDeps {
	/** Built by the lazily loaded runtime, so commands never wait for it. */
	core: Core;
	/** The session the command runs in: its account, its footer. */
	session: SessionAccount;
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
/**
 * Completions for a command's arguments: account labels and the command's flags (the flags are alternatives: once
 * one is typed, no other is offered; after a flag come its values, e.g. `--project off`, and labels). Quiet (null)
 * when the config cannot be read.
 */
export async function completeArguments(
	deps: CommandDeps,
	prefix: string,
	flags: Readonly<Record<string, readonly string[]>> = {},
): Promise<LabelCompletion[] | null> {
	try {
		const words = prefix.split(/\s+/);
		const last = words.pop() ?? "";
		const head = words.length > 0 ? `${words.join(" ")} ` : "";
		const previous = words.at(-1);
		const values = previous !== undefined && Object.hasOwn(flags, previous) ? flags[previous]! : [];
		const flagTyped = words.some((word) => Object.hasOwn(flags, word));
		const offeredFlags = flagTyped ? [] : Object.keys(flags);
		const candidates = last.startsWith("-")
			? offeredFlags
			: [
					...values,
					...(await deps.core.config.read()).accounts.map((account) => account.label),
					...(last === "" && words.length > 0 ? offeredFlags : []),
				];
		const items = candidates
			.filter((candidate) => candidate.startsWith(last) && !words.includes(candidate))
			.map((candidate) => ({ value: `${head}${candidate}`, label: candidate }));
		return items.length > 0 ? items : null;
	} catch {
		return null;
	}
}

/** Repaints the session's footer: its account, that account's keychain state and its last usage figure. */
export async function refreshFooter(deps: CommandDeps): Promise<void> {
	const { core, session } = deps;
	const config = await core.config.read();
	const label = await session.resolve(config);
	if (!label) {
		session.footer.show({ label: undefined });
		return;
	}
	if (!config.accounts.some((account) => account.label === label)) {
		session.footer.show({ label, removed: true });
		return;
	}
	const usage = await core.state.read().then(
		(state) => state.usage[label],
		() => undefined,
	);
	session.footer.show(
		{ label, fromProject: session.source === "project" },
		await core.broker.describe(label),
		headlineText(usage),
	);
}

export function unknownLabelText(label: string, known: string[]): string {
	const shown = printable(label);
	// Never act on the account that matches only case-blindly: name it, and do not offer a login that is refused.
	const twin = caseTwin(label, known);
	if (twin !== undefined) return `Unknown account "${shown}". Did you mean "${twin}"? Labels are case-sensitive.`;
	const list = known.length > 0 ? `Known accounts: ${known.join(", ")}.` : "No account yet.";
	return `Unknown account "${shown}". ${list} Add one with /mcc-login ${shown}.`;
}
