/**
 * The live sessions of this process by pi's session id. pi 0.73 registers a provider's stream for the whole
 * process (the last session to register wins), so a request finds its own session through the session id its
 * options carry, not through whichever closure pi happened to call. Filled synchronously at session_start, before
 * the session's runtime has loaded (a promise of it), so even a request sent at once finds its own session. On
 * globalThis: pi 0.73 evaluates the extension's modules afresh per session. Import-light: index.ts uses it.
 */
const REGISTRY_KEY = Symbol.for("pi-multi-claude-code.sessions");

type Registry<T> = Map<string, Promise<T>>;

function registry<T>(): Registry<T> {
	const holder = globalThis as unknown as Record<symbol, Registry<T> | undefined>;
	let sessions = holder[REGISTRY_KEY];
	if (!sessions) {
		sessions = new Map();
		holder[REGISTRY_KEY] = sessions;
	}
	return sessions;
}

/** Records the session `id`; `session` resolves to what the stream needs of it once its runtime has loaded. */
export function registerSession<T>(id: string, session: Promise<T>): void {
	session.catch(() => {});
	registry<T>().set(id, session);
}

/** Forgets session `id`, unless another registration (a reload of the same session) replaced this one. */
export function unregisterSession<T>(id: string, session: Promise<T>): void {
	const sessions = registry<T>();
	if (sessions.get(id) === session) sessions.delete(id);
}

/** The session `id` of this process, if it is live; `undefined` when unknown or when its runtime failed to load. */
export async function registeredSession<T>(id: unknown): Promise<T | undefined> {
	if (typeof id !== "string") return undefined;
	return registry<T>()
		.get(id)
		?.catch(() => undefined);
}
