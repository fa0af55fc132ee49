#!/usr/bin/env bash
# pgml.drift's benchmarks (issue #20), side by side in one run (sides
# interleaved, order alternating by round, medians of ROUNDS rounds):
#
#  (a) the serving sample's cost on the prediction hot path: two pgmlcat
#      processes in front of the same cluster, one with `[ml]
#      serving_sample_rows = 0` (no sample: "off") and one with the default
#      (10000, the key left out: "on"). Project 'p' (LightGBM regression on
#      t, ROWS rows x 10 float4 features, as benches/ml_predict.sh) is
#      trained once through "on"; then, against each process in turn:
#        single: `\set id random(1, ROWS)` `SELECT pgml.predict('p',
#                ARRAY[f1..f10]) FROM t WHERE id = :id`, pgbench -M PROTOCOL
#                -c CLIENTS -j 2, DURATION s
#        batch:  `SELECT id, pgml.predict('p', ARRAY[f1..f10]) FROM t LIMIT
#                BATCH_LIMIT`, pgbench -M PROTOCOL -c 1, DURATION s
#      TPS, and each pgmlcat's CPU (utime + stime from /proc/<pid>/stat
#      before and after the run) per transaction. Targets: on / off TPS >=
#      0.97, on / off proxy CPU per transaction <= 1.05.
#  (b) `SELECT * FROM pgml.drift('p')` (the training relation,
#      t_features_view) and `pgml.drift('p', 't_shift')` (a copy of t with
#      f1..f3 moved) through "on": wall and CPU (pgmlcat + the cluster)
#      against a Python reference (benches/ml_drift.py pydrift, a process of
#      its own, timed whole): the snapshot's statistics from pgml.snapshots,
#      `COPY (SELECT f1..f10 FROM relation) TO STDOUT (FORMAT BINARY)` with
#      psycopg into numpy, the same 20 bins, PSI, KS and missing rate
#      (README "Has the data moved: pgml.drift"); its CPU is the Python
#      process's + the cluster's. Also the bytes Postgres sent: pgmlcat's
#      sockets to Postgres (ss byte counters) against the COPY's size.
#  (c) `SELECT * FROM pgml.drift('p', 'serving')` through "on" after (a)
#      (its sample full): median latency over C_CALLS calls; "off" must
#      answer 55000 (it keeps no sample).
#
# A throwaway PostgreSQL 15 cluster in /tmp/pgmlcat-bench-ml_drift.XXXXXX
# (as the postgres OS user when run as root), the pgmlcat release binary
# copied there (a later build does not change it mid-run). No run starts
# while a cargo/rustc process or an integration test binary is alive
# (BUILD_WAIT). benches/ml_drift.py does the runs, the Python side and the
# markdown: printed and written to benches/results/ml-drift-<date>.md.
#
# Usage: benches/ml_drift.sh [pgmlcat-binary]
#   (without one: target/release/pgmlcat, built with cargo build --release
#   under flock /tmp/cargo.lock unless NO_BUILD=1)
#
# Environment knobs:
#   ROWS=1000000         rows in t (and t_shift)
#   DURATION=10          seconds per pgbench run of (a)
#   ROUNDS=5             interleaved rounds of (a) and (b); medians shown
#   B_ROUNDS=$ROUNDS     rounds of (b)
#   CLIENTS=8            pgbench clients of (a) single
#   BATCH_LIMIT=10000    LIMIT of (a) batch
#   PROTOCOL=prepared    pgbench -M of (a)
#   C_CALLS=20           pgml.drift(p, 'serving') calls of (c)
#   SECTIONS="a b c"     which sections to run
#   BUILD_WAIT=3600      seconds to wait for cargo/rustc/tests to end before a run
#   NOISY_BUSY=25        a run during which other work took more than this percent
#   NOISY_RETRIES=1      of the CPU is run again, up to this many times
#   PYTHON               the Python with psycopg 3 and numpy (default: python3,
#                        else /usr/bin/python3; PY_PATH is put on PYTHONPATH)
#   PY_PATH=$REPO/.tools/py   numpy (scripts/setup.sh)
#   PGMLCAT_COMMIT       the commit the binary was built from, for the report (default: HEAD)
#   POOL_SIZE=10, WORKER_THREADS, ML_THREADS=0, SHARED_BUFFERS=256MB, NO_BUILD=1,
#   PG_BIN, RESULTS_DIR, PGMLCAT_LOG_LEVEL, KEEP_TMP=1   as in benches/ml_common.sh
#
# Needs: PostgreSQL 15 server binaries and pgbench, python3 with psycopg 3
# and numpy, ss (iproute2; without it the bytes column says "-").

set -euo pipefail
BENCH_NAME=ml_drift
# shellcheck source=benches/ml_common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/ml_common.sh"

if (($# > 0)); then
  PGMLCAT_BIN="$(realpath "$1")"
  [[ -x "$PGMLCAT_BIN" ]] || die "$1 is not an executable"
fi
export ROWS DURATION="${DURATION:-10}" ROUNDS="${ROUNDS:-5}" CLIENTS="${CLIENTS:-8}"
export B_ROUNDS="${B_ROUNDS:-$ROUNDS}" BATCH_LIMIT="${BATCH_LIMIT:-10000}" PROTOCOL="${PROTOCOL:-prepared}"
export C_CALLS="${C_CALLS:-20}" SECTIONS="${SECTIONS:-a b c}"
export BUILD_WAIT="${BUILD_WAIT:-3600}" NOISY_BUSY="${NOISY_BUSY:-25}" NOISY_RETRIES="${NOISY_RETRIES:-1}"
export PY_PATH="${PY_PATH:-$REPO_ROOT/.tools/py}"
SHARED_BUFFERS="${SHARED_BUFFERS:-256MB}"
check_positive ROWS DURATION ROUNDS B_ROUNDS CLIENTS BATCH_LIMIT C_CALLS POOL_SIZE
[[ "$PROTOCOL" =~ ^(simple|extended|prepared)$ ]] || die "PROTOCOL: unknown pgbench protocol '$PROTOCOL'"
for s in $SECTIONS; do [[ "$s" =~ ^[abc]$ ]] || die "SECTIONS: unknown section '$s'"; done

# ---------------------------------------------------------------- prerequisites
ml_prereqs
export PYTHONPATH="$PY_PATH${PYTHONPATH:+:$PYTHONPATH}"
if [[ -z "${PYTHON:-}" ]]; then
  for cand in python3 /usr/bin/python3; do
    if "$cand" -c 'import psycopg, numpy' 2>/dev/null; then PYTHON="$cand"; break; fi
  done
  if [[ -z "${PYTHON:-}" ]]; then
    ml_python_deps psycopg:'psycopg[binary]' numpy:numpy
    PYTHON=python3
  fi
fi
"$PYTHON" -c 'import psycopg, numpy' || die "$PYTHON lacks psycopg 3 or numpy"
export PYTHON
log "Python: $("$PYTHON" -c 'import sys, psycopg, numpy; print(sys.executable, sys.version.split()[0], "psycopg", psycopg.__version__, psycopg.pq.__impl__, "numpy", numpy.__version__)')"

# The machine is shared: never two builds at once, nor a measurement during one.
if [[ "$NO_BUILD" != 1 && "$PGMLCAT_BIN" == "$REPO_ROOT/target/release/pgmlcat" ]]; then
  log "cargo build --release (under flock /tmp/cargo.lock)"
  (cd "$REPO_ROOT" && flock /tmp/cargo.lock cargo build --release --quiet) || die "cargo build --release failed"
fi
[[ -x "$PGMLCAT_BIN" ]] || die "$PGMLCAT_BIN not found"

# ---------------------------------------------------------------- cluster
TMP_DIR="$(mktemp -d "${TMPDIR:-/tmp}/pgmlcat-bench-$BENCH_NAME.XXXXXX")"
chmod 777 "$TMP_DIR"
cp -p "$PGMLCAT_BIN" "$TMP_DIR/pgmlcat"
PGMLCAT_BUILT="$(date -u -r "$PGMLCAT_BIN" '+%Y-%m-%d %H:%M UTC')"
PGMLCAT_BIN="$TMP_DIR/pgmlcat"
if [[ -n "${PGMLCAT_COMMIT:-}" ]]; then
  PGMLCAT_VERSION="$PGMLCAT_COMMIT"
else
  PGMLCAT_VERSION="$(cd "$REPO_ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  [[ -n "$(cd "$REPO_ROOT" && git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]] &&
    PGMLCAT_VERSION="$PGMLCAT_VERSION+dirty"
fi
export PGMLCAT_VERSION="$PGMLCAT_VERSION (binary of $PGMLCAT_BUILT)"

PG_MAX_CONNECTIONS=100
# Every scan from the first block, nothing vacuuming behind the runs.
PG_EXTRA_CONF="max_wal_size = 4GB
autovacuum = off
synchronize_seqscans = off"
ml_start_postgres # ml_common.sh: in $TMP_DIR, with role and database; its cleanup stops it
dsn() { echo "host=127.0.0.1 port=$1 user=$DB_USER password=$DB_PASS dbname=$DB"; }
export DIRECT_DSN="$(dsn "$PG_PORT")" PG_DATADIR="$TMP_DIR/data" PG_PORT PG_BIN PG_VERSION

# ---------------------------------------------------------------- two pgmlcats
# As ml_common.sh's ml_start_pgmlcat, but two of them, differing only in
# [ml] serving_sample_rows (on: the key left out, i.e. the default).
start_pgmlcat() { # name serving_sample_rows|"" -> sets PID_<name>, PORT_<name>
  local name=$1 sample=$2 port pid ok=0
  port="$(free_port)"
  {
    echo "[general]"
    echo "host = \"127.0.0.1\""
    echo "port = $port"
    echo "admin_username = \"admin\""
    echo "admin_password = \"admin_pw\""
    [[ -n "$WORKER_THREADS" ]] && echo "worker_threads = $WORKER_THREADS"
    echo
    echo "[ml]"
    echo "threads = $ML_THREADS"
    [[ -n "$sample" ]] && echo "serving_sample_rows = $sample"
    echo
    echo "[pools.$DB]"
    echo "pool_mode = \"transaction\""
    echo
    echo "[pools.$DB.users.0]"
    echo "username = \"$DB_USER\""
    echo "password = \"$DB_PASS\""
    echo "pool_size = $POOL_SIZE"
    echo
    echo "[pools.$DB.shards.0]"
    echo "servers = [[\"127.0.0.1\", $PG_PORT, \"primary\"]]"
    echo "database = \"$DB\""
  } >"$TMP_DIR/pgcat-$name.toml"
  log "starting pgmlcat '$name' on port $port (serving_sample_rows ${sample:-default})"
  "$PGMLCAT_BIN" "$TMP_DIR/pgcat-$name.toml" --log-level "$PGMLCAT_LOG_LEVEL" \
    >"$TMP_DIR/pgmlcat-$name.log" 2>&1 </dev/null &
  pid=$!
  EXTRA_PIDS+=("$pid")
  for _ in $(seq 1 150); do
    if "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$port" -U "$DB_USER" -d "$DB" -At -c 'SELECT 1' >/dev/null 2>&1; then
      ok=1
      break
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  [[ "$ok" == 1 ]] || { show_log_tail "$TMP_DIR/pgmlcat-$name.log"; die "pgmlcat '$name' is not accepting connections"; }
  printf -v "PID_$name" '%s' "$pid"
  printf -v "PORT_$name" '%s' "$port"
}
start_pgmlcat on ""
start_pgmlcat off 0
export PID_ON="$PID_on" PID_OFF="$PID_off" PROXY_ON_DSN="$(dsn "$PORT_on")" PROXY_OFF_DSN="$(dsn "$PORT_off")"
export PORT_ON="$PORT_on" PORT_OFF="$PORT_off" DB DB_USER

# ---------------------------------------------------------------- data and model
ml_make_table # ml_common.sh: t (ROWS rows, f1..f10 float4, y), t_features_view
export OUT="$TMP_DIR/runs.jsonl" TMP_DIR
: >"$OUT"
"$PYTHON" "$SCRIPT_DIR/ml_drift.py" prep ||
  { show_log_tail "$TMP_DIR/pgmlcat-on.log"; die "preparation (t_shift, training) failed"; }

# ---------------------------------------------------------------- runs
"$PYTHON" "$SCRIPT_DIR/ml_drift.py" measure ||
  { show_log_tail "$TMP_DIR/pgmlcat-on.log"; show_log_tail "$TMP_DIR/pgmlcat-off.log"; die "the measurements failed (runs in $OUT)"; }
for p in "$PID_on" "$PID_off"; do
  kill -0 "$p" 2>/dev/null || { show_log_tail "$TMP_DIR/pgmlcat-on.log"; show_log_tail "$TMP_DIR/pgmlcat-off.log"; die "a pgmlcat died"; }
done

# ---------------------------------------------------------------- report
mkdir -p "$RESULTS_DIR"
export MD_OUT="$RESULTS_DIR/ml-drift-$(date +%Y%m%d-%H%M%S).md"
SHARED_BUFFERS="$SHARED_BUFFERS" POOL_SIZE="$POOL_SIZE" WORKER_THREADS="${WORKER_THREADS:-default}" \
ML_THREADS="$ML_THREADS" LOADAVG="$(cut -d' ' -f1-3 /proc/loadavg)" \
  "$PYTHON" "$SCRIPT_DIR/ml_drift.py" report >/dev/null || die "the report failed (runs in $OUT)"
log "markdown written to $MD_OUT"
cat "$MD_OUT"
