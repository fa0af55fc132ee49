//! Gaussian naive Bayes (linfa-bayes). Hyperparameter: `var_smoothing`
//! (1e-9, scikit-learn's default).

use linfa::traits::Fit;
use linfa::DatasetBase;
use linfa_bayes::{GaussianNb, NaiveBayes};
use ndarray::{Array1, Array2, ArrayView2};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::hyper::Hyper;
use super::{argmax_rows, check_input, deserialize, fit_error, serialize, softmax_rows, Model};
use crate::ml::error::MlResult;

#[derive(Serialize, Deserialize)]
struct NbModel {
    n_features: usize,
    num_classes: usize,
    model: GaussianNb<f64, usize>,
}

pub fn fit(
    x: ArrayView2<f64>,
    labels: &Array1<usize>,
    num_classes: usize,
    params: &Map<String, Value>,
) -> MlResult<Box<dyn Model>> {
    let h = Hyper::new("naive_bayes", params, &["var_smoothing"])?;
    let model = GaussianNb::<f64, usize>::params()
        .var_smoothing(h.positive("var_smoothing", 1e-9)?)
        .fit(&DatasetBase::new(x, labels.view()))
        .map_err(|e| fit_error("naive_bayes", e))?;
    Ok(Box::new(NbModel {
        n_features: x.ncols(),
        num_classes,
        model,
    }))
}

pub fn load(bytes: &[u8]) -> MlResult<Box<dyn Model>> {
    let model: NbModel = deserialize("naive_bayes", bytes)?;
    Ok(Box::new(model))
}

impl Model for NbModel {
    fn predict(&self, x: ArrayView2<f64>) -> MlResult<Array2<f64>> {
        Ok(argmax_rows(&self.predict_proba(x)?))
    }

    /// Softmax of the joint log-likelihoods, computed here rather than with
    /// linfa's `predict_proba`, which exponentiates before normalising and
    /// underflows to NaN far from every class. Classes missing from the
    /// training split get probability 0.
    fn predict_proba(&self, x: ArrayView2<f64>) -> MlResult<Array2<f64>> {
        check_input(x, self.n_features)?;
        let mut scores = Array2::from_elem((x.nrows(), self.num_classes), f64::NEG_INFINITY);
        for (class, jll) in self.model.joint_log_likelihood(x) {
            if *class < self.num_classes {
                scores.column_mut(*class).assign(&jll);
            }
        }
        softmax_rows(&mut scores);
        Ok(scores)
    }

    fn num_features(&self) -> usize {
        self.n_features
    }

    fn to_bytes(&self) -> MlResult<Vec<u8>> {
        serialize(self)
    }
}
