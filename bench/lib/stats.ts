/** Small, dependency-free statistics for the benchmark: medians, percentiles and summaries in milliseconds. */

export interface Summary {
	n: number;
	median: number;
	p90: number;
	p95: number;
	min: number;
	max: number;
	mean: number;
}

/** Linear-interpolated percentile (q in 0..1) of unsorted samples; NaN when there are none. */
export function percentile(samples: readonly number[], q: number): number {
	if (samples.length === 0) return Number.NaN;
	const sorted = [...samples].sort((a, b) => a - b);
	const position = (sorted.length - 1) * q;
	const lower = Math.floor(position);
	const upper = Math.ceil(position);
	const low = sorted[lower] as number;
	const high = sorted[upper] as number;
	return low + (high - low) * (position - lower);
}

export function median(samples: readonly number[]): number {
	return percentile(samples, 0.5);
}

export function summarize(samples: readonly number[]): Summary {
	const n = samples.length;
	return {
		n,
		median: round(median(samples)),
		p90: round(percentile(samples, 0.9)),
		p95: round(percentile(samples, 0.95)),
		min: round(n ? Math.min(...samples) : Number.NaN),
		max: round(n ? Math.max(...samples) : Number.NaN),
		mean: round(n ? samples.reduce((sum, x) => sum + x, 0) / n : Number.NaN),
	};
}

/** Rounds to 3 decimals (µs resolution for millisecond figures). */
export function round(value: number, digits = 3): number {
	if (!Number.isFinite(value)) return value;
	const factor = 10 ** digits;
	return Math.round(value * factor) / factor;
}

/** Fisher–Yates shuffle (a copy). */
export function shuffled<T>(items: readonly T[]): T[] {
	const out = [...items];
	for (let i = out.length - 1; i > 0; i--) {
		const j = Math.floor(Math.random() * (i + 1));
		[out[i], out[j]] = [out[j] as T, out[i] as T];
	}
	return out;
}

/** Yields to the event loop (lets sockets close and timers fire between samples). */
export function settle(ms = 0): Promise<void> {
	return new Promise((resolve) => (ms > 0 ? setTimeout(resolve, ms) : setImmediate(resolve)));
}
