import type { FakeAnthropicApi } from "../../test/helpers/fake-anthropic-api.ts";
import type { FakeTokenEndpoint } from "../../test/helpers/fake-token-endpoint.ts";
import type { BenchEnv } from "./env.ts";
import type { BenchSession } from "./pi.ts";

/** Sample counts: the full run, or `--quick` (a smoke run while developing; its figures are not the report's). */
export interface Budget {
	quick: boolean;
	/** Scales a full-run count down in quick mode (never below `min`). */
	n(full: number, min?: number): number;
}

export function budget(quick: boolean): Budget {
	return { quick, n: (full, min = 3) => (quick ? Math.max(min, Math.round(full / 5)) : full) };
}

export interface BenchContext {
	env: BenchEnv;
	api: FakeAnthropicApi;
	tokenEndpoint: FakeTokenEndpoint;
	/** pi with the extension, on the multi-claude-code provider. */
	mcc: BenchSession;
	/** pi without the extension, on the built-in anthropic provider. */
	anthropic: BenchSession;
	/** pi with the extension loaded, but on the built-in anthropic provider (isolates the provider path). */
	anthropicWithExtension: BenchSession;
	/** The access token of the extension's benchmark account (label "bench"). */
	benchToken: string;
	/** The runtime key of the built-in anthropic session (an sk-ant-oat01 token the fake API knows). */
	anthropicToken: string;
	budget: Budget;
	/** Milliseconds left before the run's deadline (the whole run must stay under 5 minutes on a busy machine). */
	timeLeftMs(): number;
	log(line: string): void;
}
