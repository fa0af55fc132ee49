//! One warm copy of each deployed model per pgmlcat process, shared by all
//! clients (PostgresML loaded models per backend: a cold first predict on
//! every connection). Models load lazily on first use; a deploy swaps the
//! entry; other processes hear of deploys by LISTEN/NOTIFY and drop theirs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::{DashMap, DashSet};
use serde_json::Value;

use super::algorithms::{self, Algorithm};
use super::catalog::{self, ModelRow, DEPLOY_CHANNEL};
use super::db::Db;
use super::error::{MlError, MlResult};
use super::labels::Classes;
use super::preprocess::Preprocessor;
use super::service::{Deployed, GroupModels, Ml, StoredModel};
use crate::backend::pool::ServerPool;
use crate::backend::registry::Pool;
use postgres_protocol::message::backend::Message;

type Key = (String, String);

#[derive(Default)]
pub struct ModelCache {
    /// (database key, project) → the deployed model.
    deployed: DashMap<Key, (Arc<Deployed>, Instant)>,
    /// (database key, model id) → a specific model (pgml.predict(id, ...)).
    by_id: DashMap<(String, i64), Arc<Deployed>>,
    /// Serialises loads so a burst of first predictions loads a model once.
    loading: tokio::sync::Mutex<()>,
    listeners: DashSet<String>,
}

/// A cache entry as SHOW MODELS lists it.
pub struct CachedModel {
    pub database: String,
    pub project: String,
    pub model_id: i64,
    pub algorithm: String,
    pub task: String,
    pub score: Option<f64>,
    pub loaded_for: Duration,
}

impl ModelCache {
    /// The model a training just deployed. Not also kept by id: entries
    /// by id are never dropped, and each training of a project would
    /// keep one more (a thousand-group set is hundreds of MB); a
    /// prediction by id loads it on first use.
    pub fn put_deployed(&self, pool: &Pool, project: &str, model: Arc<Deployed>) {
        let key = Ml::database_key(pool);
        self.deployed
            .insert((key, project.to_string()), (model, Instant::now()));
    }

    pub fn invalidate(&self, database: &str, project: &str) {
        self.deployed
            .remove(&(database.to_string(), project.to_string()));
    }

    fn invalidate_database(&self, database: &str) {
        self.deployed.retain(|(db, _), _| db != database);
    }

    pub fn entries(&self) -> Vec<CachedModel> {
        let mut out: Vec<CachedModel> = self
            .deployed
            .iter()
            .map(|e| {
                let ((database, project), (model, at)) = (e.key(), e.value());
                CachedModel {
                    database: database.clone(),
                    project: project.clone(),
                    model_id: model.id(),
                    algorithm: model.algorithm().name().to_string(),
                    task: model.task().name().to_string(),
                    score: model.score(),
                    loaded_for: at.elapsed(),
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.database, &a.project).cmp(&(&b.database, &b.project)));
        out
    }

    pub fn is_loaded(&self, database: &str, project: &str) -> bool {
        self.deployed
            .contains_key(&(database.to_string(), project.to_string()))
    }

    /// The deployed model of `project`, loaded on first use.
    pub async fn deployed(
        &self,
        ml: &Arc<Ml>,
        pool: &Arc<Pool>,
        project: &str,
    ) -> MlResult<Arc<Deployed>> {
        let key = (Ml::database_key(pool), project.to_string());
        // Inside a client's block that may have deployed: the block's
        // catalog decides, and nothing of it is cached for others.
        if super::db::lent() {
            return load_deployed(ml, pool, project).await.map(Arc::new);
        }
        if let Some(hit) = self.deployed.get(&key) {
            return Ok(hit.0.clone());
        }
        let _one_at_a_time = self.loading.lock().await;
        if let Some(hit) = self.deployed.get(&key) {
            return Ok(hit.0.clone());
        }
        self.listen(ml, pool);
        // A process that only predicts runs the database's schedules too;
        // started here, on a load, not on every prediction.
        super::schedule::runner::watch(ml, pool);
        let model = Arc::new(load_deployed(ml, pool, project).await?);
        self.deployed.insert(key, (model.clone(), Instant::now()));
        Ok(model)
    }

    /// A specific model by id (not necessarily deployed).
    pub async fn by_id(&self, ml: &Ml, pool: &Arc<Pool>, id: i64) -> MlResult<Arc<Deployed>> {
        let key = (Ml::database_key(pool), id);
        if super::db::lent() {
            return load_by_id(ml, pool, id).await.map(Arc::new);
        }
        if let Some(hit) = self.by_id.get(&key) {
            return Ok(hit.clone());
        }
        let _one_at_a_time = self.loading.lock().await;
        if let Some(hit) = self.by_id.get(&key) {
            return Ok(hit.clone());
        }
        let model = Arc::new(load_by_id(ml, pool, id).await?);
        self.by_id.insert(key, model.clone());
        Ok(model)
    }

    /// Starts, once per database, a task that LISTENs for deployments made
    /// by any pgmlcat process and drops the stale cache entry.
    fn listen(&self, ml: &Arc<Ml>, pool: &Arc<Pool>) {
        let database = Ml::database_key(pool);
        if !self.listeners.insert(database.clone()) {
            return;
        }
        let server = pool.primary(0).clone();
        // Weak: the task must not keep a replaced Ml alive (tests build many).
        let ml = Arc::downgrade(ml);
        tokio::spawn(async move {
            let mut reconnect = false;
            loop {
                let Some(ml) = ml.upgrade() else { return };
                if let Err(e) = listen_once(&server, &database, &ml, reconnect).await {
                    tracing::warn!(server = %server.addr, "LISTEN {DEPLOY_CHANNEL} failed: {e}; retrying");
                }
                drop(ml);
                reconnect = true;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

async fn listen_once(
    server: &Arc<ServerPool>,
    database: &str,
    ml: &Ml,
    reconnect: bool,
) -> MlResult<()> {
    let settings = server.settings();
    let mut conn = server.connect(&settings).await?;
    conn.execute(&format!("LISTEN {DEPLOY_CHANNEL}")).await?;
    if reconnect {
        // Deploys made while we were not listening went unheard. (While the
        // database is unreachable the warm models keep serving.)
        ml.cache.invalidate_database(database);
    }
    loop {
        if let Message::NotificationResponse(note) = conn.recv_message().await? {
            // The payload is the project whose deployment changed.
            if let Ok(project) = note.message() {
                tracing::debug!(project, "deployment notice: dropping cached model");
                ml.cache.invalidate(database, project);
            }
        }
    }
}

/// Builds a model from its catalog row and files.
/// The deployed model of `project`, read from the catalog (not cached).
async fn load_deployed(ml: &Ml, pool: &Arc<Pool>, project: &str) -> MlResult<Deployed> {
    let mut db = Db::checkout(pool.primary(0)).await?;
    ml.ensure_schema(pool, &mut db).await?;
    let row = catalog::deployed(&mut db, project).await?.ok_or_else(|| {
        MlError::UndefinedObject(format!(
            "no deployed model for project \"{project}\": train one with pgml.train or deploy one with pgml.deploy"
        ))
    })?;
    load(&mut db, &row).await
}

/// Model `id`, read from the catalog (not cached).
async fn load_by_id(ml: &Ml, pool: &Arc<Pool>, id: i64) -> MlResult<Deployed> {
    let mut db = Db::checkout(pool.primary(0)).await?;
    ml.ensure_schema(pool, &mut db).await?;
    let row = catalog::model(&mut db, id)
        .await?
        .ok_or_else(|| MlError::UndefinedObject(format!("model {id} does not exist")))?;
    load(&mut db, &row).await
}

/// A model, or a group set with every group's model.
async fn load(db: &mut Db, row: &ModelRow) -> MlResult<Deployed> {
    let (columns, groups) = catalog::group_models(db, row.id).await?;
    if columns.is_empty() {
        let files = catalog::files(db, &[row.id]).await?;
        return build(row, &files).map(Deployed::Model);
    }
    let mut models = std::collections::HashMap::with_capacity(groups.len());
    // The members' files a batch at a time: few round trips, and never
    // every model's text at once.
    for batch in groups.chunks(64) {
        let ids: Vec<i64> = batch.iter().map(|(id, _)| *id).collect();
        let files = catalog::files(db, &ids).await?;
        for (id, key) in batch {
            let member = ModelRow {
                id: *id,
                group_of: Some(row.id),
                ..row.clone()
            };
            models.insert(key.clone(), Arc::new(build(&member, &files)?));
        }
    }
    Ok(Deployed::Groups(GroupModels {
        id: row.id,
        task: row.task,
        algorithm: Algorithm::parse(&row.algorithm, row.task)?,
        score: row
            .metrics
            .get(row.task.key_metric())
            .and_then(Value::as_f64),
        columns,
        models,
    }))
}

/// A model from its row and the files read for it (`files` by model id).
fn build(
    row: &ModelRow,
    files: &std::collections::HashMap<i64, Vec<(String, Vec<u8>)>>,
) -> MlResult<StoredModel> {
    let files = files.get(&row.id).map(Vec::as_slice).unwrap_or_default();
    let file = |name: &str| {
        files
            .iter()
            .find(|(p, _)| p == name)
            .map(|(_, d)| d.as_slice())
            .ok_or_else(|| MlError::Internal(format!("model {} has no file {name}", row.id)))
    };
    let algorithm = Algorithm::parse(&row.algorithm, row.task)?;
    let model = algorithms::load(algorithm, row.task, file("model")?)?;
    let meta: Value = serde_json::from_slice(file("meta.json")?)
        .map_err(|e| MlError::Internal(format!("model {} meta: {e}", row.id)))?;
    let classes: Option<Classes> = meta
        .get("classes")
        .cloned()
        .and_then(|c| serde_json::from_value(c).ok());
    let means: Vec<f64> = meta
        .pointer("/insight/means")
        .cloned()
        .and_then(|m| serde_json::from_value(m).ok())
        .unwrap_or_default();
    let preprocessor: Preprocessor = serde_json::from_slice(file("preprocessor.json")?)
        .map_err(|e| MlError::Internal(format!("model {} preprocessor: {e}", row.id)))?;
    Ok(StoredModel {
        id: row.id,
        task: row.task,
        algorithm,
        model: Arc::from(model),
        preprocessor: Arc::new(preprocessor),
        classes,
        score: row
            .metrics
            .get(row.task.key_metric())
            .and_then(Value::as_f64),
        means,
    })
}
