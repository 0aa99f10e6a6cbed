#!/usr/bin/env bash
# ops/fresh-install-check.sh: the packages work on a machine that has nothing else.
# Builds them (ops/package.sh), then in a fresh minimal Debian 12 root (FRESH_ROOT, default
# ../shared/tools/fresh-root.sh, else /work/shared/tools/fresh-root.sh: debootstrap +
# unshare, as root) installs both with
# `apt-get install ./...deb`, and checks: `outbox-relay --version`; the system user and
# the conffile; `outbox-relay doctor` (as the outbox-relay user, with the packaged
# /etc/outbox-relay/relay.conf) against a PostgreSQL 15 migrated by `outbox-relay migrate`
# and `outbox-relay dev-kafka` reports every check passing; examples/consumer builds
# against outbox-relay-dev with find_package(outbox). Last line: "fresh-install: ok (Ns)".
# Takes 1 to 3 minutes (debootstrap once, then apt-get in the fresh root every run).
# OUTBOX_BUILD_DIR: the build tree ops/package.sh packages (default build).
# The ctest entry fresh_install_check (label package) runs this: tests/fresh_install_test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
if [ -z "${FRESH_ROOT:-}" ]; then
  # Beside the checkout (../shared/tools), else where this machine keeps it (a CI clone
  # lives elsewhere).
  FRESH_ROOT=$(cd .. && pwd)/shared/tools/fresh-root.sh
  [ -x "$FRESH_ROOT" ] || FRESH_ROOT=/work/shared/tools/fresh-root.sh
fi
[ -x "$FRESH_ROOT" ] || { echo "fresh-install-check: no $FRESH_ROOT (set FRESH_ROOT)" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ops/package.sh "$work/tree/debs" >/dev/null
mkdir -p "$work/tree/examples"
cp -r examples/consumer "$work/tree/examples/"
cat > "$work/tree/check.sh" <<'INNER'
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Only the server binaries: the check starts its own cluster.
mkdir -p /etc/postgresql-common
echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
apt-get install -y -qq --no-install-recommends ./debs/outbox-relay_*.deb ./debs/outbox-relay-dev_*.deb \
  postgresql-15 cmake g++ make >/dev/null
outbox-relay --version
getent passwd outbox-relay
ls -l /etc/outbox-relay/relay.conf
install -d -o postgres -g postgres /tmp/pg
runuser -u postgres -- /usr/lib/postgresql/15/bin/initdb -D /tmp/pg/data -A trust >/dev/null
runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D /tmp/pg/data -l /tmp/pg/log -w \
  -o "-c port=5432 -c listen_addresses=127.0.0.1 -c unix_socket_directories=/tmp/pg" start >/dev/null
outbox-relay migrate --db "host=/tmp/pg user=postgres dbname=postgres"
psql -q -h /tmp/pg -U postgres -d postgres -c "CREATE ROLE relay LOGIN IN ROLE outbox_relay"
runuser -u outbox-relay -- outbox-relay dev-kafka --brokers-file /tmp/brokers >/dev/null 2>&1 &
for _ in $(seq 100); do [ -s /tmp/brokers ] && break; sleep 0.1; done
runuser -u outbox-relay -- outbox-relay doctor --config /etc/outbox-relay/relay.conf \
  --db "host=/tmp/pg user=relay dbname=postgres" --brokers "$(cat /tmp/brokers)"
cmake -S examples/consumer -B /tmp/example -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build /tmp/example >/dev/null
test -x /tmp/example/outbox-example-consumer
echo "downstream find_package(outbox) build: ok"
INNER
git -C "$work/tree" init -q
git -C "$work/tree" add -A
git -C "$work/tree" -c user.name=check -c user.email=check@localhost commit -q -m check
"$FRESH_ROOT" "$work/tree" 'bash check.sh'
echo "fresh-install: ok ($(( $(date +%s) - start ))s)"
