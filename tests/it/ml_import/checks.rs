//! Predictions through the proxy against the reference's.

use super::data::column;
use crate::common::*;

/// pgml.predict of `model` (a project's quoted name or a model id) on the
/// rows of `table` (`input` their features) is `want`, bit for bit as
/// [`assert_exact`] has it.
pub(super) fn assert_predicts_exactly(
    proxy: &Proxy,
    model: &str,
    table: &str,
    input: &str,
    want: &[f64],
    what: &str,
) {
    let got = column(proxy, "predict", model, table, input);
    assert_exact(&got, want, what);
}

/// pgml.predict of `model` on the rows of `table` (`input` their
/// features) is `want` within `rel`, as [`assert_close`] has it.
pub(super) fn assert_predicts_close(
    proxy: &Proxy,
    model: &str,
    table: &str,
    input: &str,
    want: &[f64],
    rel: f64,
    what: &str,
) {
    let got: Vec<f32> = column(proxy, "predict", model, table, input)
        .iter()
        .map(|s| real(s))
        .collect();
    assert_close(&got, want, rel, what);
}

/// pgml.predict_proba of the classification `model` on the rows of
/// `table` (`input` their features) is `proba` within 1e-6, and
/// pgml.predict the class of the largest probability.
pub(super) fn assert_classifies(
    proxy: &Proxy,
    model: &str,
    table: &str,
    input: &str,
    proba: &[Vec<f64>],
    what: &str,
) {
    let got = column(proxy, "predict_proba", model, table, input);
    assert_proba(&got, proba, 1e-6, &format!("{what} predict_proba"));
    let got = column(proxy, "predict", model, table, input);
    assert_classes(&got, proba, &format!("{what} predict"));
}

/// Each `real` printed by Postgres is Python's float64 prediction rounded
/// to float4, bit for bit.
pub(super) fn assert_exact(got: &[String], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: rows");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let (g, w32) = (real(g), *w as f32);
        assert!(
            g.to_bits() == w32.to_bits(),
            "{what}, row {}: pgmlcat {g:?}, Python {w32:?} (float64 {w:?})",
            i + 1
        );
    }
}

/// |got - want| <= rel * max(|want|, 1) for every row.
pub(super) fn assert_close(got: &[f32], want: &[f64], rel: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: rows");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = rel * w.abs().max(1.0);
        assert!(
            (g as f64 - w).abs() <= tol,
            "{what}, row {}: pgmlcat {g:?}, Python {w:?} (difference {:e}, allowed {tol:e})",
            i + 1,
            (g as f64 - w).abs()
        );
    }
}

/// Each `real[]` row has the reference's probabilities within `tol`.
pub(super) fn assert_proba(got: &[String], want: &[Vec<f64>], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: rows");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let g = reals(g);
        assert_eq!(g.len(), w.len(), "{what}, row {}: {g:?} vs {w:?}", i + 1);
        for (k, (&gk, &wk)) in g.iter().zip(w).enumerate() {
            assert!(
                (gk as f64 - wk).abs() <= tol,
                "{what}, row {}, class {k}: pgmlcat {gk:?}, Python {wk:?}\npgmlcat {g:?}\nPython {w:?}",
                i + 1
            );
        }
    }
}

/// The class index of the largest probability; None on a near tie.
pub(super) fn argmax(p: &[f64]) -> Option<usize> {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    (p[order[0]] - p[order[1]] > 1e-5).then_some(order[0])
}

/// pgml.predict of a classification gives the class index of the largest
/// probability (rows with a near tie are skipped).
pub(super) fn assert_classes(got: &[String], proba: &[Vec<f64>], what: &str) {
    assert_eq!(got.len(), proba.len(), "{what}: rows");
    for (i, (g, p)) in got.iter().zip(proba).enumerate() {
        if let Some(k) = argmax(p) {
            assert_eq!(
                real(g),
                k as f32,
                "{what}, row {}: probabilities {p:?}",
                i + 1
            );
        }
    }
}

/// [1 - p, p] for binary P(positive).
pub(super) fn binary_proba(p: &[f64]) -> Vec<Vec<f64>> {
    p.iter().map(|&p| vec![1.0 - p, p]).collect()
}

pub(super) fn softmax(margin: &[f64]) -> Vec<f64> {
    let m = margin.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = margin.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}
