/**
 * Rotated pairs the keychain did not take. The token endpoint has already invalidated the refresh token each one
 * replaces, so dropping it would force a login: the broker serves it from memory (never from a file) while the
 * keychain still holds exactly what it replaces, and keeps trying to write it. Any other keychain state wins at
 * once: a deleted item (a revocation) or another pair (a login) drops it.
 */
import type { StoredCredentials } from "./credentials.ts";

/** Timer retries per pair: after retryMs, then twice that, … (each later request retries too, at most as often). */
const MAX_TIMER_RETRIES = 10;
const MAX_RETRY_DELAY_MS = 5 * 60 * 1000;

export interface UnsavedPair {
	/** The keychain item (as stored) that this pair replaces: served only while the keychain still holds it. */
	replaces: string;
	pair: StoredCredentials;
}

interface Entry extends UnsavedPair {
	timerRetries: number;
	lastTry: number;
	timer?: NodeJS.Timeout;
	retrying?: Promise<void>;
}

/**
 * One unsaved pair per label, and its retries. `write` stores the pair compare-and-swap and answers whether the
 * entry is settled (stored, or given way to another keychain state); it may update `replaces`.
 */
export class UnsavedPairs {
	private readonly entries = new Map<string, Entry>();

	constructor(
		private readonly retryMs: number,
		private readonly write: (label: string, entry: UnsavedPair) => Promise<boolean>,
	) {}

	get(label: string): UnsavedPair | undefined {
		return this.entries.get(label);
	}

	has(label: string): boolean {
		return this.entries.has(label);
	}

	keep(label: string, replaces: string, pair: StoredCredentials): void {
		this.forget(label);
		const entry: Entry = { replaces, pair, timerRetries: 0, lastTry: performance.now() };
		this.entries.set(label, entry);
		this.schedule(label, entry);
	}

	forget(label: string): void {
		const entry = this.entries.get(label);
		if (entry?.timer) clearTimeout(entry.timer);
		this.entries.delete(label);
	}

	/** A request used the pair: try the write again, unless one ran less than `retryMs` ago. Never throws. */
	retrySoon(label: string): void {
		const entry = this.entries.get(label);
		if (entry && performance.now() - entry.lastTry >= this.retryMs) this.retry(label, entry);
	}

	private schedule(label: string, entry: Entry): void {
		if (entry.timerRetries >= MAX_TIMER_RETRIES) return;
		const delay = Math.min(MAX_RETRY_DELAY_MS, this.retryMs * 2 ** entry.timerRetries);
		entry.timer = setTimeout(() => {
			entry.timer = undefined;
			entry.timerRetries++;
			this.retry(label, entry);
		}, delay);
		// Never keeps the process alive: at exit, an unsaved pair is lost and that account asks for a login.
		entry.timer.unref?.();
	}

	private retry(label: string, entry: Entry): void {
		if (entry.retrying || this.entries.get(label) !== entry) return;
		entry.lastTry = performance.now();
		entry.retrying = this.write(label, entry)
			.then((settled) => {
				if (settled && this.entries.get(label) === entry) this.forget(label);
			})
			.catch(() => {})
			.finally(() => {
				entry.retrying = undefined;
				if (this.entries.get(label) === entry && !entry.timer) this.schedule(label, entry);
			});
	}
}
