//! Columnar training data as it comes off the database: one buffer per
//! column, NULLs kept, before any preprocessing.

/// The values of one column. Numbers of every SQL numeric type and bool
/// arrive as f64; text-like types stay text (categorical); numeric arrays
/// are one feature per element.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnData {
    Float(Vec<Option<f64>>),
    Text(Vec<Option<String>>),
    /// `width` is the element count every non-NULL array must have.
    Array {
        width: usize,
        values: Vec<Option<Vec<f64>>>,
    },
}

impl ColumnData {
    pub fn len(&self) -> usize {
        match self {
            ColumnData::Float(v) => v.len(),
            ColumnData::Text(v) => v.len(),
            ColumnData::Array { values, .. } => values.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `other`'s values `from..to` (a column of the same kind).
    pub fn extend_from(&mut self, other: &ColumnData, from: usize, to: usize) {
        match (self, other) {
            (ColumnData::Float(a), ColumnData::Float(b)) => a.extend_from_slice(&b[from..to]),
            (ColumnData::Text(a), ColumnData::Text(b)) => a.extend_from_slice(&b[from..to]),
            (
                ColumnData::Array { width, values },
                ColumnData::Array {
                    width: w,
                    values: v,
                },
            ) => {
                if values.is_empty() {
                    *width = *w;
                }
                values.extend_from_slice(&v[from..to]);
            }
            _ => {}
        }
    }

    /// Overwrites value `at` with `other`'s value `from`.
    pub fn set_from(&mut self, at: usize, other: &ColumnData, from: usize) {
        match (self, other) {
            (ColumnData::Float(a), ColumnData::Float(b)) => a[at] = b[from],
            (ColumnData::Text(a), ColumnData::Text(b)) => a[at] = b[from].clone(),
            (ColumnData::Array { values, .. }, ColumnData::Array { values: v, .. }) => {
                values[at] = v[from].clone()
            }
            _ => {}
        }
    }

    /// An empty column of the same kind.
    pub fn empty_like(&self) -> ColumnData {
        match self {
            ColumnData::Float(_) => ColumnData::Float(Vec::new()),
            ColumnData::Text(_) => ColumnData::Text(Vec::new()),
            ColumnData::Array { width, .. } => ColumnData::Array {
                width: *width,
                values: Vec::new(),
            },
        }
    }

    /// The values of `rows`, in that order.
    pub fn select(&self, rows: &[usize]) -> ColumnData {
        match self {
            ColumnData::Float(v) => ColumnData::Float(rows.iter().map(|&r| v[r]).collect()),
            ColumnData::Text(v) => ColumnData::Text(rows.iter().map(|&r| v[r].clone()).collect()),
            ColumnData::Array { width, values } => ColumnData::Array {
                width: *width,
                values: rows.iter().map(|&r| values[r].clone()).collect(),
            },
        }
    }

    pub fn is_null(&self, row: usize) -> bool {
        match self {
            ColumnData::Float(v) => v[row].is_none(),
            ColumnData::Text(v) => v[row].is_none(),
            ColumnData::Array { values, .. } => values[row].is_none(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    /// The SQL type as `format_type` prints it (`integer`, `text`, `real[]`).
    pub pg_type: String,
    pub data: ColumnData,
}

/// Every column has `rows` values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frame {
    pub columns: Vec<Column>,
    pub rows: usize,
}

impl Frame {
    /// The rows `rows` of every column, in that order.
    pub fn select(&self, rows: &[usize]) -> Frame {
        Frame {
            rows: rows.len(),
            columns: self
                .columns
                .iter()
                .map(|c| Column {
                    name: c.name.clone(),
                    pg_type: c.pg_type.clone(),
                    data: c.data.select(rows),
                })
                .collect(),
        }
    }

    pub fn column(&self, name: &str) -> Option<(usize, &Column)> {
        self.columns
            .iter()
            .enumerate()
            .find(|(_, c)| c.name == name)
    }
}

/// One raw feature value given at prediction time, as `pgml.predict(p, (a, b, c))`
/// passes a row: before preprocessing. Bool arrives as Number 0/1.
#[derive(Debug, Clone, PartialEq)]
pub enum RawValue {
    Null,
    Number(f64),
    Text(String),
    Array(Vec<Option<f64>>),
}
