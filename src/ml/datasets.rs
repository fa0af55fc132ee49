//! PostgresML's toy datasets, shipped inside the binary: scikit-learn's
//! BSD-licensed data files (data/sklearn/COPYING), loaded into `pgml.<name>`
//! with the column names and types PostgresML uses.

use super::db::Db;
use super::error::{MlError, MlResult};

pub const NAMES: &[&str] = &[
    "iris",
    "diabetes",
    "breast_cancer",
    "wine",
    "digits",
    "linnerud",
];

const IRIS: &str = include_str!("../../data/sklearn/iris.csv");
const DIABETES_X: &str = include_str!("../../data/sklearn/diabetes_data_raw.csv");
const DIABETES_Y: &str = include_str!("../../data/sklearn/diabetes_target.csv");
const BREAST_CANCER: &str = include_str!("../../data/sklearn/breast_cancer.csv");
const WINE: &str = include_str!("../../data/sklearn/wine_data.csv");
const DIGITS: &str = include_str!("../../data/sklearn/digits.csv");
const LINNERUD_X: &str = include_str!("../../data/sklearn/linnerud_exercise.csv");
const LINNERUD_Y: &str = include_str!("../../data/sklearn/linnerud_physiological.csv");

const BREAST_CANCER_FEATURES: [&str; 30] = [
    "mean radius",
    "mean texture",
    "mean perimeter",
    "mean area",
    "mean smoothness",
    "mean compactness",
    "mean concavity",
    "mean concave points",
    "mean symmetry",
    "mean fractal dimension",
    "radius error",
    "texture error",
    "perimeter error",
    "area error",
    "smoothness error",
    "compactness error",
    "concavity error",
    "concave points error",
    "symmetry error",
    "fractal dimension error",
    "worst radius",
    "worst texture",
    "worst perimeter",
    "worst area",
    "worst smoothness",
    "worst compactness",
    "worst concavity",
    "worst concave points",
    "worst symmetry",
    "worst fractal dimension",
];

const WINE_FEATURES: [&str; 13] = [
    "alcohol",
    "malic_acid",
    "ash",
    "alcalinity_of_ash",
    "magnesium",
    "total_phenols",
    "flavanoids",
    "nonflavanoid_phenols",
    "proanthocyanins",
    "color_intensity",
    "hue",
    "od280/od315_of_diluted_wines",
    "proline",
];

/// A dataset ready to load: its table definition and its rows in COPY text.
#[derive(Debug)]
pub struct Dataset {
    pub table: String,
    pub columns_sql: String,
    pub copy_text: String,
    pub rows: usize,
}

fn quoted(names: &[&str], ty: &str) -> Vec<String> {
    names
        .iter()
        .map(|n| format!("{} {ty}", crate::backend::server::quote_ident(n)))
        .collect()
}

/// Lines of a file split on commas or whitespace, header lines skipped.
fn records(text: &str, skip: usize) -> Vec<Vec<&str>> {
    text.lines()
        .skip(skip)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split(|c: char| c == ',' || c.is_whitespace())
                .filter(|f| !f.is_empty())
                .collect()
        })
        .collect()
}

pub fn dataset(name: &str) -> MlResult<Dataset> {
    let name = name.trim().to_lowercase();
    let (columns, lines): (Vec<String>, Vec<String>) = match name.as_str() {
        "iris" => {
            let mut c = quoted(
                &["sepal_length", "sepal_width", "petal_length", "petal_width"],
                "REAL",
            );
            c.push("target INTEGER".into());
            (c, records(IRIS, 1).iter().map(|r| r.join("\t")).collect())
        }
        "diabetes" => {
            let mut c = quoted(
                &[
                    "age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6",
                ],
                "REAL",
            );
            c.push("target REAL".into());
            (c, diabetes_scaled()?)
        }
        "breast_cancer" => {
            let mut c = quoted(&BREAST_CANCER_FEATURES, "REAL");
            c.push("malignant BOOLEAN".into());
            let lines = records(BREAST_CANCER, 1)
                .iter()
                .filter_map(|r| {
                    let (target, features) = r.split_last()?;
                    // scikit-learn's target 0 is malignant.
                    let malignant = if *target == "0" { "t" } else { "f" };
                    Some(format!("{}\t{malignant}", features.join("\t")))
                })
                .collect();
            (c, lines)
        }
        "wine" => {
            let mut c = quoted(&WINE_FEATURES, "REAL");
            c.push("target INTEGER".into());
            (c, records(WINE, 1).iter().map(|r| r.join("\t")).collect())
        }
        "digits" => {
            let lines = records(DIGITS, 0)
                .iter()
                .filter_map(|r| {
                    let (target, pixels) = r.split_last()?;
                    let rows: Vec<String> = pixels
                        .chunks(8)
                        .map(|row| format!("{{{}}}", row.join(",")))
                        .collect();
                    Some(format!("{{{}}}\t{target}", rows.join(",")))
                })
                .collect();
            (
                vec!["image SMALLINT[][]".into(), "target INTEGER".into()],
                lines,
            )
        }
        "linnerud" => {
            let x = records(LINNERUD_X, 1);
            let y = records(LINNERUD_Y, 1);
            let lines = x
                .iter()
                .zip(&y)
                .map(|(a, b)| format!("{}\t{}", a.join("\t"), b.join("\t")))
                .collect();
            (
                quoted(
                    &["chins", "situps", "jumps", "weight", "waist", "pulse"],
                    "REAL",
                ),
                lines,
            )
        }
        other => {
            return Err(MlError::invalid(format!(
                "unknown dataset \"{other}\"; available: {}",
                NAMES.join(", ")
            )))
        }
    };
    let rows = lines.len();
    let mut copy_text = lines.join("\n");
    copy_text.push('\n');
    Ok(Dataset {
        table: format!("pgml.{name}"),
        columns_sql: columns.join(", "),
        copy_text,
        rows,
    })
}

/// scikit-learn's `load_diabetes()` (scaled=True, PostgresML's default):
/// each feature mean-centred and divided by its population standard
/// deviation times sqrt(n_samples).
fn diabetes_scaled() -> MlResult<Vec<String>> {
    let x: Vec<Vec<f64>> = records(DIABETES_X, 0)
        .iter()
        .map(|r| r.iter().map(|v| v.parse::<f64>()).collect())
        .collect::<Result<_, _>>()
        .map_err(|_| MlError::Internal("bad diabetes data".into()))?;
    let y = records(DIABETES_Y, 0);
    let n = x.len() as f64;
    let width = x.first().map_or(0, |r| r.len());
    let mut scaled = x.clone();
    for j in 0..width {
        let mean = x.iter().map(|r| r[j]).sum::<f64>() / n;
        let std = (x.iter().map(|r| (r[j] - mean).powi(2)).sum::<f64>() / n).sqrt();
        for (i, row) in x.iter().enumerate() {
            scaled[i][j] = (row[j] - mean) / (std * n.sqrt());
        }
    }
    Ok(scaled
        .iter()
        .zip(&y)
        .map(|(r, t)| {
            let target: f64 = t.first().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
            let fields: Vec<String> = r.iter().map(|v| format!("{v}")).collect();
            format!("{}\t{target}", fields.join("\t"))
        })
        .collect())
}

/// Creates (or re-creates) `pgml.<name>` and fills it, in one transaction.
pub async fn load(db: &mut Db, name: &str) -> MlResult<(String, usize)> {
    let data = dataset(name)?;
    db.in_transaction(async |db: &mut Db| {
        db.execute(&format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ({cols})",
            table = data.table,
            cols = data.columns_sql
        ))
        .await?;
        db.copy_in(
            &format!("COPY {} FROM STDIN", data.table),
            data.copy_text.as_bytes(),
        )
        .await
    })
    .await?;
    Ok((data.table, data.rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dataset_has_the_documented_shape() {
        for (name, rows, columns) in [
            ("iris", 150, 5),
            ("diabetes", 442, 11),
            ("breast_cancer", 569, 31),
            ("wine", 178, 14),
            ("digits", 1797, 2),
            ("linnerud", 20, 6),
        ] {
            let d = dataset(name).unwrap();
            assert_eq!(d.rows, rows, "{name}");
            assert_eq!(d.columns_sql.split(", ").count(), columns, "{name}");
            for line in d.copy_text.lines() {
                assert_eq!(line.split('\t').count(), columns, "{name}: {line}");
            }
        }
        assert_eq!(dataset("nope").unwrap_err().sqlstate(), "22023");
    }

    #[test]
    fn diabetes_is_scaled_like_scikit_learn() {
        let d = dataset("diabetes").unwrap();
        let first: Vec<f64> = d
            .copy_text
            .lines()
            .next()
            .unwrap()
            .split('\t')
            .map(|v| v.parse().unwrap())
            .collect();
        // sklearn.datasets.load_diabetes().data[0][0] and target[0]
        assert!((first[0] - 0.038075906433423026).abs() < 1e-12);
        assert_eq!(first[10], 151.0);
    }
}
