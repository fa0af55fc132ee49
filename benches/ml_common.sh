# Shared by benches/ml_train.sh and benches/ml_predict.sh (sourced, not run):
# building pgmlcat, a throwaway PostgreSQL 15 cluster, pgmlcat in front of
# it, the generated feature table, and cleanup of everything started.
#
# The sourcing script sets BENCH_NAME before sourcing and calls, in order:
#   ml_prereqs; ml_build; ml_start_postgres; ml_start_pgmlcat; ml_make_table
# Everything started is stopped by the EXIT trap installed here.

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"

ROWS="${ROWS:-1000000}"
PGMLCAT_BIN="${PGMLCAT_BIN:-$REPO_ROOT/target/release/pgmlcat}"
PGMLCAT_LOG_LEVEL="${PGMLCAT_LOG_LEVEL:-warn}"
NO_BUILD="${NO_BUILD:-0}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
RESULTS_DIR="${RESULTS_DIR:-$REPO_ROOT/benches/results}"
POOL_SIZE="${POOL_SIZE:-10}"
# pgmlcat's [general] worker_threads; empty = pgmlcat's default (one per core).
WORKER_THREADS="${WORKER_THREADS:-}"
# pgmlcat's [ml] threads (0 = one per core); the Python side gets the same count.
ML_THREADS="${ML_THREADS:-0}"
KEEP_TMP="${KEEP_TMP:-0}"

DB=app
DB_USER=app
DB_PASS=app_pw
NPROC="$(nproc 2>/dev/null || echo 1)"
if [[ "$ML_THREADS" == 0 ]]; then
  # pgmlcat's [ml] threads = 0 means one per core but one (at least 1).
  EFFECTIVE_THREADS=$(( NPROC > 1 ? NPROC - 1 : 1 ))
else
  EFFECTIVE_THREADS="$ML_THREADS"
fi

log() { printf '[%s %s] %s\n' "$BENCH_NAME" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

check_positive() { # var...
  local v
  for v in "$@"; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
  done
}

now() { date +%s.%N; }
elapsed() { # start end
  python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$2"
}

as_pg() {
  if [[ "$(id -u)" == 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

show_log_tail() { # file
  [[ -f "$1" ]] && { log "--- tail of $1 ---"; tail -n 30 "$1" >&2 || true; }
}

# ---------------------------------------------------------------- cleanup
PG_STARTED=0
PGMLCAT_PID=""
# Extra PIDs (process group leaders or plain processes) the script started.
EXTRA_PIDS=()
TMP_DIR=""

ml_cleanup() {
  local rc=$?
  set +e
  local pid
  for pid in "${EXTRA_PIDS[@]}"; do
    [[ -n "$pid" ]] || continue
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  done
  for pid in "${EXTRA_PIDS[@]}"; do
    [[ -n "$pid" ]] || continue
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
  done
  if [[ -n "$PGMLCAT_PID" ]]; then
    kill -TERM "$PGMLCAT_PID" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$PGMLCAT_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PGMLCAT_PID" 2>/dev/null
    wait "$PGMLCAT_PID" 2>/dev/null
  fi
  if [[ "$PG_STARTED" == 1 ]]; then
    as_pg "$PG_BIN/pg_ctl" -D "$TMP_DIR/data" -m immediate -w stop >/dev/null 2>&1
  fi
  if [[ -n "$TMP_DIR" && -d "$TMP_DIR" ]]; then
    if [[ "$KEEP_TMP" == 1 || "$rc" != 0 ]]; then
      log "logs kept in $TMP_DIR"
    else
      rm -rf "$TMP_DIR"
    fi
  fi
  exit "$rc"
}
trap ml_cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# ---------------------------------------------------------------- prerequisites
ml_prereqs() { # extra commands...
  local b
  for b in initdb pg_ctl pgbench psql postgres; do
    [[ -x "$PG_BIN/$b" ]] || die "$PG_BIN/$b not found (install postgresql-15)"
  done
  command -v python3 >/dev/null || die "python3 is required"
  if [[ "$(id -u)" == 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' OS user"
  fi
}

# Installs the Python modules given as "module:pip-spec" pairs when missing.
ml_python_deps() {
  local pair mod spec missing=()
  for pair in "$@"; do
    mod="${pair%%:*}"
    spec="${pair#*:}"
    python3 -c "import $mod" 2>/dev/null || missing+=("$spec")
  done
  if ((${#missing[@]} > 0)); then
    log "pip install ${missing[*]}"
    python3 -m pip install --quiet "${missing[@]}" >&2 || die "pip install ${missing[*]} failed"
  fi
}

# cargo build --release unless NO_BUILD=1 and the binary exists. The lock is
# shared with the other builders on this machine: never two cargo builds at once.
ml_build() {
  if [[ "$NO_BUILD" == 1 && -x "$PGMLCAT_BIN" ]]; then
    return 0
  fi
  if [[ "$PGMLCAT_BIN" != "$REPO_ROOT/target/release/pgmlcat" ]]; then
    [[ -x "$PGMLCAT_BIN" ]] || die "$PGMLCAT_BIN not found"
    return 0
  fi
  log "cargo build --release (under flock /tmp/pgmlcat-cargo.lock)"
  (cd "$REPO_ROOT" && flock /tmp/pgmlcat-cargo.lock cargo build --release --quiet) ||
    die "cargo build --release failed"
  [[ -x "$PGMLCAT_BIN" ]] || die "$PGMLCAT_BIN still missing after the build"
}

# ---------------------------------------------------------------- postgres
# A caller may have made $TMP_DIR already (to keep its binary there), and
# may set PG_MAX_CONNECTIONS, SHARED_BUFFERS and PG_EXTRA_CONF (more lines
# of postgresql.conf).
ml_start_postgres() {
  if [[ -z "$TMP_DIR" ]]; then
    TMP_DIR="$(mktemp -d "${TMPDIR:-/tmp}/pgmlcat-$BENCH_NAME.XXXXXX")"
    chmod 777 "$TMP_DIR"
  fi
  PG_PORT="$(free_port)"
  log "initdb in $TMP_DIR/data (port $PG_PORT)"
  as_pg "$PG_BIN/initdb" -D "$TMP_DIR/data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync \
    >"$TMP_DIR/initdb.log" 2>&1 || { show_log_tail "$TMP_DIR/initdb.log"; die "initdb failed"; }
  as_pg tee -a "$TMP_DIR/data/postgresql.conf" >/dev/null <<EOF

# --- pgmlcat ML benchmark settings ---
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$TMP_DIR'
max_connections = ${PG_MAX_CONNECTIONS:-300}
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = ${SHARED_BUFFERS:-256MB}
${PG_EXTRA_CONF:-}
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
  PG_VERSION="$("$PG_BIN/postgres" --version | awk '{print $3}')"
  DIRECT_DSN="host=127.0.0.1 port=$PG_PORT user=$DB_USER password=$DB_PASS dbname=$DB"
}

# ---------------------------------------------------------------- replicas
# The work dir of a bench that copies its binary in (so a build meanwhile
# does not change it): TMP_DIR, OUT_DIR, $TMP_DIR/pgmlcat and
# PGMLCAT_VERSION (commit, +dirty, and the binary's date).
bench_workdir() {
  TMP_DIR="$(mktemp -d "${TMPDIR:-/tmp}/pgmlcat-bench-$BENCH_NAME.XXXXXX")"
  chmod 777 "$TMP_DIR"
  OUT_DIR="$TMP_DIR/out"
  mkdir -p "$OUT_DIR"
  cp -p "$PGMLCAT_BIN" "$TMP_DIR/pgmlcat"
  PGMLCAT_VERSION="$(cd "$REPO_ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  [[ -n "$(cd "$REPO_ROOT" && git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]] &&
    PGMLCAT_VERSION="$PGMLCAT_VERSION+dirty"
  PGMLCAT_VERSION="$PGMLCAT_VERSION (binary of $(date -u -r "$PGMLCAT_BIN" '+%Y-%m-%d %H:%M UTC'))"
}

# A primary streaming replicas can follow (ml_start_postgres, plus WAL for
# walsenders, hot standby feedback and replication from 127.0.0.1).
# synchronous_commit on (ml_start_postgres sets it off; the later line wins): an
# acknowledged commit survives a restart, and its WAL is written at once,
# so the walsenders send it without waiting for the WAL writer.
start_replicated_primary() {
  PG_MAX_CONNECTIONS=200
  PG_EXTRA_CONF="synchronous_commit = on
wal_level = replica
max_wal_senders = 10
hot_standby = on
hot_standby_feedback = on
max_wal_size = 2GB"
  SHARED_BUFFERS=128MB
  ml_start_postgres
  echo "host replication all 127.0.0.1/32 trust" | as_pg tee -a "$TMP_DIR/data/pg_hba.conf" >/dev/null
  as_pg "$PG_BIN/pg_ctl" -D "$TMP_DIR/data" reload >/dev/null
}

# Starts an existing cluster: data dir, log file.
start_cluster() {
  as_pg "$PG_BIN/pg_ctl" -D "$1" -l "$2" -w -t 120 start >>"$TMP_DIR/pg_ctl.log" 2>&1
}

# Two streaming replicas of the primary ($TMP_DIR/replica1, replica2;
# pg_basebackup -R -X stream -c fast), each waited for until READY_SQL (a
# boolean query; default: it is a hot standby) is true on it. Appends their
# data dirs to REPLICAS (for the caller's cleanup) and sets REPLICA_PORTS.
start_replicas() { # [ready_sql]
  local ready_sql="${1:-SELECT pg_is_in_recovery()}" i d port ok
  REPLICA_PORTS=()
  for i in 1 2; do
    d="$TMP_DIR/replica$i"
    log "replica $i: pg_basebackup -R -X stream -c fast"
    as_pg env PGCONNECT_TIMEOUT=10 "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PG_PORT" -U postgres -D "$d" \
      -R -X stream -c fast >"$TMP_DIR/basebackup$i.log" 2>&1 ||
      { show_log_tail "$TMP_DIR/basebackup$i.log"; die "pg_basebackup failed"; }
    port="$(free_port)"
    printf '\n# replica\nport = %s\n' "$port" | as_pg tee -a "$d/postgresql.conf" >/dev/null
    REPLICAS+=("$d")
    start_cluster "$d" "$TMP_DIR/replica$i.log" || { show_log_tail "$TMP_DIR/replica$i.log"; die "replica $i did not start"; }
    ok=0
    for _ in $(seq 1 150); do
      [[ "$("$PG_BIN/psql" -X -At -h 127.0.0.1 -p "$port" -U "$DB_USER" -d "$DB" -c "$ready_sql" 2>/dev/null)" == t ]] &&
        { ok=1; break; }
      sleep 0.2
    done
    [[ "$ok" == 1 ]] || { show_log_tail "$TMP_DIR/replica$i.log"; die "replica $i is not ready: $ready_sql"; }
    REPLICA_PORTS+=("$port")
  done
  log "primary on port $PG_PORT, replicas on ${REPLICA_PORTS[*]}"
}

# Stops the replicas (REPLICAS) and the primary, at once, for a cleanup.
stop_clusters() {
  local d
  for d in "${REPLICAS[@]}"; do
    as_pg "$PG_BIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1
  done
  if [[ "$PG_STARTED" == 1 ]]; then
    as_pg "$PG_BIN/pg_ctl" -D "$TMP_DIR/data" -m immediate -w stop >/dev/null 2>&1
    PG_STARTED=0
  fi
}

# `pgbench -i -s SCALE` on the primary (its log in pgbench-init.log).
pgbench_init() { # scale
  log "pgbench -i -s $1"
  "$PG_BIN/pgbench" -i -s "$1" -q -h 127.0.0.1 -p "$PG_PORT" -U "$DB_USER" "$DB" \
    >"$TMP_DIR/pgbench-init.log" 2>&1 || { show_log_tail "$TMP_DIR/pgbench-init.log"; die "pgbench -i failed"; }
}

# psql straight to Postgres / through pgmlcat.
psql_direct() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U "$DB_USER" -d "$DB" "$@"; }
psql_proxy() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGMLCAT_PORT" -U "$DB_USER" -d "$DB" "$@"; }

# ---------------------------------------------------------------- pgmlcat
ml_start_pgmlcat() {
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
    echo
    echo "[pools.$DB.users.0]"
    echo "username = \"$DB_USER\""
    echo "password = \"$DB_PASS\""
    echo "pool_size = $POOL_SIZE"
    echo
    echo "[pools.$DB.shards.0]"
    echo "servers = [[\"127.0.0.1\", $PG_PORT, \"primary\"]]"
    echo "database = \"$DB\""
  } >"$TMP_DIR/pgcat.toml"
  log "starting pgmlcat on port $PGMLCAT_PORT ([ml] threads = $ML_THREADS, i.e. $EFFECTIVE_THREADS)"
  "$PGMLCAT_BIN" "$TMP_DIR/pgcat.toml" --log-level "$PGMLCAT_LOG_LEVEL" \
    >"$TMP_DIR/pgmlcat.log" 2>&1 </dev/null &
  PGMLCAT_PID=$!
  local ok=0
  for _ in $(seq 1 150); do
    if psql_proxy -At -c 'SELECT 1' >/dev/null 2>&1; then ok=1; break; fi
    kill -0 "$PGMLCAT_PID" 2>/dev/null || break
    sleep 0.2
  done
  [[ "$ok" == 1 ]] || { show_log_tail "$TMP_DIR/pgmlcat.log"; die "pgmlcat is not accepting connections"; }
  PGMLCAT_VERSION="$(cd "$REPO_ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  if [[ -n "$(cd "$REPO_ROOT" && git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]]; then
    PGMLCAT_VERSION="$PGMLCAT_VERSION+dirty"
  fi
  # With NO_BUILD=1 the binary may predate HEAD: say when it was built.
  PGMLCAT_VERSION="$PGMLCAT_VERSION (binary of $(date -u -r "$PGMLCAT_BIN" '+%Y-%m-%d %H:%M UTC'))"
}

# ---------------------------------------------------------------- data
# t(id bigint primary key, f1..f10 float4, y float4): uniform features from a
# seeded random(), a nonlinear label with a little noise; t_features_view is
# what pgml.train reads (features then label, heap order = id order).
FEATURES="f1, f2, f3, f4, f5, f6, f7, f8, f9, f10"
ml_make_table() {
  log "generating t: $ROWS rows x 10 float4 features + label (setseed(0.42))"
  local started
  started="$(now)"
  psql_direct >"$TMP_DIR/make-table.log" 2>&1 <<EOF || { show_log_tail "$TMP_DIR/make-table.log"; die "table generation failed"; }
SELECT setseed(0.42);
CREATE TABLE t AS
SELECT id, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10,
       (3 * f1 - 2 * f2 + 4 * f3 * f4 + sin(6 * f5) + (f6 > 0.5)::int
        + 0.5 * f7 * f7 - f8 * f9 + 0.1 * random())::float4 AS y
FROM (SELECT g::bigint AS id,
             random()::float4 AS f1, random()::float4 AS f2, random()::float4 AS f3,
             random()::float4 AS f4, random()::float4 AS f5, random()::float4 AS f6,
             random()::float4 AS f7, random()::float4 AS f8, random()::float4 AS f9,
             random()::float4 AS f10
      FROM generate_series(1, $ROWS) g) s;
ALTER TABLE t ADD PRIMARY KEY (id);
CREATE VIEW t_features_view AS SELECT $FEATURES, y FROM t;
VACUUM ANALYZE t;
SELECT count(*) FROM t;
EOF
  log "t ready in $(elapsed "$started" "$(now)") s"
}

# pgbench's average latency (ms) and TPS (without initial connection time) from its output file.
pgbench_tps() { # file
  local v
  v="$(awk '/^tps = / && /without initial connection time/ {print $3; exit}' "$1")"
  [[ -n "$v" ]] || v="$(awk '/^tps = / {v=$3} END {if (v != "") print v}' "$1")"
  echo "${v:-NA}"
}
pgbench_latency() { # file
  local v
  v="$(awk '/^latency average = / {print $4; exit}' "$1")"
  echo "${v:-NA}"
}
pgbench_failed() { # file
  local v
  v="$(awk -F'[: ]+' '/^number of failed transactions/ {print $5; exit}' "$1")"
  [[ "$v" =~ ^[0-9]+$ ]] || v=0
  echo "$v"
}

# CPU busy share (percent, all cores) over $1 seconds, from /proc/stat.
cpu_busy() { # seconds
  python3 - "$1" <<'PY'
import sys, time
def snap():
    v = list(map(int, open("/proc/stat").readline().split()[1:]))
    idle = v[3] + v[4]
    return sum(v), idle
t0, i0 = snap(); time.sleep(float(sys.argv[1])); t1, i1 = snap()
print(round(100.0 * (1 - (i1 - i0) / max(1, t1 - t0))))
PY
}

# Benchmarks on a shared 2-core machine are only as good as its quiet: wait
# (up to QUIET_WAIT seconds, default 120) until other work leaves the CPUs
# below QUIET_BUSY percent (default 15) busy. Logs, never fails.
QUIET_WAIT="${QUIET_WAIT:-120}"
QUIET_BUSY="${QUIET_BUSY:-15}"
QUIET_NOTES=()
ml_wait_quiet() { # label
  local busy waited=0
  while :; do
    busy="$(cpu_busy 2)"
    if ((busy <= QUIET_BUSY)); then
      break
    fi
    if ((waited >= QUIET_WAIT)); then
      log "WARNING: the machine is still ${busy}% busy with other work before $1; measuring anyway"
      QUIET_NOTES+=("$1: machine ${busy}% busy with other work when it started")
      return 0
    fi
    ((waited == 0)) && log "machine ${busy}% busy with other work; waiting up to ${QUIET_WAIT}s before $1"
    sleep 3
    waited=$((waited + 5))
  done
  ((waited > 0)) && log "quiet after ${waited}s (${busy}% busy)"
  return 0
}
