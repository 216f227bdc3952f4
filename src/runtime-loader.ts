import type { ExtensionRuntime } from "./extension-runtime.ts";

const runtimes = new Map<string, Promise<ExtensionRuntime>>();

/**
 * The extension's runtime, loaded on first use: the one dynamic import of the extension, on purpose. pi loads
 * extensions through jiti on every start, and every module in the static graph of index.ts costs start-up time
 * (our whole graph, keyring and zod included, cost pi ~470 ms; keyring + zod alone ~55–180 ms). So index.ts
 * registers names only, and this loads the rest when a command, a request or a new session first needs it.
 * One runtime per environment (agent dir, keychain service, token URL), so tests that switch them get their own.
 */
export function loadRuntime(env: NodeJS.ProcessEnv = process.env): Promise<ExtensionRuntime> {
	const key = [env.PI_CODING_AGENT_DIR, env.HOME, env.PI_MCC_KEYCHAIN_SERVICE, env.PI_MCC_TOKEN_URL].join("\u0000");
	let pending = runtimes.get(key);
	if (!pending) {
		pending = import("./extension-runtime.ts").then((module) => module.createExtensionRuntime(env));
		// A failed load (e.g. the keyring's native module is missing) is not cached: the next use tries again.
		pending.catch(() => runtimes.delete(key));
		runtimes.set(key, pending);
	}
	return pending;
}
