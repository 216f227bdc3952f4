import type { ExtensionContext } from "@mariozechner/pi-coding-agent";
import type { AccountsConfig } from "../config/schema.ts";
import { bindingFor, projectRoot } from "../session/projects.ts";
import type { AccountSource } from "../session/session-account.ts";
import { type CommandDeps, refreshFooter, reportFailure, splitArgs, unknownLabelText } from "./command-support.ts";

export const PROJECT_FLAG = "--project";
const USAGE = "Usage: /mcc-use [label] [--project]  |  /mcc-use --project off";

/**
 * /mcc-use [label]: switches this session's account at once (and only this session's); the next request carries
 * its token. The choice also becomes the default for new sessions. Without a label: a picker.
 * /mcc-use <label> --project: binds this session's project to the account (new sessions there start on it) and
 * switches this session. /mcc-use --project off: removes the project's binding.
 */
export async function useCommand(deps: CommandDeps, args: string, ctx: ExtensionContext): Promise<void> {
	const words = splitArgs(args);
	const project = words.includes(PROJECT_FLAG);
	const rest = words.filter((word) => word !== PROJECT_FLAG);
	if (rest.length > 1) {
		ctx.ui.notify(USAGE, "warning");
		return;
	}
	try {
		if (project && rest[0] === "off") {
			await unbindProject(deps, ctx);
			return;
		}
		const accounts = await knownAccounts(deps, ctx);
		if (!accounts) return;
		const current = deps.session.label ?? "none";
		const label = rest[0] ?? (await ctx.ui.select(`Claude account of this session (now: ${current})`, accounts));
		if (!label) return;
		if (project) await bindProject(deps, ctx, label);
		else await switchTo(deps, ctx, label, "chosen");
	} catch (error) {
		reportFailure(ctx, error);
	}
}

/** Ctrl+Shift+A: this session's next account in config order, wrapping around. */
export async function cycleAccounts(deps: CommandDeps, ctx: ExtensionContext): Promise<void> {
	try {
		const labels = await knownAccounts(deps, ctx);
		if (!labels) return;
		const current = deps.session.label;
		const next = labels[(current === undefined ? -1 : labels.indexOf(current)) + 1] ?? labels[0]!;
		await switchTo(deps, ctx, next, "chosen");
	} catch (error) {
		reportFailure(ctx, error);
	}
}

/** The labels in config order; `undefined` (after saying how to add one) when there are none. */
async function knownAccounts(deps: CommandDeps, ctx: ExtensionContext): Promise<string[] | undefined> {
	const labels = (await deps.core.config.read()).accounts.map((account) => account.label);
	if (labels.length > 0) return labels;
	ctx.ui.notify("No Claude account yet. Add one with /mcc-login <label>.", "warning");
	return undefined;
}

/**
 * Switches this session to `label` and makes it the default for new sessions ("the account last chosen in any
 * session"); a project binding does not change that default.
 */
async function switchTo(deps: CommandDeps, ctx: ExtensionContext, label: string, source: AccountSource): Promise<void> {
	const { core, session } = deps;
	const unknown = await core.config.update((config) => {
		const labels = config.accounts.map((account) => account.label);
		if (!labels.includes(label)) return { result: labels };
		if (source !== "chosen" || config.activeLabel === label) return { result: undefined };
		config.activeLabel = label;
		return { next: config, result: undefined };
	});
	if (unknown) {
		ctx.ui.notify(unknownLabelText(label, unknown), "error");
		return;
	}
	session.choose(label, source);
	const health = await core.broker.describe(label);
	await refreshFooter(deps);
	const where = source === "project" ? " (bound to this project)" : "";
	if (health.status === "ok" || health.status === "expired") {
		ctx.ui.notify(`Claude account of this session: ${label}${where}`, "info");
	} else {
		ctx.ui.notify(`Switched to "${label}", but it cannot be used yet: ${health.detail ?? health.status}`, "warning");
	}
}

async function bindProject(deps: CommandDeps, ctx: ExtensionContext, label: string): Promise<void> {
	const cwd = deps.session.cwd ?? ctx.cwd;
	const root = await projectRoot(cwd);
	const unknown = await deps.core.config.update((config) => {
		const labels = config.accounts.map((account) => account.label);
		if (!labels.includes(label)) return { result: labels };
		const projects = (config.projects ?? []).filter((binding) => binding.path !== root);
		config.projects = [...projects, { path: root, label }];
		return { next: config, result: undefined };
	});
	if (unknown) {
		ctx.ui.notify(unknownLabelText(label, unknown), "error");
		return;
	}
	ctx.ui.notify(`New sessions in ${root} (and below) start on "${label}".`, "info");
	await switchTo(deps, ctx, label, "project");
}

async function unbindProject(deps: CommandDeps, ctx: ExtensionContext): Promise<void> {
	const cwd = deps.session.cwd ?? ctx.cwd;
	const found = await bindingFor(cwd, (await deps.core.config.read()).projects);
	if (!found) {
		ctx.ui.notify(`No project binding applies here (${cwd}). /mcc-status lists the bindings.`, "warning");
		return;
	}
	await deps.core.config.update((config: AccountsConfig) => {
		config.projects = (config.projects ?? []).filter((entry) => entry.path !== found.path);
		if (config.projects.length === 0) delete config.projects;
		return { next: config, result: undefined };
	});
	if (deps.session.source === "project" && deps.session.label) deps.session.choose(deps.session.label, "chosen");
	await refreshFooter(deps);
	ctx.ui.notify(
		`Removed the binding of ${found.path} to "${found.label}". This session stays on "${deps.session.label ?? found.label}"; new sessions there start on the default account.`,
		"info",
	);
}
