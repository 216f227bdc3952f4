/**
 * In-memory stand-ins for the broker's boundaries (clock, refresh lock, needs-login marks, token endpoint), for
 * unit tests of the broker and of the request path. The secret store's stand-in is memory-secret-store.ts.
 */
import {
	type Clock,
	type LoginMarks,
	type RefreshLease,
	type RefreshLock,
	type RejectedPair,
	TokenBroker,
} from "../../src/broker/token-broker.ts";
import { createConfigStore, createStateStore } from "../../src/config/stores.ts";
import type { Core } from "../../src/core.ts";
import type { SecretStore } from "../../src/keychain/secret-store.ts";
import type { CodeExchange, TokenEndpoint, TokenGrant } from "../../src/oauth/token-endpoint.ts";
import type { Settings } from "../../src/settings.ts";
import { newAccessToken, newRefreshToken } from "./fake-token-endpoint.ts";

const HOUR = 60 * 60 * 1000;

/** Time that moves only when a test moves it (`advance`, or `time` set directly). */
export class FakeClock implements Clock {
	constructor(public time: number = Date.now()) {}
	now(): number {
		return this.time;
	}
	advance(ms: number): void {
		this.time += ms;
	}
}

/**
 * A mutex per label, like the file lock but within the process; counts how often it was taken. `loseCurrent()`
 * does what a takeover by another process does to a frozen holder: its lease reports the lock lost, and the
 * mutex is free for the next holder. `senders` stands for sending records of other live processes.
 */
export class MemoryLock implements RefreshLock {
	runs = 0;
	/** Runs inside the lock before `fn`, e.g. to imitate another process that refreshed meanwhile. */
	beforeRun: ((label: string) => Promise<void>) | undefined;
	/** Whether a holder is inside right now (per label). */
	readonly active = new Map<string, boolean>();
	/** Labels whose refresh another live process has out, with the pair it sent (by expiry). */
	readonly senders = new Map<string, { from: number; who: string }>();
	readonly records: Array<{ label: string; from: number }> = [];
	private readonly tails = new Map<string, Promise<unknown>>();
	private readonly current = new Map<string, { held: boolean; release: () => void }>();

	async run<T>(label: string, fn: (lease: RefreshLease) => Promise<T>): Promise<T> {
		const previous = this.tails.get(label) ?? Promise.resolve();
		let release: () => void = () => {};
		const freed = new Promise<void>((resolve) => {
			release = resolve;
		});
		this.tails.set(
			label,
			previous.catch(() => {}).then(() => freed),
		);
		await previous.catch(() => {});
		this.runs++;
		const holder = { held: true, release };
		this.current.set(label, holder);
		this.active.set(label, true);
		try {
			await this.beforeRun?.(label);
			return await fn({ isHeld: async () => holder.held });
		} finally {
			if (holder.held) this.active.set(label, false);
			holder.release();
		}
	}

	/** The current holder of `label` loses the lock (a takeover while it was frozen); the mutex is free again. */
	loseCurrent(label: string): void {
		const holder = this.current.get(label);
		if (!holder) throw new Error(`nobody holds ${label}`);
		holder.held = false;
		this.active.set(label, false);
		holder.release();
	}

	async otherSender(label: string, from: number): Promise<string | undefined> {
		const sender = this.senders.get(label);
		return sender && sender.from === from ? sender.who : undefined;
	}

	async sending(label: string, from: number): Promise<void> {
		this.records.push({ label, from });
	}

	async sent(): Promise<void> {}
}

export class MemoryMarks implements LoginMarks {
	readonly marked = new Map<string, { reason: string; pairExpires?: number }>();
	async isMarked(label: string, pair?: RejectedPair): Promise<boolean> {
		const mark = this.marked.get(label);
		return mark !== undefined && (!pair || mark.pairExpires === undefined || mark.pairExpires === pair.expires);
	}
	async mark(label: string, reason: string, pair?: RejectedPair): Promise<void> {
		this.marked.set(label, { reason, ...(pair ? { pairExpires: pair.expires } : {}) });
	}
	async clear(label: string): Promise<void> {
		this.marked.delete(label);
	}
}

export type Answer = { grant: TokenGrant } | { error: Error };

/** An in-memory token endpoint: answers queued or default grants; `hold()` keeps answers back until released. */
export class ScriptedEndpoint implements TokenEndpoint {
	readonly url = "memory://token";
	readonly refreshes: string[] = [];
	readonly exchanges: CodeExchange[] = [];
	readonly issued: string[] = [];
	expiresInMs = 8 * HOUR;
	private readonly queue: Answer[] = [];
	private gate: Promise<void> | undefined;
	private openGate: (() => void) | undefined;

	answerNext(answer: Answer): void {
		this.queue.push(answer);
	}

	hold(): void {
		this.gate = new Promise((resolve) => {
			this.openGate = resolve;
		});
	}

	release(): void {
		this.openGate?.();
		this.gate = undefined;
	}

	/** Called as each refresh arrives, e.g. to check the sender still held its lock. */
	onRefresh: ((refreshToken: string) => void) | undefined;

	async refresh(refreshToken: string): Promise<TokenGrant> {
		this.refreshes.push(refreshToken);
		this.onRefresh?.(refreshToken);
		return this.respond();
	}

	async exchangeCode(exchange: CodeExchange): Promise<TokenGrant> {
		this.exchanges.push(exchange);
		return this.respond();
	}

	private async respond(): Promise<TokenGrant> {
		if (this.gate) await this.gate;
		const next = this.queue.shift();
		if (next && "error" in next) throw next.error;
		const grant = next?.grant ?? {
			access: newAccessToken(),
			refresh: newRefreshToken(),
			expiresInMs: this.expiresInMs,
		};
		this.issued.push(grant.access, grant.refresh);
		return grant;
	}
}

/**
 * The extension's core with the broker on in-memory parts (`secrets`, a scripted endpoint, an in-process lock and
 * marks) and the real config and state files of `settings`' agent dir: the request path, minus the keychain.
 */
export function memoryCore(settings: Settings, secrets: SecretStore, clock?: Clock): Core {
	const broker = new TokenBroker({
		secrets,
		endpoint: new ScriptedEndpoint(),
		lock: new MemoryLock(),
		marks: new MemoryMarks(),
		...(clock ? { clock } : {}),
	});
	return {
		settings,
		paths: settings.paths,
		config: createConfigStore(settings.paths.configFile),
		state: createStateStore(settings.paths.stateFile),
		broker,
		openBrowser: async () => {},
	};
}
