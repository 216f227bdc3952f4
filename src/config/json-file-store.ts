import { ConfigError } from "./errors.ts";
import { withFileLock } from "./file-lock.ts";
import { readPrivateFile, statPrivateFile, writePrivateFileAtomic } from "./private-file.ts";

export interface JsonFileStoreOptions<T> {
	file: string;
	/** Validates parsed JSON; throws a ConfigError naming the file and field on anything it refuses. */
	parse: (raw: unknown, file: string) => T;
	/** What a missing file means. */
	empty: () => T;
}

export type Change<T, R> = (current: T) => { next?: T; result: R } | Promise<{ next?: T; result: R }>;

/**
 * A small JSON file owned by this extension: validated on every read and before every write, replaced
 * atomically with mode 0600, and changed only read-modify-write under a cross-process lock so two pi sessions
 * never lose each other's update. A file it cannot parse is reported and never overwritten.
 */
export class JsonFileStore<T> {
	private cached: { version: string; value: T } | undefined;

	constructor(private readonly options: JsonFileStoreOptions<T>) {}

	get file(): string {
		return this.options.file;
	}

	/**
	 * The current content, read-only (deeply frozen: change it through `update`). An unchanged file (same inode,
	 * size and times) is neither read nor parsed again, and not copied: this runs on every request.
	 */
	async read(): Promise<Readonly<T>> {
		const stat = await statPrivateFile(this.file);
		if (!stat) return deepFreeze(this.options.empty());
		if (this.cached?.version === stat.version) return this.cached.value;
		const text = await readPrivateFile(this.file);
		if (text === undefined) return deepFreeze(this.options.empty());
		const value = deepFreeze(this.parseText(text));
		this.cached = { version: stat.version, value };
		return value;
	}

	async update<R>(change: Change<T, R>): Promise<R> {
		return withFileLock(this.file, async () => {
			const text = await readPrivateFile(this.file);
			const current = text === undefined ? this.options.empty() : this.parseText(text);
			const { next, result } = await change(current);
			if (next !== undefined) {
				// Validate what is about to be written with the same rules as what is read.
				const checked = this.options.parse(JSON.parse(JSON.stringify(next)), this.file);
				await writePrivateFileAtomic(this.file, `${JSON.stringify(checked, null, "\t")}\n`);
				this.cached = undefined;
			}
			return result;
		});
	}

	private parseText(text: string): T {
		let raw: unknown;
		let protoKey = false;
		try {
			// A "__proto__" key is silently dropped by validation and then by the next write: refuse it instead.
			raw = JSON.parse(text, (key, value: unknown) => {
				if (key === "__proto__") protoKey = true;
				return value;
			});
		} catch (error) {
			throw new ConfigError(
				this.file,
				"invalid",
				`${this.file} is not valid JSON${syntaxErrorLocation(error, text)}. It was left untouched: fix it or move it ` +
					"away.",
			);
		}
		if (protoKey) {
			throw new ConfigError(
				this.file,
				"invalid",
				`${this.file} has a "__proto__" key, which this extension never writes. It was left untouched.`,
			);
		}
		return this.options.parse(raw, this.file);
	}
}

/**
 * Where a JSON syntax error is, as "line:column", never what is there: V8's own message quotes the text around
 * the error, which in a broken old-format file can be a token.
 */
function syntaxErrorLocation(error: unknown, text: string): string {
	const position = error instanceof SyntaxError ? /position (\d+)/.exec(error.message) : null;
	if (!position) return "";
	const offset = Math.min(Number(position[1]), text.length);
	const before = text.slice(0, offset).split("\n");
	return ` (at line ${before.length}, column ${before[before.length - 1]!.length + 1})`;
}

function deepFreeze<V>(value: V): V {
	if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
		Object.freeze(value);
		for (const child of Object.values(value)) deepFreeze(child);
	}
	return value;
}
