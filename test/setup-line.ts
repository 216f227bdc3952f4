/**
 * Runs in every test file's process before the file (vitest setupFiles). It names the file for the pi-line ledger
 * (test/helpers/pi-line.ts: `npm test` runs every file that started pi on pi 1.x too), and after each test checks
 * every RPC pi the test started (a crash or a stale-ctx error fails that test).
 */
import { afterEach, expect } from "vitest";
import { checkStartedPis } from "./helpers/rpc-pi.ts";

process.env.PI_MCC_TEST_FILE = expect.getState().testPath;

afterEach(() => checkStartedPis());
