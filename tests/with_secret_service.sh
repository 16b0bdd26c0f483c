#!/usr/bin/env bash
# Runs a command inside a private D-Bus session with an unlocked gnome-keyring Secret Service,
# so keyring tests talk to a real encrypted backend. Usage: with_secret_service.sh CMD ARGS...
set -euo pipefail
if ! command -v gnome-keyring-daemon >/dev/null || ! command -v dbus-run-session >/dev/null; then
  echo "with_secret_service: gnome-keyring-daemon or dbus-run-session missing; keyring tests will skip" >&2
  exec "$@"
fi
if [ -z "${TESSERA_IN_DBUS:-}" ]; then
  export TESSERA_IN_DBUS=1
  exec dbus-run-session -- "$0" "$@"
fi
export XDG_DATA_HOME="${XDG_DATA_HOME:-$(mktemp -d)}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
chmod 700 "$XDG_RUNTIME_DIR"
# A throwaway login password creates and unlocks a fresh test keyring; the daemon prints env lines to eval.
eval "$(printf 'tessera-test-login' | gnome-keyring-daemon --unlock --components=secrets)"
eval "$(gnome-keyring-daemon --start --components=secrets)"
export GNOME_KEYRING_CONTROL SSH_AUTH_SOCK 2>/dev/null || true
export TESSERA_SECRET_SERVICE=1
exec "$@"
