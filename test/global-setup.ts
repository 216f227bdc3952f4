/**
 * Refuses to run the suite outside `npm test` (test/run-tests.ts): the tests write keychain items, and only the
 * private, throwaway keyring it starts on Linux, or the throwaway service names it hands out and deletes on macOS
 * and Windows, may receive them, never a person's own.
 */
import { REAL_SERVICE } from "./helpers/keyring.ts";

export default function assertPrivateKeychain(): void {
	const hint = "Run the tests with `npm test`: it gives them a private, throwaway keychain. Plain `vitest` would";
	if (process.platform === "linux" && process.env.PI_MCC_INSIDE_TEST_KEYRING !== "1") {
		throw new Error(`${hint} write test items into your own keyring.`);
	}
	if (!process.env.PI_MCC_TEST_RUN_DIR || process.env.PI_MCC_KEYCHAIN_SERVICE === REAL_SERVICE) {
		throw new Error(`${hint} not delete the items it wrote into your keychain.`);
	}
}
