/**
 * pi-multi-claude-code: several Claude Pro/Max accounts in pi, tokens only in the OS keychain, directional
 * fallback on rate limits. This file only wires names to handlers; the handlers load on first use, so pi's
 * start-up pays for this file and the model list only. Every handler runs guarded: nothing it does can take pi
 * down. See README.md.
 *
 *   pi -e ./index.ts          (or: pi install npm:pi-multi-claude-code)
 */
import { createAssistantMessageEventStream } from "@mariozechner/pi-ai";
import type { ExtensionAPI, ExtensionContext } from "@mariozechner/pi-coding-agent";
import { failStream, guarded } from "./src/host.ts";
import { API_KEY_PLACEHOLDER, COMMANDS, CYCLE_SHORTCUT, PROVIDER_ID } from "./src/manifest.ts";
import {
	catalogAnthropicModels,
	type MirroredModel,
	mirrorAnthropicModels,
	modelsSignature,
	PI_LINE,
	providerApi,
} from "./src/provider/models.ts";
import type { Runtime, SessionRuntime } from "./src/runtime.ts";
import { registerSession, unregisterSession } from "./src/session/registry.ts";
import { readSettings, settingsKey } from "./src/settings.ts";
import { errorText } from "./src/text.ts";

const runtimes = new Map<string, Promise<Runtime>>();

/**
 * The runtime, loaded on first use: the extension's one dynamic import, on purpose. pi loads extensions through
 * jiti on every start, and every module in index.ts's static graph costs start-up time (the whole graph, keyring
 * and zod included, cost pi ~470 ms). One runtime per settings, so tests that switch agent dirs get their own.
 */
function loadRuntime(): Promise<Runtime> {
	const key = settingsKey();
	let pending = runtimes.get(key);
	if (!pending) {
		const settings = readSettings();
		pending = import("./src/runtime.ts").then((module) => module.createRuntime(settings));
		// A failed load (e.g. the keyring's native module is missing) is not cached: the next use tries again.
		pending.catch(() => runtimes.delete(key));
		runtimes.set(key, pending);
	}
	return pending.catch((error: unknown) => {
		throw new Error(
			`the extension could not load its keychain layer (${errorText(error)}). Reinstall it (npm install).`,
		);
	});
}

export default function multiClaudeCode(pi: ExtensionAPI): void {
	const baseUrl = readSettings().anthropicBaseUrl;
	const api = providerApi();
	// pi calls this factory once per session: what the session needs (its account, its footer) is opened once here.
	let session: Promise<SessionRuntime> | undefined;
	const sessionRuntime = (): Promise<SessionRuntime> => {
		session ??= loadRuntime().then((runtime) => runtime.openSession(pi));
		// A failed load is not kept: the next use tries again.
		session.catch(() => {
			session = undefined;
		});
		return session;
	};
	let registeredModels = "";
	const register = (models: MirroredModel[]): void => {
		registeredModels = modelsSignature(models);
		pi.registerProvider(PROVIDER_ID, {
			name: "Claude (multi-account)",
			baseUrl,
			apiKey: API_KEY_PLACEHOLDER,
			api,
			models,
			streamSimple: (model, context, options) => {
				const out = createAssistantMessageEventStream();
				sessionRuntime()
					.then((runtime) => runtime.stream(model, context, options, out))
					.catch((error: unknown) => failStream(out, model, `${PROVIDER_ID}: ${errorText(error)}`));
				return out;
			},
		});
	};
	register(catalogAnthropicModels({ api, baseUrl }));

	for (const command of COMMANDS) {
		pi.registerCommand(command.name, {
			description: command.description,
			...(command.completes
				? {
						getArgumentCompletions: (prefix: string) =>
							sessionRuntime()
								.then((runtime) => runtime.complete(command.name, prefix))
								.catch(() => null),
					}
				: {}),
			handler: (args, ctx) => guarded(ctx, async () => (await sessionRuntime()).run[command.name](args, ctx)),
		});
	}
	pi.registerShortcut(CYCLE_SHORTCUT, {
		description: "Cycle this session's Claude account (multi-claude-code)",
		handler: (ctx) => guarded(ctx, async () => (await sessionRuntime()).cycle(ctx)),
	});
	let registration: { id: string; account: Promise<unknown> } | undefined;
	pi.on("session_start", (_event, ctx) => {
		// Known to this process's requests at once, before the runtime has loaded (see src/session/registry.ts).
		void guarded(ctx, () => {
			const id = ctx.sessionManager.getSessionId();
			const account = sessionRuntime().then((runtime) => runtime.account);
			registerSession(id, account);
			registration = { id, account };
		});
		// pi's list can differ from pi-ai's catalog (models.json, pi 1.x's catalog updates): follow it.
		void guarded(ctx, () => {
			const live = mirrorAnthropicModels(ctx.modelRegistry.getAll(), { api, baseUrl });
			if (live.length > 0 && modelsSignature(live) !== registeredModels) register(live);
		});
		// Not awaited: the footer fills in once the runtime has loaded in the background; pi's start goes on.
		void guarded(ctx, async () => (await sessionRuntime()).started(ctx));
	});
	pi.on("session_shutdown", () => {
		if (registration) unregisterSession(registration.id, registration.account);
		void guarded(undefined, async () => (await session)?.stopped());
	});
	// The session's keychain read starts at the earliest moment of the turn that pi awaits before the request:
	// turn_start on pi 1.x; on 0.73 turn_start handlers may run after the request, so there it is `context`.
	// A session on another provider's model sends no request of ours: it reads nothing.
	const beginTurn = (_event: unknown, ctx: ExtensionContext): void => {
		void guarded(undefined, async () => {
			if (ctx.model?.provider === PROVIDER_ID) (await sessionRuntime()).turnStarted();
		});
	};
	if (PI_LINE === "1.x") {
		pi.on("turn_start", beginTurn);
		// By `context` (awaited, right before the request) the read is often done: its result is taken in then.
		pi.on("context", async (_event, ctx) => {
			await guarded(undefined, async () => {
				if (ctx.model?.provider === PROVIDER_ID) await (await sessionRuntime()).requestComing();
			});
		});
	} else pi.on("context", beginTurn);
}
