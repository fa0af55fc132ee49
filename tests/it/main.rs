//! pgmlcat's integration tests, in one test binary: each module was a test
//! file of its own, and `common` is the harness they share (real PostgreSQL
//! 15 clusters and the `pgmlcat` binary, each in its own temp dir).
//!
//! One binary links LightGBM once instead of once per file, and lets
//! `--test-threads` run tests from every module side by side. Run one
//! module with e.g. `cargo test --test it sharding::`.

// Test code may panic on what it does not expect: that is how a test fails.
#![allow(clippy::unwrap_used)]

mod common;

mod admin;
mod auth;
mod bad_input;
mod clients;
mod dashboard;
mod drivers;
mod freshness;
mod lifecycle;
mod limits;
mod ml_anywhere;
mod ml_automl;
mod ml_drift;
mod ml_explain;
mod ml_groups;
mod ml_groups_more;
mod ml_import;
mod ml_predict;
mod ml_schedule;
mod ml_train;
mod notify;
mod peers;
mod pinning;
mod pooler;
mod replicas;
mod roles;
mod rw_transactions;
mod session;
mod session_params;
mod sharding;
mod statements;
mod timeouts;
mod tls;
