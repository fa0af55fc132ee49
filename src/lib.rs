//! pgmlcat: a Postgres pooler in the line of pgcat, with in-line ML in the
//! line of PostgresML. See README.md for the tour.

pub mod admin;
pub mod app;
pub mod backend;
pub mod config;
pub mod errors;
pub mod frontend;
pub mod ml;
pub mod net;
pub mod router;
pub mod runtime;
pub mod stats;
