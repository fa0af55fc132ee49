//! Answering a pgml function call: run it, and shape the result exactly as
//! Postgres shapes a function's result (RowDescription types, composite
//! text for `SELECT pgml.f()`, `SELECT n`).

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use serde_json::Value;

use super::args::{
    self, DeployArgs, EvaluateArgs, ImportArgs, ScheduleArgs, SnapshotArgs, TrainArgs,
};
use super::call::{FnCall, Function};
use super::catalog::{self, NewSnapshot};
use super::datasets;
use super::db::Db;
use super::drift;
use super::error::{MlError, MlResult};
use super::import;
use super::inspect;
use super::pgtime;
use super::preprocess;
use super::pull;
use super::schedule;
use super::service::{Ml, Progress, TrainingInfo};
use super::train;
use crate::backend::registry::Pool;
use crate::net::messages;

const TEXT: u32 = 25;
const BOOL: u32 = 16;
const INT8: u32 = 20;
const TEXT_ARRAY: u32 = 1009;
const RECORD: u32 = 2249;
const FLOAT4: u32 = 700;
const JSONB: u32 = 3802;
const INTERVAL: u32 = 1186;
const TIMESTAMPTZ: u32 = 1184;

/// Result columns of each call (name, type oid), as PostgresML declares
/// them; a training `group_by` adds the number of groups trained.
pub fn columns(call: &FnCall) -> &'static [(&'static str, u32)] {
    match call.func {
        Function::Train | Function::TrainJoint if call.get("group_by").is_some() => &[
            ("project", TEXT),
            ("task", TEXT),
            ("algorithm", TEXT),
            ("deployed", BOOL),
            ("groups", INT8),
        ],
        Function::Train | Function::TrainJoint => &[
            ("project", TEXT),
            ("task", TEXT),
            ("algorithm", TEXT),
            ("deployed", BOOL),
        ],
        Function::Deploy => &[("project", TEXT), ("strategy", TEXT), ("algorithm", TEXT)],
        Function::Snapshot => &[("relation", TEXT), ("y_column_name", TEXT_ARRAY)],
        Function::LoadDataset => &[("table_name", TEXT), ("rows", INT8)],
        Function::Version => &[("version", TEXT)],
        Function::FeatureImportance => {
            &[("feature", TEXT), ("importance", FLOAT4), ("method", TEXT)]
        }
        Function::Evaluate => &[("metrics", JSONB)],
        Function::ConfusionMatrix => &[("actual", TEXT), ("predicted", TEXT), ("count", INT8)],
        Function::RocCurve => &[
            ("threshold", FLOAT4),
            ("recall", FLOAT4),
            ("false_positive_rate", FLOAT4),
            ("precision", FLOAT4),
        ],
        Function::ImportModel => &[
            ("project", TEXT),
            ("task", TEXT),
            ("algorithm", TEXT),
            ("model_id", INT8),
        ],
        Function::ExportModel => &[("export_model", TEXT)],
        Function::Drift => &[
            ("feature", TEXT),
            ("statistic", TEXT),
            ("value", FLOAT4),
            ("threshold", FLOAT4),
            ("drifted", BOOL),
        ],
        Function::Schedule => &[
            ("project", TEXT),
            ("every", INTERVAL),
            ("relation", TEXT),
            ("condition", TEXT),
            ("next_run", TIMESTAMPTZ),
        ],
        Function::Unschedule => &[("project", TEXT), ("unscheduled", BOOL)],
    }
}

/// The RowDescription a client sees for this call.
pub fn describe(call: &FnCall, out: &mut BytesMut) {
    let cols = columns(call);
    if call.expand || cols.len() == 1 {
        let named: Vec<(&str, u32)> = match (&call.alias, cols) {
            // `SELECT pgml.version() AS v`: the alias names the column.
            (Some(alias), [(_, ty)]) if !call.expand => vec![(alias.as_str(), *ty)],
            _ => cols.to_vec(),
        };
        messages::row_description_in(out, &named, &call.result_formats);
    } else {
        let name = call.alias.as_deref().unwrap_or(call.func.name());
        messages::row_description_in(out, &[(name, RECORD)], &call.result_formats);
    }
}

/// Runs the call and writes DataRow and CommandComplete (not the
/// RowDescription: the caller writes that, so Describe can share it).
pub async fn execute(
    ml: &Arc<Ml>,
    pool: &Arc<Pool>,
    call: &FnCall,
    progress: Progress,
    out: &mut BytesMut,
) -> MlResult<()> {
    ml.check_enabled(pool)?;
    schedule::runner::watch(ml, pool);
    let rows = run(ml, pool, call, progress).await?;
    let cols = columns(call);
    let binary = |i: usize| messages::format_of(&call.result_formats, i) == 1;
    for values in &rows {
        if call.expand || cols.len() == 1 {
            let cells = values
                .iter()
                .zip(cols)
                .enumerate()
                .map(|(i, (v, (_, oid)))| {
                    v.as_deref()
                        .map(|t| encoded(*oid, t, binary(i)))
                        .transpose()
                })
                .collect::<MlResult<Vec<_>>>()?;
            messages::data_row(out, &cells);
        } else if binary(0) {
            messages::data_row(out, &[Some(record_binary(cols, values)?)]);
        } else {
            messages::data_row(out, &[Some(record_text(values))]);
        }
    }
    messages::command_complete(out, &format!("SELECT {}", rows.len()));
    Ok(())
}

/// The result rows of a call, each value in its text form.
pub type Rows = Vec<Vec<Option<String>>>;

async fn run(ml: &Arc<Ml>, pool: &Arc<Pool>, call: &FnCall, progress: Progress) -> MlResult<Rows> {
    match call.func {
        Function::FeatureImportance => {
            inspect::feature_importance(ml, pool, &args::project_name(call)?).await
        }
        Function::Evaluate | Function::ConfusionMatrix | Function::RocCurve => {
            inspect::evaluation(
                ml,
                pool,
                call.func,
                EvaluateArgs::from_call(call)?,
                &progress,
            )
            .await
        }
        Function::ExportModel => inspect::export(ml, pool, args::model_id(call)?).await,
        Function::ImportModel => import::import(ml, pool, ImportArgs::from_call(call)?).await,
        Function::Drift => {
            let (project, relation) = args::drift(call)?;
            drift::rows(ml, pool, &project, relation.as_deref()).await
        }
        Function::Schedule => schedule::schedule(ml, pool, ScheduleArgs::from_call(call)?)
            .await
            .map(|row| vec![row]),
        Function::Unschedule => schedule::unschedule(ml, pool, &args::project_name(call)?)
            .await
            .map(|row| vec![row]),
        _ => run_one(ml, pool, call, progress).await.map(|row| vec![row]),
    }
}

/// The functions that return one row.
async fn run_one(
    ml: &Arc<Ml>,
    pool: &Arc<Pool>,
    call: &FnCall,
    progress: Progress,
) -> MlResult<Vec<Option<String>>> {
    match call.func {
        Function::Version => Ok(vec![Some(format!(
            "pgmlcat {} (PostgresML-compatible API)",
            env!("CARGO_PKG_VERSION")
        ))]),
        Function::Train | Function::TrainJoint => {
            let args = TrainArgs::from_call(call)?;
            if call.func == Function::TrainJoint
                && args.task == Some(super::task::Task::Classification)
            {
                return Err(MlError::invalid(
                    "pgml.train_joint trains multi-output regression; classification takes one label",
                ));
            }
            let t = training(ml, pool, args, progress).await?;
            let mut row = vec![
                Some(t.project),
                Some(t.task.name().to_string()),
                Some(t.algorithm),
                Some(if t.deployed { "t" } else { "f" }.to_string()),
            ];
            if call.get("group_by").is_some() {
                row.push(t.groups.map(|n| n.to_string()));
            }
            Ok(row)
        }
        Function::Deploy => deploy(ml, pool, DeployArgs::from_call(call)?).await,
        Function::Snapshot => snapshot(ml, pool, SnapshotArgs::from_call(call)?).await,
        Function::LoadDataset => {
            let name = args::dataset_name(call)?;
            let mut db = Db::checkout(pool.primary(0)).await?;
            ml.ensure_schema(pool, &mut db).await?;
            if pool.shards.len() > 1 {
                return Err(MlError::Unsupported(
                    "pgml.load_dataset on a sharded pool: load it through a pool with one shard"
                        .into(),
                ));
            }
            let (table, rows) = datasets::load(&mut db, &name).await?;
            progress.notice(format!("pgml.load_dataset: {rows} rows into {table}"));
            Ok(vec![Some(table), Some(rows.to_string())])
        }
        Function::FeatureImportance
        | Function::Evaluate
        | Function::ConfusionMatrix
        | Function::RocCurve
        | Function::ImportModel
        | Function::ExportModel
        | Function::Drift
        | Function::Schedule
        | Function::Unschedule => Err(MlError::Internal(format!(
            "pgml.{} returns rows",
            call.func.name()
        ))),
    }
}

/// A training, counted in /metrics and shown in SHOW TRAININGS while it
/// runs: `pgml.train`'s, and a scheduled retraining's.
pub async fn training(
    ml: &Arc<Ml>,
    pool: &Arc<Pool>,
    args: TrainArgs,
    progress: Progress,
) -> MlResult<train::Trained> {
    let guard = ml.start_training(TrainingInfo {
        project: args.project.clone(),
        algorithm: args.algorithm.clone(),
        database: pool.database.clone(),
        started: Instant::now(),
        progress: "starting".into(),
    });
    let progress = progress.for_training(guard);
    let started = Instant::now();
    match train::train(ml, pool, args, &progress).await {
        Ok(t) => {
            ml.metrics
                .training_finished(&t.algorithm, started.elapsed());
            Ok(t)
        }
        Err(e) => {
            ml.metrics.training_failed();
            Err(e)
        }
    }
}

/// pgml.deploy: by model id, or by strategy over the project's models.
async fn deploy(ml: &Arc<Ml>, pool: &Arc<Pool>, args: DeployArgs) -> MlResult<Vec<Option<String>>> {
    let mut db = Db::checkout(pool.primary(0)).await?;
    ml.ensure_schema(pool, &mut db).await?;
    let (chosen, strategy) = match args {
        DeployArgs::Model(id) => {
            let row = catalog::model(&mut db, id)
                .await?
                .ok_or_else(|| MlError::UndefinedObject(format!("model {id} does not exist")))?;
            if let Some(set) = row.group_of {
                return Err(MlError::invalid(format!(
                    "model {id} is one group's model of the group set {set}: deploy the set (pgml.deploy({set}))"
                )));
            }
            (row, "specific".to_string())
        }
        DeployArgs::Strategy {
            project,
            strategy,
            algorithm,
        } => {
            let p = catalog::project(&mut db, &project).await?.ok_or_else(|| {
                MlError::UndefinedObject(format!("project \"{project}\" does not exist"))
            })?;
            let mut models = catalog::models(&mut db, p.id).await?;
            if let Some(alg) = &algorithm {
                models.retain(|m| m.algorithm.eq_ignore_ascii_case(alg));
            }
            let key = p.task.key_metric();
            // Metrics compare as numbers (PostgresML sorted them as text).
            let score = |m: &catalog::ModelRow| {
                m.metrics
                    .get(key)
                    .and_then(Value::as_f64)
                    .filter(|v| !v.is_nan())
                    .unwrap_or(f64::NEG_INFINITY)
            };
            let chosen = match strategy.as_str() {
                "best_score" => models
                    .iter()
                    .max_by(|a, b| score(a).total_cmp(&score(b)).then(a.id.cmp(&b.id)))
                    .cloned(),
                "most_recent" => models.iter().max_by_key(|m| m.id).cloned(),
                "rollback" => {
                    let history = catalog::deployments(&mut db, p.id).await?;
                    let current = history.first().copied();
                    let previous = history
                        .iter()
                        .skip(1)
                        .find(|id| Some(**id) != current && models.iter().any(|m| m.id == **id));
                    match previous {
                        Some(id) => models.iter().find(|m| m.id == *id).cloned(),
                        None => {
                            return Err(MlError::invalid(format!(
                                "project \"{project}\" has no earlier deployment to roll back to"
                            )))
                        }
                    }
                }
                other => {
                    return Err(MlError::invalid(format!(
                        "unknown deploy strategy \"{other}\"; valid strategies: best_score, most_recent, rollback"
                    )))
                }
            };
            let chosen = chosen.ok_or_else(|| {
                MlError::UndefinedObject(format!(
                    "project \"{project}\" has no {}model to deploy",
                    algorithm.map(|a| format!("{a} ")).unwrap_or_default()
                ))
            })?;
            (chosen, strategy)
        }
    };
    let (project_id, model_id, project) = (chosen.project_id, chosen.id, chosen.project.clone());
    db.in_transaction(async |db: &mut Db| {
        catalog::deploy(db, project_id, model_id, &strategy, &project).await
    })
    .await?;
    ml.cache
        .invalidate(&Ml::database_key(pool), &chosen.project);
    Ok(vec![
        Some(chosen.project),
        Some(strategy),
        Some(chosen.algorithm),
    ])
}

/// pgml.snapshot: statistics of every column, and the data copied into
/// `pgml.snapshot_<id>`.
async fn snapshot(
    ml: &Arc<Ml>,
    pool: &Arc<Pool>,
    args: SnapshotArgs,
) -> MlResult<Vec<Option<String>>> {
    if pool.shards.len() > 1 {
        return Err(MlError::Unsupported(
            "pgml.snapshot on a sharded pool is not supported".into(),
        ));
    }
    let mut db = Db::checkout(pool.primary(0)).await?;
    ml.ensure_schema(pool, &mut db).await?;
    let source = pull::describe(&mut db, &args.relation).await?;
    let columns = source.select(&source.names())?;
    source.select(&args.y_columns)?;
    let frame = source.read(&mut db, &columns, ml.max_bytes()).await?;
    let rows: Vec<usize> = (0..frame.rows).collect();
    let stats: Vec<Value> = frame
        .columns
        .iter()
        .map(|c| {
            let mut s = preprocess::column_statistics(c, &rows);
            if let Value::Object(o) = &mut s {
                o.insert("name".into(), Value::String(c.name.clone()));
                o.insert("pg_type".into(), Value::String(c.pg_type.clone()));
                o.insert(
                    "label".into(),
                    Value::Bool(args.y_columns.contains(&c.name)),
                );
            }
            s
        })
        .collect();
    let _ = &args.preprocess;
    let relation = source.relation.clone();
    let y = args.y_columns.clone();
    db.in_transaction(async |db: &mut Db| {
        let id = catalog::insert_snapshot(
            db,
            &NewSnapshot {
                relation: &relation,
                y_columns: &y,
                test_size: args.test_size,
                test_sampling: args.test_sampling.name(),
                columns: &Value::Array(stats),
                analysis: &serde_json::json!({"samples": frame.rows}),
            },
        )
        .await?;
        db.execute(&format!(
            "CREATE TABLE pgml.snapshot_{id} AS SELECT * FROM {relation}"
        ))
        .await?;
        catalog::mark_materialized(db, id).await
    })
    .await?;
    Ok(vec![
        Some(source.relation),
        Some(text_array(&args.y_columns)),
    ])
}

/// One value in the client's format: the text, or the type's binary form
/// (as the server's send functions write it).
fn encoded(oid: u32, text: &str, binary: bool) -> MlResult<Vec<u8>> {
    if !binary {
        return Ok(text.as_bytes().to_vec());
    }
    let bad = || MlError::Internal(format!("result value {text:?} is not of type {oid}"));
    Ok(match oid {
        BOOL => vec![u8::from(text == "t")],
        INT8 => text
            .parse::<i64>()
            .map_err(|_| bad())?
            .to_be_bytes()
            .to_vec(),
        FLOAT4 => text
            .parse::<f32>()
            .map_err(|_| bad())?
            .to_bits()
            .to_be_bytes()
            .to_vec(),
        JSONB => [&[1u8][..], text.as_bytes()].concat(),
        INTERVAL => pgtime::interval_binary(text).ok_or_else(bad)?,
        TIMESTAMPTZ => pgtime::timestamptz_binary(text).ok_or_else(bad)?,
        TEXT_ARRAY => {
            let items = parse_text_array(text);
            let mut out = Vec::new();
            for v in [1i32, 0, TEXT as i32, items.len() as i32, 1] {
                out.extend_from_slice(&v.to_be_bytes());
            }
            for item in items {
                out.extend_from_slice(&(item.len() as i32).to_be_bytes());
                out.extend_from_slice(item.as_bytes());
            }
            out
        }
        _ => text.as_bytes().to_vec(),
    })
}

/// A composite value's binary form, as record_send writes it.
fn record_binary(cols: &[(&str, u32)], values: &[Option<String>]) -> MlResult<Vec<u8>> {
    let mut out = (values.len() as i32).to_be_bytes().to_vec();
    for ((_, oid), v) in cols.iter().zip(values) {
        out.extend_from_slice(&oid.to_be_bytes());
        match v {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(t) => {
                let field = encoded(*oid, t, true)?;
                out.extend_from_slice(&(field.len() as i32).to_be_bytes());
                out.extend_from_slice(&field);
            }
        }
    }
    Ok(out)
}

/// The elements of a one-dimensional array's text form as `text_array`
/// writes it (quoted elements with backslash escapes).
fn parse_text_array(text: &str) -> Vec<String> {
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or_default();
    let mut items = Vec::new();
    let mut chars = inner.chars().peekable();
    while chars.peek().is_some() {
        let mut item = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => item.extend(chars.next()),
                    '"' => break,
                    c => item.push(c),
                }
            }
            chars.next(); // the comma
        } else {
            for c in chars.by_ref() {
                if c == ',' {
                    break;
                }
                item.push(c);
            }
        }
        items.push(item);
    }
    items
}

/// A composite value's text form, as record_out writes it.
fn record_text(values: &[Option<String>]) -> String {
    let fields: Vec<String> = values
        .iter()
        .map(|v| match v {
            None => String::new(),
            Some(s) => quote_element(s, |c| {
                matches!(c, ',' | '(' | ')' | '"' | '\\') || c.is_whitespace()
            }),
        })
        .collect();
    format!("({})", fields.join(","))
}

fn text_array(values: &[String]) -> String {
    let items: Vec<String> = values
        .iter()
        .map(|s| {
            if s.eq_ignore_ascii_case("null") {
                format!("\"{s}\"")
            } else {
                quote_element(s, |c| {
                    matches!(c, ',' | '{' | '}' | '"' | '\\') || c.is_whitespace()
                })
            }
        })
        .collect();
    format!("{{{}}}", items.join(","))
}

fn quote_element(s: &str, special: impl Fn(char) -> bool) -> String {
    if !s.is_empty() && !s.chars().any(special) {
        return s.to_string();
    }
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_and_array_text_match_postgres() {
        assert_eq!(
            record_text(&[
                Some("iris".into()),
                Some("my proj".into()),
                None,
                Some("t".into())
            ]),
            "(iris,\"my proj\",,t)"
        );
        assert_eq!(text_array(&["a".into(), "b c".into()]), "{a,\"b c\"}");
        let items = vec![
            "a".to_string(),
            "b c".into(),
            "q\"x\\".into(),
            "NULL".into(),
        ];
        assert_eq!(parse_text_array(&text_array(&items)), items);
    }
}
