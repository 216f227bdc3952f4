/**
 * In-memory stand-ins for the broker's boundaries (clock, refresh lock, needs-login marks, token endpoint), for
 * unit tests of the broker and of the request path. The secret store's stand-in is memory-secret-store.ts.
 */
import type { Clock, LoginMarks, RefreshLock } from "../../src/broker/token-broker.ts";
import type { CodeExchange, TokenEndpoint, TokenGrant } from "../../src/oauth/token-endpoint.ts";
import { newAccessToken, newRefreshToken } from "./fake-token-endpoint.ts";

const HOUR = 60 * 60 * 1000;

export class FakeClock implements Clock {
	constructor(private time: number) {}
	now(): number {
		return this.time;
	}
	advance(ms: number): void {
		this.time += ms;
	}
}

/** A mutex per label, like the file lock but within the process; counts how often it was taken. */
export class MemoryLock implements RefreshLock {
	runs = 0;
	/** Runs inside the lock before `fn`, e.g. to imitate another process that refreshed meanwhile. */
	beforeRun: ((label: string) => Promise<void>) | undefined;
	private readonly tails = new Map<string, Promise<unknown>>();

	async run<T>(label: string, fn: () => Promise<T>): Promise<T> {
		const previous = this.tails.get(label) ?? Promise.resolve();
		const mine = previous
			.catch(() => {})
			.then(async () => {
				this.runs++;
				await this.beforeRun?.(label);
				return fn();
			});
		this.tails.set(label, mine);
		return mine;
	}
}

export class MemoryMarks implements LoginMarks {
	readonly marked = new Map<string, string>();
	async isMarked(label: string): Promise<boolean> {
		return this.marked.has(label);
	}
	async mark(label: string, reason: string): Promise<void> {
		this.marked.set(label, reason);
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

	async refresh(refreshToken: string): Promise<TokenGrant> {
		this.refreshes.push(refreshToken);
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
