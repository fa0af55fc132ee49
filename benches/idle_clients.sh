#!/usr/bin/env bash
# Memory per idle client: pgmlcat beside PgBouncer, in one run.
#
# Starts a throwaway PostgreSQL 15 cluster, then for each round and each
# pooler (interleaved: round -> pooler) starts the pooler fresh, connects
# CLIENTS asyncpg clients through it (benches/idle_clients.py: each runs one
# query, then all sit idle) and reads the pooler's RSS growth per client.
# Prints the median per pooler and the ratio, and writes the same table to
# benches/results/idle-clients-<date>.md.
#
# Usage: benches/idle_clients.sh
#
# Environment knobs:
#   CLIENTS=900        idle clients per measurement
#   ROUNDS=3           interleaved rounds; the table shows the median
#   POOL_SIZE=10       server connections per pool (both poolers)
#   PGMLCAT_BIN=...    pgmlcat binary (default ./target/release/pgmlcat)
#   NO_BUILD=1         do not run `cargo build --release`
#   WORKER_THREADS     pgmlcat's [general] worker_threads (default: its own)
#
# Needs: PostgreSQL 15 server binaries, pgbouncer, python3 with asyncpg
# (installed with pip when missing).

set -euo pipefail
BENCH_NAME=idle_clients
# shellcheck source=benches/ml_common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/ml_common.sh"

CLIENTS="${CLIENTS:-900}"
ROUNDS="${ROUNDS:-3}"
check_positive CLIENTS ROUNDS
PGBOUNCER_BIN="${PGBOUNCER_BIN:-$(command -v pgbouncer || true)}"
[[ -x "$PGBOUNCER_BIN" ]] || die "pgbouncer not found (apt-get install -y pgbouncer)"

ml_prereqs
ml_python_deps asyncpg:asyncpg
ml_build
# Every client is a socket on each side of the measurement.
ulimit -n "$(( CLIENTS * 2 + 256 ))" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
ml_start_postgres

BOUNCER_PORT=""
BOUNCER_PID=""
start_pgbouncer() {
  BOUNCER_PORT="$(free_port)"
  printf '"%s" "%s"\n' "$DB_USER" "$DB_PASS" >"$TMP_DIR/userlist.txt"
  cat >"$TMP_DIR/pgbouncer.ini" <<EOF
[databases]
$DB = host=127.0.0.1 port=$PG_PORT dbname=$DB

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = md5
auth_file = $TMP_DIR/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
max_client_conn = $(( CLIENTS + 100 ))
logfile = $TMP_DIR/pgbouncer.log
pidfile = $TMP_DIR/pgbouncer.pid
ignore_startup_parameters = extra_float_digits
EOF
  chmod 644 "$TMP_DIR/pgbouncer.ini" "$TMP_DIR/userlist.txt"
  rm -f "$TMP_DIR/pgbouncer.pid"
  as_pg "$PGBOUNCER_BIN" -d "$TMP_DIR/pgbouncer.ini" >>"$TMP_DIR/pgbouncer.out" 2>&1 ||
    { show_log_tail "$TMP_DIR/pgbouncer.log"; die "pgbouncer failed to start"; }
  for _ in $(seq 1 100); do [[ -s "$TMP_DIR/pgbouncer.pid" ]] && break; sleep 0.1; done
  BOUNCER_PID="$(cat "$TMP_DIR/pgbouncer.pid")"
  EXTRA_PIDS+=("$BOUNCER_PID")
}

stop_pid() { # pid
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
}

# measure NAME PID PORT: one line "name before_kb after_kb bytes_per_client".
measure() {
  local line
  line="$(python3 "$SCRIPT_DIR/idle_clients.py" "$2" "$3" "$CLIENTS" "$DB_USER" "$DB_PASS" "$DB")" ||
    die "idle_clients.py failed against $1"
  echo "$1 $line" | tee -a "$TMP_DIR/idle.txt" >&2
}

PGBOUNCER_VERSION="$("$PGBOUNCER_BIN" --version 2>/dev/null | awk 'NR==1{print $2}')"
: >"$TMP_DIR/idle.txt"
for round in $(seq 1 "$ROUNDS"); do
  log "round $round/$ROUNDS"
  ml_start_pgmlcat
  measure pgmlcat "$PGMLCAT_PID" "$PGMLCAT_PORT"
  stop_pid "$PGMLCAT_PID"
  wait "$PGMLCAT_PID" 2>/dev/null || true
  PGMLCAT_PID=""

  start_pgbouncer
  measure pgbouncer "$BOUNCER_PID" "$BOUNCER_PORT"
  stop_pid "$BOUNCER_PID"
done

mkdir -p "$RESULTS_DIR"
MD_OUT="$RESULTS_DIR/idle-clients-$(date +%Y-%m-%d).md"
CLIENTS="$CLIENTS" ROUNDS="$ROUNDS" PGMLCAT_VERSION="$PGMLCAT_VERSION" \
  PGBOUNCER_VERSION="$PGBOUNCER_VERSION" PG_VERSION="$PG_VERSION" MD_OUT="$MD_OUT" \
  python3 - "$TMP_DIR/idle.txt" <<'EOF'
import os, statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
per = {}
for name, before, after, bytes_per in rows:
    per.setdefault(name, []).append((int(before), int(after), int(bytes_per)))
med = {n: statistics.median(r[2] for r in v) for n, v in per.items()}
base = {n: statistics.median(r[0] for r in v) for n, v in per.items()}
lines = [
    f"# Memory per idle client ({os.environ['CLIENTS']} asyncpg clients, median of {os.environ['ROUNDS']} interleaved rounds)",
    "",
    f"- pgmlcat {os.environ['PGMLCAT_VERSION']}, PgBouncer {os.environ['PGBOUNCER_VERSION']}, PostgreSQL {os.environ['PG_VERSION']}",
    "- each pooler freshly started per round, one warm-up query, then every client connects, runs `select 1` once and sits idle;",
    "  RSS growth divided by the number of clients",
    "",
    "| pooler | RSS before (kB) | bytes per idle client | every round |",
    "|---|---:|---:|---|",
]
for n in ("pgmlcat", "pgbouncer"):
    if n in per:
        lines.append(f"| {n} | {base[n]:.0f} | {med[n]:.0f} | {', '.join(str(r[2]) for r in per[n])} |")
if "pgmlcat" in med and med.get("pgbouncer"):
    lines += ["", f"pgmlcat / PgBouncer: {med['pgmlcat'] / med['pgbouncer']:.1f}x"]
text = "\n".join(lines) + "\n"
print(text)
open(os.environ["MD_OUT"], "w").write(text)
EOF
log "results in $MD_OUT"
