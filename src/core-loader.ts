import type { Core } from "./core.js";

const cores = new Map<string, Promise<Core>>();

/**
 * The keychain/config/broker layer, loaded on first use. This is the one dynamic import of the extension, on
 * purpose: importing `@napi-rs/keyring` and `zod` at the top of the extension costs pi about 55 ms at every
 * start-up, even for sessions that never use a Claude account. One core per environment (agent dir, keychain
 * service, token URL), so tests that switch these in one process get separate cores.
 */
export function loadCore(env: NodeJS.ProcessEnv = process.env): Promise<Core> {
	const key = [env.PI_CODING_AGENT_DIR, env.HOME, env.PI_MCC_KEYCHAIN_SERVICE, env.PI_MCC_TOKEN_URL].join("\u0000");
	let pending = cores.get(key);
	if (!pending) {
		pending = import("./core.js").then((module) => module.createCore(env));
		// A failed load (e.g. the keyring's native module is missing) is not cached: the next use tries again.
		pending.catch(() => cores.delete(key));
		cores.set(key, pending);
	}
	return pending;
}
