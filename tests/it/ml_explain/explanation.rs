//! `pgml.explain`'s values, read in the order their text has them, and
//! the checks every test makes of them.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{close, real_close, sigmoid};
use crate::common::*;

/// One `pgml.explain` value: its contributions in the order the text has them.
#[derive(Debug, Clone)]
pub(super) struct Explanation {
    pub(super) base: f64,
    pub(super) contributions: Vec<(String, f64)>,
    pub(super) class: Option<f64>,
    /// The object's own keys.
    pub(super) keys: BTreeSet<String>,
}

/// A JSON object's entries in text order (serde_json's Map sorts them).
struct InOrder(Vec<(String, f64)>);

impl<'de> serde::Deserialize<'de> for InOrder {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<InOrder, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = InOrder;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of numbers")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<InOrder, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, f64>()? {
                    entries.push((k, v));
                }
                Ok(InOrder(entries))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(serde::Deserialize)]
struct ContributionsInOrder {
    contributions: InOrder,
}

impl Explanation {
    pub(super) fn parse(text: &str) -> Explanation {
        let v: Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("explain gave {text}: {e}"));
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("explain gave {text}: not an object"));
        let ordered: ContributionsInOrder =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("explain gave {text}: {e}"));
        Explanation {
            base: obj
                .get("base")
                .and_then(Value::as_f64)
                .unwrap_or_else(|| panic!("no numeric \"base\" in {text}")),
            contributions: ordered.contributions.0,
            class: obj.get("class").map(|c| {
                c.as_f64()
                    .unwrap_or_else(|| panic!("\"class\" is not a number in {text}"))
            }),
            keys: obj.keys().cloned().collect(),
        }
    }

    pub(super) fn sum(&self) -> f64 {
        self.base + self.contributions.iter().map(|(_, v)| v).sum::<f64>()
    }

    /// Additivity: base + contributions is `predicted`, the `real`
    /// pgml.predict gave for the row.
    pub(super) fn assert_sums_to(&self, predicted: &str, what: &str) {
        let predicted = real(predicted);
        assert!(
            real_close(predicted, self.sum()),
            "{what}: base + contributions = {}, pgml.predict {predicted}",
            self.sum()
        );
    }

    /// A binary explanation is the margin (log-odds) of the positive
    /// class: sigmoid(base + contributions) is P(true) of `proba`, the
    /// `real[]` pgml.predict_proba gave for the row.
    pub(super) fn assert_margin_of(&self, proba: &str, what: &str) {
        let proba = reals(proba);
        let p = sigmoid(self.sum());
        assert!(
            (p - proba[1] as f64).abs() <= 1e-6,
            "{what}: sigmoid(base + contributions) = {p}, predict_proba {proba:?}"
        );
    }

    pub(super) fn get(&self, feature: &str) -> Option<f64> {
        self.contributions
            .iter()
            .find(|(k, _)| k == feature)
            .map(|(_, v)| *v)
    }

    pub(super) fn names(&self) -> BTreeSet<String> {
        self.contributions.iter().map(|(k, _)| k.clone()).collect()
    }

    /// Keys in order of |value| descending, as the proxy writes them.
    pub(super) fn assert_ordered(&self, what: &str) {
        for pair in self.contributions.windows(2) {
            assert!(
                pair[0].1.abs() >= pair[1].1.abs(),
                "{what}: contributions not in order of |value| descending: {:?}",
                self.contributions
            );
        }
    }

    /// The same explanation as `other` (another input form of the same
    /// row) within `tol`: the same features, base and class.
    pub(super) fn assert_close_to(&self, other: &Explanation, tol: f64, what: &str) {
        assert_eq!(self.names(), other.names(), "{what}: features");
        assert_eq!(self.class, other.class, "{what}: class");
        assert!(
            close(self.base, other.base, tol),
            "{what}: base {} vs {}",
            self.base,
            other.base
        );
        for (name, v) in &self.contributions {
            let w = other.get(name).unwrap();
            assert!(
                close(*v, w, tol),
                "{what}: {name} = {v} vs {w}\n{:?}\n{:?}",
                self.contributions,
                other.contributions
            );
        }
    }

    /// `self` is `full` cut to the k largest |values| (ties at the cut may
    /// go either way), with the same base.
    pub(super) fn assert_top_k_of(&self, full: &Explanation, k: usize, what: &str) {
        assert_eq!(
            self.contributions.len(),
            k.min(full.contributions.len()),
            "{what}: top {k} of {:?}, got {:?}",
            full.contributions,
            self.contributions
        );
        assert!(
            close(self.base, full.base, 1e-12),
            "{what}: base {} vs {}",
            self.base,
            full.base
        );
        assert_eq!(self.class, full.class, "{what}: class");
        for (name, v) in &self.contributions {
            let w = full.get(name).unwrap_or_else(|| {
                panic!(
                    "{what}: {name} is not a feature of {:?}",
                    full.contributions
                )
            });
            assert!(close(*v, w, 1e-12), "{what}: {name} = {v}, in full {w}");
        }
        let kept = self.names();
        let smallest_kept = self
            .contributions
            .iter()
            .map(|(_, v)| v.abs())
            .fold(f64::INFINITY, f64::min);
        for (name, v) in &full.contributions {
            if !kept.contains(name) {
                assert!(
                    v.abs() <= smallest_kept,
                    "{what}: {name} ({v}) left out of the top {k} while a smaller one is kept: {:?}",
                    self.contributions
                );
            }
        }
    }
}

/// Every row's explanation: the keys are exactly `features`, in order of
/// |value|, and the object has `keys` (base, contributions[, class]).
pub(super) fn check_shape(e: &Explanation, features: &[String], keys: &[&str], what: &str) {
    let want: BTreeSet<String> = features.iter().cloned().collect();
    assert_eq!(e.names(), want, "{what}: one contribution per feature");
    assert_eq!(
        e.contributions.len(),
        features.len(),
        "{what}: no feature twice"
    );
    let want_keys: BTreeSet<String> = keys.iter().map(|k| k.to_string()).collect();
    assert_eq!(e.keys, want_keys, "{what}: the object's keys");
    e.assert_ordered(what);
}

/// The explanation equals Python lightgbm's pred_contrib (class block
/// `class`): each feature's contribution and the base, within 1e-6.
pub(super) fn check_treeshap(e: &Explanation, contrib: &[f64], features: &[String], what: &str) {
    assert_eq!(
        contrib.len(),
        features.len() + 1,
        "{what}: python's columns"
    );
    for (j, f) in features.iter().enumerate() {
        let got = e.get(f).unwrap();
        assert!(
            close(got, contrib[j], 1e-6),
            "{what}: {f} = {got}, lightgbm's pred_contrib {}",
            contrib[j]
        );
    }
    assert!(
        close(e.base, contrib[features.len()], 1e-6),
        "{what}: base {} vs lightgbm's expected value {}",
        e.base,
        contrib[features.len()]
    );
}
