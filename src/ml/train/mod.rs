//! pgml.train: arguments → data pull → split → preprocessing → (search with
//! cross-validation) → fit → metrics → catalog rows and files, committed in
//! one transaction → deployment. CPU work runs on blocking threads.
//! `groups` trains one model per group the same way.

mod automl;
mod fit;
mod groups;
mod models;
mod pushdown;
mod stream;

use std::sync::Arc;

use ndarray::{Array2, Axis};
use serde_json::{json, Map, Value};
use tokio::task::JoinHandle;

use super::algorithms::{Algorithm, Model};
use super::args::{DeployRule, TrainArgs};
use super::catalog::{self, Meta, ModelFiles, NewModel, NewSnapshot, Project};
use super::db::Db;
use super::error::{MlError, MlResult};
use super::evaluate;
use super::explain::Insight;
use super::frame::Frame;
use super::labels::{self, Classes};
use super::preprocess::{self, Preprocessor};
use super::pull;
use super::search::Search;
use super::service::{Deployed, Ml, Progress, StoredModel};
use super::split::{self, Sampling};
use super::task::Task;
use crate::backend::registry::Pool;
use crate::router::Target;

const SEED: u64 = 42;

use fit::{fit_model, fit_score};

/// The row pgml.train returns.
pub struct Trained {
    pub project: String,
    pub task: Task,
    pub algorithm: String,
    pub deployed: bool,
    /// The model written (with `group_by`: the set's).
    pub model_id: i64,
    /// With `group_by`: the number of groups trained.
    pub groups: Option<usize>,
}

/// The split and preprocessed arrays a fit needs, owned, so they can move
/// to a blocking thread.
#[derive(Clone)]
struct TrainingSet {
    task: Task,
    algorithm: Algorithm,
    x_train: Array2<f64>,
    y_train: Array2<f64>,
    x_test: Array2<f64>,
    y_test: Array2<f64>,
    num_classes: usize,
    threads: usize,
}

/// What the snapshot is taken of: the relation and how it is split.
#[derive(Clone)]
struct Source {
    relation: String,
    y_columns: Vec<String>,
    test_size: f64,
    sampling: Sampling,
}

/// The relation as read and prepared for the fit.
struct Data {
    frame: Arc<Frame>,
    /// The frame's label and feature columns, by index.
    label_idx: Vec<usize>,
    features: Vec<usize>,
    classes: Option<Classes>,
    train_rows: Vec<usize>,
    test_rows: Vec<usize>,
    pre: Preprocessor,
    /// Per feature then per label column, for the snapshot; computed while
    /// the model fits (a group's model has none: its set's snapshot does).
    statistics: Option<JoinHandle<Vec<Value>>>,
    set: Arc<TrainingSet>,
}

/// The model trained, as it goes into the catalog.
struct Fitted {
    model: Box<dyn Model>,
    metrics: Map<String, Value>,
    /// The winner of the search, or the ones given.
    hyperparams: Map<String, Value>,
    /// Training means and feature importance, for explanations.
    insight: Insight,
}

pub async fn train(
    ml: &Arc<Ml>,
    pool: &Arc<Pool>,
    args: TrainArgs,
    progress: &Progress,
) -> MlResult<Trained> {
    let mut catalog_db = Db::checkout(pool.primary(0)).await?;
    ml.ensure_schema(pool, &mut catalog_db).await?;
    let existing = catalog::project(&mut catalog_db, &args.project).await?;
    let task = project_task(&args, existing.as_ref())?;
    let auto = automl::is_auto(&args.algorithm);
    let algorithm = if auto {
        automl::check(&args, task)?;
        // Stands in until the search chooses: auto always pulls the rows.
        Algorithm::Linear
    } else {
        Algorithm::parse(&args.algorithm, task)?
    };
    let source = source(&mut catalog_db, &args, existing.as_ref(), task).await?;

    // The catalog connection goes back to the pool while data is read and
    // the model fits (that may take minutes); it is taken again to write.
    drop(catalog_db);
    let run = models::Run {
        ml,
        pool,
        args: &args,
        existing: existing.as_ref(),
        task,
        algorithm,
        source: &source,
        progress,
    };
    let pushdown = chosen(
        args.pushdown.or(auto.then_some(false)),
        pushdown::applies(task, algorithm),
        pushdown::large(&run),
        progress,
        || {
            format!(
            "{} has over {} rows: training by aggregates in the database (hyperparams => '{{\"pushdown\": false}}' pulls the rows instead)",
            source.relation,
            pushdown::AUTO_ROWS
        )
        },
    );
    if pushdown.await? {
        return run.train_pushdown().await;
    }
    let streaming = chosen(
        args.streaming.or(auto.then_some(false)),
        stream::applies(task, algorithm),
        stream::large(&run),
        progress,
        || {
            format!(
            "{} is large for [ml] max_memory_mb: streaming its rows into LightGBM (hyperparams => '{{\"streaming\": false}}' reads them into memory)",
            source.relation
        )
        },
    );
    if streaming.await? {
        return run.train_streaming().await;
    }
    if !args.group_by.is_empty() {
        return run.train_groups().await;
    }
    let frame = read_relation(ml, pool, &source.relation, &source.y_columns, &[], progress).await?;
    progress.notice(format!(
        "pgml.train: read {} rows from {}",
        frame.rows, source.relation
    ));
    let mut data = prepare(
        frame,
        &source,
        &args.preprocess,
        task,
        algorithm,
        ml.threads(),
    )?;
    data.statistics = Some(spawn_statistics(
        &data.frame,
        &data.features,
        &data.label_idx,
        &data.train_rows,
    ));
    // Held until the model is in the catalog.
    let _slot = ml.training_slot(progress).await?;
    let mut args = args;
    let mut leaderboard = None;
    if auto {
        let choice = automl::choose(&data.set, &args, ml.threads(), progress).await?;
        let mut set = Arc::unwrap_or_clone(data.set);
        set.algorithm = choice.algorithm;
        data.set = Arc::new(set);
        args.hyperparams = choice.hyperparams;
        leaderboard = Some(choice.leaderboard);
    }
    let algorithm = data.set.algorithm;
    let mut fitted = fit_model(&data, &args, progress).await?;
    if let Some(board) = leaderboard {
        fitted.metrics.insert("search_results".into(), board);
    }

    progress.notice(format!("pgml.train: {}", stream::memory_use()));
    let rescored = match args.deploy_rule {
        DeployRule::SameTestRows if args.automatic_deploy && existing.is_some() => {
            deployed_on_test_rows(ml, pool, &args.project, &data, progress).await
        }
        _ => None,
    };
    let (model_id, deployed) = write_catalog(
        pool,
        &args,
        existing.as_ref(),
        &source,
        &mut data,
        &fitted,
        rescored,
    )
    .await?;
    if deployed {
        let stored = StoredModel {
            id: model_id,
            task,
            algorithm,
            score: fitted
                .metrics
                .get(task.key_metric())
                .and_then(Value::as_f64),
            model: Arc::from(fitted.model),
            preprocessor: Arc::new(data.pre),
            classes: data.classes,
            means: fitted.insight.means,
        };
        let stored = Arc::new(Deployed::Model(stored));
        if super::db::lent() {
            // Deployed inside a client's block: other clients see it once
            // the block commits (the NOTIFY of the deploy then drops every
            // process's entry); until then the catalog says what it is.
            ml.cache.invalidate(&Ml::database_key(pool), &args.project);
        } else {
            ml.cache.put_deployed(pool, &args.project, stored);
        }
        progress.notice(format!("pgml.train: deployed model {model_id}"));
    }
    Ok(Trained {
        project: args.project,
        task,
        algorithm: algorithm.name().to_string(),
        deployed,
        model_id,
        groups: None,
    })
}

/// `DeployRule::SameTestRows`: the deployed model's key metric on the new
/// model's test rows; None (the stored scores decide) when it cannot say.
async fn deployed_on_test_rows(
    ml: &Arc<Ml>,
    pool: &Arc<Pool>,
    project: &str,
    data: &Data,
    progress: &Progress,
) -> Option<Option<f64>> {
    let deployed = ml.cache.deployed(ml, pool, project).await.ok()?;
    let labels: Vec<String> = data
        .label_idx
        .iter()
        .map(|&i| data.frame.columns[i].name.clone())
        .collect();
    let key = data.set.task.key_metric();
    let scored = evaluate::score_rows(deployed, &data.frame, &labels, data.test_rows.clone())
        .await
        .and_then(|s| s.metrics(0.5));
    match scored {
        Ok(metrics) => {
            let score = metrics.get(key).and_then(Value::as_f64);
            progress.notice(format!(
                "pgml.train: the deployed model scores {key} = {} on the new model's test rows",
                score.map_or("NULL".into(), |s| format!("{s:.4}"))
            ));
            Some(score)
        }
        Err(e) => {
            progress.notice(format!(
                "pgml.train: the deployed model cannot score the new test rows ({e}); comparing stored scores"
            ));
            None
        }
    }
}

/// One of pgmlcat's own ways of training (pushdown, streaming): as asked,
/// or where it applies as the relation's size decides, with a NOTICE that
/// says why and how to ask otherwise.
async fn chosen(
    asked: Option<bool>,
    applies: bool,
    large: impl std::future::Future<Output = MlResult<bool>>,
    progress: &Progress,
    why: impl FnOnce() -> String,
) -> MlResult<bool> {
    match asked {
        Some(asked) => Ok(asked),
        None if applies => {
            let large = large.await?;
            if large {
                progress.notice(format!("pgml.train: {}", why()));
            }
            Ok(large)
        }
        None => Ok(false),
    }
}

/// The project's task: the one it has, or for a new project the one named.
fn project_task(args: &TrainArgs, existing: Option<&Project>) -> MlResult<Task> {
    match (existing, args.task) {
        (Some(p), Some(t)) if p.task != t => Err(MlError::invalid(format!(
            "project \"{}\" is a {} project; a later pgml.train cannot change its task to {}",
            args.project,
            p.task.name(),
            t.name()
        ))),
        (Some(p), _) => Ok(p.task),
        (None, Some(t)) => Ok(t),
        (None, None) => Err(MlError::invalid(format!(
            "project \"{}\" does not exist yet: its first pgml.train must name a task",
            args.project
        ))),
    }
}

/// Which data: the named relation, or the project's last snapshot.
async fn source(
    catalog_db: &mut Db,
    args: &TrainArgs,
    existing: Option<&Project>,
    task: Task,
) -> MlResult<Source> {
    let source = match &args.relation {
        Some(r) => Source {
            relation: r.clone(),
            y_columns: args.y_columns.clone(),
            test_size: args.test_size,
            sampling: args.test_sampling,
        },
        None => {
            let project = existing.ok_or_else(|| {
                MlError::invalid(format!(
                    "project \"{}\" has no snapshot to reuse: name a relation",
                    args.project
                ))
            })?;
            let snap = catalog::last_snapshot(catalog_db, project.id)
                .await?
                .ok_or_else(|| {
                    MlError::invalid("the project has no snapshot to reuse: name a relation")
                })?;
            Source {
                relation: if snap.materialized {
                    format!("pgml.snapshot_{}", snap.id)
                } else {
                    snap.relation
                },
                y_columns: snap.y_columns,
                test_size: snap.test_size,
                sampling: Sampling::parse(&snap.test_sampling)?,
            }
        }
    };
    if task.supervised() && source.y_columns.is_empty() {
        return Err(MlError::invalid(format!(
            "{} needs y_column_name: the column to predict",
            task.name()
        )));
    }
    Ok(source)
}

/// Labels encoded, rows split, preprocessing fitted on the training split
/// and applied to both.
fn prepare(
    frame: Frame,
    source: &Source,
    preprocess: &Value,
    task: Task,
    algorithm: Algorithm,
    threads: usize,
) -> MlResult<Data> {
    let (label_idx, features) = label_and_feature_columns(&frame, source)?;
    let label_cols: Vec<_> = label_idx.iter().map(|&i| &frame.columns[i]).collect();
    let (y, classes) = if task.supervised() {
        labels::encode(task, &label_cols)?
    } else {
        (Array2::zeros((frame.rows, 0)), None)
    };
    let num_classes = classes.as_ref().map_or(0, Classes::len);
    if task == Task::Classification && num_classes < 2 {
        return Err(MlError::data(format!(
            "classification needs at least 2 classes in \"{}\"; found {num_classes}",
            source.y_columns.join(", ")
        )));
    }
    let strat = (task == Task::Classification).then(|| y.column(0).to_vec());
    let (train_rows, test_rows) = split::split(
        frame.rows,
        source.test_size,
        source.sampling,
        strat.as_deref(),
        SEED,
    )?;

    let names: Vec<&str> = features
        .iter()
        .map(|&i| frame.columns[i].name.as_str())
        .collect();
    let specs = preprocess::parse_specs(preprocess, &names)?;
    let y_for_target = (y.ncols() == 1).then(|| y.column(0).to_vec());
    let pre = Preprocessor::fit(
        &frame,
        &features,
        &specs,
        y_for_target.as_deref(),
        &train_rows,
    )?;
    let frame = Arc::new(frame);
    let set = TrainingSet {
        task,
        algorithm,
        x_train: pre.transform(&frame, &train_rows)?,
        y_train: y.select(Axis(0), &train_rows),
        x_test: pre.transform(&frame, &test_rows)?,
        y_test: y.select(Axis(0), &test_rows),
        num_classes,
        threads,
    };
    Ok(Data {
        frame,
        label_idx,
        features,
        classes,
        train_rows,
        test_rows,
        pre,
        statistics: None,
        set: Arc::new(set),
    })
}

/// The frame's label columns (named by `y_columns`) and feature columns
/// (all the others), by index.
fn label_and_feature_columns(frame: &Frame, source: &Source) -> MlResult<(Vec<usize>, Vec<usize>)> {
    let relation = &source.relation;
    let label_idx: Vec<usize> = source
        .y_columns
        .iter()
        .map(|y| {
            frame.column(y).map(|(i, _)| i).ok_or_else(|| {
                MlError::UndefinedColumn(format!(
                    "column \"{y}\" does not exist in relation {relation}"
                ))
            })
        })
        .collect::<MlResult<_>>()?;
    let features: Vec<usize> = (0..frame.columns.len())
        .filter(|i| !label_idx.contains(i))
        .collect();
    if features.is_empty() {
        return Err(MlError::data(format!(
            "relation {relation} has no feature columns"
        )));
    }
    Ok((label_idx, features))
}

/// The statistics of each feature then each label column over the
/// training rows (sorts of every column), on a blocking thread.
fn spawn_statistics(
    frame: &Arc<Frame>,
    features: &[usize],
    labels: &[usize],
    train_rows: &[usize],
) -> JoinHandle<Vec<Value>> {
    let frame = frame.clone();
    let rows = train_rows.to_vec();
    let columns: Vec<usize> = features.iter().chain(labels).copied().collect();
    tokio::task::spawn_blocking(move || {
        columns
            .iter()
            .map(|&i| preprocess::column_statistics(&frame.columns[i], &rows))
            .collect()
    })
}

/// Catalog rows and files in one transaction: all or nothing. Returns the
/// model's id and whether it was deployed.
async fn write_catalog(
    pool: &Pool,
    args: &TrainArgs,
    existing: Option<&Project>,
    source: &Source,
    data: &mut Data,
    fitted: &Fitted,
    rescored: Option<Option<f64>>,
) -> MlResult<(i64, bool)> {
    let (task, algorithm) = (data.set.task, data.set.algorithm);
    let files = ModelFiles::new(
        fitted.model.to_bytes()?,
        &Meta {
            task,
            algorithm: algorithm.name(),
            classes: &data.classes,
            y_columns: &source.y_columns,
            insight: &fitted.insight,
        },
        &data.pre,
        &[],
    )?;
    let columns = snapshot_columns(data).await?;
    let analysis = json!({"samples": data.frame.rows, "train_rows": data.train_rows.len(), "test_rows": data.test_rows.len()});
    let metrics_value = Value::Object(fitted.metrics.clone());
    let materialize = args.materialize_snapshot && args.relation.is_some();
    if materialize && pool.shards.len() > 1 {
        return Err(MlError::Unsupported(
            "materialize_snapshot is not supported on a sharded pool".into(),
        ));
    }
    let key = task.key_metric();
    let new_score = fitted.metrics.get(key).and_then(Value::as_f64);
    let mut catalog_db = Db::checkout(pool.primary(0)).await?;
    catalog_db
        .in_transaction(async |db: &mut Db| {
            let project_id = match existing {
                Some(p) => p.id,
                None => catalog::create_project(db, &args.project, task).await?,
            };
            let snapshot_id = catalog::insert_snapshot(
                db,
                &NewSnapshot {
                    relation: &source.relation,
                    y_columns: &source.y_columns,
                    test_size: source.test_size,
                    test_sampling: source.sampling.name(),
                    columns: &columns,
                    analysis: &analysis,
                },
            )
            .await?;
            if materialize {
                materialize_snapshot(db, &data.frame, &source.relation, snapshot_id).await?;
            }
            let model_id = catalog::insert_model(
                db,
                &NewModel {
                    project_id,
                    snapshot_id,
                    num_features: data.pre.num_features(),
                    algorithm: algorithm.name(),
                    hyperparams: &Value::Object(fitted.hyperparams.clone()),
                    metrics: &metrics_value,
                    search: args.search.map(Search::name),
                    search_params: &Value::Object(args.search_params.clone()),
                    search_args: &Value::Object(args.search_args.clone()),
                    group: None,
                },
            )
            .await?;
            catalog::insert_files(db, &files.of(model_id)).await?;
            let deploy = args.automatic_deploy
                && match catalog::deployed(db, &args.project).await? {
                    None => true,
                    Some(current) => {
                        let old = rescored
                            .unwrap_or_else(|| current.metrics.get(key).and_then(Value::as_f64));
                        new_model_wins(args.deploy_rule, old, new_score)
                    }
                };
            if deploy {
                catalog::deploy(db, project_id, model_id, "new_score", &args.project).await?;
            }
            Ok((model_id, deploy))
        })
        .await
}

/// The snapshot's columns: each feature's preprocessing and statistics,
/// then each label's statistics.
async fn snapshot_columns(data: &mut Data) -> MlResult<Value> {
    let statistics = data
        .statistics
        .as_mut()
        .ok_or_else(|| MlError::Internal("no column statistics".into()))?;
    let mut feature_statistics = statistics
        .await
        .map_err(|e| MlError::Internal(format!("column statistics: {e}")))?;
    let label_statistics = feature_statistics.split_off(data.features.len());
    let mut columns = data.pre.columns_json(feature_statistics);
    if let Value::Array(list) = &mut columns {
        for (&i, statistics) in data.label_idx.iter().zip(label_statistics) {
            list.push(preprocess::label_column_json(
                &data.frame.columns[i],
                i + 1,
                &data.train_rows,
                statistics,
            ));
        }
    }
    Ok(columns)
}

/// `materialize_snapshot`: the relation's columns copied into
/// `pgml.snapshot_<id>`, which later trainings without a relation read.
async fn materialize_snapshot(
    db: &mut Db,
    frame: &Frame,
    relation: &str,
    snapshot_id: i64,
) -> MlResult<()> {
    let names: Vec<String> = frame
        .columns
        .iter()
        .map(|c| crate::backend::server::quote_ident(&c.name))
        .collect();
    let source = pull::describe(db, relation).await?;
    db.execute(&format!(
        "CREATE TABLE pgml.snapshot_{snapshot_id} AS SELECT {} FROM {}",
        names.join(", "),
        source.relation
    ))
    .await?;
    catalog::mark_materialized(db, snapshot_id).await
}

/// `automatic_deploy`: by the stored scores the new model wins unless the
/// deployed one is strictly better (one without a score never is); a
/// scheduled retraining must be strictly better on the same test rows, so
/// an unchanged relation does not redeploy its model at every run.
fn new_model_wins(rule: DeployRule, deployed: Option<f64>, new: Option<f64>) -> bool {
    match (deployed, new) {
        (Some(old), Some(new)) => match rule {
            DeployRule::StoredScores => old.partial_cmp(&new) != Some(std::cmp::Ordering::Greater),
            DeployRule::SameTestRows => new > old,
        },
        (Some(_), None) => false,
        _ => true,
    }
}

/// Reads the relation from every shard in parallel, or from the one shard
/// the call is limited to (a replica when there is one).
/// `as_text`: columns read in their text form (group columns).
pub(crate) async fn read_relation(
    ml: &Ml,
    pool: &Arc<Pool>,
    relation: &str,
    labels: &[String],
    as_text: &[String],
    progress: &Progress,
) -> MlResult<Frame> {
    let max_bytes = ml.max_bytes();
    let shards: Vec<usize> = match progress.shard {
        Some(s) if s < pool.shards.len() => vec![s],
        _ => (0..pool.shards.len()).collect(),
    };
    let reads = shards.into_iter().map(|shard| {
        let server = pool.choose(shard, Target::Replica).clone();
        let relation = relation.to_string();
        let labels = labels.to_vec();
        let as_text = as_text.to_vec();
        async move {
            let mut db = Db::checkout(&server).await?;
            let mut source = pull::describe(&mut db, &relation).await?;
            // A missing label or group column is reported before any data
            // is read.
            source.select(&labels)?;
            for c in &mut source.columns {
                if as_text.contains(&c.name) {
                    *c = c.clone().as_text();
                }
            }
            source.select(&as_text)?;
            let columns = source.select(&source.names())?;
            source.read(&mut db, &columns, max_bytes).await
        }
    });
    let frames = futures_util::future::try_join_all(reads).await?;
    if frames.len() > 1 {
        progress.notice(format!("pgml.train: read {} shards", frames.len()));
    }
    pull::concat(frames)
}
