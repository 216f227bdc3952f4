/**
 * The steps every move of token pairs into the keychain shares, whatever file they come from (the old config,
 * pi's auth.json): plan against the keychain, dry run, conflicts, the source's lock, store and verify, the
 * source's rewrite, and --rotate, which spends the refresh token every copy of the old file still holds.
 */
import { AccountError, type TokenBroker } from "../broker/token-broker.ts";
import { errorText } from "../text.ts";
import {
	type AccountPlan,
	type AccountTokens,
	keychainStatus,
	planAccounts,
	planLines,
	quoted,
	storeAccounts,
} from "./keychain-plan.ts";
import {
	MigrationError,
	noticeHeldLock,
	type Output,
	PartialStoreError,
	type Pause,
	removeStaleTempFiles,
	staleTempFiles,
	UNCHANGED,
} from "./support.ts";

/**
 * Revoking the grant at Anthropic, as its help centre documents it ("How do I log out of all active sessions?"):
 * the extension logs in with Claude Code's OAuth client, so its grants are Claude Code authorization tokens.
 */
const REVOKE_ADVICE =
	"revoke the grant at claude.ai (Settings → Claude Code lists the authorization tokens of Claude Code logins, " +
	"which this extension's are; the trash-can icon revokes one)";

export interface MoveOptions {
	broker: TokenBroker;
	/** e.g. `Secret Service keychain (service "pi-multi-claude-code")`. */
	keychain: string;
	replace: boolean;
	dryRun: boolean;
	/** Refresh each moved pair once right after the move, so the refresh token in copies of the file is spent. */
	rotate: boolean;
	out: Output;
	pause: Pause;
}

/** Where the tokens come from: the old config file or pi's auth.json. */
export interface TokenSource {
	/** The file holding the tokens; its lock is what the move holds. */
	file: string;
	withLock<T>(fn: () => Promise<T>): Promise<T>;
	lockStaleMs: number;
	/** Files the move replaces atomically: temp files a killed run left beside them are removed. */
	rewrites: readonly string[];
	/** Pause steps (tests): under the lock; every pair confirmed in the keychain; the files rewritten. */
	steps: { locked: string; verified: string; written: string };
	/** How to keep the keychain's login when it differs ("remove that account from the file"). */
	keepAdvice: string;
	/** This command as a person runs it again, e.g. `pi-mcc-migrate --file /x.json`. */
	command: string;
	/** Reads the file. `Done`: nothing (more) to move, and the source has said so. */
	read(): Promise<Done | PendingMove>;
}

export interface Done {
	done: true;
	/** The accounts whose copies --rotate spends when nothing is left to move (an earlier run moved them). */
	rotate: readonly string[];
}

export interface PendingMove {
	accounts: readonly AccountTokens[];
	/** The plan's heading, and what happens after the keychain writes (one line each). */
	heading: string;
	after: readonly string[];
	/** Shown by a dry run after the plan (the file's new content). */
	preview?: string;
	/** What a failed keychain write leaves unchanged ("X was not changed."). */
	untouched: string;
	/** Runs once every pair is confirmed in the keychain: rewrites the files, returns what was done. */
	commit(inKeychain: readonly string[]): Promise<string[]>;
}

/**
 * Moves the source's pairs into the keychain. The source's files change only after every pair is in the keychain
 * and read back, so a failure or a crash at any point leaves each token in the file, the keychain or both; a
 * re-run finishes the job. Returns the exit status.
 */
export async function moveTokens(source: TokenSource, options: MoveOptions): Promise<number> {
	const { out, pause } = options;
	// Read before taking the lock, so bad input and "nothing to do" leave no trace (not even a lock directory).
	const first = await source.read();
	if ("done" in first) return finishDone(first, source, options);
	protect(first, out);
	// Keychain reads only: an unreachable keychain or a conflict is reported before anything is locked or written.
	const preview = await planAccounts(options.broker, first.accounts, options.replace);
	if (options.dryRun) return dryRun(first, preview, source, options);
	stopOnConflicts(first, preview, source, options);
	await noticeHeldLock(source.file, source.lockStaleMs, out);
	const moved = await source.withLock(async () => {
		await pause(source.steps.locked);
		await removeStaleTempFiles(source.rewrites, out);
		// The authoritative read: another run may have finished while this one waited for the lock.
		const move = await source.read();
		if ("done" in move) return move;
		protect(move, out);
		const plans = await planAccounts(options.broker, move.accounts, options.replace);
		stopOnConflicts(move, plans, source, options);
		report(move, plans, source, options);
		const inKeychain = await storeOrExplain(plans, move, options);
		await pause(source.steps.verified);
		for (const line of await move.commit(inKeychain)) out.info(line);
		await pause(source.steps.written);
		return move;
	});
	if ("done" in moved) return finishDone(moved, source, options);
	const labels = moved.accounts.map((account) => account.label);
	if (options.rotate) return rotateAccounts(labels, source, options);
	out.info(
		`If ${source.file} was ever copied (backups, sync, snapshots), those copies still hold working tokens, and a ` +
			`new /mcc-login does not change that (it starts another grant). Spend their refresh tokens with ` +
			`\`${source.command} --rotate\`, or ${REVOKE_ADVICE}.`,
	);
	return 0;
}

async function finishDone(done: Done, source: TokenSource, options: MoveOptions): Promise<number> {
	if (options.dryRun) {
		for (const line of await tempLines(source)) options.out.info(line);
		if (options.rotate && done.rotate.length > 0) {
			options.out.info(`--rotate would use the refresh token of ${quoted(done.rotate)} once, now.`);
			options.out.info("Dry run: nothing was changed.");
		}
		return 0;
	}
	await removeStaleTempFiles(source.rewrites, options.out);
	return options.rotate && done.rotate.length > 0 ? rotateAccounts(done.rotate, source, options) : 0;
}

/**
 * One refresh per account through the broker (under its refresh lock, the new pair stored before it returns):
 * the refresh token that copies of the old file hold is then spent. A failure loses nothing — the move is done,
 * the keychain holds a whole pair — and the message says what to run.
 */
async function rotateAccounts(labels: readonly string[], source: TokenSource, options: MoveOptions): Promise<number> {
	const { out } = options;
	const failed: string[] = [];
	const copiesValid: string[] = [];
	for (const label of labels) {
		try {
			await options.broker.rotate(label);
		} catch (error) {
			out.error(`Rotating "${label}" failed: ${errorText(error)}`);
			failed.push(label);
			// A refused refresh token is worthless in every copy too: that account only needs a new login.
			if (!(error instanceof AccountError && error.kind === "needs_login")) copiesValid.push(label);
		}
	}
	const rotated = labels.filter((label) => !failed.includes(label));
	if (rotated.length > 0) {
		out.info(
			`Rotated ${quoted(rotated)}: each refresh token was used once and the new pair stored in the keychain, so ` +
				`the one in copies of ${source.file} is spent. The access token there may work until it expires ` +
				`(hours); to end that too, ${REVOKE_ADVICE}.`,
		);
	}
	if (failed.length === 0) return 0;
	out.error(
		`The move itself is complete and stays so: ${source.file} holds no token.` +
			(copiesValid.length === 0
				? ""
				: ` Copies of ${source.file} made before the move may still hold a working refresh token for ` +
					`${quoted(copiesValid)}: run \`${source.command} --rotate\` again once the problem is fixed, or ` +
					`${REVOKE_ADVICE}.`),
	);
	return 1;
}

function protect(move: PendingMove, out: Output): void {
	out.protect(move.accounts.flatMap(({ credentials }) => [credentials.access, credentials.refresh]));
}

function stopOnConflicts(
	move: PendingMove,
	plans: readonly AccountPlan[],
	source: TokenSource,
	options: MoveOptions,
): void {
	const conflicts = plans.filter((plan) => plan.action === "conflict");
	if (conflicts.length === 0) return;
	report(move, plans, source, options);
	throw new MigrationError(`${conflictExplanation(conflicts, source, options)} ${UNCHANGED}`);
}

async function dryRun(
	move: PendingMove,
	plans: readonly AccountPlan[],
	source: TokenSource,
	options: MoveOptions,
): Promise<number> {
	const { out } = options;
	report(move, plans, source, options);
	for (const line of await tempLines(source)) out.info(line);
	if (move.preview !== undefined) out.info(move.preview);
	const conflicts = plans.filter((plan) => plan.action === "conflict");
	if (conflicts.length > 0)
		out.error(`A real run would stop here: ${conflictExplanation(conflicts, source, options)}`);
	out.info("Dry run: nothing was changed.");
	return conflicts.length > 0 ? 1 : 0;
}

function report(
	move: PendingMove,
	plans: readonly AccountPlan[],
	source: TokenSource,
	{ out, rotate }: MoveOptions,
): void {
	out.info(move.heading);
	if (plans.length === 0) out.info("  (no accounts)");
	for (const line of planLines(plans)) out.info(line);
	for (const line of move.after) out.info(line);
	if (rotate) {
		out.info(
			`  then use each account's refresh token once (--rotate), so the one in copies of ${source.file} is spent`,
		);
	}
}

async function tempLines(source: TokenSource): Promise<string[]> {
	const temps = (await Promise.all(source.rewrites.map(staleTempFiles))).flat();
	return temps.map((temp) => `  remove ${temp}, a temp file an interrupted run left behind`);
}

async function storeOrExplain(
	plans: readonly AccountPlan[],
	move: PendingMove,
	{ broker, pause }: MoveOptions,
): Promise<string[]> {
	try {
		return await storeAccounts(broker, plans, pause);
	} catch (error) {
		const stored = error instanceof PartialStoreError ? error.inKeychain : [];
		throw new MigrationError(`${errorText(error)}\n${move.untouched} ${keychainStatus(stored)}`);
	}
}

/** Why the run stops on an existing, different item, and the two ways forward. */
function conflictExplanation(conflicts: readonly AccountPlan[], source: TokenSource, options: MoveOptions): string {
	return (
		`The ${options.keychain} already holds a different login for ${quoted(conflicts.map((plan) => plan.label))}. ` +
		"It was not overwritten: it may be newer than the one being moved (a refresh token only works once). To keep " +
		`the keychain's login, ${source.keepAdvice}. To overwrite it, run again with --replace.`
	);
}
