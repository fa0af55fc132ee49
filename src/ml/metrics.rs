//! Model scores under PostgresML's metric names, computed as scikit-learn
//! computes them so numbers match what users know.
//!
//! A metric that is undefined for the data (ROC AUC with one class in the
//! test set, silhouette with one cluster) is left out of the map rather than
//! stored as NaN: JSON has no NaN and a missing key reads better than null.

use std::collections::BTreeMap;

use ndarray::{ArrayView2, Axis};
use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::SeedableRng;
use serde_json::Value;

use super::error::{MlError, MlResult};

pub type Metrics = serde_json::Map<String, Value>;

/// Rows beyond which silhouette is computed on a seeded sample, since it is
/// quadratic in the row count (scikit-learn's `sample_size` does the same).
pub const SILHOUETTE_MAX_ROWS: usize = 5000;
const SILHOUETTE_SEED: u64 = 0x5111_0e77e;

fn put(metrics: &mut Metrics, name: &str, value: f64) {
    if value.is_finite() {
        metrics.insert(name.to_string(), Value::from(value));
    }
}

/// r2, mean_absolute_error, mean_squared_error, explained_variance; each
/// column is one output, averaged uniformly over outputs as scikit-learn's
/// default `multioutput="uniform_average"`.
pub fn regression(y_true: ArrayView2<f64>, y_pred: ArrayView2<f64>) -> MlResult<Metrics> {
    if y_true.dim() != y_pred.dim() {
        return Err(MlError::Internal(format!(
            "regression metrics: truth is {:?}, predictions {:?}",
            y_true.dim(),
            y_pred.dim()
        )));
    }
    let (rows, outputs) = y_true.dim();
    let mut metrics = Metrics::new();
    if rows == 0 || outputs == 0 {
        return Ok(metrics);
    }
    let n = rows as f64;
    let (mut r2, mut mae, mut mse, mut ev) = (0.0, 0.0, 0.0, 0.0);
    for (t, p) in y_true.axis_iter(Axis(1)).zip(y_pred.axis_iter(Axis(1))) {
        let mean_t = t.sum() / n;
        let residual: Vec<f64> = t.iter().zip(p.iter()).map(|(a, b)| a - b).collect();
        let mean_res = residual.iter().sum::<f64>() / n;
        let ss_res: f64 = residual.iter().map(|r| r * r).sum();
        let ss_tot: f64 = t.iter().map(|v| (v - mean_t).powi(2)).sum();
        let var_res: f64 = residual.iter().map(|r| (r - mean_res).powi(2)).sum();
        mae += residual.iter().map(|r| r.abs()).sum::<f64>() / n;
        mse += ss_res / n;
        r2 += forced_finite_score(ss_res, ss_tot);
        ev += forced_finite_score(var_res, ss_tot);
    }
    let k = outputs as f64;
    put(&mut metrics, "r2", r2 / k);
    put(&mut metrics, "mean_absolute_error", mae / k);
    put(&mut metrics, "mean_squared_error", mse / k);
    put(&mut metrics, "explained_variance", ev / k);
    Ok(metrics)
}

/// `1 - num/den`, with scikit-learn's `force_finite` rule for a constant
/// truth: a perfect fit scores 1, anything else 0.
fn forced_finite_score(num: f64, den: f64) -> f64 {
    if den == 0.0 {
        if num == 0.0 {
            1.0
        } else {
            0.0
        }
    } else {
        1.0 - num / den
    }
}

/// f1, precision and recall (macro), accuracy, mcc; with probabilities
/// (rows × `num_classes`, column = class code) also log_loss, and roc_auc for
/// binary problems. As scikit-learn, the macro averages run over the classes
/// present in `y_true` or `y_pred`, and a class never predicted has
/// precision 0 (`zero_division=0`).
pub fn classification(
    y_true: &[f64],
    y_pred: &[f64],
    proba: Option<ArrayView2<f64>>,
    num_classes: usize,
) -> MlResult<Metrics> {
    if y_true.len() != y_pred.len() {
        return Err(MlError::Internal(format!(
            "classification metrics: {} labels, {} predictions",
            y_true.len(),
            y_pred.len()
        )));
    }
    let mut metrics = Metrics::new();
    let n = y_true.len();
    if n == 0 {
        return Ok(metrics);
    }

    // Class codes are small integers; keying by bits keeps any float exact.
    let mut labels: Vec<f64> = y_true.iter().chain(y_pred).copied().collect();
    labels.sort_by(f64::total_cmp);
    labels.dedup_by(|a, b| a.total_cmp(b).is_eq());
    let position: BTreeMap<u64, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.to_bits(), i))
        .collect();
    let k = labels.len();
    // confusion[true][pred]
    let mut confusion = vec![vec![0usize; k]; k];
    for (t, p) in y_true.iter().zip(y_pred) {
        if let (Some(&i), Some(&j)) = (position.get(&t.to_bits()), position.get(&p.to_bits())) {
            confusion[i][j] += 1;
        }
    }

    let true_counts: Vec<f64> = confusion
        .iter()
        .map(|row| row.iter().sum::<usize>() as f64)
        .collect();
    let pred_counts: Vec<f64> = (0..k)
        .map(|j| confusion.iter().map(|row| row[j]).sum::<usize>() as f64)
        .collect();
    let correct: f64 = (0..k).map(|i| confusion[i][i] as f64).sum();

    let (mut precision, mut recall, mut f1) = (0.0, 0.0, 0.0);
    for i in 0..k {
        let tp = confusion[i][i] as f64;
        let fp = pred_counts[i] - tp;
        let fn_ = true_counts[i] - tp;
        precision += ratio_or_zero(tp, tp + fp);
        recall += ratio_or_zero(tp, tp + fn_);
        f1 += ratio_or_zero(2.0 * tp, 2.0 * tp + fp + fn_);
    }
    let kf = k as f64;
    put(&mut metrics, "f1", f1 / kf);
    put(&mut metrics, "precision", precision / kf);
    put(&mut metrics, "recall", recall / kf);
    put(&mut metrics, "accuracy", correct / n as f64);

    // Multiclass Matthews correlation, as sklearn.metrics.matthews_corrcoef.
    let nf = n as f64;
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let cov_tp = correct * nf - dot(&true_counts, &pred_counts);
    let cov_pp = nf * nf - dot(&pred_counts, &pred_counts);
    let cov_tt = nf * nf - dot(&true_counts, &true_counts);
    let mcc = if cov_pp * cov_tt == 0.0 {
        0.0
    } else {
        cov_tp / (cov_tt * cov_pp).sqrt()
    };
    put(&mut metrics, "mcc", mcc);

    if let Some(proba) = proba {
        if proba.nrows() != n || proba.ncols() != num_classes {
            return Err(MlError::Internal(format!(
                "classification metrics: probabilities are {:?} for {n} rows and {num_classes} classes",
                proba.dim()
            )));
        }
        if let Some(loss) = log_loss(y_true, proba) {
            put(&mut metrics, "log_loss", loss);
        }
        if num_classes == 2 {
            let scores: Vec<f64> = proba.column(1).to_vec();
            if let Some(auc) = roc_auc(y_true, &scores) {
                put(&mut metrics, "roc_auc", auc);
            }
        }
    }
    Ok(metrics)
}

fn ratio_or_zero(num: f64, den: f64) -> f64 {
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// The class code as a probability column, if it is one.
fn class_column(code: f64, num_classes: usize) -> Option<usize> {
    (code >= 0.0 && code.fract() == 0.0 && code < num_classes as f64).then_some(code as usize)
}

/// Mean negative log-probability of the true class. Rows are renormalised to
/// sum to 1 and clipped to [eps, 1 - eps] with eps = f64::EPSILON, as
/// scikit-learn >= 1.5. None when a truth is not a class code.
fn log_loss(y_true: &[f64], proba: ArrayView2<f64>) -> Option<f64> {
    let mut total = 0.0;
    for (t, row) in y_true.iter().zip(proba.axis_iter(Axis(0))) {
        let column = class_column(*t, row.len())?;
        let sum = row.sum();
        let p = if sum > 0.0 { row[column] / sum } else { 0.0 };
        total -= p.clamp(f64::EPSILON, 1.0 - f64::EPSILON).ln();
    }
    Some(total / y_true.len() as f64)
}

/// Area under the ROC curve for class 1 scored by `scores`, by the rank-sum
/// (Mann–Whitney) formula with tied scores given their average rank — the
/// same number as scikit-learn's trapezoidal curve. None when the truth has
/// only one class, where scikit-learn raises.
fn roc_auc(y_true: &[f64], scores: &[f64]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        // Ranks are 1-based: the tied block shares the mean of start+1..=end.
        let rank = (start + 1 + end) as f64 / 2.0;
        rank_sum_pos += rank
            * order[start..end]
                .iter()
                .filter(|&&i| y_true[i] == 1.0)
                .count() as f64;
        start = end;
    }
    let positives = y_true.iter().filter(|&&t| t == 1.0).count() as f64;
    let negatives = y_true.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    Some((rank_sum_pos - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

/// silhouette: scikit-learn's mean silhouette coefficient (euclidean). The
/// noise label -1 counts as a cluster of its own, as in scikit-learn. Left
/// out when there are fewer than 2 clusters or as many clusters as rows.
/// Above `SILHOUETTE_MAX_ROWS` rows it is computed on a seeded sample.
pub fn clustering(x: ArrayView2<f64>, labels: &[f64]) -> MlResult<Metrics> {
    clustering_sampled(x, labels, SILHOUETTE_MAX_ROWS)
}

fn clustering_sampled(x: ArrayView2<f64>, labels: &[f64], max_rows: usize) -> MlResult<Metrics> {
    if x.nrows() != labels.len() {
        return Err(MlError::Internal(format!(
            "clustering metrics: {} rows, {} labels",
            x.nrows(),
            labels.len()
        )));
    }
    let rows: Vec<usize> = if labels.len() > max_rows {
        let mut rng = StdRng::seed_from_u64(SILHOUETTE_SEED);
        sample(&mut rng, labels.len(), max_rows).into_vec()
    } else {
        (0..labels.len()).collect()
    };
    let mut metrics = Metrics::new();
    if let Some(score) = silhouette(x, labels, &rows) {
        put(&mut metrics, "silhouette", score);
    }
    Ok(metrics)
}

fn silhouette(x: ArrayView2<f64>, labels: &[f64], rows: &[usize]) -> Option<f64> {
    let mut clusters: BTreeMap<u64, usize> = BTreeMap::new();
    let mut cluster = Vec::with_capacity(rows.len());
    for &r in rows {
        let next = clusters.len();
        cluster.push(*clusters.entry(labels[r].to_bits()).or_insert(next));
    }
    let k = clusters.len();
    let n = rows.len();
    if k < 2 || k >= n {
        return None;
    }
    let mut sizes = vec![0usize; k];
    for &c in &cluster {
        sizes[c] += 1;
    }

    // Contiguous copy of the rows: the quadratic loop runs over plain slices.
    let d = x.ncols();
    let points: Vec<f64> = rows.iter().flat_map(|&r| x.row(r).to_vec()).collect();
    // sums[i * k + c]: total distance from point i to the points of cluster c.
    let mut sums = vec![0.0; n * k];
    for i in 0..n {
        let pi = &points[i * d..(i + 1) * d];
        for j in (i + 1)..n {
            let pj = &points[j * d..(j + 1) * d];
            let dist = pi
                .iter()
                .zip(pj)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f64>()
                .sqrt();
            sums[i * k + cluster[j]] += dist;
            sums[j * k + cluster[i]] += dist;
        }
    }

    let mut total = 0.0;
    for i in 0..n {
        let own = cluster[i];
        // A sample alone in its cluster scores 0, as in scikit-learn.
        if sizes[own] <= 1 {
            continue;
        }
        let row = &sums[i * k..(i + 1) * k];
        let a = row[own] / (sizes[own] - 1) as f64;
        let b = (0..k)
            .filter(|&c| c != own)
            .map(|c| row[c] / sizes[c] as f64)
            .fold(f64::INFINITY, f64::min);
        let m = a.max(b);
        if m > 0.0 {
            total += (b - a) / m;
        }
    }
    Some(total / n as f64)
}

/// cumulative_explained_variance: the share of variance the kept components
/// explain together.
pub fn decomposition(explained_variance_ratio: &[f64]) -> Metrics {
    let mut metrics = Metrics::new();
    put(
        &mut metrics,
        "cumulative_explained_variance",
        explained_variance_ratio.iter().sum(),
    );
    metrics
}

#[cfg(test)]
mod tests {
    //! Reference figures: scikit-learn's docstring examples where they exist
    //! (r2 0.948.., explained_variance 0.957.., f1 0.267.., mcc -0.33..,
    //! roc_auc 0.75, log_loss 0.21616..), the rest computed by a numpy-free
    //! Python script from the documented definitions (sklearn is not
    //! installed here), using independent routes where possible: F1 as the
    //! harmonic mean of P and R, binary MCC by its tp/tn formula, ROC AUC by
    //! trapezoids over the curve.
    use super::*;
    use ndarray::{array, Array2};

    fn get(m: &Metrics, name: &str) -> f64 {
        m.get(name)
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("metric {name} missing in {m:?}"))
    }

    fn close(m: &Metrics, name: &str, want: f64) {
        let got = get(m, name);
        assert!((got - want).abs() < 1e-12, "{name}: got {got}, want {want}");
    }

    fn column(v: &[f64]) -> Array2<f64> {
        Array2::from_shape_vec((v.len(), 1), v.to_vec()).unwrap()
    }

    #[test]
    fn regression_single_output() {
        let t = column(&[3.0, -0.5, 2.0, 7.0]);
        let p = column(&[2.5, 0.0, 2.0, 8.0]);
        let m = regression(t.view(), p.view()).unwrap();
        close(&m, "r2", 0.9486081370449679);
        close(&m, "mean_absolute_error", 0.5);
        close(&m, "mean_squared_error", 0.375);
        close(&m, "explained_variance", 0.9571734475374732);
    }

    #[test]
    fn regression_multi_output_uniform_average() {
        let t = array![[0.5, 1.0], [-1.0, 1.0], [7.0, -6.0]];
        let p = array![[0.0, 2.0], [-1.0, 2.0], [8.0, -5.0]];
        let m = regression(t.view(), p.view()).unwrap();
        close(&m, "r2", 0.9368005266622779);
        close(&m, "mean_absolute_error", 0.75);
        close(&m, "mean_squared_error", 0.7083333333333334);
        close(&m, "explained_variance", 0.9838709677419355);
    }

    #[test]
    fn regression_constant_truth_and_tiny() {
        let t = column(&[2.0, 2.0]);
        let m = regression(t.view(), t.view()).unwrap();
        close(&m, "r2", 1.0);
        let p = column(&[1.0, 3.0]);
        let m = regression(t.view(), p.view()).unwrap();
        close(&m, "r2", 0.0);
        close(&m, "mean_squared_error", 1.0);
        let one = column(&[5.0]);
        let m = regression(one.view(), column(&[4.0]).view()).unwrap();
        close(&m, "mean_absolute_error", 1.0);
        assert!(regression(t.view(), one.view()).is_err());
    }

    #[test]
    fn classification_multiclass_docstring() {
        let t = [0.0, 1.0, 2.0, 0.0, 1.0, 2.0];
        let p = [0.0, 2.0, 1.0, 0.0, 0.0, 1.0];
        let m = classification(&t, &p, None, 3).unwrap();
        close(&m, "f1", 0.26666666666666666);
        close(&m, "precision", 0.2222222222222222);
        close(&m, "recall", 0.3333333333333333);
        close(&m, "accuracy", 0.3333333333333333);
        close(&m, "mcc", 0.0);
        assert!(!m.contains_key("roc_auc"));
    }

    #[test]
    fn classification_class_never_predicted() {
        let t = [0.0, 0.0, 1.0, 1.0, 2.0];
        let p = [0.0, 0.0, 1.0, 1.0, 1.0];
        let m = classification(&t, &p, None, 3).unwrap();
        close(&m, "f1", 0.6);
        close(&m, "precision", 0.5555555555555555);
        close(&m, "recall", 0.6666666666666666);
        close(&m, "accuracy", 0.8);
        close(&m, "mcc", 0.7216878364870323);
    }

    #[test]
    fn classification_binary_with_probabilities() {
        let t = [0.0, 0.0, 1.0, 1.0, 1.0, 0.0];
        let s = [0.1, 0.4, 0.4, 0.8, 0.7, 0.6];
        let p: Vec<f64> = s.iter().map(|&x| f64::from(u8::from(x >= 0.5))).collect();
        let proba = Array2::from_shape_fn((6, 2), |(i, j)| if j == 1 { s[i] } else { 1.0 - s[i] });
        let m = classification(&t, &p, Some(proba.view()), 2).unwrap();
        close(&m, "f1", 0.6666666666666666);
        close(&m, "accuracy", 0.6666666666666666);
        close(&m, "mcc", 0.3333333333333333);
        close(&m, "roc_auc", 0.8333333333333333);
        close(&m, "log_loss", 0.5047643497375115);
    }

    #[test]
    fn binary_docstrings() {
        let proba = array![[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]];
        let t = [0.0, 0.0, 1.0, 1.0];
        let m = classification(&t, &t, Some(proba.view()), 2).unwrap();
        close(&m, "roc_auc", 0.75);
        let proba = array![[0.1, 0.9], [0.9, 0.1], [0.8, 0.2], [0.35, 0.65]];
        let t = [1.0, 0.0, 0.0, 1.0];
        let m = classification(&t, &t, Some(proba.view()), 2).unwrap();
        close(&m, "log_loss", 0.21616187468057912);
        let m = classification(&[1.0, 1.0, 1.0, 0.0], &[1.0, 0.0, 1.0, 1.0], None, 2).unwrap();
        close(&m, "mcc", -0.3333333333333333);
    }

    #[test]
    fn one_class_in_test_set() {
        // roc_auc is undefined (scikit-learn raises): left out, no panic.
        let proba = array![[0.2, 0.8], [0.4, 0.6]];
        let m = classification(&[1.0, 1.0], &[1.0, 1.0], Some(proba.view()), 2).unwrap();
        assert!(!m.contains_key("roc_auc"));
        close(&m, "f1", 1.0);
        close(&m, "mcc", 0.0);
        close(&m, "log_loss", -(0.8f64.ln() + 0.6f64.ln()) / 2.0);
        // Certain and right: clipped, not -ln(0).
        let proba = array![[0.0, 1.0]];
        let m = classification(&[1.0], &[1.0], Some(proba.view()), 2).unwrap();
        assert!(get(&m, "log_loss") < 1e-12);
        let m = classification(&[], &[], None, 2).unwrap();
        assert!(m.is_empty());
        assert!(classification(&[1.0], &[], None, 2).is_err());
    }

    #[test]
    fn silhouette_against_reference() {
        let x = array![
            [0.0, 0.0],
            [0.0, 1.0],
            [1.0, 0.0],
            [5.0, 5.0],
            [5.0, 6.0],
            [9.0, 9.0]
        ];
        let m = clustering(x.view(), &[0.0, 0.0, 0.0, 1.0, 1.0, -1.0]).unwrap();
        close(&m, "silhouette", 0.6887205403884762);
        let x = array![[0.0], [1.0], [3.0], [7.0]];
        let m = clustering(x.view(), &[0.0, 0.0, 1.0, 1.0]).unwrap();
        close(&m, "silhouette", 0.38990384615384616);
    }

    #[test]
    fn silhouette_undefined() {
        let x = array![[0.0], [1.0], [3.0]];
        assert!(clustering(x.view(), &[0.0, 0.0, 0.0]).unwrap().is_empty());
        assert!(clustering(x.view(), &[0.0, 1.0, 2.0]).unwrap().is_empty());
        let empty = Array2::<f64>::zeros((0, 2));
        assert!(clustering(empty.view(), &[]).unwrap().is_empty());
        assert!(clustering(x.view(), &[0.0]).is_err());
    }

    #[test]
    fn silhouette_samples_large_inputs() {
        // Two far-apart blobs: the sampled score stays close to 1, and the
        // seeded sample makes it repeatable.
        let n = 400;
        let x = Array2::from_shape_fn((n, 1), |(i, _)| {
            (if i % 2 == 0 { 0.0 } else { 1000.0 }) + (i % 7) as f64
        });
        let labels: Vec<f64> = (0..n).map(|i| (i % 2) as f64).collect();
        let full = clustering(x.view(), &labels).unwrap();
        let sampled = clustering_sampled(x.view(), &labels, 50).unwrap();
        assert!(get(&sampled, "silhouette") > 0.99);
        assert_ne!(get(&sampled, "silhouette"), get(&full, "silhouette"));
        assert_eq!(sampled, clustering_sampled(x.view(), &labels, 50).unwrap());
    }

    #[test]
    fn decomposition_sums_ratios() {
        let m = decomposition(&[0.5, 0.25, 0.125]);
        close(&m, "cumulative_explained_variance", 0.875);
    }
}
