/**
 * Marks when a prompt's HTTP request leaves and when its response arrives, by wrapping globalThis.fetch before
 * the extension (or anything else) wraps it. Both arms go through the same wrapper, so it costs them alike; it
 * lets the added time be split into "before the request is sent" (config, state, keychain) and "after the
 * response arrived" (forwarding the stream, recording usage).
 */
export interface FetchMarks {
	calls: number;
	/** performance.now() when the first fetch of the sample was called. */
	firstCall?: number;
	/** performance.now() when the last fetch of the sample resolved (response head received). */
	lastResponse?: number;
}

let current: FetchMarks | undefined;
let installed = false;

export function installFetchTiming(): void {
	if (installed) return;
	installed = true;
	const original = globalThis.fetch;
	globalThis.fetch = async function timedFetch(
		input: Parameters<typeof fetch>[0],
		init?: Parameters<typeof fetch>[1],
	) {
		const marks = current;
		if (marks) {
			marks.calls++;
			marks.firstCall ??= performance.now();
		}
		const response = await original(input, init);
		if (marks) marks.lastResponse = performance.now();
		return response;
	};
}

/** Starts collecting marks for one sample (replacing any earlier sample's). */
export function startMarks(): FetchMarks {
	current = { calls: 0 };
	return current;
}

export function stopMarks(): void {
	current = undefined;
}
