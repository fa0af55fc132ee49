#!/usr/bin/env bash
# The whole test suite: unit tests, and integration tests that start real
# PostgreSQL 15 clusters and drive pgmlcat with psql, pgbench and tokio-postgres.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Benches are compiled, not run (criterion does not take test-harness flags).
cargo build --benches --quiet
cargo test -- --test-threads "${TEST_THREADS:-4}"
