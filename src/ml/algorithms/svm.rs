//! Support vector machines (linfa-svm): SVR for regression (one model per
//! output column), SVC for classification — binary directly, one-vs-rest
//! for more classes.
//!
//! Hyperparameters (scikit-learn names): `C` (1.0), `kernel` ("rbf",
//! "linear", "poly"), `gamma` (rbf only: a number or "scale"/"auto", default
//! "scale"), `degree` (3) and `coef0` (0) for poly, `tol` or `eps` (solver
//! stopping tolerance, 1e-3), and for regression `epsilon` (0.1, the width
//! of the loss's dead zone).

use linfa::traits::Fit;
use linfa::DatasetBase;
use linfa_svm::Svm;
use ndarray::{Array1, Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::hyper::Hyper;
use super::per_output::{PerOutput, SingleOutput};
use super::{argmax_rows, check_input, deserialize, fit_error, serialize, softmax_rows, Model};
use crate::ml::error::{MlError, MlResult};

const COMMON: &[&str] = &["C", "kernel", "gamma", "degree", "coef0", "tol", "eps"];
const REGRESSION: &[&str] = &[
    "C", "kernel", "gamma", "degree", "coef0", "tol", "eps", "epsilon",
];

enum Kernel {
    Linear,
    Rbf { gamma: f64 },
    Poly { degree: f64, coef0: f64 },
}

struct SvmSettings {
    c: f64,
    kernel: Kernel,
    tol: f64,
}

fn settings(h: &Hyper, x: ArrayView2<f64>) -> MlResult<SvmSettings> {
    let c = h.positive("C", 1.0)?;
    if h.has("tol") && h.has("eps") {
        return Err(MlError::invalid(
            "give either \"tol\" or \"eps\" for svm (both are the solver tolerance), not both",
        ));
    }
    let tol = if h.has("eps") {
        h.positive("eps", 1e-3)?
    } else {
        h.positive("tol", 1e-3)?
    };
    let kernel = match h.choice("kernel", &["rbf", "linear", "poly"], "rbf")? {
        "linear" => Kernel::Linear,
        "poly" => Kernel::Poly {
            degree: h.positive("degree", 3.0)?,
            coef0: h.f64("coef0", 0.0)?,
        },
        _ => Kernel::Rbf {
            gamma: gamma(h, x)?,
        },
    };
    Ok(SvmSettings { c, kernel, tol })
}

/// scikit-learn's gamma: "scale" = 1 / (n_features · var(X)), "auto" =
/// 1 / n_features, or a positive number.
fn gamma(h: &Hyper, x: ArrayView2<f64>) -> MlResult<f64> {
    let n_features = x.ncols().max(1) as f64;
    let scale = || {
        let var = x.var(0.0);
        if var > 0.0 {
            1.0 / (n_features * var)
        } else {
            1.0
        }
    };
    if let Ok(Some(s)) = h.str_opt("gamma") {
        return match s.trim().to_ascii_lowercase().as_str() {
            "scale" => Ok(scale()),
            "auto" => Ok(1.0 / n_features),
            _ => Err(MlError::invalid(format!(
                "hyperparameter \"gamma\" for algorithm svm must be a positive number, \"scale\" or \"auto\", got \"{s}\""
            ))),
        };
    }
    match h.f64_opt("gamma")? {
        Some(g) if g > 0.0 => Ok(g),
        Some(g) => Err(MlError::invalid(format!(
            "hyperparameter \"gamma\" for algorithm svm must be > 0, got {g}"
        ))),
        None => Ok(scale()),
    }
}

impl SingleOutput for Svm<f64, f64> {
    fn predict_one(&self, x: ArrayView2<f64>) -> Array1<f64> {
        x.rows()
            .into_iter()
            .map(|row| self.weighted_sum(&row) - self.rho)
            .collect()
    }
}

pub fn fit_svr(
    x: ArrayView2<f64>,
    y: ArrayView2<f64>,
    params: &Map<String, Value>,
) -> MlResult<Box<dyn Model>> {
    let h = Hyper::new("svm", params, REGRESSION)?;
    let s = settings(&h, x)?;
    let epsilon = h.f64("epsilon", 0.1)?;
    if epsilon < 0.0 {
        return Err(MlError::invalid("hyperparameter \"epsilon\" must be >= 0"));
    }
    let mut p = Svm::<f64, f64>::params()
        .c_svr(s.c, Some(epsilon))
        .eps(s.tol);
    p = match s.kernel {
        Kernel::Linear => p.linear_kernel(),
        Kernel::Rbf { gamma } => p.gaussian_kernel(1.0 / gamma),
        Kernel::Poly { degree, coef0 } => p.polynomial_kernel(coef0, degree),
    };
    // linfa-svm unwraps `as_slice()` on the target and records: both must be
    // contiguous, which a column of `y` is not.
    let records = x.as_standard_layout();
    let model = PerOutput::fit(x, y, |target| {
        let target = target.to_owned();
        p.fit(&DatasetBase::new(records.view(), target.view()))
            .map_err(|e| fit_error("svm", e))
    })?;
    Ok(Box::new(model))
}

pub fn load_svr(bytes: &[u8]) -> MlResult<Box<dyn Model>> {
    let model: PerOutput<Svm<f64, f64>> = deserialize("svm", bytes)?;
    Ok(Box::new(model))
}

/// For two classes one machine separates class 1 from class 0; for more,
/// machine i separates class i from the rest.
#[derive(Serialize, Deserialize)]
struct SvcModel {
    n_features: usize,
    num_classes: usize,
    machines: Vec<Svm<f64, bool>>,
}

pub fn fit_svc(
    x: ArrayView2<f64>,
    labels: &Array1<usize>,
    num_classes: usize,
    params: &Map<String, Value>,
) -> MlResult<Box<dyn Model>> {
    let h = Hyper::new("svm", params, COMMON)?;
    let s = settings(&h, x)?;
    let mut p = Svm::<f64, bool>::params()
        .pos_neg_weights(s.c, s.c)
        .eps(s.tol);
    p = match s.kernel {
        Kernel::Linear => p.linear_kernel(),
        Kernel::Rbf { gamma } => p.gaussian_kernel(1.0 / gamma),
        Kernel::Poly { degree, coef0 } => p.polynomial_kernel(coef0, degree),
    };
    let records = x.as_standard_layout();
    let positives: Vec<usize> = if num_classes == 2 {
        vec![1]
    } else {
        (0..num_classes).collect()
    };
    let mut machines = Vec::with_capacity(positives.len());
    for class in positives {
        let target: Array1<bool> = labels.mapv(|l| l == class);
        if target.iter().all(|&t| t) || !target.iter().any(|&t| t) {
            return Err(MlError::data(format!(
                "svm needs rows of every class in the training set; class {class} has {}",
                if target.iter().any(|&t| t) {
                    "all of them"
                } else {
                    "none"
                }
            )));
        }
        let m = p
            .fit(&DatasetBase::new(records.view(), target.view()))
            .map_err(|e| fit_error("svm", e))?;
        machines.push(m);
    }
    Ok(Box::new(SvcModel {
        n_features: x.ncols(),
        num_classes,
        machines,
    }))
}

pub fn load_svc(bytes: &[u8]) -> MlResult<Box<dyn Model>> {
    let model: SvcModel = deserialize("svm", bytes)?;
    Ok(Box::new(model))
}

impl SvcModel {
    /// rows × machines signed distances to each separating hyperplane.
    fn decision(&self, x: ArrayView2<f64>) -> Array2<f64> {
        let mut out = Array2::zeros((x.nrows(), self.machines.len()));
        for (mut col, m) in out.axis_iter_mut(Axis(1)).zip(&self.machines) {
            for (cell, row) in col.iter_mut().zip(x.rows()) {
                *cell = m.weighted_sum(&row) - m.rho;
            }
        }
        out
    }
}

impl Model for SvcModel {
    fn predict(&self, x: ArrayView2<f64>) -> MlResult<Array2<f64>> {
        Ok(argmax_rows(&self.predict_proba(x)?))
    }

    /// No Platt calibration (it would need a second, cross-validated fit):
    /// binary probabilities are the logistic function of the decision value,
    /// one-vs-rest ones the softmax of the machines' decision values. Both
    /// agree with the predicted class.
    fn predict_proba(&self, x: ArrayView2<f64>) -> MlResult<Array2<f64>> {
        check_input(x, self.n_features)?;
        if self.machines.is_empty() {
            return Err(MlError::Internal("stored svm model has no machines".into()));
        }
        let d = self.decision(x);
        if self.num_classes == 2 {
            let mut out = Array2::zeros((x.nrows(), 2));
            for (mut row, v) in out.rows_mut().into_iter().zip(d.column(0)) {
                let p = 1.0 / (1.0 + (-v).exp());
                row[0] = 1.0 - p;
                row[1] = p;
            }
            return Ok(out);
        }
        let mut out = d;
        softmax_rows(&mut out);
        Ok(out)
    }

    fn num_features(&self) -> usize {
        self.n_features
    }

    fn to_bytes(&self) -> MlResult<Vec<u8>> {
        serialize(self)
    }
}
