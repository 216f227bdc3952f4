import type { StoredCredentials } from "../broker/credentials.ts";
import type { StoredComparison, TokenBroker } from "../broker/token-broker.ts";
import { AccountError } from "../broker/token-broker.ts";
import { MigrationError } from "./migration-error.ts";

/** What happens to one account's keychain item. */
export type AccountAction = "create" | "keep" | "replace" | "conflict";

export interface AccountPlan {
	label: string;
	credentials: StoredCredentials;
	/** What the keychain held when the plan was made. */
	found: StoredComparison;
	action: AccountAction;
}

/** Compares each account with its keychain item; reads only, so a dry run can use it. */
export async function planAccounts(
	broker: TokenBroker,
	accounts: readonly { label: string; credentials: StoredCredentials }[],
	replace: boolean,
): Promise<AccountPlan[]> {
	const plans: AccountPlan[] = [];
	for (const { label, credentials } of accounts) {
		const found = await compareWithKeychain(broker, label, credentials);
		plans.push({ label, credentials, found, action: actionFor(found, replace) });
	}
	return plans;
}

function actionFor(found: StoredComparison, replace: boolean): AccountAction {
	if (found === "absent") return "create";
	if (found === "same") return "keep";
	return replace ? "replace" : "conflict";
}

export async function compareWithKeychain(
	broker: TokenBroker,
	label: string,
	credentials: StoredCredentials,
): Promise<StoredComparison> {
	try {
		return await broker.compareStored(label, credentials);
	} catch (error) {
		if (error instanceof AccountError) throw new MigrationError(`Cannot read the keychain: ${error.message}`);
		throw error;
	}
}

export function describeAction(plan: AccountPlan): string {
	switch (plan.action) {
		case "create":
			return "create its keychain item";
		case "keep":
			return "already in the keychain with the same tokens: kept as it is";
		case "replace":
			return `REPLACE its keychain item, which holds ${foundText(plan.found)} (--replace)`;
		case "conflict":
			return `STOP: its keychain item already holds ${foundText(plan.found)}`;
	}
}

function foundText(found: StoredComparison): string {
	return found === "unreadable" ? "something this extension did not write" : "a different login";
}

export function planLines(plans: readonly AccountPlan[]): string[] {
	const width = Math.max(0, ...plans.map((plan) => plan.label.length));
	return plans.map((plan) => `  ${plan.label.padEnd(width)}  ${describeAction(plan)}`);
}

/** Why the run stops on an existing, different item, and the two ways forward. */
export function conflictExplanation(conflicts: readonly AccountPlan[], keychain: string, toKeep: string): string {
	const labels = conflicts.map((plan) => `"${plan.label}"`).join(", ");
	return (
		`The ${keychain} already holds a different login for ${labels}. It was not overwritten: it may be newer ` +
		`than the one being moved (a refresh token only works once). To keep the keychain's login, ${toKeep}. ` +
		"To overwrite it, run again with --replace."
	);
}
