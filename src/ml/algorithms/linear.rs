//! Linear models: ordinary least squares, ridge/lasso/elastic net (one
//! linfa-elasticnet model per output column) and logistic regression for
//! classification.
//!
//! Hyperparameters (scikit-learn names):
//! - linear (regression): `fit_intercept`
//! - ridge, lasso: `alpha` (1.0), `max_iter` (1000), `tol` (1e-4), `fit_intercept`
//! - elastic_net: the same plus `l1_ratio` (0.5)
//! - linear (classification, logistic): `C` (1.0) or `alpha` (= 1/C),
//!   `max_iter` (100), `tol` (1e-4), `fit_intercept`

use linfa::traits::{Fit, Predict};
use linfa::DatasetBase;
use linfa_elasticnet::ElasticNet;
use linfa_linear::{FittedLinearRegression, LinearRegression};
use linfa_logistic::{
    FittedLogisticRegression, LogisticRegression, MultiFittedLogisticRegression,
    MultiLogisticRegression,
};
use ndarray::{Array1, Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::hyper::Hyper;
use super::per_output::{PerOutput, SingleOutput};
use super::{
    argmax_rows, check_input, deserialize, fit_error, serialize, Algorithm, LinearTerms, Model,
};
use crate::ml::error::{MlError, MlResult};

impl SingleOutput for FittedLinearRegression<f64> {
    fn predict_one(&self, x: ArrayView2<f64>) -> Array1<f64> {
        self.predict(&x)
    }

    fn terms(&self) -> Option<(Array1<f64>, f64)> {
        Some((self.params().clone(), self.intercept()))
    }
}

impl SingleOutput for ElasticNet<f64> {
    fn predict_one(&self, x: ArrayView2<f64>) -> Array1<f64> {
        self.predict(&x)
    }

    fn terms(&self) -> Option<(Array1<f64>, f64)> {
        Some((self.hyperplane().clone(), self.intercept()))
    }
}

pub fn fit_ols(
    x: ArrayView2<f64>,
    y: ArrayView2<f64>,
    params: &Map<String, Value>,
) -> MlResult<Box<dyn Model>> {
    let h = Hyper::new("linear", params, &["fit_intercept"])?;
    let ols = LinearRegression::new().with_intercept(h.bool("fit_intercept", true)?);
    let model = PerOutput::fit(x, y, |target| {
        ols.fit(&DatasetBase::new(x, target))
            .map_err(|e| fit_error("linear", e))
    })?;
    Ok(Box::new(model))
}

pub fn load_ols(bytes: &[u8]) -> MlResult<Box<dyn Model>> {
    let model: PerOutput<FittedLinearRegression<f64>> = deserialize("linear", bytes)?;
    Ok(Box::new(model))
}

pub fn fit_elastic_net(
    alg: Algorithm,
    x: ArrayView2<f64>,
    y: ArrayView2<f64>,
    params: &Map<String, Value>,
) -> MlResult<Box<dyn Model>> {
    const COMMON: &[&str] = &["alpha", "max_iter", "tol", "fit_intercept"];
    const ELASTIC: &[&str] = &["alpha", "l1_ratio", "max_iter", "tol", "fit_intercept"];
    let valid = if alg == Algorithm::ElasticNet {
        ELASTIC
    } else {
        COMMON
    };
    let h = Hyper::new(alg.name(), params, valid)?;
    let l1_ratio = match alg {
        Algorithm::Ridge => 0.0,
        Algorithm::Lasso => 1.0,
        _ => h.fraction("l1_ratio", 0.5)?,
    };
    let alpha = h.f64("alpha", 1.0)?;
    if alpha < 0.0 {
        return Err(MlError::invalid(format!(
            "hyperparameter \"alpha\" for algorithm {} must be >= 0",
            alg.name()
        )));
    }
    let max_iter = u32::try_from(h.count("max_iter", 1000)?)
        .map_err(|_| MlError::invalid("hyperparameter \"max_iter\" is too large"))?;
    let params = ElasticNet::<f64>::params()
        .penalty(alpha)
        .l1_ratio(l1_ratio)
        .with_intercept(h.bool("fit_intercept", true)?)
        .max_iterations(max_iter)
        .tolerance(h.positive("tol", 1e-4)?);
    let model = PerOutput::fit(x, y, |target| {
        params
            .fit(&DatasetBase::new(x, target))
            .map_err(|e| fit_error(alg.name(), e))
    })?;
    Ok(Box::new(model))
}

pub fn load_elastic_net(bytes: &[u8]) -> MlResult<Box<dyn Model>> {
    let model: PerOutput<ElasticNet<f64>> = deserialize("elastic_net", bytes)?;
    Ok(Box::new(model))
}

/// Binary problems use linfa's two-class model (positive class = the larger
/// code, 1), more classes the multinomial one.
#[derive(Serialize, Deserialize)]
enum Logistic {
    Binary(FittedLogisticRegression<f64, usize>),
    Multi(MultiFittedLogisticRegression<f64, usize>),
}

#[derive(Serialize, Deserialize)]
struct LogisticModel {
    n_features: usize,
    num_classes: usize,
    model: Logistic,
}

pub fn fit_logistic(
    x: ArrayView2<f64>,
    labels: &Array1<usize>,
    num_classes: usize,
    params: &Map<String, Value>,
) -> MlResult<Box<dyn Model>> {
    let h = Hyper::new(
        "linear",
        params,
        &["C", "alpha", "max_iter", "tol", "fit_intercept"],
    )?;
    let alpha = match (h.has("C"), h.has("alpha")) {
        (true, true) => {
            return Err(MlError::invalid(
                "give either \"C\" or \"alpha\" (= 1/C) for logistic regression, not both",
            ))
        }
        (true, false) => 1.0 / h.positive("C", 1.0)?,
        _ => {
            let a = h.f64("alpha", 1.0)?;
            if a < 0.0 {
                return Err(MlError::invalid("hyperparameter \"alpha\" must be >= 0"));
            }
            a
        }
    };
    let max_iter = h.count("max_iter", 100)? as u64;
    let tol = h.positive("tol", 1e-4)?;
    let intercept = h.bool("fit_intercept", true)?;
    let data = DatasetBase::new(x, labels.view());
    let model = if num_classes == 2 {
        let fitted = LogisticRegression::default()
            .alpha(alpha)
            .max_iterations(max_iter)
            .gradient_tolerance(tol)
            .with_intercept(intercept)
            .fit(&data)
            .map_err(|e| fit_error("linear", e))?;
        Logistic::Binary(fitted)
    } else {
        let fitted = MultiLogisticRegression::default()
            .alpha(alpha)
            .max_iterations(max_iter)
            .gradient_tolerance(tol)
            .with_intercept(intercept)
            .fit(&data)
            .map_err(|e| fit_error("linear", e))?;
        Logistic::Multi(fitted)
    };
    Ok(Box::new(LogisticModel {
        n_features: x.ncols(),
        num_classes,
        model,
    }))
}

pub fn load_logistic(bytes: &[u8]) -> MlResult<Box<dyn Model>> {
    let model: LogisticModel = deserialize("linear", bytes)?;
    Ok(Box::new(model))
}

impl Model for LogisticModel {
    fn predict(&self, x: ArrayView2<f64>) -> MlResult<Array2<f64>> {
        Ok(argmax_rows(&self.predict_proba(x)?))
    }

    fn predict_proba(&self, x: ArrayView2<f64>) -> MlResult<Array2<f64>> {
        check_input(x, self.n_features)?;
        let mut out = Array2::zeros((x.nrows(), self.num_classes));
        match &self.model {
            Logistic::Binary(m) => {
                let p = m.predict_probabilities(&x);
                let labels = m.labels();
                let (pos, neg) = (labels.pos.class, labels.neg.class);
                for (mut row, p) in out.rows_mut().into_iter().zip(p) {
                    if let (Some(_), Some(_)) = (row.get(pos), row.get(neg)) {
                        row[pos] = p;
                        row[neg] = 1.0 - p;
                    }
                }
            }
            Logistic::Multi(m) => {
                let p = m.predict_probabilities(&x);
                // Classes absent from the training split keep probability 0.
                for (col, &class) in p.columns().into_iter().zip(m.classes()) {
                    if class < self.num_classes {
                        out.column_mut(class).assign(&col);
                    }
                }
            }
        }
        Ok(out)
    }

    fn num_features(&self) -> usize {
        self.n_features
    }

    fn to_bytes(&self) -> MlResult<Vec<u8>> {
        serialize(self)
    }

    /// Binary: the margin of class code 1 (linfa's positive class is the
    /// larger code, so its margin is negated otherwise); multinomial: one
    /// margin per class code, 0 for a class absent from the training split.
    fn linear_terms(&self) -> Option<LinearTerms> {
        match &self.model {
            Logistic::Binary(m) => {
                let sign = if m.labels().pos.class == 1 { 1.0 } else { -1.0 };
                let coef = m.params().mapv(|v| sign * v).insert_axis(Axis(1));
                let intercept = Array1::from_elem(1, sign * m.intercept());
                Some(LinearTerms { coef, intercept })
            }
            Logistic::Multi(m) => {
                let mut coef = Array2::zeros((self.n_features, self.num_classes));
                let mut intercept = Array1::zeros(self.num_classes);
                for (k, &class) in m.classes().iter().enumerate() {
                    if class < self.num_classes {
                        coef.column_mut(class).assign(&m.params().column(k));
                        intercept[class] = m.intercept()[k];
                    }
                }
                Some(LinearTerms { coef, intercept })
            }
        }
    }
}
