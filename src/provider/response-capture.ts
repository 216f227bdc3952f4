/**
 * Status and headers of the HTTP response behind one delegated request. pi-ai drops the headers of failed
 * requests (the Anthropic SDK throws on a 429 before pi-ai's onResponse hook runs, on both pi lines), yet
 * retry-after and the rate-limit reset decide the cooldown, and the usage figures ride on every response.
 * pi-ai 1.x takes a fetch per request: the capture is then a wrapper of the request's own fetch. pi-ai 0.73 does
 * not, so there a process-wide fetch wrapper records the requests that carry this provider's marker header.
 * Either way the capture also keeps a request with a token from following a redirect (the fetch default would
 * resend it, headers and all, wherever the answer points): a 3xx is answered as it is and recorded.
 */
import { randomUUID } from "node:crypto";
import { isRedirect, redirectText } from "../oauth/token-endpoint.ts";

export interface CapturedResponse {
	status?: number;
	headers?: Record<string, string>;
	/** Told as each response head arrives, before pi-ai reads the body (a 429 can be acted on at once). */
	onHead?: () => void;
	/** "the Messages API at … answered with a redirect (HTTP 307 to …)": set when one was refused. */
	redirect?: string;
}

type Fetch = typeof globalThis.fetch;

/** A fetch that records into `record` what the fetch it wraps answered (the last answer wins, as a resend would). */
export function recordingFetch(record: CapturedResponse, underlying?: Fetch): Fetch {
	return async (input, init) => {
		const response = await (underlying ?? globalThis.fetch)(input, { ...init, redirect: "manual" });
		capture(record, response);
		return response;
	};
}

function capture(record: CapturedResponse, response: Response): void {
	record.status = response.status;
	if (isRedirect(response.status)) record.redirect = redirectText(`the Messages API${at(response.url)}`, response);
	const headers: Record<string, string> = {};
	response.headers.forEach((value, name) => {
		headers[name.toLowerCase()] = value;
	});
	record.headers = headers;
	try {
		record.onHead?.();
	} catch {
		// The request's own reading of the response goes on regardless.
	}
}

/** " at https://host:port" for a response's URL (its origin only: no user info, path or query), else "". */
function at(url: string): string {
	try {
		return ` at ${new URL(url).origin}`;
	} catch {
		return "";
	}
}

/**
 * pi-ai 0.73 only: the request header that marks this provider's own requests for the process-wide fetch wrapper.
 * The wrapper takes it off again before the request leaves: Anthropic never sees it.
 */
export const CAPTURE_HEADER = "x-multi-claude-code-capture";

interface CaptureGlobal {
	/** The records of this provider's requests in flight, by the id their marker header carries. */
	records: Map<string, CapturedResponse>;
}

// pi 0.73 loads extensions with a fresh module cache per session and reload: the records and the one fetch wrapper
// live on globalThis under a private symbol, so a reload neither wraps fetch twice nor loses track of the wrapper.
const KEY = Symbol.for("pi-multi-claude-code.response-capture");

function captureGlobal(): CaptureGlobal {
	const holder = globalThis as unknown as Record<symbol, CaptureGlobal | undefined>;
	let existing = holder[KEY];
	if (!existing) {
		const records = new Map<string, CapturedResponse>();
		const original = globalThis.fetch;
		// For every other fetch in the process (no marker) this is a plain pass-through: one header lookup.
		globalThis.fetch = async function capturingFetch(input, init) {
			const record = takeMarker(init, records);
			const response = await original(input, record ? { ...init, redirect: "manual" } : init);
			if (record) capture(record, response);
			return response;
		};
		existing = { records };
		holder[KEY] = existing;
	}
	return existing;
}

/**
 * The record a request's marker names, with the marker removed from the request's headers in whatever form they
 * come (a Headers object, pairs, a plain object): it never leaves the process, even when its record is gone.
 */
function takeMarker(
	init: RequestInit | undefined,
	records: Map<string, CapturedResponse>,
): CapturedResponse | undefined {
	const headers = init?.headers;
	if (!headers) return undefined;
	let id: string | null | undefined;
	if (headers instanceof Headers) {
		id = headers.get(CAPTURE_HEADER);
		if (id !== null) headers.delete(CAPTURE_HEADER);
	} else if (Array.isArray(headers)) {
		const index = headers.findIndex(([name]) => name?.toLowerCase() === CAPTURE_HEADER);
		if (index !== -1) id = headers.splice(index, 1)[0]?.[1];
	} else {
		const plain = headers as Record<string, string>;
		const name = Object.keys(plain).find((key) => key.toLowerCase() === CAPTURE_HEADER);
		if (name !== undefined) {
			id = plain[name];
			delete plain[name];
		}
	}
	return id ? records.get(id) : undefined;
}

/**
 * pi-ai 0.73 (whose Anthropic client takes no fetch): the headers that make the requests of one delegated call
 * record into `record`, through the process-wide fetch wrapper; `release` when the call is over. No
 * AsyncLocalStorage: once used, it slows every promise of the process (~0.15 ms per request of any provider).
 */
export function markedCapture(record: CapturedResponse): { headers: Record<string, string>; release(): void } {
	const { records } = captureGlobal();
	const id = randomUUID();
	records.set(id, record);
	return { headers: { [CAPTURE_HEADER]: id }, release: () => records.delete(id) };
}
