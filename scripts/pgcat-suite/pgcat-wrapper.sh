#!/bin/bash
# Template for <pgcat checkout>/target/debug/pgcat, installed by
# scripts/pgcat-suite.sh (@PGCAT_LINK@ is replaced by a symlink named "pgcat"
# that points to the suite's copy of the pgmlcat binary).
#
# - exec keeps the pid that the caller (rspec, pytest, go test) signals, and
#   exec'ing through a link named "pgcat" keeps the process name "pgcat",
#   which pgcat's python tests look for (psutil name(), pgrep).
# - Logs: the Ruby helper sends output to /tmp/pgcat_log_*.log and deletes it
#   afterwards; a hard link in $PGCAT_SUITE_LOGDIR keeps it. Output that goes
#   to a pipe or to a deleted file (go test, pytest capture) is redirected to
#   a log file in $PGCAT_SUITE_LOGDIR instead.
logdir=${PGCAT_SUITE_LOGDIR:-/tmp/pgcat-suite-logs/misc}
mkdir -p "$logdir" 2>/dev/null
name="pgmlcat-$(date +%H%M%S-%N | cut -c1-10)-$$.log"
out=$(readlink "/proc/$$/fd/1" 2>/dev/null)
if [[ -f "$out" && "$out" != *" (deleted)" ]]; then
  if [[ "$out" == /tmp/pgcat_log_* ]]; then
    ln -f "$out" "$logdir/$name" 2>/dev/null || true
  fi
else
  exec >>"$logdir/$name" 2>&1
fi
printf '%s pid=%s args=%s\n' "$(date +%T)" "$$" "$*" >> "$logdir/pgmlcat-invocations.txt" 2>/dev/null
exec "@PGCAT_LINK@" "$@"
