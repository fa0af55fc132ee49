//! Process-level tasks: signals, pool maintenance, config autoreload, and
//! the orderly end of the process.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::app::{App, Shutdown};

/// Listens, serves, and returns when the process should exit.
pub async fn run(app: Arc<App>, listener: TcpListener) -> std::io::Result<()> {
    tokio::spawn(crate::frontend::listener::serve(app.clone(), listener));
    tokio::spawn(maintain_pools(app.clone()));
    tokio::spawn(sample_freshness(app.clone()));
    let general = app.config().general.clone();
    if let Some(ms) = general.autoreload.and_then(|a| a.interval_ms()) {
        tokio::spawn(autoreload(app.clone(), Duration::from_millis(ms)));
    }
    if general.enable_prometheus_exporter {
        let addr = format!("{}:{}", general.host, general.prometheus_exporter_port);
        let metrics = TcpListener::bind(&addr).await?;
        tracing::info!("Prometheus metrics on http://{addr}/metrics");
        tokio::spawn(crate::stats::prometheus::serve(app.clone(), metrics));
    }
    if let Some(port) = general.dashboard_port.filter(|&p| p != 0) {
        let addr = format!("{}:{port}", general.host);
        let dashboard = TcpListener::bind(&addr).await?;
        tracing::info!("dashboard on http://{addr}/ (admin credentials)");
        tokio::spawn(crate::dashboard::serve(app.clone(), dashboard));
    }
    let mut stopped = app.shutdown.subscribe();
    let mut hup = signal(SignalKind::hangup())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = hup.recv() => reload(&app, "SIGHUP"),
            _ = int.recv() => {
                tracing::info!("SIGINT: graceful shutdown");
                app.stop_gracefully();
            }
            _ = term.recv() => {
                tracing::info!("SIGTERM: fast shutdown");
                app.shutdown.send_replace(Shutdown::Fast);
                return Ok(());
            }
            _ = stopped.changed() => {
                // SIGINT, or the admin console's SHUTDOWN (graceful on
                // `pgcat`, as pgcat's; fast on `pgbouncer`, as PgBouncer's).
                let now = *stopped.borrow_and_update();
                match now {
                    Shutdown::Running => {}
                    Shutdown::Graceful => {
                        graceful_shutdown(&app).await;
                        return Ok(());
                    }
                    Shutdown::Fast => return Ok(()),
                }
            }
        }
    }
}

pub fn reload(app: &App, why: &str) {
    match app.reload() {
        Ok(notes) => {
            for n in notes {
                tracing::warn!("{n}");
            }
            tracing::info!("{why}: configuration reloaded");
        }
        Err(errors) => {
            for e in errors {
                tracing::error!("{why}: reload rejected, keeping the running config: {e}");
            }
        }
    }
}

/// Shutdown has begun (new pool clients are refused; the admin console
/// still works): lets clients finish their transactions for up to
/// `shutdown_timeout`, then returns so the process can exit. Idle clients
/// are closed at once; admin sessions do not hold the exit up.
async fn graceful_shutdown(app: &App) {
    let limit = Duration::from_millis(app.config().general.shutdown_timeout);
    let started = Instant::now();
    let left = || crate::stats::connections().pool_clients();
    while left() > 0 && started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if left() > 0 {
        tracing::warn!(
            clients = left(),
            "shutdown_timeout reached; closing remaining clients"
        );
    }
    app.shutdown.send_replace(Shutdown::Fast);
}

/// Samples replication positions every `freshness::POLL` for the pools
/// whose clients need fresh replicas now (a write's replay to wait for, a
/// lag bound), and rests while none does.
async fn sample_freshness(app: Arc<App>) {
    use crate::backend::freshness;
    loop {
        let registry = app.registry.load_full();
        let wanted: Vec<_> = registry
            .pools()
            .filter(|p| p.clock.wanted())
            .cloned()
            .collect();
        drop(registry);
        if wanted.is_empty() {
            // Woken by the first client that needs it; the timeout only
            // guards against a wake-up lost to a race.
            let _ =
                tokio::time::timeout(Duration::from_secs(1), freshness::wake().notified()).await;
            continue;
        }
        futures_util::future::join_all(wanted.iter().map(|p| p.sample_freshness())).await;
        tokio::time::sleep(freshness::POLL).await;
    }
}

async fn maintain_pools(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let registry = app.registry.load_full();
        let pools: Vec<_> = registry.pools().cloned().collect();
        // Pools are independent: one slow server must not hold up the rest.
        futures_util::future::join_all(pools.iter().map(|pool| async move {
            pool.monitor().await;
            for server_pool in pool.all_servers() {
                server_pool.maintain().await;
            }
        }))
        .await;
    }
}

async fn autoreload(app: Arc<App>, every: Duration) {
    let modified = |app: &App| -> Option<SystemTime> {
        std::fs::metadata(&app.config_path)
            .and_then(|m| m.modified())
            .ok()
    };
    let mut last = modified(&app);
    loop {
        tokio::time::sleep(every).await;
        let now = modified(&app);
        if now != last {
            last = now;
            reload(&app, "autoreload");
        }
    }
}
