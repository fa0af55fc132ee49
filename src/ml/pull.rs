//! Reading a relation's rows for training: the relation is resolved the way
//! the database resolves names (search_path, quoting), and the rows arrive
//! by binary COPY straight into columnar buffers. Integers, floats and
//! booleans (and arrays of them) travel as they are stored; other numbers
//! are cast server-side to float8, strings to text.

use super::binary::{self, be_i32};
use super::db::Db;
use super::error::{MlError, MlResult};
use super::frame::{Column, ColumnData, Frame};
use crate::backend::server::quote_ident;

/// How a column is pulled; decided from its type and type category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pull {
    /// A number in the binary form of this type; `cast`: after `::float8`.
    Number {
        oid: u32,
        cast: bool,
    },
    Text,
    /// An array of numbers or booleans; `cast`: after `::float8[]`.
    Array {
        cast: bool,
    },
}

/// Types whose binary form `binary::scalar` reads without a cast.
fn native(oid: u32) -> bool {
    matches!(
        oid,
        binary::BOOL | binary::INT2 | binary::INT4 | binary::INT8 | binary::FLOAT4 | binary::FLOAT8
    )
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
                    coalesce(e.typcategory::text, ''), a.atttypid::int8::text, \
                    coalesce(e.oid::int8, 0)::text \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A' \
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[Some(relation)],
        )
        .await?;
    let mut columns = Vec::new();
    for row in rows {
        let [Some(name), Some(pg_type), Some(cat), Some(elem), Some(oid), Some(elem_oid)] =
            <[Option<String>; 6]>::try_from(row)
                .map_err(|_| MlError::Internal("bad pg_attribute row".into()))?
        else {
            continue;
        };
        let oid: u32 = oid.parse().unwrap_or(0);
        let elem_oid: u32 = elem_oid.parse().unwrap_or(0);
        let pull = match (cat.as_str(), elem.as_str()) {
            ("N" | "B", _) if native(oid) => Some(Pull::Number { oid, cast: false }),
            ("N" | "B", _) => Some(Pull::Number {
                oid: binary::FLOAT8,
                cast: true,
            }),
            ("S", _) => Some(Pull::Text),
            ("A", "N" | "B") => Some(Pull::Array {
                cast: !native(elem_oid),
            }),
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
    /// Rows handed out by `take` so far.
    taken: usize,
    bytes: usize,
    max_bytes: usize,
}

impl BinaryCopy {
    fn new(pulls: Vec<Pull>, max_bytes: usize) -> BinaryCopy {
        let columns = pulls
            .iter()
            .map(|p| match p {
                Pull::Number { .. } => ColumnData::Float(Vec::new()),
                Pull::Text => ColumnData::Text(Vec::new()),
                Pull::Array { .. } => ColumnData::Array {
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
            taken: 0,
            bytes: 0,
            max_bytes,
        }
    }

    /// A decoder of `columns` (with no memory cap: the reader bounds what
    /// it keeps).
    pub fn for_columns(columns: &[SourceColumn]) -> MlResult<BinaryCopy> {
        Ok(BinaryCopy::new(pulls(columns)?, usize::MAX))
    }

    /// Rows decoded and not taken yet.
    pub fn buffered(&self) -> usize {
        self.rows - self.taken
    }

    pub fn finished(&self) -> bool {
        self.finished
    }

    /// The rows decoded since the last take, column by column; the
    /// decoder keeps nothing of them.
    pub fn take(&mut self) -> (Vec<ColumnData>, usize) {
        let empty = self.columns.iter().map(ColumnData::empty_like).collect();
        let n = self.rows - self.taken;
        self.taken = self.rows;
        (std::mem::replace(&mut self.columns, empty), n)
    }

    pub fn feed(&mut self, chunk: &[u8]) -> MlResult<()> {
        self.bytes += chunk.len();
        if self.bytes > self.max_bytes {
            return Err(MlError::OutOfMemory(format!(
                "the training data exceeds the memory cap of {} MB ([ml] max_memory_mb)",
                self.max_bytes >> 20
            )));
        }
        // Postgres sends one tuple per CopyData: decode straight from the
        // chunk and keep only what a split tuple leaves over.
        if self.pending.is_empty() {
            let used = self.decode(chunk)?;
            self.pending.extend_from_slice(&chunk[used..]);
            return Ok(());
        }
        self.pending.extend_from_slice(chunk);
        let pending = std::mem::take(&mut self.pending);
        let result = self.decode(&pending);
        self.pending = pending;
        self.pending.drain(..*result.as_ref().unwrap_or(&0));
        result.map(|_| ())
    }

    /// Decodes the header (once) and every complete tuple; bytes used.
    fn decode(&mut self, buf: &[u8]) -> MlResult<usize> {
        let mut pos = 0;
        if !self.header_done {
            const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
            if buf.len() < 19 {
                return Ok(0);
            }
            if &buf[..11] != SIGNATURE {
                return Err(MlError::Internal("bad binary COPY header".into()));
            }
            let ext = be_i32(&buf[15..19]) as usize;
            if buf.len() < 19 + ext {
                return Ok(0);
            }
            pos = 19 + ext;
            self.header_done = true;
        }
        while let Some(used) = self.tuple(&buf[pos..])? {
            pos += used;
        }
        Ok(pos)
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
        for _ in 0..self.pulls.len() {
            if buf.len() < pos + 4 {
                return Ok(None);
            }
            let len = be_i32(&buf[pos..pos + 4]);
            pos += 4 + len.max(0) as usize;
            if buf.len() < pos {
                return Ok(None);
            }
        }
        let mut at = 2;
        for (column, pull) in self.columns.iter_mut().zip(&self.pulls) {
            let len = be_i32(&buf[at..at + 4]);
            at += 4;
            let value = (len >= 0).then(|| &buf[at..at + len as usize]);
            at += len.max(0) as usize;
            push_value(column, *pull, value)?;
        }
        self.rows += 1;
        Ok(Some(pos))
    }
}

fn push_value(column: &mut ColumnData, pull: Pull, value: Option<&[u8]>) -> MlResult<()> {
    match (column, pull) {
        (ColumnData::Float(v), Pull::Number { oid, .. }) => {
            v.push(value.map(|b| binary::scalar(oid, b)).transpose()?);
        }
        (ColumnData::Text(v), Pull::Text) => {
            v.push(value.map(|b| String::from_utf8_lossy(b).into_owned()));
        }
        (ColumnData::Array { width, values }, Pull::Array { .. }) => {
            let parsed = match value {
                None => None,
                Some(b) => {
                    let mut items = Vec::new();
                    binary::array(b, &mut items)?;
                    // PostgresML refuses NULL elements too.
                    let dense: Option<Vec<f64>> = items.into_iter().collect();
                    Some(dense.ok_or_else(|| {
                        MlError::data("an array feature has a NULL element; impute it in a view")
                    })?)
                }
            };
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
            }
            values.push(parsed);
        }
        _ => return Err(MlError::Internal("column kind mismatch".into())),
    }
    Ok(())
}

/// How each column is decoded.
fn pulls(columns: &[SourceColumn]) -> MlResult<Vec<Pull>> {
    columns
        .iter()
        .map(|c| {
            c.pull
                .ok_or_else(|| MlError::Internal("unusable column".into()))
        })
        .collect()
}

/// The SELECT list expression that casts a column to what we decode.
fn cast(column: &SourceColumn) -> String {
    let q = quote_ident(&column.name);
    match column.pull.unwrap_or(Pull::Text) {
        Pull::Number { cast: false, .. } | Pull::Array { cast: false } => q,
        Pull::Number { cast: true, .. } => format!("{q}::float8"),
        Pull::Text => format!("{q}::text"),
        Pull::Array { cast: true } => format!("{q}::float8[]"),
    }
}

impl SourceColumn {
    /// Whether the column holds one number (or bool) per row.
    pub fn is_number(&self) -> bool {
        matches!(self.pull, Some(Pull::Number { .. }))
    }

    /// The column read as its text form (as Postgres prints it): how group
    /// columns are read, so their values compare with `value::text`.
    pub fn as_text(mut self) -> SourceColumn {
        self.pull = Some(Pull::Text);
        self
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

    /// Reads `columns` of the relation from one server `chunk` rows at a
    /// time: each chunk, column by column, goes to `sink` and is dropped,
    /// so memory holds one chunk whatever the relation's size. Returns the
    /// number of rows.
    pub async fn stream(
        &self,
        db: &mut Db,
        columns: &[SourceColumn],
        chunk: usize,
        sink: impl FnMut(&[ColumnData], usize) -> MlResult<()>,
    ) -> MlResult<usize> {
        let (sql, _) = self.copy_sql(columns)?;
        self.stream_copy(db, &sql, columns, chunk, sink).await
    }

    /// `stream` of a COPY of `columns` other than the plain one (see
    /// `rows_copy_sql`, `grouped_copy_sql`).
    pub async fn stream_copy(
        &self,
        db: &mut Db,
        sql: &str,
        columns: &[SourceColumn],
        chunk: usize,
        mut sink: impl FnMut(&[ColumnData], usize) -> MlResult<()>,
    ) -> MlResult<usize> {
        let mut decoder = BinaryCopy::for_columns(columns)?;
        db.copy_out(sql, |bytes| {
            decoder.feed(bytes)?;
            if decoder.rows - decoder.taken >= chunk {
                let (columns, n) = decoder.take();
                sink(&columns, n)?;
            }
            Ok(())
        })
        .await?;
        if !decoder.finished {
            return Err(MlError::Internal("binary COPY ended early".into()));
        }
        let (columns, n) = decoder.take();
        if n > 0 {
            sink(&columns, n)?;
        }
        Ok(decoder.rows)
    }

    /// The COPY that reads `columns` with the rows of each group together:
    /// ordered by the text forms of `group` (the group key), a group's rows
    /// in the relation's order.
    pub fn grouped_copy_sql(&self, columns: &[SourceColumn], group: &[String]) -> String {
        let list: Vec<String> = columns.iter().map(cast).collect();
        let order: Vec<String> = group
            .iter()
            .map(|g| format!("({}::text) COLLATE \"C\"", quote_ident(g)))
            .collect();
        format!(
            "COPY (SELECT {} FROM (SELECT *, row_number() OVER () AS __pgml_n FROM {}) __pgml_s \
             ORDER BY {}, __pgml_n) TO STDOUT (FORMAT binary)",
            list.join(", "),
            self.relation,
            order.join(", ")
        )
    }

    /// The COPY that reads `columns` of the rows numbered `rows` (0-based,
    /// in the relation's order, ascending), in that order: the server
    /// numbers and filters, so the others never leave it.
    pub fn rows_copy_sql(&self, columns: &[SourceColumn], rows: &[usize]) -> String {
        let list: Vec<String> = columns.iter().map(cast).collect();
        let numbers: Vec<String> = rows.iter().map(usize::to_string).collect();
        format!(
            "COPY (SELECT {} FROM (SELECT *, row_number() OVER () - 1 AS __pgml_n FROM {}) __pgml_s \
             WHERE __pgml_n = ANY ('{{{}}}'::int8[])) TO STDOUT (FORMAT binary)",
            list.join(", "),
            self.relation,
            numbers.join(",")
        )
    }

    /// The COPY that reads `columns`, and how each is decoded.
    fn copy_sql(&self, columns: &[SourceColumn]) -> MlResult<(String, Vec<Pull>)> {
        let list: Vec<String> = columns.iter().map(cast).collect();
        let sql = format!(
            "COPY (SELECT {} FROM {}) TO STDOUT (FORMAT binary)",
            list.join(", "),
            self.relation
        );
        Ok((sql, pulls(columns)?))
    }

    /// Reads `columns` of the relation from one server into a frame.
    pub async fn read(
        &self,
        db: &mut Db,
        columns: &[SourceColumn],
        max_bytes: usize,
    ) -> MlResult<Frame> {
        let (sql, pulls) = self.copy_sql(columns)?;
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
            let float8 = Pull::Number {
                oid: binary::FLOAT8,
                cast: false,
            };
            let mut d = BinaryCopy::new(vec![float8, Pull::Text], 1 << 20);
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
        let rows = vec![vec![Some(1.5f32.to_be_bytes().to_vec())]; 100];
        let float4 = Pull::Number {
            oid: binary::FLOAT4,
            cast: false,
        };
        let mut d = BinaryCopy::new(vec![float4], 64);
        let err = d.feed(&copy_bytes(&rows)).unwrap_err();
        assert_eq!(err.sqlstate(), "53200");
    }
}
