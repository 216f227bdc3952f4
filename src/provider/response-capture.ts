import { AsyncLocalStorage } from "node:async_hooks";

/** Status and headers of the HTTP response behind one delegated request. */
export interface CapturedResponse {
	status?: number;
	headers?: Record<string, string>;
}

interface CaptureGlobal {
	storage: AsyncLocalStorage<CapturedResponse>;
}

// pi loads extensions with a fresh module cache on every (re)load: the storage and the one fetch wrapper live on
// globalThis under a private symbol so a reload neither wraps fetch twice nor loses track of the wrapper.
const KEY = Symbol.for("pi-multi-claude-code.response-capture");

function captureGlobal(): CaptureGlobal {
	const holder = globalThis as unknown as Record<symbol, CaptureGlobal | undefined>;
	let existing = holder[KEY];
	if (!existing) {
		const storage = new AsyncLocalStorage<CapturedResponse>();
		const original = globalThis.fetch;
		// pi-ai drops the response headers of failed requests (the Anthropic SDK throws on a 429 before pi-ai's
		// onResponse hook runs), yet retry-after and the rate-limit reset decide the cooldown. The wrapper records
		// status and headers only inside this provider's own requests (an AsyncLocalStorage scope); for every
		// other fetch in the process it is a plain pass-through.
		globalThis.fetch = async function capturingFetch(input, init) {
			const record = storage.getStore();
			const response = await original(input, init);
			if (record) {
				record.status = response.status;
				const headers: Record<string, string> = {};
				response.headers.forEach((value, name) => {
					headers[name.toLowerCase()] = value;
				});
				record.headers = headers;
			}
			return response;
		};
		existing = { storage };
		holder[KEY] = existing;
	}
	return existing;
}

/** Runs `fn` so that the fetches it starts (including async continuations) record into `record`. */
export function withResponseCapture<T>(record: CapturedResponse, fn: () => T): T {
	return captureGlobal().storage.run(record, fn);
}
