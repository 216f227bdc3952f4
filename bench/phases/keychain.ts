/**
 * 5. Keychain: one account item on the real Secret Service (or the OS keychain elsewhere) through the extension's
 * own OsSecretStore — median get and set (interleaved), and the first access of a label in a process (which
 * builds the keyring entry, cached per label afterwards).
 */

import { serializeCredentials } from "../../src/broker/credentials.ts";
import { OsSecretStore } from "../../src/keychain/os-secret-store.ts";
import { newAccessToken, newRefreshToken } from "../../test/helpers/fake-token-endpoint.ts";
import type { BenchContext } from "../lib/context.ts";
import { type Summary, settle, shuffled, summarize } from "../lib/stats.ts";

export interface KeychainResult {
	backend: string;
	get: Summary;
	set: Summary;
	/** First get of an existing item through a fresh store (builds the entry, then reads). */
	firstAccess: Summary;
	secretBytes: number;
}

function secret(): string {
	const expires = Date.now() + 8 * 60 * 60 * 1000;
	return serializeCredentials({ access: newAccessToken(), refresh: newRefreshToken(), expires });
}

export async function keychain(ctx: BenchContext): Promise<KeychainResult> {
	const store = new OsSecretStore({ service: ctx.env.keychainService });
	const label = "kc-bench";
	const value = secret();
	await store.set(label, value);
	const times: Record<"get" | "set", number[]> = { get: [], set: [] };
	const ops = {
		get: async () => {
			if ((await store.get(label)) === null) throw new Error("the keychain lost the benchmark item");
		},
		set: () => store.set(label, secret()),
	};
	const warmup = 20;
	const samples = ctx.budget.n(200, 40);
	for (let i = 0; i < warmup + samples; i++) {
		for (const op of shuffled<"get" | "set">(["get", "set"])) {
			const started = performance.now();
			await ops[op]();
			const ms = performance.now() - started;
			if (i >= warmup) times[op].push(ms);
			await settle();
		}
	}

	const labels = Array.from({ length: ctx.budget.n(20, 5) }, (_, i) => `kc-first-${i}`);
	for (const each of labels) await store.set(each, secret());
	const firstAccess: number[] = [];
	for (const each of labels) {
		const fresh = new OsSecretStore({ service: ctx.env.keychainService });
		const started = performance.now();
		await fresh.get(each);
		firstAccess.push(performance.now() - started);
	}
	for (const each of [label, ...labels]) await store.delete(each);

	const result: KeychainResult = {
		backend: store.backend,
		get: summarize(times.get),
		set: summarize(times.set),
		firstAccess: summarize(firstAccess),
		secretBytes: Buffer.byteLength(value),
	};
	ctx.log(
		`${result.backend}: get ${result.get.median} ms (p90 ${result.get.p90}), set ${result.set.median} ms ` +
			`(p90 ${result.set.p90}), first access of a label ${result.firstAccess.median} ms; n=${samples}`,
	);
	return result;
}
