/**
 * A small seeded PRNG (mulberry32), so a fuzz or fault run can be repeated exactly from its printed seed.
 */
export interface Prng {
	readonly seed: number;
	/** A float in [0, 1). */
	next(): number;
	/** An integer in [min, max] (both included). */
	int(min: number, max: number): number;
	float(min: number, max: number): number;
	chance(probability: number): boolean;
	pick<T>(items: readonly T[]): T;
	bytes(length: number): Buffer;
	/** A string of `length` characters drawn from `alphabet`. */
	string(length: number, alphabet: string): string;
}

export function createPrng(seed: number): Prng {
	let state = seed >>> 0;
	const next = (): number => {
		state = (state + 0x6d2b79f5) >>> 0;
		let t = state;
		t = Math.imul(t ^ (t >>> 15), t | 1);
		t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
		return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
	};
	const int = (min: number, max: number): number => min + Math.floor(next() * (max - min + 1));
	return {
		seed,
		next,
		int,
		float: (min, max) => min + next() * (max - min),
		chance: (probability) => next() < probability,
		pick<T>(items: readonly T[]): T {
			if (items.length === 0) throw new Error("pick from nothing");
			return items[int(0, items.length - 1)] as T;
		},
		bytes(length) {
			const buffer = Buffer.alloc(length);
			for (let i = 0; i < length; i++) buffer[i] = int(0, 255);
			return buffer;
		},
		string(length, alphabet) {
			const chars = Array.from(alphabet);
			let out = "";
			for (let i = 0; i < length; i++) out += chars[int(0, chars.length - 1)];
			return out;
		},
	};
}

/** The seed of this run: PI_MCC_FUZZ_SEED when set (to repeat a run), else a fresh one. */
export function seedFromEnv(name = "PI_MCC_FUZZ_SEED"): number {
	const fixed = Number(process.env[name]);
	return Number.isInteger(fixed) && fixed > 0 ? fixed : 1 + Math.floor(Math.random() * 2_147_483_646);
}
