#!/usr/bin/env node
/**
 * pi-mcc-migrate (package bin): moves plaintext tokens into the OS keychain; see `--help`. Compiled to
 * dist/scripts/migrate.js, so plain Node runs it without a TypeScript loader, also in an `--omit=dev` install.
 */
import { runMigrationCli } from "../src/migration/cli.ts";
import { Output } from "../src/migration/support.ts";
import { errorText } from "../src/text.ts";

const out = new Output();
runMigrationCli(process.argv.slice(2), process.env, out).then(
	// Explicit exit: nothing left in the event loop (a keychain session, a lock timer) may hold the shell prompt.
	(code) => process.exit(code),
	(error: unknown) => {
		out.error(`pi-mcc-migrate failed unexpectedly: ${errorText(error)}`);
		process.exit(1);
	},
);
