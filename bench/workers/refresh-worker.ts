/**
 * One contender of the refresh-under-contention benchmark: a separate process with the extension's own core
 * (createCore from src/core.ts: OS keychain, lock files, token broker), as a separate pi process would have it.
 * Protocol (one JSON line per message on stdout): prints {ready} once warm; on stdin "go <round>" asks the broker
 * for the account's access token and prints {round, sha, ms} (a hash prefix, never the token); "exit" ends it.
 */
import { createHash } from "node:crypto";
import { createInterface } from "node:readline";
import { createCore } from "../../src/core.ts";
import { readSettings } from "../../src/settings.ts";

const label = process.env.PI_MCC_BENCH_LABEL;
if (!label) throw new Error("PI_MCC_BENCH_LABEL is not set");
const core = createCore(readSettings(process.env));

function send(message: Record<string, unknown>): void {
	process.stdout.write(`${JSON.stringify({ pid: process.pid, ...message })}\n`);
}

// Warm, as a running pi is at its next request: the keychain entry and its D-Bus session exist, modules are loaded.
await core.broker.describe(label);
send({ ready: true });

createInterface({ input: process.stdin }).on("line", (line) => {
	const [command, round = ""] = line.trim().split(" ");
	if (command === "exit") process.exit(0);
	if (command !== "go") return;
	const started = performance.now();
	core.broker.getAccessToken(label).then(
		(token) => {
			const ms = performance.now() - started;
			send({ round, sha: createHash("sha256").update(token).digest("hex").slice(0, 16), ms });
		},
		(error: unknown) => {
			send({ round, error: error instanceof Error ? `${error.name}: ${error.message}` : String(error) });
		},
	);
});
