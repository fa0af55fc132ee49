//! The scheduler every pgmlcat process runs for each database it has
//! served a pgml call on (so a process in front of databases without ML
//! never connects on its own): once a second it looks for due schedules.
//!
//! Exactly one process runs each due time, whichever polls first: a run
//! holds the schedule's advisory lock on a connection of its own for as
//! long as it runs (so runs of one schedule never overlap, and a process
//! that dies releases it with its connection), and claims the due time by
//! moving `next_run` past now in the same statement that records the run
//! (`UNIQUE (schedule_id, due)` backs it). A failing run is recorded and
//! leaves the deployment as it was: the training writes nothing until its
//! model is in the catalog, and deploys only a better one.

use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::{Map, Value};

use super::Condition;
use crate::backend::registry::Pool;
use crate::backend::Server;
use crate::ml::args::{DeployRule, TrainArgs};
use crate::ml::catalog;
use crate::ml::drift;
use crate::ml::error::{MlError, MlResult};
use crate::ml::exec;
use crate::ml::search::Search;
use crate::ml::service::{Ml, Progress};
use crate::ml::split::Sampling;
use crate::router::Target;

/// Advisory lock class of schedule runs (the schema's is 7304151).
const LOCK_CLASS: i32 = 7304152;
const POLL: Duration = Duration::from_secs(1);

/// How a run ended, as `pgml.schedule_runs.outcome` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Deployed,
    /// Retrained, not better on the same test rows: not deployed.
    Kept,
    /// The condition did not hold.
    Skipped,
    Failed,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Deployed => "deployed",
            Outcome::Kept => "kept",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
        }
    }
}

/// The scheduler of a pool: its database and user (a schedule runs with
/// the rights of the user who made it).
fn scheduler_key(pool: &Pool) -> String {
    format!("{} {}", Ml::database_key(pool), pool.user)
}

/// Starts the pool's scheduler in this process, once, and keeps the pool
/// it uses the one calls come through now (a reload replaces pools).
pub fn watch(ml: &Arc<Ml>, pool: &Arc<Pool>) {
    let key = scheduler_key(pool);
    // The map's guard is dropped at the `;`: inserting while holding it
    // would wait on itself.
    let known = ml.schedulers.get(&key).map(|p| Arc::ptr_eq(&p, pool));
    match known {
        Some(true) => return,
        Some(false) => {
            ml.schedulers.insert(key, pool.clone());
            return;
        }
        None => {}
    }
    if ml.schedulers.insert(key.clone(), pool.clone()).is_some() {
        return; // another call started it meanwhile
    }
    let weak = Arc::downgrade(ml);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(ml) = weak.upgrade() else { return };
            let Some(pool) = ml.schedulers.get(&key).map(|p| p.clone()) else {
                return;
            };
            if let Err(e) = poll(&ml, &weak, &pool, &key).await {
                tracing::debug!(database = %pool.database, "scheduler poll: {e}");
            }
        }
    });
}

/// Starts a run of every due schedule of the pool's user that no process
/// is running (none while ML is switched off for the pool).
async fn poll(ml: &Arc<Ml>, weak: &Weak<Ml>, pool: &Arc<Pool>, key: &str) -> MlResult<()> {
    if ml.check_enabled(pool).is_err() {
        return Ok(());
    }
    let mut db = crate::ml::db::Db::checkout(pool.primary(0)).await?;
    // A schedule whose lock is held is running somewhere: not tried again
    // (which would take a connection) until it is done.
    let due = db
        .query(
            &format!(
                "SELECT s.id::text, s.project_id::text FROM pgml.schedules s \
                 WHERE s.next_run <= clock_timestamp() AND s.owner = current_user \
                   AND NOT EXISTS (SELECT FROM pg_locks l WHERE l.locktype = 'advisory' \
                        AND l.classid = {LOCK_CLASS} AND l.objid = (s.project_id % 2147483647) \
                        AND l.objsubid = 2 AND l.database = (SELECT oid FROM pg_database \
                                                              WHERE datname = current_database())) \
                 ORDER BY s.next_run"
            ),
            &[],
        )
        .await?;
    drop(db);
    for row in due {
        let mut row = row.into_iter().flatten();
        let (Some(Ok(id)), Some(Ok(project_id))) = (
            row.next().map(|v| v.parse::<i64>()),
            row.next().map(|v| v.parse::<i64>()),
        ) else {
            continue;
        };
        let running = (key.to_string(), id);
        if !ml.running_schedules.insert(running.clone()) {
            continue;
        }
        let (weak, pool) = (weak.clone(), pool.clone());
        tokio::spawn(async move {
            let Some(ml) = weak.upgrade() else { return };
            // Forgotten even if the run panics: the schedule stays runnable.
            let _running = Running(&ml, running);
            if let Err(e) = run_due(&ml, &pool, id, project_id).await {
                tracing::warn!(database = %pool.database, schedule = id, "scheduled run: {e}");
            }
        });
    }
    Ok(())
}

/// A run this process has going, forgotten when it ends.
struct Running<'a>(&'a Ml, (String, i64));

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running_schedules.remove(&self.1);
    }
}

/// A claimed run: what to do and where to record it.
struct Claimed {
    run: String,
    project: String,
    relation: Option<String>,
    condition: Option<String>,
}

async fn run_due(ml: &Arc<Ml>, pool: &Arc<Pool>, id: i64, project_id: i64) -> MlResult<()> {
    let server = pool.primary(0);
    let mut conn = server.connect(&server.settings()).await?;
    // The lock lives as long as this connection: a session timeout must
    // not end it while the training runs.
    conn.execute("SET idle_session_timeout = 0").await?;
    let key = id.to_string();
    // By project: a schedule replaced mid-run (unschedule, schedule) must
    // not retrain the project twice at once.
    let locked = conn
        .query(
            &format!(
                "SELECT pg_try_advisory_lock({LOCK_CLASS}, ($1::bigint % 2147483647)::int)::text"
            ),
            &[Some(&project_id.to_string())],
        )
        .await?;
    if first(&locked).as_deref() != Some("true") {
        return Ok(()); // another process is running this schedule
    }
    let Some(claimed) = claim(&mut conn, &key).await? else {
        return Ok(()); // claimed elsewhere since the poll
    };
    tracing::info!(project = %claimed.project, "scheduled retraining starts");
    let (outcome, model, detail) = match job(ml, pool, &claimed).await {
        Ok((outcome, model, detail)) => (outcome, model, detail),
        Err(e) => (Outcome::Failed, None, format!("{}: {e}", e.sqlstate())),
    };
    tracing::info!(project = %claimed.project, outcome = outcome.name(), "scheduled retraining: {detail}");
    let model = model.map(|m| m.to_string());
    let record = "UPDATE pgml.schedule_runs SET finished = clock_timestamp(), outcome = $2, \
                  model_id = $3::bigint, detail = $4 WHERE id = $1::bigint";
    let params = [
        Some(claimed.run.as_str()),
        Some(outcome.name()),
        model.as_deref(),
        Some(detail.as_str()),
    ];
    if let Err(e) = conn.query(record, &params).await {
        // The lock's connection was lost during the training: the outcome
        // is still this run's to record.
        tracing::warn!(project = %claimed.project, "scheduled run: lock connection lost ({e})");
        crate::ml::db::Db::checkout(pool.primary(0))
            .await?
            .query(record, &params)
            .await?;
    }
    ml.metrics.schedule_run(&claimed.project, outcome.name());
    // Closing the connection releases the lock.
    Ok(())
}

/// Moves the schedule's `next_run` to its first due time after now and
/// records the run of the due time passed, in one statement. Runs of the
/// schedule still marked running are over (this run holds the lock they
/// held: their process ended), and are marked failed.
async fn claim(conn: &mut Server, id: &str) -> MlResult<Option<Claimed>> {
    let instance = format!(
        "{}:{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| hostname()),
        std::process::id()
    );
    let rows = conn
        .query(
            "WITH due AS (SELECT * FROM pgml.schedules WHERE id = $1::bigint \
                          AND next_run <= clock_timestamp() FOR UPDATE), \
                  k AS (SELECT greatest(floor(extract(epoch FROM clock_timestamp() - due.next_run) \
                                              / extract(epoch FROM due.every)) - 1, 1) AS k FROM due), \
                  moved AS (UPDATE pgml.schedules s SET next_run = \
                              (SELECT coalesce(min(c), clock_timestamp() + due.every) FROM k, LATERAL (VALUES (due.next_run + due.every * k.k), \
                                  (due.next_run + due.every * (k.k + 1)), (due.next_run + due.every * (k.k + 2)), \
                                  (due.next_run + due.every * (k.k + 3))) v(c) WHERE c > clock_timestamp()) \
                            FROM due WHERE s.id = due.id RETURNING s.id), \
                  abandoned AS (UPDATE pgml.schedule_runs r SET outcome = 'failed', \
                                  finished = clock_timestamp(), \
                                  detail = 'abandoned: the pgmlcat process running it ended' \
                                FROM due WHERE r.schedule_id = due.id AND r.outcome = 'running'), \
                  run AS (INSERT INTO pgml.schedule_runs (schedule_id, project, due, instance) \
                          SELECT due.id, p.name, due.next_run, $2 FROM due \
                          JOIN moved ON moved.id = due.id JOIN pgml.projects p ON p.id = due.project_id \
                          RETURNING id, project) \
             SELECT run.id::text, run.project, due.relation_name, due.condition FROM run, due",
            &[Some(id), Some(&instance)],
        )
        .await;
    let rows = match rows {
        Ok(rows) => rows,
        // The same due time recorded by another process.
        Err(crate::errors::Error::ServerRefused { fields, .. }) if fields.code == "23505" => {
            return Ok(None)
        }
        Err(e) => return Err(e.into()),
    };
    let Some(row) = rows.into_iter().next() else {
        return Ok(None);
    };
    let mut row = row.into_iter();
    let (Some(Some(run)), Some(Some(project)), Some(relation), Some(condition)) =
        (row.next(), row.next(), row.next(), row.next())
    else {
        return Err(MlError::Internal("bad claimed run row".into()));
    };
    Ok(Some(Claimed {
        run,
        project,
        relation,
        condition,
    }))
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "pgmlcat".into())
}

fn first(rows: &[Vec<Option<String>>]) -> Option<String> {
    rows.first().and_then(|r| r.first().cloned().flatten())
}

/// The run: the condition, then a retraining of the deployed model's
/// algorithm and settings on the relation.
async fn job(
    ml: &Arc<Ml>,
    pool: &Arc<Pool>,
    c: &Claimed,
) -> MlResult<(Outcome, Option<i64>, String)> {
    let condition = Condition::parse(c.condition.as_deref())?;
    let mut db = crate::ml::db::Db::checkout(pool.primary(0)).await?;
    let deployed = Retrain::read(&mut db, &c.project).await?;
    drop(db);
    let relation = c
        .relation
        .clone()
        .unwrap_or_else(|| deployed.relation.clone());
    match condition {
        Condition::Always => {}
        Condition::Drift => {
            let drifted: Vec<String> = drift::check(ml, pool, &c.project, Some(&relation))
                .await?
                .into_iter()
                .filter(|d| d.drifted() == Some(true))
                .map(|d| format!("{} {}", d.feature, d.statistic.name()))
                .collect();
            if drifted.is_empty() {
                return Ok((Outcome::Skipped, None, "no feature drifted".into()));
            }
        }
        Condition::NewRows(n) => {
            let now = row_count(pool, &relation).await?;
            let new = now.saturating_sub(deployed.rows);
            if new <= n {
                return Ok((
                    Outcome::Skipped,
                    None,
                    format!("{new} new rows in {relation} (the condition wants more than {n})"),
                ));
            }
        }
    }
    let t = exec::training(
        ml,
        pool,
        deployed.args(&c.project, relation),
        Progress::default(),
    )
    .await?;
    let (outcome, verb) = if t.deployed {
        (Outcome::Deployed, "deployed")
    } else {
        (
            Outcome::Kept,
            "not better than the deployed model on the same test rows: kept the deployed one",
        )
    };
    Ok((
        outcome,
        Some(t.model_id),
        format!("model {} {verb}", t.model_id),
    ))
}

/// Rows of `relation` on every shard.
async fn row_count(pool: &Arc<Pool>, relation: &str) -> MlResult<u64> {
    let mut total = 0;
    for shard in 0..pool.shards.len() {
        let mut db = crate::ml::db::Db::checkout(pool.choose(shard, Target::Replica)).await?;
        let source = crate::ml::pull::describe(&mut db, relation).await?;
        let n = db
            .query_one(
                &format!("SELECT count(*)::text FROM {}", source.relation),
                &[],
            )
            .await?;
        total += n
            .first()
            .cloned()
            .flatten()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

/// What the deployed model was trained with, to train it again.
struct Retrain {
    algorithm: String,
    hyperparams: Map<String, Value>,
    relation: String,
    y_columns: Vec<String>,
    test_size: f64,
    test_sampling: Sampling,
    preprocess: Map<String, Value>,
    /// Rows the snapshot read.
    rows: u64,
}

impl Retrain {
    async fn read(db: &mut crate::ml::db::Db, project: &str) -> MlResult<Retrain> {
        let none = || {
            MlError::UndefinedObject(format!(
                "project \"{project}\" has no deployed model trained on a relation to retrain"
            ))
        };
        let trained = catalog::deployed_training(db, project)
            .await?
            .ok_or_else(none)?;
        let snapshot = trained.snapshot.ok_or_else(none)?;
        let Value::Object(hyperparams) = trained.hyperparams else {
            return Err(MlError::Internal("hyperparams is not an object".into()));
        };
        let preprocess = catalog::feature_columns(&snapshot.columns)
            .filter_map(|c| {
                Some((
                    c.get("name")?.as_str()?.to_string(),
                    c.get("preprocessor")?.clone(),
                ))
            })
            .collect();
        Ok(Retrain {
            algorithm: trained.algorithm,
            hyperparams,
            relation: snapshot.relation,
            y_columns: snapshot.y_columns,
            test_size: snapshot.test_size,
            test_sampling: Sampling::parse(&snapshot.test_sampling)?,
            preprocess,
            rows: snapshot
                .analysis
                .get("samples")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        })
    }

    fn args(mut self, project: &str, relation: String) -> TrainArgs {
        // A group set stores its columns among its hyperparameters.
        let group_by = match self.hyperparams.remove("group_by") {
            Some(Value::Array(columns)) => columns
                .iter()
                .filter_map(|c| c.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        };
        TrainArgs {
            project: project.to_string(),
            task: None,
            relation: Some(relation),
            y_columns: self.y_columns,
            algorithm: self.algorithm,
            hyperparams: self.hyperparams,
            search: None::<Search>,
            search_params: Map::new(),
            search_args: Map::new(),
            test_size: self.test_size,
            test_sampling: self.test_sampling,
            automatic_deploy: true,
            materialize_snapshot: false,
            preprocess: Value::Object(self.preprocess),
            group_by,
            pushdown: None,
            streaming: None,
            deploy_rule: DeployRule::SameTestRows,
        }
    }
}
