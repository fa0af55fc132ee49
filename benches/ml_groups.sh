#!/usr/bin/env bash
# Issue #18's benchmarks, side by side in one run (sides interleaved, order
# alternating by round, medians of REPEAT rounds):
#
#  A. Linear regression on a 2-shard pool: A_ROWS rows x 10 float8 features
#     + label (y linear in the features plus noise), split by id % 2 over two
#     PostgreSQL clusters; `pgml.train(..., algorithm => 'linear',
#     hyperparams => '{"pushdown": true}')` against '{"pushdown": false}'
#     (pull-and-fit): wall time, ratio (target: pushdown >= 5x faster), bytes
#     the proxy received from the databases, CPU of pgmlcat and of the
#     clusters, coefficients against the true ones.
#  B. N_GROUPS groups x GROUP_ROWS rows, LightGBM per group: `pgml.train(...,
#     algorithm => 'lightgbm', group_by => 'g', test_sampling => 'last',
#     test_size => 0.25)` against Python doing the same work (psycopg binary
#     COPY -> pandas groupby -> one lightgbm.train per group on the first 75%
#     of the group's rows, same parameters, same threads), timed as a whole
#     process. Target: pgmlcat <= 0.5x Python's wall time.
#  C. C_ROWS rows x 10 float4 features, LightGBM regression (C_ITERATIONS
#     rounds) with '{"streaming": true}' against '{"streaming": false}', a
#     fresh pgmlcat per run: its peak RSS (VmHWM) and wall time. Targets:
#     streaming peak RSS <= 1 GB, wall <= 1.1x the in-memory path.
#
# Two throwaway PostgreSQL 15 clusters (as the postgres OS user when run as
# root); A runs through a 2-shard pgmlcat (default_shard = "all", as
# tests/it/common/mod.rs sharded_pool_config), B and C through a pgmlcat
# whose one shard is cluster 0. Tables are UNLOGGED, made with
# generate_series (seeded), frozen and analyzed, then read once into the OS
# cache. No run starts while a cargo or rustc process is alive (BUILD_WAIT).
# benches/ml_groups.py does the data, the runs, the Python side and the
# markdown: benches/results/ml-groups-<date>.md (with DIAG_A=1, diagnostics of
# A's pushdown statement straight on shard 0 are appended). A failed call is recorded
# (the report's Errors, and FINDINGS) and the run goes on.
#
# Usage: benches/ml_groups.sh [pgmlcat-binary]
#   (without one: target/release/pgmlcat, built with cargo build --release
#   under flock /tmp/cargo.lock unless NO_BUILD=1; the binary is copied into
#   the bench's directory so a later build does not change it mid-run)
#
# Environment knobs:
#   SECTIONS="A B C"     which sections to run
#   SMOKE=1              small defaults for everything below (a run of under a minute;
#                        the full sizes take about 35 minutes on 2 cores, 2 GB of disk)
#   A_ROWS=10000000      rows of A (both shards together)
#   N_GROUPS=1000        groups of B (not GROUPS: bash keeps that name for itself)
#   GROUP_ROWS=2000      rows per group of B
#   B_ITERATIONS=100     LightGBM boosting rounds in B, both sides
#   C_ROWS=20000000      rows of C
#   C_ITERATIONS=50      LightGBM boosting rounds in C
#   REPEAT=3             rounds per section (A_REPEAT, B_REPEAT, C_REPEAT override)
#   ML_THREADS=2         pgmlcat's [ml] threads; Python's num_threads gets the same
#   SHARED_BUFFERS=256MB each cluster's shared_buffers
#   SS_INTERVAL=0.5      seconds between socket-counter samples
#   FINDINGS=/tmp/i18/bench-findings.md   where failed calls are appended
#   PY_PATH=$REPO/.tools/py              PYTHONPATH for pandas (pip install --target)
#   BUILD_WAIT=3600      seconds to wait for running builds before a run
#   NOISY_BUSY=25        a run during which other work took more than this percent
#   NOISY_RETRIES=1      of the CPU is run again, up to this many times
#   DIAG_A=1             after the report, A's pushdown statement (from shard 0's log)
#                        in variants straight on shard 0 (jit off, hash_record split, no
#                        split, the split alone, a plain scan), DIAG_REPEAT=2 runs each
#   PGMLCAT_COMMIT       the commit the binary was built from, for the report
#   SQL_<SECTION>_<SIDE> replaces a side's pgml.train call (e.g. SQL_C_IN_MEMORY, SQL_A_PULL;
#                        keep its project name: lin_pushdown, lin_pull, grp_lgb, big_stream, big_memory)
#   POOL_SIZE=10, WORKER_THREADS, NO_BUILD=1, PG_BIN, RESULTS_DIR,
#   PGMLCAT_LOG_LEVEL, KEEP_TMP=1        as in benches/ml_common.sh
#
# Needs: PostgreSQL 15 server binaries, python3 with psycopg 3, numpy and
# lightgbm (pip-installed when missing), pandas (pip install --target
# $PY_PATH when missing), ss (iproute2).

set -euo pipefail
BENCH_NAME=ml_groups
ML_THREADS="${ML_THREADS:-2}" # before ml_common.sh, whose default is 0
# shellcheck source=benches/ml_common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/ml_common.sh"

if (($# > 0)); then
  PGMLCAT_BIN="$(realpath "$1")"
  [[ -x "$PGMLCAT_BIN" ]] || die "$1 is not an executable"
fi
SMOKE="${SMOKE:-0}"
if [[ "$SMOKE" == 1 ]]; then
  : "${A_ROWS:=200000}" "${N_GROUPS:=40}" "${GROUP_ROWS:=200}" "${B_ITERATIONS:=20}"
  : "${C_ROWS:=200000}" "${C_ITERATIONS:=10}" "${REPEAT:=1}"
fi
SECTIONS="${SECTIONS:-A B C}"
export A_ROWS="${A_ROWS:-10000000}" N_GROUPS="${N_GROUPS:-1000}" GROUP_ROWS="${GROUP_ROWS:-2000}"
export B_ITERATIONS="${B_ITERATIONS:-100}" C_ROWS="${C_ROWS:-20000000}" C_ITERATIONS="${C_ITERATIONS:-50}"
REPEAT="${REPEAT:-3}"
A_REPEAT="${A_REPEAT:-$REPEAT}" B_REPEAT="${B_REPEAT:-$REPEAT}" C_REPEAT="${C_REPEAT:-$REPEAT}"
SHARED_BUFFERS="${SHARED_BUFFERS:-256MB}"
export SS_INTERVAL="${SS_INTERVAL:-0.5}"
export FINDINGS="${FINDINGS:-/tmp/i18/bench-findings.md}"
export PY_PATH="${PY_PATH:-$REPO_ROOT/.tools/py}"
export BUILD_WAIT="${BUILD_WAIT:-3600}"
export NOISY_BUSY="${NOISY_BUSY:-25}"
NOISY_RETRIES="${NOISY_RETRIES:-1}"
DIAG_A="${DIAG_A:-1}"
check_positive A_ROWS N_GROUPS GROUP_ROWS B_ITERATIONS C_ROWS C_ITERATIONS A_REPEAT B_REPEAT C_REPEAT ML_THREADS POOL_SIZE
((A_ROWS >= 2)) || die "A_ROWS must be at least 2 (one row per shard)"
for s in $SECTIONS; do [[ "$s" =~ ^[ABC]$ ]] || die "SECTIONS: unknown section '$s'"; done
EFFECTIVE_THREADS="$ML_THREADS"

# ---------------------------------------------------------------- prerequisites
ml_prereqs
command -v ss >/dev/null || die "ss (iproute2) is required"
ml_python_deps psycopg:'psycopg[binary]' numpy:numpy lightgbm:lightgbm
if [[ " $SECTIONS " == *" B "* ]] && ! PYTHONPATH="$PY_PATH${PYTHONPATH:+:$PYTHONPATH}" python3 -c 'import pandas' 2>/dev/null; then
  log "pip install --target $PY_PATH pandas"
  python3 -m pip install --quiet --target "$PY_PATH" pandas >&2 || die "pip install pandas failed"
fi

# The machine is shared: never build while another build runs, nor measure during one.
if [[ "$NO_BUILD" != 1 && "$PGMLCAT_BIN" == "$REPO_ROOT/target/release/pgmlcat" ]]; then
  log "cargo build --release (under flock /tmp/cargo.lock)"
  (cd "$REPO_ROOT" && flock /tmp/cargo.lock cargo build --release --quiet) || die "cargo build --release failed"
fi
[[ -x "$PGMLCAT_BIN" ]] || die "$PGMLCAT_BIN not found"

# ---------------------------------------------------------------- clusters
TMP_DIR="$(mktemp -d "${TMPDIR:-/tmp}/pgmlcat-$BENCH_NAME.XXXXXX")"
chmod 777 "$TMP_DIR"
cp -p "$PGMLCAT_BIN" "$TMP_DIR/pgmlcat"
PGMLCAT_BUILT="$(date -u -r "$PGMLCAT_BIN" '+%Y-%m-%d %H:%M UTC')"
PGMLCAT_BIN="$TMP_DIR/pgmlcat"
PG_PORTS=()
PG_DIRS=()
CLUSTERS_STARTED=()

groups_cleanup() {
  local rc=$? d
  set +e
  for d in "${CLUSTERS_STARTED[@]}"; do
    as_pg "$PG_BIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1
  done
  (exit "$rc")
  ml_cleanup
}
trap groups_cleanup EXIT

start_cluster() { # index
  local dir="$TMP_DIR/pg$1" port
  port="$(free_port)"
  log "initdb cluster $1 in $dir (port $port)"
  as_pg "$PG_BIN/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 --locale=C --no-sync \
    >"$TMP_DIR/initdb$1.log" 2>&1 || { show_log_tail "$TMP_DIR/initdb$1.log"; die "initdb failed"; }
  as_pg tee -a "$dir/postgresql.conf" >/dev/null <<EOF

# --- pgmlcat ML benchmark settings ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$TMP_DIR'
max_connections = 100
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = $SHARED_BUFFERS
max_wal_size = 4GB
autovacuum = off
# Every scan from the first block: the same row order for pgmlcat and Python.
synchronize_seqscans = off
log_min_duration_statement = 100
EOF
  as_pg tee "$dir/pg_hba.conf" >/dev/null <<EOF
local   all   all                 trust
host    all   all   127.0.0.1/32  trust
EOF
  as_pg "$PG_BIN/pg_ctl" -D "$dir" -l "$TMP_DIR/postgres$1.log" -w -t 60 start >/dev/null ||
    { show_log_tail "$TMP_DIR/postgres$1.log"; die "postgres $1 failed to start"; }
  CLUSTERS_STARTED+=("$dir")
  "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres <<EOF
CREATE ROLE $DB_USER WITH LOGIN SUPERUSER PASSWORD '$DB_PASS';
CREATE DATABASE $DB OWNER $DB_USER;
EOF
  PG_PORTS[$1]="$port"
  PG_DIRS[$1]="$dir"
}

export PGPASSWORD="$DB_PASS" PGCONNECT_TIMEOUT=10
unset PGHOST PGPORT PGUSER PGDATABASE PGSERVICE PGOPTIONS PGSSLMODE 2>/dev/null || true
start_cluster 0
start_cluster 1
PG_PORT="${PG_PORTS[0]}" # psql_direct: cluster 0
PG_VERSION="$("$PG_BIN/postgres" --version | awk '{print $3}')"
PG_JIT="$(psql_direct -At -c "SELECT current_setting('jit') || CASE WHEN pg_jit_available() THEN ' (available)' ELSE ' (not available)' END")"
dsn() { echo "host=127.0.0.1 port=$1 user=$DB_USER password=$DB_PASS dbname=$DB"; }
export DIRECT_DSN="$(dsn "${PG_PORTS[0]}")"
export SHARD_DSNS="$(dsn "${PG_PORTS[0]}")|$(dsn "${PG_PORTS[1]}")"
export PG_PORTS_CSV="${PG_PORTS[0]},${PG_PORTS[1]}"
export PG_DATADIRS="${PG_DIRS[0]},${PG_DIRS[1]}"
export PG_LOGS="$TMP_DIR/postgres0.log,$TMP_DIR/postgres1.log"

# ---------------------------------------------------------------- pgmlcat
# start_pgmlcat sharded|single: a new process (so VmHWM starts afresh) on a new port.
PGMLCAT_KIND=""
start_pgmlcat() {
  local kind="$1" conf="$TMP_DIR/pgmlcat-$1.toml"
  PGMLCAT_PORT="$(free_port)"
  {
    echo "[general]"
    echo "host = \"127.0.0.1\""
    echo "port = $PGMLCAT_PORT"
    echo "admin_username = \"admin\""
    echo "admin_password = \"admin_pw\""
    [[ -n "$WORKER_THREADS" ]] && echo "worker_threads = $WORKER_THREADS"
    echo
    echo "[ml]"
    echo "threads = $ML_THREADS"
    echo
    echo "[pools.$DB]"
    echo "pool_mode = \"transaction\""
    if [[ "$kind" == sharded ]]; then
      echo "default_shard = \"all\""
      echo "shard_id_regex = '/\\* shard_id: (\\d+) \\*/'"
    fi
    echo
    echo "[pools.$DB.users.0]"
    echo "username = \"$DB_USER\""
    echo "password = \"$DB_PASS\""
    echo "pool_size = $POOL_SIZE"
    echo
    echo "[pools.$DB.shards.0]"
    echo "servers = [[\"127.0.0.1\", ${PG_PORTS[0]}, \"primary\"]]"
    echo "database = \"$DB\""
    if [[ "$kind" == sharded ]]; then
      echo
      echo "[pools.$DB.shards.1]"
      echo "servers = [[\"127.0.0.1\", ${PG_PORTS[1]}, \"primary\"]]"
      echo "database = \"$DB\""
    fi
  } >"$conf"
  "$PGMLCAT_BIN" "$conf" --log-level "$PGMLCAT_LOG_LEVEL" >>"$TMP_DIR/pgmlcat.log" 2>&1 </dev/null &
  PGMLCAT_PID=$!
  local ok=0
  for _ in $(seq 1 150); do
    if psql_proxy -At -c 'SELECT 1' >/dev/null 2>&1; then ok=1; break; fi
    kill -0 "$PGMLCAT_PID" 2>/dev/null || break
    sleep 0.2
  done
  [[ "$ok" == 1 ]] || { show_log_tail "$TMP_DIR/pgmlcat.log"; die "pgmlcat ($kind) is not accepting connections"; }
  PGMLCAT_KIND="$kind"
  export PGMLCAT_PID PROXY_DSN="$(dsn "$PGMLCAT_PORT")"
}

stop_pgmlcat() {
  [[ -n "$PGMLCAT_PID" ]] || return 0
  kill -TERM "$PGMLCAT_PID" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$PGMLCAT_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$PGMLCAT_PID" 2>/dev/null || true
  wait "$PGMLCAT_PID" 2>/dev/null || true
  PGMLCAT_PID=""
  PGMLCAT_KIND=""
}

# Restarts pgmlcat when it died (an OOM kill, a crash) so the other runs go on.
ensure_pgmlcat() { # kind
  if [[ -z "$PGMLCAT_PID" ]] || ! kill -0 "$PGMLCAT_PID" 2>/dev/null || [[ "$PGMLCAT_KIND" != "$1" ]]; then
    if [[ -n "$PGMLCAT_PID" ]] && ! kill -0 "$PGMLCAT_PID" 2>/dev/null; then
      log "WARNING: pgmlcat (pid $PGMLCAT_PID) is gone; restarting it"
      echo "- $(date '+%F %T') pgmlcat (pid $PGMLCAT_PID) died; see the report's errors. Last log lines: $(tail -n 3 "$TMP_DIR/pgmlcat.log" | tr '\n' ' ')" >>"$FINDINGS"
      PGMLCAT_PID=""
    fi
    stop_pgmlcat
    start_pgmlcat "$1"
  fi
}

if [[ -n "${PGMLCAT_COMMIT:-}" ]]; then
  PGMLCAT_VERSION="$PGMLCAT_COMMIT (binary of $PGMLCAT_BUILT)"
else
  PGMLCAT_VERSION="$(cd "$REPO_ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  [[ -n "$(cd "$REPO_ROOT" && git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]] &&
    PGMLCAT_VERSION="$PGMLCAT_VERSION+dirty"
  PGMLCAT_VERSION="$PGMLCAT_VERSION (binary of $PGMLCAT_BUILT)"
fi

# ---------------------------------------------------------------- data
mkdir -p "$(dirname "$FINDINGS")"
export OUT="$TMP_DIR/runs.jsonl" THREADS="$ML_THREADS" SECTIONS
: >"$OUT"
log "generating data for sections $SECTIONS (A_ROWS=$A_ROWS N_GROUPS=$N_GROUPS GROUP_ROWS=$GROUP_ROWS C_ROWS=$C_ROWS)"
started="$(now)"
python3 "$SCRIPT_DIR/ml_groups.py" gen "$SECTIONS" || die "data generation failed"
log "data ready in $(elapsed "$started" "$(now)") s"

# The first pgml.train through a pool creates the catalog: once, unmeasured.
warm_up() {
  psql_proxy -c "SELECT * FROM pgml.train('warm', 'regression', 'warm', 'y', algorithm => 'linear')" \
    >>"$TMP_DIR/warm.log" 2>&1 || { show_log_tail "$TMP_DIR/warm.log"; show_log_tail "$TMP_DIR/pgmlcat.log"; die "the warm-up pgml.train failed"; }
}

# One side's run; run again (up to NOISY_RETRIES times) when other work took
# more than NOISY_BUSY percent of the CPU meanwhile (the report keeps the last).
measure() { # section side round
  local attempt rc
  for attempt in $(seq 0 "$NOISY_RETRIES"); do
    rc=0
    python3 "$SCRIPT_DIR/ml_groups.py" run "$1" "$2" "$3" || rc=$?
    [[ "$rc" == 4 && "$attempt" -lt "$NOISY_RETRIES" ]] || break
    log "$1 $2 round $3: other work took the CPU meanwhile; running it again"
    if [[ "$1" == C ]]; then
      stop_pgmlcat
      start_pgmlcat single
    fi
  done
  return 0
}

rounds_order() { # round a b -> the two sides, alternating
  if (($1 % 2 == 1)); then echo "$2 $3"; else echo "$3 $2"; fi
}

# ---------------------------------------------------------------- A
if [[ " $SECTIONS " == *" A "* ]]; then
  ensure_pgmlcat sharded
  warm_up
  log "A: linear regression on 2 shards, $A_ROWS rows, pushdown vs pull, $A_REPEAT rounds"
  for round in $(seq 1 "$A_REPEAT"); do
    for side in $(rounds_order "$round" pushdown pull); do
      ensure_pgmlcat sharded
      measure A "$side" "$round"
    done
  done
fi

# ---------------------------------------------------------------- B
if [[ " $SECTIONS " == *" B "* ]]; then
  ensure_pgmlcat single
  warm_up
  log "B: $N_GROUPS groups x $GROUP_ROWS rows, LightGBM ($B_ITERATIONS rounds, $ML_THREADS threads), pgmlcat vs Python, $B_REPEAT rounds"
  for round in $(seq 1 "$B_REPEAT"); do
    for side in $(rounds_order "$round" pgmlcat python); do
      ensure_pgmlcat single
      measure B "$side" "$round"
    done
  done
fi

# ---------------------------------------------------------------- C
if [[ " $SECTIONS " == *" C "* ]]; then
  log "C: $C_ROWS rows, LightGBM ($C_ITERATIONS rounds), streaming vs in-memory, a fresh pgmlcat per run, $C_REPEAT rounds"
  for round in $(seq 1 "$C_REPEAT"); do
    for side in $(rounds_order "$round" streaming in-memory); do
      stop_pgmlcat
      start_pgmlcat single
      measure C "$side" "$round"
    done
  done
fi
stop_pgmlcat

# ---------------------------------------------------------------- report
mkdir -p "$RESULTS_DIR"
export MD_OUT="$RESULTS_DIR/ml-groups-$(date +%Y%m%d-%H%M%S).md"
REPEAT="$REPEAT (A $A_REPEAT, B $B_REPEAT, C $C_REPEAT)" PG_VERSION="$PG_VERSION" PG_JIT="$PG_JIT" \
SHARED_BUFFERS="$SHARED_BUFFERS" PGMLCAT_VERSION="$PGMLCAT_VERSION" POOL_SIZE="$POOL_SIZE" \
LOADAVG="$(cut -d' ' -f1-3 /proc/loadavg)" python3 "$SCRIPT_DIR/ml_groups.py" report >/dev/null ||
  die "the report failed (runs in $OUT)"
if [[ "$DIAG_A" == 1 && " $SECTIONS " == *" A "* ]]; then
  log "diagnostics of A's pushdown statement on shard 0 (appended to the report)"
  psql_direct -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '$DB' AND pid <> pg_backend_pid()" >/dev/null 2>&1 || true
  python3 "$SCRIPT_DIR/ml_groups.py" diag-a >/dev/null || log "WARNING: the diagnostics failed"
fi
log "markdown written to $MD_OUT"
cat "$MD_OUT"
