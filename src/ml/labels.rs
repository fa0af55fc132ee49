//! Turning label columns into what algorithms take: class codes 0..k-1 for
//! classification (and back to the label values at prediction), plain
//! values for regression.

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use super::error::{MlError, MlResult};
use super::frame::{Column, ColumnData};
use super::task::Task;

/// The classes of a classification label, sorted, so class code i is
/// `classes[i]`. Numbers (and bools) predict as their value; text labels
/// predict as their code, since predictions are REAL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Classes {
    Numbers(Vec<f64>),
    Texts(Vec<String>),
}

impl Classes {
    pub fn len(&self) -> usize {
        match self {
            Classes::Numbers(v) => v.len(),
            Classes::Texts(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What `pgml.predict` returns for class code `code`.
    pub fn value(&self, code: usize) -> f64 {
        match self {
            Classes::Numbers(v) => v.get(code).copied().unwrap_or(f64::NAN),
            Classes::Texts(_) => code as f64,
        }
    }
}

/// The label matrix (rows × outputs) and, for classification, the classes.
pub fn encode(task: Task, columns: &[&Column]) -> MlResult<(Array2<f64>, Option<Classes>)> {
    let rows = columns.first().map_or(0, |c| c.data.len());
    if task == Task::Classification {
        let [column] = columns else {
            return Err(MlError::invalid(
                "classification takes exactly one label column",
            ));
        };
        let (codes, classes) = classify(column)?;
        let y = Array2::from_shape_vec((rows, 1), codes)
            .map_err(|e| MlError::Internal(e.to_string()))?;
        return Ok((y, Some(classes)));
    }
    let mut y = Array2::zeros((rows, columns.len()));
    for (j, column) in columns.iter().enumerate() {
        let ColumnData::Float(values) = &column.data else {
            return Err(MlError::DatatypeMismatch(format!(
                "label column \"{}\" has type {}; regression needs a numeric label",
                column.name, column.pg_type
            )));
        };
        for (i, v) in values.iter().enumerate() {
            y[[i, j]] = v.ok_or_else(|| null_label(&column.name))?;
        }
    }
    Ok((y, None))
}

fn null_label(name: &str) -> MlError {
    MlError::data(format!(
        "label column \"{name}\" has NULL values; filter them out with a view"
    ))
}

fn classify(column: &Column) -> MlResult<(Vec<f64>, Classes)> {
    match &column.data {
        ColumnData::Float(values) => {
            let mut classes: Vec<f64> = values
                .iter()
                .map(|v| v.ok_or_else(|| null_label(&column.name)))
                .collect::<MlResult<_>>()?;
            classes.sort_by(f64::total_cmp);
            classes.dedup();
            let codes = values
                .iter()
                .flatten()
                .map(|v| classes.partition_point(|c| c < v) as f64)
                .collect();
            Ok((codes, Classes::Numbers(classes)))
        }
        ColumnData::Text(values) => {
            let mut classes: Vec<String> = values
                .iter()
                .map(|v| v.clone().ok_or_else(|| null_label(&column.name)))
                .collect::<MlResult<_>>()?;
            classes.sort();
            classes.dedup();
            let codes = values
                .iter()
                .flatten()
                .map(|v| classes.partition_point(|c| c < v) as f64)
                .collect();
            Ok((codes, Classes::Texts(classes)))
        }
        ColumnData::Array { .. } => Err(MlError::DatatypeMismatch(format!(
            "label column \"{}\" is an array; classification needs one value per row",
            column.name
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_sorted_and_coded() {
        let col = Column {
            name: "y".into(),
            pg_type: "integer".into(),
            data: ColumnData::Float(vec![Some(7.0), Some(3.0), Some(7.0), Some(5.0)]),
        };
        let (y, classes) = encode(Task::Classification, &[&col]).unwrap();
        assert_eq!(y.column(0).to_vec(), vec![2.0, 0.0, 2.0, 1.0]);
        let classes = classes.unwrap();
        assert_eq!(classes.value(2), 7.0);
        let text = Column {
            name: "y".into(),
            pg_type: "text".into(),
            data: ColumnData::Text(vec![Some("b".into()), Some("a".into())]),
        };
        let (y, _) = encode(Task::Classification, &[&text]).unwrap();
        assert_eq!(y.column(0).to_vec(), vec![1.0, 0.0]);
        let null = Column {
            name: "y".into(),
            pg_type: "real".into(),
            data: ColumnData::Float(vec![Some(1.0), None]),
        };
        assert_eq!(
            encode(Task::Regression, &[&null]).unwrap_err().sqlstate(),
            "22000"
        );
    }
}
