#!/usr/bin/env bash
# pgml.predict anywhere (issue #17's general method): UPDATE ... SET x =
# pgml.predict(...) and aggregates over predictions through pgmlcat, against
# the same statements without a prediction, the SELECT-list fast path, and
# in-database PL/Python.
#
# Starts a throwaway PostgreSQL 15 cluster and pgmlcat in front of it,
# generates t (ROWS rows: id, f1..f10 float4, region text with 10 values,
# score real; seeded) and train_set (TRAIN_ROWS other rows of the same
# distribution plus a label y), trains project 'p' through pgmlcat
# (`pgml.train('p', 'regression', 'train_set', 'y', algorithm => 'lightgbm',
# hyperparams => '{"n_estimators": 100}')`, checked to store 100 trees), then
# measures, interleaved A B A B (PAIRS pairs, medians):
#
#  1. `UPDATE t SET score = pgml.predict('p', ARRAY[f1..f10])` against
#     `UPDATE t SET score = f1 + ... + f10`, both through pgmlcat, with
#     `VACUUM t; CHECKPOINT` before every run. Target: <= 2x the time.
#  2. `SELECT region, avg(pgml.predict('p', ARRAY[f1..f10])) FROM t GROUP BY
#     region` against streaming `SELECT pgml.predict('p', ARRAY[f1..f10])
#     FROM t` to the client (the fast path; rows read by libpq and dropped).
#     Target: <= 1.5x the time.
#  3. the UPDATE and the aggregate on the first PLPY_ROWS rows through
#     pgmlcat, against the same statements calling
#     pgml_plpy.predict(text, real[]) (benches/ml_anywhere_plpython.sql:
#     plpython3u + LightGBM's Python package, one booster per backend)
#     straight on Postgres (PLPY_PAIRS pairs). Target: pgmlcat >= 10x faster.
#     The PL/Python predictions are checked equal to pgmlcat's first.
#  4. with ML_PREDICT=1, benches/ml_predict.sh once more with the same binary
#     (its own cluster; ML_PREDICT_ROUNDS rounds), compared with the latest
#     benches/results/ml-predict-*.md before it.
#  With DIAG=1 (the default) the server side of the general method is then
#  rebuilt inside Postgres without pgmlcat (the memo filled by SQL), once per
#  variant: pgmlcat's btree and per-row lookup, larger temp_buffers and
#  maintenance_work_mem, a hash index, a join instead of lookups; so the
#  report says what the index and the statement with lookups cost and what
#  would make them cheaper.
#
# CPU time (user + sys) of pgmlcat, of the cluster's processes and of the
# client is taken from /proc around every run, and the cluster logs every
# statement's duration (log_min_duration_statement = 0), so the general
# method's time splits into its phases (collection, prediction in pgmlcat,
# COPY into the memo, its index, the statement with lookups).
# benches/ml_anywhere.py does the runs and writes the markdown to
# benches/results/ml-anywhere-<date>.md. No run starts while a cargo or
# rustc process is alive (this machine is shared): it waits, up to
# BUILD_WAIT seconds.
#
# Usage: benches/ml_anywhere.sh [pgmlcat-binary]
#   (without one: target/release/pgmlcat, built with cargo build --release
#   under flock /tmp/cargo.lock unless NO_BUILD=1; the binary is copied
#   into the bench's directory so a later build does not change it)
#
# Environment knobs:
#   ROWS=1000000        rows in t
#   TRAIN_ROWS=50000    rows the model is trained on
#   PAIRS=5             A/B pairs of items 1 and 2
#   PLPY_ROWS=100000    rows of item 3 (WHERE id <= PLPY_ROWS; = ROWS for all)
#   PLPY_PAIRS=3        A/B pairs of item 3
#   ITEMS="1 2 3"       which of items 1-3 to run
#   ML_PREDICT=0        1: item 4 (adds ~6 minutes)
#   ML_PREDICT_ROUNDS=2 ROUNDS for benches/ml_predict.sh
#   ML_PREDICT_RESULT   item 4 from this benches/results/ml-predict-*.md of an
#                       earlier run instead of running benches/ml_predict.sh
#   DIAG=1              0: no diagnostics of the server side
#   PGMLCAT_COMMIT      the commit the binary was built from, for the report
#                       (default: the repository's HEAD, which a given binary
#                       may not be)
#   TEMP_BUFFERS=8MB    the cluster's temp_buffers (the memos are temp tables)
#   PLPY_SITE=/var/cache/pgmlcat-bench/plpython3
#                       where lightgbm and numpy for Debian's python3 go
#                       (pip install --target; put on plpython's sys.path by
#                       the setting pgml_plpy.site_packages)
#   BUILD_WAIT=1800     seconds to wait for running builds before a pair
#   POOL_SIZE=10, WORKER_THREADS, ML_THREADS=0, NO_BUILD=1, PG_BIN,
#   RESULTS_DIR, PGMLCAT_LOG_LEVEL, KEEP_TMP=1   as in benches/ml_common.sh
#
# Needs: PostgreSQL 15 server binaries, postgresql-plpython3-15 and
# python3-pip (apt-get installed when missing and running as root), python3
# with psycopg 3 (pip-installed when missing), lightgbm + numpy for
# /usr/bin/python3 (pip-installed into PLPY_SITE when missing).

set -euo pipefail
BENCH_NAME=ml_anywhere
# shellcheck source=benches/ml_common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/ml_common.sh"

if (($# > 0)); then
  PGMLCAT_BIN="$(realpath "$1")"
  [[ -x "$PGMLCAT_BIN" ]] || die "$1 is not an executable"
fi
TRAIN_ROWS="${TRAIN_ROWS:-50000}"
PAIRS="${PAIRS:-5}"
PLPY_ROWS="${PLPY_ROWS:-100000}"
PLPY_PAIRS="${PLPY_PAIRS:-3}"
ITEMS="${ITEMS:-1 2 3}"
ML_PREDICT="${ML_PREDICT:-0}"
ML_PREDICT_ROUNDS="${ML_PREDICT_ROUNDS:-2}"
DIAG="${DIAG:-1}"
TEMP_BUFFERS="${TEMP_BUFFERS:-8MB}"
PLPY_SITE="${PLPY_SITE:-/var/cache/pgmlcat-bench/plpython3}"
N_ESTIMATORS=100
check_positive ROWS TRAIN_ROWS PAIRS PLPY_ROWS PLPY_PAIRS ML_PREDICT_ROUNDS POOL_SIZE
((PLPY_ROWS > ROWS)) && PLPY_ROWS="$ROWS"

# ---------------------------------------------------------------- prerequisites
ml_prereqs
ml_python_deps psycopg:'psycopg[binary]'

apt_install() { # package...
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
    die "install $* (apt-get install -y $*)"
  fi
  log "apt-get install -y $*"
  { apt-get install -y "$@" || { apt-get update && apt-get install -y "$@"; }; } >/dev/null 2>&1 ||
    die "apt-get install $* failed"
}
PG_PKGLIB="$("$PG_BIN/pg_config" --pkglibdir 2>/dev/null || echo "$PG_BIN/../lib")"
[[ -f "$PG_PKGLIB/plpython3.so" ]] || apt_install postgresql-plpython3-15
[[ -f "$PG_PKGLIB/plpython3.so" ]] || die "plpython3.so not found in $PG_PKGLIB after installing postgresql-plpython3-15"
# plpython3u runs Debian's python3; LightGBM and numpy for it go to PLPY_SITE.
if ! PYTHONPATH="$PLPY_SITE" /usr/bin/python3 -c 'import lightgbm, numpy' 2>/dev/null; then
  /usr/bin/python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  log "pip install --target $PLPY_SITE lightgbm numpy (for /usr/bin/python3)"
  mkdir -p "$PLPY_SITE"
  /usr/bin/python3 -m pip install --quiet --target "$PLPY_SITE" lightgbm numpy >&2 ||
    die "pip install lightgbm numpy for /usr/bin/python3 failed"
fi
chmod -R a+rX "$PLPY_SITE"
PLPY_LIGHTGBM="$(PYTHONPATH="$PLPY_SITE" /usr/bin/python3 -c 'import lightgbm; print(lightgbm.__version__)')"

if [[ "$NO_BUILD" != 1 && "$PGMLCAT_BIN" == "$REPO_ROOT/target/release/pgmlcat" ]]; then
  log "cargo build --release (under flock /tmp/cargo.lock)"
  (cd "$REPO_ROOT" && flock /tmp/cargo.lock flock /tmp/pgmlcat-cargo.lock cargo build --release --quiet) ||
    die "cargo build --release failed"
fi
[[ -x "$PGMLCAT_BIN" ]] || die "$PGMLCAT_BIN not found"

# ---------------------------------------------------------------- cluster, pgmlcat
ml_start_postgres
cp -p "$PGMLCAT_BIN" "$TMP_DIR/pgmlcat"
PGMLCAT_BIN="$TMP_DIR/pgmlcat"
psql_direct >/dev/null <<EOF
ALTER SYSTEM SET temp_buffers = '$TEMP_BUFFERS';
ALTER SYSTEM SET log_min_duration_statement = 0;
ALTER SYSTEM SET log_line_prefix = '%m [%p] ';
SELECT pg_reload_conf();
EOF
ml_start_pgmlcat
if [[ -n "${PGMLCAT_COMMIT:-}" ]]; then
  PGMLCAT_VERSION="$PGMLCAT_COMMIT (binary of $(date -u -r "$PGMLCAT_BIN" '+%Y-%m-%d %H:%M UTC'))"
fi

# ---------------------------------------------------------------- data
log "generating t ($ROWS rows) and train_set ($TRAIN_ROWS rows), setseed(0.42)"
started="$(now)"
RANDOMS="random()::float4 AS f1, random()::float4 AS f2, random()::float4 AS f3, random()::float4 AS f4,
  random()::float4 AS f5, random()::float4 AS f6, random()::float4 AS f7, random()::float4 AS f8,
  random()::float4 AS f9, random()::float4 AS f10"
psql_direct >"$TMP_DIR/make-table.log" 2>&1 <<EOF || { show_log_tail "$TMP_DIR/make-table.log"; die "table generation failed"; }
SELECT setseed(0.42);
CREATE TABLE t AS
SELECT g::bigint AS id, $RANDOMS,
       'region_' || floor(random() * 10)::int AS region, NULL::real AS score
FROM generate_series(1, $ROWS) g;
ALTER TABLE t ADD PRIMARY KEY (id);
ALTER TABLE t SET (autovacuum_enabled = off);
CREATE TABLE train_set AS
SELECT $FEATURES,
       (3 * f1 - 2 * f2 + 4 * f3 * f4 + sin(6 * f5) + (f6 > 0.5)::int
        + 0.5 * f7 * f7 - f8 * f9 + 0.1 * random())::float4 AS y
FROM (SELECT $RANDOMS FROM generate_series(1, $TRAIN_ROWS)) s;
VACUUM ANALYZE t;
VACUUM ANALYZE train_set;
EOF
log "data ready in $(elapsed "$started" "$(now)") s"

# ---------------------------------------------------------------- model
log "training project 'p' through pgmlcat (lightgbm, regression, n_estimators $N_ESTIMATORS)"
started="$(now)"
psql_proxy -c "SELECT * FROM pgml.train('p', 'regression', 'train_set', 'y', algorithm => 'lightgbm', hyperparams => '{\"n_estimators\": $N_ESTIMATORS}')" \
  >"$TMP_DIR/train.log" 2>&1 || { show_log_tail "$TMP_DIR/train.log"; show_log_tail "$TMP_DIR/pgmlcat.log"; die "pgml.train failed"; }
TRAIN_S="$(elapsed "$started" "$(now)")"
# The stored model: LightGBM's text format ("tree" first, a "Tree=<n>" line per tree).
IFS='|' read -r MODEL_ID FIRST_LINE TREES MODEL_BYTES R2 < <(psql_direct -At <<'EOF'
WITH d AS (SELECT id FROM pgml.deployed_models WHERE name = 'p'),
     s AS (SELECT convert_from(string_agg(f.data, ''::bytea ORDER BY f.part), 'UTF8') AS txt
           FROM pgml.files f JOIN d ON f.model_id = d.id WHERE f.path = 'model')
SELECT d.id, split_part(s.txt, E'\n', 1),
       (SELECT count(*) FROM regexp_matches(s.txt, '^Tree=[0-9]+$', 'gn')),
       octet_length(s.txt), round((m.metrics->>'r2')::numeric, 4)
FROM d, s, pgml.models m WHERE m.id = d.id
EOF
)
[[ "$FIRST_LINE" == tree && "$TREES" == "$N_ESTIMATORS" ]] ||
  die "the stored model is not a $N_ESTIMATORS-tree LightGBM text model (first line '$FIRST_LINE', $TREES trees)"
MODEL_INFO="model $MODEL_ID, LightGBM text model of $TREES trees ($MODEL_BYTES bytes in pgml.files), test r2 $R2"
log "trained in ${TRAIN_S}s: $MODEL_INFO"

# ---------------------------------------------------------------- PL/Python
log "installing pgml_plpy.predict (plpython3u, LightGBM $PLPY_LIGHTGBM)"
psql_direct -f "$SCRIPT_DIR/ml_anywhere_plpython.sql" >"$TMP_DIR/plpython.log" 2>&1 ||
  { show_log_tail "$TMP_DIR/plpython.log"; die "installing benches/ml_anywhere_plpython.sql failed"; }
psql_direct -c "ALTER DATABASE $DB SET pgml_plpy.site_packages = '$PLPY_SITE'" >/dev/null

export PROXY_DSN="host=127.0.0.1 port=$PGMLCAT_PORT user=$DB_USER password=$DB_PASS dbname=$DB"
export DIRECT_DSN PGMLCAT_PID PG_LOG="$TMP_DIR/postgres.log" PGDATA="$TMP_DIR/data"
export ROWS PLPY_ROWS PAIRS PLPY_PAIRS ITEMS BUILD_WAIT="${BUILD_WAIT:-1800}" OUT="$TMP_DIR/results.json"

log "checking pgmlcat's predictions against PL/Python's"
CHECK_JSON="$(python3 "$SCRIPT_DIR/ml_anywhere.py" check)" || die "the agreement check failed"
log "check: $CHECK_JSON"

# ---------------------------------------------------------------- runs
log "measuring items $ITEMS ($PAIRS pairs; item 3: $PLPY_PAIRS pairs on $PLPY_ROWS rows)"
ml_wait_quiet "the measurements"
python3 "$SCRIPT_DIR/ml_anywhere.py" measure || die "the measurements failed"

export DIAG_OUT=""
if [[ "$DIAG" == 1 ]]; then
  log "diagnostics: the general method's server side inside Postgres, by settings and forms"
  DIAG_OUT="$TMP_DIR/diag.json" python3 "$SCRIPT_DIR/ml_anywhere.py" diag && DIAG_OUT="$TMP_DIR/diag.json" ||
    log "WARNING: the diagnostics failed"
fi

# ---------------------------------------------------------------- item 4
ITEM4="not run (ML_PREDICT=0)"
ML_PREDICT_RESULT="${ML_PREDICT_RESULT:-}"
if [[ "$ML_PREDICT" == 1 || -n "$ML_PREDICT_RESULT" ]]; then
  if [[ -n "$ML_PREDICT_RESULT" ]]; then
    [[ -f "$ML_PREDICT_RESULT" ]] || die "ML_PREDICT_RESULT: $ML_PREDICT_RESULT not found"
    # The latest result before it.
    PREVIOUS="$(find "$RESULTS_DIR" -maxdepth 1 -name 'ml-predict-*.md' | sort |
      awk -v l="$(basename "$ML_PREDICT_RESULT")" '{n = $0; sub(".*/", "", n); if (n < l) p = $0} END {print p}')"
    log "item 4: from $ML_PREDICT_RESULT (an earlier run of benches/ml_predict.sh), previous result: ${PREVIOUS:-none}"
    ML_PREDICT_ROUNDS="$(awk '/interleaved round/ {for (i = 1; i <= NF; i++) if ($i == "s,") print $(i + 1)}' "$ML_PREDICT_RESULT" | head -n 1)"
  else
    PREVIOUS="$(find "$RESULTS_DIR" -maxdepth 1 -name 'ml-predict-*.md' | sort | tail -n 1)"
    log "item 4: benches/ml_predict.sh (ROUNDS=$ML_PREDICT_ROUNDS), previous result: ${PREVIOUS:-none}"
  fi
  if [[ -n "$ML_PREDICT_RESULT" ]] || NO_BUILD=1 PGMLCAT_BIN="$PGMLCAT_BIN" ROUNDS="$ML_PREDICT_ROUNDS" \
    RESULTS_DIR="$RESULTS_DIR" bash "$SCRIPT_DIR/ml_predict.sh" >"$TMP_DIR/ml_predict.log" 2>&1; then
    LATEST="${ML_PREDICT_RESULT:-$(find "$RESULTS_DIR" -maxdepth 1 -name 'ml-predict-*.md' | sort | tail -n 1)}"
    ITEM4="$(python3 - "$PREVIOUS" "$LATEST" "$ML_PREDICT_ROUNDS" <<'PY'
import re, sys
prev, new, rounds = sys.argv[1], sys.argv[2], sys.argv[3]
def targets(path):
    text = open(path).read() if path else ""
    m = re.search(r"## Against the targets\n\n(.*?)\n\n", text, re.S)
    return [l[2:] for l in (m[1].splitlines() if m else [])]
def rows(path):
    """(section letter, first cell) -> the row's cells, from the (a) (b) (c) tables."""
    out, sec = {}, None
    for line in (open(path).read().splitlines() if path else []):
        m = re.match(r"## \((\w)\)", line)
        if m:
            sec = m[1]
        elif line.startswith("## "):
            sec = None
        elif sec and line.startswith("| ") and not line.startswith("| protocol") and not line.startswith("| server"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            out[(sec, cells[0])] = cells[1:]
    return out
a, b = targets(prev), targets(new)
out = [f"`benches/ml_predict.sh` with this binary, ROUNDS={rounds}: `{new.split('/')[-1]}`, against "
       f"`{prev.split('/')[-1] if prev else 'none'}` before it.", "",
       "| measure | before | now |", "|---|---|---|"]
for i, line in enumerate(b):
    name, _, now = line.partition(" = ")
    before = a[i].partition(" = ")[2] if i < len(a) else "-"
    out.append(f"| {name} | {before} | {now} |")
ra, rb = rows(prev), rows(new)
heads = {"a": "plain ms, predict ms", "b": "plain TPS, predict TPS", "c": "req/s or TPS, latency ms"}
out += ["", "Absolute figures (before -> now):", "", "| table | row | figures | before | now |", "|---|---|---|---|---|"]
for key, cells in rb.items():
    old = ra.get(key)
    n = 2
    out.append(f"| ({key[0]}) | {key[1]} | {heads.get(key[0], '')} | {', '.join(old[:n]) if old else '-'} | {', '.join(cells[:n])} |")
print("\n".join(out))
PY
)"
  else
    ITEM4="benches/ml_predict.sh failed: $(tail -n 5 "$TMP_DIR/ml_predict.log" | tr '\n' ' ')"
    log "$ITEM4"
  fi
fi

# ---------------------------------------------------------------- report
mkdir -p "$RESULTS_DIR"
MD_OUT="$RESULTS_DIR/ml-anywhere-$(date +%Y%m%d-%H%M%S).md"
MD_OUT="$MD_OUT" CHECK_JSON="$CHECK_JSON" ITEM4="$ITEM4" TRAIN_ROWS="$TRAIN_ROWS" TRAIN_S="$TRAIN_S" \
MODEL_INFO="$MODEL_INFO" PG_VERSION="$PG_VERSION" PGMLCAT_VERSION="$PGMLCAT_VERSION" POOL_SIZE="$POOL_SIZE" \
TEMP_BUFFERS="$TEMP_BUFFERS" LOADAVG="$(cut -d' ' -f1-3 /proc/loadavg)" \
  python3 "$SCRIPT_DIR/ml_anywhere.py" report
log "markdown written to $MD_OUT"
