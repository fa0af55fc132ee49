//! The user's `preprocess` JSON: per column, how to encode text, fill NULLs
//! and scale, with PostgresML's option names.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ml::error::{MlError, MlResult};

/// How a text column becomes numbers. Serialised in PostgresML's form:
/// `"native"`, `"target"`, `"one_hot"`, `{"ordinal": ["a", "b"]}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encode {
    /// Codes 1, 2, ... in first-seen order over the training rows; NULL is 0.
    #[default]
    Native,
    /// The mean label of the category's training rows.
    Target,
    /// One 0/1 feature per training category.
    OneHot,
    /// Codes 1, 2, ... in the order given; NULL is 0.
    Ordinal(Vec<String>),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Impute {
    /// A NULL in a numeric feature is an error.
    #[default]
    Error,
    Mean,
    Median,
    Mode,
    Min,
    Max,
    Zero,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    #[default]
    Preserve,
    Standard,
    MinMax,
    MaxAbs,
    Robust,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSpec {
    #[serde(default)]
    pub encode: Encode,
    #[serde(default)]
    pub impute: Impute,
    #[serde(default)]
    pub scale: Scale,
}

const ENCODE_VALUES: &str = "native, target, one_hot, {\"ordinal\": [...]}";
const IMPUTE_VALUES: &str = "error, mean, median, mode, min, max, zero";
const SCALE_VALUES: &str = "preserve, standard, min_max, max_abs, robust";

/// Parses `preprocess => '{"col": {...}}'`. NULL or `{}` means no specs;
/// columns without a spec take the defaults (native, error, preserve).
pub fn parse_specs(json: &Value, columns: &[&str]) -> MlResult<BTreeMap<String, ColumnSpec>> {
    let object = match json {
        Value::Null => return Ok(BTreeMap::new()),
        Value::Object(o) => o,
        other => {
            return Err(MlError::invalid(format!(
                "preprocess must be a JSON object of column names, e.g. '{{\"col\": {{\"impute\": \"mean\"}}}}', got {other}"
            )))
        }
    };
    let mut specs = BTreeMap::new();
    for (column, options) in object {
        if !columns.contains(&column.as_str()) {
            return Err(MlError::UndefinedColumn(format!(
                "preprocess names column \"{column}\", which is not in the training data; columns: {}",
                columns.join(", ")
            )));
        }
        specs.insert(column.clone(), parse_column(column, options)?);
    }
    Ok(specs)
}

fn parse_column(column: &str, options: &Value) -> MlResult<ColumnSpec> {
    let Value::Object(options) = options else {
        return Err(MlError::invalid(format!(
            "preprocess for \"{column}\" must be an object with encode, impute and/or scale, got {options}"
        )));
    };
    let mut spec = ColumnSpec::default();
    for (key, value) in options {
        match key.as_str() {
            "encode" => spec.encode = parse_encode(column, value)?,
            "impute" => {
                spec.impute = parse_word(column, key, value, IMPUTE_VALUES, |w| {
                    Some(match w {
                        "error" => Impute::Error,
                        "mean" => Impute::Mean,
                        "median" => Impute::Median,
                        "mode" => Impute::Mode,
                        "min" => Impute::Min,
                        "max" => Impute::Max,
                        "zero" => Impute::Zero,
                        _ => return None,
                    })
                })?
            }
            "scale" => {
                spec.scale = parse_word(column, key, value, SCALE_VALUES, |w| {
                    Some(match w {
                        "preserve" => Scale::Preserve,
                        "standard" => Scale::Standard,
                        "min_max" => Scale::MinMax,
                        "max_abs" => Scale::MaxAbs,
                        "robust" => Scale::Robust,
                        _ => return None,
                    })
                })?
            }
            other => {
                return Err(MlError::invalid(format!(
                    "unknown preprocess option \"{other}\" for \"{column}\"; valid options: encode, impute, scale"
                )))
            }
        }
    }
    Ok(spec)
}

fn parse_word<T>(
    column: &str,
    key: &str,
    value: &Value,
    valid: &str,
    pick: impl Fn(&str) -> Option<T>,
) -> MlResult<T> {
    value.as_str().and_then(pick).ok_or_else(|| {
        MlError::invalid(format!(
            "invalid {key} {value} for \"{column}\"; valid values: {valid}"
        ))
    })
}

fn parse_encode(column: &str, value: &Value) -> MlResult<Encode> {
    let invalid = || {
        MlError::invalid(format!(
            "invalid encode {value} for \"{column}\"; valid values: {ENCODE_VALUES}"
        ))
    };
    match value {
        Value::String(s) => match s.as_str() {
            "native" => Ok(Encode::Native),
            "target" => Ok(Encode::Target),
            "one_hot" => Ok(Encode::OneHot),
            _ => Err(invalid()),
        },
        Value::Object(o) if o.len() == 1 => {
            let list = o
                .get("ordinal")
                .and_then(Value::as_array)
                .ok_or_else(invalid)?;
            let mut order = Vec::with_capacity(list.len());
            for item in list {
                let item = match item {
                    Value::String(s) => s.clone(),
                    // Numbers are allowed for text holding digits.
                    Value::Number(n) => n.to_string(),
                    _ => return Err(invalid()),
                };
                if order.contains(&item) {
                    return Err(MlError::invalid(format!(
                        "ordinal encoding for \"{column}\" lists \"{item}\" twice"
                    )));
                }
                order.push(item);
            }
            if order.is_empty() {
                return Err(MlError::invalid(format!(
                    "ordinal encoding for \"{column}\" needs the categories in order, e.g. {{\"ordinal\": [\"low\", \"high\"]}}"
                )));
            }
            Ok(Encode::Ordinal(order))
        }
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const COLUMNS: &[&str] = &["a", "b", "c"];

    #[test]
    fn parses_every_option() {
        let specs = parse_specs(
            &json!({
                "a": {"encode": "one_hot", "impute": "median", "scale": "robust"},
                "b": {"encode": {"ordinal": ["low", "mid", "high"]}},
                "c": {"scale": "min_max"}
            }),
            COLUMNS,
        )
        .unwrap();
        assert_eq!(
            specs["a"],
            ColumnSpec {
                encode: Encode::OneHot,
                impute: Impute::Median,
                scale: Scale::Robust
            }
        );
        assert_eq!(
            specs["b"].encode,
            Encode::Ordinal(vec!["low".into(), "mid".into(), "high".into()])
        );
        assert_eq!(specs["b"].impute, Impute::Error);
        assert_eq!(specs["c"].scale, Scale::MinMax);
        assert_eq!(specs["c"].encode, Encode::Native);
        assert!(parse_specs(&Value::Null, COLUMNS).unwrap().is_empty());
    }

    #[test]
    fn serialises_as_postgresml() {
        let spec = ColumnSpec {
            encode: Encode::Ordinal(vec!["x".into()]),
            impute: Impute::Zero,
            scale: Scale::MaxAbs,
        };
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            v,
            json!({"encode": {"ordinal": ["x"]}, "impute": "zero", "scale": "max_abs"})
        );
        assert_eq!(serde_json::from_value::<ColumnSpec>(v).unwrap(), spec);
        let v = serde_json::to_value(ColumnSpec::default()).unwrap();
        assert_eq!(
            v,
            json!({"encode": "native", "impute": "error", "scale": "preserve"})
        );
    }

    #[test]
    fn errors_name_the_valid_values() {
        let err = parse_specs(&json!({"zz": {}}), COLUMNS).unwrap_err();
        assert_eq!(err.sqlstate(), "42703");
        let err = parse_specs(&json!({"a": {"impute": "avg"}}), COLUMNS).unwrap_err();
        assert_eq!(err.sqlstate(), "22023");
        assert!(err.to_string().contains(IMPUTE_VALUES), "{err}");
        let err = parse_specs(&json!({"a": {"scale": "log"}}), COLUMNS).unwrap_err();
        assert!(err.to_string().contains(SCALE_VALUES), "{err}");
        let err = parse_specs(&json!({"a": {"encode": "hash"}}), COLUMNS).unwrap_err();
        assert!(err.to_string().contains("one_hot"), "{err}");
        let err = parse_specs(&json!({"a": {"normalize": true}}), COLUMNS).unwrap_err();
        assert!(err.to_string().contains("encode, impute, scale"), "{err}");
        assert!(parse_specs(&json!({"a": {"encode": {"ordinal": []}}}), COLUMNS).is_err());
        assert!(parse_specs(&json!({"a": {"encode": {"ordinal": ["x", "x"]}}}), COLUMNS).is_err());
        assert!(parse_specs(&json!({"a": "mean"}), COLUMNS).is_err());
        assert!(parse_specs(&json!([1]), COLUMNS).is_err());
    }
}
