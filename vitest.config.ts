import { join, resolve } from "node:path";
import { defineConfig } from "vitest/config";

// `npm test` runs the suite once per pi line (test/run-tests.ts, test/helpers/pi-line.ts). On pi 1.x, test code that
// imports the `@mariozechner/*` names directly (src/** in unit-style tests, pi-ai's stream in a few files) gets the
// modules pi 1.x hands its extensions, not the 0.73.1 copies of the root node_modules.
const pi1x = join(
	resolve(process.env.PI_MCC_PI1X_DIR || "test/pi-1x"),
	"node_modules",
	"@earendil-works",
	"pi-coding-agent",
	"dist",
);
const alias =
	process.env.PI_MCC_PI_LINE === "1.x"
		? [
				{
					find: /^@mariozechner\/pi-ai$/,
					replacement: join(pi1x, "core", "extensions", "pi-ai-extension-view.js"),
				},
				{ find: /^@mariozechner\/pi-coding-agent$/, replacement: join(pi1x, "index.js") },
			]
		: [];

export default defineConfig({
	resolve: { alias },
	test: {
		include: ["test/**/*.test.ts"],
		reporters: ["default", "./test/summary-reporter.ts"],
		globalSetup: ["./test/global-setup.ts"],
		setupFiles: ["./test/setup-line.ts"],
		// Real keychain, real processes and real HTTP: give each test room, but bound everything.
		testTimeout: 30_000,
		hookTimeout: 30_000,
		pool: "forks",
		// Two cores: more workers only contend for the one gnome-keyring daemon.
		maxWorkers: 2,
		minWorkers: 1,
	},
});
