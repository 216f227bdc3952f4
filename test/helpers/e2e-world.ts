import { afterAll, afterEach, beforeAll, beforeEach } from "vitest";
import { clearCooldowns } from "./accounts.ts";
import { createE2eWorld, type E2eWorld } from "./pi-harness.ts";

/**
 * The hooks every end-to-end file needs: one world (fake servers, isolated HOME and agent dir, keychain service)
 * for the file; before each test no cooldown and no recorded request is left over; after each test its pi
 * sessions are disposed. Returns the world, available once `beforeAll` has run.
 */
export function useE2eWorld(resetEach: (world: E2eWorld) => void | Promise<void> = () => {}): () => E2eWorld {
	let world: E2eWorld | undefined;
	beforeAll(async () => {
		world = await createE2eWorld();
	});
	beforeEach(async () => {
		await clearCooldowns();
		world!.api.clearRequests();
		await resetEach(world!);
	});
	afterEach(async () => {
		await world?.disposeSessions();
	});
	afterAll(async () => {
		await world?.close();
	});
	return () => world!;
}
