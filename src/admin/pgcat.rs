//! SHOW POOLS, STATS and CLIENTS with pgcat's columns and units, for
//! clients of the `pgcat` admin database (pgcat's own specs and tools read
//! them). `pgbouncer` and `pgmlcat` get PgBouncer's (`show`): the two
//! disagree on what `cl_active` counts and on time units, so no one table
//! can satisfy both.

use std::time::SystemTime;

use super::show::{client_counts, mode, server_counts, sorted_pools, totals, ClientCounts, Totals};
use super::table::{s, Table, INT8, TEXT};
use crate::app::App;
use crate::stats::{self, Counters};

pub fn pools(app: &App) -> Table {
    let mut t = Table::new(&[
        ("database", TEXT),
        ("user", TEXT),
        ("pool_mode", TEXT),
        ("cl_idle", INT8),
        ("cl_active", INT8),
        ("cl_waiting", INT8),
        ("cl_cancel_req", INT8),
        ("sv_active", INT8),
        ("sv_idle", INT8),
        ("sv_used", INT8),
        ("sv_tested", INT8),
        ("sv_login", INT8),
        ("maxwait", INT8),
        ("maxwait_us", INT8),
        ("cl_pinned", INT8),
    ]);
    for pool in sorted_pools(app) {
        let ClientCounts {
            idle,
            active,
            waiting,
            max_wait,
            pinned,
        } = client_counts(&pool);
        let (sv_active, sv_idle) = server_counts(&pool);
        t.row(vec![
            s(&pool.database),
            s(&pool.user),
            s(mode(pool.mode)),
            s(idle),
            s(active),
            s(waiting),
            s(0),
            s(sv_active),
            s(sv_idle),
            s(0),
            s(0),
            s(0),
            s(max_wait / 1_000_000),
            s(max_wait % 1_000_000),
            s(pinned),
        ]);
    }
    t
}

/// One row per pool (pgcat: per server), times in pgcat's units: query and
/// transaction time in milliseconds, wait time in microseconds. Averages
/// are over the process's life (pgcat: over its last 15 s period).
pub fn stats(app: &App) -> Table {
    let mut t = Table::new(&[
        ("instance", TEXT),
        ("database", TEXT),
        ("user", TEXT),
        ("total_xact_count", INT8),
        ("total_query_count", INT8),
        ("total_received", INT8),
        ("total_sent", INT8),
        ("total_xact_time", INT8),
        ("total_query_time", INT8),
        ("total_wait_time", INT8),
        ("total_errors", INT8),
        ("avg_xact_count", INT8),
        ("avg_query_count", INT8),
        ("avg_recv", INT8),
        ("avg_sent", INT8),
        ("avg_errors", INT8),
        ("avg_xact_time", INT8),
        ("avg_query_time", INT8),
        ("avg_wait_time", INT8),
    ]);
    let uptime = app.started.elapsed().as_secs().max(1);
    for pool in sorted_pools(app) {
        let Totals {
            xacts,
            queries,
            recv,
            sent,
            xact_us,
            wait_us,
            errors,
        } = totals(&pool);
        let avg = |total: u64, per: u64| total.checked_div(per).unwrap_or(0);
        let instance: Vec<String> = pool.all_servers().map(|s| s.addr.to_string()).collect();
        t.row(vec![
            s(instance.join(",")),
            s(&pool.database),
            s(&pool.user),
            s(xacts),
            s(queries),
            s(recv),
            s(sent),
            s(xact_us / 1000),
            s(xact_us / 1000),
            s(wait_us),
            s(errors),
            s(xacts / uptime),
            s(queries / uptime),
            s(recv / uptime),
            s(sent / uptime),
            s(errors / uptime),
            s(avg(xact_us, xacts) / 1000),
            s(avg(xact_us, queries) / 1000),
            s(avg(wait_us, xacts)),
        ]);
    }
    t
}

pub fn clients(_app: &App) -> Table {
    let mut t = Table::new(&[
        ("client_id", TEXT),
        ("database", TEXT),
        ("user", TEXT),
        ("application_name", TEXT),
        ("state", TEXT),
        ("transaction_count", INT8),
        ("query_count", INT8),
        ("error_count", INT8),
        ("age_seconds", INT8),
        ("maxwait", INT8),
        ("maxwait_us", INT8),
        ("pinned", TEXT),
    ]);
    let rows = stats::connections().clients_in_order();
    let now = SystemTime::now();
    for (id, c) in rows {
        let state = c.state().name();
        let max_wait = c.max_wait_micros();
        let age = now
            .duration_since(c.connected_at)
            .map_or(0, |d| d.as_secs());
        let pinned = c.pinned();
        t.row(vec![
            s(format!("{id:#010X}")),
            s(&c.database),
            s(&c.user),
            s(&c.application_name),
            s(state),
            s(Counters::get(&c.xacts)),
            s(Counters::get(&c.queries)),
            s(Counters::get(&c.errors)),
            s(age),
            s(max_wait / 1_000_000),
            s(max_wait % 1_000_000),
            (!pinned.is_empty()).then(|| pinned.to_string()),
        ]);
    }
    t
}
