/**
 * Everything behind the extension's names, built on first use (index.ts loads this module lazily): the
 * keychain/config/broker core once per settings, and per pi session its account, footer and handlers. Adding a
 * command means a line in manifest.ts and a line in `run` below.
 */
import {
	type Api,
	type AssistantMessageEventStream,
	type Context,
	type Model,
	type SimpleStreamOptions,
	streamSimpleAnthropic,
} from "@mariozechner/pi-ai";
import type { ExtensionAPI, ExtensionCommandContext, ExtensionContext } from "@mariozechner/pi-coding-agent";
import {
	type CommandDeps,
	completeArguments,
	type LabelCompletion,
	refreshFooter,
} from "./commands/command-support.ts";
import { fallbackCommand } from "./commands/fallback-command.ts";
import { BROWSER_FLAG, COPY_CODE_FLAG, loginCommand } from "./commands/login-command.ts";
import { removeCommand } from "./commands/remove-command.ts";
import { statusCommand } from "./commands/status-command.ts";
import { cycleAccounts, PROJECT_FLAG, useCommand } from "./commands/use-command.ts";
import { ConfigError } from "./config/stores.ts";
import { type Core, createCore } from "./core.ts";
import { notifySafely } from "./host.ts";
import type { CommandName } from "./manifest.ts";
import { PI_LINE } from "./provider/models.ts";
import { type RequestDeps, streamInto } from "./provider/multi-account-stream.ts";
import { registeredSession } from "./session/registry.ts";
import { SessionAccount } from "./session/session-account.ts";
import type { Settings } from "./settings.ts";

/** The handlers of one pi session (one extension instance: pi calls the factory once per session). */
export interface SessionRuntime {
	/** The session's account and footer. */
	account: SessionAccount;
	stream(
		model: Model<Api>,
		context: Context,
		options: SimpleStreamOptions | undefined,
		out: AssistantMessageEventStream,
	): Promise<void>;
	run: Record<CommandName, (args: string, ctx: ExtensionCommandContext) => Promise<void>>;
	complete(command: CommandName, prefix: string): Promise<LabelCompletion[] | null>;
	cycle(ctx: ExtensionContext): Promise<void>;
	started(ctx: ExtensionContext): Promise<void>;
	/** The turn that will send a request began: its token read can start now. */
	turnStarted(): void;
	/** The request is about to be built: takes in the turn's token read if it is done; never rejects. */
	requestComing(): Promise<void>;
	stopped(): void;
}

export interface Runtime {
	core: Core;
	openSession(pi: Pick<ExtensionAPI, "appendEntry">): SessionRuntime;
}

/** Flags each command completes, with the values a flag takes. */
const FLAGS: Partial<Record<CommandName, Record<string, readonly string[]>>> = {
	"mcc-login": { [BROWSER_FLAG]: [], [COPY_CODE_FLAG]: [] },
	"mcc-use": { [PROJECT_FLAG]: ["off"] },
};

export function createRuntime(settings: Settings): Runtime {
	const core = createCore(settings);
	const requestDeps: RequestDeps = { core, delegate: streamSimpleAnthropic, perRequestFetch: PI_LINE === "1.x" };
	return {
		core,
		openSession(pi) {
			const own = new SessionAccount(pi);
			const deps: CommandDeps = { core, session: own };
			const afterStart =
				<A extends unknown[]>(command: (deps: CommandDeps, ...args: A) => Promise<void>) =>
				async (...args: A): Promise<void> => {
					await own.settled();
					await command(deps, ...args);
				};
			const start = async (ctx: ExtensionContext): Promise<void> => {
				own.attach(ctx);
				try {
					await own.resolve(await core.config.read());
					await refreshFooter(deps);
				} catch (error) {
					if (!(error instanceof ConfigError)) throw error;
					own.footer.show({ label: undefined });
					notifySafely(ctx, error.message, "warning");
				}
			};
			return {
				account: own,
				async stream(model, context, options, out) {
					// pi 0.73 calls the last registered stream for every session of the process: find the request's
					// own session by the id its options carry.
					const id = (options as { sessionId?: unknown } | undefined)?.sessionId;
					const session = (await registeredSession<SessionAccount>(id)) ?? own;
					await session.settled();
					return streamInto(requestDeps, session, model, context, options, out);
				},
				run: {
					"mcc-login": afterStart(loginCommand),
					"mcc-use": afterStart(useCommand),
					"mcc-fallback": afterStart(fallbackCommand),
					"mcc-status": afterStart(statusCommand),
					"mcc-remove": afterStart(removeCommand),
				},
				complete: (command, prefix) => completeArguments(deps, prefix, FLAGS[command]),
				cycle: afterStart(cycleAccounts),
				started(ctx) {
					const starting = start(ctx);
					own.beginStart(starting);
					return starting;
				},
				turnStarted: () => own.prefetch(core.broker, Date.now()),
				requestComing: () => withinOneTurn(own.prefetchSettled()),
				stopped() {
					own.stop();
					own.footer.detach();
				},
			};
		},
	};
}

/**
 * `pending`, or nothing after one turn of the event loop, whichever comes first. A keychain read already done in
 * the thread pool is delivered in that turn (I/O comes before setImmediate), so the request is built as soon as
 * pi calls the provider; one still under way is not waited for here (pi's own work goes on meanwhile).
 */
function withinOneTurn(pending: Promise<void>): Promise<void> {
	return Promise.race([pending, new Promise<void>((resolve) => setImmediate(resolve))]);
}
