/**
 * Status and headers of the HTTP response behind one delegated request. pi-ai drops the headers of failed
 * requests (the Anthropic SDK throws on a 429 before pi-ai's onResponse hook runs, on both pi lines), yet
 * retry-after and the rate-limit reset decide the cooldown, and the usage figures ride on every response.
 * pi-ai 1.x takes a fetch per request: the capture is then a wrapper of the request's own fetch. pi-ai 0.73 does
 * not, so there a process-wide fetch wrapper records, only inside this provider's requests.
 */
import { AsyncLocalStorage } from "node:async_hooks";

export interface CapturedResponse {
	status?: number;
	headers?: Record<string, string>;
	/** Told as each response head arrives, before pi-ai reads the body (a 429 can be acted on at once). */
	onHead?: () => void;
}

type Fetch = typeof globalThis.fetch;

/** A fetch that records into `record` what the fetch it wraps answered (the last answer wins, as a resend would). */
export function recordingFetch(record: CapturedResponse, underlying?: Fetch): Fetch {
	return async (input, init) => {
		const response = await (underlying ?? globalThis.fetch)(input, init);
		capture(record, response);
		return response;
	};
}

function capture(record: CapturedResponse, response: Response): void {
	record.status = response.status;
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

interface CaptureGlobal {
	storage: AsyncLocalStorage<CapturedResponse>;
}

// pi 0.73 loads extensions with a fresh module cache per session and reload: the storage and the one fetch wrapper
// live on globalThis under a private symbol, so a reload neither wraps fetch twice nor loses track of the wrapper.
const KEY = Symbol.for("pi-multi-claude-code.response-capture");

function captureGlobal(): CaptureGlobal {
	const holder = globalThis as unknown as Record<symbol, CaptureGlobal | undefined>;
	let existing = holder[KEY];
	if (!existing) {
		const storage = new AsyncLocalStorage<CapturedResponse>();
		const original = globalThis.fetch;
		// For every other fetch in the process (no record in scope) this is a plain pass-through.
		globalThis.fetch = async function capturingFetch(input, init) {
			const record = storage.getStore();
			const response = await original(input, init);
			if (record) capture(record, response);
			return response;
		};
		existing = { storage };
		holder[KEY] = existing;
	}
	return existing;
}

/** pi-ai 0.73: runs `fn` so that the fetches it starts (including async continuations) record into `record`. */
export function withResponseCapture<T>(record: CapturedResponse, fn: () => T): T {
	return captureGlobal().storage.run(record, fn);
}
