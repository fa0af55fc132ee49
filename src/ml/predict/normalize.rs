//! Statements that differ only in the constants they compare with (`WHERE
//! id = 42`, `WHERE id = 43`, as clients of the simple protocol send them)
//! share one plan. Such constants are replaced by markers for the plan's
//! cache key, and their text is put back into the planned server SQL, so
//! the server sees exactly the constants the client wrote.

/// Markers are `$` + this base + k: far above any real parameter number.
const MARKER_BASE: usize = 9_000_000;

#[derive(Debug, PartialEq)]
pub struct Normalized {
    /// The statement with the constants replaced by markers.
    pub key: String,
    /// The constants' source text, in marker order.
    pub literals: Vec<String>,
}

pub fn marker(k: usize) -> String {
    format!("${}", MARKER_BASE + k)
}

/// Replaces numbers and plain string literals that directly follow a
/// comparison operator. Anything this scanner is not sure about (comments,
/// dollar quoting, escape strings, `$n`) leaves the statement as it is:
/// None.
pub fn normalize(sql: &str) -> Option<Normalized> {
    let b = sql.as_bytes();
    let mut key = String::with_capacity(sql.len());
    let mut literals = Vec::new();
    let mut i = 0;
    // The last significant byte before the current position, and the one
    // before it (`=>` names an argument: what follows is not compared).
    let mut last: u8 = b' ';
    let mut before_last: u8 = b' ';
    while i < b.len() {
        let c = b[i];
        // A token copied whole: (its end, whether it is a compared
        // constant, what `last` becomes).
        let token = match c {
            b'-' if b.get(i + 1) == Some(&b'-') => return None,
            b'/' if b.get(i + 1) == Some(&b'*') => return None,
            b'$' => return None,
            // A quoted identifier: copied as is.
            b'"' => Some((find_quote_end(b, i, b'"')?, false, b'"')),
            b'\'' => {
                let end = find_quote_end(b, i, b'\'')?;
                // E'..', U&'..', B'..', X'..' prefixes: leave alone.
                let prefixed = key
                    .chars()
                    .last()
                    .is_some_and(|p| p.is_ascii_alphanumeric() || p == '&');
                Some((end, after_comparison(before_last, last) && !prefixed, b'\''))
            }
            b'0'..=b'9' if !ident_char(key.as_bytes().last().copied()) => {
                let mut end = i;
                while end < b.len() && (b[end].is_ascii_digit() || b[end] == b'.') {
                    end += 1;
                }
                // Exponents and anything glued on (1e5, 1abc) are left alone.
                let glued = b
                    .get(end)
                    .is_some_and(|&n| n.is_ascii_alphanumeric() || n == b'_');
                Some((end, after_comparison(before_last, last) && !glued, b'0'))
            }
            _ => None,
        };
        if let Some((end, compared, kind)) = token {
            let text = &sql[i..end];
            if compared {
                literals.push(text.to_string());
                key.push_str(&marker(literals.len()));
            } else {
                key.push_str(text);
            }
            i = end;
            before_last = last;
            last = kind;
            continue;
        }
        let ch_len = utf8_len(c);
        key.push_str(&sql[i..(i + ch_len).min(sql.len())]);
        if !c.is_ascii_whitespace() {
            before_last = last;
            last = c;
        }
        i += ch_len;
    }
    if literals.is_empty() {
        return None;
    }
    Some(Normalized { key, literals })
}

/// `=`, `<`, `>` (and `<=`, `>=`, `<>`, `!=`) just before the constant,
/// but not a named argument's `=>`.
fn after_comparison(before_last: u8, last: u8) -> bool {
    matches!(last, b'=' | b'<' | b'>') && !(before_last == b'=' && last == b'>')
}

fn ident_char(c: Option<u8>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c == b'.')
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// The index just past the closing quote (doubled quotes are escapes).
fn find_quote_end(b: &[u8], start: usize, q: u8) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// Puts the constants back into SQL planned from the normalized key: every
/// marker must appear exactly once, else None (the caller plans the
/// statement itself).
pub fn restore(template: &str, literals: &[String]) -> Option<String> {
    replace_markers(template, literals.len(), |k| literals[k - 1].clone())
}

/// Markers 1..=n each replaced by `with(k)`; None unless each appears
/// exactly once.
fn replace_markers(template: &str, n: usize, with: impl Fn(usize) -> String) -> Option<String> {
    let mut out = template.to_string();
    // Highest markers first, so $9000001 never eats part of $90000012.
    for k in (1..=n).rev() {
        let m = marker(k);
        if out.matches(&m).count() != 1 {
            return None;
        }
        out = out.replacen(&m, &with(k), 1);
    }
    Some(out)
}

/// The template with its markers as parameters `$1..$k` instead: one
/// statement, prepared once per server, serves every execution. Each
/// parameter gets the type the constant itself would have (the scanner's:
/// int4, int8 or numeric; a quoted string stays untyped, resolved from its
/// context as the literal would be). None when a constant cannot be a
/// parameter faithfully (backslashes, odd numbers): the caller sends the
/// literal text.
pub fn parameterize(template: &str, literals: &[String]) -> Option<Parameters> {
    let sql = replace_markers(template, literals.len(), |k| format!("${k}"))?;
    let mut types = Vec::with_capacity(literals.len());
    let mut values = Vec::with_capacity(literals.len());
    for lit in literals {
        let (oid, value) = parameter(lit)?;
        types.push(oid);
        values.push(value);
    }
    Some(Parameters { sql, types, values })
}

/// A statement with `$n` parameters and their types and text values.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameters {
    pub sql: String,
    pub types: Vec<u32>,
    pub values: Vec<String>,
}

fn parameter(lit: &str) -> Option<(u32, String)> {
    use crate::net::oid::{INT4, INT8, NUMERIC};
    if let Some(quoted) = lit.strip_prefix('\'').and_then(|l| l.strip_suffix('\'')) {
        // With standard_conforming_strings off a backslash escapes.
        if quoted.contains('\\') {
            return None;
        }
        return Some((0, quoted.replace("''", "'")));
    }
    let oid = match lit.matches('.').count() {
        0 if lit.parse::<i32>().is_ok() => INT4,
        0 if lit.parse::<i64>().is_ok() => INT8,
        0 | 1 if lit.bytes().any(|b| b.is_ascii_digit()) => NUMERIC,
        _ => return None,
    };
    Some((oid, lit.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_after_comparisons_become_markers() {
        let n = normalize(
            "SELECT pgml.predict('p', ARRAY[a, 1.5]) FROM t WHERE id = 42 AND name <> 'o''k'",
        )
        .unwrap();
        assert_eq!(
            n.key,
            "SELECT pgml.predict('p', ARRAY[a, 1.5]) FROM t WHERE id = $9000001 AND name <> $9000002"
        );
        assert_eq!(n.literals, vec!["42".to_string(), "'o''k'".to_string()]);
        // A named argument's value is not compared: it stays.
        let named =
            normalize("SELECT pgml.predict(project_name => 'p', ARRAY[a]) FROM t WHERE id = 4")
                .unwrap();
        assert_eq!(
            named.key,
            "SELECT pgml.predict(project_name => 'p', ARRAY[a]) FROM t WHERE id = $9000001"
        );
        assert_eq!(
            restore(
                "SELECT x FROM t WHERE id = $9000001 AND name <> $9000002",
                &n.literals
            )
            .unwrap(),
            "SELECT x FROM t WHERE id = 42 AND name <> 'o''k'"
        );
    }

    #[test]
    fn constants_become_typed_parameters() {
        let n = normalize(
            "SELECT x FROM t WHERE a = 5 AND b = 5000000000 AND c = 1.5 AND d = 'o''k' AND e > 99999999999999999999",
        )
        .unwrap();
        let p = parameterize(&n.key, &n.literals).unwrap();
        assert_eq!(
            p.sql,
            "SELECT x FROM t WHERE a = $1 AND b = $2 AND c = $3 AND d = $4 AND e > $5"
        );
        assert_eq!(p.types, vec![23, 20, 1700, 0, 1700]);
        assert_eq!(p.values[3], "o'k");
        let n = normalize("SELECT x FROM t WHERE a = 'a\\b'").unwrap();
        assert_eq!(parameterize(&n.key, &n.literals), None);
        assert_eq!(parameterize("SELECT 1", &["2".into()]), None);
    }

    #[test]
    fn anything_unsure_is_left_alone() {
        for sql in [
            "SELECT 1 FROM t WHERE a = 1 -- c",
            "SELECT 1 FROM t WHERE a = $$x$$",
            "SELECT 1 FROM t /* x */ WHERE a = 1",
            "SELECT 1 FROM t ORDER BY 1 LIMIT 5",
            "SELECT 1 FROM t WHERE a = E'x'",
            "SELECT 1 FROM t WHERE a = 1e5",
            "SELECT 1 FROM t WHERE a = -1",
            "SELECT 1 FROM t WHERE a = 'unterminated",
        ] {
            assert_eq!(normalize(sql), None, "{sql}");
        }
        assert_eq!(
            normalize("SELECT \"a=1\" FROM t WHERE b = 2").unwrap().key,
            "SELECT \"a=1\" FROM t WHERE b = $9000001"
        );
        assert_eq!(restore("SELECT 1", &["2".into()]), None);
    }
}
