/**
 * What the per-session account tests share: accounts whose tokens answer with their own label, the labels the fake
 * API saw (by token), and the footer of a session, SDK (PiSession) or RPC (RpcPi), read and waited for alike.
 */
import { promises as fs } from "node:fs";
import { type AccountSpec, type AccountTokens, setupAccounts } from "./accounts.ts";
import { ok } from "./fake-anthropic-api.ts";
import { type E2eWorld, type PiSession, waitFor } from "./pi-harness.ts";
import type { RpcPi } from "./rpc-pi.ts";

/**
 * A fresh config (no binding left by an earlier test) with `specs`, each token answering "answer from <label>";
 * `active` is the default for new sessions (`activeLabel`).
 */
export async function labelledAccounts(
	world: E2eWorld,
	specs: AccountSpec[],
	active: string,
): Promise<Record<string, AccountTokens>> {
	await fs.rm(world.env.configFile, { force: true });
	const accounts = await setupAccounts({ accounts: specs, active, tokens: world.tokens });
	for (const [label, pair] of Object.entries(accounts)) world.api.script(pair.access, ok(`answer from ${label}`));
	return accounts;
}

/** The account of every request the fake API received (since its last clearRequests), in order. */
export function askedAccounts(world: E2eWorld, accounts: Record<string, AccountTokens>): string[] {
	const byToken = new Map(Object.entries(accounts).map(([label, pair]) => [pair.access, label]));
	return world.api.requests.map((request) => byToken.get(request.token ?? "") ?? `unknown token ${request.token}`);
}

/**
 * The footer text of a session on `label`: `claude: <label>`, then " (project)" exactly when `project` says so
 * (a usage figure or a fallback note may follow).
 */
export function footerOn(label: string, project = false): RegExp {
	return new RegExp(`^claude: ${label}${project ? " \\(project\\)" : "(?! \\(project\\))"}(?=$| )`);
}

/** The last footer text of an SDK session or an RPC pi. */
export function lastFooter(session: PiSession | RpcPi): string | undefined {
	return "footer" in session ? session.footer() : session.statuses().at(-1);
}

/** Every footer text of an SDK session or an RPC pi so far. */
export function footerTexts(session: PiSession | RpcPi): string[] {
	const texts = "footerHistory" in session ? session.footerHistory() : session.statuses();
	return texts.filter((text): text is string => text !== undefined);
}

/** Waits (bounded) until the session's last footer text matches, and returns it. */
export function footerMatching(session: PiSession | RpcPi, expected: RegExp, timeoutMs = 10_000): Promise<string> {
	return waitFor(
		() => {
			const text = lastFooter(session);
			return text !== undefined && expected.test(text) ? text : undefined;
		},
		`a footer matching ${expected}`,
		timeoutMs,
	).catch((error: unknown) => {
		throw new Error(`${(error as Error).message}; the footers were: ${JSON.stringify(footerTexts(session))}`);
	});
}

/** The last notification of an SDK session or an RPC pi. */
export function lastNotification(session: PiSession | RpcPi): string | undefined {
	return "ui" in session ? session.ui.notifications.at(-1)?.message : session.notifications().at(-1);
}
