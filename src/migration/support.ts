/**
 * What every part of pi-mcc-migrate shares: its error, its output, the test hook that pauses it at a step, the
 * notice before waiting for a held lock, quiet JSON parsing, and the clean-up of temp files a killed run left.
 */
import { promises as fs } from "node:fs";
import { dirname, join } from "node:path";
import { removeStaleTempFiles as removeStaleTemps, staleTempFiles as staleTempNames } from "../fs/private-file.ts";
import { redactSecrets } from "../redact.ts";

/** Exit code for a command line the script cannot act on (unknown flag, bad label argument). */
export const USAGE_EXIT_CODE = 2;

export const UNCHANGED = "Nothing was changed.";

/**
 * The migration stopped. The message says what was (not) changed and what to do next; it is built from labels,
 * paths and field names only, never from a token.
 */
export class MigrationError extends Error {
	override readonly name: string = "MigrationError";
	constructor(
		message: string,
		readonly exitCode = 1,
	) {
		super(message);
	}
}

/** A step failed after some tokens were already in the keychain: the caller says which, so none seems lost. */
export class PartialStoreError extends MigrationError {
	override readonly name: string = "PartialStoreError";
	constructor(
		message: string,
		readonly inKeychain: readonly string[],
	) {
		super(message);
	}
}

/**
 * Everything the migration prints goes through here. Messages are built without tokens; as a second line of
 * defence, every token the run has read is registered and cut out of any text before it reaches the terminal.
 */
export class Output {
	private readonly known = new Set<string>();

	constructor(
		private readonly stdout: (text: string) => void = (text) => process.stdout.write(text),
		private readonly stderr: (text: string) => void = (text) => process.stderr.write(text),
	) {}

	protect(secrets: Iterable<string>): void {
		for (const secret of secrets) if (secret) this.known.add(secret);
	}

	info(text: string): void {
		this.stdout(`${this.clean(text)}\n`);
	}

	error(text: string): void {
		this.stderr(`${this.clean(text)}\n`);
	}

	private clean(text: string): string {
		return redactSecrets(text, [...this.known]);
	}
}

/** Waits at a named step when the crash-safety tests asked for it; otherwise returns at once. */
export type Pause = (step: string) => Promise<void>;

export const PAUSE_ENV = "PI_MCC_MIGRATE_PAUSE_AT";
export const PAUSE_MARKER = "pi-mcc-migrate: paused at";
const MAX_PAUSE_MS = 30_000;

/**
 * Test hook (settings.migratePauseAt, from PI_MCC_MIGRATE_PAUSE_AT=<step>): at that step the script announces
 * itself on stderr and waits for a line on stdin (or at most 30 s), so a test can SIGKILL it, or change the
 * world and resume it, at an exact point.
 */
export function pauseAt(pausedStep: string | undefined): Pause {
	return async (step) => {
		if (pausedStep !== step) return;
		process.stderr.write(`${PAUSE_MARKER} ${step}\n`);
		await new Promise<void>((resolve) => {
			const done = (): void => {
				clearTimeout(timer);
				process.stdin.off("data", done);
				process.stdin.off("end", done);
				process.stdin.pause();
				resolve();
			};
			const timer = setTimeout(done, MAX_PAUSE_MS);
			process.stdin.on("data", done);
			process.stdin.on("end", done);
			process.stdin.resume();
		});
	};
}

/**
 * Says so when a lock is already held before waiting for it: a run killed earlier leaves its lock behind, and
 * waiting silently for it to go stale would look like a hang.
 */
export async function noticeHeldLock(target: string, staleMs: number, out: Output): Promise<void> {
	if (!(await exists(`${target}.lock`))) return;
	out.info(
		`Waiting for ${target}.lock: another process holds it, or a run that was killed left it behind (then it ` +
			`is taken over after ${staleMs / 1000} s).`,
	);
}

/**
 * JSON.parse's SyntaxError quotes the text around the error, which here can be a token: only the fact that the
 * file is not JSON is reported.
 */
export function parseJsonQuietly(text: string, file: string, refuseProtoKey = false): unknown {
	let protoKey = false;
	let value: unknown;
	try {
		value = JSON.parse(text, (key, child: unknown) => {
			if (key === "__proto__") protoKey = true;
			return child;
		});
	} catch {
		throw new MigrationError(`${file} is not valid JSON. Fix it (or move it away) and run again. ${UNCHANGED}`);
	}
	// Copying such a key (as validation does) would set a prototype instead and drop the field silently.
	if (protoKey && refuseProtoKey) {
		throw new MigrationError(
			`${file} has a "__proto__" key, which no multi-claude-code version writes. ${UNCHANGED}`,
		);
	}
	return value;
}

/**
 * The temp files an atomic rewrite of `file` left behind when its process was killed, as paths: the private-file
 * writer's own rule (its naming, regular files of this user, whose writer is gone), one of auth.json holds copies
 * of other providers' tokens.
 */
export async function staleTempFiles(file: string): Promise<string[]> {
	return (await staleTempNames(file)).map((name) => join(dirname(file), name));
}

/** Removes the stale temp files of each file (see staleTempFiles) and says which. */
export async function removeStaleTempFiles(files: readonly string[], out: Output): Promise<void> {
	for (const file of files) {
		for (const name of await removeStaleTemps(file)) {
			const temp = join(dirname(file), name);
			out.info(`Removed ${temp}, a temp file an interrupted run left behind (a partial copy of ${file}).`);
		}
	}
}

function exists(path: string): Promise<boolean> {
	return fs.stat(path).then(
		() => true,
		() => false,
	);
}
