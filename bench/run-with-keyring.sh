#!/usr/bin/env bash
# `npm run bench`: runs bench/run.ts inside the private, throwaway keyring the tests use (test/run-with-keyring.sh),
# so the keychain figures come from a real Secret Service and the developer's own keychain is never touched.
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
exec bash test/run-with-keyring.sh "$@"
