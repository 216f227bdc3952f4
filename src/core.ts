/**
 * The secret-keeping layer, built once per process from the environment: keychain, config and state files,
 * token broker. Loaded on first use through `runtime-loader.ts` (never at pi start-up), because importing
 * `@napi-rs/keyring` and `zod` costs pi about 55 ms of start-up.
 */
import open from "open";
import { FileRefreshLock } from "./broker/file-refresh-lock.ts";
import { StateLoginMarks } from "./broker/state-login-marks.ts";
import { DEFAULT_REFRESH_MARGIN_MS, TokenBroker } from "./broker/token-broker.ts";
import { HttpTokenEndpoint } from "./broker/token-endpoint.ts";
import { createConfigStore } from "./config/config-store.ts";
import type { JsonFileStore } from "./config/json-file-store.ts";
import { type ExtensionPaths, resolvePaths } from "./config/paths.ts";
import type { AccountsConfig, SharedState } from "./config/schema.ts";
import { createStateStore } from "./config/state-store.ts";
import { OsSecretStore } from "./keychain/os-secret-store.ts";

export interface Core {
	paths: ExtensionPaths;
	config: JsonFileStore<AccountsConfig>;
	state: JsonFileStore<SharedState>;
	broker: TokenBroker;
	/** Opens a URL in the person's browser (best effort; the URL is always shown as well). */
	openBrowser(url: string): Promise<void>;
}

export function createCore(env: NodeJS.ProcessEnv = process.env): Core {
	const paths = resolvePaths(env);
	const config = createConfigStore(paths.configFile);
	const state = createStateStore(paths.stateFile);
	const margin = Number(env.PI_MCC_REFRESH_MARGIN_MS);
	const broker = new TokenBroker({
		secrets: new OsSecretStore({ service: env.PI_MCC_KEYCHAIN_SERVICE || undefined }),
		endpoint: new HttpTokenEndpoint({ url: env.PI_MCC_TOKEN_URL || undefined }),
		lock: new FileRefreshLock(paths.lockDir),
		marks: new StateLoginMarks(state),
		refreshMarginMs: Number.isFinite(margin) && env.PI_MCC_REFRESH_MARGIN_MS ? margin : DEFAULT_REFRESH_MARGIN_MS,
	});
	const openBrowser = async (url: string): Promise<void> => {
		if (env.PI_MCC_NO_BROWSER === "1") return;
		const child = await open(url);
		child.on("error", () => {});
	};
	return { paths, config, state, broker, openBrowser };
}
