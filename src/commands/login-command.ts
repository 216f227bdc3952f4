import type { ExtensionCommandContext } from "@mariozechner/pi-coding-agent";
import { labelCaseClash, labelProblem } from "../config/schema.ts";
import {
	buildAuthorizeUrl,
	type CallbackServer,
	createPkce,
	createState,
	parseAuthorizationInput,
	startCallbackServer,
} from "../oauth/authorization.ts";
import { ANTHROPIC_OAUTH } from "../oauth/token-endpoint.ts";
import { type CommandDeps, refreshFooter, reportFailure, splitArgs } from "./command-support.ts";

/**
 * /mcc-login <label>: Anthropic's authorization-code + PKCE flow. The browser's redirect is caught on
 * 127.0.0.1 when the callback port is free; the code (or the final redirect URL) can always be pasted instead.
 * The token pair goes straight to the keychain through the broker; re-login keeps the account's fallback list.
 */
export async function loginCommand(deps: CommandDeps, args: string, ctx: ExtensionCommandContext): Promise<void> {
	const [label, ...extra] = splitArgs(args);
	if (!label || extra.length > 0) {
		ctx.ui.notify("Usage: /mcc-login <label>  (e.g. /mcc-login personal)", "warning");
		return;
	}
	const problem = labelProblem(label);
	if (problem) {
		ctx.ui.notify(`Cannot log in: ${problem}.`, "error");
		return;
	}
	let callback: CallbackServer | undefined;
	const abortPrompt = new AbortController();
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
		const pkce = createPkce();
		const state = createState();
		const port = callbackPort();
		callback = port === 0 ? undefined : await startCallbackServer(port, state);
		const url = buildAuthorizeUrl(pkce, state);
		ctx.ui.notify(`Log in the Claude account for "${label}" in your browser:\n${url}`, "info");
		await core.openBrowser(url).catch(() => {});

		const pasted = ctx.ui
			.input(`Paste the code or the final redirect URL for "${label}"`, "code#state", { signal: abortPrompt.signal })
			.then((value) => ({ pasted: value }));
		const caught = callback ? callback.code.then((value) => ({ caught: value })) : new Promise<never>(() => {});
		const first = await Promise.race([pasted, caught]);
		abortPrompt.abort();
		let code: string | undefined;
		let returnedState: string | undefined;
		if ("caught" in first && first.caught) {
			code = first.caught.code;
			returnedState = first.caught.state;
		} else if ("pasted" in first && first.pasted) {
			const parsed = parseAuthorizationInput(first.pasted);
			code = parsed.code;
			returnedState = parsed.state;
		}
		if (!code) {
			ctx.ui.notify(`Login of "${label}" cancelled; nothing was changed.`, "warning");
			return;
		}
		if (returnedState !== undefined && returnedState !== state) {
			ctx.ui.notify(
				`Login of "${label}" refused: the pasted code belongs to another login attempt. Run /mcc-login ${label} again.`,
				"error",
			);
			return;
		}
		const { expires } = await core.broker.loginWithCode(label, {
			code,
			state: returnedState ?? state,
			verifier: pkce.verifier,
			redirectUri: ANTHROPIC_OAUTH.redirectUri,
		});
		const loggedInAt = Date.now();
		const created = await core.config.update((config) => {
			const existing = config.accounts.find((account) => account.label === label);
			if (existing) existing.loggedInAt = loggedInAt;
			else config.accounts.push({ label, fallbackTo: [], loggedInAt });
			config.activeLabel ??= label;
			return { next: config, result: !existing };
		});
		// A session without an account (the first login) starts using the new one.
		if (!deps.session.label) deps.session.choose(label, "chosen");
		const minutes = Math.max(0, Math.round((expires - Date.now()) / 60_000));
		ctx.ui.notify(
			`${created ? "Added" : "Logged in again:"} account "${label}". Its tokens are in the ${core.broker.backend} ` +
				`(access token valid for ${minutes} min, renewed automatically).`,
			"info",
		);
		await refreshFooter(deps);
	} catch (error) {
		reportFailure(ctx, error);
	} finally {
		abortPrompt.abort();
		callback?.close();
	}
}

function callbackPort(): number {
	const raw = process.env.PI_MCC_CALLBACK_PORT;
	if (raw === undefined || raw === "") return ANTHROPIC_OAUTH.callbackPort;
	const port = Number(raw);
	return Number.isInteger(port) && port >= 0 && port < 65536 ? port : ANTHROPIC_OAUTH.callbackPort;
}
