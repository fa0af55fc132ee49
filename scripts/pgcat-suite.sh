#!/usr/bin/env bash
# Run pgcat's own CI steps and test specs against a pgmlcat binary.
#
#   scripts/pgcat-suite.sh [PGCAT_CHECKOUT] [PGMLCAT_BINARY]
#
# PGCAT_CHECKOUT  a work tree of pgcat (default /tmp/pgcat-src; if it does not
#                 exist it is extracted from /work/.mirror/postgresml+pgcat/repo).
#                 Only this copy is modified (target/debug/pgcat wrapper,
#                 tests/go/go.mod replace directive, .circleci/pgcat.toml edits
#                 that run_tests.sh does and reverts).
# PGMLCAT_BINARY  default: <repo>/target/release/pgmlcat, else target/debug/pgmlcat.
#                 It is copied to /tmp/pgcat-suite/bin/ first, so a rebuild
#                 during the run does not affect it.
#
# Environment knobs:
#   SUITE_PHASES   space-separated subset of: ci rbtests rspec python go rust
#                  (default: all); "hold" = only set up clusters + toxiproxy
#                  and wait HOLD_SECONDS, for running things by hand
#   SUITE_SPECS    space-separated spec names to run (e.g. "admin misc"),
#                  default: every tests/ruby/*_spec.rb
#   SPEC_TIMEOUT   seconds per rspec file (default 1200)
#   EXAMPLE_TIMEOUT seconds per rspec example incl. hooks (default 180)
#   SUITE_LOGS     log directory (default /tmp/pgcat-suite-logs; wiped at start)
#
# What it does:
#   1. prepare: install missing Debian/pip packages, Toxiproxy shim
#      (scripts/pgcat-suite/toxiproxy_shim.py + bin/toxiproxy-cli), `yj`
#      stand-in, Ruby `toxiproxy` gem stand-in, offline Go module replace,
#      prebuild of tests/rust (flock /tmp/cargo.lock, own CARGO_TARGET_DIR).
#   2. the shell steps of pgcat's .circleci/run_tests.sh as named checks
#   3. tests/ruby/tests.rb, then every tests/ruby/*_spec.rb, each on a freshly
#      initdb'ed set of Postgres clusters (ports 5432 7432 8432 9432 10432)
#   4. pytest tests/python   5. go test -v tests/go
#   6. tests/rust (sqlx; built with `flock /tmp/cargo.lock cargo build` into
#      /tmp/pgcat-suite/rust-target unless already built)
#   A summary table is printed at the end; logs go to /tmp/pgcat-suite-logs.
#   Exit status: 0 when nothing but PASS / EXPECTED-FAIL / SKIP.

if [[ "${PGCAT_SUITE_REEXEC:-}" != 1 ]]; then
  # pgcat's python tests run `pgrep pgcat`, which matches any process whose
  # name contains "pgcat" -- including this script if it ran as
  # "pgcat-suite.sh". Re-exec so our process name is plain "bash".
  export PGCAT_SUITE_REEXEC=1
  exec /bin/bash "$0" "$@"
fi

set -uo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SUITE_DIR="$SCRIPT_DIR/pgcat-suite"
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
MIRROR=/work/.mirror/postgresml+pgcat/repo

PGCAT_SRC=${1:-/tmp/pgcat-src}
if [[ -n "${2:-}" ]]; then
  BIN_SRC=$2
elif [[ -x "$REPO/target/release/pgmlcat" ]]; then
  BIN_SRC="$REPO/target/release/pgmlcat"
else
  BIN_SRC="$REPO/target/debug/pgmlcat"
fi

STATE=/tmp/pgcat-suite            # runtime state: clusters, venv, pids, bin copy
LOGS=${SUITE_LOGS:-/tmp/pgcat-suite-logs}   # everything worth reading afterwards (wiped at start)
RESULTS="$LOGS/results.tsv"
PG_BIN=/usr/lib/postgresql/15/bin
PG_PORTS=(5432 7432 8432 9432 10432)
# every port pgcat's CI / specs listen on (toxiproxy API, CI proxy, spec
# proxies = 10000 + pg port, pgcat CI port, prometheus)
ALL_PORTS=(5432 7432 8432 9432 10432 5433 8474 6432 9930 15432 17432 18432 19432 20432)
SPEC_TIMEOUT=${SPEC_TIMEOUT:-1200}
SUITE_PHASES=${SUITE_PHASES:-"ci rbtests rspec python go rust"}
VENV="$STATE/venv"
RUST_TARGET="$STATE/rust-target"
START_TS=$(date +%s)

# The CircleCI job environment. Scrub anything that would redirect libpq,
# pgcat's CLI (clap `env`: LOG_LEVEL, CONFIG_FILE, ...) or the helpers
# (CARGO_TARGET_DIR makes the Ruby/Go helpers look for pgcat elsewhere).
unset PGHOST PGPORT PGUSER PGDATABASE PGPASSWORD PGSERVICE PGSSLMODE \
  CARGO_TARGET_DIR LOG_LEVEL LOG_FORMAT CONFIG_FILE NO_COLOR RUSTFLAGS
export RUST_LOG=info
export PATH="$SUITE_DIR/bin:$PATH"
export RUBYLIB="$SUITE_DIR/ruby${RUBYLIB:+:$RUBYLIB}"

log() { printf '%s %s\n' "$(date +%T)" "$*"; }
die() { log "FATAL: $*"; exit 2; }

record() { # suite test status [message]
  python3 "$SUITE_DIR/report.py" add "$RESULTS" "$1" "$2" "$3" "${4:-}"
}

first_error() { # logfile -> a short failure description
  local f=$1 line
  line=$(grep -m1 -E 'ERROR|FATAL|[Ee]rror|panicked|failed|refused|No such|not found' "$f" 2>/dev/null)
  [[ -z "$line" ]] && line=$(grep -v '^\s*$' "$f" 2>/dev/null | tail -n 2 | tr '\n' ' ')
  printf '%s' "${line:0:400}"
}

have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# ---------------------------------------------------------------- processes

pid_alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

wait_pid_exit() { # pid seconds
  local pid=$1 t=$(( $2 * 10 ))
  while (( t-- > 0 )); do pid_alive "$pid" || return 0; sleep 0.1; done
  return 1
}

stop_pid() { # pid [signal] [grace seconds]
  local pid=$1 sig=${2:-TERM} grace=${3:-10}
  pid_alive "$pid" || return 0
  kill -s "$sig" "$pid" 2>/dev/null
  wait_pid_exit "$pid" "$grace" && return 0
  kill -s KILL "$pid" 2>/dev/null
  wait_pid_exit "$pid" 3
}

# pgmlcat processes started through our copy of the binary (only this suite
# executes that file), e.g. leftovers from rspec/pytest/go runs.
suite_pgcat_pids() {
  local p exe
  for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    [[ "$exe" == "$STATE/bin/pgmlcat" ]] && echo "${p#/proc/}"
  done
}

kill_suite_pgcats() {
  local pid
  for pid in $(suite_pgcat_pids); do kill -TERM "$pid" 2>/dev/null; done
  for pid in $(suite_pgcat_pids); do wait_pid_exit "$pid" 5 || kill -KILL "$pid" 2>/dev/null; done
  PGCAT_PID=""
}

port_pids() { # port -> pids listening on it
  ss -ltnpH "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u
}

toxiproxy_stop() {
  if [[ -f "$STATE/toxiproxy.pid" ]]; then
    stop_pid "$(cat "$STATE/toxiproxy.pid")" TERM 5
    rm -f "$STATE/toxiproxy.pid"
  fi
  local pid
  for pid in $(port_pids 8474); do # a shim of ours left by a killed run
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "$SUITE_DIR/toxiproxy_shim.py" && stop_pid "$pid"
  done
}

toxiproxy_start() { # logfile
  toxiproxy_stop
  toxiproxy-server >>"$1" 2>&1 &
  echo $! > "$STATE/toxiproxy.pid"
  local i
  for i in $(seq 50); do
    curl -sf http://127.0.0.1:8474/version >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

# ---------------------------------------------------------------- postgres

pg_stop_all() {
  local port d pid
  for port in "${PG_PORTS[@]}"; do
    d="$STATE/pg/$port"
    if [[ -f "$d/postmaster.pid" ]]; then
      runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$d" -m immediate -w -t 20 stop >/dev/null 2>&1
    fi
    for pid in $(port_pids "$port"); do # a postmaster of ours whose data dir is gone
      tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$STATE/pg/" && stop_pid "$pid" QUIT 5
    done
  done
}

pg_init_one() { # port auth track(yes|no) logdir
  local port=$1 auth=$2 track=$3 logdir=$4 d="$STATE/pg/$1"
  runuser -u postgres -- "$PG_BIN/initdb" -D "$d" -U postgres --pwfile="$STATE/pwfile" \
    --auth-local="$auth" --auth-host="$auth" -E UTF8 --locale=C.UTF-8 -N >"$logdir/initdb-$port.log" 2>&1 || return 1
  {
    echo "port = $port"
    echo "listen_addresses = 'localhost'"
    echo "unix_socket_directories = '$STATE/sock'"
    echo "shared_preload_libraries = 'pg_stat_statements'"
    if [[ $track == yes ]]; then
      echo "pg_stat_statements.track = all"
      echo "pg_stat_statements.max = 100000"
    fi
    echo "password_encryption = '$auth'"
    echo "fsync = off"
  } >> "$d/postgresql.conf"
  echo "host all all all $auth" >> "$d/pg_hba.conf"   # as the docker image does
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$d" -l "$logdir/postgres-$port.log" -w -t 60 start \
    >>"$logdir/initdb-$port.log" 2>&1 || return 1
  # initdb stored the superuser password with PG15's default (SCRAM); store it
  # again with this cluster's password_encryption (md5 for 5432/10432).
  PGPASSWORD=postgres psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres \
    -c "ALTER ROLE postgres PASSWORD 'postgres'" >>"$logdir/initdb-$port.log" 2>&1
}

# Stop, wipe, re-init and start the five clusters of pgcat's CircleCI job.
pg_fresh() { # logdir
  local logdir=$1/postgres port rc=0
  pg_stop_all
  rm -rf "$STATE/pg"
  mkdir -p "$STATE/pg" "$STATE/sock" "$logdir"
  chown postgres "$STATE/pg" "$STATE/sock" "$logdir"
  local -A auth=([5432]=md5 [7432]=scram-sha-256 [8432]=scram-sha-256 [9432]=scram-sha-256 [10432]=md5)
  local -A track=([5432]=yes [7432]=yes [8432]=yes [9432]=yes [10432]=no)
  local pids=()
  for port in "${PG_PORTS[@]}"; do
    pg_init_one "$port" "${auth[$port]}" "${track[$port]}" "$logdir" &
    pids+=($!)
  done
  for port in "${pids[@]}"; do wait "$port" || rc=1; done
  return $rc
}

# run_tests.sh's database setup: query_routing_setup.sql on each cluster and
# pgbench -i on shard0..2 (port 5432). With a suite name, each command is a
# recorded check; without, failures are reported as one ENV-ERROR.
pg_setup() { # logdir [suite]
  local logdir=$1 suite=${2:-} port db rc=0 f
  for port in "${PG_PORTS[@]}"; do
    f="$logdir/setup-sql-$port.log"
    (cd "$PGCAT_SRC" && PGPASSWORD=postgres psql -X -e -h 127.0.0.1 -p "$port" -U postgres \
      -f tests/sharding/query_routing_setup.sql) >"$f" 2>&1
    local r=$?
    if [[ -n "$suite" ]]; then
      record "$suite" "setup: psql -f query_routing_setup.sql on :$port" \
        "$([[ $r == 0 ]] && echo PASS || echo FAIL)" "$(first_error "$f")"
    fi
    (( r == 0 )) || rc=1
  done
  for db in shard0 shard1 shard2; do
    f="$logdir/pgbench-init-$db.log"
    PGPASSWORD=sharding_user pgbench -h 127.0.0.1 -U sharding_user "$db" -i >"$f" 2>&1
    local r=$?
    if [[ -n "$suite" ]]; then
      record "$suite" "setup: pgbench -i $db" "$([[ $r == 0 ]] && echo PASS || echo FAIL)" "$(first_error "$f")"
    fi
    (( r == 0 )) || rc=1
  done
  return $rc
}

# Fresh clusters + setup + fresh toxiproxy for one test phase.
fresh_env() { # phase-name logdir
  local name=$1 logdir=$2
  mkdir -p "$logdir"
  kill_suite_pgcats
  if ! pg_fresh "$logdir"; then
    record "$name" "(environment: initdb/start Postgres clusters)" ENV-ERROR \
      "see $logdir/postgres/initdb-*.log: $(cat "$logdir"/postgres/initdb-*.log 2>/dev/null | grep -m1 -iE 'error|fatal')"
    return 1
  fi
  if ! pg_setup "$logdir"; then
    record "$name" "(environment: query_routing_setup.sql / pgbench -i)" ENV-ERROR \
      "see $logdir/setup-*.log, $logdir/pgbench-init-*.log"
    return 1
  fi
  if ! toxiproxy_start "$logdir/toxiproxy.log"; then
    record "$name" "(environment: toxiproxy shim)" ENV-ERROR "see $logdir/toxiproxy.log"
    return 1
  fi
  return 0
}

# ---------------------------------------------------------------- pgcat (CI)

PGCAT_PID=""
PGCAT_RUN=0

# run_tests.sh's start_pgcat: stop the running one, start with RUST_LOG=$1 on
# .circleci/pgcat.toml. We signal our own pid (not `pgrep pgcat`), and wait
# for the old process to exit before starting the next one.
start_pgcat() { # level logdir
  local level=$1 logdir=$2
  if pid_alive "$PGCAT_PID"; then
    kill -s INT "$PGCAT_PID" 2>/dev/null
    wait_pid_exit "$PGCAT_PID" 10 || { log "pgcat $PGCAT_PID ignored SIGINT for 10s, killing"; stop_pid "$PGCAT_PID" KILL 1; }
  fi
  PGCAT_RUN=$((PGCAT_RUN + 1))
  local out="$logdir/pgmlcat-$(printf %02d $PGCAT_RUN)-$level.log"
  (cd "$PGCAT_SRC" && RUST_LOG=$level exec ./target/debug/pgcat .circleci/pgcat.toml) >"$out" 2>&1 &
  PGCAT_PID=$!
  sleep 1
  local i
  for i in $(seq 100); do
    pid_alive "$PGCAT_PID" || return 1
    (exec 3<>/dev/tcp/127.0.0.1/6432) 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

restore_ci_config() {
  cp "$PGCAT_SRC/.pgcat-suite-orig/pgcat.toml" "$PGCAT_SRC/.circleci/pgcat.toml"
}

# ---------------------------------------------------------------- prepare

prepare() {
  log "prepare: packages"
  local missing=() p
  for p in ruby ruby-pg ruby-rspec ruby-activerecord postgresql-15 postgresql-client-15 \
      postgresql-contrib curl iproute2 procps golang-go golang-github-lib-pq-dev libpq-dev gcc; do
    have_pkg "$p" || missing+=("$p")
  done
  # postgresql-contrib is a virtual/meta package on some releases; pg_stat_statements ships in postgresql-15
  if ((${#missing[@]})); then
    local real=()
    for p in "${missing[@]}"; do
      [[ $p == postgresql-contrib && -f /usr/share/postgresql/15/extension/pg_stat_statements.control ]] && continue
      real+=("$p")
    done
    if ((${#real[@]})); then
      log "apt-get install ${real[*]}"
      apt-get update -qq >/dev/null 2>&1
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${real[@]}" >"$LOGS/apt.log" 2>&1 ||
        die "apt-get install failed, see $LOGS/apt.log"
    fi
  fi
  [[ -x "$PG_BIN/initdb" ]] || die "PostgreSQL 15 server binaries not found in $PG_BIN"
  id postgres >/dev/null 2>&1 || die "no 'postgres' OS user"

  log "prepare: pgcat checkout $PGCAT_SRC"
  if [[ ! -d "$PGCAT_SRC/tests/ruby" ]]; then
    [[ -d "$MIRROR" ]] || die "$PGCAT_SRC is not a pgcat checkout and $MIRROR is missing"
    mkdir -p "$PGCAT_SRC"
    git --git-dir="$MIRROR" archive HEAD | tar -x -C "$PGCAT_SRC" || die "git archive failed"
  fi
  mkdir -p "$PGCAT_SRC/.pgcat-suite-orig"
  [[ -f "$PGCAT_SRC/.pgcat-suite-orig/pgcat.toml" ]] || cp "$PGCAT_SRC/.circleci/pgcat.toml" "$PGCAT_SRC/.pgcat-suite-orig/pgcat.toml"
  [[ -f "$PGCAT_SRC/.pgcat-suite-orig/go.mod" ]] || cp "$PGCAT_SRC/tests/go/go.mod" "$PGCAT_SRC/.pgcat-suite-orig/go.mod"
  restore_ci_config
  cp "$PGCAT_SRC/.pgcat-suite-orig/go.mod" "$PGCAT_SRC/tests/go/go.mod"

  log "prepare: binary $BIN_SRC"
  [[ -x "$BIN_SRC" ]] || die "pgmlcat binary not found: $BIN_SRC"
  mkdir -p "$STATE/bin"
  rm -f "$STATE/bin/pgmlcat"
  cp -l "$BIN_SRC" "$STATE/bin/pgmlcat" 2>/dev/null || cp "$BIN_SRC" "$STATE/bin/pgmlcat" || die "copy of $BIN_SRC failed"
  # A symlink named "pgcat": the process name (comm) comes from the exec'd
  # path, and pgcat's tests find/kill the pooler by that name.
  ln -sfn "$STATE/bin/pgmlcat" "$STATE/bin/pgcat"
  mkdir -p "$PGCAT_SRC/target/debug"
  rm -f "$PGCAT_SRC/target/debug/pgcat"
  sed "s#@PGCAT_LINK@#$STATE/bin/pgcat#" "$SUITE_DIR/pgcat-wrapper.sh" > "$PGCAT_SRC/target/debug/pgcat"
  chmod +x "$PGCAT_SRC/target/debug/pgcat"

  printf 'postgres\n' > "$STATE/pwfile"
  chmod 644 "$STATE/pwfile"

  if [[ " $SUITE_PHASES " == *" python "* ]]; then
    log "prepare: python venv"
    if ! "$VENV/bin/python" -c 'import psycopg2, psutil, pytest' 2>/dev/null; then
      python3 -m venv "$VENV" >"$LOGS/pip.log" 2>&1
      "$VENV/bin/pip" install -r "$PGCAT_SRC/tests/python/requirements.txt" >>"$LOGS/pip.log" 2>&1 ||
        log "pip install failed (see $LOGS/pip.log)"
    fi
  fi

  if [[ " $SUITE_PHASES " == *" go "* ]]; then
    log "prepare: go module offline (replace lib/pq => Debian's golang-github-lib-pq-dev)"
    (cd "$PGCAT_SRC/tests/go" && go mod edit -replace github.com/lib/pq=/usr/share/gocode/src/github.com/lib/pq)
  fi

}

# tests/rust is built once (cached in $RUST_TARGET); rebuilt only when its
# sources are newer. cargo runs under flock /tmp/cargo.lock (shared with other
# cargo users on this machine), so this happens in the rust phase, not before
# the timing-sensitive suites.
build_rust_tests() {
  local src="$PGCAT_SRC/tests/rust" bin="$RUST_TARGET/debug/rust"
  if [[ -x "$bin" && "$bin" -nt "$src/Cargo.lock" && "$bin" -nt "$src/src/main.rs" ]]; then
    log "tests/rust already built ($bin)"
    echo 0 > "$STATE/rust-build.rc"
    return 0
  fi
  log "build tests/rust (flock /tmp/cargo.lock, CARGO_TARGET_DIR=$RUST_TARGET)"
  (cd "$src" && CARGO_TARGET_DIR="$RUST_TARGET" timeout 2400 flock /tmp/cargo.lock \
    cargo build --locked) >"$LOGS/rust-build.log" 2>&1
  local rc=$?
  echo $rc > "$STATE/rust-build.rc"
  return $rc
}

cleanup() {
  local pid
  for pid in "${BG_PIDS[@]:-}"; do [[ -n "$pid" ]] && stop_pid "$pid" TERM 2; done
  kill_suite_pgcats
  toxiproxy_stop
  pg_stop_all
  [[ -d "$PGCAT_SRC/.pgcat-suite-orig" ]] && restore_ci_config 2>/dev/null
}

check_ports_free() {
  local port busy=()
  for port in "${ALL_PORTS[@]}"; do
    [[ -n "$(port_pids "$port")" ]] && busy+=("$port:$(port_pids "$port" | tr '\n' ',')")
  done
  ((${#busy[@]} == 0)) || die "ports in use by processes this suite did not start: ${busy[*]}"
}

# ---------------------------------------------------------------- phase 2: CI steps

BG_PIDS=()
STEP_N=0

# step NAME TIMEOUT SNIPPET : run SNIPPET with bash in the pgcat checkout,
# record PASS if it exits 0.
step() {
  local name=$1 t=$2 snippet=$3
  STEP_N=$((STEP_N + 1))
  local f="$CI_LOGS/step-$(printf %02d $STEP_N).log"
  printf '# %s\n$ %s\n' "$name" "$snippet" > "$f"
  (cd "$PGCAT_SRC" && timeout -k 5 "$t" bash -c "$snippet") >>"$f" 2>&1
  local rc=$?
  if (( rc == 0 )); then
    record ci "$name" PASS
  else
    local why; why=$(first_error "$f")
    (( rc == 124 )) && why="timed out after ${t}s; $why"
    record ci "$name" FAIL "exit $rc: $why [log: $f]"
  fi
  return $rc
}

# Query cancellation as in run_tests.sh: psql pg_sleep(50) in background,
# SIGINT to psql after 1s. run_tests.sh only requires that nothing breaks;
# we additionally check that the cancel worked (psql ends within 5s).
cancel_check() { # name
  local name=$1
  STEP_N=$((STEP_N + 1))
  local f="$CI_LOGS/step-$(printf %02d $STEP_N).log"
  (cd "$PGCAT_SRC" && exec psql -U sharding_user -h 127.0.0.1 -p 6432 -c 'SELECT pg_sleep(50)') >"$f" 2>&1 &
  local ppid=$!
  BG_PIDS+=("$ppid")
  sleep 1
  kill -s INT "$ppid" 2>/dev/null
  if wait_pid_exit "$ppid" 5; then
    if grep -q "canceling statement due to user request" "$f"; then
      record ci "$name" PASS
    else
      record ci "$name" FAIL "psql ended without the cancel error: $(first_error "$f") [log: $f]"
    fi
  else
    record ci "$name" FAIL "pg_sleep(50) not cancelled within 5s of SIGINT to psql (CancelRequest not forwarded?) [log: $f]"
    stop_pid "$ppid" TERM 2
  fi
}

pgcat_step() { # name level
  if start_pgcat "$2" "$CI_LOGS"; then
    record ci "$1" PASS
  else
    record ci "$1" FAIL "pgmlcat not accepting on :6432 (alive: $(pid_alive "$PGCAT_PID" && echo yes || echo no)): $(tail -n 3 "$CI_LOGS/pgmlcat-$(printf %02d $PGCAT_RUN)-$2.log" | tr '\n' ' ' | cut -c1-300)"
  fi
}

sighup_step() { # name
  if pid_alive "$PGCAT_PID"; then
    kill -s HUP "$PGCAT_PID"
    record ci "$1" PASS
  else
    record ci "$1" FAIL "pgmlcat (pid $PGCAT_PID) is not running"
  fi
}

phase_ci() {
  log "=== phase: pgcat .circleci/run_tests.sh steps"
  CI_LOGS="$LOGS/ci"
  mkdir -p "$CI_LOGS"
  kill_suite_pgcats
  if ! pg_fresh "$CI_LOGS"; then
    record ci "(environment: initdb/start Postgres clusters)" ENV-ERROR "see $CI_LOGS/postgres/"
    return
  fi
  export PGCAT_SUITE_LOGDIR="$CI_LOGS"

  step "non-zero exit for bad config (pgcat fake_configs)" 15 '! ./target/debug/pgcat "fake_configs"'
  pg_setup "$CI_LOGS" ci

  if toxiproxy_start "$CI_LOGS/toxiproxy.log"; then
    record ci "toxiproxy-server start (shim)" PASS
  else
    record ci "toxiproxy-server start (shim)" ENV-ERROR "see $CI_LOGS/toxiproxy.log"
  fi
  step "toxiproxy-cli create -l 127.0.0.1:5433 -u 127.0.0.1:5432 postgres_replica" 15 \
    'toxiproxy-cli create -l 127.0.0.1:5433 -u 127.0.0.1:5432 postgres_replica'

  pgcat_step 'start_pgcat "info" (.circleci/pgcat.toml)' info
  step "prometheus: curl --fail localhost:9930/metrics" 15 'curl -sS --fail localhost:9930/metrics >/dev/null'

  export PGPASSWORD=sharding_user PGDATABASE=sharded_db
  step "pgbench -i via pgcat" 180 'pgbench -U sharding_user -i -h 127.0.0.1 -p 6432'
  step "pgbench -t 500 -c 2 --protocol simple -f tests/pgbench/simple.sql" 300 \
    'pgbench -U sharding_user -h 127.0.0.1 -p 6432 -t 500 -c 2 --protocol simple -f tests/pgbench/simple.sql'
  step "pgbench -t 500 -c 2 --protocol extended" 300 \
    'pgbench -U sharding_user -h 127.0.0.1 -p 6432 -t 500 -c 2 --protocol extended'
  step "COPY (SELECT ... LIMIT 15) TO STDOUT" 60 \
    "psql -U sharding_user -h 127.0.0.1 -p 6432 -c 'COPY (SELECT * FROM pgbench_accounts LIMIT 15) TO STDOUT;' > /dev/null"
  cancel_check "query cancellation: SIGINT to psql running pg_sleep(50)"
  step "pause/resume: pgbench before+during PAUSE/RESUME sharded_db,sharding_user" 300 '
    pgbench -U sharding_user -t 500 -c 2 -h 127.0.0.1 -p 6432 --protocol extended &
    B1=$!
    PGPASSWORD=admin_pass psql -U admin_user -h 127.0.0.1 -p 6432 -d pgbouncer -c "PAUSE sharded_db,sharding_user" || exit 11
    pgbench -U sharding_user -h 127.0.0.1 -p 6432 -t 500 -c 2 --protocol extended &
    B2=$!
    PGPASSWORD=admin_pass psql -U admin_user -h 127.0.0.1 -p 6432 -d pgbouncer -c "RESUME sharded_db,sharding_user" || exit 12
    wait $B1 || exit 13
    wait $B2 || exit 14'
  step "admin RELOAD (pgbouncer db)" 30 \
    "PGPASSWORD=admin_pass psql -U admin_user -h 127.0.0.1 -p 6432 -d pgbouncer -c 'RELOAD'"
  cancel_check "query cancellation after RELOAD"
  step "sharding insert (tests/sharding/query_routing_test_insert.sql)" 120 \
    'psql -U sharding_user -e -h 127.0.0.1 -p 6432 -f tests/sharding/query_routing_test_insert.sql'
  step "sharding select (tests/sharding/query_routing_test_select.sql)" 120 \
    'psql -U sharding_user -e -h 127.0.0.1 -p 6432 -f tests/sharding/query_routing_test_select.sql > /dev/null'
  step "replica/primary selection (tests/sharding/query_routing_test_primary_replica.sql)" 120 \
    'psql -U sharding_user -e -h 127.0.0.1 -p 6432 -f tests/sharding/query_routing_test_primary_replica.sql > /dev/null'

  sed -i 's/statement_timeout = 0/statement_timeout = 100/' "$PGCAT_SRC/.circleci/pgcat.toml"
  sighup_step "SIGHUP reload with statement_timeout = 100"
  sleep 0.2
  step "statement_timeout=100 after reload: pg_sleep(0.5) must fail" 30 \
    "! psql -U sharding_user -e -h 127.0.0.1 -p 6432 -c 'select pg_sleep(0.5)'"
  sed -i 's/statement_timeout = 100/statement_timeout = 0/' "$PGCAT_SRC/.circleci/pgcat.toml"
  sighup_step "SIGHUP reload with statement_timeout = 0"

  # (ruby / python / go suites: phases rbtests, rspec, python, go)
  pgcat_step 'start_pgcat "info" (after the language suites)' info
  # (rust suite: phase rust)

  export PGPASSWORD=admin_pass
  step "admin: SHOW STATS" 30 "psql -U admin_user -e -h 127.0.0.1 -p 6432 -d pgbouncer -c 'SHOW STATS' > /dev/null"
  step "admin: RELOAD" 30 "psql -U admin_user -h 127.0.0.1 -p 6432 -d pgbouncer -c 'RELOAD' > /dev/null"
  step "admin: SHOW CONFIG" 30 "psql -U admin_user -h 127.0.0.1 -p 6432 -d pgbouncer -c 'SHOW CONFIG' > /dev/null"
  step "admin: SHOW DATABASES" 30 "psql -U admin_user -h 127.0.0.1 -p 6432 -d pgbouncer -c 'SHOW DATABASES' > /dev/null"
  step "admin: SHOW LISTS (pgcat db)" 30 "psql -U admin_user -h 127.0.0.1 -p 6432 -d pgcat -c 'SHOW LISTS' > /dev/null"
  step "admin: SHOW POOLS (pgcat db)" 30 "psql -U admin_user -h 127.0.0.1 -p 6432 -d pgcat -c 'SHOW POOLS' > /dev/null"
  step "admin: SHOW VERSION (pgcat db)" 30 "psql -U admin_user -h 127.0.0.1 -p 6432 -d pgcat -c 'SHOW VERSION' > /dev/null"
  step "admin: SET client_encoding TO 'utf8' (ignored)" 30 \
    "psql -U admin_user -h 127.0.0.1 -p 6432 -d pgbouncer -c \"SET client_encoding TO 'utf8'\" > /dev/null"
  step "admin: SHOW STATS on random_db must fail" 30 \
    "! psql -U admin_user -e -h 127.0.0.1 -p 6432 -d random_db -c 'SHOW STATS' > /dev/null"
  export PGPASSWORD=sharding_user

  pgcat_step 'start_pgcat "trace"' trace
  step "toxiproxy-cli toxic add -t latency -a latency=300 postgres_replica" 15 \
    'toxiproxy-cli toxic add -t latency -a latency=300 postgres_replica'
  sleep 1
  step "failover: 3x SELECT 1 within timeout 5 (latency toxic on replica)" 15 '
timeout 5 psql -U sharding_user -e -h 127.0.0.1 -p 6432 <<-EOF
SELECT 1;
SELECT 1;
SELECT 1;
EOF'
  step "toxiproxy-cli toxic remove --toxicName latency_downstream postgres_replica" 15 \
    'toxiproxy-cli toxic remove --toxicName latency_downstream postgres_replica'

  pgcat_step 'start_pgcat "info" (before session-mode reload)' info
  sed -i '0,/simple_db/s/pool_mode = "transaction"/pool_mode = "session"/' "$PGCAT_SRC/.circleci/pgcat.toml"
  sighup_step "SIGHUP reload: sharded_db pool_mode = session"
  sed -i '0,/simple_db/s/pool_mode = "session"/pool_mode = "transaction"/' "$PGCAT_SRC/.circleci/pgcat.toml"
  sleep 1
  step "pgbench -t 500 -c 2 --protocol prepared (session mode after reload)" 300 \
    'pgbench -U sharding_user -h 127.0.0.1 -p 6432 -t 500 -c 2 --protocol prepared'

  # run_tests.sh: killall pgcat -s SIGINT; sleep 1 (it does not check the exit).
  if pid_alive "$PGCAT_PID"; then
    kill -s INT "$PGCAT_PID"
    if wait_pid_exit "$PGCAT_PID" 7; then
      record ci "SIGINT: clean shutdown (exits within shutdown_timeout=5s)" PASS
    else
      record ci "SIGINT: clean shutdown (exits within shutdown_timeout=5s)" FAIL "still running 7s after SIGINT"
      stop_pid "$PGCAT_PID" KILL 1
    fi
  else
    record ci "SIGINT: clean shutdown (exits within shutdown_timeout=5s)" FAIL "pgmlcat was not running before SIGINT"
  fi
  PGCAT_PID=""
  toxiproxy_stop
  unset PGPASSWORD PGDATABASE
  restore_ci_config
}

# ---------------------------------------------------------------- phase 3: ruby

phase_rbtests() {
  log "=== phase: tests/ruby/tests.rb (ActiveRecord)"
  local d="$LOGS/ruby/tests.rb"
  fresh_env "ruby:tests.rb" "$d" || return
  export PGCAT_SUITE_LOGDIR="$d"
  CI_LOGS="$d"
  if ! start_pgcat info "$d"; then
    record "ruby:tests.rb" "tests.rb (ActiveRecord sharded migrations/CRUD)" FAIL "pgmlcat did not start: see $d"
    return
  fi
  (cd "$PGCAT_SRC/tests/ruby" && timeout -k 5 600 ruby -r pgcat_suite_ar_compat tests.rb --format documentation) >"$d/output.log" 2>&1
  local rc=$?
  if (( rc == 0 )); then
    record "ruby:tests.rb" "tests.rb (ActiveRecord sharded migrations/CRUD)" PASS
  else
    record "ruby:tests.rb" "tests.rb (ActiveRecord sharded migrations/CRUD)" FAIL \
      "exit $rc: $(grep -m1 -E 'Error|error|Exception' "$d/output.log" | cut -c1-400) [log: $d/output.log]"
  fi
  stop_pid "$PGCAT_PID" INT 10
  PGCAT_PID=""
}

phase_rspec() {
  local specs=() s
  if [[ -n "${SUITE_SPECS:-}" ]]; then
    for s in $SUITE_SPECS; do specs+=("${s%_spec.rb}_spec.rb"); done
  else
    for s in "$PGCAT_SRC"/tests/ruby/*_spec.rb; do specs+=("$(basename "$s")"); done
  fi
  for s in "${specs[@]}"; do
    local name=${s%.rb} d="$LOGS/ruby/${s%.rb}"
    local suite="ruby:$name"
    log "=== phase: rspec $s (fresh clusters)"
    fresh_env "$suite" "$d" || continue
    export PGCAT_SUITE_LOGDIR="$d"
    local t0=$SECONDS
    (cd "$PGCAT_SRC/tests/ruby" && timeout -k 10 "$SPEC_TIMEOUT" rspec "$s" \
      --require "$SUITE_DIR/ruby/suite_formatter.rb" --require "$SUITE_DIR/ruby/suite_example_timeout.rb" \
      --format documentation --format PgcatSuiteFormatter --out "$d/results.tsv") >"$d/rspec.log" 2>&1
    local rc=$?
    log "rspec $s: exit $rc in $((SECONDS - t0))s"
    python3 "$SUITE_DIR/report.py" rspec "$RESULTS" "$suite" "$d/results.tsv" "$rc" "$d/rspec.log"
    kill_suite_pgcats
    toxiproxy_stop
  done
}

# ---------------------------------------------------------------- phase 4-6

phase_python() {
  log "=== phase: pytest tests/python"
  local d="$LOGS/python"
  fresh_env python "$d" || return
  toxiproxy_stop
  if ! "$VENV/bin/python" -c 'import psycopg2, psutil, pytest' 2>/dev/null; then
    record python "(environment: pip install -r tests/python/requirements.txt)" ENV-ERROR "see $LOGS/pip.log"
    return
  fi
  export PGCAT_SUITE_LOGDIR="$d"
  (cd "$PGCAT_SRC" && PATH="$VENV/bin:$PATH" timeout -k 10 1200 "$VENV/bin/python" -m pytest tests/python \
    -v -p no:cacheprovider --junitxml="$d/junit.xml") >"$d/pytest.log" 2>&1
  log "pytest exit $?"
  python3 "$SUITE_DIR/report.py" junit "$RESULTS" python "$d/junit.xml"
  kill_suite_pgcats
}

phase_go() {
  log "=== phase: go test -v tests/go"
  local d="$LOGS/go"
  fresh_env go "$d" || return
  toxiproxy_stop
  export PGCAT_SUITE_LOGDIR="$d"
  (cd "$PGCAT_SRC/tests/go" && GOFLAGS=-mod=mod GOPROXY=off GOSUMDB=off GOTOOLCHAIN=local \
    timeout -k 10 600 go test -v -count=1 .) >"$d/go-test.log" 2>&1
  local rc=$?
  log "go test exit $rc"
  python3 "$SUITE_DIR/report.py" gotest "$RESULTS" go "$d/go-test.log" "$rc"
  kill_suite_pgcats
}

phase_rust() {
  log "=== phase: tests/rust (sqlx prepared statements)"
  local d="$LOGS/rust" name="tests/rust: sqlx 5 tasks x 1000 'SELECT n' via pgcat"
  mkdir -p "$d"
  build_rust_tests
  if [[ "$(cat "$STATE/rust-build.rc" 2>/dev/null)" != 0 || ! -x "$RUST_TARGET/debug/rust" ]]; then
    record rust "$name" ENV-ERROR "tests/rust did not build: $(first_error "$LOGS/rust-build.log") [log: $LOGS/rust-build.log]"
    return
  fi
  fresh_env rust "$d" || return
  toxiproxy_stop
  export PGCAT_SUITE_LOGDIR="$d"
  CI_LOGS="$d"
  if ! start_pgcat info "$d"; then
    record rust "$name" FAIL "pgmlcat did not start: see $d"
    return
  fi
  (cd "$PGCAT_SRC/tests/rust" && timeout -k 5 600 "$RUST_TARGET/debug/rust") >"$d/output.log" 2>&1
  local rc=$?
  if (( rc == 0 )); then
    record rust "$name" PASS
  else
    record rust "$name" FAIL "exit $rc: $(first_error "$d/output.log") [log: $d/output.log]"
  fi
  stop_pid "$PGCAT_PID" INT 10
  PGCAT_PID=""
}

# Debugging aid (not in the default phases): fresh clusters + toxiproxy shim,
# then wait HOLD_SECONDS (default 900) so specs or pgmlcat can be run by hand.
phase_hold() {
  local d="$LOGS/hold"
  fresh_env hold "$d" || return
  export PGCAT_SUITE_LOGDIR="$d"
  log "environment ready for ${HOLD_SECONDS:-900}s: clusters ${PG_PORTS[*]}, toxiproxy :8474, wrapper $PGCAT_SRC/target/debug/pgcat"
  log "e.g.: cd $PGCAT_SRC/tests/ruby && PATH=$SUITE_DIR/bin:\$PATH RUBYLIB=$SUITE_DIR/ruby rspec routing_spec.rb"
  sleep "${HOLD_SECONDS:-900}"
}

# ---------------------------------------------------------------- main

main() {
  [[ $EUID == 0 ]] || die "run as root (Postgres clusters are started as the postgres user)"
  [[ "$LOGS" == /tmp/* && "$LOGS" != */.. && "$LOGS" != *"/../"* ]] || die "SUITE_LOGS must be a directory under /tmp (it is wiped): $LOGS"
  mkdir -p "$STATE"
  cleanup
  rm -rf "$LOGS"
  mkdir -p "$LOGS"
  : > "$RESULTS"
  trap 'cleanup' EXIT
  trap 'log "interrupted"; exit 130' INT TERM
  check_ports_free
  prepare
  log "pgcat checkout: $PGCAT_SRC   pgmlcat binary: $BIN_SRC   logs: $LOGS"

  local ph
  for ph in $SUITE_PHASES; do
    case $ph in
      ci) phase_ci ;;
      rbtests) phase_rbtests ;;
      rspec) phase_rspec ;;
      python) phase_python ;;
      go) phase_go ;;
      rust) phase_rust ;;
      hold) phase_hold ;;
      *) log "unknown phase $ph" ;;
    esac
  done
  cleanup

  python3 "$SUITE_DIR/report.py" summary "$RESULTS" | tee "$LOGS/summary.txt"
  local rc=${PIPESTATUS[0]}
  local el=$(( $(date +%s) - START_TS ))
  echo "Runtime: $((el / 60))m$((el % 60))s   logs: $LOGS   results: $RESULTS" | tee -a "$LOGS/summary.txt"
  return "$rc"
}

main "$@"; exit $?   # one line: bash has read it all before running main
