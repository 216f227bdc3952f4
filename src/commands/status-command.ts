import type { ExtensionContext } from "@mariozechner/pi-coding-agent";
import type { AccountHealth } from "../broker/token-broker.js";
import { activeCooldowns } from "../provider/cooldowns.js";
import { type CommandDeps, reportFailure } from "./command-support.js";

/** /mcc-status: every account's state, token expiry, cooldown, fallback list, and where the secrets live. */
export async function statusCommand(deps: CommandDeps, _args: string, ctx: ExtensionContext): Promise<void> {
	try {
		const core = await deps.loadCore();
		const config = await core.config.read();
		const now = Date.now();
		let cooldownNote = "";
		const cooldowns = await core.state.read().then(
			(state) => activeCooldowns(state, now),
			(error: unknown) => {
				cooldownNote = `\n(cooldowns unknown: ${error instanceof Error ? error.message : String(error)})`;
				return activeCooldowns({ version: 1, cooldowns: {}, needsLogin: {} }, now);
			},
		);
		const active = config.activeLabel ?? config.accounts[0]?.label;
		const lines = [`Claude accounts (secrets in the ${core.broker.backend}; config ${core.paths.configFile}):`];
		if (config.accounts.length === 0) lines.push("  none yet: add one with /mcc-login <label>");
		// Keychain reads run one after the other: a locked keychain then prompts once, not once per account.
		for (const account of config.accounts) {
			const health = await core.broker.describe(account.label);
			const parts = [healthText(health, now)];
			const until = cooldowns.until(account.label);
			if (until !== undefined) parts.push(`cooling down ${duration(until - now)} more`);
			parts.push(account.fallbackTo.length > 0 ? `falls back to ${account.fallbackTo.join(" → ")}` : "no fallback");
			if (account.loggedInAt) parts.push(`logged in ${new Date(account.loggedInAt).toISOString().slice(0, 10)}`);
			lines.push(`${account.label === active ? "* " : "  "}${account.label}: ${parts.join("; ")}`);
			if (health.detail) lines.push(`    ${health.detail}`);
		}
		const broken = config.accounts.length > 0 && lines.some((line) => line.startsWith("    "));
		ctx.ui.notify(lines.join("\n") + cooldownNote, broken ? "warning" : "info");
	} catch (error) {
		reportFailure(ctx, error);
	}
}

function healthText(health: AccountHealth, now: number): string {
	switch (health.status) {
		case "ok":
			return `ready, access token valid ${duration((health.expiresAt ?? now) - now)} more`;
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

function duration(ms: number): string {
	const minutes = Math.max(0, Math.round(ms / 60_000));
	if (minutes < 60) return `${minutes} min`;
	const hours = Math.floor(minutes / 60);
	return hours < 48 ? `${hours} h ${minutes % 60} min` : `${Math.round(hours / 24)} days`;
}
