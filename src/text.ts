/** Text helpers shared by every message this extension shows: error texts, untrusted text, durations. */

/** The message of anything thrown, for a person to read (never a stack, which could carry values). */
export function errorText(error: unknown): string {
	return error instanceof Error ? error.message : String(error);
}

/** Renders untrusted text for a message without letting control characters reach the terminal. */
export function printable(text: string, max = 64): string {
	const flat = Array.from(text)
		.map((ch) => (/[\p{Cc}\p{Cf}]/u.test(ch) ? "?" : ch))
		.join("");
	return flat.length > max ? `${flat.slice(0, max)}…` : flat;
}

/** "1.5 s", "20 s": whole seconds only from 10 s up, so a short bound never reads as "0 s". */
export function formatSeconds(ms: number): string {
	return ms < 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 1000)} s`;
}

/** "42 min", "3 h 5 min", "4 days": for cooldowns, token lifetimes and usage ages. */
export function formatDuration(ms: number): string {
	const minutes = Math.max(0, Math.round(ms / 60_000));
	if (minutes < 60) return `${minutes} min`;
	const hours = Math.floor(minutes / 60);
	return hours < 48 ? `${hours} h ${minutes % 60} min` : `${Math.round(hours / 24)} days`;
}
