//! PostgresML's `preprocess` option: text encoding, NULL imputation and
//! scaling, fitted on the training rows and stored with the snapshot so
//! prediction-time rows get exactly the same treatment.
//!
//! Choices where PostgresML is silent or inconsistent:
//! - Text (and numbers given an `encode` other than native, which are then
//!   categories named by their decimal text): NULL is a category of its own
//!   under the default `impute: error` — code 0 for native and ordinal (whose
//!   categories are 1, 2, ...), the all-zero vector for one_hot, the mean
//!   label of the NULL rows (or of all rows) for target. `impute: mode`
//!   replaces NULL by the most frequent category; other imputes need numbers.
//! - A category unseen in training is treated as NULL at prediction.
//! - Numbers and array elements: NaN counts as NULL; with `impute: error`
//!   any NULL is a data error naming the column.
//! - Scaling is fitted on the imputed training values; one_hot indicators
//!   are never scaled.

mod column;
pub mod spec;
pub mod stats;

use std::collections::BTreeMap;

use ndarray::Array2;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use self::column::{cell_of, Cell, FittedColumn};
use super::error::{MlError, MlResult};
use super::frame::{Column, Frame, RawValue};

pub use self::spec::{parse_specs, ColumnSpec, Encode, Impute, Scale};
pub use self::stats::column_statistics;

/// The fitted preprocessing of every feature column, in feature order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocessor {
    columns: Vec<FittedColumn>,
}

impl Preprocessor {
    /// Fits on `train_rows` of the columns `features` (indexes into
    /// `frame.columns`), with `label` (aligned with the frame's rows) for
    /// target encoding. Columns without a spec take the defaults.
    pub fn fit(
        frame: &Frame,
        features: &[usize],
        specs: &BTreeMap<String, ColumnSpec>,
        label: Option<&[f64]>,
        train_rows: &[usize],
    ) -> MlResult<Preprocessor> {
        let default = ColumnSpec::default();
        let mut columns = Vec::with_capacity(features.len());
        for &index in features {
            let col = frame.columns.get(index).ok_or_else(|| {
                MlError::Internal(format!("feature column {index} of {}", frame.columns.len()))
            })?;
            let spec = specs.get(&col.name).unwrap_or(&default);
            columns.push(FittedColumn::fit(col, index + 1, spec, label, train_rows)?);
        }
        Ok(Preprocessor { columns })
    }

    /// Numeric columns (name, type) taken as they are, with the default
    /// treatment, which needs no statistics (one row stands in for the
    /// data): for models trained without pulling rows, and imported ones.
    pub fn numeric(columns: &[(String, String)]) -> MlResult<Preprocessor> {
        let frame = Frame {
            rows: 1,
            columns: columns
                .iter()
                .map(|(name, pg_type)| Column {
                    name: name.clone(),
                    pg_type: pg_type.clone(),
                    data: super::frame::ColumnData::Float(vec![Some(0.0)]),
                })
                .collect(),
        };
        let all: Vec<usize> = (0..columns.len()).collect();
        Preprocessor::fit(&frame, &all, &BTreeMap::new(), None, &[0])
    }

    /// Features of `rows` of `frame` (columns found by name), one row each.
    pub fn transform(&self, frame: &Frame, rows: &[usize]) -> MlResult<Array2<f64>> {
        let width = self.num_features();
        let sources: Vec<&Column> = self
            .columns
            .iter()
            .map(|c| {
                frame.column(&c.name).map(|(_, col)| col).ok_or_else(|| {
                    MlError::UndefinedColumn(format!(
                        "column \"{}\" the model was trained on is missing",
                        c.name
                    ))
                })
            })
            .collect::<MlResult<_>>()?;
        let mut data = Vec::with_capacity(rows.len() * width);
        for &r in rows {
            for (fitted, source) in self.columns.iter().zip(&sources) {
                let cell = cell_of(&source.data, r).ok_or_else(|| {
                    MlError::Internal(format!("row {r} of {} in transform", frame.rows))
                })?;
                fitted.encode(cell, &mut data)?;
            }
        }
        Array2::from_shape_vec((rows.len(), width), data)
            .map_err(|e| MlError::Internal(format!("feature matrix: {e}")))
    }

    /// Features of one row given positionally, one value per training
    /// feature column, as `pgml.predict(project, (a, b, c))` passes it.
    pub fn transform_row(&self, values: &[RawValue]) -> MlResult<Vec<f64>> {
        if values.len() != self.columns.len() {
            return Err(MlError::DatatypeMismatch(format!(
                "expected {} features, got {}: the model takes ({})",
                self.columns.len(),
                values.len(),
                self.columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let mut out = Vec::with_capacity(self.num_features());
        for (fitted, value) in self.columns.iter().zip(values) {
            let cell = match value {
                RawValue::Null => Cell::Null,
                RawValue::Number(x) => Cell::Number(*x),
                RawValue::Text(s) => Cell::Text(s),
                RawValue::Array(items) => Cell::Array(items.clone()),
            };
            fitted.encode(cell, &mut out)?;
        }
        Ok(out)
    }

    /// Whether an array of features is the feature columns' own values
    /// (each a number taken as it is), so it can be read as a row.
    pub fn passes_numbers_through(&self) -> bool {
        self.columns.iter().all(FittedColumn::is_plain_number)
    }

    pub fn num_features(&self) -> usize {
        self.columns.iter().map(FittedColumn::width).sum()
    }

    pub fn feature_names(&self) -> Vec<String> {
        self.columns
            .iter()
            .flat_map(FittedColumn::feature_names)
            .collect()
    }

    /// Names of the feature columns, in the order rows are given.
    pub fn column_names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }

    /// The snapshot's `columns` JSON for the feature columns: name, pg_type,
    /// position, nullable, label (false), preprocessor and `statistics` (one
    /// per feature column, from `column_statistics` over the training rows).
    /// Append `label_column_json` for the label(s).
    pub fn columns_json(&self, statistics: Vec<Value>) -> Value {
        Value::Array(
            self.columns
                .iter()
                .zip(statistics)
                .map(|(c, statistics)| {
                    json!({
                        "name": c.name,
                        "pg_type": c.pg_type,
                        "position": c.position,
                        "nullable": c.nullable,
                        "label": false,
                        "preprocessor": c.spec,
                        "statistics": statistics,
                    })
                })
                .collect(),
        )
    }
}

/// A label column's entry in the snapshot's `columns` JSON, in the same
/// shape as `Preprocessor::columns_json`; `position` is 1-based.
pub fn label_column_json(
    col: &Column,
    position: usize,
    rows: &[usize],
    statistics: Value,
) -> Value {
    let nullable = rows
        .iter()
        .any(|&r| r < col.data.len() && col.data.is_null(r));
    json!({
        "name": col.name,
        "pg_type": col.pg_type,
        "position": position,
        "nullable": nullable,
        "label": true,
        "preprocessor": ColumnSpec::default(),
        "statistics": statistics,
    })
}

#[cfg(test)]
mod tests;
