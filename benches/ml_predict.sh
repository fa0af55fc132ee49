#!/usr/bin/env bash
# pgml.predict through pgmlcat: cost over the same query without the
# prediction, and throughput against a Python model server (issue #6).
#
# Starts a throwaway PostgreSQL 15 cluster and pgmlcat in front of it,
# generates t (ROWS rows x 10 float4 features + a float4 label, seeded),
# trains project 'p' through pgmlcat (`pgml.train('p', 'regression',
# 't_features_view', 'y', algorithm => 'lightgbm')`), then, in one run,
# interleaved ROUNDS times, all through pgmlcat unless said otherwise:
#
#  (a) batch: `SELECT id, pgml.predict('p', ARRAY[f1..f10]) FROM t LIMIT
#      10000` against `SELECT id, ARRAY[f1..f10] FROM t LIMIT 10000`, with
#      pgbench custom scripts (BATCH_CLIENTS clients), average latency per
#      query. Target: predict <= 1.5x the plain query's time.
#  (b) single row: `\set id random(1, ROWS)` then `SELECT pgml.predict('p',
#      ARRAY[f1..f10]) FROM t WHERE id = :id` against `SELECT f1, ..., f10
#      FROM t WHERE id = :id`, pgbench -c CLIENTS -j 2. Target: predict TPS
#      >= 0.8x the plain query's.
#  (c) the same single-row predictions from a Python model server
#      (benches/ml_predict_server.py: Flask under gunicorn, PY_WORKERS
#      processes x PY_THREADS threads, each thread with its own psycopg
#      connection straight to Postgres, LightGBM Booster loaded from the model
#      pgmlcat trained), driven by wrk with CLIENTS keep-alive connections and
#      2 threads requesting random ids. Target: pgmlcat >= 8x its throughput.
#
# (a) and (b) run once per pgbench protocol in PROTOCOLS.
# Prints a markdown table and writes it to benches/results/ml-predict-<date>.md.
#
# Usage: benches/ml_predict.sh
#
# Environment knobs:
#   ROWS=1000000         rows in t
#   DURATION=15          seconds per measured run
#   ROUNDS=2             interleaved rounds; medians shown
#   PROTOCOLS="simple prepared"  pgbench -M values for (a) and (b)
#   CLIENTS=8            clients for (b) and (c) (pgbench -c / wrk -c)
#   BATCH_CLIENTS=1      clients for (a)
#   BATCH_LIMIT=10000    LIMIT of the batch queries
#   PY_WORKERS=2         gunicorn worker processes for (c)
#   PY_THREADS=4         threads per gunicorn worker (gthread; keep-alive)
#   POOL_SIZE=10         pgmlcat pool size
#   WORKER_THREADS       pgmlcat [general] worker_threads (default: pgmlcat's)
#   ML_THREADS=0         pgmlcat [ml] threads (training only here)
#   NO_BUILD=1           skip `cargo build --release` when the binary exists
#   PGMLCAT_BIN, PG_BIN, RESULTS_DIR, PGMLCAT_LOG_LEVEL, KEEP_TMP=1
#
# Needs: PostgreSQL 15 server binaries, python3 (lightgbm, numpy,
# psycopg[binary], flask, gunicorn are pip-installed when missing), wrk
# (apt-get installed when missing and running as root).

set -euo pipefail
BENCH_NAME=ml_predict
# shellcheck source=benches/ml_common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/ml_common.sh"

DURATION="${DURATION:-15}"
ROUNDS="${ROUNDS:-2}"
PROTOCOLS="${PROTOCOLS:-simple prepared}"
CLIENTS="${CLIENTS:-8}"
BATCH_CLIENTS="${BATCH_CLIENTS:-1}"
BATCH_LIMIT="${BATCH_LIMIT:-10000}"
PY_WORKERS="${PY_WORKERS:-2}"
PY_THREADS="${PY_THREADS:-4}"
check_positive ROWS DURATION ROUNDS CLIENTS BATCH_CLIENTS BATCH_LIMIT PY_WORKERS PY_THREADS POOL_SIZE
for p in $PROTOCOLS; do
  [[ "$p" =~ ^(simple|extended|prepared)$ ]] || die "PROTOCOLS: unknown pgbench protocol '$p'"
done

ml_prereqs
ml_python_deps lightgbm:lightgbm numpy:numpy psycopg:'psycopg[binary]' flask:flask gunicorn:gunicorn
if ! command -v wrk >/dev/null; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    log "apt-get install -y wrk"
    { apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }; } >/dev/null 2>&1 ||
      die "apt-get install wrk failed"
  else
    die "wrk not found: apt-get install -y wrk"
  fi
fi
ml_build
ml_start_postgres
ml_start_pgmlcat
ml_make_table

# ---------------------------------------------------------------- model
log "training project 'p' through pgmlcat (lightgbm, regression)"
started="$(now)"
psql_proxy -c "SELECT * FROM pgml.train('p', 'regression', 't_features_view', 'y', algorithm => 'lightgbm')" \
  >"$TMP_DIR/train.log" 2>&1 || { show_log_tail "$TMP_DIR/train.log"; show_log_tail "$TMP_DIR/pgmlcat.log"; die "pgml.train failed"; }
TRAIN_S="$(elapsed "$started" "$(now)")"
MODEL_INFO="$(psql_direct -At -F ' ' -c "SELECT m.id, round((m.metrics->>'r2')::numeric, 4) FROM pgml.deployed_models d JOIN pgml.models m ON m.id = d.id WHERE d.name = 'p'")"
log "trained in ${TRAIN_S}s (model id, r2: $MODEL_INFO)"

ARRAY_EXPR="ARRAY[$FEATURES]"
mkdir -p "$TMP_DIR/scripts"
cat >"$TMP_DIR/scripts/batch-predict.sql" <<EOF
SELECT id, pgml.predict('p', $ARRAY_EXPR) FROM t LIMIT $BATCH_LIMIT;
EOF
cat >"$TMP_DIR/scripts/batch-plain.sql" <<EOF
SELECT id, $ARRAY_EXPR FROM t LIMIT $BATCH_LIMIT;
EOF
cat >"$TMP_DIR/scripts/single-predict.sql" <<EOF
\set id random(1, $ROWS)
SELECT pgml.predict('p', $ARRAY_EXPR) FROM t WHERE id = :id;
EOF
cat >"$TMP_DIR/scripts/single-plain.sql" <<EOF
\set id random(1, $ROWS)
SELECT $FEATURES FROM t WHERE id = :id;
EOF

# Sanity: the rewritten queries answer, and agree with the Python server's model.
PGMLCAT_PRED_1="$(psql_proxy -At -c "SELECT pgml.predict('p', $ARRAY_EXPR) FROM t WHERE id = 1")"
[[ -n "$PGMLCAT_PRED_1" ]] || die "pgml.predict through pgmlcat returned nothing"
n="$(psql_proxy -At -c "SELECT id, pgml.predict('p', $ARRAY_EXPR) FROM t LIMIT $BATCH_LIMIT" | grep -c '|[0-9.e+-]*$' || true)"
[[ "$n" == "$BATCH_LIMIT" ]] || die "batch predict returned $n rows with a prediction, expected $BATCH_LIMIT"

# ---------------------------------------------------------------- python server
PY_PORT="$(free_port)"
log "starting the Python model server (gunicorn -w $PY_WORKERS --threads $PY_THREADS, Flask) on port $PY_PORT"
(
  cd "$SCRIPT_DIR"
  BENCH_DSN="$DIRECT_DSN" BENCH_PROJECT=p exec setsid python3 -m gunicorn \
    -w "$PY_WORKERS" -k gthread --threads "$PY_THREADS" --keep-alive 30 \
    -b "127.0.0.1:$PY_PORT" --log-level warning ml_predict_server:app
) >"$TMP_DIR/pyserver.log" 2>&1 </dev/null &
PY_PID=$!
EXTRA_PIDS+=("$PY_PID")
ok=0
for _ in $(seq 1 100); do
  if python3 -c "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())" \
    "http://127.0.0.1:$PY_PORT/predict/1" >"$TMP_DIR/py-pred-1.json" 2>/dev/null; then
    ok=1
    break
  fi
  kill -0 "$PY_PID" 2>/dev/null || break
  sleep 0.2
done
[[ "$ok" == 1 ]] || { show_log_tail "$TMP_DIR/pyserver.log"; die "the Python model server did not come up"; }
PY_PRED_1="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["prediction"])' "$TMP_DIR/py-pred-1.json")"
log "prediction for id 1: pgmlcat $PGMLCAT_PRED_1, python $PY_PRED_1"
python3 -c 'import sys; a, b = map(float, sys.argv[1:]); sys.exit(0 if abs(a - b) <= 1e-4 * max(1, abs(b)) else 1)' \
  "$PGMLCAT_PRED_1" "$PY_PRED_1" || die "pgmlcat and the Python server disagree on id 1: $PGMLCAT_PRED_1 vs $PY_PRED_1"

cat >"$TMP_DIR/scripts/wrk.lua" <<EOF
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end
function init(args)
  math.randomseed(os.time() * 100 + tid)
end
request = function()
  return wrk.format("GET", "/predict/" .. math.random(1, $ROWS))
end
EOF

# ---------------------------------------------------------------- runs
# results.tsv: round case protocol clients tps latency_ms failed rc
RESULTS="$TMP_DIR/results.tsv"
: >"$RESULTS"

run_pgbench() { # round case protocol clients
  local round=$1 case=$2 proto=$3 clients=$4 jobs=2 rc=0
  ((clients < 2)) && jobs=1
  local out="$TMP_DIR/run-$round-$case-$proto.log"
  "$PG_BIN/pgbench" -n -f "$TMP_DIR/scripts/$case.sql" -T "$DURATION" -c "$clients" -j "$jobs" -M "$proto" \
    -h 127.0.0.1 -p "$PGMLCAT_PORT" -U "$DB_USER" "$DB" >"$out" 2>&1 </dev/null || rc=$?
  local tps lat failed
  tps="$(pgbench_tps "$out")"
  lat="$(pgbench_latency "$out")"
  failed="$(pgbench_failed "$out")"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$case" "$proto" "$clients" "$tps" "$lat" "$failed" "$rc" >>"$RESULTS"
  [[ "$rc" != 0 ]] && grep -E 'error|ERROR|FATAL|abort' "$out" | head -n 3 | sed 's/^/    /' >&2
  log "round $round $case ($proto, -c $clients): tps=$tps latency=${lat}ms failed=$failed rc=$rc"
}

run_wrk() { # round
  local round=$1 rc=0
  local out="$TMP_DIR/run-$round-python-server.log"
  wrk -t 2 -c "$CLIENTS" -d "${DURATION}s" --latency -s "$TMP_DIR/scripts/wrk.lua" \
    "http://127.0.0.1:$PY_PORT" >"$out" 2>&1 </dev/null || rc=$?
  local rps lat errors
  rps="$(awk '/^Requests\/sec:/ {print $2; exit}' "$out")"
  lat="$(awk '/^    Latency/ {print $2; exit}' "$out")"
  # wrk prints latency with a unit (us, ms, s); convert to ms.
  lat="$(python3 -c 'import sys,re; m=re.match(r"([0-9.]+)(us|ms|s)$", sys.argv[1]); print("NA" if not m else round(float(m[1]) * {"us": 1e-3, "ms": 1, "s": 1e3}[m[2]], 3))' "${lat:-x}")"
  errors="$(awk '/Non-2xx or 3xx responses:/ {n += $NF} /Socket errors:/ {gsub(",", ""); n += $4 + $6 + $8 + $10} END {print n + 0}' "$out")"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" python-server http "$CLIENTS" "${rps:-NA}" "$lat" "$errors" "$rc" >>"$RESULTS"
  log "round $round python-server (wrk -t 2 -c $CLIENTS): req/s=${rps:-NA} latency=${lat}ms errors=$errors rc=$rc"
}

log "warm-up"
for p in $PROTOCOLS; do
  "$PG_BIN/pgbench" -n -f "$TMP_DIR/scripts/single-predict.sql" -T 2 -c "$CLIENTS" -j 2 -M "$p" \
    -h 127.0.0.1 -p "$PGMLCAT_PORT" -U "$DB_USER" "$DB" >/dev/null 2>&1 || true
done
wrk -t 2 -c "$CLIENTS" -d 2s -s "$TMP_DIR/scripts/wrk.lua" "http://127.0.0.1:$PY_PORT" >/dev/null 2>&1 || true

runs_per_round=$(( $(wc -w <<<"$PROTOCOLS") * 4 + 1 ))
log "running $ROUNDS round(s) x $runs_per_round runs of ${DURATION}s"
for round in $(seq 1 "$ROUNDS"); do
  ml_wait_quiet "round $round"
  for p in $PROTOCOLS; do
    run_pgbench "$round" batch-plain "$p" "$BATCH_CLIENTS"
    run_pgbench "$round" batch-predict "$p" "$BATCH_CLIENTS"
    run_pgbench "$round" single-plain "$p" "$CLIENTS"
    run_pgbench "$round" single-predict "$p" "$CLIENTS"
  done
  run_wrk "$round"
done

# ---------------------------------------------------------------- report
mkdir -p "$RESULTS_DIR"
STAMP="$(date +%Y%m%d-%H%M%S)"
MD_OUT="$RESULTS_DIR/ml-predict-$STAMP.md"

RESULTS="$RESULTS" MD_OUT="$MD_OUT" ROWS="$ROWS" DURATION="$DURATION" ROUNDS="$ROUNDS" \
PROTOCOLS="$PROTOCOLS" CLIENTS="$CLIENTS" BATCH_CLIENTS="$BATCH_CLIENTS" BATCH_LIMIT="$BATCH_LIMIT" \
PY_WORKERS="$PY_WORKERS" PY_THREADS="$PY_THREADS" POOL_SIZE="$POOL_SIZE" PG_VERSION="$PG_VERSION" \
PGMLCAT_VERSION="$PGMLCAT_VERSION" NPROC="$NPROC" WORKER_THREADS="${WORKER_THREADS:-default}" \
MODEL_INFO="$MODEL_INFO" TRAIN_S="$TRAIN_S" QUIET_NOTES="$(printf '%s\n' "${QUIET_NOTES[@]}")" LOADAVG="$(cut -d' ' -f1-3 /proc/loadavg)" \
python3 - <<'PY'
import datetime, os, platform, statistics

E = os.environ
runs = {}
for line in open(E["RESULTS"]):
    rnd, case, proto, clients, tps, lat, failed, rc = line.rstrip("\n").split("\t")
    runs.setdefault((case, proto), []).append(
        dict(tps=None if tps == "NA" else float(tps), lat=None if lat == "NA" else float(lat),
             failed=int(failed), rc=int(rc)))

def med(case, proto, key):
    vals = [r[key] for r in runs.get((case, proto), []) if r[key] is not None]
    return statistics.median(vals) if vals else None

def bad(case, proto):
    rs = runs.get((case, proto), [])
    return sum(r["failed"] for r in rs) + sum(1 for r in rs if r["rc"] != 0 or r["tps"] is None)

def f(v, fmt="{:.2f}"):
    return "-" if v is None else fmt.format(v)

def verdict(ok):
    return "met" if ok else "NOT met"

protocols = E["PROTOCOLS"].split()
targets = []
rows_a, rows_b, rows_c = [], [], []
for p in protocols:
    plain, pred = med("batch-plain", p, "lat"), med("batch-predict", p, "lat")
    r = pred / plain if plain and pred else None
    rows_a.append([p, f(plain, "{:.2f}"), f(pred, "{:.2f}"), f(r),
                   f"{bad('batch-plain', p)}/{bad('batch-predict', p)}"])
    targets.append(f"(a) batch, {p}: predict / plain time = {f(r)} (target <= 1.50: {verdict(r is not None and r <= 1.5)})")
for p in protocols:
    plain, pred = med("single-plain", p, "tps"), med("single-predict", p, "tps")
    r = pred / plain if plain and pred else None
    rows_b.append([p, f(plain, "{:,.0f}"), f(pred, "{:,.0f}"), f(r),
                   f(med("single-plain", p, "lat"), "{:.3f}"), f(med("single-predict", p, "lat"), "{:.3f}"),
                   f"{bad('single-plain', p)}/{bad('single-predict', p)}"])
    targets.append(f"(b) single row, {p}: predict / plain TPS = {f(r)} (target >= 0.80: {verdict(r is not None and r >= 0.8)})")
py = med("python-server", "http", "tps")
py_lat = med("python-server", "http", "lat")
rows_c.append(["Python server (Flask, gunicorn gthread, wrk)", f(py, "{:,.0f}"), f(py_lat, "{:.3f}"), "1.00",
               str(bad("python-server", "http"))])
for p in protocols:
    t = med("single-predict", p, "tps")
    r = t / py if t and py else None
    rows_c.append([f"pgmlcat pgml.predict, pgbench -M {p}", f(t, "{:,.0f}"),
                   f(med("single-predict", p, "lat"), "{:.3f}"), f(r), str(bad("single-predict", p))])
    targets.append(f"(c) pgmlcat ({p}) / Python server throughput = {f(r)} (target >= 8: {verdict(r is not None and r >= 8)})")

def table(head, rows):
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)

def all_runs(case, proto, key, fmt):
    return ", ".join(f(r[key], fmt) for r in runs.get((case, proto), []))

detail = []
for (case, proto), rs in sorted(runs.items()):
    detail.append([f"{case} ({proto})", all_runs(case, proto, "tps", "{:,.1f}"), all_runs(case, proto, "lat", "{:.3f}")])

now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
features = "f1, ..., f10"
md = f"""# pgml.predict through pgmlcat: overhead and a Python model server

- date: {now}
- host: {platform.node()} ({E['NPROC']} CPUs, {platform.machine()}); load average at the end: {E['LOADAVG']}
- PostgreSQL {E['PG_VERSION']}, pgmlcat {E['PGMLCAT_VERSION']} (pool_size {E['POOL_SIZE']}, worker_threads {E['WORKER_THREADS']})
- data: {int(E['ROWS']):,} rows x 10 float4 features; model: `pgml.train('p', 'regression', 't_features_view', 'y',
  algorithm => 'lightgbm')` through pgmlcat in {E['TRAIN_S']} s (model id, test r2: {E['MODEL_INFO']})
- every run {E['DURATION']} s, {E['ROUNDS']} interleaved round(s), medians shown; `failed` counts failed
  transactions/HTTP errors plus runs that exited non-zero
""" + "".join(f"- WARNING: {n}\n" for n in E["QUIET_NOTES"].splitlines() if n) + f"""

## (a) batch: 10 features in, one prediction per row

`SELECT id, pgml.predict('p', ARRAY[{features}]) FROM t LIMIT {E['BATCH_LIMIT']}` vs
`SELECT id, ARRAY[{features}] FROM t LIMIT {E['BATCH_LIMIT']}`, both through pgmlcat,
pgbench custom scripts, {E['BATCH_CLIENTS']} client(s), average latency per query.

{table(["protocol", "plain ms", "predict ms", "predict / plain", "failed"], rows_a)}

## (b) single row

`\\set id random(1, {E['ROWS']})` then `SELECT pgml.predict('p', ARRAY[{features}]) FROM t WHERE id = :id` vs
`SELECT {features} FROM t WHERE id = :id`, both through pgmlcat, `pgbench -c {E['CLIENTS']} -j 2`.

{table(["protocol", "plain TPS", "predict TPS", "predict / plain", "plain ms", "predict ms", "failed"], rows_b)}

## (c) against a Python model server

`benches/ml_predict_server.py`: Flask under gunicorn (`-w {E['PY_WORKERS']} -k gthread --threads {E['PY_THREADS']}`),
each thread with its own psycopg connection straight to Postgres (no pooler), fetching the row's features
and predicting with a LightGBM Booster loaded from the model pgmlcat trained (pgml.files), `num_threads=1`;
driven by `wrk -t 2 -c {E['CLIENTS']}` (keep-alive) requesting random ids. pgmlcat: the single-row
pgml.predict runs of (b), same concurrency. Both load generators run on the same machine.

{table(["server", "req/s or TPS", "latency ms", "vs Python server", "failed"], rows_c)}

## Against the targets

""" + "\n".join(f"- {t}" for t in targets) + f"""

## Every run

{table(["case", "TPS", "latency ms"], detail)}
"""
with open(E["MD_OUT"], "w") as fh:
    fh.write(md)
print()
print(md)
print(f"markdown written to {E['MD_OUT']}")
PY
