//! PostgreSQL's send formats of the values pgmlcat reads as numbers: bool,
//! int2/4/8, float4/8, numeric, and arrays of them (binary and text). Used
//! by the training pull (binary COPY) and by pgml.predict (feature arrays
//! in the rows of the rewritten statement).

use crate::ml::error::{MlError, MlResult};

pub use crate::net::oid::{BOOL, FLOAT4, FLOAT8, INT2, INT4, INT8, NUMERIC};

/// The element type of a numeric or boolean array type.
pub fn element_of(array_oid: u32) -> Option<u32> {
    Some(match array_oid {
        1000 => BOOL,
        1005 => INT2,
        1007 => INT4,
        1016 => INT8,
        1021 => FLOAT4,
        1022 => FLOAT8,
        1231 => NUMERIC,
        _ => return None,
    })
}

fn bad(what: &str) -> MlError {
    MlError::Internal(format!("malformed binary {what} from the server"))
}

/// Big-endian integers from the first bytes of `b` (the caller checked
/// the length).
pub fn be_i16(b: &[u8]) -> i16 {
    i16::from_be_bytes([b[0], b[1]])
}

pub fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A value of the numeric or boolean type `oid` in binary form.
pub fn scalar(oid: u32, b: &[u8]) -> MlResult<f64> {
    let exact = |n: usize| (b.len() == n).then_some(b).ok_or_else(|| bad("number"));
    Ok(match oid {
        BOOL => f64::from(exact(1)?[0] != 0),
        INT2 => f64::from(be_i16(exact(2)?)),
        INT4 => f64::from(be_i32(exact(4)?)),
        INT8 => i64::from_be_bytes(exact(8)?.try_into().map_err(|_| bad("int8"))?) as f64,
        FLOAT4 => f64::from(f32::from_be_bytes(
            exact(4)?.try_into().map_err(|_| bad("float4"))?,
        )),
        FLOAT8 => f64::from_be_bytes(exact(8)?.try_into().map_err(|_| bad("float8"))?),
        NUMERIC => numeric(b)?,
        other => {
            return Err(MlError::Internal(format!(
                "type {other} is not a number pgmlcat reads"
            )))
        }
    })
}

/// `numeric` in binary: base-10000 digits. Printed as decimal digits and
/// parsed, so it rounds to f64 exactly as the text form would.
fn numeric(b: &[u8]) -> MlResult<f64> {
    if b.len() < 8 {
        return Err(bad("numeric"));
    }
    let ndigits = be_i16(&b[0..2]).max(0) as usize;
    let weight = i64::from(be_i16(&b[2..4]));
    let sign = u16::from_be_bytes([b[4], b[5]]);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Ok(f64::NAN),
        0xD000 => return Ok(f64::INFINITY),
        0xF000 => return Ok(f64::NEG_INFINITY),
        _ => return Err(bad("numeric")),
    }
    let digits = b.get(8..8 + 2 * ndigits).ok_or_else(|| bad("numeric"))?;
    if ndigits == 0 {
        return Ok(0.0);
    }
    let mut s = String::with_capacity(4 * ndigits + 8);
    if sign == 0x4000 {
        s.push('-');
    }
    for d in digits.chunks_exact(2) {
        let d = be_i16(d);
        if !(0..10000).contains(&d) {
            return Err(bad("numeric"));
        }
        s.push_str(&format!("{d:04}"));
    }
    let exponent = (weight + 1 - ndigits as i64) * 4;
    s.push_str(&format!("e{exponent}"));
    s.parse().map_err(|_| bad("numeric"))
}

/// The elements of a binary array of numbers or booleans, in row-major
/// order (multi-dimensional arrays flattened as Postgres iterates them);
/// `None` is a NULL element.
pub fn array(b: &[u8], out: &mut Vec<Option<f64>>) -> MlResult<()> {
    array_each(b, |v| out.push(v))
}

/// `array`, handing each element to `f` (in order) instead of collecting.
pub fn array_each(b: &[u8], mut f: impl FnMut(Option<f64>)) -> MlResult<()> {
    if b.len() < 12 {
        return Err(bad("array"));
    }
    let ndim = be_i32(&b[0..4]);
    if ndim == 0 {
        return Ok(());
    }
    if !(1..=6).contains(&ndim) {
        return Err(bad("array"));
    }
    let elem = be_i32(&b[8..12]) as u32;
    let mut len = 1usize;
    for d in 0..ndim as usize {
        let at = 12 + 8 * d;
        let dim = b.get(at..at + 4).ok_or_else(|| bad("array"))?;
        len = len.saturating_mul(be_i32(dim).max(0) as usize);
    }
    let mut pos = 12 + 8 * ndim as usize;
    for _ in 0..len {
        let l = be_i32(b.get(pos..pos + 4).ok_or_else(|| bad("array"))?);
        pos += 4;
        if l < 0 {
            f(None);
            continue;
        }
        let end = pos + l as usize;
        f(Some(scalar(
            elem,
            b.get(pos..end).ok_or_else(|| bad("array"))?,
        )?));
        pos = end;
    }
    Ok(())
}

/// The elements of an array of numbers or booleans in Postgres' text form
/// (`{1,2.5,NULL}`, `{{t,f},{f,t}}`, `[0:1]={1,2}`), flattened.
pub fn text_array(s: &[u8], out: &mut Vec<Option<f64>>) -> MlResult<()> {
    text_array_each(s, NUMERIC, |v| out.push(v))
}

/// `text_array` of elements of type `elem`, handing each element to `f`
/// (in order) instead of collecting. A `real` element is read as the
/// float4 it prints, then widened: the value its binary form gives (a
/// decimal read straight into a double would differ in the last digits,
/// and a linear model's prediction with it).
pub fn text_array_each(s: &[u8], elem: u32, mut f: impl FnMut(Option<f64>)) -> MlResult<()> {
    let bad_text = || MlError::Internal("malformed array text from the server".into());
    // Explicit bounds (`[0:1]=`) come before the braces.
    let start = s.iter().position(|&c| c == b'{').ok_or_else(bad_text)?;
    let mut token: Vec<u8> = Vec::new();
    let mut flush = |token: &mut Vec<u8>| -> MlResult<()> {
        if token.is_empty() {
            return Ok(());
        }
        let t = std::str::from_utf8(token).map_err(|_| bad_text())?.trim();
        let v = if t.eq_ignore_ascii_case("null") {
            None
        } else if t == "t" {
            Some(1.0)
        } else if t == "f" {
            Some(0.0)
        } else {
            let not_a_number = |_| {
                MlError::DatatypeMismatch(format!(
                    "array features must be numbers or booleans, got {t:?}"
                ))
            };
            Some(match elem {
                FLOAT4 => f64::from(t.parse::<f32>().map_err(not_a_number)?),
                _ => t.parse::<f64>().map_err(not_a_number)?,
            })
        };
        f(v);
        token.clear();
        Ok(())
    };
    for &c in &s[start..] {
        match c {
            b'{' => {}
            b'}' | b',' => flush(&mut token)?,
            b'"' => {
                return Err(MlError::DatatypeMismatch(
                    "array features must be numbers or booleans, got text".into(),
                ))
            }
            _ => token.push(c),
        }
    }
    flush(&mut token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary_array(elem: u32, dims: &[i32], values: &[Option<Vec<u8>>]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(dims.len() as i32).to_be_bytes());
        b.extend_from_slice(&i32::from(values.iter().any(Option::is_none)).to_be_bytes());
        b.extend_from_slice(&elem.to_be_bytes());
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
            b.extend_from_slice(&1i32.to_be_bytes());
        }
        for v in values {
            match v {
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
            }
        }
        b
    }

    #[test]
    fn binary_arrays_of_every_number_type() {
        let mut out = Vec::new();
        let b = binary_array(
            FLOAT4,
            &[2, 2],
            &[
                Some(1.5f32.to_be_bytes().to_vec()),
                None,
                Some(f32::NAN.to_be_bytes().to_vec()),
                Some((-2f32).to_be_bytes().to_vec()),
            ],
        );
        array(&b, &mut out).unwrap();
        assert_eq!(out[0], Some(1.5));
        assert_eq!(out[1], None);
        assert!(out[2].unwrap().is_nan());
        assert_eq!(out[3], Some(-2.0));
        assert_eq!(scalar(INT8, &(-7i64).to_be_bytes()).unwrap(), -7.0);
        assert_eq!(scalar(INT2, &3i16.to_be_bytes()).unwrap(), 3.0);
        assert_eq!(scalar(BOOL, &[1]).unwrap(), 1.0);
        assert!(scalar(FLOAT8, &[0; 4]).is_err());
        assert!(array(&b[..20], &mut Vec::new()).is_err());
    }

    #[test]
    fn numeric_binary_rounds_like_its_text() {
        // 12345.678: weight 1, digits [1, 2345, 6780], dscale 3.
        let mut b = Vec::new();
        for v in [3i16, 1, 0, 3, 1, 2345, 6780] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(scalar(NUMERIC, &b).unwrap(), 12345.678);
        // -0.0001: weight -1, digits [1], negative.
        let mut b = Vec::new();
        for v in [1i16, -1, 0x4000u16 as i16, 4, 1] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(scalar(NUMERIC, &b).unwrap(), -0.0001);
        let nan = [0u8, 0, 0, 0, 0xC0, 0, 0, 0];
        assert!(scalar(NUMERIC, &nan).unwrap().is_nan());
    }

    #[test]
    fn text_arrays() {
        let mut out = Vec::new();
        text_array(b"{{1,2.5},{NULL,-Infinity}}", &mut out).unwrap();
        assert_eq!(
            out,
            vec![Some(1.0), Some(2.5), None, Some(f64::NEG_INFINITY)]
        );
        out.clear();
        text_array(b"[0:1]={t,f}", &mut out).unwrap();
        assert_eq!(out, vec![Some(1.0), Some(0.0)]);
        out.clear();
        text_array(b"{}", &mut out).unwrap();
        // A real reads as the float4 it prints, as its binary form would.
        let mut reals = Vec::new();
        text_array_each(b"{5.1,0.1}", FLOAT4, |v| reals.push(v)).unwrap();
        assert_eq!(
            reals,
            vec![Some(f64::from(5.1f32)), Some(f64::from(0.1f32))]
        );
        assert!(out.is_empty());
        assert_eq!(
            text_array(b"{\"a b\"}", &mut out).unwrap_err().sqlstate(),
            "42804"
        );
    }
}
