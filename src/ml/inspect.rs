//! The functions that look at a model rather than train or use it:
//! `pgml.feature_importance` (a catalog read of what training stored),
//! `pgml.evaluate`, `pgml.confusion_matrix`, `pgml.roc_curve` (the
//! deployed model on a relation now) and `pgml.export_model`.

use std::sync::Arc;

use serde_json::Value;

use super::args::EvaluateArgs;
use super::call::Function;
use super::catalog;
use super::db::Db;
use super::error::{MlError, MlResult};
use super::evaluate;
use super::exec::Rows;
use super::explain::Insight;
use super::predict::format::float4_text;
use super::service::{Ml, Progress};
use crate::backend::registry::Pool;

/// The importance stored with the project's deployed model.
pub async fn feature_importance(ml: &Arc<Ml>, pool: &Arc<Pool>, project: &str) -> MlResult<Rows> {
    let mut db = catalog_db(ml, pool).await?;
    let model = catalog::deployed(&mut db, project)
        .await?
        .ok_or_else(|| no_deployed(project))?;
    if !catalog::group_models(&mut db, model.id).await?.0.is_empty() {
        return Err(MlError::Unsupported(format!(
            "project \"{project}\" has a model per group; pgml.feature_importance reads a single model"
        )));
    }
    let meta: Value = match catalog::file(&mut db, model.id, "meta.json").await? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| MlError::Internal(format!("model {} meta: {e}", model.id)))?,
        None => Value::Null,
    };
    let Some(insight) = meta.get("insight") else {
        return Err(MlError::Unsupported(format!(
            "model {} was trained before pgmlcat stored feature importance; train it again",
            model.id
        )));
    };
    let insight: Insight = serde_json::from_value(insight.clone())
        .map_err(|e| MlError::Internal(format!("model {} insight: {e}", model.id)))?;
    if insight.importance.is_empty() {
        return Err(MlError::Unsupported(format!(
            "{} models have no feature importance: pgmlcat computes it for lightgbm (gain and \
             mean |SHAP|) and the linear models (|coefficient| × standard deviation)",
            model.algorithm
        )));
    }
    Ok(insight
        .importance
        .into_iter()
        .map(|i| {
            vec![
                Some(i.feature),
                Some(float4_text(i.importance as f32)),
                Some(i.method),
            ]
        })
        .collect())
}

/// `pgml.evaluate`, `pgml.confusion_matrix` or `pgml.roc_curve`.
pub async fn evaluation(
    ml: &Arc<Ml>,
    pool: &Arc<Pool>,
    func: Function,
    args: EvaluateArgs,
    progress: &Progress,
) -> MlResult<Rows> {
    let scored = evaluate::score(ml, pool, &args.project, &args.relation, progress).await?;
    match func {
        Function::Evaluate => Ok(vec![vec![Some(
            scored.metrics(args.threshold)?.to_string(),
        )]]),
        Function::ConfusionMatrix => Ok(scored
            .confusion_matrix()?
            .into_iter()
            .map(|(actual, predicted, count)| {
                vec![Some(actual), Some(predicted), Some(count.to_string())]
            })
            .collect()),
        _ => Ok(scored
            .roc_curve()?
            .into_iter()
            .map(|point| point.iter().map(|&v| Some(float4_text(v as f32))).collect())
            .collect()),
    }
}

/// A LightGBM model's text, as LightGBM writes it.
pub async fn export(ml: &Arc<Ml>, pool: &Arc<Pool>, model_id: i64) -> MlResult<Rows> {
    let mut db = catalog_db(ml, pool).await?;
    let model = catalog::model(&mut db, model_id)
        .await?
        .ok_or_else(|| MlError::UndefinedObject(format!("model {model_id} does not exist")))?;
    if !model.algorithm.eq_ignore_ascii_case("lightgbm") {
        return Err(MlError::Unsupported(format!(
            "model {model_id} is a {} model; pgml.export_model exports lightgbm models",
            model.algorithm
        )));
    }
    let bytes = catalog::file(&mut db, model_id, "model")
        .await?
        .ok_or_else(|| {
            MlError::Unsupported(format!(
            "model {model_id} has no model file of its own (a group set: export its groups' models)"
        ))
        })?;
    let text = String::from_utf8(bytes)
        .map_err(|_| MlError::Internal(format!("model {model_id} is not UTF-8")))?;
    if text.starts_with('[') {
        return Err(MlError::Unsupported(format!(
            "model {model_id} is a multi-output (train_joint) model of several boosters; \
             pgml.export_model exports a single booster"
        )));
    }
    Ok(vec![vec![Some(text)]])
}

async fn catalog_db(ml: &Ml, pool: &Arc<Pool>) -> MlResult<Db> {
    let mut db = Db::checkout(pool.primary(0)).await?;
    ml.ensure_schema(pool, &mut db).await?;
    Ok(db)
}

fn no_deployed(project: &str) -> MlError {
    MlError::UndefinedObject(format!(
        "no deployed model for project \"{project}\": train one with pgml.train or deploy one with pgml.deploy"
    ))
}
