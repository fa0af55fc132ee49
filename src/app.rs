//! What every connection task shares: the live pool registry, cancel keys,
//! client counts and the shutdown signal.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::backend::Registry;
use crate::config::{self, Config};
use crate::frontend::cancel::CancelRegistry;

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
    pub config_path: PathBuf,
    pub cancels: Arc<CancelRegistry>,
    pub clients: AtomicUsize,
    pub shutdown: watch::Sender<Shutdown>,
}

impl App {
    pub fn new(config: Config, config_path: PathBuf) -> Arc<App> {
        let registry = Registry::build(Arc::new(config), None);
        Arc::new(App {
            registry: ArcSwap::from_pointee(registry),
            config_path,
            cancels: Arc::new(CancelRegistry::default()),
            clients: AtomicUsize::new(0),
            shutdown: watch::channel(Shutdown::Running).0,
        })
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
        let registry = Registry::build(Arc::new(loaded.config), Some(&old));
        self.registry.store(Arc::new(registry));
        Ok(notes)
    }

    pub fn shutdown_state(&self) -> Shutdown {
        *self.shutdown.borrow()
    }

    pub fn client_count(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }
}
