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
