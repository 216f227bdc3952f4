import { getModels } from "@mariozechner/pi-ai";
import type { ProviderModelConfig } from "@mariozechner/pi-coding-agent";

/** Every Anthropic model pi knows, with the same ids, names, limits, costs and reasoning flags. */
export function mirroredAnthropicModels(): ProviderModelConfig[] {
	return getModels("anthropic").map((model) => ({
		id: model.id,
		name: model.name,
		reasoning: model.reasoning,
		...(model.thinkingLevelMap ? { thinkingLevelMap: model.thinkingLevelMap } : {}),
		input: [...model.input],
		cost: { ...model.cost },
		contextWindow: model.contextWindow,
		maxTokens: model.maxTokens,
		...(model.headers ? { headers: { ...model.headers } } : {}),
	}));
}
