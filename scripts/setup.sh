#!/usr/bin/env bash
# Installs what building and testing pgmlcat needs on a fresh Debian 12
# machine, and nothing that is already there. Safe to run again.
set -euo pipefail

PG_BIN=/usr/lib/postgresql/15/bin
need=()
[[ -x "$PG_BIN/initdb" && -x "$PG_BIN/pgbench" ]] || need+=(postgresql-15)
command -v psql >/dev/null 2>&1 || need+=(postgresql-client-15)
command -v runuser >/dev/null 2>&1 || need+=(util-linux)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v openssl >/dev/null 2>&1 || need+=(openssl)  # the TLS tests make certificates

if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing packages: ${need[*]} (run as root or install them)" >&2
    exit 1
  fi
  echo "setup: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust (rustup) first" >&2
  exit 1
fi
