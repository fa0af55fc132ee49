#!/usr/bin/env bash
# A soak under faults (issue #21, point 4). Not run in CI.
#
#   MINUTES=10 benches/soak.sh
#
# Starts a throwaway PostgreSQL 15 primary (`pgbench -i`, the tables below)
# and two streaming replicas of it (pg_basebackup -R -X stream, hot
# standby), then pgmlcat (the release binary, copied into the temp dir so a
# build meanwhile does not change it) with one pool over the three:
# transaction mode, read/write splitting, pool_size POOL_SIZE. For MINUTES
# minutes, all at once through pgmlcat:
#
#   - pgbench -M simple and pgbench -M prepared, PGBENCH_CLIENTS clients
#     each, `-b tpcb-like@3 -b select-only@1` (writes on the primary, reads
#     on the replicas), --max-tries=1 --failures-detailed, in runs of
#     PGBENCH_SEGMENT seconds started again at once: a client that pgbench
#     aborts (connection lost) is back in the next run, and a run that ends
#     early is followed by the next, so the load lasts the whole soak;
#   - the writer (benches/soak.py writer): transactions of 10 rows with known
#     ids and values (two INSERTs; WRITER_THREADS threads, the first with
#     unnamed statements, the others with named prepared ones), each
#     recorded as acknowledged (COMMIT answered), unknown (the COMMIT was in
#     flight when the error came) or failed (an error before COMMIT);
#   - pgml.train in a loop (linear and LightGBM in turn, each deployed) and
#     pgml.predict in two loops (extended protocol with psycopg's prepared
#     statements, simple protocol with values interpolated);
#   - a vanishing client every VANISH_EVERY seconds (raw sockets: BEGIN, an
#     INSERT, then the socket closed without Terminate: FIN or RST while idle
#     in the transaction, FIN while its statement runs, RST half-way through
#     a message). Their rows must never appear;
#   - a config reload every RELOAD_EVERY seconds (SIGHUP and the admin
#     console's RELOAD in turn), each toggling pool_size between POOL_SIZE
#     and POOL_SIZE_ALT and idle_timeout;
#
# and the faults, at these percentages of the run:
#
#   REPLICA_STOP_AT=15    replica 1 stopped (pg_ctl stop -m fast)
#   REPLICA_START_AT=25   replica 1 started again
#   STORM_AT=40           STORM_CLIENTS (2,000) asyncpg clients connect at once,
#                         wait for each other, run SELECT 1 (half simple, half
#                         extended), disconnect
#   PRIMARY_RESTART_AT=55 the primary restarted (pg_ctl restart -m fast), with
#                         three raw-protocol clients placed first (soak.py
#                         probe): one with a statement in flight in a
#                         transaction, one idle in a transaction, one between
#                         transactions; every message each is told afterwards
#                         is recorded (the README: one FATAL 08006, or the
#                         server's own FATAL, to the first two; nothing to
#                         the third)
#
# (The storm comes before the half-way mark so that the RSS bound below
# compares a last half with no new high-water mark of clients against a
# first half that had one: the last half then shows growth, not the storm.)
#
# When the time is up, every client must end within STUCK_SECONDS, then it
# asserts (the run fails, exit 1, when one does not hold):
#
#   - no unexpected error class: every error any client saw (pgbench's
#     messages are mapped to their SQLSTATEs) is one the README promises for
#     a fault injected, within that fault's window (1 s before it to GRACE
#     seconds after it ended) and for a client its server served: 08006 (and
#     the server's own 57P01 of a fast shutdown, passed through) for
#     statements in flight or transactions open on the primary at its
#     restart, or on the replica at its stop; 58000 (pool exhausted) during
#     the storm. Anything else, an error with no SQLSTATE included, fails,
#     and so does more than one ErrorResponse for one statement (a probe
#     client's classes joined by "+");
#   - no stuck client: no statement took STUCK_SECONDS, every pgbench run and
#     worker ended, every storm client was done;
#   - no server connection leaked: SHOW POOLS (admin console) back to
#     cl_active = cl_waiting = sv_active = 0 within POOL_IDLE_WAIT seconds,
#     and no backend of the pool's user busy or idle in transaction on any
#     server;
#   - RSS bounded: pgmlcat's VmRSS (sampled every second) over the last half
#     of the run never above 1 + RSS_SLACK (1.10) times its maximum over the
#     first half;
#   - nothing lost: on the primary, read directly, every acknowledged row is
#     there, no row of a transaction that failed before COMMIT is, each
#     unknown commit is there whole or not at all, every value is the one
#     written, and count and sum(val) equal acknowledged + unknown-found-
#     committed; no vanished client's row exists; both replicas, caught up,
#     hold the same count and sum; pgbench's TPC-B sums agree (accounts =
#     branches = tellers = history) and its history has a row for every
#     TPC-B transaction pgbench reported (plus at most one per aborted one);
#   - pgmlcat alive with no panic in its log, every reload applied, every
#     storm client served (or told 58000).
#
# The report (transactions, errors by SQLSTATE, storm, peak and final RSS
# and the two halves, the checksum, the pools at the end) is printed and
# written to benches/results/soak-<date>.md.
#
# Environment knobs:
#   MINUTES=10            length of the load
#   BIN=target/release/pgmlcat   the pgmlcat binary (never built here)
#   SCALE=10              pgbench scale
#   PGBENCH_CLIENTS=4     clients of each pgbench
#   PGBENCH_SEGMENT=20    seconds per pgbench run
#   POOL_SIZE=10, POOL_SIZE_ALT=14   pool sizes the reloads toggle between
#   BAN_TIME=10           pgmlcat's ban_time (seconds)
#   STORM_CLIENTS=2000
#   RELOAD_EVERY=10       seconds between reloads
#   VANISH_EVERY=1        seconds between vanishing clients
#   WRITER_THREADS=2
#   STUCK_SECONDS=60      longer than this is a stuck client
#   GRACE=10              seconds after a fault during which its errors count as its
#   POOL_IDLE_WAIT=30     seconds SHOW POOLS may take to come back to idle
#   RSS_SLACK=0.10
#   REPLICA_STOP_AT, REPLICA_START_AT, STORM_AT, PRIMARY_RESTART_AT (percent)
#   PRIMARY_RESTART_MODE=fast, REPLICA_STOP_MODE=fast   pg_ctl -m
#   WORKER_THREADS        pgmlcat's [general] worker_threads (default: its own)
#   PGMLCAT_LOG_LEVEL=info, PG_BIN, RESULTS_DIR, KEEP_TMP=1 (keep the temp dir)
#
# Needs: PostgreSQL 15 server binaries with pgbench and pg_basebackup,
# python3 with psycopg 3 and asyncpg. Run as root (Postgres then runs as the
# `postgres` OS user) or as an ordinary user. On a shared machine run it
# under the build lock: `flock /tmp/cargo.lock benches/soak.sh`.

set -euo pipefail

# ---------------------------------------------------------------- pgbench loop
# `soak.sh --pgbench-loop MODE`: run by the soak itself (setsid, its own
# process group, so that cleanup stops it whole), with its settings in the
# environment. Runs of PGBENCH_SEGMENT seconds until UNTIL; each run's
# output, every line stamped with the time, in OUT_DIR/pgbench-MODE/seg-N.log.
if [[ "${1:-}" == --pgbench-loop ]]; then
  mode="$2"
  dir="$OUT_DIR/pgbench-$mode"
  mkdir -p "$dir"
  : >"$dir/segments.tsv"
  stamp() { local l; while IFS= read -r l; do printf '%s %s\n' "$EPOCHREALTIME" "$l"; done; }
  seg=0
  until_s="${UNTIL%.*}"
  while :; do
    left=$((until_s - $(date +%s)))
    ((left >= 2)) || break
    dur=$((left < PGBENCH_SEGMENT ? left : PGBENCH_SEGMENT))
    seg=$((seg + 1))
    t0="$EPOCHREALTIME"
    set +e
    # --foreground keeps pgbench in this process group (cleanup kills the group).
    timeout --foreground -s KILL "$((dur + STUCK_SECONDS))" \
      "$PG_BIN/pgbench" -n -M "$mode" -c "$PGBENCH_CLIENTS" -j 1 -T "$dur" --max-tries=1 \
      --failures-detailed -b tpcb-like@3 -b select-only@1 \
      -h 127.0.0.1 -p "$PGMLCAT_PORT" -U "$DB_USER" "$DB" 2>&1 </dev/null | stamp >"$dir/seg-$seg.log"
    rc=${PIPESTATUS[0]}
    set -e
    t1="$EPOCHREALTIME"
    printf '%s\t%s\t%s\t%s\t%s\n' "$seg" "$rc" "$t0" "$t1" "$dur" >>"$dir/segments.tsv"
    # A run that could not start is tried again after a pause, not in a tight loop.
    (( ${t1%.*} - ${t0%.*} >= 2 )) || sleep 1
  done
  exit 0
fi

# ---------------------------------------------------------------- faults
# `soak.sh --fault replica|primary|storm`: one fault, run by the soak (setsid)
# with its settings in the environment; its times go to EVENTS.
if [[ "${1:-}" == --fault ]]; then
  as_pg() { if [[ "$(id -u)" == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
  event() { printf '%s\t%s\t%s\t%s\n' "$EPOCHREALTIME" "$1" "$2" "${3:-}" >>"$EVENTS"; }
  case "$2" in
    replica)
      event replica_stop begin "replica 1 (port $REPLICA1_PORT), pg_ctl stop -m $REPLICA_STOP_MODE"
      as_pg "$PG_BIN/pg_ctl" -D "$REPLICA1_DIR" -m "$REPLICA_STOP_MODE" -w -t 120 stop
      event replica_stop stopped
      while (($(date +%s) < T_REPLICA_START)); do sleep 0.2; done
      event replica_start begin
      as_pg "$PG_BIN/pg_ctl" -D "$REPLICA1_DIR" -l "$TMP_DIR/replica1.log" -w -t 120 start
      event replica_start end "accepting again"
      ;;
    primary)
      # Three raw clients placed first (soak.py probe): a statement in flight,
      # one idle in a transaction, one between transactions.
      python3 "$SCRIPT_DIR/soak.py" probe >"$OUT_DIR/probe.out" 2>&1 &
      probe=$!
      for _ in $(seq 1 100); do [[ -e "$OUT_DIR/probe.ready" ]] && break; sleep 0.2; done
      event primary_restart begin "pg_ctl restart -m $PRIMARY_RESTART_MODE"
      as_pg "$PG_BIN/pg_ctl" -D "$TMP_DIR/data" -m "$PRIMARY_RESTART_MODE" -l "$TMP_DIR/postgres.log" \
        -w -t 120 restart
      event primary_restart end "accepting again"
      touch "$OUT_DIR/probe.restarted"
      wait "$probe"
      ;;
    storm)
      event storm begin "$STORM_CLIENTS clients"
      rc=0
      python3 "$SCRIPT_DIR/soak.py" storm >"$OUT_DIR/storm.out" 2>&1 || rc=$?
      event storm end "exit $rc"
      exit "$rc"
      ;;
    *) echo "unknown fault $2" >&2; exit 2 ;;
  esac
  exit 0
fi

BENCH_NAME=soak
# Info, not ml_common.sh's warn: the reloads are counted in the log.
PGMLCAT_LOG_LEVEL="${PGMLCAT_LOG_LEVEL:-info}"
# shellcheck source=benches/ml_common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/ml_common.sh"

MINUTES="${MINUTES:-10}"
PGMLCAT_BIN="$(realpath -m "${BIN:-$PGMLCAT_BIN}")"
SCALE="${SCALE:-10}"
PGBENCH_CLIENTS="${PGBENCH_CLIENTS:-4}"
PGBENCH_SEGMENT="${PGBENCH_SEGMENT:-20}"
POOL_SIZE="${POOL_SIZE:-10}"
POOL_SIZE_ALT="${POOL_SIZE_ALT:-14}"
BAN_TIME="${BAN_TIME:-10}"
STORM_CLIENTS="${STORM_CLIENTS:-2000}"
RELOAD_EVERY="${RELOAD_EVERY:-10}"
VANISH_EVERY="${VANISH_EVERY:-1}"
WRITER_THREADS="${WRITER_THREADS:-2}"
STUCK_SECONDS="${STUCK_SECONDS:-60}"
GRACE="${GRACE:-10}"
POOL_IDLE_WAIT="${POOL_IDLE_WAIT:-30}"
RSS_SLACK="${RSS_SLACK:-0.10}"
REPLICA_STOP_AT="${REPLICA_STOP_AT:-15}"
REPLICA_START_AT="${REPLICA_START_AT:-25}"
STORM_AT="${STORM_AT:-40}"
PRIMARY_RESTART_AT="${PRIMARY_RESTART_AT:-55}"
PRIMARY_RESTART_MODE="${PRIMARY_RESTART_MODE:-fast}"
REPLICA_STOP_MODE="${REPLICA_STOP_MODE:-fast}"
MAX_CLIENT_CONN=10000
ADMIN_USER="admin"
ADMIN_PASS="admin_pw"
TRAIN_ROWS=2000
check_positive MINUTES SCALE PGBENCH_CLIENTS PGBENCH_SEGMENT POOL_SIZE POOL_SIZE_ALT BAN_TIME STORM_CLIENTS \
  RELOAD_EVERY STUCK_SECONDS GRACE POOL_IDLE_WAIT WRITER_THREADS REPLICA_STOP_AT REPLICA_START_AT STORM_AT \
  PRIMARY_RESTART_AT
((REPLICA_STOP_AT < REPLICA_START_AT && REPLICA_START_AT < 100 && STORM_AT < 100 && PRIMARY_RESTART_AT < 100)) ||
  die "fault times must be percentages below 100, the replica stopped before it is started"
for m in "$PRIMARY_RESTART_MODE" "$REPLICA_STOP_MODE"; do
  [[ "$m" =~ ^(smart|fast|immediate)$ ]] || die "pg_ctl mode '$m' is not smart, fast or immediate"
done

ml_prereqs
[[ -x "$PG_BIN/pg_basebackup" ]] || die "$PG_BIN/pg_basebackup not found"
[[ -x "$PGMLCAT_BIN" ]] || die "$PGMLCAT_BIN not found (cargo build --release; this script never builds)"
ml_python_deps psycopg:'psycopg[binary]' asyncpg:asyncpg
# 2,000 storm clients are a socket each on both sides of pgmlcat.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
(($(ulimit -n) >= STORM_CLIENTS * 2 + 512)) || die "ulimit -n $(ulimit -n) is too low for $STORM_CLIENTS storm clients"

# ---------------------------------------------------------------- cleanup
REPLICAS=()      # data dirs of the replicas started
WORKERS=()       # "name pid" of the clients, waited for at the end
RSS_PID=""
soak_cleanup() {
  local rc=$? pid
  set +e
  for pid in "${EXTRA_PIDS[@]}"; do
    [[ -n "$pid" ]] || continue
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  done
  sleep 0.5
  for pid in "${EXTRA_PIDS[@]}"; do
    [[ -n "$pid" ]] || continue
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
  done
  EXTRA_PIDS=()
  stop_clusters
  # Logs are kept on failure (ml_cleanup), the clusters' data only with KEEP_TMP=1.
  if [[ -n "$TMP_DIR" && "$KEEP_TMP" != 1 ]]; then
    rm -rf "$TMP_DIR/data" "${REPLICAS[@]}" "$TMP_DIR/pgmlcat"
  fi
  (exit "$rc")
  ml_cleanup
}
trap soak_cleanup EXIT

bench_workdir

# ---------------------------------------------------------------- primary
start_replicated_primary

pgbench_init "$SCALE"
psql_direct >"$TMP_DIR/setup.log" 2>&1 <<EOF || { show_log_tail "$TMP_DIR/setup.log"; die "creating the tables failed"; }
CREATE TABLE soak_rows (id int8 PRIMARY KEY, writer int NOT NULL, val int8 NOT NULL);
CREATE TABLE soak_vanished (id int8 PRIMARY KEY, val int8 NOT NULL);
SELECT setseed(0.21);
CREATE TABLE soak_train AS
  SELECT g AS id, random() AS x1, random() AS x2, random() AS x3 FROM generate_series(1, $TRAIN_ROWS) g;
ALTER TABLE soak_train ADD PRIMARY KEY (id), ADD COLUMN y float8;
UPDATE soak_train SET y = 3 * x1 - 2 * x2 + x3 * x3 + 0.1 * random();
CREATE VIEW soak_features AS SELECT x1, x2, x3, y FROM soak_train;
VACUUM ANALYZE;
EOF

# ---------------------------------------------------------------- replicas
start_replicas

# ---------------------------------------------------------------- pgmlcat
PGMLCAT_PORT="$(free_port)"
write_config() { # pool_size idle_timeout_ms
  cat >"$TMP_DIR/pgcat.toml.new" <<EOF
[general]
host = "127.0.0.1"
port = $PGMLCAT_PORT
admin_username = "$ADMIN_USER"
admin_password = "$ADMIN_PASS"
connect_timeout = 5000
ban_time = $BAN_TIME
idle_timeout = $2
max_client_conn = $MAX_CLIENT_CONN
shutdown_timeout = 10000
log_client_connections = false
log_client_disconnections = false
${WORKER_THREADS:+worker_threads = $WORKER_THREADS}

[ml]
threads = 1
max_concurrent_trainings = 2

[pools.$DB]
pool_mode = "transaction"
query_parser_enabled = true
query_parser_read_write_splitting = true
default_role = "any"
primary_reads_enabled = false
load_balancing_mode = "random"

[pools.$DB.users.0]
username = "$DB_USER"
password = "$DB_PASS"
pool_size = $1

[pools.$DB.shards.0]
servers = [["127.0.0.1", $PG_PORT, "primary"], ["127.0.0.1", ${REPLICA_PORTS[0]}, "replica"], ["127.0.0.1", ${REPLICA_PORTS[1]}, "replica"]]
database = "$DB"
EOF
  mv -f "$TMP_DIR/pgcat.toml.new" "$TMP_DIR/pgcat.toml"
}
write_config "$POOL_SIZE" 600000
"$TMP_DIR/pgmlcat" --check "$TMP_DIR/pgcat.toml" >"$TMP_DIR/check.log" 2>&1 ||
  { show_log_tail "$TMP_DIR/check.log"; die "pgmlcat --check refused the config"; }
log "starting pgmlcat on port $PGMLCAT_PORT"
"$TMP_DIR/pgmlcat" "$TMP_DIR/pgcat.toml" --log-level "$PGMLCAT_LOG_LEVEL" >"$TMP_DIR/pgmlcat.log" 2>&1 </dev/null &
PGMLCAT_PID=$!
ok=0
for _ in $(seq 1 150); do
  psql_proxy -At -c 'SELECT 1' >/dev/null 2>&1 && { ok=1; break; }
  kill -0 "$PGMLCAT_PID" 2>/dev/null || break
  sleep 0.2
done
[[ "$ok" == 1 ]] || { show_log_tail "$TMP_DIR/pgmlcat.log"; die "pgmlcat is not accepting connections"; }
log "first training (the project the predictions use)"
psql_proxy -c "SELECT * FROM pgml.train('soak', 'regression', 'soak_features', 'y', algorithm => 'linear')" \
  >"$TMP_DIR/first-train.log" 2>&1 || { show_log_tail "$TMP_DIR/first-train.log"; die "the first training failed"; }

admin_sql() { # sql
  PGPASSWORD="$ADMIN_PASS" timeout 20 "$PG_BIN/psql" -X -q -At -h 127.0.0.1 -p "$PGMLCAT_PORT" \
    -U "$ADMIN_USER" -d pgbouncer -c "$1"
}

# ---------------------------------------------------------------- the run
DURATION=$((MINUTES * 60))
START="$EPOCHREALTIME"
START_S="${START%.*}"
END_S=$((START_S + DURATION))
export OUT_DIR PGMLCAT_PORT DB DB_USER DB_PASS PG_BIN PG_PORT PGBENCH_CLIENTS PGBENCH_SEGMENT STUCK_SECONDS
export ADMIN_USER ADMIN_PASS VANISH_EVERY WRITER_THREADS STORM_CLIENTS TRAIN_ROWS POOL_IDLE_WAIT
export UNTIL="$END_S" REPLICA_PORT_LIST="${REPLICA_PORTS[*]}"
at() { echo $((START_S + DURATION * $1 / 100)); }
T_REPLICA_STOP="$(at "$REPLICA_STOP_AT")"
T_REPLICA_START="$(at "$REPLICA_START_AT")"
T_STORM="$(at "$STORM_AT")"
T_PRIMARY_RESTART="$(at "$PRIMARY_RESTART_AT")"
EVENTS="$OUT_DIR/events.tsv"
event() { printf '%s\t%s\t%s\t%s\n' "$EPOCHREALTIME" "$1" "$2" "${3:-}" >>"$EVENTS"; }
: >"$EVENTS"
event run begin "$MINUTES min"

# pgmlcat's RSS every second, until told to stop.
(
  while [[ ! -e "$OUT_DIR/rss.stop" ]] && kill -0 "$PGMLCAT_PID" 2>/dev/null; do
    kb="$(awk '/^VmRSS:/ {print $2}' "/proc/$PGMLCAT_PID/status" 2>/dev/null || true)"
    [[ -n "$kb" ]] && printf '%s %s\n' "$EPOCHREALTIME" "$kb"
    sleep 1
  done
) >"$OUT_DIR/rss.tsv" &
RSS_PID=$!
EXTRA_PIDS+=("$RSS_PID")

start_worker() { # name command...
  local name=$1
  shift
  setsid "$@" >"$OUT_DIR/$name.out" 2>&1 </dev/null &
  EXTRA_PIDS+=("$!")
  WORKERS+=("$name $!")
}
log "load for $MINUTES min: pgbench simple + prepared, writer, pgml train/predict, vanishing clients, reloads every ${RELOAD_EVERY}s"
start_worker pgbench-simple "$SCRIPT_DIR/soak.sh" --pgbench-loop simple
start_worker pgbench-prepared "$SCRIPT_DIR/soak.sh" --pgbench-loop prepared
start_worker writer python3 "$SCRIPT_DIR/soak.py" writer
start_worker ml python3 "$SCRIPT_DIR/soak.py" ml
start_worker vanish python3 "$SCRIPT_DIR/soak.py" vanish

# The faults, each in the background (`soak.sh --fault NAME`, in a process
# group of its own) so that the reloads keep their pace.
export EVENTS TMP_DIR REPLICA_STOP_MODE PRIMARY_RESTART_MODE T_REPLICA_START SCRIPT_DIR
export REPLICA1_DIR="${REPLICAS[0]}" REPLICA1_PORT="${REPLICA_PORTS[0]}"
FAULTS=()
run_fault() { # name
  log "fault: $1"
  setsid "$SCRIPT_DIR/soak.sh" --fault "$1" >>"$OUT_DIR/faults.out" 2>&1 </dev/null &
  EXTRA_PIDS+=("$!")
  FAULTS+=("$1 $!")
}

reload_no=0
do_reload() {
  local size idle how status=ok
  reload_no=$((reload_no + 1))
  if ((reload_no % 2)); then size="$POOL_SIZE_ALT" idle=300000; else size="$POOL_SIZE" idle=600000; fi
  write_config "$size" "$idle"
  if ((reload_no % 2)); then
    how=SIGHUP
    kill -HUP "$PGMLCAT_PID" || status=failed
  else
    how="admin RELOAD"
    admin_sql RELOAD >>"$OUT_DIR/reload.out" 2>&1 || status=failed
  fi
  event reload "$status" "$how pool_size=$size idle_timeout=$idle"
}

next_reload=$((START_S + RELOAD_EVERY))
done_replica=0 done_storm=0 done_primary=0
while (($(date +%s) < END_S)); do
  now_s=$(date +%s)
  if ((!done_replica && now_s >= T_REPLICA_STOP)); then
    done_replica=1
    run_fault replica
  fi
  if ((!done_storm && now_s >= T_STORM)); then
    done_storm=1
    run_fault storm
  fi
  if ((!done_primary && now_s >= T_PRIMARY_RESTART)); then
    done_primary=1
    run_fault primary
  fi
  if ((now_s >= next_reload)); then
    do_reload
    next_reload=$((next_reload + RELOAD_EVERY))
  fi
  kill -0 "$PGMLCAT_PID" 2>/dev/null || { log "pgmlcat died"; break; }
  sleep 0.2
done
event run end
log "load time over; waiting for every client to end (at most ${STUCK_SECONDS}s + 30s)"

# ---------------------------------------------------------------- the end
: >"$OUT_DIR/workers.tsv"
# A process waited for is no longer ours to signal (its pid may be reused).
forget_pid() {
  local i
  for i in "${!EXTRA_PIDS[@]}"; do
    [[ "${EXTRA_PIDS[$i]}" == "$1" ]] && unset 'EXTRA_PIDS[i]'
  done
  return 0
}
wait_for() { # name pid limit_s
  local how=exited rc=0
  while kill -0 "$2" 2>/dev/null && (($(date +%s) < $3)); do sleep 0.5; done
  if kill -0 "$2" 2>/dev/null; then
    how=stuck
    kill -KILL -- "-$2" 2>/dev/null || kill -KILL "$2" 2>/dev/null || true
  fi
  wait "$2" 2>/dev/null || rc=$?
  forget_pid "$2"
  printf '%s\t%s\t%s\n' "$1" "$rc" "$how" >>"$OUT_DIR/workers.tsv"
  [[ "$how" == exited && "$rc" == 0 ]] || log "$1: $how, exit $rc"
}
limit=$((END_S + STUCK_SECONDS + 30))
for w in "${WORKERS[@]}"; do
  read -r name pid <<<"$w"
  wait_for "$name" "$pid" "$limit"
done
for f in "${FAULTS[@]}"; do
  read -r name pid <<<"$f"
  wait_for "fault-$name" "$pid" "$((limit + STUCK_SECONDS * 2))"
done

PGMLCAT_ALIVE=0
kill -0 "$PGMLCAT_PID" 2>/dev/null && PGMLCAT_ALIVE=1
log "SHOW POOLS until idle (at most ${POOL_IDLE_WAIT}s)"
python3 "$SCRIPT_DIR/soak.py" pools >&2 || true
log "checking the servers directly (rows, sums, replicas, backends)"
python3 "$SCRIPT_DIR/soak.py" verify >"$OUT_DIR/verify.out" 2>&1 || { show_log_tail "$OUT_DIR/verify.out"; log "verify failed"; }
sleep 2 # a last RSS sample or two with everything idle
touch "$OUT_DIR/rss.stop"
wait "$RSS_PID" 2>/dev/null || true
forget_pid "$RSS_PID"

count() { grep -ciE -- "$1" "$TMP_DIR/pgmlcat.log" 2>/dev/null || true; }
mkdir -p "$RESULTS_DIR"
MD_OUT="$RESULTS_DIR/soak-$(date +%Y%m%d-%H%M%S).md"
rc=0
START="$START" END="$END_S" MD_OUT="$MD_OUT" GRACE="$GRACE" RSS_SLACK="$RSS_SLACK" MINUTES="$MINUTES" \
  POOL_SIZE="$POOL_SIZE" POOL_SIZE_ALT="$POOL_SIZE_ALT" BAN_TIME="$BAN_TIME" SCALE="$SCALE" \
  RELOAD_EVERY="$RELOAD_EVERY" PGMLCAT_VERSION="$PGMLCAT_VERSION" PG_VERSION="$PG_VERSION" \
  PGMLCAT_ALIVE="$PGMLCAT_ALIVE" PGMLCAT_PANICS="$(count panicked)" \
  RELOADS_LOGGED="$(count 'configuration reloaded|reloading config \(admin RELOAD\)')" RELOADS_REJECTED="$(count 'reload rejected')" \
  LOADAVG="$(cut -d' ' -f1-3 /proc/loadavg)" \
  python3 "$SCRIPT_DIR/soak.py" report || rc=$?
log "report written to $MD_OUT"
if ((rc != 0)); then
  show_log_tail "$TMP_DIR/pgmlcat.log"
  die "the soak failed (logs in $TMP_DIR)"
fi
