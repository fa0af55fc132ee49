//! The LightGBM parameters pgmlcat accepts, with their aliases and types.
//! LightGBM itself only warns about unknown parameters (and a typo would
//! silently train with defaults), so the list here is what makes a bad key
//! an error. Keys are rewritten to LightGBM's canonical names so an alias
//! and its main name cannot both be given and the defaults pgmlcat adds
//! never shadow a user's setting.

use serde_json::{Map, Value};

use crate::ml::error::{MlError, MlResult};

#[derive(Clone, Copy)]
enum Kind {
    Int,
    Float,
    Bool,
    /// A single word: no whitespace or '=' (LightGBM's parameter string is
    /// `key=value` pairs separated by spaces).
    Word,
    /// A word or a list of words, joined with ','.
    Words,
}

/// (canonical name, aliases, type).
const PARAMS: &[(&str, &[&str], Kind)] = &[
    (
        "num_iterations",
        &[
            "num_iteration",
            "n_iter",
            "num_tree",
            "num_trees",
            "num_round",
            "num_rounds",
            "nrounds",
            "num_boost_round",
            "n_estimators",
            "max_iter",
        ],
        Kind::Int,
    ),
    ("learning_rate", &["shrinkage_rate", "eta"], Kind::Float),
    (
        "num_leaves",
        &["num_leaf", "max_leaves", "max_leaf", "max_leaf_nodes"],
        Kind::Int,
    ),
    ("max_depth", &[], Kind::Int),
    (
        "min_data_in_leaf",
        &[
            "min_data_per_leaf",
            "min_data",
            "min_child_samples",
            "min_samples_leaf",
        ],
        Kind::Int,
    ),
    (
        "min_sum_hessian_in_leaf",
        &[
            "min_sum_hessian_per_leaf",
            "min_sum_hessian",
            "min_hessian",
            "min_child_weight",
        ],
        Kind::Float,
    ),
    (
        "feature_fraction",
        &["sub_feature", "colsample_bytree"],
        Kind::Float,
    ),
    (
        "feature_fraction_bynode",
        &["sub_feature_bynode", "colsample_bynode"],
        Kind::Float,
    ),
    (
        "bagging_fraction",
        &["sub_row", "subsample", "bagging"],
        Kind::Float,
    ),
    ("bagging_freq", &["subsample_freq"], Kind::Int),
    (
        "lambda_l1",
        &["reg_alpha", "l1_regularization"],
        Kind::Float,
    ),
    (
        "lambda_l2",
        &["reg_lambda", "lambda", "l2_regularization"],
        Kind::Float,
    ),
    ("min_gain_to_split", &["min_split_gain"], Kind::Float),
    (
        "max_delta_step",
        &["max_tree_output", "max_leaf_output"],
        Kind::Float,
    ),
    ("max_bin", &["max_bins"], Kind::Int),
    ("min_data_in_bin", &[], Kind::Int),
    (
        "bin_construct_sample_cnt",
        &["subsample_for_bin"],
        Kind::Int,
    ),
    ("seed", &["random_seed", "random_state"], Kind::Int),
    ("bagging_seed", &["bagging_fraction_seed"], Kind::Int),
    ("feature_fraction_seed", &[], Kind::Int),
    ("data_random_seed", &["data_seed"], Kind::Int),
    ("extra_seed", &[], Kind::Int),
    ("deterministic", &[], Kind::Bool),
    ("force_row_wise", &[], Kind::Bool),
    ("force_col_wise", &[], Kind::Bool),
    ("boosting", &["boosting_type", "boost"], Kind::Word),
    (
        "objective",
        &["objective_type", "app", "application", "loss"],
        Kind::Word,
    ),
    ("metric", &["metrics", "metric_types"], Kind::Words),
    (
        "num_threads",
        &["num_thread", "nthread", "nthreads", "n_jobs"],
        Kind::Int,
    ),
    ("verbosity", &["verbose"], Kind::Int),
    ("num_class", &["num_classes"], Kind::Int),
    (
        "is_unbalance",
        &["unbalance", "unbalanced_sets"],
        Kind::Bool,
    ),
    ("scale_pos_weight", &[], Kind::Float),
    ("sigmoid", &[], Kind::Float),
    ("boost_from_average", &[], Kind::Bool),
    (
        "early_stopping_round",
        &[
            "early_stopping_rounds",
            "early_stopping",
            "n_iter_no_change",
        ],
        Kind::Int,
    ),
    ("first_metric_only", &[], Kind::Bool),
    ("extra_trees", &["extra_tree"], Kind::Bool),
    ("path_smooth", &[], Kind::Float),
    ("linear_tree", &["linear_trees"], Kind::Bool),
    ("linear_lambda", &[], Kind::Float),
    ("min_data_per_group", &[], Kind::Int),
    ("cat_smooth", &[], Kind::Float),
    ("cat_l2", &[], Kind::Float),
    ("max_cat_threshold", &[], Kind::Int),
    ("max_cat_to_onehot", &[], Kind::Int),
    ("feature_pre_filter", &[], Kind::Bool),
    ("use_missing", &[], Kind::Bool),
    ("zero_as_missing", &[], Kind::Bool),
    ("drop_rate", &["rate_drop"], Kind::Float),
    ("max_drop", &[], Kind::Int),
    ("skip_drop", &[], Kind::Float),
    ("xgboost_dart_mode", &[], Kind::Bool),
    ("uniform_drop", &[], Kind::Bool),
    ("drop_seed", &[], Kind::Int),
    ("top_rate", &[], Kind::Float),
    ("other_rate", &[], Kind::Float),
    ("alpha", &[], Kind::Float),
    ("fair_c", &[], Kind::Float),
    ("poisson_max_delta_step", &[], Kind::Float),
    ("tweedie_variance_power", &[], Kind::Float),
    ("histogram_pool_size", &["hist_pool_size"], Kind::Float),
];

fn lookup(key: &str) -> Option<(&'static str, Kind)> {
    PARAMS
        .iter()
        .find(|(name, aliases, _)| *name == key || aliases.contains(&key))
        .map(|(name, _, kind)| (*name, *kind))
}

fn valid_names() -> String {
    PARAMS
        .iter()
        .map(|(name, aliases, _)| {
            if aliases.is_empty() {
                name.to_string()
            } else {
                format!("{name} ({})", aliases.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The user's hyperparameters under LightGBM's canonical names, each value
/// checked against its type.
pub fn canonical(params: &Map<String, Value>) -> MlResult<Map<String, Value>> {
    let mut out = Map::new();
    for (key, value) in params {
        let Some((name, kind)) = lookup(key) else {
            return Err(MlError::invalid(format!(
                "unknown hyperparameter \"{key}\" for algorithm lightgbm; valid hyperparameters (aliases in parentheses): {}",
                valid_names()
            )));
        };
        if value.is_null() {
            continue;
        }
        let value = check_value(key, kind, value)?;
        if out.insert(name.to_string(), value).is_some() {
            return Err(MlError::invalid(format!(
                "lightgbm hyperparameter \"{name}\" is given twice (\"{key}\" is an alias of it)"
            )));
        }
    }
    Ok(out)
}

fn check_value(key: &str, kind: Kind, value: &Value) -> MlResult<Value> {
    let bad = |want: &str| {
        MlError::invalid(format!(
            "lightgbm hyperparameter \"{key}\" must be {want}, got {value}"
        ))
    };
    let word = |s: &str| -> MlResult<String> {
        if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c == '=' || c == '"') {
            return Err(bad("a single word"));
        }
        Ok(s.to_string())
    };
    match kind {
        Kind::Int => match (value.as_i64(), value.as_f64()) {
            (Some(i), _) => Ok(Value::from(i)),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => Ok(Value::from(f as i64)),
            _ => Err(bad("an integer")),
        },
        Kind::Float => match value.as_f64() {
            Some(f) if f.is_finite() => Ok(Value::from(f)),
            _ => Err(bad("a number")),
        },
        Kind::Bool => match value {
            Value::Bool(b) => Ok(Value::Bool(*b)),
            _ => Err(bad("true or false")),
        },
        Kind::Word => match value {
            Value::String(s) => Ok(Value::String(word(s.trim())?)),
            _ => Err(bad("a string")),
        },
        Kind::Words => match value {
            Value::String(s) => Ok(Value::String(word(s.trim())?)),
            Value::Array(items) => {
                let words = items
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => word(s.trim()),
                        _ => Err(bad("a string or a list of strings")),
                    })
                    .collect::<MlResult<Vec<_>>>()?;
                Ok(Value::String(words.join(",")))
            }
            _ => Err(bad("a string or a list of strings")),
        },
    }
}

/// LightGBM's `key=value key=value` parameter string.
pub fn to_param_string(params: &Map<String, Value>) -> String {
    params
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn aliases_become_canonical() {
        let m = canonical(&obj(
            json!({"n_estimators": 7, "eta": 0.3, "metric": ["l1", "l2"]}),
        ))
        .unwrap();
        assert_eq!(m.get("num_iterations"), Some(&json!(7)));
        assert_eq!(m.get("learning_rate"), Some(&json!(0.3)));
        assert_eq!(m.get("metric"), Some(&json!("l1,l2")));
        let s = to_param_string(&m);
        assert!(
            s.contains("num_iterations=7") && s.contains("metric=l1,l2"),
            "{s}"
        );
    }

    #[test]
    fn rejects_unknown_duplicate_and_mistyped() {
        let e = canonical(&obj(json!({"num_leafs": 3}))).unwrap_err();
        assert_eq!(e.sqlstate(), "22023");
        assert!(e.to_string().contains("num_leaves"));
        assert!(canonical(&obj(json!({"n_estimators": 3, "num_iterations": 4}))).is_err());
        assert!(canonical(&obj(json!({"num_leaves": "many"}))).is_err());
        assert!(canonical(&obj(json!({"num_leaves": 3.5}))).is_err());
        assert!(canonical(&obj(json!({"objective": "binary metric=auc"}))).is_err());
        assert!(canonical(&obj(json!({"deterministic": 1}))).is_err());
    }
}
