import type { ExtensionUIContext } from "@mariozechner/pi-coding-agent";
import type { AccountError, AccountHealth } from "../broker/token-broker.ts";
import type { AnswerReporter } from "../provider/multi-account-stream.ts";

export const STATUS_KEY = "multi-claude-code";

/**
 * The footer entry: the active account, its state when it is not usable, and which account actually answered
 * when a fallback fired. Only labels ever reach it.
 */
export class AccountFooter implements AnswerReporter {
	private ui: ExtensionUIContext | undefined;

	attach(ui: ExtensionUIContext): void {
		this.ui = ui;
	}

	showActive(label: string | undefined, health?: AccountHealth, usage?: string): void {
		if (!label) {
			this.set("claude: no account (/mcc-login <label>)");
			return;
		}
		const suffix = healthSuffix(label, health);
		this.set(`claude: ${label}${suffix || (usage ? ` · ${usage}` : "")}`);
	}

	answered(origin: string, label: string, usage?: string): void {
		const figure = usage ? ` · ${usage}` : "";
		this.set(label === origin ? `claude: ${label}${figure}` : `claude: ${label}${figure} (fallback from ${origin})`);
	}

	fellBack(from: string, to: string, reason: string): void {
		this.set(`claude: ${from} ${reason}, trying ${to}`);
	}

	unusable(label: string, error: AccountError): void {
		// A failed refresh (network, busy lock) says nothing about the account itself: the footer stays as it is.
		if (error.kind === "refresh_failed" || error.kind === "busy") return;
		const status = error.kind === "keychain" ? "keychain_error" : error.kind;
		this.showActive(label, { label, status });
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
