//! `/metrics` in Prometheus text format. Values are read from pgmlcat's own
//! counters at scrape time and rendered by metrics-exporter-prometheus; the
//! hot path never touches a metrics registry.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge, with_local_recorder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{connections, ClientState, Counters};
use crate::app::App;
use crate::backend::held::Kinds;
use crate::config::Role;

/// Serves /metrics until the process ends.
pub async fn serve(app: Arc<App>, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), respond(&app, stream)).await;
        });
    }
}

async fn respond(app: &App, mut stream: TcpStream) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&chunk[..n]);
    }
    let wanted = request.starts_with(b"GET /metrics ") || request.starts_with(b"GET / ");
    let (status, body) = if wanted {
        ("200 OK", render(app))
    } else {
        ("404 Not Found", "not found: try /metrics\n".to_string())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Copies pgmlcat's counters into the recorder (which also holds the ML
/// metrics, recorded as they happen) and renders them.
pub fn render(app: &App) -> String {
    let recorder = app.ml.metrics.recorder();
    with_local_recorder(recorder, || collect(app));
    recorder.handle().render()
}

fn collect(app: &App) {
    let pools = app.registry.load();
    for pool in pools.pools() {
        let (db, user) = (pool.database.clone(), pool.user.clone());
        let c = &pool.counters;
        for (name, v) in [
            ("pgmlcat_transactions_total", &c.xacts),
            ("pgmlcat_queries_total", &c.queries),
            ("pgmlcat_bytes_received_total", &c.bytes_received),
            ("pgmlcat_bytes_sent_total", &c.bytes_sent),
            ("pgmlcat_client_errors_total", &c.errors),
        ] {
            counter!(name, "database" => db.clone(), "user" => user.clone())
                .absolute(Counters::get(v));
        }
        gauge!("pgmlcat_transaction_seconds_total", "database" => db.clone(), "user" => user.clone())
            .set(Counters::get(&c.xact_micros) as f64 / 1e6);
        let mut states = [0u64; 3];
        // Pinned clients by what pins them (a client may count under more
        // than one reason).
        let mut pinned = [0u64; 4];
        for client in connections().clients.iter() {
            if client.database == pool.database && client.user == pool.user {
                states[client.state() as usize] += 1;
                for (i, kind) in Kinds::ALL.iter().enumerate() {
                    if client.pinned().contains(*kind) {
                        pinned[i] += 1;
                    }
                }
            }
        }
        for (kind, n) in Kinds::ALL.iter().zip(pinned) {
            let reason = kind.names().next().unwrap_or_default();
            gauge!("pgmlcat_clients_pinned", "database" => db.clone(), "user" => user.clone(), "reason" => reason)
                .set(n as f64);
        }
        for (state, n) in [
            (ClientState::Idle, states[0]),
            (ClientState::Waiting, states[1]),
            (ClientState::Active, states[2]),
        ] {
            gauge!("pgmlcat_clients", "database" => db.clone(), "user" => user.clone(), "state" => state.name())
                .set(n as f64);
        }
        for server in pool.all_servers() {
            let labels = [
                ("database", db.clone()),
                ("user", user.clone()),
                ("host", server.addr.host.clone()),
                ("port", server.addr.port.to_string()),
                ("shard", server.addr.shard.to_string()),
            ];
            let role = match server.health.role() {
                Role::Primary => "primary",
                Role::Replica => "replica",
            };
            let with = |extra: &[(&'static str, String)]| {
                let mut l: Vec<(&'static str, String)> = labels.to_vec();
                l.extend_from_slice(extra);
                l
            };
            gauge!(
                "pgmlcat_server_connections",
                &with(&[("state", "active".into())])
            )
            .set(server.active_count() as f64);
            gauge!(
                "pgmlcat_server_connections",
                &with(&[("state", "idle".into())])
            )
            .set(server.idle_count() as f64);
            gauge!("pgmlcat_server_banned", &with(&[("role", role.into())]))
                .set(f64::from(u8::from(server.health.banned())));
            gauge!("pgmlcat_server_lagging", &with(&[("role", role.into())]))
                .set(f64::from(u8::from(server.health.lagging())));
            let st = &server.stats;
            for (name, v) in [
                (
                    "pgmlcat_server_checkouts_total",
                    st.checkouts.load(Ordering::Relaxed),
                ),
                (
                    "pgmlcat_server_connects_total",
                    st.connects.load(Ordering::Relaxed),
                ),
                (
                    "pgmlcat_server_connect_errors_total",
                    st.connect_errors.load(Ordering::Relaxed),
                ),
                (
                    "pgmlcat_pool_exhausted_total",
                    st.exhausted.load(Ordering::Relaxed),
                ),
            ] {
                counter!(name, &with(&[])).absolute(v);
            }
            gauge!("pgmlcat_checkout_wait_seconds_total", &with(&[]))
                .set(st.wait_micros.load(Ordering::Relaxed) as f64 / 1e6);
        }
    }
    gauge!("pgmlcat_uptime_seconds").set(app.started.elapsed().as_secs_f64());
}
