//! pgcat.toml: the schema (pgcat's keys, plus pgmlcat's own), loading and
//! validation. Times are in milliseconds unless a key says otherwise.

mod env;
mod load;
pub mod plugins;
mod validate;

use std::collections::BTreeMap;

use serde::Deserialize;

pub use load::{load_file, parse, Loaded};

use env::env_string;

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub general: General,
    #[serde(default)]
    pub pools: BTreeMap<String, PoolConfig>,
    /// pgcat's plugins: `intercept` is acted on, the others accepted and
    /// ignored (see `plugins`).
    #[serde(default)]
    pub plugins: Option<plugins::Plugins>,
    /// pgmlcat: in-proxy ML (pgml.train, pgml.predict). On by default.
    #[serde(default)]
    pub ml: MlConfig,
    /// pgmlcat: the other pgmlcat processes in front of the same databases,
    /// by peer id ("host:port"), as PgBouncer's `[peers]`: a cancel request
    /// for a client of another peer is forwarded to it.
    #[serde(default)]
    pub peers: BTreeMap<String, String>,
}

/// The `[ml]` table: every key optional.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct MlConfig {
    /// false: pgml.* calls get an error instead of being answered.
    pub enabled: bool,
    /// Threads one training may use (LightGBM); 0 = one per core but one.
    pub threads: usize,
    /// Trainings that may run at once; more wait for a slot.
    pub max_concurrent_trainings: usize,
    /// Cap on the training data one training may hold, in MB.
    pub max_memory_mb: usize,
    /// Feature rows kept per project of what it was asked to predict, for
    /// `pgml.drift(project, 'serving')`; 0 keeps none.
    pub serving_sample_rows: usize,
}

impl Default for MlConfig {
    fn default() -> Self {
        MlConfig {
            enabled: true,
            threads: 0,
            max_concurrent_trainings: 2,
            max_memory_mb: 4096,
            serving_sample_rows: 10_000,
        }
    }
}

/// A pool's `[pools.<name>.ml]` table.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PoolMlConfig {
    /// Switches ML off (or on) for this pool only.
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    Transaction,
    Session,
}

/// What a transaction-mode pool does when a client makes state only its
/// server connection can hold (a session advisory lock, a temporary
/// table, a WITH HOLD cursor, an SQL PREPARE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStateMode {
    /// The client keeps its server until the state is gone.
    #[default]
    Pin,
    /// The statement is refused (0A000), naming what it would make.
    Refuse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AuthType {
    #[serde(rename = "trust")]
    Trust,
    #[serde(rename = "md5")]
    Md5,
    #[serde(rename = "scram-sha-256", alias = "scram")]
    Scram,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Replica,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultRole {
    Any,
    Primary,
    Replica,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadBalancingMode {
    Random,
    Loc,
}

/// pgcat has had `autoreload = false` and `autoreload = 15000` (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Autoreload {
    Flag(bool),
    Millis(u64),
}

impl Autoreload {
    pub fn interval_ms(self) -> Option<u64> {
        match self {
            Autoreload::Flag(true) => Some(15_000),
            Autoreload::Flag(false) | Autoreload::Millis(0) => None,
            Autoreload::Millis(ms) => Some(ms),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct General {
    #[serde(deserialize_with = "env_string")]
    pub host: String,
    pub port: u16,
    pub enable_prometheus_exporter: bool,
    pub prometheus_exporter_port: u16,
    pub connect_timeout: u64,
    pub idle_timeout: u64,
    pub server_lifetime: u64,
    pub idle_client_in_transaction_timeout: u64,
    pub healthcheck_timeout: u64,
    pub healthcheck_delay: u64,
    pub shutdown_timeout: u64,
    /// Seconds, as in pgcat.
    pub ban_time: u64,
    pub log_client_connections: bool,
    pub log_client_disconnections: bool,
    pub autoreload: Option<Autoreload>,
    pub worker_threads: Option<usize>,
    pub tcp_keepalives_idle: u64,
    pub tcp_keepalives_count: u32,
    pub tcp_keepalives_interval: u64,
    pub tcp_user_timeout: u64,
    pub tls_certificate: Option<String>,
    pub tls_private_key: Option<String>,
    pub server_tls: bool,
    pub verify_server_certificate: bool,
    /// pgmlcat: refuse clients that do not use TLS (needs tls_certificate).
    pub tls_required: bool,
    /// pgmlcat: libpq's sslmode for connections to servers; overrides
    /// server_tls/verify_server_certificate. Per pool too.
    pub server_sslmode: Option<crate::net::tls::SslMode>,
    /// pgmlcat: CA bundle (PEM) for verify-ca/verify-full; the system's roots otherwise.
    pub server_tls_ca_file: Option<String>,
    #[serde(deserialize_with = "env_string")]
    pub admin_username: String,
    #[serde(deserialize_with = "env_string")]
    pub admin_password: String,
    pub admin_auth_type: Option<AuthType>,
    /// How clients authenticate to pgmlcat (pgcat: md5 | trust; pgmlcat adds scram-sha-256).
    pub auth_type: AuthType,
    pub prepared_statements: bool,
    pub prepared_statements_cache_size: usize,
    pub dns_cache_enabled: bool,
    pub dns_max_ttl: u64,
    pub server_round_robin: bool,
    pub validate_config: bool,
    pub checkout_failure_limit: Option<u64>,
    pub auth_query: Option<String>,
    pub auth_query_user: Option<String>,
    pub auth_query_password: Option<String>,
    // --- pgmlcat's additions ---
    /// How long (seconds) a hash auth_query read is trusted before the
    /// next login reads it again; 0: every login reads it.
    pub auth_query_cache_ttl: Option<u64>,
    /// How long a client waits for a free server connection before 58000.
    /// Defaults to `connect_timeout`, which is what pgcat uses for it.
    pub checkout_timeout: Option<u64>,
    /// How long a client's statement waits for its server to become
    /// reachable again (a restart, a failover) before 08006, in ms; 0 fails
    /// at once. PgBouncer's name and default.
    pub query_wait_timeout: u64,
    /// New client connections beyond this get 53300 and are closed.
    pub max_client_conn: usize,
    /// The largest single message a client may send (bytes). COPY data is streamed and not bound by it.
    pub max_message_size: usize,
    /// The web dashboard's port on `host` (None or 0: off). Needs
    /// admin_password: pages ask for the admin credentials.
    pub dashboard_port: Option<u16>,
    /// PgBouncer's: SO_REUSEPORT on the client listener, so a new process
    /// can bind the port beside this one; a graceful shutdown then hands
    /// new connections to it and closes the listener (rolling restart).
    pub so_reuseport: bool,
    /// This process's id among `[peers]` (1..=16383; 0: none), encoded in
    /// the cancel keys it hands out, as PgBouncer's `peer_id`.
    pub peer_id: u16,
}

impl Default for General {
    fn default() -> Self {
        General {
            host: "0.0.0.0".into(),
            port: 6432,
            enable_prometheus_exporter: false,
            prometheus_exporter_port: 9930,
            connect_timeout: 5_000,
            idle_timeout: 600_000,
            server_lifetime: 3_600_000,
            idle_client_in_transaction_timeout: 0,
            healthcheck_timeout: 1_000,
            healthcheck_delay: 30_000,
            shutdown_timeout: 60_000,
            ban_time: 60,
            log_client_connections: false,
            log_client_disconnections: false,
            autoreload: None,
            worker_threads: None,
            tcp_keepalives_idle: 5,
            tcp_keepalives_count: 5,
            tcp_keepalives_interval: 5,
            tcp_user_timeout: 10_000,
            tls_certificate: None,
            tls_private_key: None,
            server_tls: false,
            verify_server_certificate: false,
            tls_required: false,
            server_sslmode: None,
            server_tls_ca_file: None,
            admin_username: "admin".into(),
            admin_password: String::new(),
            admin_auth_type: None,
            auth_type: AuthType::Md5,
            prepared_statements: true,
            prepared_statements_cache_size: 500,
            dns_cache_enabled: false,
            dns_max_ttl: 30,
            server_round_robin: false,
            validate_config: true,
            checkout_failure_limit: None,
            auth_query: None,
            auth_query_user: None,
            auth_query_password: None,
            auth_query_cache_ttl: None,
            checkout_timeout: None,
            query_wait_timeout: 120_000,
            max_client_conn: 10_000,
            max_message_size: 256 << 20,
            dashboard_port: None,
            so_reuseport: false,
            peer_id: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PoolConfig {
    pub pool_mode: PoolMode,
    pub load_balancing_mode: LoadBalancingMode,
    pub default_role: DefaultRole,
    pub query_parser_enabled: bool,
    pub query_parser_max_length: Option<usize>,
    pub query_parser_read_write_splitting: bool,
    pub primary_reads_enabled: bool,
    /// pgmlcat: a read meant for replicas goes to the primary when no
    /// replica can serve it (pgcat, and the default: every replica is
    /// unbanned and tried).
    pub replica_fallback_to_primary: bool,
    pub sharding_function: String,
    pub automatic_sharding_key: Option<String>,
    pub sharding_key_regex: Option<String>,
    pub shard_id_regex: Option<String>,
    pub regex_search_limit: Option<usize>,
    pub default_shard: Option<String>,
    pub connect_timeout: Option<u64>,
    pub idle_timeout: Option<u64>,
    pub server_lifetime: Option<u64>,
    pub cleanup_server_connections: bool,
    /// pgmlcat: pin (default) or refuse state that cannot move.
    pub session_state: SessionStateMode,
    pub log_client_parameter_status_changes: bool,
    pub prepared_statements_cache_size: Option<usize>,
    /// pgcat's: a client that failed to get a server this many times is
    /// disconnected (None, the default: never).
    pub checkout_failure_limit: Option<u64>,
    pub auth_query: Option<String>,
    pub auth_query_user: Option<String>,
    pub auth_query_password: Option<String>,
    /// pgmlcat: this pool's auth_query_cache_ttl.
    pub auth_query_cache_ttl: Option<u64>,
    pub plugins: Option<plugins::Plugins>,
    /// pgmlcat: a replica more than this many bytes of WAL behind its
    /// primary gets no reads until it catches up.
    pub max_replica_lag: Option<u64>,
    /// pgmlcat: the same in seconds since the replica last replayed a
    /// transaction (counted only while it has WAL left to replay).
    pub max_replica_lag_seconds: Option<f64>,
    /// pgmlcat: after a client's transaction on the primary commits, its
    /// reads go only to replicas that replayed it (else the primary).
    pub read_your_writes: bool,
    /// pgmlcat: the type of the sharding key column: bigint, text or uuid.
    pub sharding_key_type: crate::router::shard::KeyType,
    /// pgmlcat: sslmode and CA bundle for this pool's servers.
    pub server_sslmode: Option<crate::net::tls::SslMode>,
    pub server_tls_ca_file: Option<String>,
    /// pgmlcat: per-pool ML settings.
    pub ml: PoolMlConfig,
    pub users: BTreeMap<String, UserConfig>,
    pub shards: BTreeMap<String, ShardConfig>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            pool_mode: PoolMode::Transaction,
            load_balancing_mode: LoadBalancingMode::Random,
            default_role: DefaultRole::Any,
            query_parser_enabled: false,
            query_parser_max_length: None,
            query_parser_read_write_splitting: false,
            primary_reads_enabled: true,
            replica_fallback_to_primary: false,
            sharding_function: "pg_bigint_hash".into(),
            automatic_sharding_key: None,
            sharding_key_regex: None,
            shard_id_regex: None,
            regex_search_limit: None,
            default_shard: None,
            connect_timeout: None,
            idle_timeout: None,
            server_lifetime: None,
            cleanup_server_connections: true,
            session_state: SessionStateMode::Pin,
            log_client_parameter_status_changes: false,
            prepared_statements_cache_size: None,
            checkout_failure_limit: None,
            auth_query: None,
            auth_query_user: None,
            auth_query_password: None,
            auth_query_cache_ttl: None,
            plugins: None,
            max_replica_lag: None,
            max_replica_lag_seconds: None,
            read_your_writes: true,
            server_sslmode: None,
            server_tls_ca_file: None,
            ml: PoolMlConfig::default(),
            sharding_key_type: crate::router::shard::KeyType::Bigint,
            users: BTreeMap::new(),
            shards: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct UserConfig {
    #[serde(deserialize_with = "env_string")]
    pub username: String,
    #[serde(default, deserialize_with = "env::env_string_opt")]
    pub password: Option<String>,
    #[serde(default, deserialize_with = "env::env_string_opt")]
    pub server_username: Option<String>,
    #[serde(default, deserialize_with = "env::env_string_opt")]
    pub server_password: Option<String>,
    /// pgcat's per-user auth_type; the general one when unset.
    #[serde(default)]
    pub auth_type: Option<AuthType>,
    pub pool_size: u32,
    #[serde(default)]
    pub min_pool_size: Option<u32>,
    #[serde(default)]
    pub pool_mode: Option<PoolMode>,
    #[serde(default)]
    pub server_lifetime: Option<u64>,
    #[serde(default)]
    pub statement_timeout: u64,
    #[serde(default)]
    pub connect_timeout: Option<u64>,
    #[serde(default)]
    pub idle_timeout: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ShardConfig {
    pub servers: Vec<(String, u16, Role)>,
    #[serde(deserialize_with = "env_string")]
    pub database: String,
    #[serde(default)]
    pub mirrors: Option<Vec<(String, u16, usize)>>,
}

impl Config {
    /// `connect_timeout` for a user of a pool: user, then pool, then general.
    pub fn connect_timeout(&self, pool: &PoolConfig, user: &UserConfig) -> u64 {
        user.connect_timeout
            .or(pool.connect_timeout)
            .unwrap_or(self.general.connect_timeout)
    }

    pub fn idle_timeout(&self, pool: &PoolConfig, user: &UserConfig) -> u64 {
        user.idle_timeout
            .or(pool.idle_timeout)
            .unwrap_or(self.general.idle_timeout)
    }

    pub fn server_lifetime(&self, pool: &PoolConfig, user: &UserConfig) -> u64 {
        user.server_lifetime
            .or(pool.server_lifetime)
            .unwrap_or(self.general.server_lifetime)
    }

    /// The sslmode for a pool's servers: the pool's, the general one, or
    /// pgcat's server_tls/verify_server_certificate.
    pub fn server_sslmode(&self, pool: &PoolConfig) -> crate::net::tls::SslMode {
        use crate::net::tls::SslMode;
        let g = &self.general;
        pool.server_sslmode.or(g.server_sslmode).unwrap_or(
            match (g.server_tls, g.verify_server_certificate) {
                (false, _) => SslMode::Disable,
                (true, false) => SslMode::Require,
                (true, true) => SslMode::VerifyFull,
            },
        )
    }

    /// How a pool's user logs in: its own auth_type, else the general one.
    pub fn auth_type(&self, user: &UserConfig) -> AuthType {
        user.auth_type.unwrap_or(self.general.auth_type)
    }

    /// The pool's auth_query settings (pool keys, else general ones), when
    /// all three are set.
    pub fn auth_query<'a>(&'a self, pool: &'a PoolConfig) -> Option<(&'a str, &'a str, &'a str)> {
        let g = &self.general;
        match (
            pool.auth_query.as_deref().or(g.auth_query.as_deref()),
            pool.auth_query_user
                .as_deref()
                .or(g.auth_query_user.as_deref()),
            pool.auth_query_password
                .as_deref()
                .or(g.auth_query_password.as_deref()),
        ) {
            (Some(q), Some(u), Some(p)) => Some((q, u, p)),
            _ => None,
        }
    }

    /// How long a hash auth_query read is trusted (default 60 s).
    pub fn auth_query_cache_ttl(&self, pool: &PoolConfig) -> std::time::Duration {
        let secs = pool
            .auth_query_cache_ttl
            .or(self.general.auth_query_cache_ttl)
            .unwrap_or(60);
        std::time::Duration::from_secs(secs)
    }

    pub fn checkout_timeout(&self, pool: &PoolConfig, user: &UserConfig) -> u64 {
        self.general
            .checkout_timeout
            .unwrap_or_else(|| self.connect_timeout(pool, user))
    }
}

impl PoolConfig {
    /// Shards in index order (the config keys them "0", "1", ...).
    pub fn shards_in_order(&self) -> Vec<&ShardConfig> {
        let mut shards: Vec<(usize, &ShardConfig)> = self
            .shards
            .iter()
            .filter_map(|(k, v)| k.parse().ok().map(|i| (i, v)))
            .collect();
        shards.sort_by_key(|(i, _)| *i);
        shards.into_iter().map(|(_, s)| s).collect()
    }
}
