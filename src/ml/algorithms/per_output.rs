//! Regression with one fitted model per output column: how the linfa
//! regressors (which predict a single target) serve multi-output
//! `train_joint` without each writing its own loop.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{check_input, not_classifier, serialize, LinearTerms, Model};
use crate::ml::error::MlResult;

/// A fitted single-target regressor.
pub trait SingleOutput: Send + Sync + Serialize + DeserializeOwned {
    fn predict_one(&self, x: ArrayView2<f64>) -> Array1<f64>;
    /// Coefficients and intercept of a linear regressor.
    fn terms(&self) -> Option<(Array1<f64>, f64)> {
        None
    }
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "M: SingleOutput")]
pub struct PerOutput<M> {
    pub n_features: usize,
    pub outputs: Vec<M>,
}

impl<M: SingleOutput> PerOutput<M> {
    /// Fits `fit_one` on each column of `y`.
    pub fn fit(
        x: ArrayView2<f64>,
        y: ArrayView2<f64>,
        mut fit_one: impl FnMut(ArrayView1<f64>) -> MlResult<M>,
    ) -> MlResult<Self> {
        let outputs = y
            .columns()
            .into_iter()
            .map(&mut fit_one)
            .collect::<MlResult<Vec<M>>>()?;
        Ok(PerOutput {
            n_features: x.ncols(),
            outputs,
        })
    }
}

impl<M: SingleOutput> Model for PerOutput<M> {
    fn predict(&self, x: ArrayView2<f64>) -> MlResult<Array2<f64>> {
        check_input(x, self.n_features)?;
        let mut out = Array2::zeros((x.nrows(), self.outputs.len()));
        for (mut col, model) in out.columns_mut().into_iter().zip(&self.outputs) {
            col.assign(&model.predict_one(x));
        }
        Ok(out)
    }

    fn predict_proba(&self, _x: ArrayView2<f64>) -> MlResult<Array2<f64>> {
        Err(not_classifier("regression"))
    }

    fn num_features(&self) -> usize {
        self.n_features
    }

    fn to_bytes(&self) -> MlResult<Vec<u8>> {
        serialize(self)
    }

    fn linear_terms(&self) -> Option<LinearTerms> {
        let mut coef = Array2::zeros((self.n_features, self.outputs.len()));
        let mut intercept = Array1::zeros(self.outputs.len());
        for (k, model) in self.outputs.iter().enumerate() {
            let (c, b) = model.terms()?;
            if c.len() != self.n_features {
                return None;
            }
            coef.column_mut(k).assign(&c);
            intercept[k] = b;
        }
        Some(LinearTerms { coef, intercept })
    }
}
