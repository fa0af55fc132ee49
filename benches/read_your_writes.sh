#!/usr/bin/env bash
# Read-your-writes (pool key `read_your_writes`): how soon a writer's reads
# use replicas again, and what the feature costs. Not run in CI.
#
#   flock /tmp/cargo.lock benches/read_your_writes.sh
#   ROUNDS=1 SECONDS=5 WRITES=50 flock /tmp/cargo.lock benches/read_your_writes.sh   # a quick try
#
# Starts a throwaway PostgreSQL 15 primary (`synchronous_commit = on`,
# `pgbench -i -s SCALE`, a table t(id)) and two streaming replicas of it
# (pg_basebackup -R -X stream -c fast, hot standby), as benches/soak.sh does,
# then two pgmlcat processes (BIN, copied into the temp dir) over the three
# servers, identical but for `read_your_writes` (true on one port, false on
# the other): one pool, transaction mode, query_parser_enabled,
# query_parser_read_write_splitting, primary_reads_enabled = false,
# default_role = "any". Then ROUNDS interleaved rounds of:
#
# 1. Time until a writer's reads use replicas again (benches/read_your_writes.py
#    lag): one psycopg 3 client, autocommit, WRITES times: after a random
#    pause of 0..GAP_MS ms, INSERT a row, then
#    `select count(*), pg_is_in_recovery() from t where id = $1` at once and
#    every POLL_US µs until a replica answers; the time from the INSERT's
#    return to that read, and every read that found no row (stale). Three
#    runs, in an order that rotates by round: through the pgmlcat with
#    read_your_writes = true (stale reads must be 0), through the one with
#    false (stale reads expected now and then), and the floor: the INSERT
#    directly on the primary, the replicas polled directly until one has it.
#    Each round does the three once on idle servers, then again under a write
#    load (LOAD_CLIENTS pgbench clients updating pgbench_accounts directly on
#    the primary), so that the replicas have WAL to replay meanwhile.
# 2. Throughput cost: pgbench -c CLIENTS -j 2 -T SECONDS through each pgmlcat,
#    on and off back to back (order alternating), for (a) -S select-only and
#    (b) a custom script of autocommit UPDATE then SELECT of the same
#    pgbench_accounts row, each in MODES_A / MODES_B (-M). TPS, pgmlcat's CPU
#    per transaction (/proc/<pid>/stat utime + stime), and where the SELECTs
#    ran: each server's pg_stat_user_tables.idx_scan delta on
#    pgbench_accounts (each UPDATE and SELECT is one index scan; the script
#    waits until the deltas add up, up to SETTLE s, since Postgres flushes
#    counts lazily).
#
# The report (percentiles, medians, on/off ratios, pgcat's 50 ms timer as a
# model, and every write that waited over DIAG_MS for a replica, with the WAL
# positions then) is printed and written to
# benches/results/read-your-writes-<date>.md. With the defaults it takes about
# 12.5 minutes on a 2-core machine (part 2 waits up to SETTLE s after each run).
#
# Environment knobs:
#   ROUNDS=5          interleaved rounds
#   SECONDS=20        seconds per pgbench run (DURATION works too; SECONDS is
#                     bash's own clock, read first thing)
#   WRITES=300        recorded writes per kind (on, off, floor) and round
#   WARMUP=10         unrecorded writes before them, each run
#   POLL_US=500       pause between reads of the same write (µs)
#   TIMEOUT_MS=20000  a write whose reads reach no replica by then is counted
#   DIAG_MS=100       a write still waiting for a replica after this long has
#                     the servers' WAL positions noted (direct connections:
#                     the primary's insert/write/flush LSN, each replica's
#                     receive/replay LSN), once then and once when it ends
#   GAP_MS=10         a random pause of 0..GAP_MS ms before each INSERT (so that
#                     writes do not fall into step with pgmlcat's 5 ms rounds)
#   LOAD_CLIENTS=4    clients of the write load beside part 1's second set of
#                     runs (0: no runs under load)
#   CLIENTS=8         pgbench clients
#   SCALE=10          pgbench scale
#   MODES_A=prepared  -M modes of (a), space separated (e.g. "prepared simple")
#   MODES_B=prepared  -M modes of (b)
#   POOL_SIZE=10      pgmlcat's pool_size
#   SETTLE=15         seconds to wait for the idx_scan counts after a run
#   SKIP_LAG=1, SKIP_PGBENCH=1   leave a part out
#   BIN=target/release/pgmlcat   the pgmlcat binary (never built here)
#   QUIET_WAIT=30, QUIET_BUSY=15 wait for the machine to be quiet before each
#                     round (ml_common.sh; never fails)
#   PG_BIN, RESULTS_DIR, PGMLCAT_LOG_LEVEL=warn, WORKER_THREADS, KEEP_TMP=1
#
# Needs: PostgreSQL 15 server binaries with pgbench and pg_basebackup,
# python3 with psycopg 3. Run as root (Postgres then runs as the `postgres`
# OS user) or as an ordinary user. On a shared machine run it under the
# build lock, as above. Every process started and the temp dir are removed
# on exit (KEEP_TMP=1 keeps the temp dir's logs).

# SECONDS is bash's own clock, started at the value in the environment.
if printenv SECONDS >/dev/null 2>&1; then RUN_SECONDS="$SECONDS"; else RUN_SECONDS="${DURATION:-20}"; fi

set -euo pipefail

BENCH_NAME=read-your-writes
QUIET_WAIT="${QUIET_WAIT:-30}"
# shellcheck source=benches/ml_common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/ml_common.sh"

ROUNDS="${ROUNDS:-5}"
WRITES="${WRITES:-300}"
WARMUP="${WARMUP:-10}"
POLL_US="${POLL_US:-500}"
TIMEOUT_MS="${TIMEOUT_MS:-20000}"
DIAG_MS="${DIAG_MS:-100}"
GAP_MS="${GAP_MS:-10}"
LOAD_CLIENTS="${LOAD_CLIENTS:-4}"
CLIENTS="${CLIENTS:-8}"
SCALE="${SCALE:-10}"
MODES_A="${MODES_A:-prepared}"
MODES_B="${MODES_B:-prepared}"
SETTLE="${SETTLE:-15}"
SKIP_LAG="${SKIP_LAG:-0}"
SKIP_PGBENCH="${SKIP_PGBENCH:-0}"
PGMLCAT_BIN="$(realpath -m "${BIN:-$PGMLCAT_BIN}")"
check_positive ROUNDS RUN_SECONDS WRITES POLL_US TIMEOUT_MS DIAG_MS CLIENTS SCALE POOL_SIZE SETTLE
[[ "$WARMUP" =~ ^[0-9]+$ && "$LOAD_CLIENTS" =~ ^[0-9]+$ ]] || die "WARMUP and LOAD_CLIENTS must be numbers"
((WARMUP + WRITES < 10000)) || die "WARMUP + WRITES must be below 10000"
[[ "$GAP_MS" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "GAP_MS must be a number of ms"
for m in $MODES_A $MODES_B; do
  [[ "$m" =~ ^(simple|extended|prepared)$ ]] || die "-M mode '$m' is not simple, extended or prepared"
done

ml_prereqs
[[ -x "$PG_BIN/pg_basebackup" ]] || die "$PG_BIN/pg_basebackup not found"
[[ -x "$PGMLCAT_BIN" ]] || die "$PGMLCAT_BIN not found (cargo build --release; this script never builds)"
ml_python_deps psycopg:'psycopg[binary]'

# ---------------------------------------------------------------- cleanup
REPLICAS=()
PIDS=()   # the pgmlcat processes, and the write load while it runs
rw_cleanup() {
  local rc=$? pid
  set +e
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  stop_clusters
  if [[ -n "$TMP_DIR" && -d "$TMP_DIR" ]]; then
    if [[ "$rc" != 0 ]]; then
      for f in "$TMP_DIR"/pgmlcat-*.log; do [[ -s "$f" ]] && show_log_tail "$f"; done
    fi
    if [[ "$KEEP_TMP" == 1 ]]; then
      rm -rf "$TMP_DIR/data" "${REPLICAS[@]}" "$TMP_DIR/pgmlcat"
      log "logs kept in $TMP_DIR"
    else
      rm -rf "$TMP_DIR"
    fi
  fi
  exit "$rc"
}
trap rw_cleanup EXIT

bench_workdir

# ---------------------------------------------------------------- primary
start_replicated_primary

pgbench_init "$SCALE"
psql_direct >"$TMP_DIR/setup.log" 2>&1 <<EOF || { show_log_tail "$TMP_DIR/setup.log"; die "creating t failed"; }
CREATE TABLE t (id int8 PRIMARY KEY);
VACUUM ANALYZE;
EOF

# ---------------------------------------------------------------- replicas
start_replicas "SELECT pg_is_in_recovery() AND EXISTS (SELECT 1 FROM pg_class WHERE relname = 't')"
SERVER_PORTS=("$PG_PORT" "${REPLICA_PORTS[@]}")

# ---------------------------------------------------------------- pgmlcat x2
declare -A PORT PID
start_pgmlcat() { # on|off
  local name=$1 ryw cfg="$TMP_DIR/pgcat-$1.toml" ok=0
  [[ "$name" == on ]] && ryw=true || ryw=false
  PORT[$name]="$(free_port)"
  cat >"$cfg" <<EOF
[general]
host = "127.0.0.1"
port = ${PORT[$name]}
admin_username = "admin"
admin_password = "admin_pw"
connect_timeout = 5000
log_client_connections = false
log_client_disconnections = false
${WORKER_THREADS:+worker_threads = $WORKER_THREADS}

[ml]
threads = 1

[pools.$DB]
pool_mode = "transaction"
query_parser_enabled = true
query_parser_read_write_splitting = true
default_role = "any"
primary_reads_enabled = false
load_balancing_mode = "random"
read_your_writes = $ryw

[pools.$DB.users.0]
username = "$DB_USER"
password = "$DB_PASS"
pool_size = $POOL_SIZE

[pools.$DB.shards.0]
servers = [["127.0.0.1", $PG_PORT, "primary"], ["127.0.0.1", ${REPLICA_PORTS[0]}, "replica"], ["127.0.0.1", ${REPLICA_PORTS[1]}, "replica"]]
database = "$DB"
EOF
  "$TMP_DIR/pgmlcat" --check "$cfg" >"$TMP_DIR/check-$name.log" 2>&1 ||
    { show_log_tail "$TMP_DIR/check-$name.log"; die "pgmlcat --check refused $cfg"; }
  "$TMP_DIR/pgmlcat" "$cfg" --log-level "$PGMLCAT_LOG_LEVEL" >"$TMP_DIR/pgmlcat-$name.log" 2>&1 </dev/null &
  PID[$name]=$!
  PIDS+=("$!")
  for _ in $(seq 1 150); do
    "$PG_BIN/psql" -X -q -At -h 127.0.0.1 -p "${PORT[$name]}" -U "$DB_USER" -d "$DB" -c 'SELECT 1' >/dev/null 2>&1 &&
      { ok=1; break; }
    kill -0 "${PID[$name]}" 2>/dev/null || break
    sleep 0.2
  done
  [[ "$ok" == 1 ]] || { show_log_tail "$TMP_DIR/pgmlcat-$name.log"; die "pgmlcat ($name) is not accepting connections"; }
  log "pgmlcat read_your_writes = $ryw on port ${PORT[$name]} (pid ${PID[$name]})"
}
start_pgmlcat on
start_pgmlcat off

dsn() { echo "host=127.0.0.1 port=$1 user=$DB_USER password=$DB_PASS dbname=$DB"; }
alive() {
  local n
  for n in on off; do
    kill -0 "${PID[$n]}" 2>/dev/null || die "pgmlcat ($n) died: see $TMP_DIR/pgmlcat-$n.log"
  done
}

LAG_OUT="$OUT_DIR/lag.jsonl"
PGBENCH_OUT="$OUT_DIR/pgbench.tsv"
: >"$LAG_OUT"
: >"$PGBENCH_OUT"

# ---------------------------------------------------------------- part 1
lag_run() { # kind round load
  local kind=$1 round=$2 load=$3 base args=()
  case $kind in floor) base=0 ;; on) base=1 ;; off) base=2 ;; esac
  [[ "$load" == idle ]] || base=$((base + 5))
  base=$(( (round * 10 + base) * 10000 ))
  if [[ "$kind" == floor ]]; then
    args=(--primary "$(dsn "$PG_PORT")" --replica "$(dsn "${REPLICA_PORTS[0]}")" --replica "$(dsn "${REPLICA_PORTS[1]}")")
  else
    args=(--dsn "$(dsn "${PORT[$kind]}")" --diag-ms "$DIAG_MS" --diag-primary "$(dsn "$PG_PORT")"
      --diag-replica "$(dsn "${REPLICA_PORTS[0]}")" --diag-replica "$(dsn "${REPLICA_PORTS[1]}")")
  fi
  python3 "$SCRIPT_DIR/read_your_writes.py" lag --kind "$kind" --round "$round" --load "$load" --writes "$WRITES" \
    --warmup "$WARMUP" --id-base "$base" --poll-us "$POLL_US" --timeout-ms "$TIMEOUT_MS" --gap-ms "$GAP_MS" \
    --out "$LAG_OUT" "${args[@]}" >>"$OUT_DIR/lag.log" 2>&1 ||
    { show_log_tail "$OUT_DIR/lag.log"; die "lag run $kind ($load, round $round) failed"; }
  alive
}
# The write load of the "under write load" runs: LOAD_CLIENTS pgbench clients
# updating pgbench_accounts directly on the primary, so that the replicas
# have WAL to replay while the client above writes and reads.
LOAD_SCRIPT="$TMP_DIR/load.sql"
cat >"$LOAD_SCRIPT" <<'EOF'
\set aid random(1, 100000 * :scale)
UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;
EOF
chmod 644 "$LOAD_SCRIPT"
LOAD_PID=""
start_load() { # round
  "$PG_BIN/pgbench" -n -f "$LOAD_SCRIPT" -s "$SCALE" -c "$LOAD_CLIENTS" -j 1 -T 3600 -M prepared \
    -h 127.0.0.1 -p "$PG_PORT" -U "$DB_USER" "$DB" >"$OUT_DIR/load-$1.log" 2>&1 </dev/null &
  LOAD_PID=$!
  PIDS+=("$LOAD_PID")
  sleep 1
  kill -0 "$LOAD_PID" 2>/dev/null || { show_log_tail "$OUT_DIR/load-$1.log"; die "the write load did not start"; }
}
stop_load() {
  local i
  kill -TERM "$LOAD_PID" 2>/dev/null || true
  wait "$LOAD_PID" 2>/dev/null || true
  for i in "${!PIDS[@]}"; do [[ "${PIDS[$i]}" == "$LOAD_PID" ]] && unset 'PIDS[i]'; done
  LOAD_PID=""
}
if [[ "$SKIP_LAG" != 1 ]]; then
  loads=(idle)
  if ((LOAD_CLIENTS > 0)); then loads+=(loaded); fi
  for round in $(seq 1 "$ROUNDS"); do
    ml_wait_quiet "lag round $round"
    case $((round % 3)) in
      1) order=(floor on off) ;;
      2) order=(on off floor) ;;
      0) order=(off floor on) ;;
    esac
    for load in "${loads[@]}"; do
      if [[ "$load" == loaded ]]; then start_load "$round"; fi
      for kind in "${order[@]}"; do
        log "[lag round $round/$ROUNDS] $kind, $load: $WRITES writes"
        lag_run "$kind" "$round" "$load"
      done
      if [[ "$load" == loaded ]]; then stop_load; fi
    done
  done
fi

# ---------------------------------------------------------------- part 2
B_SCRIPT="$TMP_DIR/write-then-read.sql"
cat >"$B_SCRIPT" <<'EOF'
\set aid random(1, 100000 * :scale)
UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
EOF
chmod 644 "$B_SCRIPT"

# idx_scan of pgbench_accounts on one server.
server_idx() { # port
  "$PG_BIN/psql" -X -q -At -h 127.0.0.1 -p "$1" -U "$DB_USER" -d "$DB" -c \
    "SELECT coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'pgbench_accounts'"
}
# "idx0 idx1 idx2" over the three servers.
all_idx() {
  local p idx=()
  for p in "${SERVER_PORTS[@]}"; do idx+=("$(server_idx "$p")"); done
  echo "${idx[*]}"
}
# The backends of pgmlcat's monitor connections (health checks and the
# freshness sampler, of both pgmlcat processes) on one server: "pid:ticks ...".
# (pg_stat_database.xact_commit cannot count their queries: Postgres 15
# flushes a backend's commit count only along with table statistics, and
# the monitor's query reads no table.)
monitor_ticks() { # port
  local pid out=()
  for pid in $("$PG_BIN/psql" -X -q -At -h 127.0.0.1 -p "$1" -U "$DB_USER" -d "$DB" -c \
    "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgmlcat-monitor'"); do
    [[ -r "/proc/$pid/stat" ]] && out+=("$pid:$(proc_ticks "$pid")")
  done
  echo "${out[*]}"
}
# CPU ticks the backends listed in $1 ("pid:ticks ...") used since.
monitor_delta() { # "pid:ticks ..."
  local e pid t0 t1 sum=0
  for e in $1; do
    pid=${e%%:*} t0=${e#*:}
    t1="$(proc_ticks "$pid" 2>/dev/null)" || continue
    [[ -n "$t1" ]] && sum=$((sum + t1 - t0))
  done
  echo "$sum"
}
proc_ticks() { # pid: utime + stime
  sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}'
}
CLK_TCK="$(getconf CLK_TCK 2>/dev/null || echo 100)"

pgbench_run() { # round workload mode on|off
  local round=$1 wl=$2 mode=$3 setting=$4 out args c0 c1 rc=0 s0 s1 txns tps failed expect settled=0 t0 t1 i
  local m0=() m1=()
  out="$OUT_DIR/pgbench-$round-$wl-$mode-$setting.log"
  if [[ "$wl" == a ]]; then args=(-S); else args=(-f "$B_SCRIPT"); fi
  read -r -a s0 < <(all_idx)
  for i in 0 1 2; do m0[i]="$(monitor_ticks "${SERVER_PORTS[i]}")"; done
  c0="$(proc_ticks "${PID[$setting]}")"
  t0="$EPOCHREALTIME"
  "$PG_BIN/pgbench" -n "${args[@]}" -s "$SCALE" -c "$CLIENTS" -j 2 -T "$RUN_SECONDS" -M "$mode" \
    -h 127.0.0.1 -p "${PORT[$setting]}" -U "$DB_USER" "$DB" >"$out" 2>&1 </dev/null || rc=$?
  t1="$EPOCHREALTIME"
  c1="$(proc_ticks "${PID[$setting]}")"
  for i in 0 1 2; do m1[i]="$(monitor_delta "${m0[i]}")"; done
  alive
  txns="$(awk '/^number of transactions actually processed/ {print $NF; exit}' "$out")"
  [[ "$txns" =~ ^[0-9]+$ ]] || txns=0
  tps="$(pgbench_tps "$out")"
  failed="$(pgbench_failed "$out")"
  # Statements that scan pgbench_accounts: one per transaction in (a), two in (b).
  if [[ "$wl" == a ]]; then expect=$txns; else expect=$((txns * 2)); fi
  local deadline=$(( $(date +%s) + SETTLE )) sum
  while :; do
    read -r -a s1 < <(all_idx)
    sum=$(( s1[0] - s0[0] + s1[1] - s0[1] + s1[2] - s0[2] ))
    ((sum == expect)) && { settled=1; break; }
    (( $(date +%s) >= deadline )) && break
    sleep 0.5
  done
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
    "$round" "$wl" "$mode" "$setting" "$tps" "$txns" "$failed" "$rc" $((c1 - c0)) 0 "$settled" \
    "$(python3 -c "print(round($t1 - $t0, 3))")" \
    $((s1[0] - s0[0])) $((s1[1] - s0[1])) $((s1[2] - s0[2])) "${m1[0]}" "${m1[1]}" "${m1[2]}" >>"$PGBENCH_OUT"
  local status=""
  [[ "$rc" != 0 ]] && { status=" EXIT $rc"; grep -E 'error|FATAL|abort' "$out" | head -n 3 | sed 's/^/    /' >&2 || true; }
  [[ "$failed" != 0 ]] && status="$status failed=$failed"
  [[ "$settled" != 1 ]] && status="$status (idx_scan deltas $sum, expected $expect)"
  log "[pgbench round $round/$ROUNDS] ($wl) -M $mode read_your_writes=$setting: tps=$tps," \
    "pgmlcat $(( (c1 - c0) * 1000000 / CLK_TCK / (txns > 0 ? txns : 1) )) µs/tx," \
    "SELECTs on replicas $(( s1[1] - s0[1] + s1[2] - s0[2] )) of $txns," \
    "monitor backends' CPU ticks ${m1[*]}$status"
}
if [[ "$SKIP_PGBENCH" != 1 ]]; then
  for round in $(seq 1 "$ROUNDS"); do
    ml_wait_quiet "pgbench round $round"
    k=0
    for wl in a b; do
      if [[ "$wl" == a ]]; then modes=$MODES_A; else modes=$MODES_B; fi
      for mode in $modes; do
        k=$((k + 1))
        if (( (round + k) % 2 )); then order=(on off); else order=(off on); fi
        for setting in "${order[@]}"; do
          pgbench_run "$round" "$wl" "$mode" "$setting"
        done
      done
    done
  done
fi

# ---------------------------------------------------------------- report
for n in on off; do
  if grep -qiE 'panic' "$TMP_DIR/pgmlcat-$n.log"; then
    show_log_tail "$TMP_DIR/pgmlcat-$n.log"
    die "pgmlcat ($n) logged a panic"
  fi
done
mkdir -p "$RESULTS_DIR"
MD_OUT="$RESULTS_DIR/read-your-writes-$(date +%Y%m%d-%H%M%S).md"
QUIET_NOTES_TEXT="$(printf '%s\n' "${QUIET_NOTES[@]+"${QUIET_NOTES[@]}"}")"
PSYCOPG_VERSION="$(python3 -c 'import psycopg; print(psycopg.__version__)')"
LOAD_CLIENTS="$LOAD_CLIENTS" ROUNDS="$ROUNDS" WRITES="$WRITES" WARMUP="$WARMUP" POLL_US="$POLL_US" TIMEOUT_MS="$TIMEOUT_MS" GAP_MS="$GAP_MS" DIAG_MS="$DIAG_MS" \
RUN_SECONDS="$RUN_SECONDS" CLIENTS="$CLIENTS" SCALE="$SCALE" POOL_SIZE="$POOL_SIZE" SETTLE="$SETTLE" \
PG_VERSION="$PG_VERSION" PGMLCAT_VERSION="$PGMLCAT_VERSION" NPROC="$NPROC" CLK_TCK="$CLK_TCK" \
PSYCOPG_VERSION="$PSYCOPG_VERSION" QUIET_NOTES="$QUIET_NOTES_TEXT" \
LAG_OUT="$LAG_OUT" PGBENCH_OUT="$PGBENCH_OUT" MD_OUT="$MD_OUT" \
  python3 "$SCRIPT_DIR/read_your_writes.py" report
log "report written to $MD_OUT"
if grep -q '^\*\*BUG' "$MD_OUT"; then
  log "WARNING: stale reads with read_your_writes = true; see the report"
fi
