//! Prediction values as Postgres itself would send them: `real` (float4)
//! and `real[]` in text and binary result format.

use bytes::{BufMut, BytesMut};

/// Type oids the client sees for prediction columns.
pub const FLOAT4_OID: u32 = 700;
pub const JSONB_OID: u32 = 3802;
pub const FLOAT4_ARRAY_OID: u32 = 1021;

/// `float4out` of Postgres 12+ with the default `extra_float_digits = 1`:
/// the shortest digits that round-trip, in `%g` layout (exponent form when
/// the decimal exponent is below -4 or at least 6).
pub fn float4_text(v: f32) -> String {
    let mut out = Vec::with_capacity(16);
    put_float4_text(v, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// A fixed buffer for Rust's `{:e}` output of an f32 (at most ~15 bytes).
struct Scratch {
    buf: [u8; 32],
    len: usize,
}

impl std::fmt::Write for Scratch {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// `float4_text` appended to `out`, without allocating: predictions are
/// printed once per row.
pub fn put_float4_text(v: f32, out: &mut impl Extend<u8>) {
    use std::fmt::Write;
    let mut emit = |s: &[u8]| out.extend(s.iter().copied());
    let special: Option<&[u8]> = if v.is_nan() {
        Some(b"NaN")
    } else if v.is_infinite() {
        Some(if v > 0.0 { b"Infinity" } else { b"-Infinity" })
    } else if v == 0.0 {
        Some(if v.is_sign_negative() { b"-0" } else { b"0" })
    } else {
        None
    };
    if let Some(s) = special {
        return emit(s);
    }
    // Rust's `{:e}` already yields the shortest round-trip digits; only the
    // layout differs from Postgres.
    let mut sci = Scratch {
        buf: [0; 32],
        len: 0,
    };
    if write!(sci, "{v:e}").is_err() {
        return emit(b"NaN");
    }
    let text = &sci.buf[..sci.len];
    let (mantissa, exp) = match text.iter().position(|&c| c == b'e') {
        Some(at) => (
            &text[..at],
            std::str::from_utf8(&text[at + 1..])
                .ok()
                .and_then(|e| e.parse::<i32>().ok())
                .unwrap_or(0),
        ),
        None => (text, 0),
    };
    let (negative, mantissa) = match mantissa.strip_prefix(b"-") {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let mut digits = [0u8; 16];
    let mut n = 0;
    for &c in mantissa.iter().filter(|c| **c != b'.') {
        if let Some(d) = digits.get_mut(n) {
            *d = c;
            n += 1;
        }
    }
    let digits = &digits[..n];
    if negative {
        emit(b"-");
    }
    if !(-4..6).contains(&exp) {
        emit(&digits[..1]);
        if digits.len() > 1 {
            emit(b".");
            emit(&digits[1..]);
        }
        emit(if exp < 0 { b"e-" } else { b"e+" });
        let e = exp.unsigned_abs();
        if e < 10 {
            emit(b"0");
        }
        let mut ebuf = Scratch {
            buf: [0; 32],
            len: 0,
        };
        let _ = write!(ebuf, "{e}");
        emit(&ebuf.buf[..ebuf.len]);
        return;
    }
    if exp < 0 {
        emit(b"0.");
        for _ in 0..(-exp - 1) {
            emit(b"0");
        }
        emit(digits);
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            emit(digits);
            for _ in digits.len()..int_len {
                emit(b"0");
            }
        } else {
            emit(&digits[..int_len]);
            emit(b".");
            emit(&digits[int_len..]);
        }
    }
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
