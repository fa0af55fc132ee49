//! Why a model predicts what it does, in its raw output space (the value
//! for regression, the margin for classification):
//! - per row (`pgml.explain`): each feature's additive contribution and
//!   the base they add to. LightGBM: TreeSHAP as LightGBM computes it;
//!   linear models: `coef_j * (x_j - mean_j)` around the training mean;
//! - over the model (`pgml.feature_importance`): computed once at training
//!   time (`Insight`) and stored in the model's meta.json.

use ndarray::{Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::algorithms::{Algorithm, Model};
use super::error::{MlError, MlResult};

/// What training stores for explanations: the training split's feature
/// means (the base of a linear model's explanation) and the importance.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Insight {
    pub means: Vec<f64>,
    pub importance: Vec<Importance>,
}

/// One row of `pgml.feature_importance`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Importance {
    pub feature: String,
    pub importance: f64,
    pub method: String,
}

/// Additive contributions: per row, per output, one value per feature and
/// the base last (LightGBM's `predict_contrib` layout).
pub struct Contributions {
    values: Array2<f64>,
    outputs: usize,
    features: usize,
}

impl Contributions {
    /// Output `k` of `row`: (contributions, base).
    fn block(&self, row: usize, k: usize) -> (&[f64], f64) {
        let width = self.features + 1;
        let start = k * width;
        let all = self
            .values
            .row(row)
            .to_slice()
            .map(|r| &r[start..start + width])
            .unwrap_or_default();
        match all.split_last() {
            Some((base, values)) => (values, *base),
            None => (&[], f64::NAN),
        }
    }

    /// The output a row's explanation is about: the only one, or the
    /// class with the highest raw score.
    fn explained_output(&self, row: usize) -> usize {
        if self.outputs == 1 {
            return 0;
        }
        let raw = |k| {
            let (v, base) = self.block(row, k);
            base + v.iter().sum::<f64>()
        };
        let mut best = 0;
        for k in 1..self.outputs {
            if raw(k) > raw(best) {
                best = k;
            }
        }
        best
    }
}

/// The contributions of each row of `x`, or 0A000 for an algorithm that
/// has no explanation.
pub fn contributions(
    model: &dyn Model,
    algorithm: Algorithm,
    x: ArrayView2<f64>,
    means: &[f64],
) -> MlResult<Contributions> {
    let features = x.ncols();
    if let Some(values) = model.tree_contributions(x) {
        let values = values?;
        let outputs = values.ncols() / (features + 1);
        return Ok(Contributions {
            values,
            outputs,
            features,
        });
    }
    let Some(terms) = model.linear_terms() else {
        return Err(MlError::Unsupported(format!(
            "pgml.explain has no explanation for {} models: it explains lightgbm (TreeSHAP) \
             and the linear models (coefficient × distance from the training mean)",
            algorithm.name()
        )));
    };
    if means.len() != features || terms.coef.nrows() != features {
        return Err(MlError::Unsupported(
            "this model was trained before pgmlcat stored its training means; train it again \
             to explain it"
                .into(),
        ));
    }
    let outputs = terms.coef.ncols();
    let mut values = Array2::zeros((x.nrows(), outputs * (features + 1)));
    for (mut out, row) in values.rows_mut().into_iter().zip(x.rows()) {
        for k in 0..outputs {
            let coef = terms.coef.column(k);
            let at = k * (features + 1);
            let mut base = terms.intercept[k];
            for j in 0..features {
                out[at + j] = coef[j] * (row[j] - means[j]);
                base += coef[j] * means[j];
            }
            out[at + features] = base;
        }
    }
    Ok(Contributions {
        values,
        outputs,
        features,
    })
}

/// `pgml.explain`'s value for `row`: `{"base": b, "contributions": {...}}`,
/// contributions by decreasing magnitude, `top_k` of them when given;
/// `class` names the explained class of a multiclass model (its raw score
/// is explained), given the code → the value pgml.predict returns.
pub fn explanation(
    c: &Contributions,
    row: usize,
    names: &[String],
    top_k: Option<usize>,
    class_value: impl Fn(usize) -> f64,
) -> String {
    let k = c.explained_output(row);
    let (values, base) = c.block(row, k);
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].abs().total_cmp(&values[a].abs()));
    order.truncate(top_k.unwrap_or(usize::MAX));
    let mut out = String::with_capacity(32 + order.len() * 24);
    out.push_str("{\"base\": ");
    out.push_str(&number(base));
    if c.outputs > 1 {
        out.push_str(", \"class\": ");
        out.push_str(&number(class_value(k)));
    }
    out.push_str(", \"contributions\": {");
    for (n, j) in order.into_iter().enumerate() {
        if n > 0 {
            out.push_str(", ");
        }
        let name = names.get(j).cloned().unwrap_or_else(|| format!("f{j}"));
        out.push_str(&Value::String(name).to_string());
        out.push_str(": ");
        out.push_str(&number(values[j]));
    }
    out.push_str("}}");
    out
}

/// A JSON number (NaN and infinities, which JSON has not, as null).
fn number(v: f64) -> String {
    serde_json::Number::from_f64(v).map_or_else(|| "null".into(), |n| n.to_string())
}

impl Insight {
    /// Means of the training split, and the importance of each feature:
    /// LightGBM's normalized gain and mean |SHAP| over the test split (the
    /// training split when it has no test rows); a linear model's
    /// |coefficient| × the feature's standard deviation. Other algorithms
    /// have no importance.
    pub fn compute<'a>(
        model: &dyn Model,
        names: &[String],
        x_train: ArrayView2<'a, f64>,
        x_test: ArrayView2<'a, f64>,
    ) -> MlResult<Insight> {
        let (means, stds) = moments(x_train);
        if model.feature_importance().is_none() {
            return Ok(Insight::linear(model, names, means, &stds));
        }
        let mut insight = Insight::without_rows(model, names);
        insight.means = means;
        let rows = if x_test.nrows() > 0 { x_test } else { x_train };
        let rows = shap_sample(rows);
        if rows.nrows() > 0 {
            if let Some(c) = model.tree_contributions(rows.view()) {
                let c = contributions_of(c?, names.len());
                insight
                    .importance
                    .extend(ranked(names, mean_abs(&c, rows.nrows()), "shap"));
            }
        }
        Ok(insight)
    }

    /// What the model tells without any rows (a streamed training's are
    /// gone, an imported model comes without): LightGBM's normalized gain;
    /// no means.
    pub fn without_rows(model: &dyn Model, names: &[String]) -> Insight {
        let importance = match model.feature_importance() {
            Some(gain) => {
                let total: f64 = gain.iter().sum();
                let normalized = gain
                    .iter()
                    .map(|g| if total > 0.0 { g / total } else { 0.0 })
                    .collect();
                ranked(names, normalized, "gain")
            }
            None => Vec::new(),
        };
        Insight {
            means: Vec::new(),
            importance,
        }
    }

    /// A linear model's insight from its features' means and standard
    /// deviations (pushdown training has them from its sums): importance
    /// |coefficient| × std, summed over outputs. None for other models.
    pub fn linear(model: &dyn Model, names: &[String], means: Vec<f64>, stds: &[f64]) -> Insight {
        let importance = match model.linear_terms() {
            Some(terms) => {
                let values = terms
                    .coef
                    .rows()
                    .into_iter()
                    .zip(stds)
                    .map(|(coef, std)| coef.iter().map(|c| c.abs()).sum::<f64>() * std)
                    .collect();
                ranked(names, values, "coefficient")
            }
            None => Vec::new(),
        };
        Insight { means, importance }
    }
}

/// One method's importance rows, largest first.
fn ranked(names: &[String], values: Vec<f64>, method: &str) -> Vec<Importance> {
    let mut rows: Vec<Importance> = names
        .iter()
        .zip(values)
        .map(|(feature, importance)| Importance {
            feature: feature.clone(),
            importance,
            method: method.to_string(),
        })
        .collect();
    rows.sort_by(|a, b| b.importance.total_cmp(&a.importance));
    rows
}

/// Most rows mean |SHAP| is averaged over. TreeSHAP costs a hundred
/// predictions a row (LightGBM's: 0.46 ms a row for 100 trees of 31
/// leaves), so over a 50,000-row test split it made a training 9x longer;
/// over a seeded sample of this many rows it costs under a second, and
/// the mean's standard error is 1/45 of the contributions' spread.
pub const SHAP_ROWS: usize = 2_000;

/// The rows themselves, or a seeded sample of `SHAP_ROWS` of them.
fn shap_sample(rows: ArrayView2<'_, f64>) -> ndarray::CowArray<'_, f64, ndarray::Ix2> {
    if rows.nrows() <= SHAP_ROWS {
        return rows.into();
    }
    use rand::seq::index::sample;
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut picked = sample(&mut rng, rows.nrows(), SHAP_ROWS).into_vec();
    picked.sort_unstable();
    rows.select(Axis(0), &picked).into()
}

fn contributions_of(values: Array2<f64>, features: usize) -> Contributions {
    let outputs = values.ncols() / (features + 1);
    Contributions {
        values,
        outputs,
        features,
    }
}

/// Per feature: the mean over rows of |contribution|, summed over outputs.
fn mean_abs(c: &Contributions, rows: usize) -> Vec<f64> {
    let mut sums = vec![0.0; c.features];
    for row in 0..rows {
        for k in 0..c.outputs {
            let (values, _) = c.block(row, k);
            for (s, v) in sums.iter_mut().zip(values) {
                *s += v.abs();
            }
        }
    }
    sums.iter().map(|s| s / rows.max(1) as f64).collect()
}

/// Per column: the mean and the population standard deviation of its
/// finite values.
fn moments(x: ArrayView2<f64>) -> (Vec<f64>, Vec<f64>) {
    x.axis_iter(Axis(1))
        .map(|col| {
            let finite: Vec<f64> = col.iter().copied().filter(|v| v.is_finite()).collect();
            let n = finite.len().max(1) as f64;
            let mean = finite.iter().sum::<f64>() / n;
            let var = finite.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            (mean, var.sqrt())
        })
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn explanation_orders_by_magnitude_and_cuts_to_top_k() {
        let c = Contributions {
            values: array![[0.5, -2.0, 1.0, 10.0]],
            outputs: 1,
            features: 3,
        };
        let names = vec!["a".to_string(), "b".into(), "c\"q".into()];
        let all = explanation(&c, 0, &names, None, |_| 0.0);
        assert_eq!(
            all,
            r#"{"base": 10.0, "contributions": {"b": -2.0, "c\"q": 1.0, "a": 0.5}}"#
        );
        let top = explanation(&c, 0, &names, Some(1), |_| 0.0);
        assert_eq!(top, r#"{"base": 10.0, "contributions": {"b": -2.0}}"#);
    }

    #[test]
    fn multiclass_explains_the_highest_raw_score() {
        // Class 0 raw = 1 + 0 = 1; class 1 raw = 0.5 + 2 = 2.5.
        let c = Contributions {
            values: array![[0.0, 1.0, 2.0, 0.5]],
            outputs: 2,
            features: 1,
        };
        let text = explanation(&c, 0, &["x".to_string()], None, |k| k as f64 * 10.0);
        assert_eq!(
            text,
            r#"{"base": 0.5, "class": 10.0, "contributions": {"x": 2.0}}"#
        );
    }
}
