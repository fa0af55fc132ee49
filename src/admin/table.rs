//! A result set written as RowDescription, DataRows and CommandComplete.

use bytes::BytesMut;

use crate::net::messages;

pub const TEXT: u32 = 25;
pub const INT8: u32 = 20;

pub struct Table {
    columns: Vec<(&'static str, u32)>,
    rows: Vec<Vec<Option<String>>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, u32)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Columns declared INT8 take numbers, the rest text.
    pub fn row(&mut self, values: Vec<Option<String>>) {
        debug_assert_eq!(values.len(), self.columns.len());
        self.rows.push(values);
    }

    pub fn column_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.columns.iter().map(|(name, _)| *name)
    }

    pub fn rows(&self) -> &[Vec<Option<String>>] {
        &self.rows
    }

    pub fn write(&self, out: &mut BytesMut, tag: &str) {
        messages::row_description(out, &self.columns);
        for row in &self.rows {
            let values: Vec<Option<&str>> = row.iter().map(|v| v.as_deref()).collect();
            messages::data_row(out, &values);
        }
        messages::command_complete(out, tag);
    }
}

/// Shorthands for building rows.
pub fn s(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

pub fn null() -> Option<String> {
    None
}
