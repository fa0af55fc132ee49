#!/usr/bin/env bash
# The whole test suite: unit tests, and integration tests that start real
# PostgreSQL 15 clusters and drive pgmlcat with psql, pgbench, tokio-postgres,
# psycopg 3, asyncpg, pgJDBC, pgx, lib/pq and node-postgres (scripts/setup.sh
# installs what is missing).
# The integration tests are one test binary (tests/it/main.rs, a module per
# area), so LightGBM is linked once and TEST_THREADS tests from every area run
# side by side; one area alone: cargo test --test it -- sharding::
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The Python the tests run (setup.sh checked its drivers): python3 unless set.
export PGMLCAT_PYTHON=${PGMLCAT_PYTHON:-python3}
# setup.sh installed Chromium: the dashboard test must not skip for want of it.
export PGMLCAT_REQUIRE_CHROMIUM=1
# Benches are compiled, not run (criterion does not take test-harness flags),
# with the test build's profile so LightGBM's C++ is not built a second time.
cargo build --benches --profile dev --quiet
cargo test -- --test-threads "${TEST_THREADS:-4}"
