#!/usr/bin/env bash
# Runs a command beside a throwaway PostgreSQL server, with TESSERA_TEST_POSTGRES_URL pointing
# at it, then stops the server and deletes its files. Usage: tests/pg_server.sh CMD ARGS...
# Needs Debian's `postgresql` package (initdb and pg_ctl under /usr/lib/postgresql/*/bin). The
# server listens only on a unix socket in a private temp folder (no TCP port to collide on);
# as root it runs as `nobody`, since PostgreSQL refuses to run as root.
set -euo pipefail

bindir=""
for dir in /usr/lib/postgresql/*/bin; do
  [ -x "$dir/initdb" ] && bindir="$dir"
done
if [ -z "$bindir" ] && command -v pg_config >/dev/null; then
  bindir="$(pg_config --bindir)"
fi
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  echo "pg_server: PostgreSQL (initdb) not found; PostgreSQL tests will skip" >&2
  exec "$@"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/tessera-pg.XXXXXX")"
as_owner=()
if [ "$(id -u)" = 0 ]; then
  chown nobody "$work"
  as_owner=(runuser -u nobody --)
fi
chmod 700 "$work"

stop() {
  "${as_owner[@]}" "$bindir/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap stop EXIT

# C locale and no fsync: a throwaway cluster, created in about a second
LC_ALL=C "${as_owner[@]}" "$bindir/initdb" -D "$work/data" -U tessera -A trust -E UTF8 \
  --no-sync >"$work/initdb.log" 2>&1 || { cat "$work/initdb.log" >&2; exit 1; }
LC_ALL=C "${as_owner[@]}" "$bindir/pg_ctl" -D "$work/data" -l "$work/server.log" -w \
  -o "-k $work -c listen_addresses= -c fsync=off -c synchronous_commit=off -c max_connections=200" \
  start >/dev/null || { cat "$work/server.log" >&2; exit 1; }

export TESSERA_TEST_POSTGRES_URL="postgresql://tessera@/postgres?host=$work"
echo "pg_server: PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') at $work" >&2
set +e
"$@"
status=$?
set -e
exit "$status"
