import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { createCore } from "../core.ts";
import { readSettings } from "../settings.ts";
import { errorText } from "../text.ts";
import { migrateConfigFile } from "./legacy-config.ts";
import { importPiAuth, piAuthFile } from "./pi-auth.ts";
import { MigrationError, type Output, pauseAt, USAGE_EXIT_CODE } from "./support.ts";

export const HELP = `Usage: pi-mcc-migrate [--dry-run] [--replace] [--rotate] [--file PATH]
       pi-mcc-migrate --from-pi-auth LABEL [--dry-run] [--replace] [--rotate] [--file PATH]

Moves the tokens of pi-multi-claude-code's old plaintext config into the OS keychain, then rewrites the config
without them. Every token is written to the keychain and read back before the file changes; if anything fails,
the file is left exactly as it was. Running it again is harmless and finishes an interrupted run.

  --dry-run             print the plan (accounts, keychain items created or replaced) and change nothing
  --file PATH           the config to migrate (default: <pi agent dir>/multi-claude-code.json; the agent dir
                        is PI_CODING_AGENT_DIR or ~/.pi/agent)
  --replace             overwrite a keychain item that already holds a different login (otherwise: stop)
  --rotate              right after the move, refresh each account's token pair once, so the refresh token
                        that copies of the old file (backups, sync, snapshots) hold is spent; on a file that
                        is already migrated (or a login already imported), rotates its accounts
  --from-pi-auth LABEL  move pi's own Anthropic OAuth login from <pi agent dir>/auth.json into the keychain as
                        account LABEL; its "anthropic" entry is removed from auth.json (pi then needs /login
                        again for its built-in Anthropic provider)
  --help                show this text

Exit status: 0 done or nothing to do, 1 stopped or a rotation failed (the message says why and what is
already in the keychain), 2 bad command line.`;

interface Flags {
	"dry-run"?: boolean;
	replace?: boolean;
	rotate?: boolean;
	help?: boolean;
	file?: string;
	"from-pi-auth"?: string;
}

/**
 * The whole command: parses the arguments, runs the migration or the pi import, and returns the exit status.
 * Every message goes through `out`; nothing here exits the process, so tests run it in-process too.
 */
export async function runMigrationCli(argv: readonly string[], env: NodeJS.ProcessEnv, out: Output): Promise<number> {
	let flags: Flags;
	try {
		flags = parseFlags(argv);
	} catch (error) {
		out.error(`${errorText(error)}\nRun pi-mcc-migrate --help for the options.`);
		return USAGE_EXIT_CODE;
	}
	if (flags.help) {
		out.info(HELP);
		return 0;
	}
	if (flags.file !== undefined && flags.file.trim() === "") {
		out.error("--file needs a path.");
		return USAGE_EXIT_CODE;
	}
	try {
		return await dispatch(flags, env, out);
	} catch (error) {
		if (error instanceof MigrationError) {
			out.error(error.message);
			return error.exitCode;
		}
		// Unexpected: only the message is shown (never a stack with values in it), and Output scrubs it.
		out.error(`pi-mcc-migrate failed unexpectedly: ${errorText(error)}`);
		return 1;
	}
}

function parseFlags(argv: readonly string[]): Flags {
	return parseArgs({
		args: [...argv],
		strict: true,
		allowPositionals: false,
		options: {
			"dry-run": { type: "boolean" },
			replace: { type: "boolean" },
			rotate: { type: "boolean" },
			help: { type: "boolean", short: "h" },
			file: { type: "string" },
			"from-pi-auth": { type: "string" },
		},
	}).values;
}

function dispatch(flags: Flags, env: NodeJS.ProcessEnv, out: Output): Promise<number> {
	const settings = readSettings(env);
	const core = createCore(settings);
	const options = {
		broker: core.broker,
		keychain: `${core.broker.backend} (service "${settings.keychainService}")`,
		replace: flags.replace ?? false,
		dryRun: flags["dry-run"] ?? false,
		rotate: flags.rotate ?? false,
		out,
		pause: pauseAt(settings.migratePauseAt),
	};
	const file = flags.file === undefined ? core.paths.configFile : resolve(flags.file);
	const label = flags["from-pi-auth"];
	if (label !== undefined) {
		return importPiAuth({ label, configFile: file, authFile: piAuthFile(core.paths.agentDir) }, options);
	}
	return migrateConfigFile(file, flags.file !== undefined, options);
}
