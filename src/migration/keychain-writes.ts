import type { TokenBroker } from "../broker/token-broker.ts";
import { errorText } from "../text.ts";
import { MigrationError, PartialStoreError } from "./migration-error.ts";
import { type AccountPlan, compareWithKeychain } from "./plan.ts";

/**
 * Writes the planned items, each read back and compared by the broker, then checks every account once more.
 * Returns the labels whose item now holds the planned tokens. On any failure it throws a PartialStoreError
 * naming the labels already safely in the keychain, so the caller can say so.
 */
export async function storeAccounts(
	broker: TokenBroker,
	plans: readonly AccountPlan[],
	afterEach: (label: string) => Promise<void> = async () => {},
): Promise<string[]> {
	const inKeychain = plans.filter((plan) => plan.action === "keep").map((plan) => plan.label);
	try {
		for (const plan of plans) {
			if (plan.action === "keep") continue;
			if (plan.action === "conflict") throw new MigrationError(`"${plan.label}" has a conflicting keychain item.`);
			// The plan may be stale: another process could have created the item since. Never overwrite that
			// silently, unless the person asked for --replace.
			const now = await compareWithKeychain(broker, plan.label, plan.credentials);
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
			await afterEach(plan.label);
		}
		for (const plan of plans) {
			if ((await compareWithKeychain(broker, plan.label, plan.credentials)) !== "same") {
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
	return `Already in the keychain (a re-run finds them and keeps them): ${inKeychain.map((l) => `"${l}"`).join(", ")}.`;
}
