/**
 * What the config and state stores do with what they wrote themselves (src/config/stores.ts over
 * src/fs/private-file.ts), on real files in a temp dir: their own write counts as read, so the request after a
 * write does not read the file back; anything put in its place afterwards is read. The state file's writes are
 * not flushed to the disk, so an empty file (what a power cut can leave) reads as no state and is replaced.
 */
import { existsSync, promises as fs, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { emptyState, type SharedState } from "../src/config/schema.ts";
import { ConfigError, createStateStore, JsonFileStore, parseSharedState } from "../src/config/stores.ts";
import { writePrivateFileAtomic } from "../src/fs/private-file.ts";

let dir: string;
let file: string;

beforeEach(async () => {
	dir = await fs.mkdtemp(join(tmpdir(), "pi-mcc-store-writes-"));
	file = join(dir, "multi-claude-code-state.json");
});

afterEach(async () => {
	await fs.rm(dir, { recursive: true, force: true });
});

/** A state store that counts how often it parses (every read of the file's text is parsed). */
function countingStore(): { store: JsonFileStore<SharedState>; parses: () => number } {
	let parses = 0;
	const store = new JsonFileStore<SharedState>({
		file,
		parse: (raw, name) => {
			parses++;
			return parseSharedState(raw, name);
		},
		empty: emptyState,
		durable: false,
	});
	return { store, parses: () => parses };
}

const coolDown = (label: string, until: number) => (state: SharedState) => {
	state.cooldowns[label] = { until, reason: "rate_limit", setAt: 1 };
	return { next: state, result: undefined };
};

describe("what a store wrote itself", () => {
	it("counts as read: the read after its own update parses nothing again, and equals what a fresh store reads", async () => {
		const { store, parses } = countingStore();
		await store.update(coolDown("work", 5_000));
		const afterWrite = parses();
		const value = await store.read();
		expect(parses()).toBe(afterWrite);
		expect(value.cooldowns.work?.until).toBe(5_000);
		expect(value).toEqual(await createStateStore(file).read());
		expect(Object.isFrozen(value.cooldowns.work)).toBe(true);
	});

	it("is not mistaken for what another writer put in its place afterwards: that is read", async () => {
		const { store } = countingStore();
		await store.update(coolDown("work", 5_000));
		// Another pi process (its own store) writes next, then someone replaces the file by hand.
		await createStateStore(file).update(coolDown("home", 7_000));
		expect(Object.keys((await store.read()).cooldowns).sort()).toEqual(["home", "work"]);
		await writePrivateFileAtomic(file, `${JSON.stringify({ ...emptyState(), cooldowns: {} })}\n`);
		expect((await store.read()).cooldowns).toEqual({});
	});
});

describe("an update", () => {
	it("starts from what another writer put there since this store last read, never from what it remembers", async () => {
		const { store } = countingStore();
		await store.update(coolDown("work", 5_000));
		await createStateStore(file).update(coolDown("home", 7_000));
		await store.update(coolDown("side", 8_000));
		expect(Object.keys((await createStateStore(file).read()).cooldowns).sort()).toEqual(["home", "side", "work"]);
	});

	it("tells its caller once every reader sees the new content, before it releases the lock", async () => {
		const store = createStateStore(file);
		let seen: { content: string; locked: boolean } | undefined;
		await store.update(coolDown("work", 5_000), {
			onWritten: () => {
				seen = { content: readFileSync(file, "utf8"), locked: existsSync(`${file}.lock`) };
			},
		});
		expect(seen?.locked).toBe(true);
		expect(JSON.parse(seen?.content ?? "{}").cooldowns.work.until).toBe(5_000);
		expect(existsSync(`${file}.lock`)).toBe(false);
	});
});

describe("the shared state file after a power cut (its writes are not flushed to the disk)", () => {
	it("reads an empty file as no state, and the next write replaces it", async () => {
		await fs.writeFile(file, "", { mode: 0o600 });
		const store = createStateStore(file);
		expect(await store.read()).toEqual(emptyState());
		await store.update(coolDown("work", 9_000));
		expect((await createStateStore(file).read()).cooldowns.work?.until).toBe(9_000);
	});

	it("leaves a non-empty file it cannot parse untouched, and refuses to write over it", async () => {
		const torn = '{"version":1,"cooldowns":{"wo';
		await fs.writeFile(file, torn, { mode: 0o600 });
		const store = createStateStore(file);
		await expect(store.read()).rejects.toBeInstanceOf(ConfigError);
		await expect(store.update(coolDown("work", 9_000))).rejects.toBeInstanceOf(ConfigError);
		expect(await fs.readFile(file, "utf8")).toBe(torn);
	});
});
