/**
 * Two fakes on 127.0.0.1 that answer whatever a test tells them to, byte for byte: a token endpoint and a
 * Messages API. Each request is answered by a function of the request (its body and bearer token), so a fuzz
 * test can send random, truncated or hostile answers, including ones that quote the request's secrets.
 */

import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { messageStart } from "../../helpers/fake-anthropic-api.ts";
import { readBody, serveOnLoopback } from "../../helpers/loopback.ts";

export interface RawRequest {
	path: string;
	body: string;
	/** The bearer token or x-api-key the request carried. */
	token: string | undefined;
}

export interface RawAnswer {
	status: number;
	headers?: Record<string, string>;
	/** Body chunks, written in order (with `gapMs` between them). */
	chunks: Array<string | Buffer>;
	gapMs?: number;
	/** After the chunks: end the response (default), destroy the socket, or leave it open until close(). */
	finish?: "end" | "destroy" | "hang";
}

export interface RawServer {
	url: string;
	baseUrl: string;
	requests: RawRequest[];
	answerWith(answer: (request: RawRequest) => RawAnswer): void;
	close(): Promise<void>;
}

export async function startRawServer(path: string): Promise<RawServer> {
	const requests: RawRequest[] = [];
	let answer: (request: RawRequest) => RawAnswer = () => ({ status: 404, chunks: [] });
	const respond = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
		const body = await readBody(req);
		const auth = req.headers.authorization;
		const bearer = typeof auth === "string" && /^Bearer /i.test(auth) ? auth.slice(7).trim() : undefined;
		const apiKey = typeof req.headers["x-api-key"] === "string" ? req.headers["x-api-key"] : undefined;
		const request = { path: (req.url ?? "/").split("?")[0] ?? "/", body, token: bearer ?? apiKey };
		requests.push(request);
		const planned = answer(request);
		res.writeHead(planned.status, planned.headers ?? {});
		res.flushHeaders();
		for (const chunk of planned.chunks) {
			if (res.destroyed) return;
			res.write(chunk);
			if (planned.gapMs) await new Promise((resolve) => setTimeout(resolve, planned.gapMs));
		}
		if (planned.finish === "destroy") res.socket?.destroy();
		else if (planned.finish !== "hang") res.end();
	};
	const server = createServer((req, res) => {
		respond(req, res).catch(() => res.destroy());
	});
	const { port, close } = await serveOnLoopback(server);
	return {
		url: `http://127.0.0.1:${port}${path}`,
		baseUrl: `http://127.0.0.1:${port}`,
		requests,
		answerWith(next) {
			answer = next;
		},
		close,
	};
}

/** One SSE event as the Messages API frames it. */
export function sseEvent(event: string, data: unknown): string {
	return `event: ${event}\ndata: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`;
}

/** A complete, valid streamed answer saying `text`. */
export function validStream(text: string, model = "claude-sonnet-4-5"): string[] {
	return [
		sseEvent("message_start", messageStart(model)),
		sseEvent("content_block_start", {
			type: "content_block_start",
			index: 0,
			content_block: { type: "text", text: "" },
		}),
		sseEvent("content_block_delta", { type: "content_block_delta", index: 0, delta: { type: "text_delta", text } }),
		sseEvent("content_block_stop", { type: "content_block_stop", index: 0 }),
		sseEvent("message_delta", {
			type: "message_delta",
			delta: { stop_reason: "end_turn", stop_sequence: null },
			usage: { output_tokens: 2 },
		}),
		sseEvent("message_stop", { type: "message_stop" }),
	];
}

export const SSE_HEADERS = { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache" };
