import { defineConfig } from "vitest/config";

export default defineConfig({
	test: {
		include: ["test/**/*.test.ts"],
		reporters: ["default", "./test/summary-reporter.ts"],
		globalSetup: ["./test/global-setup.ts"],
		// Real keychain, real processes and real HTTP: give each test room, but bound everything.
		testTimeout: 30_000,
		hookTimeout: 30_000,
		pool: "forks",
		// Two cores: more workers only contend for the one gnome-keyring daemon.
		maxWorkers: 2,
		minWorkers: 1,
	},
});
