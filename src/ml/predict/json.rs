//! Decoding a replacement column of row features: `to_json(row)::text` as
//! the server printed it (array features come as arrays: `ml::binary`).
//! Objects (rows) must keep their key order, which `serde_json::Value` does
//! not, hence the small visitor.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::ml::error::{MlError, MlResult};
use crate::ml::frame::RawValue;

use super::types::{Features, GroupKey, InputKind};

#[derive(Debug, Clone, PartialEq)]
enum J {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<J>),
    /// Values of an object in key order.
    Obj(Vec<J>),
}

struct JVisitor;

impl<'de> Visitor<'de> for JVisitor {
    type Value = J;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<J, E> {
        Ok(J::Null)
    }
    fn visit_none<E>(self) -> Result<J, E> {
        Ok(J::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<J, E> {
        Ok(J::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<J, E> {
        Ok(J::Num(v as f64))
    }
    fn visit_u64<E>(self, v: u64) -> Result<J, E> {
        Ok(J::Num(v as f64))
    }
    fn visit_f64<E>(self, v: f64) -> Result<J, E> {
        Ok(J::Num(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<J, E> {
        Ok(J::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<J, E> {
        Ok(J::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<J, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element::<J>()? {
            out.push(v);
        }
        Ok(J::Arr(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<J, A::Error> {
        let mut out = Vec::new();
        while let Some((_, v)) = map.next_entry::<de::IgnoredAny, J>()? {
            out.push(v);
        }
        Ok(J::Obj(out))
    }
}

impl<'de> Deserialize<'de> for J {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<J, D::Error> {
        d.deserialize_any(JVisitor)
    }
}

/// Postgres' `to_json` prints non-finite floats as strings.
fn special_float(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// Array elements in row-major order, flattening multi-dimensional arrays
/// the way Postgres iterates them. `None` is a NULL element.
fn flatten(items: Vec<J>, out: &mut Vec<Option<f64>>, func: &str) -> MlResult<()> {
    for item in items {
        match item {
            J::Null => out.push(None),
            J::Num(n) => out.push(Some(n)),
            J::Bool(b) => out.push(Some(if b { 1.0 } else { 0.0 })),
            J::Str(s) => match special_float(&s) {
                Some(v) => out.push(Some(v)),
                None => {
                    return Err(MlError::DatatypeMismatch(format!(
                    "pgml.{func}: array features must be numbers or booleans, got the text {s:?}"
                )))
                }
            },
            J::Arr(inner) => flatten(inner, out, func)?,
            J::Obj(_) => {
                return Err(MlError::DatatypeMismatch(format!(
                    "pgml.{func}: array features must be numbers or booleans, got a row"
                )))
            }
        }
    }
    Ok(())
}

fn raw_value(item: J, func: &str) -> MlResult<RawValue> {
    Ok(match item {
        J::Null => RawValue::Null,
        J::Bool(b) => RawValue::Number(if b { 1.0 } else { 0.0 }),
        J::Num(n) => RawValue::Number(n),
        J::Str(s) => RawValue::Text(s),
        J::Arr(items) => {
            let mut out = Vec::new();
            flatten(items, &mut out, func)?;
            RawValue::Array(out)
        }
        J::Obj(_) => {
            return Err(MlError::DatatypeMismatch(format!(
                "pgml.{func}: a row feature cannot itself be a row"
            )))
        }
    })
}

/// Array features without NULLs: an error naming the first NULL element.
pub fn dense(flat: Vec<Option<f64>>, func: &str) -> MlResult<Vec<f64>> {
    flat.into_iter()
        .enumerate()
        .map(|(i, v)| v.ok_or_else(|| null_feature(i, func)))
        .collect()
}

/// The error for a NULL as element `i` (0-based) of array features.
pub fn null_feature(i: usize, func: &str) -> MlError {
    MlError::data(format!(
        "pgml.{func}: feature {} of the array is NULL; array features cannot contain NULLs",
        i + 1
    ))
}

/// The features of one row, from the text of `to_json(arg)`.
pub fn decode(text: &[u8], kind: InputKind, func: &str) -> MlResult<Features> {
    let j: J = serde_json::from_slice(text).map_err(|e| {
        MlError::Internal(format!(
            "pgml.{func}: cannot read the features the server sent: {e}"
        ))
    })?;
    match (j, kind) {
        (J::Arr(items), InputKind::Array | InputKind::Either) => {
            let mut flat = Vec::with_capacity(items.len());
            flatten(items, &mut flat, func)?;
            dense(flat, func).map(Features::Array)
        }
        (J::Obj(items), InputKind::Row | InputKind::Either) => items
            .into_iter()
            .map(|v| raw_value(v, func))
            .collect::<MlResult<Vec<_>>>()
            .map(Features::Row),
        _ => Err(MlError::DatatypeMismatch(format!(
            "pgml.{func}: the features must be an array (ARRAY[...]) or a row ((a, b, ...), ROW(...), alias.*)"
        ))),
    }
}

/// A grouped call's value: the group's JSON array of texts, a tab, the
/// features (see `calls::grouped_features`).
pub fn decode_grouped(text: &[u8], kind: InputKind, func: &str) -> MlResult<Features> {
    let unreadable = || {
        MlError::Internal(format!(
            "pgml.{func}: cannot read the group and features the server sent"
        ))
    };
    let tab = text
        .iter()
        .position(|&b| b == super::calls::GROUP_SEPARATOR)
        .ok_or_else(unreadable)?;
    let group: GroupKey = serde_json::from_slice(&text[..tab]).map_err(|_| unreadable())?;
    let features = decode(&text[tab + 1..], kind, func)?;
    Ok(Features::Grouped(group, Box::new(features)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_flatten_and_read_specials() {
        let f = decode(br#"[[1,2.5],[true,"NaN"]]"#, InputKind::Array, "predict").unwrap();
        let Features::Array(v) = f else {
            panic!("not an array")
        };
        assert_eq!(&v[..3], &[1.0, 2.5, 1.0]);
        assert!(v[3].is_nan());
    }

    #[test]
    fn null_element_is_an_error_naming_it() {
        let err = decode(b"[1,null]", InputKind::Array, "predict").unwrap_err();
        assert!(err.to_string().contains("feature 2"), "{err}");
        assert_eq!(err.sqlstate(), "22000");
    }

    #[test]
    fn rows_keep_column_order() {
        let f = decode(
            br#"{"z":1,"a":"x","m":null,"b":[1,2],"c":false}"#,
            InputKind::Either,
            "predict",
        )
        .unwrap();
        assert_eq!(
            f,
            Features::Row(vec![
                RawValue::Number(1.0),
                RawValue::Text("x".into()),
                RawValue::Null,
                RawValue::Array(vec![Some(1.0), Some(2.0)]),
                RawValue::Number(0.0),
            ])
        );
    }

    #[test]
    fn kind_mismatch_and_scalars_are_rejected() {
        assert!(decode(b"{\"a\":1}", InputKind::Array, "predict").is_err());
        assert!(decode(b"5", InputKind::Either, "predict").is_err());
        assert!(decode(b"[\"a\"]", InputKind::Array, "predict").is_err());
    }
}
