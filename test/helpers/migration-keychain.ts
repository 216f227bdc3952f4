import { randomBytes } from "node:crypto";
import { parseCredentials, type StoredCredentials, serializeCredentials } from "../../src/broker/credentials.ts";
import { type StoredComparison, TokenBroker } from "../../src/broker/token-broker.ts";
import { OsSecretStore } from "../../src/keychain/os-secret-store.ts";

/**
 * On Linux the suite must run inside test/run-with-keyring.sh's private gnome-keyring: run directly, it would
 * write into the developer's own keychain.
 */
export function requireTestKeyring(): void {
	if (process.platform === "linux" && process.env.PI_MCC_INSIDE_TEST_KEYRING !== "1") {
		throw new Error("run this suite with `npm test` (a private, throwaway keyring), not vitest directly");
	}
}

/** A keychain service name no other test (or person) uses, so items never collide. */
export function uniqueService(): string {
	return `pi-mcc-migration-test-${process.pid}-${randomBytes(4).toString("hex")}`;
}

/** Direct access to one test's keychain items, for setting them up and checking them. */
export class TestKeychain {
	readonly store: OsSecretStore;
	readonly broker: TokenBroker;

	constructor(readonly service: string) {
		this.store = new OsSecretStore({ service, timeoutMs: 10_000 });
		const unused = (): never => {
			throw new Error("not used by the migration tests");
		};
		this.broker = new TokenBroker({
			secrets: this.store,
			endpoint: { url: "http://127.0.0.1:9/unused", refresh: unused, exchangeCode: unused },
			lock: { run: (_label, fn) => fn() },
			marks: { isMarked: async () => false, mark: async () => {}, clear: async () => {} },
		});
	}

	async credentials(label: string): Promise<StoredCredentials | null> {
		const secret = await this.store.get(label);
		return secret === null ? null : parseCredentials(secret);
	}

	compare(label: string, credentials: StoredCredentials): Promise<StoredComparison> {
		return this.broker.compareStored(label, credentials);
	}

	put(label: string, credentials: StoredCredentials): Promise<void> {
		return this.store.set(label, serializeCredentials(credentials));
	}

	putRaw(label: string, secret: string): Promise<void> {
		return this.store.set(label, secret);
	}

	async removeAll(labels: Iterable<string>): Promise<void> {
		for (const label of labels) await this.store.delete(label).catch(() => false);
	}
}
