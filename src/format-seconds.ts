/** "1.5 s", "20 s": whole seconds only from 10 s up, so a short bound never reads as "0 s". */
export function formatSeconds(ms: number): string {
	return ms < 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 1000)} s`;
}
