//! k-nearest neighbours for classification (vote) and regression (mean),
//! over a linfa-nn index. The model is its training data: `to_bytes`
//! stores every training row.
//!
//! Hyperparameters: `n_neighbors` (5), `weights` ("uniform" or "distance":
//! neighbours weigh 1/distance, and exact matches, if any, decide alone as
//! in scikit-learn).

use linfa_nn::distance::L2Dist;
use linfa_nn::{CommonNearestNeighbour, NearestNeighbour};
use ndarray::{Array2, ArrayView1, ArrayView2};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::hyper::Hyper;
use super::{argmax_rows, check_input, deserialize, not_classifier, serialize, Model};
use crate::ml::error::{MlError, MlResult};
use crate::ml::task::Task;

/// Below this many query rows a linear scan beats building a k-d tree.
const KD_TREE_MIN_QUERIES: usize = 32;

#[derive(Serialize, Deserialize)]
struct KnnModel {
    /// 0 for regression.
    num_classes: usize,
    k: usize,
    distance_weights: bool,
    x: Array2<f64>,
    /// Class codes (one column) or regression targets (one column per output).
    y: Array2<f64>,
}

pub fn fit(
    task: Task,
    x: ArrayView2<f64>,
    y: ArrayView2<f64>,
    num_classes: usize,
    params: &Map<String, Value>,
) -> MlResult<Box<dyn Model>> {
    let h = Hyper::new("knn", params, &["n_neighbors", "weights"])?;
    let k = h.count("n_neighbors", 5)?;
    let distance_weights = h.choice("weights", &["uniform", "distance"], "uniform")? == "distance";
    Ok(Box::new(KnnModel {
        num_classes: if task == Task::Classification {
            num_classes
        } else {
            0
        },
        k,
        distance_weights,
        x: x.as_standard_layout().into_owned(),
        y: y.to_owned(),
    }))
}

pub fn load(bytes: &[u8]) -> MlResult<Box<dyn Model>> {
    let model: KnnModel = deserialize("knn", bytes)?;
    if model.x.nrows() != model.y.nrows() || model.x.nrows() == 0 {
        return Err(MlError::Data("stored knn model is inconsistent".into()));
    }
    Ok(Box::new(model))
}

impl KnnModel {
    /// For each query row, the weight each output of `y` gets: rows × outputs
    /// (regression) or rows × classes (classification, weighted votes).
    fn aggregate(&self, x: ArrayView2<f64>) -> MlResult<Array2<f64>> {
        check_input(x, self.x.ncols())?;
        let algo = if x.nrows() < KD_TREE_MIN_QUERIES {
            CommonNearestNeighbour::LinearSearch
        } else {
            CommonNearestNeighbour::KdTree
        };
        let index = algo
            .from_batch(&self.x, L2Dist)
            .map_err(|e| MlError::Internal(format!("knn index: {e}")))?;
        let query = x.as_standard_layout();
        let width = if self.num_classes > 0 {
            self.num_classes
        } else {
            self.y.ncols()
        };
        let mut out = Array2::zeros((x.nrows(), width));
        for (row, mut target) in query.rows().into_iter().zip(out.rows_mut()) {
            let found = index
                .k_nearest(row, self.k)
                .map_err(|e| MlError::Internal(format!("knn search: {e}")))?;
            let weights = self.weights(row, &found);
            let total: f64 = weights.iter().sum();
            for ((_, i), w) in found.iter().zip(&weights) {
                let w = if total > 0.0 { w / total } else { 0.0 };
                if *i >= self.y.nrows() {
                    continue;
                }
                let y = self.y.row(*i);
                if self.num_classes > 0 {
                    let class = y.get(0).copied().unwrap_or(-1.0);
                    if class >= 0.0 {
                        if let Some(cell) = target.get_mut(class as usize) {
                            *cell += w;
                        }
                    }
                } else {
                    target.scaled_add(w, &y);
                }
            }
        }
        Ok(out)
    }

    fn weights(&self, row: ArrayView1<f64>, found: &[(ArrayView1<f64>, usize)]) -> Vec<f64> {
        if !self.distance_weights {
            return vec![1.0; found.len()];
        }
        let dist: Vec<f64> = found
            .iter()
            .map(|(p, _)| {
                p.iter()
                    .zip(row.iter())
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect();
        if dist.contains(&0.0) {
            return dist
                .iter()
                .map(|&d| if d == 0.0 { 1.0 } else { 0.0 })
                .collect();
        }
        dist.iter().map(|d| 1.0 / d).collect()
    }
}

impl Model for KnnModel {
    fn predict(&self, x: ArrayView2<f64>) -> MlResult<Array2<f64>> {
        let agg = self.aggregate(x)?;
        if self.num_classes > 0 {
            Ok(argmax_rows(&agg))
        } else {
            Ok(agg)
        }
    }

    /// The (distance-weighted) fraction of the k neighbours in each class.
    fn predict_proba(&self, x: ArrayView2<f64>) -> MlResult<Array2<f64>> {
        if self.num_classes == 0 {
            return Err(not_classifier("regression"));
        }
        self.aggregate(x)
    }

    fn num_features(&self) -> usize {
        self.x.ncols()
    }

    fn to_bytes(&self) -> MlResult<Vec<u8>> {
        serialize(self)
    }
}
