//! Reading a user's `hyperparams` JSON object for one linfa algorithm:
//! every key must be one the algorithm documents, every value of the type
//! it needs, so a typo is an error (22023) instead of a silently ignored
//! setting.

use serde_json::{Map, Value};

use crate::ml::error::{MlError, MlResult};

/// Seed used wherever an algorithm draws random numbers and the user gave none,
/// so that training the same data twice gives the same model.
pub const DEFAULT_SEED: u64 = 42;

pub struct Hyper<'a> {
    alg: &'static str,
    map: &'a Map<String, Value>,
}

impl<'a> Hyper<'a> {
    /// Rejects any key not in `valid`.
    pub fn new(alg: &'static str, map: &'a Map<String, Value>, valid: &[&str]) -> MlResult<Self> {
        if let Some(bad) = map.keys().find(|k| !valid.contains(&k.as_str())) {
            let list = if valid.is_empty() {
                "none".to_string()
            } else {
                valid.join(", ")
            };
            return Err(MlError::invalid(format!(
                "unknown hyperparameter \"{bad}\" for algorithm {alg}; valid hyperparameters: {list}"
            )));
        }
        Ok(Hyper { alg, map })
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn wrong_type(&self, key: &str, want: &str, got: &Value) -> MlError {
        MlError::invalid(format!(
            "hyperparameter \"{key}\" for algorithm {} must be {want}, got {got}",
            self.alg
        ))
    }

    /// The raw value, for parameters that take several JSON types.
    pub fn raw(&self, key: &str) -> Option<&'a Value> {
        self.get(key)
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn f64_opt(&self, key: &str) -> MlResult<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(f) if f.is_finite() => Ok(Some(f)),
                _ => Err(self.wrong_type(key, "a finite number", v)),
            },
        }
    }

    pub fn f64(&self, key: &str, default: f64) -> MlResult<f64> {
        Ok(self.f64_opt(key)?.unwrap_or(default))
    }

    /// A number strictly greater than zero.
    pub fn positive(&self, key: &str, default: f64) -> MlResult<f64> {
        let v = self.f64(key, default)?;
        if v <= 0.0 {
            return Err(MlError::invalid(format!(
                "hyperparameter \"{key}\" for algorithm {} must be > 0, got {v}",
                self.alg
            )));
        }
        Ok(v)
    }

    /// A number in [0, 1].
    pub fn fraction(&self, key: &str, default: f64) -> MlResult<f64> {
        let v = self.f64(key, default)?;
        if !(0.0..=1.0).contains(&v) {
            return Err(MlError::invalid(format!(
                "hyperparameter \"{key}\" for algorithm {} must be between 0 and 1, got {v}",
                self.alg
            )));
        }
        Ok(v)
    }

    /// A non-negative integer; `3.0` is accepted because JSON producers often
    /// write integers as floats.
    pub fn usize_opt(&self, key: &str) -> MlResult<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                if let Some(u) = v.as_u64() {
                    return usize::try_from(u)
                        .map(Some)
                        .map_err(|_| self.wrong_type(key, "a smaller integer", v));
                }
                match v.as_f64() {
                    Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 1e15 => Ok(Some(f as usize)),
                    _ => Err(self.wrong_type(key, "a non-negative integer", v)),
                }
            }
        }
    }

    pub fn usize(&self, key: &str, default: usize) -> MlResult<usize> {
        Ok(self.usize_opt(key)?.unwrap_or(default))
    }

    /// An integer of at least 1.
    pub fn count(&self, key: &str, default: usize) -> MlResult<usize> {
        let v = self.usize(key, default)?;
        if v == 0 {
            return Err(MlError::invalid(format!(
                "hyperparameter \"{key}\" for algorithm {} must be at least 1",
                self.alg
            )));
        }
        Ok(v)
    }

    pub fn bool(&self, key: &str, default: bool) -> MlResult<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.wrong_type(key, "true or false", v)),
        }
    }

    pub fn str_opt(&self, key: &str) -> MlResult<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(self.wrong_type(key, "a string", v)),
        }
    }

    /// One of `choices` (case-insensitive), returned as the canonical spelling.
    pub fn choice(
        &self,
        key: &str,
        choices: &[&'static str],
        default: &'static str,
    ) -> MlResult<&'static str> {
        match self.str_opt(key)? {
            None => Ok(default),
            Some(s) => choices
                .iter()
                .find(|c| c.eq_ignore_ascii_case(s.trim()))
                .copied()
                .ok_or_else(|| {
                    MlError::invalid(format!(
                        "hyperparameter \"{key}\" for algorithm {} must be one of {}, got \"{s}\"",
                        self.alg,
                        choices.join(", ")
                    ))
                }),
        }
    }

    /// `seed` or scikit-learn's `random_state`, whichever is given.
    pub fn seed(&self) -> MlResult<u64> {
        if self.has("seed") && self.has("random_state") {
            return Err(MlError::invalid(format!(
                "give only one of \"seed\" and \"random_state\" for algorithm {}",
                self.alg
            )));
        }
        let seed = match self.usize_opt("seed")? {
            Some(s) => Some(s),
            None => self.usize_opt("random_state")?,
        };
        Ok(seed.map(|s| s as u64).unwrap_or(DEFAULT_SEED))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn unknown_key_lists_valid_ones() {
        let m = map(json!({"alpah": 1.0}));
        let err = Hyper::new("ridge", &m, &["alpha", "tol"])
            .err()
            .map(|e| (e.sqlstate().to_string(), e.to_string()));
        let (code, msg) = err.unwrap_or_default();
        assert_eq!(code, "22023");
        assert!(msg.contains("alpah") && msg.contains("alpha, tol"), "{msg}");
    }

    #[test]
    fn types_are_checked() {
        let m = map(json!({"alpha": "big", "n": 3.0, "b": 1, "k": -2}));
        let h = Hyper::new("x", &m, &["alpha", "n", "b", "k"]).unwrap();
        assert!(h.f64("alpha", 1.0).is_err());
        assert_eq!(h.usize("n", 0).unwrap(), 3);
        assert!(h.bool("b", false).is_err());
        assert!(h.usize("k", 0).is_err());
        assert_eq!(h.f64("missing", 2.5).unwrap(), 2.5);
        assert_eq!(h.seed().unwrap(), DEFAULT_SEED);
    }

    #[test]
    fn choice_is_case_insensitive() {
        let m = map(json!({"kernel": "RBF"}));
        let h = Hyper::new("svm", &m, &["kernel"]).unwrap();
        assert_eq!(
            h.choice("kernel", &["linear", "rbf"], "linear").unwrap(),
            "rbf"
        );
        let m = map(json!({"kernel": "sigmoid"}));
        let h = Hyper::new("svm", &m, &["kernel"]).unwrap();
        assert!(h.choice("kernel", &["linear", "rbf"], "linear").is_err());
    }
}
