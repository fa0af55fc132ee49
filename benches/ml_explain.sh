#!/usr/bin/env bash
# Issue #19's benchmarks, side by side in one run (sides interleaved, order
# rotating by round, medians of REPEAT rounds):
#
#  E. `SELECT pgml.explain('ex_lgb', ARRAY[f1..f10]) FROM ex` against
#     `SELECT pgml.predict('ex_lgb', ARRAY[f1..f10]) FROM ex` (E_ROWS rows, a
#     LightGBM model of E_ITERATIONS rounds), and the same with a linear
#     model: wall time and pgmlcat's CPU. Target: explain <= 10x predict.
#     For comparison, Python's lightgbm predict against
#     predict(pred_contrib=True) on the same model text and rows.
#  V. `SELECT * FROM pgml.evaluate('ev_lgb', 'ev')` over V_ROWS rows (a
#     LightGBM regression) against Python doing the same work (psycopg binary
#     COPY -> numpy -> the model text pgmlcat stored, in lightgbm.Booster ->
#     scikit-learn's metrics), timed as a whole process. Target: pgmlcat <=
#     0.5x Python's wall time.
#  A. AutoML on A_ROWS rows of a noisy regression: pgml.train(..., 'auto',
#     search_args => '{"time_budget_s": A_BUDGET}') against every single
#     algorithm (A_SINGLES) with default hyperparameters: test r2 of each on
#     the same split, auto's wall time against its budget.
#
# A throwaway PostgreSQL 15 cluster in /tmp/pgmlcat-bench-ml_explain.XXXXXX
# (as the postgres OS user when run as root) and pgmlcat (release build) in
# front of it. Tables are UNLOGGED, made with generate_series (seeded),
# frozen and analyzed. No run starts while a cargo or rustc process is alive
# (BUILD_WAIT). benches/ml_explain.py does the data, the runs, the Python
# side and the markdown: benches/results/ml-explain-<date>.md.
#
# Usage: benches/ml_explain.sh [pgmlcat-binary]
#   (without one: target/release/pgmlcat, built with cargo build --release
#   under flock /tmp/cargo.lock unless NO_BUILD=1; the binary is copied into
#   the bench's directory so a later build does not change it mid-run)
#
# Environment knobs:
#   SECTIONS="E V A"     which sections to run
#   SMOKE=1              small sizes and 1 round (a run of a few minutes)
#   E_ROWS=10000         rows explained / predicted per run
#   E_TRAIN_ROWS=20000   rows E's models are trained on
#   E_ITERATIONS=100     LightGBM rounds of E's model
#   V_ROWS=1000000       rows evaluated
#   V_TRAIN_ROWS=200000  rows V's model is trained on
#   V_ITERATIONS=100     LightGBM rounds of V's model
#   A_ROWS=200000        rows of A
#   A_NOISE=1.0          A's noise: y + A_NOISE * U(-1, 1)
#   A_BUDGET=60          AutoML's time_budget_s
#   A_SINGLES="linear ridge lasso elastic_net lightgbm knn"   the single algorithms of A
#   REPEAT=5             rounds per section (E_REPEAT, V_REPEAT, A_REPEAT override)
#   ML_THREADS=2         pgmlcat's [ml] threads; Python's num_threads gets the same
#   SHARED_BUFFERS=256MB
#   BUILD_WAIT=3600      seconds to wait for cargo/rustc to end before a run
#   NOISY_BUSY=25        a run during which other work took more than this percent
#   NOISY_RETRIES=1      of the CPU is run again, up to this many times
#   PY_PATH=$REPO/.tools/py   PYTHONPATH for numpy, scikit-learn, lightgbm
#   PGMLCAT_COMMIT       the commit the binary was built from, for the report
#   POOL_SIZE=10, WORKER_THREADS, NO_BUILD=1, PG_BIN, RESULTS_DIR,
#   PGMLCAT_LOG_LEVEL, KEEP_TMP=1        as in benches/ml_common.sh
#
# Needs: PostgreSQL 15 server binaries, python3 with psycopg 3; numpy,
# scikit-learn and lightgbm in PY_PATH or the system Python.

set -euo pipefail
BENCH_NAME=ml_explain
ML_THREADS="${ML_THREADS:-2}" # before ml_common.sh, whose default is 0
# shellcheck source=benches/ml_common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/ml_common.sh"

if (($# > 0)); then
  PGMLCAT_BIN="$(realpath "$1")"
  [[ -x "$PGMLCAT_BIN" ]] || die "$1 is not an executable"
fi
SMOKE="${SMOKE:-0}"
if [[ "$SMOKE" == 1 ]]; then
  : "${E_ROWS:=2000}" "${E_TRAIN_ROWS:=4000}" "${V_ROWS:=50000}" "${V_TRAIN_ROWS:=20000}"
  : "${A_ROWS:=4000}" "${A_BUDGET:=10}" "${REPEAT:=1}"
fi
SECTIONS="${SECTIONS:-E V A}"
export E_ROWS="${E_ROWS:-10000}" E_TRAIN_ROWS="${E_TRAIN_ROWS:-20000}" E_ITERATIONS="${E_ITERATIONS:-100}"
export V_ROWS="${V_ROWS:-1000000}" V_TRAIN_ROWS="${V_TRAIN_ROWS:-200000}" V_ITERATIONS="${V_ITERATIONS:-100}"
export A_ROWS="${A_ROWS:-200000}" A_NOISE="${A_NOISE:-1.0}" A_BUDGET="${A_BUDGET:-60}"
export A_SINGLES="${A_SINGLES:-linear ridge lasso elastic_net lightgbm knn}"
REPEAT="${REPEAT:-5}"
E_REPEAT="${E_REPEAT:-$REPEAT}" V_REPEAT="${V_REPEAT:-$REPEAT}" A_REPEAT="${A_REPEAT:-$REPEAT}"
SHARED_BUFFERS="${SHARED_BUFFERS:-256MB}"
export PY_PATH="${PY_PATH:-$REPO_ROOT/.tools/py}"
export BUILD_WAIT="${BUILD_WAIT:-3600}"
export NOISY_BUSY="${NOISY_BUSY:-25}"
NOISY_RETRIES="${NOISY_RETRIES:-1}"
check_positive E_ROWS E_TRAIN_ROWS E_ITERATIONS V_ROWS V_TRAIN_ROWS V_ITERATIONS A_ROWS A_BUDGET \
  E_REPEAT V_REPEAT A_REPEAT ML_THREADS POOL_SIZE
for s in $SECTIONS; do [[ "$s" =~ ^[EVA]$ ]] || die "SECTIONS: unknown section '$s'"; done
EFFECTIVE_THREADS="$ML_THREADS"

# ---------------------------------------------------------------- prerequisites
ml_prereqs
python3 -c 'import psycopg' 2>/dev/null || ml_python_deps psycopg:'psycopg[binary]'
PYTHONPATH="$PY_PATH${PYTHONPATH:+:$PYTHONPATH}" python3 -c 'import numpy, sklearn, lightgbm' 2>/dev/null ||
  die "numpy, scikit-learn and lightgbm are needed in $PY_PATH or the system Python (scripts/setup.sh)"

# The machine is shared: never build while another build runs, nor measure during one.
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

PG_MAX_CONNECTIONS=100
# Every scan from the first block: the same row order for pgmlcat and Python.
PG_EXTRA_CONF="max_wal_size = 4GB
autovacuum = off
synchronize_seqscans = off"
ml_start_postgres # ml_common.sh: in $TMP_DIR, with role and database; its cleanup stops it
dsn() { echo "host=127.0.0.1 port=$1 user=$DB_USER password=$DB_PASS dbname=$DB"; }
export DIRECT_DSN="$(dsn "$PG_PORT")" PG_DATADIR="$TMP_DIR/data"

# ---------------------------------------------------------------- pgmlcat
ml_start_pgmlcat # ml_common.sh: $TMP_DIR/pgcat.toml, [ml] threads = $ML_THREADS
export PGMLCAT_PID PROXY_DSN="$(dsn "$PGMLCAT_PORT")"
if [[ -n "${PGMLCAT_COMMIT:-}" ]]; then
  PGMLCAT_VERSION="$PGMLCAT_COMMIT (binary of $PGMLCAT_BUILT)"
else
  PGMLCAT_VERSION="$(cd "$REPO_ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  [[ -n "$(cd "$REPO_ROOT" && git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]] &&
    PGMLCAT_VERSION="$PGMLCAT_VERSION+dirty"
  PGMLCAT_VERSION="$PGMLCAT_VERSION (binary of $PGMLCAT_BUILT)"
fi

# ---------------------------------------------------------------- data and models
export OUT="$TMP_DIR/runs.jsonl" THREADS="$ML_THREADS" SECTIONS
: >"$OUT"
log "generating data for sections $SECTIONS"
python3 "$SCRIPT_DIR/ml_explain.py" gen || die "data generation failed"
log "training the models E and V use (through pgmlcat, not measured)"
PYTHONPATH="$PY_PATH${PYTHONPATH:+:$PYTHONPATH}" python3 "$SCRIPT_DIR/ml_explain.py" prep ||
  { show_log_tail "$TMP_DIR/pgmlcat.log"; die "the models could not be trained"; }

# One side's run; run again (up to NOISY_RETRIES times) when other work took
# more than NOISY_BUSY percent of the CPU meanwhile (the report keeps the last).
measure() { # section side round
  local attempt rc
  for attempt in $(seq 0 "$NOISY_RETRIES"); do
    rc=0
    python3 "$SCRIPT_DIR/ml_explain.py" run "$1" "$2" "$3" || rc=$?
    [[ "$rc" == 4 && "$attempt" -lt "$NOISY_RETRIES" ]] || break
    log "$1 $2 round $3: other work took the CPU meanwhile; running it again"
  done
  if ! kill -0 "$PGMLCAT_PID" 2>/dev/null; then
    show_log_tail "$TMP_DIR/pgmlcat.log"
    die "pgmlcat died during $1 $2 round $3"
  fi
  return 0
}

rotate() { # round side... -> the sides, rotated by the round
  local r="$1" n i
  shift
  n=$#
  local sides=("$@")
  for ((i = 0; i < n; i++)); do echo "${sides[$(((i + r - 1) % n))]}"; done
}

if [[ " $SECTIONS " == *" E "* ]]; then
  log "E: explain vs predict over $E_ROWS rows, $E_REPEAT rounds"
  # One unmeasured pass of each: the models into pgmlcat's cache, the table into the OS cache.
  for side in lgb-explain lgb-predict lin-explain lin-predict; do
    python3 "$SCRIPT_DIR/ml_explain.py" run E "$side" 0 >/dev/null 2>&1 || true
  done
  for round in $(seq 1 "$E_REPEAT"); do
    for side in $(rotate "$round" lgb-explain lgb-predict lin-explain lin-predict); do measure E "$side" "$round"; done
  done
  log "E: LightGBM's own predict vs pred_contrib in Python, same model and rows"
  PYTHONPATH="$PY_PATH${PYTHONPATH:+:$PYTHONPATH}" python3 "$SCRIPT_DIR/ml_explain.py" pyshap "$DIRECT_DSN" ex_lgb ex \
    "$ML_THREADS" "$E_REPEAT" >"$OUT.pyshap.json" || log "WARNING: the Python reference of E failed"
fi

if [[ " $SECTIONS " == *" V "* ]]; then
  log "V: pgml.evaluate over $V_ROWS rows vs Python, $V_REPEAT rounds"
  for round in $(seq 1 "$V_REPEAT"); do
    for side in $(rotate "$round" pgmlcat python); do measure V "$side" "$round"; done
  done
fi

if [[ " $SECTIONS " == *" A "* ]]; then
  log "A: AutoML ($A_BUDGET s budget) vs single algorithms ($A_SINGLES) on $A_ROWS rows, $A_REPEAT rounds"
  a_sides=(auto)
  for a in $A_SINGLES; do a_sides+=("single-$a"); done
  for round in $(seq 1 "$A_REPEAT"); do
    for side in $(rotate "$round" "${a_sides[@]}"); do measure A "$side" "$round"; done
  done
fi

# ---------------------------------------------------------------- report
mkdir -p "$RESULTS_DIR"
export MD_OUT="$RESULTS_DIR/ml-explain-$(date +%Y%m%d-%H%M%S).md"
REPEAT="$REPEAT (E $E_REPEAT, V $V_REPEAT, A $A_REPEAT)" PG_VERSION="$PG_VERSION" SHARED_BUFFERS="$SHARED_BUFFERS" \
PGMLCAT_VERSION="$PGMLCAT_VERSION" POOL_SIZE="$POOL_SIZE" LOADAVG="$(cut -d' ' -f1-3 /proc/loadavg)" \
  python3 "$SCRIPT_DIR/ml_explain.py" report >/dev/null || die "the report failed (runs in $OUT)"
log "markdown written to $MD_OUT"
cat "$MD_OUT"
