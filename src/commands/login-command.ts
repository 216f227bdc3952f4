import type { ExtensionCommandContext } from "@mariozechner/pi-coding-agent";
import { labelCaseClash, labelProblem } from "../config/schema.ts";
import { notifySafely } from "../host.ts";
import {
	buildAuthorizeUrl,
	type CallbackServer,
	COPY_CODE_REDIRECT_URI,
	createPkce,
	createState,
	parseAuthorizationInput,
	startCallbackServer,
	waitForAuthorization,
} from "../oauth/authorization.ts";
import { type AccountIdentity, ANTHROPIC_OAUTH } from "../oauth/token-endpoint.ts";
import { formatDuration, formatSeconds, printable } from "../text.ts";
import { type CommandDeps, refreshFooter, reportFailure, splitArgs } from "./command-support.ts";

export type LoginMethod = "browser" | "copy_code";

/** The flags /mcc-login takes (manifest.ts lists them for completion): the method, for scripts and tests. */
export const BROWSER_FLAG = "--browser";
export const COPY_CODE_FLAG = "--copy-code";
const LOGIN_FLAGS = new Map<string, LoginMethod>([
	[BROWSER_FLAG, "browser"],
	[COPY_CODE_FLAG, "copy_code"],
]);

/** The choice pi-ai 1.x offers for its own Anthropic login, in the same words. */
export const LOGIN_METHOD_CHOICES: Readonly<Record<LoginMethod, string>> = {
	browser: "Browser login (default)",
	copy_code: "Copy code login (headless)",
};

const USAGE = "Usage: /mcc-login <label> [--browser | --copy-code]  (e.g. /mcc-login personal)";

/** `<label> [--browser|--copy-code]` in any order; `undefined` for anything else. */
export function parseLoginArgs(args: string): { label: string; method?: LoginMethod } | undefined {
	let label: string | undefined;
	let method: LoginMethod | undefined;
	for (const word of splitArgs(args)) {
		const flag = LOGIN_FLAGS.get(word);
		if (flag !== undefined) {
			if (method !== undefined) return undefined;
			method = flag;
		} else if (word.startsWith("--") || label !== undefined) {
			return undefined;
		} else {
			label = word;
		}
	}
	return label === undefined ? undefined : { label, ...(method ? { method } : {}) };
}

/**
 * /mcc-login <label> [--browser | --copy-code]: Anthropic's authorization-code + PKCE flow. Browser login catches
 * the redirect on a loopback port (53692 or the configured one on 127.0.0.1 and ::1, else a free one) and still
 * takes a pasted code; copy-code login has Anthropic's page show the code to paste, for machines whose browser
 * cannot reach this one. The wait is bounded. The token pair goes straight to the keychain through the broker;
 * re-login keeps the account's fallback list and warns when the token answer names another Claude account.
 */
export async function loginCommand(deps: CommandDeps, args: string, ctx: ExtensionCommandContext): Promise<void> {
	const parsed = parseLoginArgs(args);
	if (!parsed) {
		ctx.ui.notify(USAGE, "warning");
		return;
	}
	const { label } = parsed;
	const problem = labelProblem(label);
	if (problem) {
		ctx.ui.notify(`Cannot log in: ${problem}.`, "error");
		return;
	}
	if (!ctx.hasUI) {
		const message =
			`/mcc-login ${label} needs a person to answer it: run it in pi's interactive mode (or through an RPC ` +
			"client that answers dialogs), not in print mode. Nothing was changed.";
		notifySafely(ctx, message, "error");
		process.stderr.write(`multi-claude-code: ${message}\n`);
		return;
	}
	let callback: CallbackServer | undefined;
	try {
		const { core } = deps;
		// Fail before the browser dance when the config cannot take the account.
		const config = await core.config.read();
		const clash = labelCaseClash(
			label,
			config.accounts.map((account) => account.label),
		);
		if (clash) {
			ctx.ui.notify(`Cannot log in "${label}": ${clash}.`, "error");
			return;
		}
		const method = parsed.method ?? (await chooseMethod(ctx, label));
		if (!method) {
			notifySafely(ctx, `Login of "${label}" cancelled; nothing was changed.`, "warning");
			return;
		}
		const pkce = createPkce();
		const state = createState();
		let redirectUri: string = COPY_CODE_REDIRECT_URI;
		if (method === "browser") {
			redirectUri = ANTHROPIC_OAUTH.redirectUri;
			const port = core.settings.callbackPort;
			const started = port === 0 ? undefined : await startCallbackServer(port, state);
			if (started?.kind === "listening") {
				callback = started.server;
				redirectUri = callback.redirectUri;
				if (started.busy) {
					notifySafely(
						ctx,
						`Port ${started.busy.port} on ${started.busy.address} is taken by another program, so this login ` +
							`listens on port ${callback.port} instead.`,
						"warning",
					);
				}
			} else if (started?.kind === "unavailable") {
				notifySafely(
					ctx,
					`No local port could be opened for the browser's redirect (${started.reason}). After logging in, ` +
						`paste the final redirect URL here, or use /mcc-login ${label} --copy-code.`,
					"warning",
				);
			}
		}
		const url = buildAuthorizeUrl(pkce, state, redirectUri);
		notifySafely(
			ctx,
			method === "copy_code"
				? `Log in the Claude account for "${label}" in a browser (on any machine):\n${url}\n` +
						"Anthropic then shows a code: paste it here."
				: `Log in the Claude account for "${label}" in your browser:\n${url}`,
			"info",
		);
		await core.openBrowser(url).catch(() => {});

		const title =
			method === "copy_code"
				? `Paste the code Anthropic shows for "${label}"`
				: `Paste the code or the final redirect URL for "${label}"`;
		const timeoutMs = core.settings.loginTimeoutMs;
		const wait = await waitForAuthorization({
			callback,
			ask: (signal) => ctx.ui.input(title, "code#state", { signal }),
			timeoutMs,
		});
		callback?.close();
		let code: string | undefined;
		let returnedState: string | undefined;
		switch (wait.kind) {
			case "caught":
				code = wait.code;
				returnedState = wait.state;
				break;
			case "pasted": {
				const pasted = parseAuthorizationInput(wait.input);
				code = pasted.code;
				returnedState = pasted.state;
				break;
			}
			case "refused":
				notifySafely(
					ctx,
					`Login of "${label}" was refused (${wait.error}${wait.description ? `: ${wait.description}` : ""}); ` +
						`nothing was changed. Run /mcc-login ${label} again to retry.`,
					"error",
				);
				return;
			case "timeout":
				notifySafely(
					ctx,
					`Login of "${label}" timed out after ${waitText(timeoutMs)} without a code; nothing was changed. ` +
						`Run /mcc-login ${label} again (with --copy-code if this machine's browser cannot reach it).`,
					"warning",
				);
				return;
			case "cancelled":
				break;
		}
		if (!code) {
			notifySafely(ctx, `Login of "${label}" cancelled; nothing was changed.`, "warning");
			return;
		}
		if (returnedState !== undefined && returnedState !== state) {
			notifySafely(
				ctx,
				`Login of "${label}" refused: the pasted code belongs to another login attempt. Run /mcc-login ${label} again.`,
				"error",
			);
			return;
		}
		const { expires, account } = await core.broker.loginWithCode(label, {
			code,
			state: returnedState ?? state,
			verifier: pkce.verifier,
			redirectUri,
		});
		const email = account?.email;
		const loggedInAt = Date.now();
		const { created, previousEmail } = await core.config.update((config) => {
			const existing = config.accounts.find((entry) => entry.label === label);
			const before = existing?.accountEmail;
			if (existing) {
				existing.loggedInAt = loggedInAt;
				// The e-mail describes the current login only: one the answer no longer names is not kept.
				if (email) existing.accountEmail = email;
				else delete existing.accountEmail;
			} else {
				config.accounts.push({ label, fallbackTo: [], loggedInAt, ...(email ? { accountEmail: email } : {}) });
			}
			config.activeLabel ??= label;
			return { next: config, result: { created: !existing, previousEmail: before } };
		});
		// A session without an account (the first login) starts using the new one.
		if (!deps.session.label) deps.session.choose(label, "chosen");
		const minutes = Math.max(0, Math.round((expires - Date.now()) / 60_000));
		notifySafely(
			ctx,
			`${created ? "Added" : "Logged in again:"} account "${label}"${identityText(account)}. Its tokens are in ` +
				`the ${core.broker.backend} (access token valid for ${minutes} min, renewed automatically).`,
			"info",
		);
		if (email && previousEmail && email.toLowerCase() !== previousEmail.toLowerCase()) {
			notifySafely(
				ctx,
				`"${label}" is now the Claude account ${printable(email, 254)}, not ${printable(previousEmail, 254)} ` +
					"as before. If you did not mean to switch accounts, the code may not have been yours: run " +
					`/mcc-login ${label} again and sign in with your own account.`,
				"warning",
			);
		}
		await refreshFooter(deps);
	} catch (error) {
		reportFailure(ctx, error);
	} finally {
		callback?.close();
	}
}

/** pi-ai 1.x's choice between the two methods; `undefined` when the person dismissed it. */
async function chooseMethod(ctx: ExtensionCommandContext, label: string): Promise<LoginMethod | undefined> {
	const choices = Object.entries(LOGIN_METHOD_CHOICES) as Array<[LoginMethod, string]>;
	const picked = await ctx.ui.select(
		`How should "${label}" log in?`,
		choices.map(([, text]) => text),
	);
	return choices.find(([, text]) => text === picked)?.[0];
}

/** " (ada@example.com, Example Org)": who the token answer says logged in, when it says so. */
function identityText(account: AccountIdentity | undefined): string {
	const parts = [account?.email, account?.organization].filter((part): part is string => Boolean(part));
	return parts.length > 0 ? ` (${parts.map((part) => printable(part, 254)).join(", ")})` : "";
}

function waitText(ms: number): string {
	return ms < 60_000 ? formatSeconds(ms) : formatDuration(ms);
}
