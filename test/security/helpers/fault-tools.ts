/**
 * Tools for fault-injection tests: a proxy in front of the fake token endpoint that can act at the exact moment
 * the endpoint has answered (e.g. freeze the keychain daemon) or hold a request forever, a server that accepts
 * connections and never answers, and the lock directories a killed process leaves behind.
 */
import { createHash } from "node:crypto";
import { promises as fs } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { createServer as createTcpServer } from "node:net";
import { join } from "node:path";
import { readBody, serveOnLoopback } from "../../helpers/loopback.ts";

export interface TokenProxy {
	url: string;
	close(): Promise<void>;
}

export interface TokenProxyOptions {
	/** Called with the request body once the real endpoint answered, before the answer is passed on. */
	onAnswered?: (body: Record<string, unknown>, status: number, answer: string) => void;
	/** Requests for which this returns true are never forwarded nor answered. */
	hold?: (body: Record<string, unknown>) => boolean;
}

/** An HTTP proxy on 127.0.0.1 in front of `target` (a token endpoint URL). */
export async function startTokenProxy(target: string, options: TokenProxyOptions): Promise<TokenProxy> {
	const server = createHttpServer((req, res) => {
		void (async () => {
			const text = await readBody(req);
			let body: Record<string, unknown> = {};
			try {
				body = JSON.parse(text) as Record<string, unknown>;
			} catch {
				// forwarded as it is
			}
			if (options.hold?.(body)) return;
			const answer = await fetch(target, {
				method: req.method,
				headers: { "content-type": String(req.headers["content-type"] ?? "application/json") },
				body: text,
			});
			const answerText = await answer.text();
			options.onAnswered?.(body, answer.status, answerText);
			res.writeHead(answer.status, { "content-type": answer.headers.get("content-type") ?? "application/json" });
			res.end(answerText);
		})().catch(() => res.destroy());
	});
	const { port, close } = await serveOnLoopback(server);
	return { url: `http://127.0.0.1:${port}/v1/oauth/token`, close };
}

/** A TCP server that accepts every connection and never says a word. */
export async function startBlackHole(): Promise<TokenProxy> {
	const server = createTcpServer((socket) => {
		socket.on("error", () => {});
	});
	const { port, close } = await serveOnLoopback(server);
	return { url: `http://127.0.0.1:${port}/v1/oauth/token`, close };
}

/** Every `*.lock` directory under the agent dir and its refresh-lock dir (proper-lockfile's lock dirs). */
export async function leftoverLocks(agentDir: string): Promise<string[]> {
	const found: string[] = [];
	for (const dir of [agentDir, join(agentDir, "multi-claude-code-locks")]) {
		const names = await fs.readdir(dir).catch(() => [] as string[]);
		for (const name of names) if (name.endsWith(".lock")) found.push(join(dir, name));
	}
	return found.sort();
}

/**
 * A killed holder never refreshes its lock's mtime again, so after the stale timeout (10 s) any contender takes
 * it over; moving the mtime into the past stands in for that wait (one test waits for real instead).
 */
export async function ageLocks(locks: readonly string[]): Promise<void> {
	const past = new Date(Date.now() - 120_000);
	for (const lock of locks) await fs.utimes(lock, past, past).catch(() => {});
}

export function sha256(text: string): string {
	return createHash("sha256").update(text).digest("hex");
}
