#!/usr/bin/env bash
# Throwaway PostgreSQL 15 clusters for tests, benchmarks and the quickstart.
#
#   ops/pg-tmp.sh start DIR [--owner-pid PID] [--listen ADDR] [--trust CIDR]
#                                               init + start; prints one conninfo line
#   ops/pg-tmp.sh stop DIR                      stop and delete DIR
#   ops/pg-tmp.sh restart DIR [fast|immediate]  restart on the same port (fault tests)
#   ops/pg-tmp.sh down DIR | up DIR             stop the server, keep DIR; start it again
#   ops/pg-tmp.sh conninfo DIR                  print the conninfo again
#
# Works as root (runs the server as the postgres user) and as a normal user. Each
# cluster has its own socket directory and a free port, so parallel runs never collide.
# With --owner-pid, a watchdog stops the cluster and deletes DIR once PID is gone, so a
# test that crashes or is killed leaves nothing running. --listen adds an address to
# listen on besides 127.0.0.1 (kept across restarts), --trust lets clients from CIDR in
# without a password (pg_hba.conf), e.g. a network namespace of a partition test.
# Extra server settings: PG_TMP_OPTS="-c shared_buffers=256MB ...".
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

die() { echo "pg-tmp: $*" >&2; exit 1; }

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

conninfo() {
  local dir=$1
  echo "host=$dir/sock port=$(cat "$dir/port") dbname=postgres user=postgres"
}

server_opts() {
  local dir=$1 port=$2 listen=127.0.0.1
  [ -s "$dir/listen" ] && listen="127.0.0.1,$(cat "$dir/listen")"
  echo "-c port=$port -c listen_addresses=$listen -c unix_socket_directories=$dir/sock" \
       "-c wal_level=logical -c max_connections=300 -c max_wal_senders=64" \
       "-c max_replication_slots=64 -c fsync=off -c full_page_writes=off" \
       "-c shared_buffers=128MB -c log_min_messages=warning ${PG_TMP_OPTS:-}"
}

start() {
  local dir=$1 owner_pid=${2:-} listen=${3:-} trust=${4:-}
  [ -x "$PGBIN/initdb" ] || die "PostgreSQL 15 is not installed ($PGBIN/initdb missing); run ops/install-deps.sh"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ -e "$dir/data/PG_VERSION" ] && die "$dir already holds a cluster"
  mkdir -p "$dir/sock"
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "user postgres does not exist (install postgresql-15)"
    chown postgres "$dir" "$dir/sock"
    runuser -u postgres -- test -x "$dir" ||
      die "user postgres cannot reach $dir: make its parent directories traversable (chmod o+x)"
  fi
  as_owner "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync \
    >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  [ -n "$listen" ] && echo "$listen" >"$dir/listen"
  if [ -n "$trust" ]; then
    echo "host all all $trust trust" | as_owner tee -a "$dir/data/pg_hba.conf" >/dev/null
  fi
  local attempt port
  for attempt in $(seq 1 20); do
    port=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
    echo "$port" >"$dir/port"
    if as_owner "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/data/server.log" -w -t 60 \
         -o "$(server_opts "$dir" "$port")" start >/dev/null 2>&1; then
      break
    fi
    if ! grep -q "could not bind\|could not create any TCP/IP sockets\|Address already in use" \
         "$dir/data/server.log" 2>/dev/null; then
      cat "$dir/data/server.log" >&2 || true
      die "could not start PostgreSQL"
    fi
    [ "$attempt" -eq 20 ] && die "no free port after 20 attempts"
  done
  if [ -n "$owner_pid" ]; then
    # The watchdog polls the owner: it is a cleanup helper, not a test.
    setsid bash -c "while kill -0 $owner_pid 2>/dev/null; do sleep 0.5; done; \"$0\" stop \"$dir\"" \
      >/dev/null 2>&1 </dev/null &
    echo $! >"$dir/watchdog.pid"
  fi
  conninfo "$dir"
}

stop() {
  local dir=$1
  [ -d "$dir" ] || return 0
  if [ -e "$dir/watchdog.pid" ]; then
    local w; w=$(cat "$dir/watchdog.pid")
    [ "$w" != "$$" ] && [ "$w" != "$PPID" ] && kill "$w" 2>/dev/null || true
  fi
  if [ -e "$dir/data/postmaster.pid" ]; then
    as_owner "$PGBIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}

down() {
  as_owner "$PGBIN/pg_ctl" -D "$1/data" -m "${2:-fast}" -w stop >/dev/null
}

up() {
  local dir=$1
  local port; port=$(cat "$dir/port")
  as_owner "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/data/server.log" -w -t 60 \
    -o "$(server_opts "$dir" "$port")" start >/dev/null
}

restart() {
  down "$1" "${2:-fast}"
  up "$1"
}

cmd=${1:-}
case "$cmd" in
  start)
    [ $# -ge 2 ] || die "usage: pg-tmp.sh start DIR [--owner-pid PID] [--listen ADDR] [--trust CIDR]"
    dir=$2 owner="" listen="" trust=""
    shift 2
    while [ $# -gt 0 ]; do
      case "$1" in
        --owner-pid) owner=${2:?--owner-pid needs a PID}; shift 2 ;;
        --listen) listen=${2:?--listen needs an address}; shift 2 ;;
        --trust) trust=${2:?--trust needs a CIDR}; shift 2 ;;
        *) die "start: unknown argument $1" ;;
      esac
    done
    start "$dir" "$owner" "$listen" "$trust" ;;
  stop) [ $# -ge 2 ] || die "usage: pg-tmp.sh stop DIR"; stop "$2" ;;
  down) [ $# -ge 2 ] || die "usage: pg-tmp.sh down DIR"; down "$2" ;;
  up) [ $# -ge 2 ] || die "usage: pg-tmp.sh up DIR"; up "$2" ;;
  restart) [ $# -ge 2 ] || die "usage: pg-tmp.sh restart DIR [fast|immediate]"; restart "$2" "${3:-fast}" ;;
  conninfo) conninfo "$(cd "$2" && pwd)" ;;
  *) die "usage: pg-tmp.sh start|stop|restart|down|up|conninfo DIR" ;;
esac
