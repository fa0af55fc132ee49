//! `pgml.import_model`: a model trained elsewhere becomes the deployed
//! model of a project. The file is parsed and checked in Rust (`forest`),
//! written back as LightGBM text of pgmlcat's own making, and only that
//! text reaches LightGBM; predictions then go through the same compiled
//! evaluator as pgmlcat's own LightGBM models.

mod xgboost;

use std::sync::Arc;

use serde_json::{json, Value};

pub use super::algorithms::forest::{Forest, Objective};
use super::algorithms::lightgbm_text;

use super::algorithms::{self, Algorithm, Model};
use super::args::ImportArgs;
use super::catalog::{self, Meta, ModelFiles, NewModel, NewSnapshot};
use super::db::Db;
use super::error::{MlError, MlResult};
use super::exec::Rows;
use super::explain::Insight;
use super::labels::Classes;
use super::preprocess::Preprocessor;
use super::service::Ml;
use super::task::Task;
use crate::backend::registry::Pool;

/// The formats `pgml.import_model` reads.
pub const FORMATS: &[&str] = &["lightgbm", "xgboost_json"];

/// Parses and checks a model file (no database, no LightGBM): what the
/// fuzz target drives.
pub fn parse(format: &str, bytes: &[u8]) -> MlResult<Forest> {
    match format.trim().to_ascii_lowercase().as_str() {
        "lightgbm" => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| MlError::invalid("a LightGBM text model must be UTF-8 text"))?;
            lightgbm_text::parse(text)
        }
        "xgboost_json" => xgboost::parse(bytes),
        other => Err(MlError::invalid(format!(
            "unknown model format \"{other}\"; valid formats: {}",
            FORMATS.join(", ")
        ))),
    }
}

/// A checked model ready to store: its LightGBM text, the model built from
/// it, its feature names and classes.
pub struct Built {
    pub text: String,
    pub model: Box<dyn Model>,
    pub names: Vec<String>,
    pub classes: Option<Classes>,
}

/// The forest as a model of `task`, its features named `names` (the
/// model's own when empty, else f0, f1, ...).
pub fn build(forest: &Forest, task: Task, names: &[String]) -> MlResult<Built> {
    let classification = forest.objective != Objective::Regression;
    match (task, classification) {
        (Task::Regression, false) | (Task::Classification, true) => {}
        _ => {
            return Err(MlError::invalid(format!(
                "the model's objective is {}, not {}",
                if classification {
                    "classification"
                } else {
                    "regression"
                },
                task.name()
            )))
        }
    }
    let names = feature_names(forest, names)?;
    let text = forest.to_lightgbm_text(&names);
    let model = algorithms::load(Algorithm::Lightgbm, task, text.as_bytes())?;
    if model.num_features() != forest.num_features {
        return Err(MlError::Internal(format!(
            "the imported model reloaded with {} features instead of {}",
            model.num_features(),
            forest.num_features
        )));
    }
    let classes = classification
        .then(|| Classes::Numbers((0..forest.objective.classes()).map(|c| c as f64).collect()));
    Ok(Built {
        text,
        model,
        names,
        classes,
    })
}

fn feature_names(forest: &Forest, given: &[String]) -> MlResult<Vec<String>> {
    let n = forest.num_features;
    let names: Vec<String> = if !given.is_empty() {
        if given.len() != n {
            return Err(MlError::invalid(format!(
                "feature_names has {} names; the model has {n} features",
                given.len()
            )));
        }
        given.to_vec()
    } else if forest.feature_names.len() == n {
        forest.feature_names.clone()
    } else {
        (0..n).map(|i| format!("f{i}")).collect()
    };
    let mut sorted: Vec<&String> = names.iter().collect();
    sorted.sort();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(MlError::invalid(format!(
            "feature name \"{}\" is given twice",
            w[0]
        )));
    }
    Ok(names)
}

/// `pgml.import_model`: stores the model and deploys it.
pub async fn import(ml: &Arc<Ml>, pool: &Arc<Pool>, args: ImportArgs) -> MlResult<Rows> {
    let format = args.format.trim().to_ascii_lowercase();
    let task = args.task;
    let (bytes, names) = (args.model, args.feature_names);
    let parsing_format = format.clone();
    let built = tokio::task::spawn_blocking(move || {
        let forest = parse(&parsing_format, &bytes)?;
        build(&forest, task, &names)
    })
    .await
    .map_err(|e| MlError::Internal(format!("import thread failed: {e}")))??;
    let columns: Vec<(String, String)> = built
        .names
        .iter()
        .map(|n| (n.clone(), "double precision".to_string()))
        .collect();
    let pre = Preprocessor::numeric(&columns)?;
    let importance = Insight::without_rows(&*built.model, &built.names);
    let files = ModelFiles::new(
        built.text.into_bytes(),
        &Meta {
            task,
            algorithm: Algorithm::Lightgbm.name(),
            classes: &built.classes,
            y_columns: &[],
            insight: &importance,
        },
        &pre,
        &[("imported", json!(format))],
    )?;
    let statistics = vec![Value::Null; built.names.len()];
    let snapshot_columns = pre.columns_json(statistics);
    let project = args.project;
    let mut db = Db::checkout(pool.primary(0)).await?;
    ml.ensure_schema(pool, &mut db).await?;
    let model_id = db
        .in_transaction(async |db: &mut Db| {
            let project_id = match catalog::project(db, &project).await? {
                Some(p) if p.task != task => {
                    return Err(MlError::invalid(format!(
                        "project \"{project}\" is a {} project, not {}",
                        p.task.name(),
                        task.name()
                    )))
                }
                Some(p) => p.id,
                None => catalog::create_project(db, &project, task).await?,
            };
            let relation = format!("(imported {format} model)");
            let snapshot_id = catalog::insert_snapshot(
                db,
                &NewSnapshot {
                    relation: &relation,
                    y_columns: &[],
                    test_size: 0.0,
                    test_sampling: "last",
                    columns: &snapshot_columns,
                    analysis: &json!({"imported": format}),
                },
            )
            .await?;
            let model_id = catalog::insert_model(
                db,
                &NewModel {
                    project_id,
                    snapshot_id,
                    num_features: built.names.len(),
                    algorithm: Algorithm::Lightgbm.name(),
                    hyperparams: &json!({"imported": format}),
                    metrics: &json!({}),
                    search: None,
                    search_params: &json!({}),
                    search_args: &json!({}),
                    group: None,
                },
            )
            .await?;
            catalog::insert_files(db, &files.of(model_id)).await?;
            catalog::deploy(db, project_id, model_id, "imported", &project).await?;
            Ok(model_id)
        })
        .await?;
    ml.cache.invalidate(&Ml::database_key(pool), &project);
    Ok(vec![vec![
        Some(project),
        Some(task.name().to_string()),
        Some(Algorithm::Lightgbm.name().to_string()),
        Some(model_id.to_string()),
    ]])
}

#[cfg(test)]
mod tests;
