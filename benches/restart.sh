#!/usr/bin/env bash
# A Postgres restart under load, as idle clients see it: pgmlcat beside
# PgBouncer (and a direct connection as the control), in one run.
#
# Starts a throwaway PostgreSQL 15 cluster (`pgbench -i -s 10`), pgmlcat
# (transaction mode, pool 10, query_wait_timeout left at its default 120000
# ms) and PgBouncer (transaction mode, default_pool_size 10,
# query_wait_timeout 120 s, its default). Then, for each round, kill mode and
# target:
#
#   t = 0      pgbench -S -c 16 -j 2 -T 20 --max-tries=1 -P 1 against it
#   t = 5 s    kill -9 of Postgres (see KILL_MODES)
#   t = 8 s    pg_ctl start: crash recovery, then accepting again
#   t = 20 s   pgbench ends (later if a client still waits for an answer)
#
# pgbench 15 retries nothing with --max-tries=1 (its default, and it only
# ever retries serialization and deadlock failures): any other error aborts
# the client (`client N aborted in command ...`), and the run then ends with
# "Run was aborted" and exit status 2. Per run the report gives the
# transactions done, the aborted clients, the failed transactions, the
# error lines pgbench printed and their causes (the server's or the
# pooler's message, numbers removed), how long throughput stayed below 5% of
# its pre-kill median (from -P 1), and kill-to-accepting time.
#
# The issue's promise: every client that was not mid-transaction at the kill
# continues without an error. A -S transaction is one statement, so "mid-
# transaction" means a SELECT in flight on a server at the kill instant: at
# most POOL_SIZE (10) of the 16 clients through a pooler (the others wait in
# the pooler's queue, which is between transactions as far as a server is
# concerned). The kill modes:
#   postmaster  kill -9 of the postmaster only (the issue's words). Its
#               backends live on: one notices the postmaster is gone only
#               when it waits for its next message, and then exits with
#               FATAL 57P01 "terminating connection due to unexpected
#               postmaster exit" sent to whoever holds it. A backend a
#               pooler keeps busy serves on (a second or two here), and
#               pg_ctl start is retried until the last one has left the
#               shared memory. No statement loses its server, so a pooler
#               can bring every client through: 0 aborted is right.
#               A pooler client aborted with that 57P01 got it for a query
#               the backend never read: Postgres sends it from secure_read
#               when the backend waits for its next message (or from
#               secure_write, mid-result, not the case for a one-row -S),
#               so the pooler had handed the client a server whose backend
#               was already on its way out.
#               Direct clients each hold a backend: all of them abort.
#   all         kill -9 of the postmaster and every child at once (as in a
#               machine crash or an OOM kill of the group): statements in
#               flight lose their server, so up to POOL_SIZE clients may
#               legitimately fail through a pooler; more is a pooler fault.
#
# Usage: benches/restart.sh
#
# Environment knobs:
#   KILL_MODES="postmaster all"   which kills to run, in this order
#   TARGETS="direct pgbouncer pgmlcat"
#   ROUNDS=1           rounds (round -> kill mode -> target)
#   CLIENTS=16         pgbench clients (-c)
#   DURATION=20        pgbench -T
#   KILL_AT=5          seconds into the run when Postgres is killed
#   RESTART_AFTER=3    seconds from the kill to pg_ctl start
#   PROTOCOL=simple    pgbench -M (simple, extended, prepared)
#   POOL_SIZE=10       both poolers
#   BOUNCER_LOGIN_RETRY  PgBouncer's server_login_retry in seconds (default:
#                      PgBouncer's own, 15: after a failed connect it waits
#                      that long before the next; pgmlcat retries every 500 ms)
#   PGMLCAT_BIN, NO_BUILD=1, PGMLCAT_LOG_LEVEL, PG_BIN, RESULTS_DIR, KEEP_TMP=1
#   QUIET_WAIT=120     seconds to wait for the machine to quieten before a run
#
# Needs: PostgreSQL 15 server binaries, pgbouncer (apt-get install -y
# pgbouncer), python3. Run as root (Postgres and PgBouncer then run as the
# `postgres` OS user) or as an ordinary user.

set -euo pipefail
BENCH_NAME=restart
# shellcheck source=benches/ml_common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/ml_common.sh"

KILL_MODES="${KILL_MODES:-postmaster all}"
TARGETS="${TARGETS:-direct pgbouncer pgmlcat}"
ROUNDS="${ROUNDS:-1}"
CLIENTS="${CLIENTS:-16}"
DURATION="${DURATION:-20}"
KILL_AT="${KILL_AT:-5}"
RESTART_AFTER="${RESTART_AFTER:-3}"
PROTOCOL="${PROTOCOL:-simple}"
SCALE=10
BOUNCER_LOGIN_RETRY="${BOUNCER_LOGIN_RETRY:-}"
check_positive ROUNDS CLIENTS DURATION KILL_AT RESTART_AFTER POOL_SIZE
((KILL_AT + RESTART_AFTER < DURATION)) || die "KILL_AT + RESTART_AFTER must be less than DURATION"
for m in $KILL_MODES; do
  [[ "$m" == postmaster || "$m" == all ]] || die "KILL_MODES: '$m' is neither postmaster nor all"
done
for t in $TARGETS; do
  [[ "$t" == direct || "$t" == pgbouncer || "$t" == pgmlcat ]] || die "TARGETS: '$t' is not direct, pgbouncer or pgmlcat"
done
[[ "$PROTOCOL" =~ ^(simple|extended|prepared)$ ]] || die "PROTOCOL must be simple, extended or prepared"
[[ -z "$BOUNCER_LOGIN_RETRY" ]] || check_positive BOUNCER_LOGIN_RETRY
PGBOUNCER_BIN="${PGBOUNCER_BIN:-$(command -v pgbouncer || true)}"
[[ -x "$PGBOUNCER_BIN" ]] || die "pgbouncer not found (apt-get install -y pgbouncer)"

ml_prereqs
[[ " $TARGETS " == *" pgmlcat "* ]] && ml_build
ml_start_postgres
log "pgbench -i -s $SCALE"
"$PG_BIN/pgbench" -i -s "$SCALE" -q -h 127.0.0.1 -p "$PG_PORT" -U "$DB_USER" "$DB" \
  >"$TMP_DIR/pgbench-init.log" 2>&1 || { show_log_tail "$TMP_DIR/pgbench-init.log"; die "pgbench -i failed"; }

# ---------------------------------------------------------------- poolers
PGBOUNCER_VERSION="$("$PGBOUNCER_BIN" --version 2>/dev/null | awk 'NR==1{print $2}')"
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
max_client_conn = $((CLIENTS + 100))
query_wait_timeout = 120
logfile = $TMP_DIR/pgbouncer.log
pidfile = $TMP_DIR/pgbouncer.pid
log_connections = 0
log_disconnections = 0
ignore_startup_parameters = extra_float_digits
${BOUNCER_LOGIN_RETRY:+server_login_retry = $BOUNCER_LOGIN_RETRY}
EOF
chmod 644 "$TMP_DIR/pgbouncer.ini" "$TMP_DIR/userlist.txt"
if [[ " $TARGETS " == *" pgbouncer "* ]]; then
  log "starting pgbouncer $PGBOUNCER_VERSION on port $BOUNCER_PORT"
  as_pg "$PGBOUNCER_BIN" -d "$TMP_DIR/pgbouncer.ini" >>"$TMP_DIR/pgbouncer.out" 2>&1 ||
    { show_log_tail "$TMP_DIR/pgbouncer.log"; die "pgbouncer failed to start"; }
  for _ in $(seq 1 100); do [[ -s "$TMP_DIR/pgbouncer.pid" ]] && break; sleep 0.1; done
  [[ -s "$TMP_DIR/pgbouncer.pid" ]] || { show_log_tail "$TMP_DIR/pgbouncer.log"; die "pgbouncer wrote no pid file"; }
  EXTRA_PIDS+=("$(cat "$TMP_DIR/pgbouncer.pid")")
fi
PGMLCAT_VERSION="n/a"
if [[ " $TARGETS " == *" pgmlcat "* ]]; then
  ml_start_pgmlcat
fi

target_port() {
  case $1 in
    direct) echo "$PG_PORT" ;;
    pgbouncer) echo "$BOUNCER_PORT" ;;
    pgmlcat) echo "$PGMLCAT_PORT" ;;
  esac
}
target_log() {
  case $1 in
    pgbouncer) echo "$TMP_DIR/pgbouncer.log" ;;
    pgmlcat) echo "$TMP_DIR/pgmlcat.log" ;;
    *) echo /dev/null ;;
  esac
}

# Up to 60 s for SELECT 1 through a target: after the previous run's restart a
# pooler may still be waiting out its retry delay.
wait_target() { # target
  local port
  port="$(target_port "$1")"
  for _ in $(seq 1 300); do
    "$PG_BIN/psql" -X -q -At -h 127.0.0.1 -p "$port" -U "$DB_USER" -d "$DB" -c 'SELECT 1' \
      >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  return 1
}

# ---------------------------------------------------------------- kill, restart
postmaster_pid() { head -n 1 "$TMP_DIR/data/postmaster.pid"; }

# kill -9 by pid: the postmaster alone, or it and its children (backends and
# auxiliary processes). For the second all are stopped first (SIGSTOP, the
# postmaster before listing its children, so none is forked unseen), then
# killed: a plain kill of the list lets a backend woken by the postmaster's
# death send its FATAL before its own SIGKILL lands. Prints the children killed.
kill_postgres() { # mode
  local pid children=()
  pid="$(postmaster_pid)"
  [[ "$pid" =~ ^[0-9]+$ ]] || die "no postmaster pid in $TMP_DIR/data/postmaster.pid"
  if [[ "$1" == all ]]; then
    kill -STOP "$pid"
    mapfile -t children < <(pgrep -P "$pid" || true)
    ((${#children[@]} == 0)) || kill -STOP "${children[@]}"
  fi
  kill -KILL "$pid" "${children[@]}"
  echo "${#children[@]}"
}

# pg_ctl start until it works: the orphaned backends of a postmaster-only kill
# hold the shared memory until they notice and exit ("pre-existing shared
# memory block is still in use").
start_postgres_again() {
  local i
  for i in $(seq 1 60); do
    if as_pg "$PG_BIN/pg_ctl" -D "$TMP_DIR/data" -l "$TMP_DIR/postgres.log" -w -t 120 start \
      >>"$TMP_DIR/pg_ctl-restart.log" 2>&1; then
      echo "$i"
      return 0
    fi
    sleep 0.5
  done
  return 1
}

# ---------------------------------------------------------------- runs
# runs.tsv: round mode target rc kill_t ready_t children_killed start_tries pooler_log_from
RUNS="$TMP_DIR/runs.tsv"
: >"$RUNS"
read -r -a MODES <<<"$KILL_MODES"
read -r -a TARGET_LIST <<<"$TARGETS"
runs_total=$((ROUNDS * ${#MODES[@]} * ${#TARGET_LIST[@]}))
log "running $runs_total pgbench runs of ${DURATION}s (kill at ${KILL_AT}s, restart ${RESTART_AFTER}s later)"
run_no=0
for round in $(seq 1 "$ROUNDS"); do
  for mode in "${MODES[@]}"; do
    for target in "${TARGET_LIST[@]}"; do
      run_no=$((run_no + 1))
      wait_target "$target" || { show_log_tail "$(target_log "$target")"; die "$target does not answer SELECT 1 before run $run_no"; }
      ml_wait_quiet "run $run_no ($target, kill $mode)"
      tag="$round-$mode-$target"
      out="$TMP_DIR/pgbench-$tag.log"
      plog="$(target_log "$target")"
      plog_from=$(( $(wc -l <"$plog" 2>/dev/null || echo 0) + 1 ))
      "$PG_BIN/pgbench" -n -S -M "$PROTOCOL" -c "$CLIENTS" -j 2 -T "$DURATION" --max-tries=1 \
        --failures-detailed -P 1 -h 127.0.0.1 -p "$(target_port "$target")" -U "$DB_USER" "$DB" \
        >"$out" 2>&1 </dev/null &
      bench_pid=$!
      EXTRA_PIDS+=("$bench_pid")
      t0="$(now)"
      sleep "$KILL_AT"
      killed="$(kill_postgres "$mode")"
      kill_t="$(elapsed "$t0" "$(now)")"
      sleep "$RESTART_AFTER"
      tries="$(start_postgres_again)" || { show_log_tail "$TMP_DIR/postgres.log"; die "postgres did not start again"; }
      ready_t="$(elapsed "$t0" "$(now)")"
      rc=0
      wait "$bench_pid" || rc=$?
      unset 'EXTRA_PIDS[-1]' # pgbench is gone: its pid must not be killed at exit
      end_t="$(elapsed "$t0" "$(now)")"
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$mode" "$target" "$rc" "$kill_t" "$ready_t" \
        "$killed" "$tries" "$plog_from" "$end_t" >>"$RUNS"
      aborted="$(grep -c 'aborted in command' "$out" || true)"
      log "[$run_no/$runs_total] $target, kill $mode: exit $rc, $aborted client(s) aborted, accepting again at ${ready_t}s, done at ${end_t}s"
    done
  done
done

# ---------------------------------------------------------------- report
mkdir -p "$RESULTS_DIR"
MD_OUT="$RESULTS_DIR/restart-$(date +%Y%m%d-%H%M%S).md"
RUNS="$RUNS" TMP_DIR="$TMP_DIR" MD_OUT="$MD_OUT" CLIENTS="$CLIENTS" DURATION="$DURATION" \
  KILL_AT="$KILL_AT" RESTART_AFTER="$RESTART_AFTER" PROTOCOL="$PROTOCOL" POOL_SIZE="$POOL_SIZE" \
  PG_VERSION="$PG_VERSION" PGBOUNCER_VERSION="$PGBOUNCER_VERSION" PGMLCAT_VERSION="$PGMLCAT_VERSION" \
  BOUNCER_LOGIN_RETRY="${BOUNCER_LOGIN_RETRY:-15 (default)}" NPROC="$NPROC" \
  python3 - <<'PY'
import os, re, statistics, datetime, platform, collections

E = os.environ
tmp = E["TMP_DIR"]

def norm(msg):
    msg = re.sub(r"^(pgbench: )?(error: )?", "", msg.strip())
    msg = re.sub(r"^(FATAL|ERROR|PANIC):\s+", r"\1: ", msg)
    msg = re.sub(r"\d+", "N", msg)
    return msg[:150]

def parse(path):
    """transactions, failed, aborted clients, error lines, causes, progress."""
    lines = open(path, errors="replace").read().splitlines()
    txns = failed = 0
    aborted = set()
    err_lines = 0
    causes = collections.Counter()
    progress = []
    # The server's message for a "perhaps the backend died" abort is printed
    # apart, by libpq, not always just before its abort line (two threads):
    # such messages are queued and each of those aborts takes the oldest.
    loose = []
    for l in lines:
        m = re.match(r"progress: ([\d.]+) s, ([\d.]+) tps", l)
        if m:
            progress.append((float(m.group(1)), float(m.group(2))))
            continue
        m = re.match(r"number of transactions actually processed: (\d+)", l)
        if m:
            txns = int(m.group(1))
            continue
        m = re.match(r"number of failed transactions: (\d+)", l)
        if m:
            failed = int(m.group(1))
            continue
        if "Run was aborted" in l:
            continue
        m = re.match(r"pgbench: error: client (\d+) script \d+ aborted in command \d+ query \d+: (.*)", l)
        if m:
            err_lines += 1
            aborted.add(int(m.group(1)))
            causes[norm(m.group(2))] += 1
            continue
        m = re.match(r"pgbench: error: client (\d+) aborted in command", l)
        if m:
            err_lines += 1
            aborted.add(int(m.group(1)))
            causes[norm(loose.pop(0)) if loose else "connection closed, no message"] += 1
            continue
        if l.startswith("pgbench: error:"):
            err_lines += 1
            causes[norm(l)] += 1
            continue
        if l.startswith(("FATAL:", "ERROR:", "PANIC:", "server closed", "connection to server",
                         "could not", "SSL", "lost synchronization")):
            err_lines += 1
            loose.append(l)
    for l in loose:  # printed, but no client aborted on it
        causes["(no abort) " + norm(l)] += 1
    return txns, failed, aborted, err_lines, causes, progress

def stall(progress, kill_t):
    """Seconds (of -P 1 intervals) after the kill below 5% of the pre-kill
    median, and the end of the first interval at half of it again after the
    first such second (a postmaster-only kill leaves busy backends serving
    for a while: the stall may start late)."""
    before = [tps for t, tps in progress if t <= kill_t]
    if not before:
        return "n/a", "n/a"
    base = statistics.median(before)
    after = [(t, tps) for t, tps in progress if t > kill_t]
    low = [t for t, tps in after if tps < 0.05 * base]
    if not low:
        return "0", "no stall"
    back = next((t for t, tps in after if t > low[0] and tps >= 0.5 * base), None)
    return str(len(low)), (f"{back:.0f}" if back is not None else "never")

def pooler_log(target, frm):
    path = {"pgbouncer": f"{tmp}/pgbouncer.log", "pgmlcat": f"{tmp}/pgmlcat.log"}.get(target)
    if not path or not os.path.exists(path):
        return 0, collections.Counter()
    got = open(path, errors="replace").read().splitlines()[int(frm) - 1:]
    c = collections.Counter()
    for l in got:
        if re.search(r"WARN|ERROR|FATAL|PANIC", l):
            l = re.sub(r"^\S+ \S+ (UTC )?\[?\d*\]? ?", "", l)        # pgbouncer: date time [pid]
            l = re.sub(r"^\x1b\[[\d;]*m|\x1b\[[\d;]*m", "", l)
            l = re.sub(r"^\d{4}-\d\d-\d\dT\S+\s+", "", l)          # pgmlcat: timestamp
            l = re.sub(r"0x[0-9a-f]+|\d+", "N", l)
            c[l[:200]] += 1
    return len(got), c

rows = []
details = []
for line in open(E["RUNS"]):
    rnd, mode, target, rc, kill_t, ready_t, killed, tries, plog_from, end_t = line.rstrip("\n").split("\t")
    out = f"{tmp}/pgbench-{rnd}-{mode}-{target}.log"
    txns, failed, aborted, err_lines, causes, progress = parse(out)
    low, back = stall(progress, float(kill_t))
    nlog, logc = pooler_log(target, plog_from)
    kill_desc = "postmaster" if mode == "postmaster" else f"postmaster + {killed} children"
    rows.append([rnd, target, kill_desc, f"{txns:,}", f"{len(aborted)}/{E['CLIENTS']}", str(failed),
                 str(err_lines), low, back, f"{float(kill_t):.1f}", f"{float(ready_t):.1f}",
                 f"{float(end_t):.1f}", rc])
    details.append((rnd, target, mode, causes, nlog, logc))

header = ["round", "target", "kill -9 of", "transactions", "aborted clients", "failed txns",
          "error lines", "s < 5% tps", "back at s", "kill at s", "accepting at s", "ended at s", "exit"]

def show(header, table):
    widths = [max(len(str(r[i])) for r in [header] + table) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).rjust(w) if i >= 3 else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    print(fmt(header)); print("  ".join("-" * w for w in widths))
    for r in table:
        print(fmt(r))

print()
print(f"pgbench -S -M {E['PROTOCOL']} -c {E['CLIENTS']} -T {E['DURATION']} --max-tries=1; "
      f"Postgres kill -9 at {E['KILL_AT']}s, pg_ctl start {E['RESTART_AFTER']}s later")
show(header, rows)
print()
for rnd, target, mode, causes, nlog, logc in details:
    if causes or logc:
        print(f"round {rnd}, {target}, kill {mode}:")
        for c, n in causes.most_common():
            print(f"  {n:4d} x pgbench: {c}")
        for c, n in logc.most_common(5):
            print(f"  {n:4d} x {target} log: {c}")

now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
with open(E["MD_OUT"], "w") as f:
    f.write("# Postgres restart under pgbench -S: direct vs PgBouncer vs pgmlcat\n\n")
    f.write(f"- date: {now}\n")
    f.write(f"- host: {platform.node()} ({E['NPROC']} CPUs, {platform.machine()})\n")
    f.write(f"- PostgreSQL {E['PG_VERSION']}, PgBouncer {E['PGBOUNCER_VERSION']}, pgmlcat {E['PGMLCAT_VERSION']}\n")
    f.write(f"- `pgbench -n -S -M {E['PROTOCOL']} -c {E['CLIENTS']} -j 2 -T {E['DURATION']} --max-tries=1 "
            f"--failures-detailed -P 1`, scale 10; Postgres killed with `kill -9` {E['KILL_AT']} s in, "
            f"`pg_ctl start` (crash recovery) {E['RESTART_AFTER']} s after the kill\n")
    f.write(f"- both poolers: transaction mode, pool size {E['POOL_SIZE']}; pgmlcat query_wait_timeout "
            f"120000 ms (default), PgBouncer query_wait_timeout 120 s, server_login_retry "
            f"{E['BOUNCER_LOGIN_RETRY']} s\n")
    f.write("- `kill -9 of`: `postmaster` = the postmaster alone (a backend serves on until it waits for "
            "its next message, then exits with 57P01 \"unexpected postmaster exit\"; pg_ctl start is "
            "retried until the last one is gone: 0 aborted clients is possible through a pooler); `postmaster + N children` = it and every "
            "backend and auxiliary process at once (statements in flight lose their server: up to the "
            "pool size of clients may fail through a pooler)\n")
    f.write("- `aborted clients`: pgbench clients that hit an error (pgbench aborts a client on any error "
            "other than a serialization or deadlock failure); `failed txns`: pgbench's failed "
            "transactions (serialization/deadlock only); `error lines`: error lines pgbench printed; "
            "`s < 5% tps`: seconds (-P 1) after the kill below 5% of the pre-kill median; `back at s`: "
            "end of the first second at half of it again after the stall began (`never`: not before "
            "pgbench's -T ended); times from the start of pgbench\n"
            "- `(no abort)` causes: a message libpq printed while the client was idle, i.e. an "
            "ErrorResponse that reached the client after its ReadyForQuery (libpq shows it as a notice; "
            "pgbench goes on). A client that is between transactions gets it only if the pooler "
            "forwards it\n\n")
    f.write("| " + " | ".join(header) + " |\n")
    f.write("|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|\n")
    for r in rows:
        f.write("| " + " | ".join(str(c) for c in r) + " |\n")
    f.write("\nCauses, per run: the message each aborted client got (numbers shown as N), and the "
            "pooler's own warnings during the run.\n\n")
    for rnd, target, mode, causes, nlog, logc in details:
        f.write(f"- round {rnd}, {target}, kill -9 of {mode}:")
        if not causes and not logc:
            f.write(" no errors\n")
            continue
        f.write("\n")
        for c, n in causes.most_common():
            f.write(f"  - {n} x pgbench: `{c}`\n")
        for c, n in logc.most_common(5):
            f.write(f"  - {n} x {target} log: `{c}`\n")
print(f"\nmarkdown written to {E['MD_OUT']}")
PY
