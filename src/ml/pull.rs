//! Reading a relation's rows for training: the relation is resolved the way
//! the database resolves names (search_path, quoting), every column is cast
//! server-side to float8, float8[] or text, and the rows arrive by binary
//! COPY straight into columnar buffers.

use super::db::Db;
use super::error::{MlError, MlResult};
use super::frame::{Column, ColumnData, Frame};
use crate::backend::server::quote_ident;

/// How a column is pulled; decided from the column's type category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pull {
    Float,
    Bool,
    Text,
    FloatArray,
    BoolArray,
}

#[derive(Debug, Clone)]
pub struct SourceColumn {
    pub name: String,
    pub pg_type: String,
    /// None for types pgml.train cannot use; an error only if asked for.
    pull: Option<Pull>,
}

/// A relation ready to be read: its name as the database prints it (quoted
/// where needed, so safe to put in SQL) and the columns to read.
#[derive(Debug, Clone)]
pub struct Source {
    pub relation: String,
    pub columns: Vec<SourceColumn>,
}

/// Resolves `relation` (schema-qualified or through the search_path) and
/// its columns. The name travels as a parameter: never spliced into SQL.
pub async fn describe(db: &mut Db, relation: &str) -> MlResult<Source> {
    let row = db
        .query_one("SELECT to_regclass($1)::text", &[Some(relation)])
        .await?;
    let Some(Some(resolved)) = row.into_iter().next() else {
        return Err(MlError::UndefinedTable(format!(
            "relation \"{relation}\" does not exist"
        )));
    };
    let rows = db
        .query(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typcategory::text, \
                    coalesce(e.typcategory::text, '') \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A' \
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[Some(relation)],
        )
        .await?;
    let mut columns = Vec::new();
    for row in rows {
        let [Some(name), Some(pg_type), Some(cat), Some(elem)] =
            <[Option<String>; 4]>::try_from(row)
                .map_err(|_| MlError::Internal("bad pg_attribute row".into()))?
        else {
            continue;
        };
        let pull = match (cat.as_str(), elem.as_str()) {
            ("N", _) => Some(Pull::Float),
            ("B", _) => Some(Pull::Bool),
            ("S", _) => Some(Pull::Text),
            ("A", "N") => Some(Pull::FloatArray),
            ("A", "B") => Some(Pull::BoolArray),
            _ => None,
        };
        columns.push((name, pg_type, pull));
    }
    Ok(Source {
        relation: resolved,
        columns: columns
            .into_iter()
            .map(|(name, pg_type, pull)| SourceColumn {
                name,
                pg_type,
                pull,
            })
            .collect(),
    })
}

/// Streaming decoder of PostgreSQL's binary COPY format into columns.
pub struct BinaryCopy {
    pulls: Vec<Pull>,
    columns: Vec<ColumnData>,
    pending: Vec<u8>,
    header_done: bool,
    finished: bool,
    rows: usize,
    bytes: usize,
    max_bytes: usize,
}

impl BinaryCopy {
    fn new(pulls: Vec<Pull>, max_bytes: usize) -> BinaryCopy {
        let columns = pulls
            .iter()
            .map(|p| match p {
                Pull::Float | Pull::Bool => ColumnData::Float(Vec::new()),
                Pull::Text => ColumnData::Text(Vec::new()),
                Pull::FloatArray | Pull::BoolArray => ColumnData::Array {
                    width: 0,
                    values: Vec::new(),
                },
            })
            .collect();
        BinaryCopy {
            pulls,
            columns,
            pending: Vec::new(),
            header_done: false,
            finished: false,
            rows: 0,
            bytes: 0,
            max_bytes,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) -> MlResult<()> {
        self.bytes += chunk.len();
        if self.bytes > self.max_bytes {
            return Err(MlError::OutOfMemory(format!(
                "the training data exceeds the memory cap of {} MB ([ml] max_memory_mb)",
                self.max_bytes >> 20
            )));
        }
        self.pending.extend_from_slice(chunk);
        let mut pos = 0;
        if !self.header_done {
            const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
            if self.pending.len() < 19 {
                return Ok(());
            }
            if &self.pending[..11] != SIGNATURE {
                return Err(MlError::Internal("bad binary COPY header".into()));
            }
            let ext = be_i32(&self.pending[15..19]) as usize;
            if self.pending.len() < 19 + ext {
                return Ok(());
            }
            pos = 19 + ext;
            self.header_done = true;
        }
        let pending = std::mem::take(&mut self.pending);
        let result = loop {
            match self.tuple(&pending[pos..]) {
                Ok(Some(used)) => pos += used,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.pending = pending;
        self.pending.drain(..pos);
        result
    }

    /// Decodes one tuple if it is complete; Some(bytes used).
    fn tuple(&mut self, buf: &[u8]) -> MlResult<Option<usize>> {
        if buf.len() < 2 || self.finished {
            return Ok(None);
        }
        let count = i16::from_be_bytes([buf[0], buf[1]]);
        if count == -1 {
            self.finished = true;
            return Ok(Some(2));
        }
        if count as usize != self.pulls.len() {
            return Err(MlError::Internal("binary COPY field count mismatch".into()));
        }
        // First check the whole tuple is here, then decode.
        let mut pos = 2;
        let mut fields = Vec::with_capacity(self.pulls.len());
        for _ in 0..self.pulls.len() {
            if buf.len() < pos + 4 {
                return Ok(None);
            }
            let len = be_i32(&buf[pos..pos + 4]);
            pos += 4;
            if len < 0 {
                fields.push(None);
                continue;
            }
            let end = pos + len as usize;
            if buf.len() < end {
                return Ok(None);
            }
            fields.push(Some(pos..end));
            pos = end;
        }
        for ((column, pull), field) in self.columns.iter_mut().zip(&self.pulls).zip(fields) {
            let value = field.map(|r| &buf[r]);
            push_value(column, *pull, value)?;
        }
        self.rows += 1;
        Ok(Some(pos))
    }
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_f64(b: &[u8]) -> MlResult<f64> {
    let bytes: [u8; 8] = b
        .try_into()
        .map_err(|_| MlError::Internal("bad float8 in COPY".into()))?;
    Ok(f64::from_be_bytes(bytes))
}

fn push_value(column: &mut ColumnData, pull: Pull, value: Option<&[u8]>) -> MlResult<()> {
    match (column, pull) {
        (ColumnData::Float(v), Pull::Float | Pull::Bool) => {
            v.push(value.map(be_f64).transpose()?);
        }
        (ColumnData::Text(v), Pull::Text) => {
            v.push(value.map(|b| String::from_utf8_lossy(b).into_owned()));
        }
        (ColumnData::Array { width, values }, Pull::FloatArray | Pull::BoolArray) => {
            let parsed = value.map(parse_float8_array).transpose()?;
            if let Some(items) = &parsed {
                if values.iter().all(|v| v.is_none()) {
                    *width = items.len();
                } else if items.len() != *width {
                    return Err(MlError::data(format!(
                        "arrays of different lengths ({} and {}) in one feature column",
                        width,
                        items.len()
                    )));
                }
                if items.iter().any(|x| x.is_nan()) {
                    // NULL elements arrive as NaN; PostgresML refuses them too.
                    return Err(MlError::data(
                        "an array feature has a NULL element; impute it in a view",
                    ));
                }
            }
            values.push(parsed);
        }
        _ => return Err(MlError::Internal("column kind mismatch".into())),
    }
    Ok(())
}

/// A float8[] in binary form, flattened; NULL elements become NaN.
fn parse_float8_array(b: &[u8]) -> MlResult<Vec<f64>> {
    let bad = || MlError::Internal("bad float8[] in COPY".into());
    if b.len() < 12 {
        return Err(bad());
    }
    let ndim = be_i32(&b[0..4]).max(0) as usize;
    if ndim == 0 {
        return Ok(Vec::new());
    }
    // Multi-dimensional arrays (digits' 8x8 images) are flattened in row-major order.
    let mut len = 1usize;
    for d in 0..ndim {
        let at = 12 + 8 * d;
        len = len.saturating_mul(be_i32(b.get(at..at + 4).ok_or_else(bad)?).max(0) as usize);
    }
    let mut pos = 12 + 8 * ndim;
    let mut out = Vec::with_capacity(len.min(b.len() / 4));
    for _ in 0..len {
        let l = be_i32(b.get(pos..pos + 4).ok_or_else(bad)?);
        pos += 4;
        if l < 0 {
            out.push(f64::NAN);
            continue;
        }
        out.push(be_f64(b.get(pos..pos + 8).ok_or_else(bad)?)?);
        pos += 8;
    }
    Ok(out)
}

/// The SELECT list expression that casts a column to what we decode.
fn cast(column: &SourceColumn) -> String {
    let q = quote_ident(&column.name);
    match column.pull.unwrap_or(Pull::Text) {
        Pull::Float => format!("{q}::float8"),
        Pull::Bool => format!("{q}::int::float8"),
        Pull::Text => format!("{q}::text"),
        Pull::FloatArray => format!("{q}::float8[]"),
        Pull::BoolArray => format!("{q}::int[]::float8[]"),
    }
}

impl Source {
    /// The named columns, in that order: 42703 for one that is missing,
    /// 42804 naming the column and its type for one that cannot be used.
    pub fn select(&self, names: &[String]) -> MlResult<Vec<SourceColumn>> {
        names
            .iter()
            .map(|n| {
                let column = self.columns.iter().find(|c| &c.name == n).ok_or_else(|| {
                    MlError::UndefinedColumn(format!(
                        "column \"{n}\" does not exist in relation {}",
                        self.relation
                    ))
                })?;
                if column.pull.is_none() {
                    return Err(MlError::DatatypeMismatch(format!(
                        "column \"{n}\" of relation {} has type {}, which pgml.train cannot use \
                         (usable: integers, floats, numeric, bool, text/varchar/char and numeric \
                         arrays); leave it out with a view",
                        self.relation, column.pg_type
                    )));
                }
                Ok(column.clone())
            })
            .collect()
    }

    /// Every column's name, in table order.
    pub fn names(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.name.clone()).collect()
    }

    /// Reads `columns` of the relation from one server into a frame.
    pub async fn read(
        &self,
        db: &mut Db,
        columns: &[SourceColumn],
        max_bytes: usize,
    ) -> MlResult<Frame> {
        let list: Vec<String> = columns.iter().map(cast).collect();
        let sql = format!(
            "COPY (SELECT {} FROM {}) TO STDOUT (FORMAT binary)",
            list.join(", "),
            self.relation
        );
        let pulls = columns
            .iter()
            .map(|c| {
                c.pull
                    .ok_or_else(|| MlError::Internal("unusable column".into()))
            })
            .collect::<MlResult<Vec<_>>>()?;
        let mut decoder = BinaryCopy::new(pulls, max_bytes);
        db.copy_out(&sql, |chunk| decoder.feed(chunk)).await?;
        if !decoder.finished {
            return Err(MlError::Internal("binary COPY ended early".into()));
        }
        Ok(Frame {
            rows: decoder.rows,
            columns: columns
                .iter()
                .zip(decoder.columns)
                .map(|(c, data)| Column {
                    name: c.name.clone(),
                    pg_type: c.pg_type.clone(),
                    data,
                })
                .collect(),
        })
    }
}

/// Concatenates frames read from several shards (same columns, same order).
pub fn concat(mut frames: Vec<Frame>) -> MlResult<Frame> {
    let Some(mut first) = (!frames.is_empty()).then(|| frames.remove(0)) else {
        return Ok(Frame::default());
    };
    for frame in frames {
        first.rows += frame.rows;
        for (into, from) in first.columns.iter_mut().zip(frame.columns) {
            match (&mut into.data, from.data) {
                (ColumnData::Float(a), ColumnData::Float(b)) => a.extend(b),
                (ColumnData::Text(a), ColumnData::Text(b)) => a.extend(b),
                (
                    ColumnData::Array { width, values },
                    ColumnData::Array {
                        width: w2,
                        values: v2,
                    },
                ) => {
                    if *width != w2 && !v2.is_empty() && !values.is_empty() {
                        return Err(MlError::data(format!(
                            "column \"{}\" has arrays of length {width} on one shard and {w2} on another",
                            into.name
                        )));
                    }
                    if values.is_empty() {
                        *width = w2;
                    }
                    values.extend(v2);
                }
                _ => {
                    return Err(MlError::Internal(
                        "shards returned different columns".into(),
                    ))
                }
            }
        }
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_bytes(rows: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
        let mut b = b"PGCOPY\n\xff\r\n\0".to_vec();
        b.extend(0i32.to_be_bytes());
        b.extend(0i32.to_be_bytes());
        for row in rows {
            b.extend((row.len() as i16).to_be_bytes());
            for f in row {
                match f {
                    None => b.extend((-1i32).to_be_bytes()),
                    Some(v) => {
                        b.extend((v.len() as i32).to_be_bytes());
                        b.extend(v);
                    }
                }
            }
        }
        b.extend((-1i16).to_be_bytes());
        b
    }

    #[test]
    fn decodes_binary_copy_split_anywhere() {
        let rows = vec![
            vec![Some(1.5f64.to_be_bytes().to_vec()), Some(b"a".to_vec())],
            vec![None, None],
            vec![Some((-2f64).to_be_bytes().to_vec()), Some(b"bc".to_vec())],
        ];
        let data = copy_bytes(&rows);
        for split in 1..data.len() {
            let mut d = BinaryCopy::new(vec![Pull::Float, Pull::Text], 1 << 20);
            d.feed(&data[..split]).unwrap();
            d.feed(&data[split..]).unwrap();
            assert!(d.finished);
            assert_eq!(d.rows, 3);
            assert_eq!(
                d.columns[0],
                ColumnData::Float(vec![Some(1.5), None, Some(-2.0)])
            );
            assert_eq!(
                d.columns[1],
                ColumnData::Text(vec![Some("a".into()), None, Some("bc".into())])
            );
        }
    }

    #[test]
    fn memory_cap_is_enforced() {
        let rows = vec![vec![Some(1.5f64.to_be_bytes().to_vec())]; 100];
        let mut d = BinaryCopy::new(vec![Pull::Float], 64);
        let err = d.feed(&copy_bytes(&rows)).unwrap_err();
        assert_eq!(err.sqlstate(), "53200");
    }
}
