import type { ExtensionContext } from "@mariozechner/pi-coding-agent";
import type { AccountHealth } from "../broker/token-broker.ts";
import type { UsageSnapshot } from "../config/schema.ts";
import { activeCooldowns } from "../provider/fallback-policy.ts";
import { fetchOAuthUsage, formatPercent, recordUsage } from "../provider/usage.ts";
import { describeBindings } from "../session/projects.ts";
import type { AccountSource } from "../session/session-account.ts";
import { type Settings, shownUrl } from "../settings.ts";
import { errorText, formatDuration, printable } from "../text.ts";
import { type CommandDeps, reportFailure, splitArgs } from "./command-support.ts";

const DAY = 24 * 60 * 60 * 1000;
/** Warn this long before a stated refresh-token expiry, so nobody discovers a dead login mid-task. */
const REFRESH_WARNING_MS = 7 * DAY;

/**
 * /mcc-status [--refresh]: every account's state, token expiry, utilisation, cooldown, fallback list, login age,
 * and where the secrets live. --refresh first asks Anthropic's OAuth usage endpoint for fresh figures.
 */
export async function statusCommand(deps: CommandDeps, args: string, ctx: ExtensionContext): Promise<void> {
	const flags = splitArgs(args);
	if (flags.some((flag) => flag !== "--refresh")) {
		ctx.ui.notify("Usage: /mcc-status [--refresh]", "warning");
		return;
	}
	try {
		const { core } = deps;
		const config = await core.config.read();
		const now = Date.now();
		const problems: string[] = [];
		const refusedBase = core.settings.anthropicBaseUrlProblem;
		if (flags.includes("--refresh") && refusedBase) {
			problems.push(`usage not refreshed: ${refusedBase}`);
		} else if (flags.includes("--refresh")) {
			for (const account of config.accounts) {
				try {
					const token = await core.broker.getAccessToken(account.label);
					await recordUsage(
						core.state,
						account.label,
						await fetchOAuthUsage(core.settings.anthropicBaseUrl, token, now),
					);
				} catch (error) {
					problems.push(`${account.label}: usage not refreshed (${errorText(error)})`);
				}
			}
		}
		const state = await core.state.read().catch((error: unknown) => {
			problems.push(`cooldowns and usage unknown: ${errorText(error)}`);
			return undefined;
		});
		const cooldowns = activeCooldowns(state ?? { cooldowns: {} }, now);
		const active = await deps.session.resolve(config);
		const lines = [`Claude accounts (secrets in the ${core.broker.backend}; config ${core.paths.configFile}):`];
		if (config.accounts.length === 0) lines.push("  none yet: add one with /mcc-login <label>");
		let broken = false;
		// Keychain reads run one after the other: a locked keychain then prompts once, not once per account.
		for (const account of config.accounts) {
			const health = await core.broker.describe(account.label);
			const parts = [healthText(health, now)];
			if (account.accountEmail) parts.push(`Claude account ${printable(account.accountEmail, 254)}`);
			const until = cooldowns.until(account.label);
			if (until !== undefined) parts.push(`cooling down ${formatDuration(until - now)} more`);
			const usage = usageText(state?.usage[account.label], now);
			if (usage) parts.push(usage);
			parts.push(account.fallbackTo.length > 0 ? `falls back to ${account.fallbackTo.join(" → ")}` : "no fallback");
			if (account.preemptiveFallbackAt !== undefined) {
				parts.push(`falls back early at ${formatPercent(account.preemptiveFallbackAt)}`);
			}
			if (account.loggedInAt) {
				parts.push(
					`logged in ${new Date(account.loggedInAt).toISOString().slice(0, 10)} (${age(now - account.loggedInAt)})`,
				);
			}
			if (account.label === active) parts.unshift(sessionText(deps.session.source));
			if (account.label === config.activeLabel) parts.push("default for new sessions");
			lines.push(`${account.label === active ? "* " : "  "}${account.label}: ${parts.join("; ")}`);
			if (health.detail) {
				lines.push(`    ${health.detail}`);
				broken = true;
			}
			if (health.refreshExpiresAt !== undefined && health.refreshExpiresAt - now < REFRESH_WARNING_MS) {
				lines.push(
					`    Its login ends in ${formatDuration(health.refreshExpiresAt - now)}: run /mcc-login ${account.label} before then.`,
				);
				broken = true;
			}
		}
		if (active && !config.accounts.some((account) => account.label === active)) {
			lines.push(`* ${active}: REMOVED, yet this session uses it: /mcc-use <label> switches it.`);
			broken = true;
		}
		const bindings = await describeBindings(config.projects);
		if (bindings.length > 0) {
			lines.push("Project bindings (new sessions there start on the account):");
			for (const binding of bindings) {
				lines.push(`  ${binding.path} → ${binding.label}${binding.exists ? "" : " (directory no longer exists)"}`);
			}
		}
		const endpoints = overrideLines(core.settings, core.broker.tokenUrlProblem);
		lines.push(...endpoints.lines);
		lines.push(...problems.map((problem) => `  (${problem})`));
		ctx.ui.notify(lines.join("\n"), broken || endpoints.refused || problems.length > 0 ? "warning" : "info");
	} catch (error) {
		reportFailure(ctx, error);
	}
}

function sessionText(source: AccountSource | undefined): string {
	return source === "project" ? "this session's account (project binding)" : "this session's account";
}

/**
 * Where tokens go when an environment variable sent them elsewhere than Anthropic: said on every status, since
 * whoever set it receives every token; a refused override says why and that nothing is sent.
 */
function overrideLines(settings: Settings, tokenUrlProblem: string | undefined): { lines: string[]; refused: boolean } {
	const lines: string[] = [];
	let refused = false;
	const overrides = [
		{
			name: "PI_MCC_TOKEN_URL",
			what: "Token endpoint",
			sent: "refresh tokens and login codes",
			url: settings.tokenUrl,
			// Checked where the token endpoint is built: that check is what keeps a refused URL from every request.
			problem: tokenUrlProblem,
		},
		{
			name: "PI_MCC_ANTHROPIC_BASE_URL",
			what: "Messages API",
			sent: "access tokens",
			url: settings.anthropicBaseUrlOverridden ? settings.anthropicBaseUrl : undefined,
			problem: settings.anthropicBaseUrlProblem,
		},
	];
	for (const { name, what, sent, url, problem } of overrides) {
		if (url === undefined) continue;
		if (problem) {
			lines.push(`  ${what}: REFUSED override. ${problem}`);
			refused = true;
		} else {
			lines.push(`  ${what}: ${shownUrl(url)} (override by ${name}; ${sent} are sent there)`);
		}
	}
	return { lines, refused };
}

function healthText(health: AccountHealth, now: number): string {
	switch (health.status) {
		case "ok":
			return `ready, access token valid ${formatDuration((health.expiresAt ?? now) - now)} more`;
		case "expired":
			return "access token expired (renewed on the next request)";
		case "revoked":
			return `REVOKED (no keychain item; /mcc-login ${health.label} restores it)`;
		case "needs_login":
			return `NEEDS LOGIN (/mcc-login ${health.label})`;
		case "unusable":
			return `UNUSABLE keychain item (/mcc-login ${health.label})`;
		case "keychain_error":
			return "keychain not usable";
	}
}

/** "5h 42% (resets in 1 h 10 min), 7d 12%", from the last figures Anthropic reported. */
function usageText(usage: UsageSnapshot | undefined, now: number): string | undefined {
	if (!usage) return undefined;
	const windows = Object.entries(usage.windows).map(([name, window]) => {
		const reset =
			window.resetsAt !== undefined && window.resetsAt > now
				? ` (resets in ${formatDuration(window.resetsAt - now)})`
				: "";
		return `${name} ${formatPercent(window.utilization)}${reset}`;
	});
	if (windows.length === 0 && !usage.status) return undefined;
	const status = usage.status && usage.status !== "allowed" ? ` [${usage.status}]` : "";
	return `used ${windows.join(", ") || "?"}${status} as of ${formatDuration(now - usage.at)} ago`;
}

function age(ms: number): string {
	const days = Math.floor(ms / DAY);
	return days === 0 ? "today" : days === 1 ? "1 day ago" : `${days} days ago`;
}
