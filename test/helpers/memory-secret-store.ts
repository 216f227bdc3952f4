import type { SecretStore } from "../../src/keychain/secret-store.ts";

export type SecretOperation = "get" | "set" | "delete";

interface Injection {
	operation: SecretOperation | "any";
	label?: string;
	error: () => unknown;
	/** How many more calls fail; Infinity until cleared. */
	remaining: number;
}

/**
 * An in-memory SecretStore for unit tests of the broker: records every call, and fails chosen calls with a
 * chosen error (e.g. a KeychainError of kind "locked") once, a few times, or until cleared.
 */
export class MemorySecretStore implements SecretStore {
	readonly backend = "test keychain";
	readonly items = new Map<string, string>();
	readonly calls: Array<{ operation: SecretOperation; label: string }> = [];
	/** Rewrites what `set` stores, to imitate a keychain that keeps something other than what it was given. */
	transformOnSet: ((label: string, secret: string) => string) | undefined;
	private injections: Injection[] = [];

	async get(label: string): Promise<string | null> {
		this.enter("get", label);
		return this.items.get(label) ?? null;
	}

	async set(label: string, secret: string): Promise<void> {
		this.enter("set", label);
		this.items.set(label, this.transformOnSet ? this.transformOnSet(label, secret) : secret);
	}

	async delete(label: string): Promise<boolean> {
		this.enter("delete", label);
		return this.items.delete(label);
	}

	/** Makes the next `times` matching calls throw `error` (a fresh one each time when given a function). */
	fail(
		operation: SecretOperation | "any",
		error: unknown | (() => unknown),
		options: { times?: number; label?: string } = {},
	): void {
		this.injections.push({
			operation,
			label: options.label,
			error: typeof error === "function" ? (error as () => unknown) : () => error,
			remaining: options.times ?? Number.POSITIVE_INFINITY,
		});
	}

	clearFailures(): void {
		this.injections = [];
	}

	count(operation: SecretOperation, label?: string): number {
		const matches = (call: { operation: SecretOperation; label: string }): boolean =>
			call.operation === operation && (label === undefined || call.label === label);
		return this.calls.filter(matches).length;
	}

	private enter(operation: SecretOperation, label: string): void {
		this.calls.push({ operation, label });
		const match = this.injections.find(
			(injection) =>
				injection.remaining > 0 &&
				(injection.operation === "any" || injection.operation === operation) &&
				(injection.label === undefined || injection.label === label),
		);
		if (!match) return;
		match.remaining--;
		throw match.error();
	}
}
