#!/usr/bin/env bash
# `npm run bench`: runs bench/run.ts inside the private, throwaway keychain the tests use (test/run-tests.ts runs
# PI_MCC_KEYRING_COMMAND there instead of vitest), so the keychain figures come from a real Secret Service and the
# developer's own keychain is never touched. The runner also exports PI_MCC_NODE22 and PI_MCC_PI1X_DIR (a Node
# >= 22.19 and the pi 1.x prefix) when pi 1.x is installed, for a bench of the second pi line.
# Arguments go to bench/run.ts (e.g. `npm run bench -- --quick` or `npm run bench -- --only=keychain,failover`).
# PI_MCC_BENCH_NODE_OPTIONS (e.g. --cpu-prof) and PI_MCC_BENCH_ENTRY (another script) are for profiling; jiti's
# ESM hooks run the TypeScript sources, while pi's own packages still load natively (they are plain ESM).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(uname -s)" = "Linux" ]; then
	export PI_MCC_BENCH_KEYRING="private throwaway gnome-keyring (Secret Service)"
else
	export PI_MCC_BENCH_KEYRING="OS keychain (throwaway service name)"
fi
export PI_MCC_KEYRING_COMMAND="node ${PI_MCC_BENCH_NODE_OPTIONS:-} --import jiti/register ${PI_MCC_BENCH_ENTRY:-bench/run.ts}"
exec node --import jiti/register test/run-tests.ts "$@"
