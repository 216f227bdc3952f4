/**
 * The models this provider offers: pi's own Anthropic models, mirrored whole, so the request pi-ai builds for
 * `multi-claude-code/<id>` is the request it builds for `anthropic/<id>`. pi 1.x shapes each request from the
 * model's metadata (compat: strict tools, adaptive thinking, betas, fallbacks; promptCache; inputLimits), so
 * nothing is picked out: only what makes a model this provider's changes.
 */

import type { Api, Model } from "@mariozechner/pi-ai";
import * as piAi from "@mariozechner/pi-ai";
import type { ProviderModelConfig } from "@mariozechner/pi-coding-agent";
import { PROVIDER_ID } from "../manifest.ts";

/** pi-ai's own id of the Anthropic Messages API, which the delegate is always called with. */
export const ANTHROPIC_API = "anthropic-messages";

/**
 * Whether the pi running this extension is the 1.x line (`@earendil-works/*`, which maps our `@mariozechner/*`
 * imports onto its own modules): its pi-ai exports its version, 0.73's does not.
 */
export const PI_LINE: "0.73" | "1.x" = "PI_AI_VERSION" in piAi ? "1.x" : "0.73";

/**
 * The api id the provider registers under. pi 0.73 registers a provider's streamSimple globally per api id, so
 * there it must be our own (else it would replace pi's Anthropic streaming for everyone). pi 1.x dispatches per
 * provider, and keys behaviour on `model.api` (cache-warming replays, per-message effort markers), so there the
 * built-in id keeps the models identical.
 */
export function providerApi(line: typeof PI_LINE = PI_LINE): string {
	return line === "1.x" ? ANTHROPIC_API : PROVIDER_ID;
}

/** A model definition as registered: pi 1.x keeps every field of it, pi 0.73 the fields it knows. */
export type MirroredModel = ProviderModelConfig & Record<string, unknown>;

/** pi's Anthropic models (the catalog, or the live list from its model registry), as this provider's models. */
export function mirrorAnthropicModels(
	source: readonly Model<Api>[],
	options: { api: string; baseUrl: string },
): MirroredModel[] {
	return source
		.filter((model) => model.provider === "anthropic" && model.api === ANTHROPIC_API)
		.map((model) => {
			const { provider: _provider, ...definition } = structuredClone(model) as Model<Api> & Record<string, unknown>;
			return {
				...definition,
				...withOwnFallbacks(definition.compat),
				api: options.api as Api,
				baseUrl: options.baseUrl,
			} as MirroredModel;
		});
}

/** The models registered at start-up, from pi-ai's catalog. */
export function catalogAnthropicModels(options: { api: string; baseUrl: string }): MirroredModel[] {
	return mirrorAnthropicModels(piAi.getModels("anthropic") as Model<Api>[], options);
}

/**
 * Server-side fallback models name their provider; pi-ai prices a fallback's answer by looking the model up under
 * the answering provider, which is ours. The wire request only carries the model ids, so it is unchanged.
 */
function withOwnFallbacks(compat: unknown): { compat?: unknown } {
	if (!compat || typeof compat !== "object") return {};
	const fallbacks = (compat as { allowedFallbackModels?: unknown }).allowedFallbackModels;
	if (!Array.isArray(fallbacks)) return {};
	return {
		compat: {
			...compat,
			allowedFallbackModels: fallbacks.map((entry: unknown) =>
				entry && typeof entry === "object" && (entry as { provider?: unknown }).provider === "anthropic"
					? { ...entry, provider: PROVIDER_ID }
					: entry,
			),
		},
	};
}

/** A cheap identity of a mirrored list, to re-register only when pi's list really changed. */
export function modelsSignature(models: readonly MirroredModel[]): string {
	return JSON.stringify(models);
}
