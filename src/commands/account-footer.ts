import type { ExtensionUIContext } from "@mariozechner/pi-coding-agent";
import type { AccountError, AccountHealth } from "../broker/token-broker.ts";
import type { AnswerReporter } from "../provider/multi-account-stream.ts";

export const STATUS_KEY = "multi-claude-code";

/** What the footer knows of its session's account. */
export interface FooterAccount {
	label: string | undefined;
	/** The account comes from the project's binding. */
	fromProject?: boolean;
	/** The account's label is no longer in the config (removed, here or in another pi). */
	removed?: boolean;
}

/**
 * One session's footer entry: its account, that account's state when it is not usable, and which account actually
 * answered when a fallback fired. Only labels ever reach it. Belongs to one session's UI: once that session is gone
 * (replaced, reloaded), writes to it are dropped.
 */
export class AccountFooter implements AnswerReporter {
	private ui: ExtensionUIContext | undefined;

	/** `fromProject`: whether the session's account comes from its project's binding (said after answers too). */
	constructor(private readonly fromProject: () => boolean = () => false) {}

	attach(ui: ExtensionUIContext): void {
		this.ui = ui;
	}

	detach(): void {
		this.ui = undefined;
	}

	show(account: FooterAccount, health?: AccountHealth, usage?: string): void {
		const { label } = account;
		if (!label) {
			this.set("claude: no account (/mcc-login <label>)");
			return;
		}
		if (account.removed) {
			this.set(`claude: ${label} (removed: /mcc-use <label> or /mcc-login ${label})`);
			return;
		}
		const origin = account.fromProject ? " (project)" : "";
		const suffix = healthSuffix(label, health);
		this.set(`claude: ${label}${origin}${suffix || (usage ? ` · ${usage}` : "")}`);
	}

	answered(origin: string, label: string, usage?: string): void {
		const figure = usage ? ` · ${usage}` : "";
		if (label !== origin) this.set(`claude: ${label}${figure} (fallback from ${origin})`);
		else this.set(`claude: ${label}${this.fromProject() ? " (project)" : ""}${figure}`);
	}

	fellBack(from: string, to: string, reason: string): void {
		this.set(`claude: ${from} ${reason}, trying ${to}`);
	}

	unusable(label: string, error: AccountError): void {
		// A failed refresh (network, busy lock) says nothing about the account itself: the footer stays as it is.
		if (error.kind === "refresh_failed" || error.kind === "busy") return;
		const status = error.kind === "keychain" ? "keychain_error" : error.kind;
		this.show({ label }, { label, status });
	}

	private set(text: string): void {
		try {
			this.ui?.setStatus(STATUS_KEY, text);
		} catch {
			// The session this footer belonged to was replaced or reloaded: its footer is gone with it.
			this.ui = undefined;
		}
	}
}

function healthSuffix(label: string, health: AccountHealth | undefined): string {
	switch (health?.status) {
		case "revoked":
			return ` (revoked: /mcc-login ${label})`;
		case "needs_login":
			return ` (needs login: /mcc-login ${label})`;
		case "unusable":
			return ` (unusable: /mcc-login ${label})`;
		case "keychain_error":
			return " (keychain unavailable: /mcc-status)";
		default:
			return "";
	}
}
