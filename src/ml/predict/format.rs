//! Prediction values as Postgres itself would send them: `real` (float4)
//! and `real[]` in text and binary result format.

use bytes::{BufMut, BytesMut};

/// Type oids the client sees for prediction columns.
pub const FLOAT4_OID: u32 = 700;
pub const FLOAT4_ARRAY_OID: u32 = 1021;

/// `float4out` of Postgres 12+ with the default `extra_float_digits = 1`:
/// the shortest digits that round-trip, in `%g` layout (exponent form when
/// the decimal exponent is below -4 or at least 6).
pub fn float4_text(v: f32) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // Rust's `{:e}` already yields the shortest round-trip digits; only the
    // layout differs from Postgres.
    let sci = format!("{v:e}");
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci.as_str(), 0),
    };
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if !(-4..6).contains(&exp) {
        let mut out = String::from(sign);
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let esign = if exp < 0 { '-' } else { '+' };
        out.push_str(&format!("e{esign}{:02}", exp.abs()));
        return out;
    }
    let mut out = String::from(sign);
    if exp < 0 {
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            for _ in digits.len()..int_len {
                out.push('0');
            }
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    }
    out
}

/// `real[]` in text: `{0.1,0.9}`; a NaN element prints as `NaN` (Postgres
/// quotes nothing here since no element needs it).
pub fn float4_array_text(values: &[f32]) -> String {
    let mut out = String::from("{");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&float4_text(*v));
    }
    out.push('}');
    out
}

pub fn float4_binary(v: f32, out: &mut BytesMut) {
    out.put_f32(v);
}

/// Postgres array binary format: one dimension, no NULLs, element type float4.
pub fn float4_array_binary(values: &[f32], out: &mut BytesMut) {
    if values.is_empty() {
        // An empty array has zero dimensions and no bounds.
        out.put_i32(0);
        out.put_i32(0);
        out.put_u32(FLOAT4_OID);
        return;
    }
    out.put_i32(1);
    out.put_i32(0);
    out.put_u32(FLOAT4_OID);
    out.put_i32(values.len() as i32);
    out.put_i32(1);
    for v in values {
        out.put_i32(4);
        out.put_f32(*v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected strings are what Postgres 15 printed for the same `::float4` values.
    #[test]
    fn text_matches_postgres() {
        let cases: &[(f32, &str)] = &[
            (1234567.0, "1.234567e+06"),
            (123456.0, "123456"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e15, "1e+15"),
            (1.5e-7, "1.5e-07"),
            (0.1, "0.1"),
            (100000.0, "100000"),
            (1000000.0, "1e+06"),
            (999999.0, "999999"),
            (9999999.0, "9.999999e+06"),
            (3.3333333, "3.3333333"),
            (-2.5, "-2.5"),
            (0.0, "0"),
            (-0.0, "-0"),
            (f32::NAN, "NaN"),
            (f32::NEG_INFINITY, "-Infinity"),
            (f32::INFINITY, "Infinity"),
            (1e-4 * 0.5, "5e-05"),
        ];
        for (v, want) in cases {
            assert_eq!(float4_text(*v), *want, "value {v}");
        }
    }

    #[test]
    fn arrays() {
        assert_eq!(float4_array_text(&[0.1, 0.9]), "{0.1,0.9}");
        assert_eq!(float4_array_text(&[]), "{}");
        let mut b = BytesMut::new();
        float4_array_binary(&[1.0], &mut b);
        assert_eq!(
            &b[..],
            &[
                0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 2, 188, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 4, 63, 128,
                0, 0
            ]
        );
        let mut b = BytesMut::new();
        float4_binary(1.0, &mut b);
        assert_eq!(&b[..], &[63, 128, 0, 0]);
    }
}
