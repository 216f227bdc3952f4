/**
 * What the two files beside pi's agent dir may hold, as zod schemas: the config (labels, defaults, fallback
 * chains; no secrets) and the shared state (cooldowns, usage, needs-login marks; no secrets). Labels are defined
 * here too, since they name keychain items, lock files and command arguments.
 */
import { z } from "zod";
import { printable } from "../text.ts";

export const CONFIG_VERSION = 1;

/**
 * Account labels are kept to a short, plain charset: no path separators, whitespace, control characters or shell
 * metacharacters.
 */
export const LABEL_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function labelProblem(label: string): string | undefined {
	if (label.length === 0) return "a label cannot be empty";
	if (label.length > 64) return "a label has at most 64 characters";
	if (!LABEL_PATTERN.test(label)) {
		return (
			`"${printable(label)}" is not a valid label: use letters, digits, ".", "_" and "-", ` +
			"starting with a letter or digit (e.g. personal, work, side-project)"
		);
	}
	return undefined;
}

/**
 * Labels that differ only in letter case are refused everywhere: Windows Credential Manager's target names are
 * case-blind, so `Work` and `work` would share one item there, and a config moves between systems. Labels are
 * ASCII (LABEL_PATTERN), so lower-casing is the whole folding.
 */
export function foldLabel(label: string): string {
	return label.toLowerCase();
}

/** The existing label that `label` matches only case-blindly ("work" for "Work"), if any. */
export function caseTwin(label: string, labels: Iterable<string>): string | undefined {
	const folded = foldLabel(label);
	for (const other of labels) if (other !== label && foldLabel(other) === folded) return other;
	return undefined;
}

/** Why `label` cannot be added next to `labels`, naming the existing label and what to run instead. */
export function labelCaseClash(label: string, labels: Iterable<string>): string | undefined {
	const twin = caseTwin(label, labels);
	if (twin === undefined) return undefined;
	return (
		`the account "${twin}" already exists, and labels that differ only in letter case are refused (Windows ` +
		`Credential Manager stores them as one item). Run /mcc-login ${twin} to log "${twin}" in again, or choose ` +
		"another label"
	);
}

const label = z.string().regex(LABEL_PATTERN, "not a valid label (letters, digits, '.', '_', '-'; at most 64)");

const accountSchema = z.looseObject({
	label,
	fallbackTo: z.array(label).max(64).default([]),
	/** When the account was last logged in (ms since epoch): not secret, shown by /mcc-status. */
	loggedInAt: z.number().int().nonnegative().optional(),
	/**
	 * The Claude account's e-mail as the token endpoint named it at the last login (not secret, but personal: only
	 * in this 0600 file, never in a log). /mcc-status shows it; a re-login naming another one warns.
	 */
	accountEmail: z
		.string()
		.max(254)
		.regex(/^[^\s@]+@[^\s@]+$/, "not an e-mail address")
		.optional(),
	/**
	 * Opt-in: once the account's reported utilisation reaches this fraction (e.g. 0.95), requests whose origin is
	 * this account go to its own fallback list before Anthropic refuses them.
	 */
	preemptiveFallbackAt: z.number().min(0.5).max(1).optional(),
});

/**
 * A project bound to an account: new sessions whose working directory is `path` or below start on `label`. Kept
 * in the user's own config, never in the project (a cloned repository must not choose an account).
 */
const projectBindingSchema = z.object({
	/** The project's root (its git work tree, else the directory), absolute and with symlinks resolved. */
	path: z
		.string()
		.min(1)
		.max(4096)
		.refine((path) => /^(\/|[A-Za-z]:[\\/]|\\\\)/.test(path), "not an absolute path"),
	label,
});

export const configSchema = z
	.looseObject({
		version: z.literal(CONFIG_VERSION),
		/** The account new sessions start on when no project binding applies: the one last chosen in any session. */
		activeLabel: label.optional(),
		accounts: z.array(accountSchema).max(500).default([]),
		projects: z.array(projectBindingSchema).max(500).optional(),
	})
	.superRefine((config, ctx) => {
		const labels = new Set<string>();
		const byFolded = new Map<string, string>();
		config.accounts.forEach((account, index) => {
			const path = ["accounts", index, "label"];
			const earlier = byFolded.get(foldLabel(account.label));
			if (earlier === account.label) {
				ctx.addIssue({ code: "custom", path, message: `duplicate label "${account.label}"` });
			} else if (earlier !== undefined) {
				ctx.addIssue({
					code: "custom",
					path,
					message:
						`"${account.label}" differs from "${earlier}" only in letter case, and Windows Credential Manager ` +
						`stores both as one item: remove one of the two accounts from the file (then log it in again ` +
						"under another label with /mcc-login <label>)",
				});
			}
			byFolded.set(foldLabel(account.label), earlier ?? account.label);
			labels.add(account.label);
		});
		// "unknown account", with the label it was probably meant to be.
		const unknown = (name: string): string => {
			const twin = caseTwin(name, labels);
			return `unknown account "${name}"${twin === undefined ? "" : ` (did you mean "${twin}"? labels are case-sensitive)`}`;
		};
		config.accounts.forEach((account, index) => {
			const seen = new Set<string>();
			account.fallbackTo.forEach((target, t) => {
				const path = ["accounts", index, "fallbackTo", t];
				if (target === account.label)
					ctx.addIssue({ code: "custom", path, message: "an account cannot fall back to itself" });
				else if (!labels.has(target)) ctx.addIssue({ code: "custom", path, message: unknown(target) });
				else if (seen.has(target)) ctx.addIssue({ code: "custom", path, message: `"${target}" is listed twice` });
				seen.add(target);
			});
		});
		if (config.activeLabel !== undefined && !labels.has(config.activeLabel)) {
			ctx.addIssue({ code: "custom", path: ["activeLabel"], message: unknown(config.activeLabel) });
		}
		const paths = new Set<string>();
		config.projects?.forEach((binding, index) => {
			if (!labels.has(binding.label)) {
				ctx.addIssue({
					code: "custom",
					path: ["projects", index, "label"],
					message: `unknown account "${binding.label}"`,
				});
			}
			if (paths.has(binding.path)) {
				ctx.addIssue({ code: "custom", path: ["projects", index, "path"], message: "this project is bound twice" });
			}
			paths.add(binding.path);
		});
	});

export type AccountsConfig = z.infer<typeof configSchema>;
export type AccountEntry = AccountsConfig["accounts"][number];
export type ProjectBinding = z.infer<typeof projectBindingSchema>;

export function emptyConfig(): AccountsConfig {
	return { version: CONFIG_VERSION, accounts: [] };
}

/** The account a request or a new session uses when nothing else chose one: `activeLabel`, else the first. */
export function defaultAccount(config: Pick<AccountsConfig, "activeLabel" | "accounts">): string | undefined {
	return config.activeLabel ?? config.accounts[0]?.label;
}

const cooldownSchema = z.object({
	until: z.number(),
	reason: z.enum(["rate_limit", "overloaded"]),
	setAt: z.number(),
});

const needsLoginSchema = z.object({ since: z.number(), reason: z.string().max(200) });

const usageWindowSchema = z.object({
	/** Fraction of the window's allowance used, 0–1 (Anthropic reports it that way). */
	utilization: z.number().min(0).max(10),
	resetsAt: z.number().optional(),
	status: z.string().max(40).optional(),
});

/** The last rate-limit figures Anthropic reported for an account (response headers or the usage endpoint). */
const usageSchema = z.object({
	at: z.number(),
	status: z.string().max(40).optional(),
	resetsAt: z.number().optional(),
	representativeClaim: z.string().max(40).optional(),
	windows: z.record(z.string().regex(/^[a-z0-9][a-z0-9_]{0,23}$/), usageWindowSchema).default({}),
});

export const stateSchema = z.looseObject({
	version: z.literal(1),
	cooldowns: z.record(label, cooldownSchema).default({}),
	needsLogin: z.record(label, needsLoginSchema).default({}),
	usage: z.record(label, usageSchema).default({}),
});

export type SharedState = z.infer<typeof stateSchema>;
export type Cooldown = z.infer<typeof cooldownSchema>;
export type UsageSnapshot = z.infer<typeof usageSchema>;
export type UsageWindow = z.infer<typeof usageWindowSchema>;

export function emptyState(): SharedState {
	return withLabelMaps({ version: 1, cooldowns: {}, needsLogin: {}, usage: {} });
}

/**
 * The state's per-label records without a prototype: a label may legally be "constructor" or "toString", and a
 * lookup like `needsLogin[label]` must not find Object.prototype's member (that marked "toString" as logged out).
 */
export function withLabelMaps(state: SharedState): SharedState {
	const bare = <T>(record: Record<string, T>): Record<string, T> => Object.assign(Object.create(null), record);
	return { ...state, cooldowns: bare(state.cooldowns), needsLogin: bare(state.needsLogin), usage: bare(state.usage) };
}

/** "accounts[2].fallbackTo[0]: unknown account "x"" — the first few problems, each with its field. */
export function describeIssues(error: z.ZodError, max = 3): string {
	const lines = error.issues.slice(0, max).map((issue) => {
		const field = issue.path
			.map((part, i) => (typeof part === "number" ? `[${part}]` : i === 0 ? String(part) : `.${String(part)}`))
			.join("");
		return `${field || "(top level)"}: ${issue.message}`;
	});
	const more = error.issues.length > max ? ` (and ${error.issues.length - max} more)` : "";
	return lines.join("; ") + more;
}
