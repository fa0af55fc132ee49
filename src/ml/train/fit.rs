//! Fitting: the search with cross-validation (when asked for), the fit
//! on the training split, its score on the test split, and the insight
//! (means and importance) explanations need.

use std::sync::Arc;
use std::time::Instant;

use ndarray::{ArrayView2, Axis};
use serde_json::{json, Map, Value};

use super::{Data, Fitted, TrainingSet, SEED};
use crate::ml::algorithms::{self, Model};
use crate::ml::args::TrainArgs;
use crate::ml::error::{MlError, MlResult};
use crate::ml::explain::Insight;
use crate::ml::metrics;
use crate::ml::search::{self, Search};
use crate::ml::service::Progress;
use crate::ml::split;
use crate::ml::task::Task;

/// The search (when asked for), then the fit on the whole training split
/// and its score.
pub(super) async fn fit_model(
    data: &Data,
    args: &TrainArgs,
    progress: &Progress,
) -> MlResult<Fitted> {
    let set = &data.set;
    let mut hyperparams = args.hyperparams.clone();
    let mut search_results = None;
    if let Some(search) = args.search {
        let (best, results) = run_search(set, search, args, progress).await?;
        hyperparams = best;
        search_results = Some(results);
    }
    progress.notice(format!(
        "pgml.train: fitting {} on {} rows × {} features",
        set.algorithm.name(),
        set.x_train.nrows(),
        data.pre.num_features()
    ));
    let (model, mut metrics) = fit_and_score(set.clone(), hyperparams.clone()).await?;
    let (model, insight) = insight(model, set.clone(), data.pre.feature_names()).await?;
    if let Some(results) = search_results {
        metrics.insert("search_results".into(), results);
    }
    let key = set.task.key_metric();
    progress.notice(format!(
        "pgml.train: {} {key} = {}",
        set.algorithm.name(),
        metrics
            .get(key)
            .map_or("n/a".to_string(), |v| v.to_string())
    ));
    Ok(Fitted {
        model,
        metrics,
        hyperparams,
        insight,
    })
}

/// The fitted model's `Insight`, on a blocking thread (TreeSHAP over the
/// test split takes a while).
async fn insight(
    model: Box<dyn Model>,
    set: Arc<TrainingSet>,
    names: Vec<String>,
) -> MlResult<(Box<dyn Model>, Insight)> {
    tokio::task::spawn_blocking(move || {
        let insight = Insight::compute(&*model, &names, set.x_train.view(), set.x_test.view())?;
        Ok((model, insight))
    })
    .await
    .map_err(|e| MlError::Internal(format!("training thread failed: {e}")))?
}

/// Fits on the training split, scores on the test split; fit_time and
/// score_time (seconds) go into the metrics. On a blocking thread.
async fn fit_and_score(
    p: Arc<TrainingSet>,
    hyperparams: Map<String, Value>,
) -> MlResult<(Box<dyn Model>, Map<String, Value>)> {
    tokio::task::spawn_blocking(move || fit_score(&p, &hyperparams))
        .await
        .map_err(|e| MlError::Internal(format!("training thread failed: {e}")))?
}

/// `fit_and_score` on this thread.
pub(super) fn fit_score(
    p: &TrainingSet,
    hyperparams: &Map<String, Value>,
) -> MlResult<(Box<dyn Model>, Map<String, Value>)> {
    let started = Instant::now();
    let model = algorithms::fit(
        p.algorithm,
        p.task,
        p.x_train.view(),
        p.y_train.view(),
        p.num_classes,
        hyperparams,
        p.threads,
    )?;
    let fit_time = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut m = score(
        &*model,
        p.task,
        p.x_test.view(),
        p.y_test.view(),
        p.num_classes,
    )?;
    m.insert("fit_time".into(), json!(fit_time));
    m.insert("score_time".into(), json!(started.elapsed().as_secs_f64()));
    Ok((model, m))
}

fn score(
    model: &dyn Model,
    task: Task,
    x: ArrayView2<f64>,
    y: ArrayView2<f64>,
    num_classes: usize,
) -> MlResult<Map<String, Value>> {
    if x.nrows() == 0 {
        return Ok(Map::new());
    }
    match task {
        Task::Regression => {
            let pred = model.predict(x)?;
            metrics::regression(y, pred.view())
        }
        Task::Classification => {
            let pred = model.predict(x)?;
            let proba = model.predict_proba(x).ok();
            let truth = y.column(0).to_vec();
            metrics::classification(
                &truth,
                &pred.column(0).to_vec(),
                proba.as_ref().map(|p| p.view()),
                num_classes,
            )
        }
        Task::Clustering => {
            let pred = model.predict(x)?;
            metrics::clustering(x, &pred.column(0).to_vec())
        }
        Task::Decomposition => Ok(metrics::decomposition(
            &model.explained_variance_ratio().unwrap_or_default(),
        )),
    }
}

/// Grid or random search with k-fold cross-validation on the training
/// split; returns the best hyperparameters and the search results.
async fn run_search(
    p: &Arc<TrainingSet>,
    search: Search,
    args: &TrainArgs,
    progress: &Progress,
) -> MlResult<(Map<String, Value>, Value)> {
    let n_iter = args
        .search_args
        .get("n_iter")
        .and_then(Value::as_u64)
        .unwrap_or(10) as usize;
    let cv = args
        .search_args
        .get("cv")
        .and_then(Value::as_u64)
        .unwrap_or(5) as usize;
    let candidates =
        search::candidates(search, &args.hyperparams, &args.search_params, n_iter, SEED)?;
    let rows: Vec<usize> = (0..p.x_train.nrows()).collect();
    let folds = split::kfold(&rows, cv, SEED)?;
    let key = p.task.key_metric();
    let mut results = Vec::new();
    let mut best: Option<(f64, Map<String, Value>)> = None;
    for (i, candidate) in candidates.iter().enumerate() {
        let mut scores = Vec::new();
        for (f, (fit_rows, val_rows)) in folds.iter().enumerate() {
            let fold = Arc::new(TrainingSet {
                task: p.task,
                algorithm: p.algorithm,
                x_train: p.x_train.select(Axis(0), fit_rows),
                y_train: p.y_train.select(Axis(0), fit_rows),
                x_test: p.x_train.select(Axis(0), val_rows),
                y_test: p.y_train.select(Axis(0), val_rows),
                num_classes: p.num_classes,
                threads: p.threads,
            });
            let (_, m) = fit_and_score(fold, candidate.clone()).await?;
            let s = m.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN);
            progress.notice(format!(
                "pgml.train: search {}/{} fold {}/{}: {key} = {s:.4}",
                i + 1,
                candidates.len(),
                f + 1,
                folds.len()
            ));
            scores.push(s);
        }
        let mean = scores.iter().sum::<f64>() / scores.len().max(1) as f64;
        let std = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>()
            / scores.len().max(1) as f64)
            .sqrt();
        results.push(json!({"params": candidate, "mean_test_score": mean, "std_test_score": std, "fold_scores": scores}));
        if !mean.is_nan() && best.as_ref().is_none_or(|(b, _)| mean > *b) {
            best = Some((mean, candidate.clone()));
        }
    }
    let (best_score, best_params) =
        best.ok_or_else(|| MlError::data("no search candidate produced a score"))?;
    progress.notice(format!(
        "pgml.train: best {key} = {best_score:.4} with {}",
        Value::Object(best_params.clone())
    ));
    // PostgresML stopped here; the winner is refit on the whole training split by the caller.
    let results = json!({
        "params": candidates,
        "results": results,
        "best_index": candidates.iter().position(|c| *c == best_params),
        "best_params": best_params,
        "best_score": best_score,
        "refit": true,
    });
    Ok((best_params, results))
}
