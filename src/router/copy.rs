//! COPY ... FROM STDIN into a sharded table: which statements qualify, and
//! splitting the incoming rows by the shard of their key field.

use sqlparser::ast::{CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement};

/// A COPY FROM STDIN pgmlcat can split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyIn {
    pub table: String,
    /// The column list as written (empty: all columns, in table order).
    pub columns: Vec<String>,
    pub csv: bool,
    pub delimiter: u8,
    pub quote: u8,
    pub header: bool,
}

/// Recognises `COPY table [(cols)] FROM STDIN [options]` on `table`.
pub fn parse(statements: &[Statement], sharded_table: &str) -> Option<CopyIn> {
    let [Statement::Copy {
        source: CopySource::Table {
            table_name,
            columns,
        },
        to: false,
        target: CopyTarget::Stdin,
        options,
        legacy_options,
        ..
    }] = statements
    else {
        return None;
    };
    let name = table_name.to_string();
    let last = name.rsplit('.').next().unwrap_or(&name).trim_matches('"');
    if !last.eq_ignore_ascii_case(sharded_table) {
        return None;
    }
    let mut c = CopyIn {
        table: name.clone(),
        columns: columns
            .iter()
            .map(|i| i.value.to_ascii_lowercase())
            .collect(),
        csv: false,
        delimiter: b'\t',
        quote: b'"',
        header: false,
    };
    let mut delimiter = None;
    for o in options {
        match o {
            CopyOption::Format(f) if f.value.eq_ignore_ascii_case("csv") => c.csv = true,
            CopyOption::Format(f) if f.value.eq_ignore_ascii_case("text") => c.csv = false,
            CopyOption::Delimiter(d) => delimiter = Some(*d as u8),
            CopyOption::Header(h) => c.header = *h,
            CopyOption::Quote(q) => c.quote = *q as u8,
            CopyOption::Null(_) | CopyOption::Encoding(_) | CopyOption::Freeze(_) => {}
            // binary, custom escapes...: not split (the whole COPY is refused as keyless)
            _ => return None,
        }
    }
    for o in legacy_options {
        match o {
            CopyLegacyOption::Csv(_) => c.csv = true,
            CopyLegacyOption::Delimiter(d) => delimiter = Some(*d as u8),
            _ => return None,
        }
    }
    c.delimiter = delimiter.unwrap_or(if c.csv { b',' } else { b'\t' });
    Some(c)
}

/// Cuts complete rows off a COPY data stream and reads one field of each.
pub struct RowSplitter {
    csv: bool,
    delimiter: u8,
    quote: u8,
    pending: Vec<u8>,
}

impl RowSplitter {
    pub fn new(c: &CopyIn) -> RowSplitter {
        RowSplitter {
            csv: c.csv,
            delimiter: c.delimiter,
            quote: c.quote,
            pending: Vec::new(),
        }
    }

    /// Feeds bytes; returns the complete rows (each with its newline).
    pub fn feed(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        self.pending.extend_from_slice(data);
        let mut rows = Vec::new();
        let mut start = 0;
        let mut quoted = false;
        for (i, &b) in self.pending.iter().enumerate() {
            if self.csv && b == self.quote {
                quoted = !quoted; // a doubled quote toggles twice
            } else if b == b'\n' && !quoted {
                rows.push(self.pending[start..=i].to_vec());
                start = i + 1;
            }
        }
        self.pending.drain(..start);
        rows
    }

    /// Whatever is left (a last row without a newline).
    pub fn rest(&mut self) -> Option<Vec<u8>> {
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }

    /// The text of field `index` of a row; None for NULL or a missing field.
    pub fn field(&self, row: &[u8], index: usize) -> Option<String> {
        let row = row.strip_suffix(b"\n").unwrap_or(row);
        let row = row.strip_suffix(b"\r").unwrap_or(row);
        if self.csv {
            let mut fields = Vec::new();
            let (mut cur, mut quoted, mut was_quoted) = (Vec::new(), false, false);
            let mut i = 0;
            while i < row.len() {
                let b = row[i];
                if quoted {
                    if b == self.quote && row.get(i + 1) == Some(&self.quote) {
                        cur.push(b);
                        i += 1;
                    } else if b == self.quote {
                        quoted = false;
                    } else {
                        cur.push(b);
                    }
                } else if b == self.quote {
                    quoted = true;
                    was_quoted = true;
                } else if b == self.delimiter {
                    fields.push((std::mem::take(&mut cur), was_quoted));
                    was_quoted = false;
                } else {
                    cur.push(b);
                }
                i += 1;
            }
            fields.push((cur, was_quoted));
            let (value, was_quoted) = fields.into_iter().nth(index)?;
            // An unquoted empty field is NULL in CSV.
            if value.is_empty() && !was_quoted {
                return None;
            }
            String::from_utf8(value).ok()
        } else {
            let raw = row.split(|b| *b == self.delimiter).nth(index)?;
            if raw == b"\\N" {
                return None;
            }
            Some(unescape_text(raw))
        }
    }
}

/// Undoes COPY text-format backslash escapes.
fn unescape_text(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && i + 1 < raw.len() {
            i += 1;
            out.push(match raw[i] {
                b'n' => b'\n',
                b't' => b'\t',
                b'r' => b'\r',
                b'b' => 8,
                b'f' => 12,
                b'v' => 11,
                other => other,
            });
        } else {
            out.push(raw[i]);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str, table: &str) -> Option<CopyIn> {
        let statements =
            sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql)
                .ok()?;
        super::parse(&statements, table)
    }

    #[test]
    fn recognises_copy_in() {
        let c = parse(
            "COPY users (id, name) FROM STDIN WITH (FORMAT csv, HEADER true)",
            "users",
        )
        .unwrap();
        assert!(c.csv && c.header && c.delimiter == b',');
        assert_eq!(c.columns, vec!["id", "name"]);
        let t = parse("copy public.users from stdin", "users").unwrap();
        assert!(!t.csv && t.delimiter == b'\t' && t.columns.is_empty());
        assert!(parse("copy users to stdout", "users").is_none());
        assert!(parse("copy other from stdin", "users").is_none());
        assert!(parse("copy users from stdin (format binary)", "users").is_none());
    }

    #[test]
    fn splits_rows_across_chunks() {
        let c = parse("copy t from stdin (format csv)", "t").unwrap();
        let mut s = RowSplitter::new(&c);
        let mut rows = s.feed(b"1,\"a\nb\"\n2,x");
        assert_eq!(rows.len(), 1);
        rows.extend(s.feed(b"y\n"));
        assert_eq!(rows.len(), 2);
        assert_eq!(s.field(&rows[0], 1).as_deref(), Some("a\nb"));
        assert_eq!(s.field(&rows[1], 0).as_deref(), Some("2"));
        assert_eq!(s.field(b"3,,\"\"\n", 1), None);
        assert_eq!(s.field(b"3,,\"\"\n", 2).as_deref(), Some(""));
        let t = parse("copy t from stdin", "t").unwrap();
        let s = RowSplitter::new(&t);
        assert_eq!(s.field(b"7\ta\\tb\t\\N\n", 1).as_deref(), Some("a\tb"));
        assert_eq!(s.field(b"7\ta\\tb\t\\N\n", 2), None);
    }
}
