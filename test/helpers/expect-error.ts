import { expect } from "vitest";

/** The error `promise` rejects with, checked to be an instance of `type`; fails the test when it resolves. */
export async function rejection<E extends Error>(
	promise: Promise<unknown>,
	type: abstract new (...args: never[]) => E,
): Promise<E> {
	const outcome = await promise.then(
		() => ({ resolved: true as const }),
		(error: unknown) => ({ resolved: false as const, error }),
	);
	if (outcome.resolved) throw new Error(`expected a ${type.name}, but the call succeeded`);
	expect(outcome.error).toBeInstanceOf(type);
	return outcome.error as E;
}
