/**
 * Refuses to run the suite on Linux outside `npm test`: the tests write keychain items, and only the private,
 * throwaway keyring that test/run-with-keyring.sh starts may receive them, never the developer's own.
 */
export default function assertPrivateKeyring(): void {
	if (process.platform === "linux" && process.env.PI_MCC_INSIDE_TEST_KEYRING !== "1") {
		throw new Error(
			"Run the tests with `npm test`: it starts a private, throwaway Secret Service for them. " +
				"Plain `vitest` would write test items into your own keyring.",
		);
	}
}
