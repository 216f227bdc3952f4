/**
 * The keychain side of a move: what each account's item holds compared with the pair being moved, the plan that
 * follows from it, and the writes, each read back, that carry it out.
 */
import type { StoredCredentials } from "../broker/credentials.ts";
import { AccountError, type StoredComparison, type TokenBroker } from "../broker/token-broker.ts";
import { errorText } from "../text.ts";
import { MigrationError, PartialStoreError, type Pause } from "./support.ts";

export interface AccountTokens {
	label: string;
	credentials: StoredCredentials;
}

type Action = "create" | "keep" | "replace" | "conflict";

export interface AccountPlan extends AccountTokens {
	/** What the keychain held when the plan was made. */
	found: StoredComparison;
	action: Action;
}

/** Compares each account with its keychain item; reads only, so a dry run can use it. */
export async function planAccounts(
	broker: TokenBroker,
	accounts: readonly AccountTokens[],
	replace: boolean,
): Promise<AccountPlan[]> {
	const plans: AccountPlan[] = [];
	for (const account of accounts) {
		const found = await compareWithKeychain(broker, account);
		const action = found === "absent" ? "create" : found === "same" ? "keep" : replace ? "replace" : "conflict";
		plans.push({ ...account, found, action });
	}
	return plans;
}

async function compareWithKeychain(
	broker: TokenBroker,
	{ label, credentials }: AccountTokens,
): Promise<StoredComparison> {
	try {
		return await broker.compareStored(label, credentials);
	} catch (error) {
		if (error instanceof AccountError) throw new MigrationError(`Cannot read the keychain: ${error.message}`);
		throw error;
	}
}

/**
 * Writes the planned items, each read back and compared by the broker, then checks every account once more.
 * Returns the labels whose item now holds the planned tokens. On any failure it throws a PartialStoreError
 * naming the labels already safely in the keychain, so the caller can say so.
 */
export async function storeAccounts(
	broker: TokenBroker,
	plans: readonly AccountPlan[],
	pause: Pause,
): Promise<string[]> {
	const inKeychain = plans.filter((plan) => plan.action === "keep").map((plan) => plan.label);
	try {
		for (const plan of plans) {
			if (plan.action === "keep") continue;
			if (plan.action === "conflict") throw new MigrationError(`"${plan.label}" has a conflicting keychain item.`);
			// The plan may be stale: another process could have created the item since. Never overwrite that
			// silently, unless the person asked for --replace.
			const now = await compareWithKeychain(broker, plan);
			if (now === "same") {
				inKeychain.push(plan.label);
				continue;
			}
			if (plan.action === "create" && now !== "absent") {
				throw new MigrationError(
					`The keychain item of "${plan.label}" appeared while the migration ran and holds a different ` +
						"login; it was not overwritten (run again to see the plan, or add --replace).",
				);
			}
			try {
				await broker.storeLogin(plan.label, plan.credentials);
			} catch (error) {
				throw new MigrationError(`Could not store "${plan.label}" in the keychain: ${errorText(error)}`);
			}
			inKeychain.push(plan.label);
			await pause(`stored:${plan.label}`);
		}
		for (const plan of plans) {
			if ((await compareWithKeychain(broker, plan)) !== "same") {
				const at = inKeychain.indexOf(plan.label);
				if (at >= 0) inKeychain.splice(at, 1);
				throw new MigrationError(`The keychain item of "${plan.label}" changed while the migration ran.`);
			}
		}
		return inKeychain;
	} catch (error) {
		if (error instanceof PartialStoreError) throw error;
		throw new PartialStoreError(errorText(error), [...inKeychain]);
	}
}

/** "Already in the keychain: a, b." — so a failed run never looks like it lost an account. */
export function keychainStatus(inKeychain: readonly string[]): string {
	if (inKeychain.length === 0) return "No account is confirmed in the keychain yet.";
	return `Already in the keychain (a re-run finds them and keeps them): ${quoted(inKeychain)}.`;
}

/** One line per account: its label and what happens to its item. */
export function planLines(plans: readonly AccountPlan[]): string[] {
	const width = Math.max(0, ...plans.map((plan) => plan.label.length));
	return plans.map((plan) => `  ${plan.label.padEnd(width)}  ${describeAction(plan)}`);
}

function describeAction(plan: AccountPlan): string {
	const found = plan.found === "unreadable" ? "something this extension did not write" : "a different login";
	switch (plan.action) {
		case "create":
			return "create its keychain item";
		case "keep":
			return "already in the keychain with the same tokens: kept as it is";
		case "replace":
			return `REPLACE its keychain item, which holds ${found} (--replace)`;
		case "conflict":
			return `STOP: its keychain item already holds ${found}`;
	}
}

export function quoted(labels: readonly string[]): string {
	return labels.map((label) => `"${label}"`).join(", ");
}
