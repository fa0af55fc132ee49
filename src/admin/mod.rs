//! The admin console: database `pgcat`, `pgbouncer` or `pgmlcat`, admin
//! credentials only, simple query protocol. Each SHOW has its own function
//! in `show`; control commands are here.

pub mod ml;
mod pgcat;
pub mod show;
pub mod table;

use std::sync::Arc;
use std::time::Duration;

use crate::net::stream::Stream;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::app::{App, Shutdown};
use crate::errors::{Error, Result, Severity};
use crate::net::codec;
use crate::net::messages::{self, TxStatus};
use crate::net::tag::client;

pub const DATABASES: &[&str] = &["pgcat", "pgbouncer", "pgmlcat"];

pub fn is_admin_database(db: &str) -> bool {
    DATABASES.contains(&db)
}

/// Whose columns and units SHOW POOLS, STATS and CLIENTS answer with: the
/// admin database the client named decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `pgbouncer` and `pgmlcat`: PgBouncer's (pgbouncer_exporter reads them).
    PgBouncer,
    /// `pgcat`: pgcat's.
    Pgcat,
}

impl Dialect {
    pub fn of(database: &str) -> Dialect {
        if database == "pgcat" {
            Dialect::Pgcat
        } else {
            Dialect::PgBouncer
        }
    }
}

/// Runs an admin session after login until the client leaves.
pub async fn serve(
    app: Arc<App>,
    mut stream: Stream,
    mut buf: BytesMut,
    dialect: Dialect,
) -> Result<()> {
    let mut out = BytesMut::new();
    let mut skip_until_sync = false;
    loop {
        let Some(h) = codec::header(&buf, 1 << 20)? else {
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
            continue;
        };
        if buf.len() < h.total {
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
            continue;
        }
        let mut msg = buf.split_to(h.total);
        msg.advance(codec::HEADER_LEN);
        match h.tag {
            client::TERMINATE => return Ok(()),
            client::QUERY => {
                let (sql, _) = codec::cstr(&msg, 0)?;
                let sql = sql.to_string();
                if let Err(e) = run(&app, dialect, &sql, &mut out).await {
                    if dialect == Dialect::Pgcat && matches!(e, Error::Config(_)) {
                        // pgcat ends the console session on a rejected
                        // RELOAD (its tools expect the connection to go).
                        messages::error_with_severity(&mut out, &e, Severity::Fatal);
                        stream.write_all(&out).await?;
                        return Ok(());
                    }
                    messages::error_response(&mut out, &e);
                }
                messages::ready_for_query(&mut out, TxStatus::Idle);
            }
            client::SYNC => {
                skip_until_sync = false;
                messages::ready_for_query(&mut out, TxStatus::Idle);
            }
            _ if skip_until_sync => {}
            _ => {
                skip_until_sync = true;
                let e = Error::Unsupported(
                    "the admin console speaks the simple query protocol only".into(),
                );
                messages::error_response(&mut out, &e);
            }
        }
        stream.write_all(&out).await?;
        out.clear();
        if app.shutdown_state() == Shutdown::Fast {
            return Ok(());
        }
    }
}

/// Runs one admin statement, writing its result to `out`.
async fn run(app: &App, dialect: Dialect, sql: &str, out: &mut BytesMut) -> Result<()> {
    let text = sql.trim().trim_end_matches(';').trim();
    let words: Vec<&str> = text.split_whitespace().collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let kw: Vec<&str> = upper.iter().map(String::as_str).collect();
    match kw.as_slice() {
        ["SHOW", what] => {
            let pgcat = dialect == Dialect::Pgcat;
            let table = match *what {
                "HELP" => show::help(),
                "POOLS" if pgcat => pgcat::pools(app),
                "POOLS" => show::pools(app),
                "STATS" if pgcat => pgcat::stats(app),
                "STATS" => show::stats(app),
                "SERVERS" => show::servers(app),
                "CLIENTS" if pgcat => pgcat::clients(app),
                "CLIENTS" => show::clients(app),
                "DATABASES" => show::databases(app),
                "USERS" => show::users(app),
                "CONFIG" => show::config(app),
                "BANS" => show::bans(app),
                "LISTS" => show::lists(app),
                "VERSION" => show::version(),
                "PROJECTS" => ml::projects(app).await?,
                "MODELS" => ml::models(app),
                "TRAININGS" => ml::trainings(app),
                "SCHEDULES" => ml::schedules(app).await?,
                other => {
                    return Err(Error::Admin(format!(
                        "Unsupported SHOW command {other}; see SHOW HELP"
                    )))
                }
            };
            table.write(out, "SHOW");
        }
        ["SET", ..] => messages::command_complete(out, "SET"),
        ["RELOAD"] => {
            tracing::info!("Reloading config (admin RELOAD)");
            let notes = app.reload().map_err(|errors| {
                for e in &errors {
                    tracing::error!("admin RELOAD rejected, keeping the running config: {e}");
                }
                Error::Config(errors.join("; "))
            })?;
            for n in notes {
                messages::notice(out, &n);
            }
            messages::command_complete(out, "RELOAD");
        }
        ["PAUSE", ..] => {
            let (db, user) = target(&words[1..]);
            known_pool(app, db.as_deref(), user.as_deref())?;
            app.pause(db.clone(), user.clone());
            if !app
                .wait_idle(db.as_deref(), user.as_deref(), Duration::from_secs(60))
                .await
            {
                messages::notice(out, "PAUSE: transactions still running after 60 s");
            }
            messages::command_complete(out, "PAUSE");
        }
        ["RESUME", ..] => {
            let (db, user) = target(&words[1..]);
            known_pool(app, db.as_deref(), user.as_deref())?;
            app.resume(db.as_deref(), user.as_deref());
            messages::command_complete(out, "RESUME");
        }
        ["SHUTDOWN"] if dialect == Dialect::Pgcat => {
            // pgcat's: a graceful shutdown, as SIGINT, answered with a row.
            tracing::info!("admin SHUTDOWN: graceful shutdown");
            app.stop_gracefully();
            let mut t = table::Table::new(&[("success", table::TEXT)]);
            t.row(vec![table::s("t")]);
            t.write(out, "SHUTDOWN");
        }
        ["SHUTDOWN"] => {
            tracing::info!("admin SHUTDOWN");
            app.shutdown.send_replace(Shutdown::Fast);
            messages::command_complete(out, "SHUTDOWN");
        }
        ["BAN", ..] | ["UNBAN", ..] => ban(app, kw[0] == "BAN", &words[1..], out)?,
        // Only an empty string is an empty query: `;;;` is not a command.
        [] if sql.trim().is_empty() => messages::empty_query(out),
        _ => {
            return Err(Error::Admin(format!(
                "Unsupported admin command {:?}; see SHOW HELP",
                sql.trim()
            )))
        }
    }
    Ok(())
}

/// `db[,user]` (PgBouncer's PAUSE/RESUME argument).
fn target(args: &[&str]) -> (Option<String>, Option<String>) {
    let Some(arg) = args.first() else {
        return (None, None);
    };
    match arg.split_once(',') {
        Some((db, user)) => (Some(db.to_string()), Some(user.to_string())),
        None => (Some(arg.to_string()), None),
    }
}

/// PAUSE/RESUME of a database (and user) that no pool serves is an error,
/// as in pgcat.
fn known_pool(app: &App, db: Option<&str>, user: Option<&str>) -> Result<()> {
    let Some(db) = db else {
        return Ok(());
    };
    let registry = app.registry.load();
    let known = registry
        .pools()
        .any(|p| p.database == db && user.is_none_or(|u| p.user == u));
    if known {
        return Ok(());
    }
    Err(Error::Admin(match user {
        Some(u) => format!("no pool configured for database {db:?}, user {u:?}"),
        None => format!("no pool configured for database {db:?}"),
    }))
}

/// What a BAN or UNBAN names.
enum BanTarget<'a> {
    /// Every server on a host (pgcat's `BAN host seconds`, `UNBAN host`).
    Host(&'a str),
    /// One server (pgmlcat's `BAN host port seconds`, `UNBAN host port`).
    Server(&'a str, u16),
}

/// `BAN host seconds` / `UNBAN host` as in pgcat (the server writes go to
/// is never banned and not listed), `BAN host port seconds` / `UNBAN host
/// port` for one server (the primary is refused). Answers
/// with the servers whose state changed: db, user, role, host (pgcat's
/// columns) and port.
fn ban(app: &App, banning: bool, args: &[&str], out: &mut BytesMut) -> Result<()> {
    let usage = || {
        Error::Admin("usage: BAN host seconds | BAN host port seconds | UNBAN host [port]".into())
    };
    let number = |s: &str| s.parse::<u64>().map_err(|_| usage());
    let (target, seconds) = match (banning, args) {
        (true, [host, seconds]) => (BanTarget::Host(host), number(seconds)?),
        (true, [host, port, seconds]) => {
            let port = u16::try_from(number(port)?).map_err(|_| usage())?;
            (BanTarget::Server(host, port), number(seconds)?)
        }
        (false, [host]) => (BanTarget::Host(host), 0),
        (false, [host, port]) => {
            let port = u16::try_from(number(port)?).map_err(|_| usage())?;
            (BanTarget::Server(host, port), 0)
        }
        _ => return Err(usage()),
    };
    if banning && seconds == 0 {
        return Err(Error::Admin("the ban's seconds must be more than 0".into()));
    }
    let mut t = table::Table::new(&[
        ("db", table::TEXT),
        ("user", table::TEXT),
        ("role", table::TEXT),
        ("host", table::TEXT),
        ("port", table::INT8),
    ]);
    let registry = app.registry.load();
    let mut matched = 0;
    for pool in registry.pools() {
        for server in pool.all_servers() {
            let addr = &server.addr;
            let hit = match target {
                BanTarget::Host(h) => h == addr.host,
                BanTarget::Server(h, p) => h == addr.host && p == addr.port,
            };
            if !hit {
                continue;
            }
            matched += 1;
            let role = server.health.role();
            let changed = if banning {
                if server.health.writer() {
                    if let BanTarget::Server(..) = target {
                        return Err(Error::Admin(format!(
                            "{addr} is the primary; the primary is never banned"
                        )));
                    }
                    false
                } else {
                    !server.health.banned() && server.health.ban(Duration::from_secs(seconds))
                }
            } else {
                let was = server.health.banned();
                server.health.unban();
                was
            };
            if changed {
                let role = match role {
                    crate::config::Role::Primary => "primary",
                    crate::config::Role::Replica => "replica",
                };
                t.row(vec![
                    Some(pool.database.clone()),
                    Some(pool.user.clone()),
                    Some(role.to_string()),
                    Some(addr.host.clone()),
                    Some(addr.port.to_string()),
                ]);
            }
        }
    }
    if matched == 0 {
        return Err(Error::Admin("no server on that host".into()));
    }
    t.write(out, if banning { "BAN" } else { "UNBAN" });
    Ok(())
}

/// The admin login's secret; None for any other user or an empty admin
/// password (the exchange still runs, so those fail as a wrong password).
pub fn admin_secret(app: &App, user: &str) -> Option<crate::net::auth::Secret> {
    let config = app.config();
    let g = &config.general;
    (!g.admin_password.is_empty() && user == g.admin_username)
        .then(|| crate::net::auth::Secret::parse(&g.admin_password))
}
