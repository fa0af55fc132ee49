//! Every training algorithm pgmlcat offers, behind one `fit` function and
//! one `Model` trait, so the training pipeline (split, search, metrics,
//! catalog) is written once for all of them. Each family lives in its own
//! file; this one holds the names, the dispatch and the shared checks.

mod bayes;
mod cluster;
pub mod hyper;
mod knn;
mod lgbm_fast;
mod lightgbm;
mod lightgbm_params;
mod linear;
mod pca;
mod per_output;
mod svm;
mod trees;

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};
use serde_json::{Map, Value};

use super::error::{MlError, MlResult};
use super::task::Task;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Linear,
    Ridge,
    Lasso,
    ElasticNet,
    Svm,
    Lightgbm,
    DecisionTree,
    RandomForest,
    NaiveBayes,
    Knn,
    Kmeans,
    Dbscan,
    Pca,
}

const REGRESSION: &[Algorithm] = &[
    Algorithm::Linear,
    Algorithm::Ridge,
    Algorithm::Lasso,
    Algorithm::ElasticNet,
    Algorithm::Svm,
    Algorithm::Lightgbm,
    Algorithm::Knn,
];
const CLASSIFICATION: &[Algorithm] = &[
    Algorithm::Linear,
    Algorithm::Svm,
    Algorithm::Lightgbm,
    Algorithm::DecisionTree,
    Algorithm::RandomForest,
    Algorithm::NaiveBayes,
    Algorithm::Knn,
];
const CLUSTERING: &[Algorithm] = &[Algorithm::Kmeans, Algorithm::Dbscan];
const DECOMPOSITION: &[Algorithm] = &[Algorithm::Pca];

impl Algorithm {
    pub const ALL: [Algorithm; 13] = [
        Algorithm::Linear,
        Algorithm::Ridge,
        Algorithm::Lasso,
        Algorithm::ElasticNet,
        Algorithm::Svm,
        Algorithm::Lightgbm,
        Algorithm::DecisionTree,
        Algorithm::RandomForest,
        Algorithm::NaiveBayes,
        Algorithm::Knn,
        Algorithm::Kmeans,
        Algorithm::Dbscan,
        Algorithm::Pca,
    ];

    /// PostgresML's algorithm names, case-insensitive. PostgresML's default
    /// algorithm is "linear" for every task, so for clustering it means
    /// kmeans and for decomposition pca.
    pub fn parse(name: &str, task: Task) -> MlResult<Algorithm> {
        let wanted = name.trim();
        let found = Algorithm::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(wanted));
        let found = match (found, task) {
            (Some(Algorithm::Linear), Task::Clustering) => Some(Algorithm::Kmeans),
            (Some(Algorithm::Linear), Task::Decomposition) => Some(Algorithm::Pca),
            (found, _) => found,
        };
        match found {
            Some(alg) if Algorithm::valid_for(task).contains(&alg) => Ok(alg),
            _ => {
                let mut names: Vec<&str> = Algorithm::valid_for(task)
                    .iter()
                    .map(|a| a.name())
                    .collect();
                if matches!(task, Task::Clustering | Task::Decomposition) {
                    names.insert(0, "linear");
                }
                Err(MlError::invalid(format!(
                    "algorithm \"{name}\" is not available for {}; valid algorithms: {}",
                    task.name(),
                    names.join(", ")
                )))
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Linear => "linear",
            Algorithm::Ridge => "ridge",
            Algorithm::Lasso => "lasso",
            Algorithm::ElasticNet => "elastic_net",
            Algorithm::Svm => "svm",
            Algorithm::Lightgbm => "lightgbm",
            Algorithm::DecisionTree => "decision_tree",
            Algorithm::RandomForest => "random_forest",
            Algorithm::NaiveBayes => "naive_bayes",
            Algorithm::Knn => "knn",
            Algorithm::Kmeans => "kmeans",
            Algorithm::Dbscan => "dbscan",
            Algorithm::Pca => "pca",
        }
    }

    pub fn valid_for(task: Task) -> &'static [Algorithm] {
        match task {
            Task::Regression => REGRESSION,
            Task::Classification => CLASSIFICATION,
            Task::Clustering => CLUSTERING,
            Task::Decomposition => DECOMPOSITION,
        }
    }
}

/// A trained model, whatever the algorithm.
pub trait Model: Send + Sync {
    /// rows × outputs: regression 1 column (k for joint), classification 1
    /// column of class codes as f64, clustering 1 column of cluster ids (-1 =
    /// noise), pca the transformed components (rows × n_components).
    fn predict(&self, x: ArrayView2<f64>) -> MlResult<Array2<f64>>;
    /// Classification only: rows × num_classes probabilities summing to 1.
    fn predict_proba(&self, x: ArrayView2<f64>) -> MlResult<Array2<f64>>;
    fn num_features(&self) -> usize;
    /// The form stored in the database: LightGBM's model string, serde_json
    /// for the linfa models.
    fn to_bytes(&self) -> MlResult<Vec<u8>>;
    /// Decomposition only: explained variance ratio per component.
    fn explained_variance_ratio(&self) -> Option<Vec<f64>> {
        None
    }
    /// LightGBM's total gain per feature; None for algorithms without one.
    fn feature_importance(&self) -> Option<Vec<f64>> {
        None
    }
}

/// Trains `alg` for `task`.
///
/// `x` is rows × features; `y` rows × outputs (1 column for regression and
/// classification, k for multi-output regression, 0 for clustering and
/// decomposition). For classification `y` holds class codes
/// 0..num_classes-1 and `num_classes >= 2`.
pub fn fit(
    alg: Algorithm,
    task: Task,
    x: ArrayView2<f64>,
    y: ArrayView2<f64>,
    num_classes: usize,
    hyperparams: &Map<String, Value>,
    threads: usize,
) -> MlResult<Box<dyn Model>> {
    if !Algorithm::valid_for(task).contains(&alg) {
        return Err(MlError::invalid(format!(
            "algorithm {} is not available for {}",
            alg.name(),
            task.name()
        )));
    }
    check_shapes(task, x, y, num_classes)?;
    // The linfa crates assert and unwrap on inputs they consider impossible;
    // a panic there must fail this training, not the proxy thread running it.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        fit_checked(alg, task, x, y, num_classes, hyperparams, threads.max(1))
    }))
    .unwrap_or_else(|_| {
        Err(MlError::Internal(format!(
            "{} training failed unexpectedly (the algorithm panicked)",
            alg.name()
        )))
    })
}

fn fit_checked(
    alg: Algorithm,
    task: Task,
    x: ArrayView2<f64>,
    y: ArrayView2<f64>,
    num_classes: usize,
    hyperparams: &Map<String, Value>,
    threads: usize,
) -> MlResult<Box<dyn Model>> {
    if alg == Algorithm::Lightgbm {
        // LightGBM treats NaN as missing, so no finiteness check here.
        return lightgbm::fit(task, x, y, num_classes, hyperparams, threads);
    }
    check_finite(x)?;
    match task {
        Task::Regression => match alg {
            Algorithm::Linear => linear::fit_ols(x, y, hyperparams),
            Algorithm::Ridge | Algorithm::Lasso | Algorithm::ElasticNet => {
                linear::fit_elastic_net(alg, x, y, hyperparams)
            }
            Algorithm::Svm => svm::fit_svr(x, y, hyperparams),
            Algorithm::Knn => knn::fit(task, x, y, 0, hyperparams),
            _ => Err(unavailable(alg, task)),
        },
        Task::Classification => {
            let labels = class_labels(y, num_classes)?;
            match alg {
                Algorithm::Linear => linear::fit_logistic(x, &labels, num_classes, hyperparams),
                Algorithm::Svm => svm::fit_svc(x, &labels, num_classes, hyperparams),
                Algorithm::DecisionTree => trees::fit_tree(x, &labels, num_classes, hyperparams),
                Algorithm::RandomForest => {
                    trees::fit_forest(x, &labels, num_classes, hyperparams, threads)
                }
                Algorithm::NaiveBayes => bayes::fit(x, &labels, num_classes, hyperparams),
                Algorithm::Knn => knn::fit(task, x, y, num_classes, hyperparams),
                _ => Err(unavailable(alg, task)),
            }
        }
        Task::Clustering => match alg {
            Algorithm::Kmeans => cluster::fit_kmeans(x, hyperparams),
            Algorithm::Dbscan => cluster::fit_dbscan(x, hyperparams),
            _ => Err(unavailable(alg, task)),
        },
        Task::Decomposition => pca::fit(x, hyperparams),
    }
}

/// Rebuilds a model from `Model::to_bytes`.
pub fn load(alg: Algorithm, task: Task, bytes: &[u8]) -> MlResult<Box<dyn Model>> {
    match (alg, task) {
        (Algorithm::Lightgbm, _) => lightgbm::load(task, bytes),
        (Algorithm::Linear, Task::Regression) => linear::load_ols(bytes),
        (Algorithm::Ridge | Algorithm::Lasso | Algorithm::ElasticNet, Task::Regression) => {
            linear::load_elastic_net(bytes)
        }
        (Algorithm::Linear, Task::Classification) => linear::load_logistic(bytes),
        (Algorithm::Svm, Task::Regression) => svm::load_svr(bytes),
        (Algorithm::Svm, Task::Classification) => svm::load_svc(bytes),
        (Algorithm::DecisionTree, Task::Classification) => trees::load_tree(bytes),
        (Algorithm::RandomForest, Task::Classification) => trees::load_forest(bytes),
        (Algorithm::NaiveBayes, Task::Classification) => bayes::load(bytes),
        (Algorithm::Knn, Task::Regression | Task::Classification) => knn::load(bytes),
        (Algorithm::Kmeans | Algorithm::Linear, Task::Clustering) => cluster::load_kmeans(bytes),
        (Algorithm::Dbscan, Task::Clustering) => cluster::load_dbscan(bytes),
        (Algorithm::Pca | Algorithm::Linear, Task::Decomposition) => pca::load(bytes),
        _ => Err(unavailable(alg, task)),
    }
}

fn unavailable(alg: Algorithm, task: Task) -> MlError {
    MlError::invalid(format!(
        "algorithm {} is not available for {}",
        alg.name(),
        task.name()
    ))
}

fn check_shapes(
    task: Task,
    x: ArrayView2<f64>,
    y: ArrayView2<f64>,
    num_classes: usize,
) -> MlResult<()> {
    if x.nrows() == 0 {
        return Err(MlError::data("no rows to train on"));
    }
    if x.ncols() == 0 {
        return Err(MlError::data("no feature columns to train on"));
    }
    if task.supervised() {
        if y.nrows() != x.nrows() {
            return Err(MlError::Internal(format!(
                "{} label rows for {} feature rows",
                y.nrows(),
                x.nrows()
            )));
        }
        if y.ncols() == 0 {
            return Err(MlError::invalid(format!(
                "{} needs a label column",
                task.name()
            )));
        }
    }
    if task == Task::Classification {
        if y.ncols() != 1 {
            return Err(MlError::invalid(
                "classification takes exactly one label column",
            ));
        }
        if num_classes < 2 {
            return Err(MlError::data(
                "classification needs at least two distinct labels",
            ));
        }
    }
    Ok(())
}

/// linfa's algorithms assume finite inputs (NaN makes the SVD, the k-d
/// trees and the solvers misbehave or panic).
fn check_finite(x: ArrayView2<f64>) -> MlResult<()> {
    if x.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(MlError::data(
            "features contain NaN or infinite values; impute or filter them first",
        ))
    }
}

fn check_features(x: ArrayView2<f64>, expected: usize) -> MlResult<()> {
    if x.ncols() != expected {
        return Err(MlError::DatatypeMismatch(format!(
            "the model takes {expected} features, got {}",
            x.ncols()
        )));
    }
    Ok(())
}

/// Validation shared by every linfa model's predict.
fn check_input(x: ArrayView2<f64>, expected: usize) -> MlResult<()> {
    check_features(x, expected)?;
    check_finite(x)
}

/// Class codes as linfa wants them; anything but 0..num_classes-1 is the
/// caller's bug or bad data, reported rather than truncated.
fn class_labels(y: ArrayView2<f64>, num_classes: usize) -> MlResult<Array1<usize>> {
    y.column(0)
        .iter()
        .map(|&v| {
            if v >= 0.0 && v.fract() == 0.0 && (v as usize) < num_classes {
                Ok(v as usize)
            } else {
                Err(MlError::data(format!(
                    "class label {v} is not a code between 0 and {}",
                    num_classes - 1
                )))
            }
        })
        .collect()
}

fn fit_error(alg: &str, e: impl std::fmt::Display) -> MlError {
    MlError::data(format!("{alg} training failed: {e}"))
}

fn serialize<T: serde::Serialize>(model: &T) -> MlResult<Vec<u8>> {
    serde_json::to_vec(model).map_err(|e| MlError::Internal(format!("model serialization: {e}")))
}

fn deserialize<T: serde::de::DeserializeOwned>(alg: &str, bytes: &[u8]) -> MlResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| MlError::Data(format!("stored {alg} model is unreadable: {e}")))
}

fn not_classifier(what: &str) -> MlError {
    MlError::invalid(format!(
        "predict_proba is only available for classification models, not {what}"
    ))
}

/// One column of f64 from per-row values.
fn column(values: impl IntoIterator<Item = f64>) -> Array2<f64> {
    let v: Array1<f64> = values.into_iter().collect();
    v.insert_axis(Axis(1))
}

/// Class codes of the most probable class per row.
fn argmax_rows(proba: &Array2<f64>) -> Array2<f64> {
    column(proba.rows().into_iter().map(|r| argmax(r) as f64))
}

fn argmax(row: ArrayView1<f64>) -> usize {
    let mut best = 0;
    let mut best_v = f64::NEG_INFINITY;
    for (i, &v) in row.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best
}

/// Numerically stable softmax of each row in place.
fn softmax_rows(scores: &mut Array2<f64>) {
    for mut row in scores.rows_mut() {
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !max.is_finite() {
            let n = row.len() as f64;
            row.fill(1.0 / n);
            continue;
        }
        row.mapv_inplace(|v| (v - max).exp());
        let sum = row.sum();
        row.mapv_inplace(|v| v / sum);
    }
}

fn one_hot(codes: impl IntoIterator<Item = usize>, num_classes: usize) -> Array2<f64> {
    let codes: Vec<usize> = codes.into_iter().collect();
    let mut out = Array2::zeros((codes.len(), num_classes));
    for (mut row, c) in out.rows_mut().into_iter().zip(codes) {
        if let Some(cell) = row.get_mut(c) {
            *cell = 1.0;
        }
    }
    out
}

#[cfg(test)]
mod tests;
