//! What every connection task shares: the live pool registry, cancel keys,
//! client counts and the shutdown signal.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::{watch, Notify};

use crate::backend::Registry;
use crate::config::{self, Config};
use crate::frontend::cancel::CancelRegistry;
use crate::ml::service::Ml;

fn client_tls(config: &Config) -> Result<Option<tokio_rustls::TlsAcceptor>, Vec<String>> {
    match (
        &config.general.tls_certificate,
        &config.general.tls_private_key,
    ) {
        (Some(cert), Some(key)) => crate::net::tls::acceptor(cert, key)
            .map(Some)
            .map_err(|e| vec![e]),
        _ => Ok(None),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    Running,
    /// Stop accepting; let clients finish their transactions.
    Graceful,
    /// Close everything now.
    Fast,
}

pub struct App {
    pub registry: ArcSwap<Registry>,
    /// Accepts clients' SSLRequest (None: TLS not configured, answer 'N').
    pub tls: ArcSwapOption<tokio_rustls::TlsAcceptor>,
    pub config_path: PathBuf,
    pub cancels: Arc<CancelRegistry>,
    pub clients: AtomicUsize,
    pub shutdown: watch::Sender<Shutdown>,
    pub started: Instant,
    /// pgml.* for every pool: settings, training slots, model cache, stats.
    pub ml: Arc<Ml>,
    pause: Pause,
    /// A graceful shutdown with `so_reuseport` asks the listener to hand
    /// new connections to the next process; it closes, then shuts down.
    pub handoff: Notify,
}

/// PgBouncer's PAUSE: (database, user) patterns, None matching any.
#[derive(Default)]
struct Pause {
    any: AtomicBool,
    patterns: parking_lot::RwLock<Vec<(Option<String>, Option<String>)>>,
    resumed: Notify,
}

impl App {
    /// Fails with the reasons when TLS files cannot be loaded.
    pub fn new(config: Config, config_path: PathBuf) -> Result<Arc<App>, Vec<String>> {
        let tls = client_tls(&config)?;
        keepalives(&config);
        let ml = Ml::new(&config.ml);
        let registry = Registry::build(Arc::new(config), None)?;
        Ok(Arc::new(App {
            ml,
            registry: ArcSwap::from_pointee(registry),
            tls: ArcSwapOption::new(tls.map(Arc::new)),
            config_path,
            cancels: Arc::new(CancelRegistry::default()),
            clients: AtomicUsize::new(0),
            shutdown: watch::channel(Shutdown::Running).0,
            started: Instant::now(),
            pause: Pause::default(),
            handoff: Notify::new(),
        }))
    }

    /// Begins a graceful shutdown (SIGINT, the pgcat console's SHUTDOWN).
    /// With `so_reuseport` the listener first hands new connections to the
    /// process started beside this one and closes, so none is refused;
    /// clients then finish their transactions as in any graceful shutdown.
    pub fn stop_gracefully(&self) {
        if self.config().general.so_reuseport {
            self.handoff.notify_one(); // the listener goes on from there
        } else {
            self.shutdown.send_replace(Shutdown::Graceful);
        }
    }

    pub fn config(&self) -> Arc<Config> {
        self.registry.load().config.clone()
    }

    /// Re-reads the config file and swaps in new pools. An invalid file
    /// changes nothing and the reasons are returned.
    pub fn reload(&self) -> Result<Vec<String>, Vec<String>> {
        let loaded = config::load_file(&self.config_path)?;
        let old = self.registry.load_full();
        let (g_old, g_new) = (&old.config.general, &loaded.config.general);
        let mut notes = loaded.warnings;
        if g_old.host != g_new.host || g_old.port != g_new.port {
            notes.push(
                "host/port changes need a restart; still listening on the old address".into(),
            );
        }
        // Certificates are re-read too, so a renewed one takes effect on SIGHUP.
        let tls = client_tls(&loaded.config)?;
        let ml_config = loaded.config.ml.clone();
        keepalives(&loaded.config);
        let registry = Registry::build(Arc::new(loaded.config), Some(&old))?;
        self.registry.store(Arc::new(registry));
        old.retire();
        self.ml.update(&ml_config);
        self.tls.store(tls.map(Arc::new));
        Ok(notes)
    }

    pub fn pause(&self, database: Option<String>, user: Option<String>) {
        self.pause.patterns.write().push((database, user));
        self.pause.any.store(true, Ordering::SeqCst);
    }

    pub fn resume(&self, database: Option<&str>, user: Option<&str>) {
        let mut patterns = self.pause.patterns.write();
        if database.is_none() {
            patterns.clear();
        } else {
            patterns.retain(|(d, u)| {
                !(d.as_deref() == database && (user.is_none() || u.as_deref() == user))
            });
        }
        self.pause.any.store(!patterns.is_empty(), Ordering::SeqCst);
        drop(patterns);
        self.pause.resumed.notify_waiters();
    }

    pub fn is_paused(&self, database: &str, user: &str) -> bool {
        self.pause.any.load(Ordering::Relaxed)
            && self.pause.patterns.read().iter().any(|(d, u)| {
                d.as_deref().is_none_or(|d| d == database) && u.as_deref().is_none_or(|u| u == user)
            })
    }

    /// Whether any pool may be paused (a relaxed read: PAUSE is rare).
    pub fn maybe_paused(&self) -> bool {
        self.pause.any.load(Ordering::Relaxed)
    }

    /// Waits while the pool is paused. Free when nothing is paused.
    pub async fn wait_unpaused(&self, database: &str, user: &str) {
        if !self.pause.any.load(Ordering::Relaxed) {
            return;
        }
        loop {
            let resumed = self.pause.resumed.notified();
            if !self.is_paused(database, user) {
                return;
            }
            resumed.await;
        }
    }

    /// Waits until no server of the matching pools is in use; false on timeout.
    pub async fn wait_idle(
        &self,
        database: Option<&str>,
        user: Option<&str>,
        limit: Duration,
    ) -> bool {
        let started = Instant::now();
        loop {
            let registry = self.registry.load();
            let busy: usize = registry
                .pools()
                .filter(|p| {
                    database.is_none_or(|d| d == p.database) && user.is_none_or(|u| u == p.user)
                })
                .flat_map(|p| p.all_servers())
                .map(|s| s.active_count())
                .sum();
            if busy == 0 {
                return true;
            }
            if started.elapsed() > limit {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn shutdown_state(&self) -> Shutdown {
        *self.shutdown.borrow()
    }

    pub fn client_count(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }
}

/// The TCP keepalives every new client and server socket gets.
fn keepalives(config: &Config) {
    let g = &config.general;
    crate::net::socket::set_keepalives(
        g.tcp_keepalives_idle,
        g.tcp_keepalives_interval,
        g.tcp_keepalives_count,
    );
}
