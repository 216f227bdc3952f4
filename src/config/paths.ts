import { homedir } from "node:os";
import { join } from "node:path";

export interface ExtensionPaths {
	/** pi's agent directory (`~/.pi/agent`, or `PI_CODING_AGENT_DIR` as pi itself honours it). */
	agentDir: string;
	/** Labels, active label and fallback chains: no secrets. */
	configFile: string;
	/** Cooldowns and needs-login marks shared by concurrent pi sessions: no secrets. */
	stateFile: string;
	/** Targets of the per-account refresh locks (proper-lockfile puts `<target>.lock` next to them). */
	lockDir: string;
}

export function resolveAgentDir(env: NodeJS.ProcessEnv = process.env): string {
	const fromEnv = env.PI_CODING_AGENT_DIR;
	if (fromEnv) {
		if (fromEnv === "~") return homedir();
		if (fromEnv.startsWith("~/")) return join(homedir(), fromEnv.slice(2));
		return fromEnv;
	}
	return join(homedir(), ".pi", "agent");
}

export function resolvePaths(env: NodeJS.ProcessEnv = process.env): ExtensionPaths {
	const agentDir = resolveAgentDir(env);
	return {
		agentDir,
		configFile: join(agentDir, "multi-claude-code.json"),
		stateFile: join(agentDir, "multi-claude-code-state.json"),
		lockDir: join(agentDir, "multi-claude-code-locks"),
	};
}
