#!/usr/bin/env bash
# Runs the test suite inside a private, throwaway D-Bus session with its own gnome-keyring, so tests use a
# real Secret Service and never touch the developer's own keychain. Fails loudly when none can be started.
# PI_MCC_KEYRING_COMMAND runs another command there instead of vitest (the benchmark does).
set -euo pipefail

run() {
	if [ -n "${PI_MCC_KEYRING_COMMAND:-}" ]; then
		# shellcheck disable=SC2086
		exec $PI_MCC_KEYRING_COMMAND "$@"
	fi
	exec npx vitest run "$@"
}

if [ "${PI_MCC_INSIDE_TEST_KEYRING:-}" != "1" ]; then
	if [ "$(uname -s)" != "Linux" ]; then
		# macOS / Windows: the tests use the login keychain / Credential Manager with a throwaway service name.
		run "$@"
	fi
	for tool in dbus-run-session gnome-keyring-daemon secret-tool; do
		if ! command -v "$tool" >/dev/null 2>&1; then
			echo "private keyring: '$tool' is missing. On Debian/Ubuntu: sudo apt-get install dbus gnome-keyring libsecret-tools" >&2
			exit 1
		fi
	done
	scratch=$(mktemp -d "${TMPDIR:-/tmp}/pi-mcc-keyring.XXXXXX")
	trap 'rm -rf "$scratch"' EXIT
	mkdir -m 0700 -p "$scratch/runtime" "$scratch/data" "$scratch/home"
	export XDG_RUNTIME_DIR="$scratch/runtime" XDG_DATA_HOME="$scratch/data" PI_MCC_INSIDE_TEST_KEYRING=1
	export PI_MCC_TEST_KEYRING_DIR="$scratch"
	# Keep the developer's session bus out of reach: only the private bus below may be used.
	unset DBUS_SESSION_BUS_ADDRESS
	dbus-run-session -- bash "$0" "$@"
	exit $?
fi

# Inside the private bus: start gnome-keyring with a non-empty password, so a default collection exists unlocked.
printf 'pi-mcc-test-keyring' | gnome-keyring-daemon --unlock --components=secrets >"$PI_MCC_TEST_KEYRING_DIR/daemon.env" 2>"$PI_MCC_TEST_KEYRING_DIR/daemon.log" &
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
	echo "private keyring: gnome-keyring did not take org.freedesktop.secrets within 10 s. Its log:" >&2
	cat "$PI_MCC_TEST_KEYRING_DIR/daemon.log" >&2 || true
	exit 1
fi
export PI_MCC_REQUIRE_KEYRING=1
run "$@"
