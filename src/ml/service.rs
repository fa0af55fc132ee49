//! The ML side of one pgmlcat process: settings, the bound on concurrent
//! trainings, which databases have their catalog ready, the model cache and
//! ML statistics. Shared by every session through `App`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use dashmap::DashSet;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::algorithms::{Algorithm, Model};
use super::cache::ModelCache;
use super::catalog;
use super::db::Db;
use super::error::{MlError, MlResult};
use super::labels::Classes;
use super::predict::{self, Plan};
use super::preprocess::Preprocessor;
use super::stats::MlStats;
use super::task::Task;
use crate::backend::registry::Pool;
use crate::config::MlConfig;

/// A trained model ready to predict, shared by every client.
pub struct StoredModel {
    pub id: i64,
    pub task: Task,
    pub algorithm: Algorithm,
    pub model: Arc<dyn Model>,
    pub preprocessor: Arc<Preprocessor>,
    pub classes: Option<Classes>,
    /// The key metric measured at training time.
    pub score: Option<f64>,
    /// The training split's feature means, which a linear model's
    /// explanations start from (empty for models trained before they were
    /// stored, and imported ones).
    pub means: Vec<f64>,
}

/// What a project deploys, or a model id names: one model, or the models
/// of a `group_by` training, one per group.
pub enum Deployed {
    Model(StoredModel),
    Groups(GroupModels),
}

/// The models of a `group_by` training.
pub struct GroupModels {
    /// The set's own catalog row (no model file of its own).
    pub id: i64,
    pub task: Task,
    pub algorithm: Algorithm,
    /// The key metric over every group's test rows.
    pub score: Option<f64>,
    /// The group columns, in the order keys list their values.
    pub columns: Vec<String>,
    pub models: std::collections::HashMap<predict::GroupKey, Arc<StoredModel>>,
}

/// `(store_id)=(7)`, as Postgres names key values in its messages.
pub fn group_text(columns: &[String], key: &predict::GroupKey) -> String {
    let values: Vec<&str> = key.iter().map(|v| v.as_deref().unwrap_or("NULL")).collect();
    format!("({})=({})", columns.join(", "), values.join(", "))
}

impl Deployed {
    pub fn id(&self) -> i64 {
        match self {
            Deployed::Model(m) => m.id,
            Deployed::Groups(g) => g.id,
        }
    }

    pub fn task(&self) -> Task {
        match self {
            Deployed::Model(m) => m.task,
            Deployed::Groups(g) => g.task,
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Deployed::Model(m) => m.algorithm,
            Deployed::Groups(g) => g.algorithm,
        }
    }

    pub fn score(&self) -> Option<f64> {
        match self {
            Deployed::Model(m) => m.score,
            Deployed::Groups(g) => g.score,
        }
    }
}

/// The context of one pgml call: where its progress goes (NOTICEs to the
/// client while work goes on) and which shard it is limited to (a shard_id
/// comment or SET SHARD on a sharded pool).
#[derive(Clone, Default)]
pub struct Progress {
    tx: Option<mpsc::UnboundedSender<String>>,
    training: Option<Arc<TrainingGuard>>,
    pub shard: Option<usize>,
}

impl Progress {
    pub fn new(tx: mpsc::UnboundedSender<String>) -> Progress {
        Progress {
            tx: Some(tx),
            training: None,
            shard: None,
        }
    }

    pub fn on_shard(mut self, shard: Option<usize>) -> Progress {
        self.shard = shard;
        self
    }

    /// Progress also shows in SHOW TRAININGS while `guard` lives.
    pub fn for_training(mut self, guard: TrainingGuard) -> Progress {
        self.training = Some(Arc::new(guard));
        self
    }

    pub fn notice(&self, message: String) {
        tracing::debug!("{message}");
        if let Some(t) = &self.training {
            t.progress(&message);
        }
        if let Some(tx) = &self.tx {
            let _ = tx.send(message);
        }
    }
}

pub struct Ml {
    settings: ArcSwap<MlConfig>,
    trainings: Arc<Semaphore>,
    slots: AtomicUsize,
    schema_ready: DashSet<String>,
    pub cache: ModelCache,
    pub metrics: MlStats,
    pub running: dashmap::DashMap<u64, TrainingInfo>,
    next_training: AtomicUsize,
    /// pgml.predict plans by statement text: a statement sent again (the
    /// simple protocol, pgbench scripts) is not parsed again.
    plans: dashmap::DashMap<String, Arc<Plan>>,
    /// Plans of the general method (`predict::lookup`), by statement text.
    lookups: dashmap::DashMap<String, Arc<predict::LookupPlan>>,
    /// Normalized statements that must be planned with their constants.
    unnormalizable: DashSet<String>,
    /// The rows each project was asked to predict, sampled (`pgml.drift`).
    pub serving: super::drift::serving::Serving,
    /// Databases whose schedules this process runs, each with the pool a
    /// pgml call last came through (a reload replaces pools), and the runs
    /// it has going (database key, schedule id).
    pub schedulers: dashmap::DashMap<String, Arc<crate::backend::registry::Pool>>,
    pub running_schedules: DashSet<(String, i64)>,
}

/// Plans kept at most; the cache is emptied when full (cheap, and plans
/// are cheap to rebuild).
const MAX_PLANS: usize = 1024;

/// A running training, for SHOW TRAININGS.
#[derive(Debug, Clone)]
pub struct TrainingInfo {
    pub project: String,
    pub algorithm: String,
    pub database: String,
    pub started: std::time::Instant,
    pub progress: String,
}

impl Ml {
    pub fn new(config: &MlConfig) -> Arc<Ml> {
        let slots = config.max_concurrent_trainings.max(1);
        Arc::new(Ml {
            settings: ArcSwap::from_pointee(config.clone()),
            trainings: Arc::new(Semaphore::new(slots)),
            slots: AtomicUsize::new(slots),
            schema_ready: DashSet::new(),
            cache: ModelCache::default(),
            metrics: MlStats::default(),
            running: dashmap::DashMap::new(),
            next_training: AtomicUsize::new(1),
            plans: dashmap::DashMap::new(),
            lookups: dashmap::DashMap::new(),
            unnormalizable: DashSet::new(),
            serving: Default::default(),
            schedulers: dashmap::DashMap::new(),
            running_schedules: DashSet::new(),
        })
    }

    /// Applies a reloaded `[ml]` section; a larger training bound takes effect
    /// at once, a smaller one as running trainings finish.
    pub fn update(&self, config: &MlConfig) {
        let wanted = config.max_concurrent_trainings.max(1);
        let had = self.slots.swap(wanted, Ordering::SeqCst);
        if wanted > had {
            self.trainings.add_permits(wanted - had);
        } else if wanted < had {
            self.trainings.forget_permits(had - wanted);
        }
        self.settings.store(Arc::new(config.clone()));
    }

    pub fn settings(&self) -> Arc<MlConfig> {
        self.settings.load_full()
    }

    /// Errors when ML is off for this pool.
    pub fn check_enabled(&self, pool: &Pool) -> MlResult<()> {
        if self.settings.load().enabled && pool.ml_enabled {
            Ok(())
        } else {
            Err(MlError::Disabled(format!(
                "pgml functions are switched off for pool \"{}\" ([ml] enabled = false)",
                pool.database
            )))
        }
    }

    /// Threads one training may use. By default one core is left to the
    /// proxy's traffic: LightGBM's OpenMP threads spin while they wait, and
    /// a team with a busy core among its cores slows down many times over.
    pub fn threads(&self) -> usize {
        match self.settings.load().threads {
            0 => {
                std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
            }
            n => n,
        }
    }

    pub fn max_bytes(&self) -> usize {
        self.settings.load().max_memory_mb.saturating_mul(1 << 20)
    }

    /// Waits for a free training slot, telling the client it waits.
    pub async fn training_slot(&self, progress: &Progress) -> MlResult<OwnedSemaphorePermit> {
        if let Ok(permit) = self.trainings.clone().try_acquire_owned() {
            return Ok(permit);
        }
        progress.notice(
            "pgml.train: waiting for a training slot ([ml] max_concurrent_trainings)".into(),
        );
        self.trainings
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| MlError::TooBusy("pgmlcat is shutting down".into()))
    }

    /// The catalog key of a pool: the database its shard 0 primary holds.
    pub fn database_key(pool: &Pool) -> String {
        pool.primary(0).addr.to_string()
    }

    pub async fn ensure_schema(&self, pool: &Pool, db: &mut Db) -> MlResult<()> {
        let key = Ml::database_key(pool);
        if self.schema_ready.contains(&key) {
            return Ok(());
        }
        catalog::ensure_schema(db).await?;
        // Made inside a client's block, the schema exists once it commits.
        if !super::db::lent() {
            self.schema_ready.insert(key);
        }
        Ok(())
    }

    /// Registers a running training; the guard removes it when dropped.
    pub fn start_training(self: &Arc<Ml>, info: TrainingInfo) -> TrainingGuard {
        let id = self.next_training.fetch_add(1, Ordering::Relaxed) as u64;
        self.running.insert(id, info);
        self.metrics.training_started();
        TrainingGuard {
            ml: self.clone(),
            id,
        }
    }

    /// The plan for a normalized statement, with its constants put back;
    /// None when the statement does not plan well that way.
    fn plan_normalized(&self, n: &predict::normalize::Normalized) -> Option<Arc<Plan>> {
        let template = match self.plans.get(&n.key) {
            Some(p) => p.clone(),
            None => {
                if self.unnormalizable.contains(&n.key) {
                    return None;
                }
                // Constants that moved into the proxy (or a constant answer)
                // would not come back through the server SQL.
                let planned = predict::plan(&n.key).ok().flatten().filter(|p| {
                    p.server_sql
                        .as_deref()
                        .is_some_and(|s| predict::normalize::restore(s, &n.literals).is_some())
                });
                let Some(plan) = planned.map(Arc::new) else {
                    if self.unnormalizable.len() >= MAX_PLANS {
                        self.unnormalizable.clear();
                    }
                    self.unnormalizable.insert(n.key.clone());
                    return None;
                };
                if self.plans.len() >= MAX_PLANS {
                    self.plans.clear();
                }
                self.plans.insert(n.key.clone(), plan.clone());
                plan
            }
        };
        let template_sql = template.server_sql.as_deref()?;
        let server_sql = predict::normalize::restore(template_sql, &n.literals)?;
        let mut plan = (*template).clone();
        plan.server_form = match predict::normalize::parameterize(template_sql, &n.literals) {
            Some(p) => predict::ServerForm::Params(p),
            None => predict::ServerForm::OneOff,
        };
        plan.server_sql = Some(server_sql);
        Some(Arc::new(plan))
    }

    /// The general method's plan of `sql`: for statements the streaming
    /// rewrite refuses.
    fn lookup_plan(&self, sql: &str) -> MlResult<Arc<predict::LookupPlan>> {
        let plan = Arc::new(predict::lookup::plan(sql)?);
        if self.lookups.len() >= MAX_PLANS {
            self.lookups.clear();
        }
        self.lookups.insert(sql.to_string(), plan.clone());
        Ok(plan)
    }

    /// Whether `sql` has a cached pgml.predict plan.
    pub fn has_plan(&self, sql: &str) -> bool {
        self.plans.contains_key(sql)
            || self.lookups.contains_key(sql)
            || predict::normalize::normalize(sql).is_some_and(|n| {
                self.plans.contains_key(&n.key) || self.unnormalizable.contains(&n.key)
            })
    }

    /// How a statement calling pgml.predict runs (None if it calls none):
    /// the streaming rewrite, or the general method for what that refuses.
    /// Each text is planned once; a statement seen before costs a lookup
    /// (the streaming plans first: they are the hot path).
    pub fn planned(&self, sql: &str) -> MlResult<Option<predict::Planned>> {
        if let Some(plan) = self.plans.get(sql) {
            return Ok(Some(predict::Planned::Stream(plan.clone())));
        }
        if let Some(plan) = self.lookups.get(sql) {
            return Ok(Some(predict::Planned::Lookup(plan.clone())));
        }
        match self.stream_plan(sql) {
            Ok(plan) => Ok(plan.map(predict::Planned::Stream)),
            Err(MlError::Unsupported(_)) => self
                .lookup_plan(sql)
                .map(|plan| Some(predict::Planned::Lookup(plan))),
            Err(e) => Err(e),
        }
    }

    /// The streaming plan of a statement not in the cache by its text.
    /// Statements differing only in compared constants share one plan.
    fn stream_plan(&self, sql: &str) -> MlResult<Option<Arc<Plan>>> {
        if let Some(n) = predict::normalize::normalize(sql) {
            if let Some(plan) = self.plan_normalized(&n) {
                return Ok(Some(plan));
            }
        }
        let Some(plan) = predict::plan(sql)? else {
            return Ok(None);
        };
        let plan = Arc::new(plan);
        if self.plans.len() >= MAX_PLANS {
            self.plans.clear();
        }
        self.plans.insert(sql.to_string(), plan.clone());
        Ok(Some(plan))
    }
}

pub struct TrainingGuard {
    ml: Arc<Ml>,
    id: u64,
}

impl TrainingGuard {
    pub fn progress(&self, message: &str) {
        if let Some(mut t) = self.ml.running.get_mut(&self.id) {
            t.progress = message.to_string();
        }
    }
}

impl Drop for TrainingGuard {
    fn drop(&mut self) {
        self.ml.running.remove(&self.id);
    }
}
