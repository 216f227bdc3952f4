import { promises as fs } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { StateLoginMarks } from "../src/broker/account-files.ts";
import { createStateStore } from "../src/config/stores.ts";
import { activeCooldowns } from "../src/provider/fallback-policy.ts";
import { preemptionUntil } from "../src/provider/usage.ts";

let dir: string;

beforeEach(async () => {
	dir = await fs.mkdtemp(join(tmpdir(), "pi-mcc-state-labels-"));
});

afterEach(async () => {
	await fs.rm(dir, { recursive: true, force: true });
});

describe("labels named like Object.prototype members", () => {
	for (const label of ["toString", "constructor", "valueOf", "hasOwnProperty"]) {
		it(`an account called ${label} is neither marked for login nor cooling down until something says so`, async () => {
			const store = createStateStore(join(dir, "state.json"));
			const marks = new StateLoginMarks(store);
			await store.update((state) => ({ next: state, result: undefined }));
			expect(await marks.isMarked(label)).toBe(false);
			const state = await store.read();
			expect(activeCooldowns(state, Date.now()).until(label)).toBeUndefined();
			expect(preemptionUntil(0.5, state.usage[label], Date.now())).toBeUndefined();
			await marks.mark(label, "test");
			expect(await marks.isMarked(label)).toBe(true);
			await marks.clear(label);
			expect(await marks.isMarked(label)).toBe(false);
		});
	}
});
