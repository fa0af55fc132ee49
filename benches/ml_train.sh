#!/usr/bin/env bash
# pgml.train through pgmlcat vs the same training in Python, and pooler
# throughput while a training runs (issue #5).
#
# Starts a throwaway PostgreSQL 15 cluster and pgmlcat in front of it,
# generates t (ROWS rows x 10 float4 features + a float4 label, seeded) and
# then, in one run:
#
#  (a) wall time of `SELECT * FROM pgml.train('bench', 'regression',
#      't_features_view', 'y', algorithm => 'lightgbm', test_size => 0.25,
#      test_sampling => 'last', ...)` through pgmlcat (the whole SQL call:
#      pull by binary COPY, split, fit, test scoring, catalog writes), against
#      benches/ml_train.py doing the same in Python (psycopg binary COPY ->
#      numpy -> lightgbm.train with the same parameters and thread count, same
#      75/25 split by position, test scoring), timed as a whole process.
#      Two Python loaders are timed: `rows` (psycopg's typed COPY reader, as
#      its documentation reads binary COPY) and `numpy` (the COPY bytes parsed
#      with one structured dtype: the fastest Python load). Runs are
#      interleaved, TRAIN_REPEAT times; medians shown. Target: pgmlcat <= 0.7x
#      Python's wall time.
#  (b) `pgbench -S` TPS through pgmlcat while pgml.train runs back to back,
#      against the same pgbench with no training, interleaved PGBENCH_ROUNDS
#      times. Target: >= 50% of the idle TPS.
#
# Prints a markdown table and writes it to benches/results/ml-train-<date>.md.
#
# Usage: benches/ml_train.sh
#
# Environment knobs:
#   ROWS=1000000        rows in t
#   ITERATIONS=100      LightGBM boosting rounds (num_iterations), both sides
#   ML_THREADS=0        pgmlcat's [ml] threads (0 = cores - 1, at least 1); Python's
#                       num_threads gets the same count
#   TRAIN_REPEAT=3      interleaved repetitions of (a)
#   DURATION=20         seconds per pgbench run in (b)
#   PGBENCH_ROUNDS=2    interleaved idle/training pgbench pairs in (b)
#   CLIENTS=8           pgbench clients (-c), with -j 2
#   PGBENCH_MODE=prepared  pgbench -M
#   POOL_SIZE=10        pgmlcat pool size
#   WORKER_THREADS      pgmlcat [general] worker_threads (default: pgmlcat's)
#   NO_BUILD=1          skip `cargo build --release` when the binary exists
#   PGMLCAT_BIN, PG_BIN, RESULTS_DIR, PGMLCAT_LOG_LEVEL, KEEP_TMP=1
#
# Needs: PostgreSQL 15 server binaries, python3 (lightgbm, numpy and
# psycopg[binary] are pip-installed when missing). Run as root (Postgres then
# runs as the `postgres` OS user) or as an ordinary user.

set -euo pipefail
BENCH_NAME=ml_train
# shellcheck source=benches/ml_common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/ml_common.sh"

ITERATIONS="${ITERATIONS:-100}"
TRAIN_REPEAT="${TRAIN_REPEAT:-3}"
DURATION="${DURATION:-20}"
PGBENCH_ROUNDS="${PGBENCH_ROUNDS:-2}"
CLIENTS="${CLIENTS:-8}"
PGBENCH_MODE="${PGBENCH_MODE:-prepared}"
check_positive ROWS ITERATIONS TRAIN_REPEAT DURATION PGBENCH_ROUNDS CLIENTS POOL_SIZE
[[ "$ML_THREADS" =~ ^[0-9]+$ ]] || die "ML_THREADS must be a number (got '$ML_THREADS')"

ml_prereqs
ml_python_deps lightgbm:lightgbm numpy:numpy psycopg:'psycopg[binary]'
ml_build
ml_start_postgres
ml_start_pgmlcat
ml_make_table

pgbench_init 10
psql_direct -At -c "SELECT count(*) FROM t" >/dev/null # warm the cache

TRAIN_SQL="SELECT * FROM pgml.train('bench', 'regression', 't_features_view', 'y', algorithm => 'lightgbm', hyperparams => '{\"num_iterations\": $ITERATIONS}', test_size => 0.25, test_sampling => 'last')"
LAST_MODEL_SQL="SELECT metrics->>'r2', metrics->>'fit_time', metrics->>'score_time' FROM pgml.models ORDER BY id DESC LIMIT 1"

# ---------------------------------------------------------------- (a) training time
# train.tsv: round side wall_s fit_s score_s load_s r2 import_s
TRAIN_TSV="$TMP_DIR/train.tsv"
: >"$TRAIN_TSV"

run_pgmlcat_train() { # round
  local started ended wall metrics
  started="$(now)"
  psql_proxy -c "$TRAIN_SQL" >"$TMP_DIR/train-pgmlcat-$1.log" 2>&1 ||
    { show_log_tail "$TMP_DIR/train-pgmlcat-$1.log"; show_log_tail "$TMP_DIR/pgmlcat.log"; die "pgml.train failed"; }
  ended="$(now)"
  wall="$(elapsed "$started" "$ended")"
  metrics="$(psql_direct -At -F $'\t' -c "$LAST_MODEL_SQL")"
  IFS=$'\t' read -r r2 fit score <<<"$metrics"
  printf '%s\tpgmlcat\t%s\t%s\t%s\t-\t%s\t-\n' "$1" "$wall" "$fit" "$score" "$r2" >>"$TRAIN_TSV"
  log "round $1 pgmlcat: ${wall}s (fit ${fit}s, score ${score}s, r2 $r2)"
}

run_python_train() { # round loader
  local started ended wall out
  started="$(now)"
  python3 "$SCRIPT_DIR/ml_train.py" "$DIRECT_DSN" t_features_view y "$EFFECTIVE_THREADS" "$ITERATIONS" "$2" \
    >"$TMP_DIR/train-python-$2-$1.json" 2>"$TMP_DIR/train-python-$2-$1.err" ||
    { show_log_tail "$TMP_DIR/train-python-$2-$1.err"; die "ml_train.py ($2) failed"; }
  ended="$(now)"
  wall="$(elapsed "$started" "$ended")"
  out="$(python3 -c 'import json,sys; d=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); print("%.3f\t%.3f\t%.3f\t%.6f\t%.3f" % (d["fit_s"], d["score_s"], d["load_s"], d["r2"], d["import_s"]))' \
    "$TMP_DIR/train-python-$2-$1.json")"
  printf '%s\tpython-%s\t%s\t%s\n' "$1" "$2" "$wall" "$out" >>"$TRAIN_TSV"
  log "round $1 python ($2 loader): ${wall}s (fit/score/load/r2/import: ${out//$'\t'/ })"
}

log "(a) training: $TRAIN_REPEAT interleaved rounds, $ITERATIONS rounds of LightGBM, $EFFECTIVE_THREADS threads"
for round in $(seq 1 "$TRAIN_REPEAT"); do
  # Rotate the order so no side always runs first after a pause.
  case $(((round - 1) % 3)) in
    0) order=(pgmlcat rows numpy) ;;
    1) order=(rows numpy pgmlcat) ;;
    2) order=(numpy pgmlcat rows) ;;
  esac
  for side in "${order[@]}"; do
    ml_wait_quiet "training round $round ($side)"
    if [[ "$side" == pgmlcat ]]; then
      run_pgmlcat_train "$round"
    else
      run_python_train "$round" "$side"
    fi
  done
done

# ---------------------------------------------------------------- (b) pgbench during training
# pgbench.tsv: round state tps failed rc trainings_done
PGBENCH_TSV="$TMP_DIR/pgbench.tsv"
: >"$PGBENCH_TSV"
LOOP_PID=""

# pgml.train back to back until $TMP_DIR/stop-training exists; counts completed trainings.
training_loop() {
  local n=0
  while [[ ! -e "$TMP_DIR/stop-training" ]]; do
    psql_proxy -c "$TRAIN_SQL" >>"$TMP_DIR/train-loop.log" 2>&1 || { echo "FAILED" >>"$TMP_DIR/train-loop.log"; }
    n=$((n + 1))
    echo "$n" >"$TMP_DIR/trainings-done"
  done
}

run_pgbench() { # round state
  local out="$TMP_DIR/pgbench-$1-$2.log" rc=0 done_count=-
  if [[ "$2" == training ]]; then
    rm -f "$TMP_DIR/stop-training" "$TMP_DIR/trainings-done"
    training_loop &
    LOOP_PID=$!
    EXTRA_PIDS+=("$LOOP_PID")
    sleep 1 # let the first training get going
  fi
  "$PG_BIN/pgbench" -S -n -T "$DURATION" -c "$CLIENTS" -j 2 -M "$PGBENCH_MODE" \
    -h 127.0.0.1 -p "$PGMLCAT_PORT" -U "$DB_USER" "$DB" >"$out" 2>&1 </dev/null || rc=$?
  if [[ "$2" == training ]]; then
    touch "$TMP_DIR/stop-training"
    wait "$LOOP_PID" || true
    EXTRA_PIDS=()
    LOOP_PID=""
    done_count="$(cat "$TMP_DIR/trainings-done" 2>/dev/null || echo 0)"
    grep -q FAILED "$TMP_DIR/train-loop.log" && log "a training in the loop failed: see $TMP_DIR/train-loop.log"
  fi
  local tps failed
  tps="$(pgbench_tps "$out")"
  failed="$(pgbench_failed "$out")"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$tps" "$failed" "$rc" "$done_count" >>"$PGBENCH_TSV"
  log "round $1 pgbench -S ($2): tps=$tps failed=$failed rc=$rc trainings=$done_count"
}

log "(b) pgbench -S -c $CLIENTS -j 2 -M $PGBENCH_MODE -T $DURATION through pgmlcat, idle vs during pgml.train, $PGBENCH_ROUNDS rounds"
for round in $(seq 1 "$PGBENCH_ROUNDS"); do
  ml_wait_quiet "pgbench round $round"
  run_pgbench "$round" idle
  run_pgbench "$round" training
done

# ---------------------------------------------------------------- report
mkdir -p "$RESULTS_DIR"
STAMP="$(date +%Y%m%d-%H%M%S)"
MD_OUT="$RESULTS_DIR/ml-train-$STAMP.md"

TRAIN_TSV="$TRAIN_TSV" PGBENCH_TSV="$PGBENCH_TSV" MD_OUT="$MD_OUT" ROWS="$ROWS" \
ITERATIONS="$ITERATIONS" THREADS="$EFFECTIVE_THREADS" ML_THREADS="$ML_THREADS" \
TRAIN_REPEAT="$TRAIN_REPEAT" DURATION="$DURATION" CLIENTS="$CLIENTS" PGBENCH_MODE="$PGBENCH_MODE" \
PGBENCH_ROUNDS="$PGBENCH_ROUNDS" POOL_SIZE="$POOL_SIZE" PG_VERSION="$PG_VERSION" \
PGMLCAT_VERSION="$PGMLCAT_VERSION" NPROC="$NPROC" WORKER_THREADS="${WORKER_THREADS:-default}" \
QUIET_NOTES="$(printf '%s\n' "${QUIET_NOTES[@]}")" LOADAVG="$(cut -d' ' -f1-3 /proc/loadavg)" \
python3 - <<'PY'
import datetime, os, platform, statistics
import lightgbm

E = os.environ
train = {}
for line in open(E["TRAIN_TSV"]):
    rnd, side, wall, fit, score, load, r2, imp = line.rstrip("\n").split("\t")
    train.setdefault(side, []).append(
        dict(wall=float(wall), fit=float(fit), score=float(score),
             load=None if load == "-" else float(load), r2=float(r2),
             imp=None if imp == "-" else float(imp)))

def med(side, key):
    vals = [r[key] for r in train.get(side, []) if r[key] is not None]
    return statistics.median(vals) if vals else None

def f(v, fmt="{:.2f}"):
    return "-" if v is None else fmt.format(v)

sides = [("pgmlcat", "pgmlcat: `pgml.train` (whole SQL call)"),
         ("python-rows", "Python, psycopg `copy.rows()` loader"),
         ("python-numpy", "Python, raw COPY bytes -> numpy dtype loader")]
pg_wall = med("pgmlcat", "wall")
rows_a = []
for side, label in sides:
    w = med(side, "wall")
    ratio = "1.00" if side == "pgmlcat" else f(pg_wall / w if w else None)
    runs = ", ".join(f"{r['wall']:.2f}" for r in train.get(side, []))
    rows_a.append([label, f(w), runs, f(med(side, "imp")), f(med(side, "load")), f(med(side, "fit")),
                   f(med(side, "score"), "{:.3f}"), f(med(side, "r2"), "{:.4f}"), ratio])

target_lines = []
for side in ("python-rows", "python-numpy"):
    w = med(side, "wall")
    if w and pg_wall:
        r = pg_wall / w
        target_lines.append(f"pgmlcat / {side} wall time = {r:.2f} (target <= 0.70: "
                            f"{'met' if r <= 0.70 else 'NOT met'})")

pgb = {}
trainings = 0
for line in open(E["PGBENCH_TSV"]):
    rnd, state, tps, failed, rc, done = line.rstrip("\n").split("\t")
    pgb.setdefault(state, []).append((None if tps == "NA" else float(tps), int(failed), int(rc)))
    if state == "training" and done.isdigit():
        trainings += int(done)

def tps_med(state):
    vals = [t for t, _, _ in pgb.get(state, []) if t is not None]
    return statistics.median(vals) if vals else None

idle, busy = tps_med("idle"), tps_med("training")
ratio_b = busy / idle if idle and busy else None
rows_b = [
    ["no training", f(idle, "{:,.0f}"), ", ".join(f(t, "{:,.0f}") for t, _, _ in pgb.get("idle", [])),
     str(sum(x for _, x, _ in pgb.get("idle", []))), "1.00"],
    ["pgml.train running back to back", f(busy, "{:,.0f}"),
     ", ".join(f(t, "{:,.0f}") for t, _, _ in pgb.get("training", [])),
     str(sum(x for _, x, _ in pgb.get("training", []))), f(ratio_b)],
]
target_lines.append(f"pgbench -S TPS during training / without = {f(ratio_b)} (target >= 0.50: "
                    f"{'met' if ratio_b is not None and ratio_b >= 0.5 else 'NOT met'}); "
                    f"{trainings} trainings completed during the training runs")

head_a = ["side", "wall s (median)", "runs", "imports s", "load s", "fit s", "score s", "test r2", "pgmlcat / this"]
head_b = ["pgbench -S through pgmlcat", "TPS (median)", "runs", "failed", "vs no training"]

def table(head, rows):
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)

now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
md = f"""# pgml.train through pgmlcat vs Python; pooling during training

- date: {now}
- host: {platform.node()} ({E['NPROC']} CPUs, {platform.machine()}); load average at the end: {E['LOADAVG']}
- PostgreSQL {E['PG_VERSION']}, pgmlcat {E['PGMLCAT_VERSION']}, Python lightgbm {lightgbm.__version__}
- data: {int(E['ROWS']):,} rows x 10 float4 features + float4 label (regression), 75/25 split by position
- LightGBM: objective regression, num_iterations {E['ITERATIONS']}, num_threads {E['THREADS']} on both sides
  (pgmlcat `[ml] threads = {E['ML_THREADS']}`), verbosity -1, other parameters default
- pgmlcat: pool_size {E['POOL_SIZE']}, worker_threads {E['WORKER_THREADS']}
- pgmlcat wall = psql running the whole `pgml.train` call (pull by binary COPY, split, fit, score,
  catalog writes); Python wall = the whole `python3 benches/ml_train.py` process (imports, connect,
  COPY, numpy, split, fit, score); fit/score: pgmlcat's fit_time/score_time metrics, Python's own
  timers (imports: `import lightgbm, numpy, psycopg`; load: connect + COPY + arrays; fit includes
  Dataset construction). Medians of {E['TRAIN_REPEAT']} interleaved rounds.

""" + "".join(f"- WARNING: {n}\n" for n in E["QUIET_NOTES"].splitlines() if n) + f"""
## (a) training wall time

{table(head_a, rows_a)}

## (b) pooling while a training runs

`pgbench -S -n -c {E['CLIENTS']} -j 2 -M {E['PGBENCH_MODE']} -T {E['DURATION']}` through pgmlcat,
{E['PGBENCH_ROUNDS']} interleaved idle/training pairs; during the training runs `pgml.train` (same call as
above) runs back to back through pgmlcat from 1 s before pgbench starts until it ends.

{table(head_b, rows_b)}

## Against the targets

""" + "\n".join(f"- {l}" for l in target_lines) + "\n"

with open(E["MD_OUT"], "w") as fh:
    fh.write(md)
print()
print(md)
print(f"markdown written to {E['MD_OUT']}")
PY
