//! The pools clients can reach, keyed by (database, user), built from a
//! config. A reload builds a new registry that keeps every server pool whose
//! address is unchanged, so their connections and waiting clients survive.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;

use rand::Rng;

use super::auth_query::AuthQuery;
use super::freshness::{Clock, Need};
use super::health::LagLimit;
use super::listen::Listener;
use super::pool::{PoolSettings, ServerPool, ServerTls};
use super::server::{Address, Credentials};
use crate::config::{
    AuthType, Config, LoadBalancingMode, PoolConfig, PoolMode, Role, SessionStateMode, UserConfig,
};
use crate::errors::{Error, Result};
use crate::net::auth::scram::ClientKeys;
use crate::net::auth::Secret;
use crate::router::shard::Sharding;
use crate::router::statement::Analyses;
use crate::router::{RouteConfig, Target};

/// A (database, user) pool as clients see it.
pub struct Pool {
    pub database: String,
    pub user: String,
    pub mode: PoolMode,
    /// Whether transaction mode pins or refuses state that cannot move.
    pub session_state: SessionStateMode,
    /// How its clients log in (the user's auth_type, else the general one).
    pub auth_type: AuthType,
    /// The client-side secret (None: the user has no password; only trust
    /// works, unless `auth_query` finds one).
    pub secret: Option<Secret>,
    /// pgcat's auth_query: the password for a user configured without one,
    /// or the one a client may use when the configured one does not match.
    pub auth_query: Option<AuthQuery>,
    /// `shards[i]`: the servers of shard i, configured primary first.
    pub shards: Vec<Vec<Arc<ServerPool>>>,
    pub route: RouteConfig,
    pub sharding: Sharding,
    pub load_balancing: LoadBalancingMode,
    /// pgmlcat: reads for replicas go to the primary when no replica can
    /// serve them (pgcat: they fail).
    pub replica_fallback_to_primary: bool,
    /// Traffic counters for SHOW STATS and /metrics.
    pub counters: Arc<crate::stats::Counters>,
    pub lag_limit: LagLimit,
    /// Replication positions over time, for reads that must see a client's
    /// writes or be no more than so far behind.
    pub clock: Clock,
    /// Whether a client's reads after its write wait for replicas to
    /// replay it (else go to the primary).
    pub read_your_writes: bool,
    /// Whether pgml.* calls are answered for this pool.
    pub ml_enabled: bool,
    /// pgcat's: clients that failed to get a server this often are closed.
    pub checkout_failure_limit: Option<u64>,
    /// pgcat's intercept plugin: statements answered with configured rows.
    pub intercept: Option<crate::config::plugins::Intercept>,
    /// What its statements mean for routing, by text (each parsed once).
    pub analyses: Analyses,
    /// ParameterStatus values clients get at login, learned from a server.
    server_params: ArcSwapOption<Vec<(String, String)>>,
    /// Its clients' LISTENs, served by one connection (started on first use).
    listener: OnceLock<Listener>,
    /// Counts schema changes seen (DDL through the pool, or a server saying
    /// a cached plan must not change result type). Each server copy of a
    /// statement and each client's statement carry the epoch they were
    /// prepared in: a client's statement newer than a server's copy gets a
    /// fresh one; an older one meets the server's own verdict, as on a
    /// direct connection.
    plans_epoch: AtomicU64,
    /// A reload built this pool's successor: its clients move to it
    /// between transactions (a new shard layout, new settings).
    replaced: AtomicBool,
}

impl Pool {
    /// Whether a reload replaced this pool (its clients should move).
    #[inline]
    pub fn replaced(&self) -> bool {
        self.replaced.load(Ordering::Relaxed)
    }

    pub fn plans_epoch(&self) -> u64 {
        self.plans_epoch.load(Ordering::Relaxed)
    }

    /// The schema changed: statements prepared from now on are newer than
    /// every copy the servers hold.
    pub fn plans_went_stale(&self) {
        self.plans_epoch.fetch_add(1, Ordering::Relaxed);
    }

    /// The secret a client's password is checked against: the configured
    /// one, else the hash auth_query reads (kept; read again when `stale`).
    /// Err: auth_query could not read it (the reason, for the log).
    pub async fn client_secret(&self, stale: bool) -> Result<Option<Secret>, String> {
        let Some(aq) = &self.auth_query else {
            return Ok(self.secret.clone());
        };
        // A configured password is tried first; as in pgcat, a client
        // whose answer does not match it is checked against the hash the
        // database holds (the password may have changed there).
        if !stale {
            if let Some(s) = &self.secret {
                return Ok(Some(s.clone()));
            }
            if let Some(kept) = aq.fetched() {
                return Ok(Some((*kept).clone()));
            }
        }
        let fresh = aq.fetch(self.primary(0), &self.user).await?;
        self.log_in_servers_with(&fresh);
        Ok(Some((*fresh).clone()))
    }

    /// With an md5 hash from auth_query, new server connections log in
    /// with it (md5 pass-through) where the config gives no password.
    fn log_in_servers_with(&self, secret: &Secret) {
        for server in self.all_servers() {
            let settings = server.settings();
            if settings.credentials.password.is_some() {
                continue;
            }
            let md5 = secret.md5_for(&settings.credentials.user);
            if md5 != settings.credentials.md5 {
                let mut updated = (*settings).clone();
                updated.credentials.md5 = md5;
                server.update(updated);
            }
        }
    }

    /// SCRAM pass-through: `user` proved it has `keys`; new connections to
    /// servers this pool has no password for log in as that user with
    /// them (a server that holds another verifier refuses, and says so).
    pub fn log_in_servers_with_keys(&self, user: &str, keys: &ClientKeys) {
        for server in self.all_servers() {
            let settings = server.settings();
            let creds = &settings.credentials;
            if creds.password.is_some() || creds.user != user || creds.scram.as_ref() == Some(keys)
            {
                continue;
            }
            let mut updated = (*settings).clone();
            updated.credentials.scram = Some(keys.clone());
            server.update(updated);
        }
    }

    /// The pool's listener, started by the first client that LISTENs.
    pub fn listener(self: &Arc<Self>) -> &Listener {
        self.listener
            .get_or_init(|| Listener::start(Arc::downgrade(self)))
    }

    /// Whether `shard` has replicas (more than one server).
    pub fn replicated(&self, shard: usize) -> bool {
        self.shards.get(shard).is_some_and(|s| s.len() > 1)
    }

    /// Where writes go on `shard`: the reachable server that says it is a
    /// primary, the newest timeline winning (a promoted replica beats an old
    /// primary that came back as one); else the configured primary.
    pub fn primary(&self, shard: usize) -> &Arc<ServerPool> {
        let servers = &self.shards[shard];
        let observed = servers
            .iter()
            .filter(|s| s.health.role() == Role::Primary && s.health.reachable())
            .max_by_key(|s| (s.health.timeline(), s.addr.role == Role::Primary));
        observed.unwrap_or(&servers[0])
    }

    /// A server for `target` on `shard`, by the pool's load balancing mode.
    /// Readers are the servers other than the one writes go to, except a
    /// configured primary (an old primary back on its own is not a
    /// replica): a configured replica is one even when it is a cluster of
    /// its own, as pgcat takes its config. `Any` adds the primary.
    /// When no reader can serve, as in pgcat they are all unbanned and
    /// tried (a health check false positive must not take every replica
    /// away), unless `replica_fallback_to_primary` sends the read to the
    /// primary instead; replicas that are only behind (max_replica_lag)
    /// are not tried: the primary serves.
    pub fn choose(&self, shard: usize, target: Target) -> &Arc<ServerPool> {
        self.choose_fresh(shard, target, Need::Any)
    }

    /// `choose`, among the replicas fresh enough for `need`: when none is
    /// but some serve reads, the primary, which always is.
    pub fn choose_fresh(&self, shard: usize, target: Target, need: Need) -> &Arc<ServerPool> {
        let primary = self.primary(shard);
        if target == Target::Primary || !self.replicated(shard) || need == Need::Primary {
            return primary;
        }
        let reader = |s: &&Arc<ServerPool>| {
            !Arc::ptr_eq(s, primary)
                && (s.health.role() == Role::Replica || s.addr.role == Role::Replica)
        };
        let fresh = |s: &&Arc<ServerPool>| self.clock.meets(shard, need, s.health.lsn());
        let mut candidates: Vec<&Arc<ServerPool>> = self.shards[shard]
            .iter()
            .filter(|s| {
                (target == Target::Any && Arc::ptr_eq(s, primary))
                    || (reader(s) && s.health.serves_reads() && fresh(s))
            })
            .collect();
        // Readers that serve but are not fresh enough: the primary is.
        let stale = || {
            need != Need::Any
                && self.shards[shard]
                    .iter()
                    .any(|s| reader(&s) && s.health.serves_reads())
        };
        if candidates.is_empty() && stale() {
            return primary;
        }
        if candidates.is_empty() {
            if self.replica_fallback_to_primary {
                return primary;
            }
            // Replicas too far behind stay out: the primary has the data.
            candidates = self.shards[shard]
                .iter()
                .filter(|s| reader(s) && !s.health.lagging())
                .collect();
            for s in &candidates {
                if s.health.banned() {
                    tracing::info!(server = %s.addr, pool = %s.name, "every replica was banned: unbanned");
                }
                s.health.unban();
            }
        }
        match candidates.len() {
            0 => primary,
            1 => candidates[0],
            n => match self.load_balancing {
                LoadBalancingMode::Random => candidates[rand::thread_rng().gen_range(0..n)],
                LoadBalancingMode::Loc => {
                    // Least outstanding connections; ties broken at random so
                    // an idle pool still spreads.
                    let start = rand::thread_rng().gen_range(0..n);
                    (0..n)
                        .map(|i| candidates[(start + i) % n])
                        .min_by_key(|s| s.active_count())
                        .unwrap_or(primary)
                }
            },
        }
    }

    /// Refreshes roles, reachability and lag of replicated shards.
    pub async fn monitor(&self) {
        for shard in 0..self.shards.len() {
            self.observe_shard(shard).await;
        }
    }

    /// Samples the replicated shards for reads that need fresh replicas
    /// (see `freshness`), every shard at once.
    pub async fn sample_freshness(&self) {
        futures_util::future::join_all((0..self.shards.len()).map(|s| self.observe_shard(s))).await;
    }

    /// One round of the monitor on `shard`: every server observed at once,
    /// the writer chosen, lag judged, the primary's position recorded on
    /// the shard's clock.
    async fn observe_shard(&self, shard: usize) {
        if !self.replicated(shard) {
            return; // nothing to choose between
        }
        let servers = &self.shards[shard];
        let round = self.clock.begin_round(shard);
        let observations =
            futures_util::future::join_all(servers.iter().map(|s| s.observe())).await;
        let writer = self.primary(shard);
        for s in servers {
            s.health.set_writer(Arc::ptr_eq(s, writer));
        }
        let primary_lsn = servers
            .iter()
            .zip(&observations)
            .filter_map(|(s, o)| {
                o.filter(|o| !o.in_recovery)
                    .map(|o| (s.health.timeline(), o.lsn))
            })
            .max()
            .map(|(_, lsn)| lsn);
        if let Some(lsn) = primary_lsn {
            self.clock.record(shard, round, lsn);
        }
        for (server, observation) in servers.iter().zip(observations) {
            let (Some(o), Some(primary_lsn)) = (observation, primary_lsn) else {
                continue;
            };
            let lagging = o.in_recovery && self.lag_limit.exceeded(primary_lsn, &o);
            if lagging != server.health.lagging() {
                tracing::info!(server = %server.addr, lagging, behind = primary_lsn - o.lsn, "replica lag state changed");
            }
            server.health.set_lagging(lagging);
        }
    }

    /// The parameters a server reports at startup, fetched once per pool
    /// from whichever server answers first (primary first).
    pub async fn server_params(&self) -> Result<Arc<Vec<(String, String)>>> {
        if let Some(p) = self.server_params.load_full() {
            return Ok(p);
        }
        let mut last_error = None;
        let mut order: Vec<&Arc<ServerPool>> = vec![self.primary(0)];
        order.extend(
            self.shards[0]
                .iter()
                .filter(|s| !Arc::ptr_eq(s, self.primary(0))),
        );
        for pool in order {
            match pool.checkout().await {
                Ok(pooled) => return Ok(self.remember_params(pool, pooled)),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::ServerLost("no servers configured".into())))
    }

    fn remember_params(
        &self,
        pool: &ServerPool,
        pooled: super::Pooled,
    ) -> Arc<Vec<(String, String)>> {
        let mut params: Vec<(String, String)> = pooled
            .server
            .state
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        params.sort();
        pool.checkin(pooled);
        let params = Arc::new(params);
        self.server_params.store(Some(params.clone()));
        params
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

    /// This registry's pools were replaced by a reload's: their clients
    /// move to the new ones between transactions.
    pub fn retire(&self) {
        for pool in self.pools.values() {
            pool.replaced.store(true, Ordering::Relaxed);
        }
    }

    /// Builds the registry for `config`, reusing server pools (and so their
    /// connections) from `old` where the address is the same; a changed
    /// server login retires their idle connections.
    /// Fails with the reasons when TLS files for servers cannot be loaded.
    pub fn build(config: Arc<Config>, old: Option<&Registry>) -> Result<Registry, Vec<String>> {
        let mut pools = HashMap::new();
        let mut databases = HashSet::new();
        let mut connectors: HashMap<_, Option<ServerTls>> = HashMap::new();
        let mut errors = Vec::new();
        for (db, pool_cfg) in &config.pools {
            databases.insert(db.clone());
            let mode = config.server_sslmode(pool_cfg);
            let ca = pool_cfg
                .server_tls_ca_file
                .clone()
                .or_else(|| config.general.server_tls_ca_file.clone());
            let tls = match connectors.entry((mode, ca.clone())) {
                std::collections::hash_map::Entry::Occupied(e) => e.get().clone(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    match crate::net::tls::connector(mode, ca.as_deref()) {
                        Ok(c) => v.insert(c.map(|c| (mode, c))).clone(),
                        Err(e) => {
                            errors.push(format!("pools.{db}: {e}"));
                            None
                        }
                    }
                }
            };
            let sharding = match Sharding::from_pool(pool_cfg, pool_cfg.shards.len()) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(format!("pools.{db}.{e}"));
                    continue;
                }
            };
            for user in pool_cfg.users.values() {
                let previous = old.and_then(|o| o.get(db, &user.username));
                let pool = build_pool(
                    &config,
                    db,
                    pool_cfg,
                    user,
                    previous,
                    tls.clone(),
                    sharding.clone(),
                );
                pools.insert((db.clone(), user.username.clone()), Arc::new(pool));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Registry {
            config,
            pools,
            databases,
        })
    }
}

fn settings_for(
    config: &Config,
    pool: &PoolConfig,
    user: &UserConfig,
    tls: Option<ServerTls>,
) -> PoolSettings {
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
            scram: None,
        },
        prepared_cache_size: pool
            .prepared_statements_cache_size
            .unwrap_or(config.general.prepared_statements_cache_size),
        cleanup_server_connections: pool.cleanup_server_connections,
        ban_time: Duration::from_secs(config.general.ban_time),
        tls,
        healthcheck_delay: ms(config.general.healthcheck_delay),
        healthcheck_timeout: ms(config.general.healthcheck_timeout),
    }
}

fn build_pool(
    config: &Config,
    db: &str,
    pool_cfg: &PoolConfig,
    user: &UserConfig,
    previous: Option<&Arc<Pool>>,
    tls: Option<ServerTls>,
    sharding: Sharding,
) -> Pool {
    let settings = settings_for(config, pool_cfg, user, tls);
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
                    let mut settings = settings.clone();
                    // Keys a client proved survive a reload that leaves the
                    // login as it was (SCRAM pass-through).
                    let old = &sp.settings().credentials;
                    let creds = &mut settings.credentials;
                    if creds.password.is_none() && creds.user == old.user {
                        creds.scram.clone_from(&old.scram);
                    }
                    sp.update(settings);
                    sp
                }
                None => ServerPool::new(Arc::new(addr), name.clone(), settings.clone()),
            };
            servers.push(server_pool);
        }
        shards.push(servers);
    }
    // auth_query serves users without a password, and those whose
    // configured password no longer matches; what it read survives a
    // reload that leaves it as it was.
    let auth_query = config
        .auth_query(pool_cfg)
        .map(|(q, u, p)| AuthQuery::new(q, u, p, config.auth_query_cache_ttl(pool_cfg)));
    if let Some(aq) = &auth_query {
        if let Some(old) = previous
            .and_then(|p| p.auth_query.as_ref())
            .filter(|old| old.same_as(aq))
        {
            aq.keep_from(old);
        }
    }
    let keep_params = previous
        .filter(|p| p.shards.len() == shards.len() && Arc::ptr_eq(p.primary(0), &shards[0][0]))
        .and_then(|p| p.server_params.load_full());
    // With one server per shard there is no role to choose: do not parse
    // every transaction for nothing.
    let shards_len = shards.len();
    let mut route = RouteConfig::from_pool(pool_cfg);
    route.parser &= shards.iter().any(|s| s.len() > 1);
    let pool = Pool {
        database: db.to_string(),
        user: user.username.clone(),
        mode: settings.mode,
        session_state: pool_cfg.session_state,
        auth_type: config.auth_type(user),
        secret: user.password.as_deref().map(Secret::parse),
        auth_query,
        shards,
        route,
        sharding,
        counters: previous.map(|p| p.counters.clone()).unwrap_or_default(),
        load_balancing: pool_cfg.load_balancing_mode,
        replica_fallback_to_primary: pool_cfg.replica_fallback_to_primary,
        lag_limit: LagLimit {
            bytes: pool_cfg.max_replica_lag,
            seconds: pool_cfg.max_replica_lag_seconds,
        },
        clock: Clock::new(shards_len),
        read_your_writes: pool_cfg.read_your_writes,
        analyses: Analyses::default(),
        server_params: ArcSwapOption::new(keep_params),
        listener: OnceLock::new(),
        plans_epoch: AtomicU64::new(0),
        replaced: AtomicBool::new(false),
        ml_enabled: pool_cfg.ml.enabled.unwrap_or(true),
        checkout_failure_limit: pool_cfg
            .checkout_failure_limit
            .or(config.general.checkout_failure_limit),
        intercept: crate::config::plugins::Intercept::build(
            pool_cfg.plugins.as_ref(),
            config.plugins.as_ref(),
            db,
            &user.username,
        ),
    };
    if let Some(kept) = pool.auth_query.as_ref().and_then(AuthQuery::fetched) {
        pool.log_in_servers_with(&kept);
    }
    pool
}
