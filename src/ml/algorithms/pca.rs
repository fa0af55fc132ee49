//! Principal component analysis (linfa-reduction); predict = transform.
//! Hyperparameter: `n_components` (default: min(rows, features)).

use linfa::traits::{Fit, Predict};
use linfa::DatasetBase;
use linfa_reduction::Pca;
use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::hyper::Hyper;
use super::{check_input, deserialize, fit_error, not_classifier, serialize, Model};
use crate::ml::error::{MlError, MlResult};

#[derive(Serialize, Deserialize)]
struct PcaModel {
    n_features: usize,
    /// Share of the data's total variance each component explains.
    explained_variance_ratio: Vec<f64>,
    model: Pca<f64>,
}

pub fn fit(x: ArrayView2<f64>, params: &Map<String, Value>) -> MlResult<Box<dyn Model>> {
    let h = Hyper::new("pca", params, &["n_components"])?;
    let (rows, features) = x.dim();
    let limit = rows.min(features);
    let n = h.count("n_components", limit)?;
    if n > limit {
        return Err(MlError::invalid(format!(
            "hyperparameter \"n_components\" for algorithm pca must be at most min(rows, features) = {limit}, got {n}"
        )));
    }
    let model = Pca::params(n)
        .fit(&DatasetBase::from(x))
        .map_err(|e| fit_error("pca", e))?;
    Ok(Box::new(PcaModel {
        n_features: features,
        explained_variance_ratio: variance_ratio(x, &model),
        model,
    }))
}

/// linfa's own ratio divides by the retained components' variance only (so
/// the components always sum to 1, which would make the
/// cumulative_explained_variance metric meaningless); scikit-learn divides
/// by the data's total variance, as done here.
fn variance_ratio(x: ArrayView2<f64>, model: &Pca<f64>) -> Vec<f64> {
    let total: f64 = x.var_axis(ndarray::Axis(0), 0.0).sum();
    let n = x.nrows() as f64;
    model
        .singular_values()
        .iter()
        .map(|s| {
            if total > 0.0 {
                (s * s / n / total).min(1.0)
            } else {
                0.0
            }
        })
        .collect()
}

pub fn load(bytes: &[u8]) -> MlResult<Box<dyn Model>> {
    let model: PcaModel = deserialize("pca", bytes)?;
    Ok(Box::new(model))
}

impl Model for PcaModel {
    fn predict(&self, x: ArrayView2<f64>) -> MlResult<Array2<f64>> {
        check_input(x, self.n_features)?;
        Ok(self.model.predict(&x))
    }

    fn predict_proba(&self, _x: ArrayView2<f64>) -> MlResult<Array2<f64>> {
        Err(not_classifier("decomposition"))
    }

    fn num_features(&self) -> usize {
        self.n_features
    }

    fn to_bytes(&self) -> MlResult<Vec<u8>> {
        serialize(self)
    }

    fn explained_variance_ratio(&self) -> Option<Vec<f64>> {
        Some(self.explained_variance_ratio.clone())
    }
}
