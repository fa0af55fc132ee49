//! Every training algorithm pgmlcat offers, behind one `fit` function and
//! one `Model` trait, so the training pipeline (split, search, metrics,
//! catalog) is written once for all of them. Each family lives in its own
//! file; this one holds the registry (one table row per algorithm: its
//! name, the tasks it serves and how it fits and loads for each), the
//! dispatch through it and the shared checks.

mod bayes;
mod cluster;
pub mod forest;
pub mod hyper;
mod knn;
mod lgbm_fast;
mod lightgbm;
mod lightgbm_params;
pub mod lightgbm_stream;
pub mod lightgbm_text;
mod lightgbm_threads;
mod linear;
mod pca;
mod per_output;
mod svm;
mod trees;

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};
use serde_json::{Map, Value};

use super::error::{MlError, MlResult};
use super::task::Task;

/// The variants are in `TABLE`'s order (checked at compile time), which
/// is also the order error messages list them in.
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

/// One row of the registry.
struct Entry {
    algorithm: Algorithm,
    /// PostgresML's name, matched case-insensitively.
    name: &'static str,
    nan: Nan,
    /// The tasks it serves, each with its own fit and load.
    serves: &'static [Serves],
}

/// What a NaN feature means to the algorithm.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nan {
    /// Refused before fitting, with infinities (`check_finite`): linfa's
    /// algorithms.
    Refused,
    /// LightGBM treats NaN as a missing value.
    Missing,
}

struct Serves {
    task: Task,
    fit: fn(&Fit) -> MlResult<Box<dyn Model>>,
    /// Rebuilds a model from `Model::to_bytes`.
    load: fn(&[u8]) -> MlResult<Box<dyn Model>>,
}

/// The inputs of one fit, checked.
struct Fit<'a, 'h> {
    x: ArrayView2<'a, f64>,
    y: ArrayView2<'a, f64>,
    /// Class codes as linfa wants them: filled for classification by an
    /// algorithm that refuses NaN (linfa's), empty otherwise.
    labels: Array1<usize>,
    num_classes: usize,
    hyperparams: &'h Map<String, Value>,
    threads: usize,
}

const TABLE: &[Entry] = &[
    Entry {
        algorithm: Algorithm::Linear,
        name: "linear",
        nan: Nan::Refused,
        serves: &[
            Serves {
                task: Task::Regression,
                fit: |f| linear::fit_ols(f.x, f.y, f.hyperparams),
                load: linear::load_ols,
            },
            Serves {
                task: Task::Classification,
                fit: |f| linear::fit_logistic(f.x, &f.labels, f.num_classes, f.hyperparams),
                load: linear::load_logistic,
            },
        ],
    },
    Entry {
        algorithm: Algorithm::Ridge,
        name: "ridge",
        nan: Nan::Refused,
        serves: &[Serves {
            task: Task::Regression,
            fit: |f| linear::fit_elastic_net(Algorithm::Ridge, f.x, f.y, f.hyperparams),
            load: linear::load_elastic_net,
        }],
    },
    Entry {
        algorithm: Algorithm::Lasso,
        name: "lasso",
        nan: Nan::Refused,
        serves: &[Serves {
            task: Task::Regression,
            fit: |f| linear::fit_elastic_net(Algorithm::Lasso, f.x, f.y, f.hyperparams),
            load: linear::load_elastic_net,
        }],
    },
    Entry {
        algorithm: Algorithm::ElasticNet,
        name: "elastic_net",
        nan: Nan::Refused,
        serves: &[Serves {
            task: Task::Regression,
            fit: |f| linear::fit_elastic_net(Algorithm::ElasticNet, f.x, f.y, f.hyperparams),
            load: linear::load_elastic_net,
        }],
    },
    Entry {
        algorithm: Algorithm::Svm,
        name: "svm",
        nan: Nan::Refused,
        serves: &[
            Serves {
                task: Task::Regression,
                fit: |f| svm::fit_svr(f.x, f.y, f.hyperparams),
                load: svm::load_svr,
            },
            Serves {
                task: Task::Classification,
                fit: |f| svm::fit_svc(f.x, &f.labels, f.num_classes, f.hyperparams),
                load: svm::load_svc,
            },
        ],
    },
    Entry {
        algorithm: Algorithm::Lightgbm,
        name: "lightgbm",
        nan: Nan::Missing,
        serves: &[
            Serves {
                task: Task::Regression,
                fit: |f| {
                    let task = Task::Regression;
                    lightgbm::fit(task, f.x, f.y, f.num_classes, f.hyperparams, f.threads)
                },
                load: |bytes| lightgbm::load(Task::Regression, bytes),
            },
            Serves {
                task: Task::Classification,
                fit: |f| {
                    let task = Task::Classification;
                    lightgbm::fit(task, f.x, f.y, f.num_classes, f.hyperparams, f.threads)
                },
                load: |bytes| lightgbm::load(Task::Classification, bytes),
            },
        ],
    },
    Entry {
        algorithm: Algorithm::DecisionTree,
        name: "decision_tree",
        nan: Nan::Refused,
        serves: &[Serves {
            task: Task::Classification,
            fit: |f| trees::fit_tree(f.x, &f.labels, f.num_classes, f.hyperparams),
            load: trees::load_tree,
        }],
    },
    Entry {
        algorithm: Algorithm::RandomForest,
        name: "random_forest",
        nan: Nan::Refused,
        serves: &[Serves {
            task: Task::Classification,
            fit: |f| trees::fit_forest(f.x, &f.labels, f.num_classes, f.hyperparams, f.threads),
            load: trees::load_forest,
        }],
    },
    Entry {
        algorithm: Algorithm::NaiveBayes,
        name: "naive_bayes",
        nan: Nan::Refused,
        serves: &[Serves {
            task: Task::Classification,
            fit: |f| bayes::fit(f.x, &f.labels, f.num_classes, f.hyperparams),
            load: bayes::load,
        }],
    },
    Entry {
        algorithm: Algorithm::Knn,
        name: "knn",
        nan: Nan::Refused,
        serves: &[
            Serves {
                task: Task::Regression,
                fit: |f| knn::fit(Task::Regression, f.x, f.y, 0, f.hyperparams),
                load: knn::load,
            },
            // Fits on the codes in `y`; `labels` has checked them already.
            Serves {
                task: Task::Classification,
                fit: |f| knn::fit(Task::Classification, f.x, f.y, f.num_classes, f.hyperparams),
                load: knn::load,
            },
        ],
    },
    Entry {
        algorithm: Algorithm::Kmeans,
        name: "kmeans",
        nan: Nan::Refused,
        serves: &[Serves {
            task: Task::Clustering,
            fit: |f| cluster::fit_kmeans(f.x, f.hyperparams),
            load: cluster::load_kmeans,
        }],
    },
    Entry {
        algorithm: Algorithm::Dbscan,
        name: "dbscan",
        nan: Nan::Refused,
        serves: &[Serves {
            task: Task::Clustering,
            fit: |f| cluster::fit_dbscan(f.x, f.hyperparams),
            load: cluster::load_dbscan,
        }],
    },
    Entry {
        algorithm: Algorithm::Pca,
        name: "pca",
        nan: Nan::Refused,
        serves: &[Serves {
            task: Task::Decomposition,
            fit: |f| pca::fit(f.x, f.hyperparams),
            load: pca::load,
        }],
    },
];

// `Algorithm::entry` indexes the table by discriminant.
const _: () = {
    let mut i = 0;
    while i < TABLE.len() {
        assert!(
            TABLE[i].algorithm as usize == i,
            "TABLE is out of Algorithm's order"
        );
        i += 1;
    }
};

impl Algorithm {
    pub const ALL: [Algorithm; TABLE.len()] = {
        let mut all = [Algorithm::Linear; TABLE.len()];
        let mut i = 0;
        while i < TABLE.len() {
            all[i] = TABLE[i].algorithm;
            i += 1;
        }
        all
    };

    fn entry(self) -> &'static Entry {
        &TABLE[self as usize]
    }

    fn serving(self, task: Task) -> Option<&'static Serves> {
        self.entry().serves.iter().find(|s| s.task == task)
    }

    /// PostgresML's algorithm names, case-insensitive. PostgresML's default
    /// algorithm is "linear" for every task, so for clustering it means
    /// kmeans and for decomposition pca.
    pub fn parse(name: &str, task: Task) -> MlResult<Algorithm> {
        let wanted = name.trim();
        let found = TABLE
            .iter()
            .find(|e| e.name.eq_ignore_ascii_case(wanted))
            .map(|e| e.algorithm.for_task(task));
        match found {
            Some(alg) if alg.serving(task).is_some() => Ok(alg),
            _ => {
                let mut names: Vec<&str> = Algorithm::valid_for(task)
                    .iter()
                    .map(|a| a.name())
                    .collect();
                // "linear" is accepted too, as the task's default.
                if Algorithm::Linear.for_task(task) != Algorithm::Linear {
                    names.insert(0, Algorithm::Linear.name());
                }
                Err(MlError::invalid(format!(
                    "algorithm \"{name}\" is not available for {}; valid algorithms: {}",
                    task.name(),
                    names.join(", ")
                )))
            }
        }
    }

    /// "linear" as the default of a task it does not serve: that task's
    /// own default. Any other algorithm is itself.
    fn for_task(self, task: Task) -> Algorithm {
        match (self, task) {
            (Algorithm::Linear, Task::Clustering) => Algorithm::Kmeans,
            (Algorithm::Linear, Task::Decomposition) => Algorithm::Pca,
            (alg, _) => alg,
        }
    }

    pub fn name(self) -> &'static str {
        self.entry().name
    }

    /// The algorithms serving `task`, in the table's order.
    pub fn valid_for(task: Task) -> Vec<Algorithm> {
        TABLE
            .iter()
            .filter(|e| e.serves.iter().any(|s| s.task == task))
            .map(|e| e.algorithm)
            .collect()
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
    /// A linear model's coefficients and intercepts, in its raw output
    /// space (a logistic model's margins).
    fn linear_terms(&self) -> Option<LinearTerms> {
        None
    }
    /// A tree model's TreeSHAP contributions, rows by outputs times
    /// (features plus one): each output's block ends with its expected
    /// value, as LightGBM's `predict_contrib` lays them out.
    fn tree_contributions(&self, _x: ArrayView2<f64>) -> Option<MlResult<Array2<f64>>> {
        None
    }
}

/// `raw output[k] = intercept[k] + x · coef[.., k]` for each output k: one
/// for regression and binary logistic regression (the margin of class
/// code 1), one per class code for multinomial logistic regression.
pub struct LinearTerms {
    /// features × outputs.
    pub coef: Array2<f64>,
    pub intercept: Array1<f64>,
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
    let Some(serves) = alg.serving(task) else {
        return Err(unavailable(alg, task));
    };
    check_shapes(task, x, y, num_classes)?;
    // The linfa crates assert and unwrap on inputs they consider impossible;
    // a panic there must fail this training, not the proxy thread running it.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Reborrowed: a fit's views share one lifetime.
        let (x, y) = (x.view(), y.view());
        let inputs = Fit::new(alg, task, x, y, num_classes, hyperparams, threads.max(1))?;
        (serves.fit)(&inputs)
    }))
    .unwrap_or_else(|_| {
        Err(MlError::Internal(format!(
            "{} training failed unexpectedly (the algorithm panicked)",
            alg.name()
        )))
    })
}

impl<'a, 'h> Fit<'a, 'h> {
    /// Refuses NaN, and turns class codes into linfa's labels, for the
    /// algorithms that need it.
    fn new(
        alg: Algorithm,
        task: Task,
        x: ArrayView2<'a, f64>,
        y: ArrayView2<'a, f64>,
        num_classes: usize,
        hyperparams: &'h Map<String, Value>,
        threads: usize,
    ) -> MlResult<Fit<'a, 'h>> {
        let mut labels = Array1::default(0);
        if alg.entry().nan == Nan::Refused {
            check_finite(x)?;
            if task == Task::Classification {
                labels = class_labels(y, num_classes)?;
            }
        }
        Ok(Fit {
            x,
            y,
            labels,
            num_classes,
            hyperparams,
            threads,
        })
    }
}

/// Rebuilds a model from `Model::to_bytes`.
pub fn load(alg: Algorithm, task: Task, bytes: &[u8]) -> MlResult<Box<dyn Model>> {
    let alg = alg.for_task(task);
    match alg.serving(task) {
        Some(serves) => (serves.load)(bytes),
        None => Err(unavailable(alg, task)),
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
