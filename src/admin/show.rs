//! SHOW commands, with PgBouncer's column sets where PgBouncer has the
//! command, so tools such as pgbouncer_exporter can read them.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::table::{null, s, Table, INT8, TEXT};
use crate::app::App;
use crate::backend::Pool;
use crate::config::{PoolMode, Role};
use crate::stats::{self, ClientState, Counters};

pub const HELP: &[&str] = &[
    "SHOW HELP|POOLS|STATS|SERVERS|CLIENTS|DATABASES|USERS|CONFIG|BANS|LISTS|VERSION",
    "SHOW PROJECTS|MODELS|TRAININGS|SCHEDULES (pgml: projects in each database, models warm in this process, running trainings, retraining schedules and their runs)",
    "BAN host seconds | BAN host port seconds",
    "UNBAN host [port]",
    "RELOAD",
    "PAUSE [db[,user]]",
    "RESUME [db[,user]]",
    "SHUTDOWN",
    "SET ... (accepted and ignored)",
];

pub(super) fn mode(m: PoolMode) -> &'static str {
    match m {
        PoolMode::Transaction => "transaction",
        PoolMode::Session => "session",
    }
}

fn role(r: Role) -> &'static str {
    match r {
        Role::Primary => "primary",
        Role::Replica => "replica",
    }
}

pub fn help() -> Table {
    let mut t = Table::new(&[("command", TEXT)]);
    for line in HELP {
        t.row(vec![s(line)]);
    }
    t
}

pub fn version() -> Table {
    let mut t = Table::new(&[("version", TEXT)]);
    t.row(vec![s(format!("pgmlcat {}", env!("CARGO_PKG_VERSION")))]);
    t
}

/// Clients of a pool by state.
pub(super) struct ClientCounts {
    /// Logged in, no server.
    pub idle: u64,
    /// Holding a server.
    pub active: u64,
    pub waiting: u64,
    /// The longest wait going on, in µs.
    pub max_wait: u64,
    /// Holding their server between transactions (see `pins`).
    pub pinned: u64,
}

/// Server connections of a pool: (active, idle).
pub(super) fn server_counts(pool: &Pool) -> (usize, usize) {
    pool.all_servers().fold((0, 0), |(a, i), s| {
        (a + s.active_count(), i + s.idle_count())
    })
}

pub(super) fn client_counts(pool: &Pool) -> ClientCounts {
    let mut n = ClientCounts {
        idle: 0,
        active: 0,
        waiting: 0,
        max_wait: 0,
        pinned: 0,
    };
    for c in stats::connections().clients.iter() {
        if c.database != pool.database || c.user != pool.user {
            continue;
        }
        if !c.pinned().is_empty() {
            n.pinned += 1;
        }
        match c.state() {
            ClientState::Waiting => {
                n.waiting += 1;
                n.max_wait = n.max_wait.max(c.waiting_micros());
            }
            ClientState::Active => n.active += 1,
            ClientState::Idle => n.idle += 1,
        }
    }
    n
}

pub(super) fn sorted_pools(app: &App) -> Vec<std::sync::Arc<Pool>> {
    let registry = app.registry.load();
    let mut pools: Vec<_> = registry.pools().cloned().collect();
    pools.sort_by(|a, b| (&a.database, &a.user).cmp(&(&b.database, &b.user)));
    pools
}

pub fn pools(app: &App) -> Table {
    let mut t = Table::new(&[
        ("database", TEXT),
        ("user", TEXT),
        ("cl_active", INT8),
        ("cl_waiting", INT8),
        ("cl_active_cancel_req", INT8),
        ("cl_waiting_cancel_req", INT8),
        ("sv_active", INT8),
        ("sv_active_cancel", INT8),
        ("sv_being_canceled", INT8),
        ("sv_idle", INT8),
        ("sv_used", INT8),
        ("sv_tested", INT8),
        ("sv_login", INT8),
        ("maxwait", INT8),
        ("maxwait_us", INT8),
        ("pool_mode", TEXT),
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
        // PgBouncer's cl_active: logged in and not waiting.
        let active = idle + active;
        let (sv_active, sv_idle) = server_counts(&pool);
        t.row(vec![
            s(&pool.database),
            s(&pool.user),
            s(active),
            s(waiting),
            s(0),
            s(0),
            s(sv_active),
            s(0),
            s(0),
            s(sv_idle),
            s(0),
            s(0),
            s(0),
            s(max_wait / 1_000_000),
            s(max_wait % 1_000_000),
            s(mode(pool.mode)),
            s(pinned),
        ]);
    }
    t
}

/// A pool's traffic since start.
#[derive(Default)]
pub(super) struct Totals {
    pub xacts: u64,
    pub queries: u64,
    pub recv: u64,
    pub sent: u64,
    /// Time in transactions, µs.
    pub xact_us: u64,
    /// Time clients waited for a server, µs.
    pub wait_us: u64,
    pub errors: u64,
}

pub(super) fn totals(pool: &Pool) -> Totals {
    let c = &pool.counters;
    Totals {
        xacts: Counters::get(&c.xacts),
        queries: Counters::get(&c.queries),
        recv: Counters::get(&c.bytes_received),
        sent: Counters::get(&c.bytes_sent),
        xact_us: Counters::get(&c.xact_micros),
        wait_us: pool
            .all_servers()
            .map(|s| s.stats.wait_micros.load(Ordering::Relaxed))
            .sum(),
        errors: Counters::get(&c.errors),
    }
}

pub fn stats(app: &App) -> Table {
    let mut t = Table::new(&[
        ("database", TEXT),
        ("total_xact_count", INT8),
        ("total_query_count", INT8),
        ("total_received", INT8),
        ("total_sent", INT8),
        ("total_xact_time", INT8),
        ("total_query_time", INT8),
        ("total_wait_time", INT8),
        ("avg_xact_count", INT8),
        ("avg_query_count", INT8),
        ("avg_recv", INT8),
        ("avg_sent", INT8),
        ("avg_xact_time", INT8),
        ("avg_query_time", INT8),
        ("avg_wait_time", INT8),
    ]);
    // PgBouncer reports per database: sum over its users.
    let mut by_db: BTreeMap<String, Totals> = BTreeMap::new();
    for pool in sorted_pools(app) {
        let t = totals(&pool);
        let e = by_db.entry(pool.database.clone()).or_default();
        e.xacts += t.xacts;
        e.queries += t.queries;
        e.recv += t.recv;
        e.sent += t.sent;
        e.xact_us += t.xact_us;
        e.wait_us += t.wait_us;
    }
    let uptime = app.started.elapsed().as_secs().max(1);
    for (db, total) in by_db {
        let Totals {
            xacts,
            queries,
            recv,
            sent,
            xact_us,
            wait_us,
            ..
        } = total;
        let avg = |total: u64, per: u64| total.checked_div(per).unwrap_or(0);
        t.row(vec![
            s(db),
            s(xacts),
            s(queries),
            s(recv),
            s(sent),
            s(xact_us),
            s(xact_us),
            s(wait_us),
            s(xacts / uptime),
            s(queries / uptime),
            s(recv / uptime),
            s(sent / uptime),
            s(avg(xact_us, xacts)),
            s(avg(xact_us, queries)),
            s(avg(wait_us, xacts)),
        ]);
    }
    t
}

const CONNECTION_COLUMNS: &[(&str, u32)] = &[
    ("type", TEXT),
    ("user", TEXT),
    ("database", TEXT),
    ("state", TEXT),
    ("addr", TEXT),
    ("port", INT8),
    ("local_addr", TEXT),
    ("local_port", INT8),
    ("connect_time", TEXT),
    ("request_time", TEXT),
    ("wait", INT8),
    ("wait_us", INT8),
    ("close_needed", INT8),
    ("ptr", TEXT),
    ("link", TEXT),
    ("remote_pid", INT8),
    ("tls", TEXT),
    ("application_name", TEXT),
];

fn time_text(t: SystemTime) -> String {
    stats::epoch_secs(t).to_string()
}

pub fn clients(app: &App) -> Table {
    let port = app.config().general.port;
    // PgBouncer's columns, then what keeps a client's server pinned.
    let mut columns = CONNECTION_COLUMNS.to_vec();
    columns.push(("pinned", TEXT));
    let mut t = Table::new(&columns);
    let rows = stats::connections().clients_in_order();
    for (id, c) in rows {
        let state = c.state().name();
        let wait = c.waiting_micros();
        t.row(vec![
            s("C"),
            s(&c.user),
            s(&c.database),
            s(state),
            s(c.addr.ip()),
            s(c.addr.port()),
            s("0.0.0.0"),
            s(port),
            s(time_text(c.connected_at)),
            s(time_text(c.connected_at)),
            s(wait / 1_000_000),
            s(wait % 1_000_000),
            s(0),
            s(format!("{id:x}")),
            null(),
            s(0),
            null(),
            s(&c.application_name),
            match c.pinned() {
                k if k.is_empty() => null(),
                k => s(k),
            },
        ]);
    }
    t
}

pub fn servers(_app: &App) -> Table {
    let mut t = Table::new(CONNECTION_COLUMNS);
    let mut rows: Vec<_> = stats::connections()
        .servers
        .iter()
        .map(|e| {
            let v = e.value();
            (
                *e.key(),
                v.addr.clone(),
                v.database.clone(),
                v.user.clone(),
                v.connected_at,
                v.remote_pid,
                v.active(),
            )
        })
        .collect();
    rows.sort_by_key(|r| r.0);
    for (id, addr, database, user, connected_at, pid, active) in rows {
        let (host, port) = addr.rsplit_once(':').unwrap_or((addr.as_str(), "0"));
        t.row(vec![
            s("S"),
            s(user),
            s(database),
            s(if active { "active" } else { "idle" }),
            s(host),
            s(port),
            null(),
            null(),
            s(time_text(connected_at)),
            s(time_text(connected_at)),
            s(0),
            s(0),
            s(0),
            s(format!("{id:x}")),
            null(),
            s(pid),
            null(),
            null(),
        ]);
    }
    t
}

pub fn databases(app: &App) -> Table {
    let mut t = Table::new(&[
        ("name", TEXT),
        ("host", TEXT),
        ("port", INT8),
        ("database", TEXT),
        ("force_user", TEXT),
        ("pool_size", INT8),
        ("min_pool_size", INT8),
        ("reserve_pool", INT8),
        ("pool_mode", TEXT),
        ("max_connections", INT8),
        ("current_connections", INT8),
        ("paused", INT8),
        ("disabled", INT8),
    ]);
    for pool in sorted_pools(app) {
        for server in pool.all_servers() {
            let settings = server.settings();
            t.row(vec![
                s(&pool.database),
                s(&server.addr.host),
                s(server.addr.port),
                s(&server.addr.database),
                s(&settings.credentials.user),
                s(settings.pool_size),
                s(settings.min_pool_size),
                s(0),
                s(mode(pool.mode)),
                s(settings.pool_size),
                s(server.active_count() + server.idle_count()),
                s(u8::from(app.is_paused(&pool.database, &pool.user))),
                s(0),
            ]);
        }
    }
    t
}

pub fn users(app: &App) -> Table {
    let mut t = Table::new(&[("name", TEXT), ("pool_mode", TEXT)]);
    let mut seen = std::collections::BTreeSet::new();
    for pool in sorted_pools(app) {
        if seen.insert(pool.user.clone()) {
            t.row(vec![s(&pool.user), s(mode(pool.mode))]);
        }
    }
    t
}

pub fn bans(app: &App) -> Table {
    let mut t = Table::new(&[
        ("host", TEXT),
        ("port", INT8),
        ("database", TEXT),
        ("role", TEXT),
        ("seconds_left", INT8),
    ]);
    for pool in sorted_pools(app) {
        for server in pool.all_servers() {
            if let Some(left) = server.health.ban_remaining() {
                t.row(vec![
                    s(&server.addr.host),
                    s(server.addr.port),
                    s(&server.addr.database),
                    s(role(server.health.role())),
                    s(left.as_secs()),
                ]);
            }
        }
    }
    t
}

pub fn lists(app: &App) -> Table {
    let mut t = Table::new(&[("list", TEXT), ("items", INT8)]);
    let pools = sorted_pools(app);
    let databases: std::collections::BTreeSet<_> = pools.iter().map(|p| &p.database).collect();
    let users: std::collections::BTreeSet<_> = pools.iter().map(|p| &p.user).collect();
    let clients = stats::connections().clients.len();
    let servers = stats::connections().servers.len();
    let used: usize = pools
        .iter()
        .flat_map(|p| p.all_servers())
        .map(|s| s.active_count())
        .sum();
    for (name, n) in [
        ("databases", databases.len()),
        ("users", users.len()),
        ("pools", pools.len()),
        ("free_clients", 0),
        ("used_clients", clients),
        ("login_clients", 0),
        ("free_servers", servers.saturating_sub(used)),
        ("used_servers", used),
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
    ] {
        t.row(vec![s(name), s(n)]);
    }
    t
}

/// The running config, secrets redacted.
pub fn config(app: &App) -> Table {
    let mut t = Table::new(&[
        ("key", TEXT),
        ("value", TEXT),
        ("default", TEXT),
        ("changeable", TEXT),
    ]);
    let config = app.config();
    let g = &config.general;
    let defaults = crate::config::General::default();
    let mut put = |key: &str, value: String, default: String, changeable: bool| {
        t.row(vec![
            s(key),
            s(value),
            s(default),
            s(if changeable { "yes" } else { "no" }),
        ]);
    };
    macro_rules! keys {
        ($($field:ident: $changeable:expr),* $(,)?) => {
            $( put(stringify!($field), format!("{:?}", g.$field), format!("{:?}", defaults.$field), $changeable); )*
        };
    }
    keys!(
        host: false, port: false, connect_timeout: true, idle_timeout: true, server_lifetime: true,
        idle_client_in_transaction_timeout: true, healthcheck_timeout: true, healthcheck_delay: true,
        shutdown_timeout: true, ban_time: true, log_client_connections: true,
        log_client_disconnections: true, worker_threads: false, auth_type: true,
        admin_username: true, enable_prometheus_exporter: false, prometheus_exporter_port: false,
        max_client_conn: true, max_message_size: true, checkout_timeout: true, autoreload: false,
    );
    put("admin_password", "<redacted>".into(), "".into(), true);
    t
}
