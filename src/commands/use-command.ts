import type { ExtensionContext } from "@mariozechner/pi-coding-agent";
import { defaultAccount } from "../config/schema.ts";
import { type CommandDeps, reportFailure, splitArgs, unknownLabelText } from "./command-support.ts";

/** /mcc-use [label]: switches the active account at once; the next request carries its token. */
export async function useCommand(deps: CommandDeps, args: string, ctx: ExtensionContext): Promise<void> {
	const [requested, ...extra] = splitArgs(args);
	if (extra.length > 0) {
		ctx.ui.notify("Usage: /mcc-use [label]", "warning");
		return;
	}
	try {
		const accounts = await knownAccounts(deps, ctx);
		if (!accounts) return;
		const label = requested ?? (await ctx.ui.select(`Claude account (active: ${accounts.active})`, accounts.labels));
		if (label) await switchTo(deps, ctx, label);
	} catch (error) {
		reportFailure(ctx, error);
	}
}

/** Ctrl+Shift+A: the next account in config order, wrapping around. */
export async function cycleAccounts(deps: CommandDeps, ctx: ExtensionContext): Promise<void> {
	try {
		const accounts = await knownAccounts(deps, ctx);
		if (!accounts) return;
		const { labels, active } = accounts;
		await switchTo(deps, ctx, labels[(labels.indexOf(active) + 1) % labels.length]!);
	} catch (error) {
		reportFailure(ctx, error);
	}
}

/** The labels in config order and the active one; `undefined` (after saying how to add one) when there are none. */
async function knownAccounts(
	deps: CommandDeps,
	ctx: ExtensionContext,
): Promise<{ labels: string[]; active: string } | undefined> {
	const config = await deps.core.config.read();
	const labels = config.accounts.map((account) => account.label);
	if (labels.length === 0) {
		ctx.ui.notify("No Claude account yet. Add one with /mcc-login <label>.", "warning");
		return undefined;
	}
	return { labels, active: defaultAccount(config)! };
}

async function switchTo(deps: CommandDeps, ctx: ExtensionContext, label: string): Promise<void> {
	const { core } = deps;
	const known = await core.config.update((config) => {
		const labels = config.accounts.map((account) => account.label);
		if (!labels.includes(label)) return { result: labels };
		config.activeLabel = label;
		return { next: config, result: undefined };
	});
	if (known) {
		ctx.ui.notify(unknownLabelText(label, known), "error");
		return;
	}
	const health = await core.broker.describe(label);
	deps.footer.showActive(label, health);
	if (health.status === "ok" || health.status === "expired") {
		ctx.ui.notify(`Claude account: ${label}`, "info");
	} else {
		ctx.ui.notify(`Switched to "${label}", but it cannot be used yet: ${health.detail ?? health.status}`, "warning");
	}
}
