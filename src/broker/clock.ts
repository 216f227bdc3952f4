/** Time as the broker sees it; a test swaps it to make tokens expire without waiting. */
export interface Clock {
	now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };
