//! `algorithm => 'auto'`: every algorithm of the task with its default
//! hyperparameters, and a few LightGBM settings, scored by k-fold
//! cross-validation on the training split (never on the test split, which
//! then measures the winner honestly), several candidates at once, within
//! `search_args` `time_budget_s`. The winner is refit by the caller.
//!
//! A fit cannot be interrupted, so the budget is kept between folds: a
//! candidate whose folds so far predict it cannot finish in time stops
//! (`out of time`), and one not started when the budget runs out is not
//! started. Algorithms whose cost grows with the square of the rows (svm,
//! knn) are skipped on large training splits, where one fold alone would
//! outlast any budget.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use ndarray::Axis;
use serde_json::{json, Map, Value};

use super::{fit_score, TrainingSet, SEED};
use crate::ml::algorithms::Algorithm;
use crate::ml::args::TrainArgs;
use crate::ml::error::{MlError, MlResult};
use crate::ml::service::Progress;
use crate::ml::split;
use crate::ml::task::Task;

/// The name that asks for AutoML.
pub const AUTO: &str = "auto";

const DEFAULT_BUDGET_S: f64 = 60.0;

/// Training rows above which the quadratic algorithms are skipped.
const QUADRATIC_ROWS: usize = 20_000;
const SVM_ROWS: usize = 10_000;

/// Rows a quadratic algorithm is first tried on, to foresee what a fold
/// costs before starting one that could not finish in the budget.
const PROBE_ROWS: usize = 1_000;

/// The winner: its algorithm and hyperparameters, and the leaderboard.
pub struct Choice {
    pub algorithm: Algorithm,
    pub hyperparams: Map<String, Value>,
    pub leaderboard: Value,
}

pub fn is_auto(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case(AUTO)
}

/// What AutoML does not combine with.
pub fn check(args: &TrainArgs, task: Task) -> MlResult<()> {
    if !task.supervised() {
        return Err(MlError::invalid(format!(
            "algorithm => 'auto' chooses between regression or classification algorithms, not {}",
            task.name()
        )));
    }
    if args.search.is_some() {
        return Err(MlError::invalid(
            "algorithm => 'auto' runs its own search; give no search",
        ));
    }
    if !args.group_by.is_empty() || args.pushdown == Some(true) || args.streaming == Some(true) {
        return Err(MlError::Unsupported(
            "algorithm => 'auto' trains on rows pulled into memory: not with group_by, pushdown or streaming"
                .into(),
        ));
    }
    if args.y_columns.len() > 1 {
        return Err(MlError::Unsupported(
            "algorithm => 'auto' with several labels (train_joint) is not supported".into(),
        ));
    }
    Ok(())
}

/// One candidate: an algorithm and the hyperparameters it is tried with
/// (the user's own `hyperparams` are laid over LightGBM's).
fn candidates(task: Task, given: &Map<String, Value>) -> Vec<(Algorithm, Map<String, Value>)> {
    let mut algorithms = Algorithm::valid_for(task);
    // Cheap and usually strong first, quadratic last: with few threads
    // candidates run in this order, and the budget may end the list.
    algorithms.sort_by_key(|a| {
        COST_ORDER
            .iter()
            .position(|c| c == a)
            .unwrap_or(COST_ORDER.len())
    });
    let mut out: Vec<(Algorithm, Map<String, Value>)> = algorithms
        .into_iter()
        .map(|a| {
            let hyperparams = if a == Algorithm::Lightgbm {
                given.clone()
            } else {
                Map::new()
            };
            (a, hyperparams)
        })
        .collect();
    let search = [
        json!({"learning_rate": 0.05, "num_iterations": 300, "num_leaves": 15}),
        json!({"learning_rate": 0.1, "num_iterations": 200, "num_leaves": 63, "min_data_in_leaf": 5}),
        json!({"learning_rate": 0.05, "num_iterations": 200, "feature_fraction": 0.8,
               "bagging_fraction": 0.8, "bagging_freq": 1}),
    ];
    // LightGBM's other settings before the quadratic algorithms.
    let quadratic = out
        .iter()
        .position(|(a, _)| is_quadratic(*a))
        .unwrap_or(out.len());
    for (i, s) in search.into_iter().enumerate() {
        if let Value::Object(mut h) = s {
            for (k, v) in given {
                h.insert(k.clone(), v.clone());
            }
            out.insert(quadratic + i, (Algorithm::Lightgbm, h));
        }
    }
    out
}

/// The order candidates are tried in, by what they cost.
const COST_ORDER: &[Algorithm] = &[
    Algorithm::Linear,
    Algorithm::NaiveBayes,
    Algorithm::Lightgbm,
    Algorithm::DecisionTree,
    Algorithm::Lasso,
    Algorithm::ElasticNet,
    Algorithm::Ridge,
    Algorithm::RandomForest,
    Algorithm::Knn,
    Algorithm::Svm,
];

/// Algorithms whose cost grows with the square of the rows.
fn is_quadratic(a: Algorithm) -> bool {
    matches!(a, Algorithm::Svm | Algorithm::Knn)
}

/// Why a candidate is not tried on this many training rows: svm's kernel
/// matrix takes rows² × 8 bytes (1.9 GB measured at 15,600 rows).
fn skipped(algorithm: Algorithm, rows: usize) -> Option<String> {
    let limit = match algorithm {
        Algorithm::Svm => SVM_ROWS,
        Algorithm::Knn => QUADRATIC_ROWS,
        _ => return None,
    };
    (rows > limit).then(|| {
        format!(
            "skipped: its cost grows with the square of the rows, and the training split has {rows} (over {limit})"
        )
    })
}

/// Cross-validates every candidate and returns the best.
pub async fn choose(
    set: &Arc<TrainingSet>,
    args: &TrainArgs,
    threads: usize,
    progress: &Progress,
) -> MlResult<Choice> {
    let budget = args
        .search_args
        .get("time_budget_s")
        .map(|v| v.as_f64().filter(|s| *s > 0.0 && s.is_finite()))
        .unwrap_or(Some(DEFAULT_BUDGET_S))
        .ok_or_else(|| {
            MlError::invalid("search_args time_budget_s must be a positive number of seconds")
        })?;
    let cv = args
        .search_args
        .get("cv")
        .map(|v| v.as_u64().filter(|k| *k >= 2))
        .unwrap_or(Some(5))
        .ok_or_else(|| MlError::invalid("search_args cv must be an integer of at least 2"))?
        as usize;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(budget);
    let rows: Vec<usize> = (0..set.x_train.nrows()).collect();
    let folds = Arc::new(split::kfold(&rows, cv, SEED)?);
    let list = candidates(set.task, &args.hyperparams);
    progress.notice(format!(
        "pgml.train: auto: {} candidates, {cv}-fold cross-validation on {} rows, {budget} s budget",
        list.len(),
        rows.len()
    ));
    let key = set.task.key_metric();
    let runs = list.into_iter().map(|(algorithm, hyperparams)| {
        let (set, folds, progress) = (set.clone(), folds.clone(), progress.clone());
        async move {
            if let Some(why) = skipped(algorithm, set.x_train.nrows()) {
                return Entry::new(algorithm, hyperparams, why);
            }
            if Instant::now() >= deadline {
                return Entry::new(algorithm, hyperparams, "not started: out of time".into());
            }
            let job = tokio::task::spawn_blocking(move || {
                cross_validate(&set, algorithm, hyperparams, &folds, deadline, &progress)
            });
            job.await
                .unwrap_or_else(|e| Entry::new(algorithm, Map::new(), format!("failed: {e}")))
        }
    });
    // Candidates run on the blocking pool, `threads` at a time.
    let mut board: Vec<Entry> = futures_util::stream::iter(runs)
        .buffer_unordered(threads.max(1))
        .collect()
        .await;
    board.sort_by(|a, b| b.score().total_cmp(&a.score()));
    let best = board.iter().find(|e| e.mean.is_some()).ok_or_else(|| {
        MlError::data(
            "algorithm => 'auto': no candidate could be scored (see the leaderboard NOTICEs)",
        )
    })?;
    progress.notice(format!(
        "pgml.train: auto chose {} {} ({key} {:.4} in cross-validation) after {:.1} s",
        best.algorithm.name(),
        Value::Object(best.hyperparams.clone()),
        best.score(),
        started.elapsed().as_secs_f64()
    ));
    Ok(Choice {
        algorithm: best.algorithm,
        hyperparams: best.hyperparams.clone(),
        leaderboard: json!({
            "method": "auto",
            "cv": folds.len(),
            "time_budget_s": budget,
            "elapsed_s": started.elapsed().as_secs_f64(),
            "metric": key,
            "results": board.iter().map(Entry::to_json).collect::<Vec<_>>(),
        }),
    })
}

/// One row of the leaderboard.
struct Entry {
    algorithm: Algorithm,
    hyperparams: Map<String, Value>,
    mean: Option<f64>,
    std: Option<f64>,
    fit_time: f64,
    status: String,
}

impl Entry {
    fn new(algorithm: Algorithm, hyperparams: Map<String, Value>, status: String) -> Entry {
        Entry {
            algorithm,
            hyperparams,
            mean: None,
            std: None,
            fit_time: 0.0,
            status,
        }
    }

    fn score(&self) -> f64 {
        self.mean.unwrap_or(f64::NEG_INFINITY)
    }

    fn to_json(&self) -> Value {
        json!({
            "algorithm": self.algorithm.name(),
            "hyperparams": self.hyperparams,
            "mean_cv_score": self.mean,
            "std_cv_score": self.std,
            "fit_time": self.fit_time,
            "status": self.status,
        })
    }
}

/// A candidate's folds, one after the other on this thread, stopping when
/// the rest would not fit in the budget.
fn cross_validate(
    set: &TrainingSet,
    algorithm: Algorithm,
    hyperparams: Map<String, Value>,
    folds: &[(Vec<usize>, Vec<usize>)],
    deadline: Instant,
    progress: &Progress,
) -> Entry {
    let key = set.task.key_metric();
    let started = Instant::now();
    if let Some(why) = probe(set, algorithm, &hyperparams, folds, deadline) {
        return Entry::new(algorithm, hyperparams, why);
    }
    let mut scores = Vec::with_capacity(folds.len());
    for (i, (fit_rows, val_rows)) in folds.iter().enumerate() {
        let fold = TrainingSet {
            task: set.task,
            algorithm,
            x_train: set.x_train.select(Axis(0), fit_rows),
            y_train: set.y_train.select(Axis(0), fit_rows),
            x_test: set.x_train.select(Axis(0), val_rows),
            y_test: set.y_train.select(Axis(0), val_rows),
            num_classes: set.num_classes,
            threads: 1,
        };
        match fit_score(&fold, &hyperparams) {
            Ok((_, m)) => scores.push(m.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)),
            Err(e) => {
                let mut entry = Entry::new(algorithm, hyperparams, format!("failed: {e}"));
                entry.fit_time = started.elapsed().as_secs_f64();
                return entry;
            }
        }
        // The budget holds the folds left and, should this one win, its
        // refit on the whole training split (a fold's fit and a bit).
        let per_fold = started.elapsed() / (i as u32 + 1);
        let left = folds.len() - i - 1;
        let refit = per_fold.mul_f64(folds.len() as f64 / (folds.len() as f64 - 1.0).max(1.0));
        if Instant::now() + per_fold * left as u32 + refit > deadline {
            let mut entry = Entry::new(
                algorithm,
                hyperparams,
                format!(
                    "out of time after {} of {} folds (the rest and a refit would end past the budget)",
                    i + 1,
                    folds.len()
                ),
            );
            entry.fit_time = started.elapsed().as_secs_f64();
            return entry;
        }
    }
    let n = scores.len() as f64;
    let mean = scores.iter().sum::<f64>() / n;
    let std = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n).sqrt();
    let fit_time = started.elapsed().as_secs_f64();
    progress.notice(format!(
        "pgml.train: auto: {} {} {key} = {mean:.4} ± {std:.4} ({fit_time:.1} s)",
        algorithm.name(),
        Value::Object(hyperparams.clone())
    ));
    Entry {
        algorithm,
        hyperparams,
        mean: mean.is_finite().then_some(mean),
        std: Some(std),
        fit_time,
        status: "ok".into(),
    }
}

/// A quadratic algorithm fit on `PROBE_ROWS` rows first: from its time, a
/// fold's (scaled by the square of the rows) and the whole cross-validation
/// and refit's. Why to skip the candidate, if they would end past the
/// deadline: a fit cannot be stopped once started.
fn probe(
    set: &TrainingSet,
    algorithm: Algorithm,
    hyperparams: &Map<String, Value>,
    folds: &[(Vec<usize>, Vec<usize>)],
    deadline: Instant,
) -> Option<String> {
    let (fit_rows, val_rows) = folds.first()?;
    if !is_quadratic(algorithm) || fit_rows.len() <= PROBE_ROWS {
        return None;
    }
    let fit: Vec<usize> = fit_rows.iter().copied().take(PROBE_ROWS).collect();
    let val: Vec<usize> = val_rows.iter().copied().take(PROBE_ROWS / 4).collect();
    let probe = TrainingSet {
        task: set.task,
        algorithm,
        x_train: set.x_train.select(Axis(0), &fit),
        y_train: set.y_train.select(Axis(0), &fit),
        x_test: set.x_train.select(Axis(0), &val),
        y_test: set.y_train.select(Axis(0), &val),
        num_classes: set.num_classes,
        threads: 1,
    };
    let started = Instant::now();
    if let Err(e) = fit_score(&probe, hyperparams) {
        return Some(format!("failed: {e}"));
    }
    let scale = (fit_rows.len() as f64 / PROBE_ROWS as f64).powi(2);
    let per_fold = started.elapsed().mul_f64(scale);
    let total = per_fold.mul_f64(folds.len() as f64 + 1.5);
    (Instant::now() + total > deadline).then(|| {
        format!(
            "skipped: a {PROBE_ROWS}-row fit took {:.2} s, so {} folds of {} rows and a refit would take about {:.0} s, past the budget",
            started.elapsed().as_secs_f64(),
            folds.len(),
            fit_rows.len(),
            total.as_secs_f64()
        )
    })
}
