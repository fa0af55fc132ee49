//! Classification trees: one linfa-trees decision tree, and a random forest
//! of them.
//!
//! The forest is pgmlcat's own bagging rather than linfa-ensemble's
//! `EnsembleLearner`: that type has no serde support, unwraps tree errors,
//! and fits serially. Here every tree gets a bootstrap sample of the rows
//! and a random subset of the features (per tree, not per split as in
//! scikit-learn), trees train on `threads` threads, and tree i draws from
//! its own generator seeded from (seed, i), so the forest is the same
//! whatever the thread count.
//!
//! Hyperparameters: decision_tree — `max_depth` (none), `min_samples_split`
//! (2), `min_samples_leaf` (1), `criterion` ("gini" or "entropy"),
//! `min_impurity_decrease` (1e-5, must be > 0). random_forest — the same plus
//! `n_estimators` (100), `max_features` ("sqrt", "log2", a fraction in (0, 1]
//! or a count; default "sqrt"), `bootstrap` (true), `seed`/`random_state`.

use linfa::traits::{Fit, Predict};
use linfa::{DatasetBase, ParamGuard};
use linfa_trees::{DecisionTree, DecisionTreeValidParams, SplitQuality};
use ndarray::{Array1, Array2, ArrayView2, Axis};
use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::hyper::Hyper;
use super::{argmax_rows, check_input, deserialize, fit_error, one_hot, serialize, Model};
use crate::ml::error::{MlError, MlResult};

const TREE: &[&str] = &[
    "max_depth",
    "min_samples_split",
    "min_samples_leaf",
    "criterion",
    "min_impurity_decrease",
];
const FOREST: &[&str] = &[
    "max_depth",
    "min_samples_split",
    "min_samples_leaf",
    "criterion",
    "min_impurity_decrease",
    "n_estimators",
    "max_features",
    "bootstrap",
    "seed",
    "random_state",
];

type TreeParams = DecisionTreeValidParams<f64, usize>;

fn tree_params(h: &Hyper) -> MlResult<TreeParams> {
    let quality = match h.choice("criterion", &["gini", "entropy"], "gini")? {
        "entropy" => SplitQuality::Entropy,
        _ => SplitQuality::Gini,
    };
    DecisionTree::<f64, usize>::params()
        .split_quality(quality)
        .max_depth(h.usize_opt("max_depth")?)
        .min_weight_split(h.count("min_samples_split", 2)? as f32)
        .min_weight_leaf(h.count("min_samples_leaf", 1)? as f32)
        .min_impurity_decrease(h.f64("min_impurity_decrease", 1e-5)?)
        .check()
        .map_err(|e| MlError::invalid(e.to_string()))
}

#[derive(Serialize, Deserialize)]
struct TreeModel {
    n_features: usize,
    num_classes: usize,
    tree: DecisionTree<f64, usize>,
}

pub fn fit_tree(
    x: ArrayView2<f64>,
    labels: &Array1<usize>,
    num_classes: usize,
    params: &Map<String, Value>,
) -> MlResult<Box<dyn Model>> {
    let h = Hyper::new("decision_tree", params, TREE)?;
    let tree = tree_params(&h)?
        .fit(&DatasetBase::new(x, labels.view()))
        .map_err(|e| fit_error("decision_tree", e))?;
    Ok(Box::new(TreeModel {
        n_features: x.ncols(),
        num_classes,
        tree,
    }))
}

pub fn load_tree(bytes: &[u8]) -> MlResult<Box<dyn Model>> {
    let model: TreeModel = deserialize("decision_tree", bytes)?;
    Ok(Box::new(model))
}

impl Model for TreeModel {
    fn predict(&self, x: ArrayView2<f64>) -> MlResult<Array2<f64>> {
        Ok(argmax_rows(&self.predict_proba(x)?))
    }

    /// linfa's tree keeps only the majority class of a leaf, so the
    /// probabilities are the one-hot encoding of the prediction.
    fn predict_proba(&self, x: ArrayView2<f64>) -> MlResult<Array2<f64>> {
        check_input(x, self.n_features)?;
        let classes: Array1<usize> = self.tree.predict(&x);
        Ok(one_hot(classes, self.num_classes))
    }

    fn num_features(&self) -> usize {
        self.n_features
    }

    fn to_bytes(&self) -> MlResult<Vec<u8>> {
        serialize(self)
    }
}

#[derive(Serialize, Deserialize)]
struct ForestTree {
    /// Columns of the input this tree was trained on, in order.
    features: Vec<usize>,
    tree: DecisionTree<f64, usize>,
}

#[derive(Serialize, Deserialize)]
struct ForestModel {
    n_features: usize,
    num_classes: usize,
    trees: Vec<ForestTree>,
}

struct ForestPlan<'x, 'l> {
    x: ArrayView2<'x, f64>,
    labels: &'l Array1<usize>,
    params: TreeParams,
    n_sub_features: usize,
    bootstrap: bool,
    seed: u64,
}

impl ForestPlan<'_, '_> {
    fn fit_one(&self, index: usize) -> MlResult<ForestTree> {
        let (n, d) = self.x.dim();
        let mut rng =
            StdRng::seed_from_u64(self.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let rows: Vec<usize> = if self.bootstrap {
            (0..n).map(|_| rng.gen_range(0..n)).collect()
        } else {
            (0..n).collect()
        };
        let mut features = sample(&mut rng, d, self.n_sub_features).into_vec();
        features.sort_unstable();
        // Both index lists are drawn below n and d, so the lookups stay in bounds.
        let sub = Array2::from_shape_fn((rows.len(), features.len()), |(i, j)| {
            self.x[[rows[i], features[j]]]
        });
        let sub_labels: Array1<usize> = rows.iter().map(|&r| self.labels[r]).collect();
        let tree = self
            .params
            .fit(&DatasetBase::new(sub, sub_labels))
            .map_err(|e| fit_error("random_forest", e))?;
        Ok(ForestTree { features, tree })
    }
}

/// scikit-learn's `max_features`: a JSON integer is a count, a float a
/// fraction of the features.
fn sub_feature_count(h: &Hyper, d: usize) -> MlResult<usize> {
    let bad = || {
        MlError::invalid(
            "hyperparameter \"max_features\" for algorithm random_forest must be \"sqrt\", \"log2\", a fraction in (0, 1] or a feature count",
        )
    };
    let n = match h.raw("max_features") {
        None => (d as f64).sqrt().ceil() as usize,
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "sqrt" => (d as f64).sqrt().ceil() as usize,
            "log2" => (d as f64).log2().ceil() as usize,
            _ => return Err(bad()),
        },
        Some(v) => match (v.as_u64(), v.as_f64()) {
            (Some(count), _) if count >= 1 => usize::try_from(count).map_err(|_| bad())?,
            (None, Some(f)) if f > 0.0 && f <= 1.0 => (f * d as f64).ceil() as usize,
            _ => return Err(bad()),
        },
    };
    Ok(n.clamp(1, d))
}

pub fn fit_forest(
    x: ArrayView2<f64>,
    labels: &Array1<usize>,
    num_classes: usize,
    params: &Map<String, Value>,
    threads: usize,
) -> MlResult<Box<dyn Model>> {
    let h = Hyper::new("random_forest", params, FOREST)?;
    let n_trees = h.count("n_estimators", 100)?;
    let plan = ForestPlan {
        x,
        labels,
        params: tree_params(&h)?,
        n_sub_features: sub_feature_count(&h, x.ncols())?,
        bootstrap: h.bool("bootstrap", true)?,
        seed: h.seed()?,
    };
    let workers = threads.clamp(1, n_trees);
    let mut results: Vec<(usize, MlResult<ForestTree>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let plan = &plan;
                s.spawn(move || {
                    (w..n_trees)
                        .step_by(workers)
                        .map(|i| (i, plan.fit_one(i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    vec![(
                        usize::MAX,
                        Err(MlError::Internal("a random_forest worker panicked".into())),
                    )]
                })
            })
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    let trees = results
        .into_iter()
        .map(|(_, t)| t)
        .collect::<MlResult<Vec<_>>>()?;
    Ok(Box::new(ForestModel {
        n_features: x.ncols(),
        num_classes,
        trees,
    }))
}

pub fn load_forest(bytes: &[u8]) -> MlResult<Box<dyn Model>> {
    let model: ForestModel = deserialize("random_forest", bytes)?;
    if model
        .trees
        .iter()
        .any(|t| t.features.iter().any(|&f| f >= model.n_features))
    {
        return Err(MlError::Data(
            "stored random_forest model refers to features it does not have".into(),
        ));
    }
    Ok(Box::new(model))
}

impl Model for ForestModel {
    fn predict(&self, x: ArrayView2<f64>) -> MlResult<Array2<f64>> {
        Ok(argmax_rows(&self.predict_proba(x)?))
    }

    /// The fraction of trees voting for each class.
    fn predict_proba(&self, x: ArrayView2<f64>) -> MlResult<Array2<f64>> {
        check_input(x, self.n_features)?;
        let mut votes = Array2::<f64>::zeros((x.nrows(), self.num_classes));
        for t in &self.trees {
            let sub = x.select(Axis(1), &t.features);
            let pred: Array1<usize> = t.tree.predict(&sub);
            for (mut row, c) in votes.rows_mut().into_iter().zip(pred) {
                if let Some(cell) = row.get_mut(c) {
                    *cell += 1.0;
                }
            }
        }
        let n = self.trees.len().max(1) as f64;
        votes.mapv_inplace(|v| v / n);
        Ok(votes)
    }

    fn num_features(&self) -> usize {
        self.n_features
    }

    fn to_bytes(&self) -> MlResult<Vec<u8>> {
        serialize(self)
    }
}
