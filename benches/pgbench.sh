#!/usr/bin/env bash
# pgbench -S throughput through pgmlcat, beside direct Postgres and PgBouncer.
#
# Builds a throwaway PostgreSQL 15 cluster on a free loopback port, loads it
# with `pgbench -i -s 10`, starts PgBouncer and pgmlcat in front of it (both in
# transaction mode, same pool size), then runs `pgbench -S` against the
# targets, interleaved (round -> scenario -> target) so that drift on the
# machine hits every target alike. Prints the median TPS per scenario and the
# ratios between targets, and writes the same table as markdown to
# benches/results/pgbench-<date>.md.
#
# A fourth target, `floor`, is benches/floor_proxy.c: the cheapest possible
# TCP proxy (1:1 connections, one recv + one send per message, no parsing).
# It runs in the simple and extended scenarios and bounds what any proxy can
# reach on this machine (at 64 clients it holds 64 server connections, so
# there it measures Postgres with 64 backends more than a proxy). A fifth,
# `tokio`, is benches/floor_tokio.rs: the same floor on the runtime pgmlcat
# runs on (one current-thread runtime, a task per client), whose user CPU per
# transaction is what tokio itself costs before a proxy does anything. A second table gives each proxy's own cost
# per transaction, from /proc: user and system CPU microseconds, and the
# times it was preempted (involuntary context switches).
#
# The cost of session parameter tracking: set-simple-16 and set-extended-16
# are simple-16 and extended-16 where every client first sends one SET
# statement (SET_SQL, default `SET statement_timeout = '1h'`, the same value
# for all), then runs the -S transaction as before. pgbench has no
# once-per-connection hook, so this is a custom script (-f) whose client
# variables do it: variables live per client for the whole run, so
#     \if :set_done = 0          (-D set_done=0 gives each client a 0)
#     SET statement_timeout = '1h';
#     \set set_done 1
#     \endif
#     \set aid random(1, 100000 * :scale)      (-s 10: the builtin -S script)
#     SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
# sends the SET in each client's first transaction only (checked with
# log_statement = all: one SET per client, in all three protocols; the SET
# goes through -M's protocol like the SELECT). It is a real SET the poolers
# see, not a startup parameter (PGOPTIONS='-c ...' would be one). The first
# transaction of each client is SET + SELECT; every other one is the SELECT
# alone plus one \if evaluated in pgbench, so set-X / plain-X from the same
# run is what carrying a SET parameter costs: for pgmlcat, noting the SET,
# reading it back once, and keeping every server it lands on in line with
# it (one value for all clients, so after the first round trip per server
# there is nothing to send: the steady-state cost is the comparison). A
# third table prints set-X / plain-X per target (median of the per-round
# ratios; each set scenario runs right after its plain one). Selecting a
# set-X scenario runs X too. PgBouncer 1.18 tracks only the reported
# parameters (application_name, client_encoding, DateStyle, TimeZone,
# standard_conforming_strings; track_extra_parameters is 1.20+): a SET of
# another one stays on the server connection it ran on (harmless here, all
# clients want the same value), so its ratio is the SET without tracking;
# with SET_SQL="SET application_name = 'set'" both poolers track it.
#
# Usage: benches/pgbench.sh            (from anywhere; paths are repo-relative)
#
# Environment knobs:
#   DURATION=10        seconds per pgbench run (-T)
#   ROUNDS=3           interleaved rounds; the table shows the median
#   POOL_SIZE=10       server connections per pool (PgBouncer and pgmlcat)
#   SCENARIOS=...      optional filter: comma/space separated names or globs,
#                      e.g. "simple-16,prepared-*". Names: simple-16
#                      set-simple-16 extended-16 set-extended-16
#                      prepared-16 simple-64 extended-64 prepared-64
#                      connect-16 (set-X also runs X, for the ratio)
#   SET_SQL=...        the statement of the set-* scenarios (default
#                      "SET statement_timeout = '1h'"; a constant: in
#                      -M extended pgbench variables become $n parameters,
#                      which SET does not take)
#   PGMLCAT_BIN=...    pgmlcat binary (default ./target/release/pgmlcat)
#   NO_BUILD=1         do not run `cargo build --release` when it is missing
#   SKIP_PGMLCAT=1     do not start pgmlcat at all; its columns print n/a
#   PGMLCAT_LOG_LEVEL  --log-level passed to pgmlcat (default warn)
#   NO_FLOOR=1         do not build and run benches/floor_proxy.c nor
#                      benches/floor_tokio.rs
#   SERVER_SOCKET=tcp  how the proxies reach Postgres: tcp (127.0.0.1), or
#                      unix (its socket directory; all proxies alike)
#   PG_BIN             PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#   RESULTS_DIR        where the markdown goes (default benches/results)
#
# Needs: PostgreSQL 15 server binaries, pgbouncer (apt-get install -y
# pgbouncer), python3. Run as root (Postgres and PgBouncer then run as the
# `postgres` OS user) or as an ordinary user.

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"

DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
POOL_SIZE="${POOL_SIZE:-10}"
SCENARIOS="${SCENARIOS:-}"
SET_SQL="${SET_SQL:-SET statement_timeout = '1h'}"
SCALE=10
PGMLCAT_BIN="${PGMLCAT_BIN:-$REPO_ROOT/target/release/pgmlcat}"
PGMLCAT_LOG_LEVEL="${PGMLCAT_LOG_LEVEL:-warn}"
NO_BUILD="${NO_BUILD:-0}"
NO_FLOOR="${NO_FLOOR:-0}"
SERVER_SOCKET="${SERVER_SOCKET:-tcp}"
SKIP_PGMLCAT="${SKIP_PGMLCAT:-0}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
RESULTS_DIR="${RESULTS_DIR:-$REPO_ROOT/benches/results}"
PGBOUNCER_BIN="${PGBOUNCER_BIN:-$(command -v pgbouncer || true)}"

DB=app
DB_USER=app
DB_PASS=app_pw

log() { printf '[pgbench.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for v in DURATION ROUNDS POOL_SIZE; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
[[ "$SERVER_SOCKET" == tcp || "$SERVER_SOCKET" == unix ]] ||
  die "SERVER_SOCKET must be tcp or unix (got '$SERVER_SOCKET')"

# ---------------------------------------------------------------- prerequisites
for b in initdb pg_ctl pgbench psql; do
  [[ -x "$PG_BIN/$b" ]] || die "$PG_BIN/$b not found (install postgresql-15)"
done
command -v python3 >/dev/null || die "python3 is required"
[[ -n "$PGBOUNCER_BIN" && -x "$PGBOUNCER_BIN" ]] ||
  die "pgbouncer not found; install it with: apt-get update && apt-get install -y pgbouncer"

if [[ "$SKIP_PGMLCAT" != 1 ]]; then
  if [[ ! -x "$PGMLCAT_BIN" ]]; then
    if [[ "$NO_BUILD" == 1 ]]; then
      die "$PGMLCAT_BIN missing and NO_BUILD=1 (set SKIP_PGMLCAT=1 to bench without it)"
    fi
    log "building pgmlcat (cargo build --release)"
    (cd "$REPO_ROOT" && cargo build --release) || die "cargo build --release failed"
    [[ -x "$PGMLCAT_BIN" ]] || die "$PGMLCAT_BIN still missing after the build"
  fi
fi

# Run a command as the postgres OS user when we are root (Postgres and
# PgBouncer refuse to run as root).
as_pg() {
  if [[ "$(id -u)" == 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}
if [[ "$(id -u)" == 0 ]]; then
  id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' OS user"
fi

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

version_ge() { # version_ge A B: A >= B
  [[ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" == "$2" ]]
}

# ---------------------------------------------------------------- cleanup
TMP_DIR=""
PG_STARTED=0
PGMLCAT_PID=""
FLOOR_PID=""
TOKIO_FLOOR_PID=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if [[ -n "$TOKIO_FLOOR_PID" ]]; then
    kill -KILL "$TOKIO_FLOOR_PID" 2>/dev/null
    wait "$TOKIO_FLOOR_PID" 2>/dev/null
  fi
  if [[ -n "$FLOOR_PID" ]]; then
    kill -KILL "$FLOOR_PID" 2>/dev/null
    wait "$FLOOR_PID" 2>/dev/null
  fi
  if [[ -n "$PGMLCAT_PID" ]] && kill -0 "$PGMLCAT_PID" 2>/dev/null; then
    log "stopping pgmlcat (pid $PGMLCAT_PID)"
    kill -TERM "$PGMLCAT_PID" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$PGMLCAT_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PGMLCAT_PID" 2>/dev/null
    wait "$PGMLCAT_PID" 2>/dev/null
  fi
  if [[ -n "$TMP_DIR" && -s "$TMP_DIR/pgbouncer.pid" ]]; then
    local bpid
    bpid="$(cat "$TMP_DIR/pgbouncer.pid")"
    if [[ -n "$bpid" ]] && kill -0 "$bpid" 2>/dev/null; then
      log "stopping pgbouncer (pid $bpid)"
      kill -TERM "$bpid" 2>/dev/null
      for _ in $(seq 1 50); do kill -0 "$bpid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$bpid" 2>/dev/null
    fi
  fi
  if [[ "$PG_STARTED" == 1 ]]; then
    log "stopping postgres"
    as_pg "$PG_BIN/pg_ctl" -D "$TMP_DIR/data" -m immediate -w stop >/dev/null 2>&1
  fi
  if [[ -n "$TMP_DIR" && -d "$TMP_DIR" ]]; then
    rm -rf -- "$TMP_DIR"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

TMP_DIR="$(mktemp -d "${TMPDIR:-/tmp}/pgmlcat-bench.XXXXXX")"
chmod 777 "$TMP_DIR"

show_log_tail() { # file
  [[ -f "$1" ]] && { log "--- tail of $1 ---"; tail -n 30 "$1" >&2 || true; }
}

# ---------------------------------------------------------------- postgres
PG_PORT="$(free_port)"
log "initdb in $TMP_DIR/data (port $PG_PORT)"
as_pg "$PG_BIN/initdb" -D "$TMP_DIR/data" -U postgres --auth=trust -E UTF8 --locale=C \
  >"$TMP_DIR/initdb.log" 2>&1 || { show_log_tail "$TMP_DIR/initdb.log"; die "initdb failed"; }

as_pg tee -a "$TMP_DIR/data/postgresql.conf" >/dev/null <<EOF

# --- pgmlcat benchmark settings ---
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$TMP_DIR'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 128MB
EOF
as_pg tee "$TMP_DIR/data/pg_hba.conf" >/dev/null <<EOF
local   all   all                 trust
host    all   all   127.0.0.1/32  trust
EOF

as_pg "$PG_BIN/pg_ctl" -D "$TMP_DIR/data" -l "$TMP_DIR/postgres.log" -w -t 60 start >/dev/null ||
  { show_log_tail "$TMP_DIR/postgres.log"; die "postgres failed to start"; }
PG_STARTED=1

export PGPASSWORD="$DB_PASS"
export PGCONNECT_TIMEOUT=10
unset PGHOST PGPORT PGUSER PGDATABASE PGSERVICE PGOPTIONS PGSSLMODE 2>/dev/null || true

"$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres <<EOF
CREATE ROLE $DB_USER WITH LOGIN SUPERUSER PASSWORD '$DB_PASS';
CREATE DATABASE $DB OWNER $DB_USER;
EOF
log "pgbench -i -s $SCALE"
"$PG_BIN/pgbench" -i -s "$SCALE" -q -h 127.0.0.1 -p "$PG_PORT" -U "$DB_USER" "$DB" \
  >"$TMP_DIR/pgbench-init.log" 2>&1 || { show_log_tail "$TMP_DIR/pgbench-init.log"; die "pgbench -i failed"; }

PG_VERSION="$("$PG_BIN/postgres" --version | awk '{print $3}')"

# Where the proxies find Postgres.
SERVER_HOST=127.0.0.1
FLOOR_SERVER="$PG_PORT"
if [[ "$SERVER_SOCKET" == unix ]]; then
  SERVER_HOST="$TMP_DIR"
  FLOOR_SERVER="$TMP_DIR/.s.PGSQL.$PG_PORT"
fi

wait_ready() { # name port [pid]
  local name=$1 port=$2 pid=${3:-}
  for _ in $(seq 1 150); do
    if "$PG_BIN/psql" -X -q -At -h 127.0.0.1 -p "$port" -U "$DB_USER" -d "$DB" \
      -c 'SELECT 1' >/dev/null 2>&1; then
      return 0
    fi
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
      return 1
    fi
    sleep 0.2
  done
  return 1
}

# ---------------------------------------------------------------- pgbouncer
PGBOUNCER_VERSION="$("$PGBOUNCER_BIN" --version 2>/dev/null | awk 'NR==1{print $2}')"
PGBOUNCER_PREPARED=0
if version_ge "${PGBOUNCER_VERSION:-0}" 1.21; then
  PGBOUNCER_PREPARED=1
fi
BOUNCER_PORT="$(free_port)"
printf '"%s" "%s"\n' "$DB_USER" "$DB_PASS" >"$TMP_DIR/userlist.txt"
{
  echo "[databases]"
  echo "$DB = host=$SERVER_HOST port=$PG_PORT dbname=$DB"
  echo
  echo "[pgbouncer]"
  echo "listen_addr = 127.0.0.1"
  echo "listen_port = $BOUNCER_PORT"
  echo "unix_socket_dir ="
  echo "auth_type = md5"
  echo "auth_file = $TMP_DIR/userlist.txt"
  echo "pool_mode = transaction"
  echo "default_pool_size = $POOL_SIZE"
  echo "max_client_conn = 2000"
  echo "logfile = $TMP_DIR/pgbouncer.log"
  echo "pidfile = $TMP_DIR/pgbouncer.pid"
  echo "log_connections = 0"
  echo "log_disconnections = 0"
  echo "ignore_startup_parameters = extra_float_digits"
  if [[ "$PGBOUNCER_PREPARED" == 1 ]]; then
    echo "max_prepared_statements = 200"
  fi
} >"$TMP_DIR/pgbouncer.ini"
chmod 644 "$TMP_DIR/pgbouncer.ini" "$TMP_DIR/userlist.txt"

log "starting pgbouncer $PGBOUNCER_VERSION on port $BOUNCER_PORT"
as_pg "$PGBOUNCER_BIN" -d "$TMP_DIR/pgbouncer.ini" >>"$TMP_DIR/pgbouncer.out" 2>&1 ||
  { show_log_tail "$TMP_DIR/pgbouncer.out"; show_log_tail "$TMP_DIR/pgbouncer.log"; die "pgbouncer failed to start"; }
wait_ready pgbouncer "$BOUNCER_PORT" ||
  { show_log_tail "$TMP_DIR/pgbouncer.log"; die "pgbouncer is not accepting connections"; }

# ---------------------------------------------------------------- pgmlcat
PGMLCAT_PORT=""
PGMLCAT_VERSION="n/a"
if [[ "$SKIP_PGMLCAT" != 1 ]]; then
  PGMLCAT_PORT="$(free_port)"
  cat >"$TMP_DIR/pgcat.toml" <<EOF
[general]
host = "127.0.0.1"
port = $PGMLCAT_PORT
admin_username = "admin"
admin_password = "admin_pw"
worker_threads = ${WORKER_THREADS:-1}

[pools.$DB]
pool_mode = "transaction"

[pools.$DB.users.0]
username = "$DB_USER"
password = "$DB_PASS"
pool_size = $POOL_SIZE

[pools.$DB.shards.0]
servers = [["$SERVER_HOST", $PG_PORT, "primary"]]
database = "$DB"
EOF
  log "starting pgmlcat ($PGMLCAT_BIN) on port $PGMLCAT_PORT"
  "$PGMLCAT_BIN" "$TMP_DIR/pgcat.toml" --log-level "$PGMLCAT_LOG_LEVEL" \
    >"$TMP_DIR/pgmlcat.log" 2>&1 </dev/null &
  PGMLCAT_PID=$!
  wait_ready pgmlcat "$PGMLCAT_PORT" "$PGMLCAT_PID" ||
    { show_log_tail "$TMP_DIR/pgmlcat.log"; die "pgmlcat is not accepting connections"; }
  PGMLCAT_VERSION="$(cd "$REPO_ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
fi

# ---------------------------------------------------------------- floor
# Not a pooler: one server connection per client. Run without -C only, and
# read at 64 clients as Postgres with 64 backends (see the header).
FLOOR_PORT=""
if [[ "$NO_FLOOR" != 1 ]]; then
  CC_BIN="$(command -v cc || command -v gcc || true)"
  if [[ -n "$CC_BIN" ]] &&
    "$CC_BIN" -O2 -o "$TMP_DIR/floor_proxy" "$SCRIPT_DIR/floor_proxy.c" 2>"$TMP_DIR/floor-cc.log"; then
    FLOOR_PORT="$(free_port)"
    "$TMP_DIR/floor_proxy" "$FLOOR_PORT" "$FLOOR_SERVER" >"$TMP_DIR/floor.log" 2>&1 </dev/null &
    FLOOR_PID=$!
    wait_ready floor "$FLOOR_PORT" "$FLOOR_PID" || { show_log_tail "$TMP_DIR/floor.log"; die "floor_proxy is not accepting connections"; }
    log "floor_proxy on port $FLOOR_PORT"
  else
    log "no C compiler (or it failed, see $TMP_DIR/floor-cc.log): the floor column reads n/a"
  fi
fi

# The tokio floor: built beside pgmlcat (cargo's lock keeps builds apart).
TOKIO_FLOOR_PORT=""
TOKIO_FLOOR_BIN="$REPO_ROOT/target/release/examples/floor_tokio"
if [[ "$NO_FLOOR" != 1 && "$SERVER_SOCKET" == tcp ]]; then
  if [[ "$NO_BUILD" != 1 || ! -x "$TOKIO_FLOOR_BIN" ]]; then
    (cd "$REPO_ROOT" && cargo build --release --quiet --example floor_tokio) >"$TMP_DIR/floor-tokio-build.log" 2>&1 || true
  fi
  if [[ -x "$TOKIO_FLOOR_BIN" ]]; then
    TOKIO_FLOOR_PORT="$(free_port)"
    "$TOKIO_FLOOR_BIN" "$TOKIO_FLOOR_PORT" "$PG_PORT" >"$TMP_DIR/floor-tokio.log" 2>&1 </dev/null &
    TOKIO_FLOOR_PID=$!
    wait_ready tokio "$TOKIO_FLOOR_PORT" "$TOKIO_FLOOR_PID" || { show_log_tail "$TMP_DIR/floor-tokio.log"; die "floor_tokio is not accepting connections"; }
    log "floor_tokio on port $TOKIO_FLOOR_PORT"
  else
    log "floor_tokio did not build (see $TMP_DIR/floor-tokio-build.log): the tokio column reads n/a"
  fi
fi

# ---------------------------------------------------------------- scenarios
# name mode clients connect-per-transaction floor script (builtin -S, or
# the -S transaction after one SET per client; see the header). A set
# scenario follows its plain one, so that the two run close in time.
ALL_SCENARIOS=(
  "simple-16 simple 16 0 1 select"
  "set-simple-16 simple 16 0 0 set"
  "extended-16 extended 16 0 1 select"
  "set-extended-16 extended 16 0 0 set"
  "prepared-16 prepared 16 0 0 select"
  "simple-64 simple 64 0 1 select"
  "extended-64 extended 64 0 1 select"
  "prepared-64 prepared 64 0 0 select"
  "connect-16 simple 16 1 0 select"
)
ALL_NAMES="$(for s in "${ALL_SCENARIOS[@]}"; do read -r n _ <<<"$s"; printf '%s ' "$n"; done)"

selected() { # name
  [[ -z "$SCENARIOS" ]] && return 0
  local pat
  for pat in ${SCENARIOS//,/ }; do
    # shellcheck disable=SC2053
    [[ "$1" == $pat ]] && return 0
  done
  return 1
}

# X runs when it is selected or when set-X is (set-X / X is the point).
wanted() { # name
  selected "$1" && return 0
  [[ " $ALL_NAMES " == *" set-$1 "* ]] && selected "set-$1"
}

RUN_SCENARIOS=()
for s in "${ALL_SCENARIOS[@]}"; do
  read -r name _ <<<"$s"
  wanted "$name" && RUN_SCENARIOS+=("$s")
done
((${#RUN_SCENARIOS[@]} > 0)) || die "SCENARIOS='$SCENARIOS' matches none of: $ALL_NAMES"

# The script of the set scenarios (see the header).
SET_SCRIPT="$TMP_DIR/set-select.sql"
cat >"$SET_SCRIPT" <<EOF
\\if :set_done = 0
${SET_SQL%;};
\\set set_done 1
\\endif
\\set aid random(1, 100000 * :scale)
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
EOF
chmod 644 "$SET_SCRIPT"

TARGETS=(direct pgbouncer pgmlcat floor tokio)
target_port() {
  case $1 in
    direct) echo "$PG_PORT" ;;
    pgbouncer) echo "$BOUNCER_PORT" ;;
    pgmlcat) echo "$PGMLCAT_PORT" ;;
    floor) echo "$FLOOR_PORT" ;;
    tokio) echo "$TOKIO_FLOOR_PORT" ;;
  esac
}
target_pid() {
  case $1 in
    pgbouncer) cat "$TMP_DIR/pgbouncer.pid" 2>/dev/null ;;
    pgmlcat) echo "$PGMLCAT_PID" ;;
    floor) echo "$FLOOR_PID" ;;
    tokio) echo "$TOKIO_FLOOR_PID" ;;
  esac
}

# A process's user and system CPU in clock ticks, and its involuntary context
# switches summed over its threads: "utime stime nonvoluntary".
proc_cost() { # pid
  local pid=$1 ut st inv=0 n
  [[ -n "$pid" && -r "/proc/$pid/stat" ]] || { echo "0 0 0"; return; }
  # Fields after the ")" that ends the command name: utime is the 12th.
  read -r ut st < <(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12, $13}')
  for n in $(awk '/^nonvoluntary_ctxt_switches/ {print $2}' /proc/"$pid"/task/*/status 2>/dev/null); do
    inv=$((inv + n))
  done
  echo "$ut $st $inv"
}
CLK_TCK="$(getconf CLK_TCK 2>/dev/null || echo 100)"

# results.tsv: round scenario target tps failed_txns exit_code txns
#              user_ticks sys_ticks involuntary_switches
RESULTS="$TMP_DIR/results.tsv"
: >"$RESULTS"

skipped() { # target mode floor
  [[ "$1" == floor && ("$3" != 1 || -z "$FLOOR_PORT") ]] ||
    [[ "$1" == tokio && ("$3" != 1 || -z "$TOKIO_FLOOR_PORT") ]] ||
    [[ "$1" == pgmlcat && "$SKIP_PGMLCAT" == 1 ]] ||
    [[ "$1" == pgbouncer && "$2" == prepared && "$PGBOUNCER_PREPARED" != 1 ]]
}
runs_total=0
for s in "${RUN_SCENARIOS[@]}"; do
  read -r _ mode _ _ floor _ <<<"$s"
  for target in "${TARGETS[@]}"; do
    skipped "$target" "$mode" "$floor" || runs_total=$((runs_total + ROUNDS))
  done
done
log "running $runs_total pgbench runs of ${DURATION}s (rounds=$ROUNDS pool_size=$POOL_SIZE)"
run_no=0
for round in $(seq 1 "$ROUNDS"); do
  for s in "${RUN_SCENARIOS[@]}"; do
    read -r name mode clients connect floor script <<<"$s"
    for target in "${TARGETS[@]}"; do
      if skipped "$target" "$mode" "$floor"; then
        printf '%s\t%s\t%s\tskip\t0\t0\t0\t0\t0\t0\n' "$round" "$name" "$target" >>"$RESULTS"
        continue
      fi
      run_no=$((run_no + 1))
      port="$(target_port "$target")"
      pid="$(target_pid "$target")"
      read -r ut0 st0 inv0 < <(proc_cost "$pid")
      out="$TMP_DIR/run-$round-$name-$target.log"
      if [[ "$script" == set ]]; then
        args=(-f "$SET_SCRIPT" -s "$SCALE" -D set_done=0)
      else
        args=(-S)
      fi
      args+=(-T "$DURATION" -c "$clients" -j 2 -M "$mode" -n)
      [[ "$connect" == 1 ]] && args+=(-C)
      rc=0
      "$PG_BIN/pgbench" "${args[@]}" -h 127.0.0.1 -p "$port" -U "$DB_USER" "$DB" \
        >"$out" 2>&1 </dev/null || rc=$?
      read -r ut1 st1 inv1 < <(proc_cost "$pid")
      txns="$(awk '/^number of transactions actually processed/ {print $NF; exit}' "$out")"
      [[ "$txns" =~ ^[0-9]+$ ]] || txns=0
      # PG14+: "tps = N (without initial connection time)"; with -C:
      # "tps = N (including reconnection times)". Older: two tps lines.
      tps="$(awk '/^tps = / && /without initial connection time|including reconnection times/ {print $3; exit}' "$out")"
      [[ -n "$tps" ]] || tps="$(awk '/^tps = / {v=$3} END {if (v != "") print v}' "$out")"
      [[ -n "$tps" ]] || tps="NA"
      failed="$(awk -F'[: ]+' '/^number of failed transactions/ {print $5; exit}' "$out")"
      [[ "$failed" =~ ^[0-9]+$ ]] || failed=0
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "$target" "$tps" "$failed" "$rc" \
        "$txns" $((ut1 - ut0)) $((st1 - st0)) $((inv1 - inv0)) >>"$RESULTS"
      status=""
      if [[ "$rc" != 0 ]]; then
        status=" EXIT $rc"
        grep -E 'error|FATAL|abort' "$out" | head -n 3 | sed 's/^/    /' >&2 || true
      fi
      [[ "$failed" != 0 ]] && status="$status failed=$failed"
      log "[$run_no/$runs_total] round $round $name $target: tps=$tps$status"
    done
  done
done

# ---------------------------------------------------------------- report
mkdir -p "$RESULTS_DIR"
STAMP="$(date +%Y%m%d-%H%M%S)"
MD_OUT="$RESULTS_DIR/pgbench-$STAMP.md"

SCENARIO_ORDER="$(for s in "${RUN_SCENARIOS[@]}"; do read -r n _ <<<"$s"; echo "$n"; done | paste -sd, -)" \
RESULTS="$RESULTS" MD_OUT="$MD_OUT" DURATION="$DURATION" ROUNDS="$ROUNDS" POOL_SIZE="$POOL_SIZE" \
PG_VERSION="$PG_VERSION" PGBOUNCER_VERSION="$PGBOUNCER_VERSION" PGMLCAT_VERSION="$PGMLCAT_VERSION" \
NPROC="$(nproc 2>/dev/null || echo '?')" CLK_TCK="$CLK_TCK" SERVER_SOCKET="$SERVER_SOCKET" \
SET_SQL="${SET_SQL%;}" SCALE="$SCALE" \
python3 - <<'PY'
import os, statistics, datetime, platform

rows = {}
costs = {}  # (scenario, proxy) -> [(user us/tx, sys us/tx, preemptions/tx)]
tick_us = 1e6 / int(os.environ["CLK_TCK"])
for line in open(os.environ["RESULTS"]):
    rnd, scen, target, tps, failed, rc, txns, ut, st, inv = line.rstrip("\n").split("\t")
    rows.setdefault((scen, target), []).append((tps, int(failed), int(rc)))
    if target != "direct" and tps != "skip" and int(txns) > 0:
        n = int(txns)
        costs.setdefault((scen, target), []).append(
            (int(ut) * tick_us / n, int(st) * tick_us / n, int(inv) / n))

order = os.environ["SCENARIO_ORDER"].split(",")
targets = ["direct", "pgbouncer", "pgmlcat", "floor", "tokio"]
proxies = ["pgbouncer", "pgmlcat", "floor", "tokio"]
mode = {"simple": "simple", "extended": "extended", "prepared": "prepared", "connect": "simple -C",
        "set-simple": "simple + SET", "set-extended": "extended + SET"}

def med(scen, target):
    runs = rows.get((scen, target), [])
    vals = [float(t) for t, _, _ in runs if t not in ("skip", "NA")]
    if not runs or all(t == "skip" for t, _, _ in runs):
        return None, "n/a"
    if not vals:
        return None, "FAIL"
    m = statistics.median(vals)
    return m, f"{m:,.0f}"

def fails(scen, target):
    runs = [r for r in rows.get((scen, target), []) if r[0] != "skip"]
    if not runs:
        return "-"
    txns = sum(f for _, f, _ in runs)
    bad = sum(1 for t, _, rc in runs if rc != 0 or t == "NA")
    s = str(txns)
    if bad:
        s += f"+{bad}E"
    return s

def ratio(a, b):
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}"

header = ["scenario", "clients", "direct", "pgbouncer", "pgmlcat", "floor", "tokio",
          "pgmlcat/pgbouncer", "pgmlcat/floor", "floor/pgbouncer", "pgmlcat/direct", "pgbouncer/direct",
          "failed d/b/m/f/t"]
table = []
for scen in order:
    kind, clients = scen.rsplit("-", 1)
    m = {t: med(scen, t) for t in targets}
    table.append([
        mode.get(kind, kind), clients,
        m["direct"][1], m["pgbouncer"][1], m["pgmlcat"][1], m["floor"][1], m["tokio"][1],
        ratio(m["pgmlcat"][0], m["pgbouncer"][0]),
        ratio(m["pgmlcat"][0], m["floor"][0]),
        ratio(m["floor"][0], m["pgbouncer"][0]),
        ratio(m["pgmlcat"][0], m["direct"][0]),
        ratio(m["pgbouncer"][0], m["direct"][0]),
        "/".join(fails(scen, t) for t in targets),
    ])

def cost(scen, proxy):
    runs = costs.get((scen, proxy))
    if not runs:
        return ["n/a"] * 3
    return [f"{statistics.median(r[i] for r in runs):.{p}f}" for i, p in ((0, 1), (1, 1), (2, 2))]

cost_header = ["scenario", "clients"] + [f"{p} {c}" for p in proxies for c in ("user", "sys", "preempt")]
cost_table = []
for scen in order:
    kind, clients = scen.rsplit("-", 1)
    cost_table.append([mode.get(kind, kind), clients] + [v for p in proxies for v in cost(scen, p)])

# set-X / X per target, round by round (the two run close in time within a
# round), then the median of those ratios.
def round_tps(scen, target):
    out = {}
    for line in open(os.environ["RESULTS"]):
        rnd, sc, tg, tps = line.split("\t")[:4]
        if sc == scen and tg == target and tps not in ("skip", "NA"):
            out[rnd] = float(tps)
    return out

set_targets = ["direct", "pgbouncer", "pgmlcat"]
set_header = ["scenario", "clients"] + [f"{t} set/plain" for t in set_targets] + ["pgmlcat per round", "pgmlcat cost"]
set_table = []
for scen in order:
    if not scen.startswith("set-") or scen[4:] not in order:
        continue
    base = scen[4:]
    kind, clients = base.rsplit("-", 1)
    row = [mode.get(kind, kind), clients]
    per_round = {}
    for t in set_targets:
        a, b = round_tps(scen, t), round_tps(base, t)
        rs = [a[r] / b[r] for r in sorted(a, key=int) if r in b and b[r] > 0]
        per_round[t] = rs
        row.append(f"{statistics.median(rs):.3f}" if rs else "n/a")
    rs = per_round["pgmlcat"]
    row.append(" ".join(f"{r:.3f}" for r in rs) if rs else "n/a")
    row.append(f"{(1 - statistics.median(rs)) * 100:+.1f}%" if rs else "n/a")
    set_table.append(row)

def show(header, table):
    widths = [max(len(str(r[i])) for r in [header] + table) for i in range(len(header))]
    def fmt(r):
        return "  ".join(str(c).rjust(w) if i >= 1 else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    print(fmt(header))
    print("  ".join("-" * w for w in widths))
    for r in table:
        print(fmt(r))
    print()

def markdown(f, header, table):
    f.write("| " + " | ".join(header) + " |\n")
    f.write("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|\n")
    for r in table:
        f.write("| " + " | ".join(str(c) for c in r) + " |\n")

print()
print(f"pgbench -S, median TPS of {os.environ['ROUNDS']} round(s) x {os.environ['DURATION']}s, "
      f"pool_size={os.environ['POOL_SIZE']}, -j 2")
show(header, table)
print("each proxy's own cost per transaction (median): CPU microseconds in user space and in")
print("the kernel, and involuntary context switches (preemptions)")
show(cost_header, cost_table)
if set_table:
    print(f"cost of one SET per client ({os.environ['SET_SQL']}): TPS of set-X / X, median of the")
    print("per-round ratios; pgmlcat cost = 1 - its ratio (the issue's bound: 3%)")
    show(set_header, set_table)

now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
with open(os.environ["MD_OUT"], "w") as f:
    f.write(f"# pgbench -S: direct vs PgBouncer vs pgmlcat\n\n")
    f.write(f"- date: {now}\n")
    f.write(f"- host: {platform.node()} ({os.environ['NPROC']} CPUs, {platform.machine()})\n")
    f.write(f"- PostgreSQL {os.environ['PG_VERSION']}, PgBouncer {os.environ['PGBOUNCER_VERSION']}, "
            f"pgmlcat {os.environ['PGMLCAT_VERSION']}\n")
    f.write(f"- `pgbench -S -T {os.environ['DURATION']} -j 2 -n`, scale 10, "
            f"{os.environ['ROUNDS']} interleaved round(s), median TPS shown\n")
    f.write(f"- both poolers: transaction mode, pool size {os.environ['POOL_SIZE']}; "
            f"direct: trust auth, poolers: password auth to the client; the proxies reach "
            f"Postgres over {'its Unix socket' if os.environ['SERVER_SOCKET'] == 'unix' else 'TCP (127.0.0.1)'}\n")
    f.write("- `failed d/b/m/f/t`: failed transactions summed over rounds for direct/pgbouncer/pgmlcat/floor/tokio; "
            "`+NE` = N runs that exited non-zero or printed no TPS; `n/a` = not run "
            "(PgBouncer < 1.21 has no prepared-statement support in transaction mode; pgmlcat skipped; "
            "floors only in the simple and extended scenarios)\n")
    f.write("- `floor`: benches/floor_proxy.c, the cheapest possible proxy (one server connection per "
            "client, one recv + one send per message, no parsing): an upper bound for any proxy here "
            "(at 64 clients it holds 64 server connections: there it measures Postgres more than a proxy); "
            "`tokio`: benches/floor_tokio.rs, the same on tokio's current-thread runtime (a task per client)\n\n")
    markdown(f, header, table)
    f.write("\nEach proxy's own cost per transaction (median over rounds), from /proc: CPU microseconds "
            "in user space and in the kernel, and involuntary context switches (preemptions).\n\n")
    markdown(f, cost_header, cost_table)
    if set_table:
        f.write(f"\nCost of parameter tracking: in the `+ SET` rows each client sends `{os.environ['SET_SQL']};` "
                "once, in its first transaction (a custom script: `\\if :set_done = 0` around the SET, "
                "`-D set_done=0`, then the builtin -S transaction), and carries that parameter for the rest "
                "of the run. TPS of set-X / X for each target, median of the per-round ratios (each set "
                "scenario runs right after its plain one in a round); `pgmlcat cost` = 1 - pgmlcat's ratio, "
                "which the issue bounds at 3%. PgBouncer 1.18 tracks only reported parameters "
                "(application_name, client_encoding, DateStyle, TimeZone, standard_conforming_strings): "
                "another SET stays on the server connection it ran on, untracked.\n\n")
        markdown(f, set_header, set_table)
print(f"markdown written to {os.environ['MD_OUT']}")
PY
