/**
 * The extension's two small JSON files: the config (labels, defaults, fallback chains) and the shared state
 * (cooldowns, usage figures, needs-login marks). Neither ever holds a secret; both are validated on every read
 * and before every write, replaced atomically 0600, and never overwritten while they cannot be parsed. Both
 * files' parsers and the one store class behind them stay together (a little over 300 lines): the parsers'
 * errors, the plaintext check and the store's read-modify-write are one contract, tested as one.
 */

import { FileLockError, withFileLock } from "../fs/file-lock.ts";
import {
	PrivateFileError,
	type PrivateFileStat,
	readPrivateFile,
	statPrivateFile,
	writePrivateFileAtomic,
} from "../fs/private-file.ts";
import {
	type AccountsConfig,
	configSchema,
	describeIssues,
	emptyConfig,
	emptyState,
	type SharedState,
	stateSchema,
	withLabelMaps,
} from "./schema.ts";

/**
 * A configuration or state file that cannot be used as it is. The message names the file and what is wrong,
 * and the file is never rewritten while it is in this state.
 */
export class ConfigError extends Error {
	override readonly name = "ConfigError";
	constructor(
		readonly file: string,
		readonly kind: "unreadable" | "invalid" | "legacy" | "unsafe" | "locked",
		message: string,
	) {
		super(message);
	}
}

/** The command that moves plaintext tokens into the keychain (the migration script's package bin). */
export const MIGRATE_COMMAND = "npx pi-mcc-migrate";

export function parseAccountsConfig(raw: unknown, file: string): AccountsConfig {
	const secrets = findPlaintextSecrets(raw);
	if (secrets.length > 0) {
		throw new ConfigError(
			file,
			"legacy",
			`${file} holds plaintext tokens (${secrets.slice(0, 3).join(", ")}${secrets.length > 3 ? ", …" : ""}), the ` +
				`old storage format. They are not used. Run \`${MIGRATE_COMMAND}\` to move them into the OS keychain ` +
				"(add --dry-run to see the plan first).",
		);
	}
	if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
		throw new ConfigError(file, "invalid", `${file} must hold a JSON object. It was left untouched.`);
	}
	if (!("version" in raw)) {
		throw new ConfigError(
			file,
			"invalid",
			`${file} has no "version" field, so it is not a multi-claude-code config this version understands. ` +
				"It was left untouched.",
		);
	}
	const result = configSchema.safeParse(raw);
	if (!result.success) {
		throw new ConfigError(
			file,
			"invalid",
			`${file} is not a valid multi-claude-code config: ${describeIssues(result.error)}. It was left untouched.`,
		);
	}
	return result.data;
}

export function createConfigStore(file: string): JsonFileStore<AccountsConfig> {
	return new JsonFileStore({ file, parse: parseAccountsConfig, empty: emptyConfig });
}

export function parseSharedState(raw: unknown, file: string): SharedState {
	if (findPlaintextSecrets(raw).length > 0) {
		throw new ConfigError(file, "unsafe", `${file} holds token-like values; it should never. Delete the file.`);
	}
	const result = stateSchema.safeParse(raw);
	if (!result.success) {
		throw new ConfigError(
			file,
			"invalid",
			`${file} is not a valid multi-claude-code state file: ${describeIssues(result.error)}. It only holds ` +
				"cooldowns and needs-login marks: delete it to reset them.",
		);
	}
	return withLabelMaps(result.data);
}

/**
 * The state file holds nothing secret and nothing whose loss costs more than a repeated 429 or refresh attempt, so
 * its writes are not flushed to the disk (an fsync costs about as much as the rest of the write): after a power
 * cut it may be empty, which reads as no state, and the next write replaces it.
 */
export function createStateStore(file: string): JsonFileStore<SharedState> {
	return new JsonFileStore({ file, parse: parseSharedState, empty: emptyState, durable: false });
}

export interface JsonFileStoreOptions<T> {
	file: string;
	/** Validates parsed JSON; throws a ConfigError naming the file and field on anything it refuses. */
	parse: (raw: unknown, file: string) => T;
	/** What a missing file means. */
	empty: () => T;
	/**
	 * Flush writes to the disk before they replace the file (default true). A store that does not also reads an
	 * empty file (what a power cut can leave of an unflushed write) as `empty()`, and replaces it at the next write.
	 */
	durable?: boolean;
}

export interface UpdateOptions {
	/** Told once the new content is in place, before the lock is released (not when nothing was written). */
	onWritten?: () => void;
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
	 * size and times) is neither read nor parsed again, and not copied: this runs on every request. What this store
	 * wrote itself counts as read, so the request after a write does not read it back either.
	 */
	read(): Promise<Readonly<T>> {
		// The common case (an unchanged file) in one synchronous lstat and no further hop.
		let stat: PrivateFileStat | undefined;
		try {
			stat = statPrivateFile(this.file);
		} catch (error) {
			return asConfigError(Promise.reject(error));
		}
		if (!stat) return Promise.resolve(deepFreeze(this.options.empty()));
		if (this.cached?.version === stat.version) return Promise.resolve(this.cached.value);
		return asConfigError(this.readChanged(stat));
	}

	/**
	 * Changes the content read-modify-write under the file's lock. `onWritten` is told as soon as the new content
	 * is in place (every reader sees it from then on), before the lock is released.
	 */
	async update<R>(change: Change<T, R>, options: UpdateOptions = {}): Promise<R> {
		return asConfigError(this.updateUnchecked(change, options));
	}

	private async readChanged(stat: PrivateFileStat): Promise<Readonly<T>> {
		const text = await readPrivateFile(this.file);
		if (text === undefined) return deepFreeze(this.options.empty());
		const value = deepFreeze(this.parseText(text));
		this.cached = { version: stat.version, value };
		return value;
	}

	private async updateUnchecked<R>(change: Change<T, R>, options: UpdateOptions): Promise<R> {
		return withFileLock(this.file, async () => {
			const { next, result } = await change(await this.currentUnderLock());
			if (next !== undefined) {
				// Validate what is about to be written with the same rules as what is read.
				const checked = this.options.parse(JSON.parse(JSON.stringify(next)), this.file);
				this.cached = undefined;
				const written = await writePrivateFileAtomic(this.file, `${JSON.stringify(checked, null, "\t")}\n`, {
					durable: this.options.durable ?? true,
					onReplaced: options.onWritten,
				});
				if (written) this.cached = { version: written.version, value: deepFreeze(checked) };
			}
			return result;
		});
	}

	/**
	 * A changeable copy of the content, under the lock. A file unchanged since this store last read or wrote it is
	 * not read again: the copy is made from what it holds, validated as a read would be.
	 */
	private async currentUnderLock(): Promise<T> {
		const stat = statPrivateFile(this.file);
		if (!stat) return this.options.empty();
		if (this.cached?.version === stat.version) {
			return this.options.parse(JSON.parse(JSON.stringify(this.cached.value)), this.file);
		}
		const text = await readPrivateFile(this.file);
		return text === undefined ? this.options.empty() : this.parseText(text);
	}

	private parseText(text: string): T {
		// All that a power cut can leave of an unflushed write: no state, not a broken file.
		if (this.options.durable === false && text.trim() === "") return this.options.empty();
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

/** A file or lock problem of a config or state file is a ConfigError too: callers handle one kind of error. */
async function asConfigError<T>(pending: Promise<T>): Promise<T> {
	try {
		return await pending;
	} catch (error) {
		if (error instanceof PrivateFileError) {
			throw new ConfigError(error.file, error.kind === "too_large" ? "invalid" : error.kind, error.message);
		}
		if (error instanceof FileLockError) throw new ConfigError(error.target, "locked", error.message);
		throw error;
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

/** Field names under which the original extension (or a hand edit) kept tokens in the JSON file. */
const SECRET_KEYS = new Set([
	"accesstoken",
	"refreshtoken",
	"access_token",
	"refresh_token",
	"access",
	"refresh",
	"token",
	"apikey",
	"api_key",
	"password",
	"secret",
]);

/**
 * Where a parsed JSON value holds something secret: a field named like a token, or any string that looks like
 * an Anthropic credential. Returns the JSON paths (never the values), bounded in depth and count.
 */
export function findPlaintextSecrets(value: unknown, path = "", depth = 0, found: string[] = []): string[] {
	if (found.length >= 20 || depth > 32) return found;
	if (typeof value === "string") {
		if (/sk-ant-[a-z]{2,4}\d{0,2}-/i.test(value)) found.push(path || "(top level)");
		return found;
	}
	if (Array.isArray(value)) {
		value.forEach((item, index) => {
			findPlaintextSecrets(item, `${path}[${index}]`, depth + 1, found);
		});
		return found;
	}
	if (value !== null && typeof value === "object") {
		for (const [key, child] of Object.entries(value)) {
			const childPath = path ? `${path}.${key}` : key;
			if (SECRET_KEYS.has(key.toLowerCase()) && child !== null && child !== "") found.push(childPath);
			else findPlaintextSecrets(child, childPath, depth + 1, found);
		}
	}
	return found;
}
