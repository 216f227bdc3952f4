import type { ExtensionContext } from "@mariozechner/pi-coding-agent";
import { clearCooldown } from "../provider/fallback-policy.ts";
import { type CommandDeps, refreshFooter, reportFailure, splitArgs, unknownLabelText } from "./command-support.ts";

/**
 * /mcc-remove <label>: deletes the account's keychain item, then the label (also from other accounts' fallback
 * lists). When the keychain refuses, the label stays, so nothing is half-removed.
 */
export async function removeCommand(deps: CommandDeps, args: string, ctx: ExtensionContext): Promise<void> {
	const [label, ...extra] = splitArgs(args);
	if (!label || extra.length > 0) {
		ctx.ui.notify("Usage: /mcc-remove <label>", "warning");
		return;
	}
	try {
		const { core } = deps;
		const config = await core.config.read();
		const labels = config.accounts.map((account) => account.label);
		if (!labels.includes(label)) {
			ctx.ui.notify(unknownLabelText(label, labels), "error");
			return;
		}
		const hadItem = await core.broker.remove(label);
		const unbound = await core.config.update((current) => {
			current.accounts = current.accounts.filter((account) => account.label !== label);
			for (const account of current.accounts) {
				account.fallbackTo = account.fallbackTo.filter((target) => target !== label);
			}
			if (current.activeLabel === label) current.activeLabel = current.accounts[0]?.label;
			const bindings = current.projects ?? [];
			current.projects = bindings.filter((binding) => binding.label !== label);
			if (current.projects.length === 0) delete current.projects;
			return { next: current, result: bindings.filter((binding) => binding.label === label).map((b) => b.path) };
		});
		await clearCooldown(core.state, label).catch(() => {});
		const bindingNote = unbound.length > 0 ? ` Its project bindings were removed too: ${unbound.join(", ")}.` : "";
		const sessionNote =
			deps.session.label === label ? " This session used it: pick another account with /mcc-use." : "";
		ctx.ui.notify(
			`Removed account "${label}"${hadItem ? ` and its ${core.broker.backend} item` : " (it had no keychain item)"}.` +
				`${bindingNote}${sessionNote} To revoke the grant on Anthropic's side too, see the README (Revoking an account).`,
			"info",
		);
		await refreshFooter(deps);
	} catch (error) {
		reportFailure(ctx, error);
	}
}
