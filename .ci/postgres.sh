# Sourced by .ci/run: installs PostgreSQL if this machine lacks it, starts a throwaway cluster
# on a unix socket in a temp dir (the recipe of docs/architecture.md, "Two replicas"), exports
# ECS_RENEWD_TEST_POSTGRES for the tests (which fail, never skip, without a server) and stops
# the cluster when the shell exits. fsync and friends are off: the data is thrown away.
pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
pg_bin=$(pg_bindir)
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  pg_bin=$(pg_bindir)
fi
# The TLS test makes its certificates with the openssl command.
command -v openssl >/dev/null ||
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null; }
pg_dir=$(mktemp -d /tmp/ecs-renewd-ci-pg.XXXXXX)
pg_as() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres:postgres "$pg_dir"
chmod 700 "$pg_dir"
pg_as "$pg_bin/initdb" -D "$pg_dir/data" -A trust -U postgres --no-sync -E UTF8 >/dev/null
pg_as "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 60 \
  -o "-k $pg_dir -c listen_addresses='' -p 54329 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
  start >/dev/null
pg_stop() {
  pg_as "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$pg_dir"
}
trap pg_stop EXIT
export ECS_RENEWD_TEST_POSTGRES="host=$pg_dir port=54329 user=postgres"
echo "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') at $pg_dir (port 54329)"
