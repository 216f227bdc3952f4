import type { ExtensionContext } from "@mariozechner/pi-coding-agent";
import type { AccountsConfig } from "../config/schema.ts";
import { MAX_FALLBACK_HOPS } from "../provider/fallback-policy.ts";
import { type CommandDeps, reportFailure, splitArgs, unknownLabelText } from "./command-support.ts";

/**
 * /mcc-fallback                 show every chain
 * /mcc-fallback <source>        clear the source's chain (it then fails on its own limit)
 * /mcc-fallback <source> <t…>   the source falls back to the targets, in order (directional, not transitive)
 * /mcc-fallback <source> --early <percent|off>
 *                               opt-in: fall back before the limit, once the source's utilisation reaches percent
 */
export async function fallbackCommand(deps: CommandDeps, args: string, ctx: ExtensionContext): Promise<void> {
	const [source, ...targets] = splitArgs(args);
	try {
		const { core } = deps;
		if (!source) {
			ctx.ui.notify(describeChains(await core.config.read()), "info");
			return;
		}
		if (targets[0] === "--early") {
			await setEarlyFallback(deps, ctx, source, targets.slice(1));
			return;
		}
		const refusal = await core.config.update((config) => {
			const labels = config.accounts.map((account) => account.label);
			const problem = chainProblem(source, targets, labels);
			if (problem) return { result: problem };
			const account = config.accounts.find((entry) => entry.label === source)!;
			account.fallbackTo = targets;
			return { next: config, result: undefined };
		});
		if (refusal) {
			ctx.ui.notify(refusal, "error");
			return;
		}
		ctx.ui.notify(
			targets.length === 0
				? `"${source}" has no fallback now: it fails on its own rate limit.`
				: `"${source}" falls back to ${targets.join(" → ")} (only when "${source}" itself is the active account).`,
			"info",
		);
	} catch (error) {
		reportFailure(ctx, error);
	}
}

async function setEarlyFallback(
	deps: CommandDeps,
	ctx: ExtensionContext,
	source: string,
	rest: string[],
): Promise<void> {
	const raw = rest.length === 1 ? rest[0]!.replace(/%$/, "") : "";
	const percent = Number(raw);
	if (raw !== "off" && !(Number.isFinite(percent) && percent >= 50 && percent <= 100)) {
		ctx.ui.notify("Usage: /mcc-fallback <source> --early <50–100 percent | off>", "warning");
		return;
	}
	const { core } = deps;
	const refusal = await core.config.update((config) => {
		const account = config.accounts.find((entry) => entry.label === source);
		if (!account)
			return {
				result: unknownLabelText(
					source,
					config.accounts.map((entry) => entry.label),
				),
			};
		if (raw === "off") delete account.preemptiveFallbackAt;
		else account.preemptiveFallbackAt = percent / 100;
		return { next: config, result: undefined };
	});
	if (refusal) {
		ctx.ui.notify(refusal, "error");
		return;
	}
	ctx.ui.notify(
		raw === "off"
			? `"${source}" falls back only when Anthropic refuses a request.`
			: `"${source}" falls back to its own list once its reported utilisation reaches ${percent}%.`,
		"info",
	);
}

export function chainProblem(source: string, targets: string[], labels: string[]): string | undefined {
	if (!labels.includes(source)) return unknownLabelText(source, labels);
	for (const target of targets) {
		if (target === source) return `"${source}" cannot fall back to itself.`;
		if (!labels.includes(target)) return unknownLabelText(target, labels);
	}
	const duplicate = targets.find((target, index) => targets.indexOf(target) !== index);
	if (duplicate) return `"${duplicate}" is listed twice.`;
	if (targets.length > MAX_FALLBACK_HOPS) {
		return `At most ${MAX_FALLBACK_HOPS} fallback accounts per source (one request is never retried more often).`;
	}
	return undefined;
}

export function describeChains(config: AccountsConfig): string {
	if (config.accounts.length === 0) return "No Claude account yet. Add one with /mcc-login <label>.";
	const lines = config.accounts.map((account) =>
		account.fallbackTo.length > 0
			? `${account.label} → ${account.fallbackTo.join(" → ")}`
			: `${account.label}: no fallback (fails on its own limit)`,
	);
	return ["Fallback chains (directional, used only when the source is active):", ...lines].join("\n");
}
