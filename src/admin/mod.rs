//! The admin console: database `pgcat`, `pgbouncer` or `pgmlcat`, admin
//! credentials only, simple query protocol. Each SHOW has its own function
//! in `show`; control commands are here.

mod ml;
mod show;
mod table;

use std::sync::Arc;
use std::time::Duration;

use crate::net::stream::Stream;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::app::{App, Shutdown};
use crate::errors::{Error, Result};
use crate::net::codec;
use crate::net::messages::{self, TxStatus};
use crate::net::tag::client;

pub const DATABASES: &[&str] = &["pgcat", "pgbouncer", "pgmlcat"];

pub fn is_admin_database(db: &str) -> bool {
    DATABASES.contains(&db)
}

/// Runs an admin session after login until the client leaves.
pub async fn serve(app: Arc<App>, mut stream: Stream, mut buf: BytesMut) -> Result<()> {
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
                if let Err(e) = run(&app, &sql, &mut out).await {
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
async fn run(app: &App, sql: &str, out: &mut BytesMut) -> Result<()> {
    let text = sql.trim().trim_end_matches(';').trim();
    let words: Vec<&str> = text.split_whitespace().collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let kw: Vec<&str> = upper.iter().map(String::as_str).collect();
    match kw.as_slice() {
        ["SHOW", what] => {
            let table = match *what {
                "HELP" => show::help(),
                "POOLS" => show::pools(app),
                "STATS" => show::stats(app),
                "SERVERS" => show::servers(app),
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
                other => {
                    return Err(Error::Unsupported(format!(
                        "unknown SHOW command {other}; see SHOW HELP"
                    )))
                }
            };
            table.write(out, "SHOW");
        }
        ["SET", ..] => messages::command_complete(out, "SET"),
        ["RELOAD"] => {
            let notes = app
                .reload()
                .map_err(|errors| Error::Config(errors.join("; ")))?;
            for n in notes {
                messages::notice(out, &n);
            }
            messages::command_complete(out, "RELOAD");
        }
        ["PAUSE", ..] => {
            let (db, user) = target(&words[1..]);
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
            app.resume(db.as_deref(), user.as_deref());
            messages::command_complete(out, "RESUME");
        }
        ["SHUTDOWN"] => {
            tracing::info!("admin SHUTDOWN");
            app.shutdown.send_replace(Shutdown::Fast);
            messages::command_complete(out, "SHUTDOWN");
        }
        ["BAN", ..] | ["UNBAN", ..] => ban(app, kw[0] == "BAN", &words[1..], out)?,
        [] => messages::empty_query(out),
        _ => {
            return Err(Error::Unsupported(format!(
                "unknown admin command {text:?}; see SHOW HELP"
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

/// BAN host port [seconds] / UNBAN [host port].
fn ban(app: &App, banning: bool, args: &[&str], out: &mut BytesMut) -> Result<()> {
    let usage =
        || Error::InvalidParameter("usage: BAN host port [seconds] | UNBAN [host port]".into());
    let (host, port) = match args {
        [] if !banning => (None, None),
        [host, port, ..] => (Some(*host), Some(port.parse::<u16>().map_err(|_| usage())?)),
        _ => return Err(usage()),
    };
    let seconds = match args.get(2) {
        Some(s) => Some(s.parse::<u64>().map_err(|_| usage())?),
        None => None,
    };
    let registry = app.registry.load();
    let mut matched = 0;
    for pool in registry.pools() {
        for server in pool.all_servers() {
            if host.is_some_and(|h| h != server.addr.host)
                || port.is_some_and(|p| p != server.addr.port)
            {
                continue;
            }
            matched += 1;
            if banning {
                let t = seconds.map_or_else(|| server.settings().ban_time, Duration::from_secs);
                if !server.health.ban(t) {
                    return Err(Error::InvalidParameter(format!(
                        "{} is a primary; primaries are never banned",
                        server.addr
                    )));
                }
            } else {
                server.health.unban();
            }
        }
    }
    if matched == 0 && host.is_some() {
        return Err(Error::InvalidParameter("no such server".into()));
    }
    messages::command_complete(out, if banning { "BAN" } else { "UNBAN" });
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
