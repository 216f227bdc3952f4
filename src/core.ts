/**
 * The secret-keeping layer, built from the settings: keychain, config and state files, token broker. Loaded on
 * first use (never at pi start-up: importing `@napi-rs/keyring` and `zod` costs pi about 55 ms of start-up), and
 * by the migration script.
 */
import open from "open";
import { FileRefreshLock, StateLoginMarks } from "./broker/account-files.ts";
import { TokenBroker } from "./broker/token-broker.ts";
import type { AccountsConfig, SharedState } from "./config/schema.ts";
import { createConfigStore, createStateStore, type JsonFileStore } from "./config/stores.ts";
import { OsSecretStore } from "./keychain/os-secret-store.ts";
import { HttpTokenEndpoint } from "./oauth/token-endpoint.ts";
import { type ExtensionPaths, readSettings, type Settings } from "./settings.ts";

export interface Core {
	settings: Settings;
	paths: ExtensionPaths;
	config: JsonFileStore<AccountsConfig>;
	state: JsonFileStore<SharedState>;
	broker: TokenBroker;
	/** Opens a URL in the person's browser (best effort; the URL is always shown as well). */
	openBrowser(url: string): Promise<void>;
}

export function createCore(settings: Settings = readSettings()): Core {
	const { paths } = settings;
	const config = createConfigStore(paths.configFile);
	const state = createStateStore(paths.stateFile);
	const broker = new TokenBroker({
		secrets: new OsSecretStore({
			service: settings.keychainService,
			timeoutMs: settings.keychainTimeoutMs,
			wsl: settings.wsl,
		}),
		endpoint: new HttpTokenEndpoint({ url: settings.tokenUrl, timeoutMs: settings.tokenTimeoutMs }),
		lock: new FileRefreshLock(paths.lockDir, { staleMs: settings.lockStaleMs }),
		marks: new StateLoginMarks(state),
		refreshMarginMs: settings.refreshMarginMs,
	});
	const openBrowser = async (url: string): Promise<void> => {
		if (!settings.openBrowser) return;
		const child = await open(url);
		child.on("error", () => {});
	};
	return { settings, paths, config, state, broker, openBrowser };
}
