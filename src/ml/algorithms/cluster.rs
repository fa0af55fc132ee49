//! Clustering: k-means and DBSCAN (linfa-clustering).
//!
//! Hyperparameters: kmeans — `n_clusters` (8), `max_iter` (300), `tol`
//! (1e-4), `n_init` (10), `seed`/`random_state`; dbscan — `eps` (0.5),
//! `min_samples` (5, counting the point itself as scikit-learn does; must
//! be at least 2).

use linfa::traits::{Fit, Predict, Transformer};
use linfa::{DatasetBase, ParamGuard};
use linfa_clustering::{Dbscan, KMeans};
use linfa_nn::distance::L2Dist;
use linfa_nn::{CommonNearestNeighbour, NearestNeighbour};
use ndarray::{Array1, Array2, ArrayView2, Axis};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::hyper::Hyper;
use super::{check_input, column, deserialize, fit_error, not_classifier, serialize, Model};
use crate::ml::error::{MlError, MlResult};

#[derive(Serialize, Deserialize)]
struct KmeansModel {
    n_features: usize,
    model: KMeans<f64, L2Dist>,
}

pub fn fit_kmeans(x: ArrayView2<f64>, params: &Map<String, Value>) -> MlResult<Box<dyn Model>> {
    let h = Hyper::new(
        "kmeans",
        params,
        &[
            "n_clusters",
            "max_iter",
            "tol",
            "n_init",
            "seed",
            "random_state",
        ],
    )?;
    let n_clusters = h.count("n_clusters", 8)?;
    if n_clusters > x.nrows() {
        return Err(MlError::data(format!(
            "kmeans with {n_clusters} clusters needs at least {n_clusters} rows, got {}",
            x.nrows()
        )));
    }
    let model = KMeans::params_with_rng(n_clusters, StdRng::seed_from_u64(h.seed()?))
        .max_n_iterations(h.count("max_iter", 300)? as u64)
        .tolerance(h.positive("tol", 1e-4)?)
        .n_runs(h.count("n_init", 10)?)
        .fit(&DatasetBase::from(x))
        .map_err(|e| fit_error("kmeans", e))?;
    Ok(Box::new(KmeansModel {
        n_features: x.ncols(),
        model,
    }))
}

pub fn load_kmeans(bytes: &[u8]) -> MlResult<Box<dyn Model>> {
    let model: KmeansModel = deserialize("kmeans", bytes)?;
    Ok(Box::new(model))
}

impl Model for KmeansModel {
    fn predict(&self, x: ArrayView2<f64>) -> MlResult<Array2<f64>> {
        check_input(x, self.n_features)?;
        let ids: Array1<usize> = self.model.predict(&x);
        Ok(column(ids.iter().map(|&c| c as f64)))
    }

    fn predict_proba(&self, _x: ArrayView2<f64>) -> MlResult<Array2<f64>> {
        Err(not_classifier("clustering"))
    }

    fn num_features(&self) -> usize {
        self.n_features
    }

    fn to_bytes(&self) -> MlResult<Vec<u8>> {
        serialize(self)
    }
}

/// DBSCAN has no predict for unseen points, so pgmlcat keeps the core
/// points: a new point joins the cluster of the nearest core point within
/// `eps` and is noise (-1) otherwise. On the training rows this reproduces
/// DBSCAN's own labels for core points and border points alike (a border
/// point reachable from two clusters may land in either, as in DBSCAN).
#[derive(Serialize, Deserialize)]
struct DbscanModel {
    eps: f64,
    core_points: Array2<f64>,
    core_clusters: Vec<usize>,
}

pub fn fit_dbscan(x: ArrayView2<f64>, params: &Map<String, Value>) -> MlResult<Box<dyn Model>> {
    let h = Hyper::new("dbscan", params, &["eps", "min_samples"])?;
    let eps = h.positive("eps", 0.5)?;
    let min_samples = h.count("min_samples", 5)?;
    let x = x.as_standard_layout();
    let labels: Array1<Option<usize>> = Dbscan::params(min_samples)
        .tolerance(eps)
        .check()
        .map_err(|e| MlError::invalid(format!("dbscan: {e}")))?
        .transform(&x);
    let index = CommonNearestNeighbour::KdTree
        .from_batch(&x, L2Dist)
        .map_err(|e| fit_error("dbscan", e))?;
    let mut core_rows = Vec::new();
    let mut core_clusters = Vec::new();
    for (i, (row, label)) in x.rows().into_iter().zip(&labels).enumerate() {
        let Some(cluster) = label else { continue };
        let neighbours = index
            .within_range(row, eps)
            .map_err(|e| fit_error("dbscan", e))?;
        if neighbours.len() >= min_samples {
            core_rows.push(i);
            core_clusters.push(*cluster);
        }
    }
    Ok(Box::new(DbscanModel {
        eps,
        core_points: x.select(Axis(0), &core_rows),
        core_clusters,
    }))
}

pub fn load_dbscan(bytes: &[u8]) -> MlResult<Box<dyn Model>> {
    let model: DbscanModel = deserialize("dbscan", bytes)?;
    if model.core_points.nrows() != model.core_clusters.len() {
        return Err(MlError::Data("stored dbscan model is inconsistent".into()));
    }
    Ok(Box::new(model))
}

impl Model for DbscanModel {
    fn predict(&self, x: ArrayView2<f64>) -> MlResult<Array2<f64>> {
        check_input(x, self.core_points.ncols())?;
        let eps2 = self.eps * self.eps;
        Ok(column(x.rows().into_iter().map(|row| {
            let mut best = (f64::INFINITY, -1.0);
            for (core, &cluster) in self.core_points.rows().into_iter().zip(&self.core_clusters) {
                let d2: f64 = core
                    .iter()
                    .zip(row.iter())
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum();
                if d2 <= eps2 && d2 < best.0 {
                    best = (d2, cluster as f64);
                }
            }
            best.1
        })))
    }

    fn predict_proba(&self, _x: ArrayView2<f64>) -> MlResult<Array2<f64>> {
        Err(not_classifier("clustering"))
    }

    fn num_features(&self) -> usize {
        self.core_points.ncols()
    }

    fn to_bytes(&self) -> MlResult<Vec<u8>> {
        serialize(self)
    }
}
