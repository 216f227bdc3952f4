import type { ExtensionAPI } from "@mariozechner/pi-coding-agent";

export default function multiClaudeCode(_pi: ExtensionAPI): void {
	// Wiring comes with the provider and commands.
}
