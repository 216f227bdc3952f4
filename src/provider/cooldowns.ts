import type { JsonFileStore } from "../config/json-file-store.ts";
import type { Cooldown, SharedState } from "../config/schema.ts";
import type { CooldownView } from "./fallback-router.ts";

/** The cooldowns in force at `now` (expired ones are ignored, and pruned at the next write). */
export function activeCooldowns(state: Pick<SharedState, "cooldowns">, now: number): CooldownView {
	return {
		until: (label) => {
			const until = state.cooldowns[label]?.until;
			return until !== undefined && until > now ? until : undefined;
		},
	};
}

/** Puts an account on cooldown in `state` (a longer cooldown already there wins) and prunes expired ones. */
export function applyCooldown(state: SharedState, label: string, cooldown: Cooldown): void {
	for (const [other, entry] of Object.entries(state.cooldowns)) {
		if (entry.until <= cooldown.setAt) delete state.cooldowns[other];
	}
	const existing = state.cooldowns[label];
	state.cooldowns[label] = existing && existing.until > cooldown.until ? existing : cooldown;
}

/** Records a cooldown in the shared state file, so every pi session (and the next start) honours it. */
export async function startCooldown(
	store: JsonFileStore<SharedState>,
	label: string,
	cooldown: Cooldown,
): Promise<void> {
	await store.update((state) => {
		applyCooldown(state, label, cooldown);
		return { next: state, result: undefined };
	});
}

/** Clears an account's cooldown (after a successful login, or by hand). */
export async function clearCooldown(store: JsonFileStore<SharedState>, label: string): Promise<void> {
	await store.update((state) => {
		if (!state.cooldowns[label]) return { result: undefined };
		delete state.cooldowns[label];
		return { next: state, result: undefined };
	});
}
