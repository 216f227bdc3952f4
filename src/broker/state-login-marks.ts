import type { JsonFileStore } from "../config/json-file-store.ts";
import type { SharedState } from "../config/schema.ts";
import type { LoginMarks } from "./token-broker.ts";

/** Needs-login marks kept in the shared state file, so every pi session reports them the same way. */
export class StateLoginMarks implements LoginMarks {
	constructor(private readonly state: JsonFileStore<SharedState>) {}

	async isMarked(label: string): Promise<boolean> {
		return (await this.state.read()).needsLogin[label] !== undefined;
	}

	async mark(label: string, reason: string): Promise<void> {
		await this.state.update((state) => {
			state.needsLogin[label] = { since: Date.now(), reason };
			return { next: state, result: undefined };
		});
	}

	async clear(label: string): Promise<void> {
		if (!(await this.isMarked(label))) return;
		await this.state.update((state) => {
			if (state.needsLogin[label] === undefined) return { result: undefined };
			delete state.needsLogin[label];
			return { next: state, result: undefined };
		});
	}
}
