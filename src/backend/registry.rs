//! The pools clients can reach, keyed by (database, user), built from a
//! config. A reload builds a new registry that keeps every server pool whose
//! address is unchanged, so their connections and waiting clients survive.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;

use super::pool::{PoolSettings, ServerPool};
use super::server::{Address, Credentials};
use crate::config::{Config, PoolConfig, PoolMode, Role, UserConfig};
use crate::errors::Result;
use crate::net::auth::Secret;

/// A (database, user) pool as clients see it.
pub struct Pool {
    pub database: String,
    pub user: String,
    pub mode: PoolMode,
    /// The client-side secret (None: the user has no password; only trust works).
    pub secret: Option<Secret>,
    /// shards[i] = the servers of shard i, primary first.
    pub shards: Vec<Vec<Arc<ServerPool>>>,
    /// ParameterStatus values clients get at login, learned from a server.
    server_params: ArcSwapOption<Vec<(String, String)>>,
}

impl Pool {
    /// The server pool writes go to on `shard`: its primary, else its first server.
    pub fn primary(&self, shard: usize) -> &Arc<ServerPool> {
        let servers = &self.shards[shard];
        servers
            .iter()
            .find(|s| s.addr.role == Role::Primary)
            .unwrap_or(&servers[0])
    }

    /// The parameters a server reports at startup, fetched once per pool.
    pub async fn server_params(&self) -> Result<Arc<Vec<(String, String)>>> {
        if let Some(p) = self.server_params.load_full() {
            return Ok(p);
        }
        let pool = self.primary(0);
        let pooled = pool.checkout().await?;
        let mut params: Vec<(String, String)> = pooled
            .server
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        params.sort();
        pool.checkin(pooled);
        let params = Arc::new(params);
        self.server_params.store(Some(params.clone()));
        Ok(params)
    }

    pub fn all_servers(&self) -> impl Iterator<Item = &Arc<ServerPool>> {
        self.shards.iter().flatten()
    }
}

pub struct Registry {
    pub config: Arc<Config>,
    pools: HashMap<(String, String), Arc<Pool>>,
    databases: HashSet<String>,
}

impl Registry {
    pub fn get(&self, database: &str, user: &str) -> Option<&Arc<Pool>> {
        self.pools.get(&(database.to_string(), user.to_string()))
    }

    pub fn has_database(&self, database: &str) -> bool {
        self.databases.contains(database)
    }

    pub fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.pools.values()
    }

    /// Builds the registry for `config`, reusing server pools (and so their
    /// connections) from `old` where the address and server login are the same.
    pub fn build(config: Arc<Config>, old: Option<&Registry>) -> Registry {
        let mut pools = HashMap::new();
        let mut databases = HashSet::new();
        for (db, pool_cfg) in &config.pools {
            databases.insert(db.clone());
            for user in pool_cfg.users.values() {
                let previous = old.and_then(|o| o.get(db, &user.username));
                let pool = build_pool(&config, db, pool_cfg, user, previous);
                pools.insert((db.clone(), user.username.clone()), Arc::new(pool));
            }
        }
        Registry {
            config,
            pools,
            databases,
        }
    }
}

fn settings_for(config: &Config, pool: &PoolConfig, user: &UserConfig) -> PoolSettings {
    let ms = Duration::from_millis;
    let server_user = user
        .server_username
        .clone()
        .unwrap_or_else(|| user.username.clone());
    let server_secret = user
        .server_password
        .as_deref()
        .or(user.password.as_deref())
        .map(Secret::parse);
    let mut server_params = Vec::new();
    if user.statement_timeout > 0 {
        server_params.push((
            "statement_timeout".to_string(),
            user.statement_timeout.to_string(),
        ));
    }
    PoolSettings {
        pool_size: user.pool_size,
        min_pool_size: user.min_pool_size.unwrap_or(0),
        mode: user.pool_mode.unwrap_or(pool.pool_mode),
        connect_timeout: ms(config.connect_timeout(pool, user)),
        checkout_timeout: ms(config.checkout_timeout(pool, user)),
        idle_timeout: ms(config.idle_timeout(pool, user)),
        server_lifetime: ms(config.server_lifetime(pool, user)),
        server_params,
        credentials: Credentials {
            md5: server_secret.as_ref().and_then(|s| s.md5_for(&server_user)),
            password: server_secret
                .as_ref()
                .and_then(|s| s.plain().map(str::to_string)),
            user: server_user,
        },
        prepared_cache_size: pool
            .prepared_statements_cache_size
            .unwrap_or(config.general.prepared_statements_cache_size),
        cleanup_server_connections: pool.cleanup_server_connections,
    }
}

fn build_pool(
    config: &Config,
    db: &str,
    pool_cfg: &PoolConfig,
    user: &UserConfig,
    previous: Option<&Arc<Pool>>,
) -> Pool {
    let settings = settings_for(config, pool_cfg, user);
    let name = format!("{db}/{}", user.username);
    let mut shards = Vec::new();
    for (shard_index, shard) in pool_cfg.shards_in_order().into_iter().enumerate() {
        let mut servers = Vec::new();
        // Primary first, so index 0 is where writes go when there is one.
        let mut listed: Vec<_> = shard.servers.iter().collect();
        listed.sort_by_key(|s| s.2 != Role::Primary);
        for (host, port, role) in listed {
            let addr = Address {
                host: host.clone(),
                port: *port,
                database: shard.database.clone(),
                role: *role,
                shard: shard_index,
            };
            let reused = previous
                .and_then(|p| p.all_servers().find(|s| *s.addr == addr))
                .cloned();
            let server_pool = match reused {
                Some(sp) => {
                    sp.update(settings.clone());
                    sp
                }
                None => ServerPool::new(Arc::new(addr), name.clone(), settings.clone()),
            };
            servers.push(server_pool);
        }
        shards.push(servers);
    }
    let keep_params = previous
        .filter(|p| p.shards.len() == shards.len() && Arc::ptr_eq(p.primary(0), &shards[0][0]))
        .and_then(|p| p.server_params.load_full());
    Pool {
        database: db.to_string(),
        user: user.username.clone(),
        mode: settings.mode,
        secret: user.password.as_deref().map(Secret::parse),
        shards,
        server_params: ArcSwapOption::new(keep_params),
    }
}
