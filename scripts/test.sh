#!/usr/bin/env bash
# The whole test suite: unit tests, and integration tests that start real
# PostgreSQL 15 clusters and drive pgmlcat with psql, pgbench and tokio-postgres.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --all-targets -- --test-threads "${TEST_THREADS:-4}"
