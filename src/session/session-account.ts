/**
 * The account of one pi session. The choice belongs to the session: it is stored in the session itself (a custom
 * entry holding the label, never a token), so /resume, /fork, reload, --continue and a restart bring it back, and
 * another session choosing another account never changes it. Cooldowns, usage and refresh locks belong to
 * accounts and stay shared (the state file, the lock files).
 */
import type { ExtensionAPI, ExtensionContext } from "@mariozechner/pi-coding-agent";
import type { TokenBroker } from "../broker/token-broker.ts";
import { AccountFooter } from "../commands/account-footer.ts";
import { type AccountsConfig, defaultAccount } from "../config/schema.ts";
import { bindingFor } from "./projects.ts";

/** The custom entry type under which a session records its account. */
export const ACCOUNT_ENTRY_TYPE = "multi-claude-code.account";

/**
 * Why the session is on its account: chosen in it (/mcc-use, the picker, Ctrl+Shift+A, /mcc-login), from its
 * project's binding, the default for new sessions (`activeLabel`), or the first account.
 */
export type AccountSource = "chosen" | "project" | "default" | "first";

export interface AccountEntryData {
	label: string;
	source: AccountSource;
}

/**
 * A keychain read started early in a turn (when pi starts it), so it overlaps pi's own work before the request.
 * Used at most once, only by a request of the same turn, and only while young: a read older than this was not
 * started by the turn that sends the request, and is done again.
 */
export const PREFETCH_MAX_AGE_MS = 2_000;

export class SessionAccount {
	label: string | undefined;
	source: AccountSource | undefined;
	readonly footer = new AccountFooter(() => this.source === "project");
	/** pi's id of the session (what the stream's options carry), once it started. */
	sessionId: string | undefined;
	cwd: string | undefined;
	/** The account that answered this session's last request (pi-ai continues message threads per session). */
	lastAnswered: string | undefined;
	/** False once pi shut the session down: nothing is recorded for it any more. */
	live = true;
	private prefetched: { label: string; at: number; token: Promise<string> } | undefined;
	private starting: Promise<void> | undefined;

	constructor(private readonly pi: Pick<ExtensionAPI, "appendEntry">) {}

	/**
	 * Marks the session's start as under way: requests and commands that arrive meanwhile wait for it, so a first
	 * prompt sent right after pi started still starts from the project's binding, not from the default.
	 */
	beginStart(starting: Promise<void>): void {
		this.starting = starting;
	}

	/** Resolves once the session's start (if any) has finished, whether or not it succeeded. */
	async settled(): Promise<void> {
		await this.starting?.catch(() => {});
	}

	/**
	 * Binds this object to its session as pi starts it: its UI, its id, its directory, and the account it recorded
	 * (resume, fork, reload, --continue). Synchronous: ctx may go stale at the first await.
	 */
	attach(ctx: ExtensionContext): void {
		this.footer.attach(ctx.ui);
		this.sessionId = ctx.sessionManager.getSessionId();
		this.cwd = ctx.cwd;
		const recorded = recordedAccount(ctx.sessionManager.getEntries());
		if (recorded && !this.label) {
			this.label = recorded.label;
			this.source = recorded.source;
		}
	}

	/**
	 * The session's account. One that recorded none starts on the account bound to its project, else the default
	 * for new sessions, else the first account, and records that choice, so the session keeps it whatever other
	 * sessions choose later. `undefined` only when there is no account at all.
	 */
	async resolve(config: Readonly<AccountsConfig>): Promise<string | undefined> {
		if (this.label) return this.label;
		const bound = this.cwd ? await bindingFor(this.cwd, config.projects) : undefined;
		// Another caller may have resolved it meanwhile (pi 0.73 can start a session twice).
		if (this.label) return this.label;
		if (bound) this.choose(bound.label, "project");
		else {
			const fallback = defaultAccount(config);
			if (fallback) this.choose(fallback, config.activeLabel ? "default" : "first");
		}
		return this.label;
	}

	/** Switches this session (and only it) to `label`, and records that in the session. */
	choose(label: string, source: AccountSource): void {
		this.label = label;
		this.source = source;
		if (this.prefetched?.label !== label) this.prefetched = undefined;
		if (this.live) this.pi.appendEntry(ACCOUNT_ENTRY_TYPE, { label, source } satisfies AccountEntryData);
	}

	/** Starts reading the session's token now (at the start of a turn); the turn's request picks it up. */
	prefetch(broker: TokenBroker, now: number): void {
		const label = this.label;
		if (!label || !this.live) return;
		const token = broker.getAccessToken(label);
		// A failure is the request's to report; an unused read must not become an unhandled rejection.
		token.catch(() => {});
		this.prefetched = { label, at: now, token };
	}

	/** Settles once the read started for this turn has (at once when there is none); never rejects. */
	prefetchSettled(): Promise<void> {
		return this.prefetched ? this.prefetched.token.then(noop, noop) : Promise.resolve();
	}

	/** The token read started for this turn, if it is for `label` and young; each read serves one request. */
	takePrefetched(label: string, now: number): Promise<string> | undefined {
		const prefetched = this.prefetched;
		this.prefetched = undefined;
		if (!prefetched || prefetched.label !== label || now - prefetched.at > PREFETCH_MAX_AGE_MS) return undefined;
		return prefetched.token;
	}

	/** pi shut the session down (replaced, reloaded, quit): it is gone. */
	stop(): void {
		this.live = false;
		this.prefetched = undefined;
	}
}

function noop(): void {}

/** The session's last recorded account: its latest choice, on whichever branch it was made. */
function recordedAccount(entries: readonly unknown[]): AccountEntryData | undefined {
	for (let index = entries.length - 1; index >= 0; index--) {
		const entry = entries[index] as { type?: unknown; customType?: unknown; data?: unknown };
		if (entry?.type !== "custom" || entry.customType !== ACCOUNT_ENTRY_TYPE) continue;
		const data = entry.data as Partial<AccountEntryData> | undefined;
		if (typeof data?.label === "string" && data.label.length > 0 && data.label.length <= 64) {
			const source: AccountSource = isSource(data.source) ? data.source : "chosen";
			return { label: data.label, source };
		}
	}
	return undefined;
}

function isSource(value: unknown): value is AccountSource {
	return value === "chosen" || value === "project" || value === "default" || value === "first";
}
