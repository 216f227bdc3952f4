#!/usr/bin/env bash
# `npm run bench`: runs bench/run.ts inside a private, throwaway D-Bus session with its own gnome-keyring — the same
# approach as test/run-with-keyring.sh — so the keychain figures come from a real Secret Service and the developer's
# own keychain is never touched. Fails loudly when none can be started. Arguments are passed to bench/run.ts
# (e.g. `npm run bench -- --quick` or `npm run bench -- --only=keychain,failover`).
set -euo pipefail
cd "$(dirname "$0")/.."

run_bench() {
	# jiti's ESM hooks run the TypeScript sources; pi's own packages still load natively (they are plain ESM).
	# PI_MCC_BENCH_NODE_OPTIONS (e.g. --cpu-prof) and PI_MCC_BENCH_ENTRY (another script) are for profiling.
	# shellcheck disable=SC2086
	exec node ${PI_MCC_BENCH_NODE_OPTIONS:-} --import jiti/register "${PI_MCC_BENCH_ENTRY:-bench/run.ts}" "$@"
}

if [ "${PI_MCC_INSIDE_BENCH_KEYRING:-}" != "1" ]; then
	if [ "$(uname -s)" != "Linux" ]; then
		# macOS / Windows: the login keychain / Credential Manager, with a throwaway service name (deleted at the end).
		export PI_MCC_BENCH_KEYRING="OS keychain (throwaway service name)"
		run_bench "$@"
	fi
	for tool in dbus-run-session gnome-keyring-daemon secret-tool dbus-send; do
		if ! command -v "$tool" >/dev/null 2>&1; then
			echo "bench keyring: '$tool' is missing. On Debian/Ubuntu: sudo apt-get install dbus gnome-keyring libsecret-tools" >&2
			exit 1
		fi
	done
	scratch=$(mktemp -d "${TMPDIR:-/tmp}/pi-mcc-bench-keyring.XXXXXX")
	trap 'rm -rf "$scratch"' EXIT
	mkdir -m 0700 -p "$scratch/runtime" "$scratch/data"
	export XDG_RUNTIME_DIR="$scratch/runtime" XDG_DATA_HOME="$scratch/data" PI_MCC_INSIDE_BENCH_KEYRING=1
	export PI_MCC_BENCH_KEYRING_DIR="$scratch"
	# Keep the developer's session bus out of reach: only the private bus below may be used.
	unset DBUS_SESSION_BUS_ADDRESS
	dbus-run-session -- bash "$0" "$@"
	exit $?
fi

# Inside the private bus: gnome-keyring with a non-empty password, so a default collection exists, unlocked.
printf 'pi-mcc-bench-keyring' | gnome-keyring-daemon --unlock --components=secrets \
	>"$PI_MCC_BENCH_KEYRING_DIR/daemon.env" 2>"$PI_MCC_BENCH_KEYRING_DIR/daemon.log" &
ready=0
for _ in $(seq 1 100); do
	if dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
		org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets 2>/dev/null | grep -q "boolean true"; then
		ready=1
		break
	fi
	sleep 0.1
done
if [ "$ready" != "1" ]; then
	echo "bench keyring: gnome-keyring did not take org.freedesktop.secrets within 10 s. Its log:" >&2
	cat "$PI_MCC_BENCH_KEYRING_DIR/daemon.log" >&2 || true
	exit 1
fi
export PI_MCC_REQUIRE_KEYRING=1 PI_MCC_BENCH_KEYRING="private throwaway gnome-keyring (Secret Service)"
run_bench "$@"
