//! The data the models learn and predict: diabetes-like rows with missing
//! values, their classes, the rows predictions are checked on, and the
//! tables and SQL that hold them.

use serde_json::{json, Value};

use super::{python_train, NAMES};
use crate::common::*;

/// splitmix64: deterministic data and mutations, the same on every machine.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub(super) fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(super) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Features (NaN = missing) and a label.
pub(super) struct Data {
    pub(super) x: Vec<Vec<f64>>,
    pub(super) y: Vec<f64>,
}

/// Like scikit-learn's diabetes data: eight standardized features (`sex`
/// takes two values), a target around 150 that depends on them non-linearly;
/// `s1` is missing in ~12% of the rows and `s3` in ~6% (after the target was
/// computed from them), so the trees learn default directions.
pub(super) fn diabetes_like(n: usize, seed: u64) -> Data {
    let mut rng = Rng(seed);
    let (mut x, mut y) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let age = (rng.uniform() - 0.5) * 0.2;
        let sex = if rng.uniform() < 0.5 {
            -0.044641636506989
        } else {
            0.0506801187398187
        };
        let mut f = vec![age, sex];
        for _ in 0..6 {
            f.push(rng.normal() * 0.0476);
        }
        let (bmi, bp, s1, s2, s3, s4) = (f[2], f[3], f[4], f[5], f[6], f[7]);
        let target = 152.0 + 950.0 * bmi + 420.0 * bp + 300.0 * s1 * (1.0 + 15.0 * sex)
            - 480.0 * s3
            + 3000.0 * age * bmi
            + 2000.0 * s4 * s4
            + 150.0 * s2.abs()
            + 12.0 * rng.normal();
        if rng.uniform() < 0.12 {
            f[4] = f64::NAN;
        }
        if rng.uniform() < 0.06 {
            f[6] = f64::NAN;
        }
        x.push(f);
        y.push(target);
    }
    Data { x, y }
}

/// A test's diabetes-like data: `train` to learn from, and `rows` to
/// predict, which are in table `diab` (id, then NAMES).
pub(super) struct Diab {
    pub(super) train: Data,
    pub(super) rows: Vec<Vec<f64>>,
}

impl Diab {
    /// `n` training rows from `seed`, and the prediction rows (the first
    /// `n_train` training rows among them) written to table diab through
    /// `proxy`.
    pub(super) fn create(proxy: &Proxy, n: usize, seed: u64, n_train: usize) -> Diab {
        let train = diabetes_like(n, seed);
        let rows = prediction_rows(&train, n_train);
        create_table(proxy, "diab", &NAMES, &rows);
        Diab { train, rows }
    }

    /// `model` trained by Python on the training rows labelled `y` (the
    /// target or classes of it), predicting the prediction rows: see
    /// [`python_train`].
    pub(super) fn fit(
        &self,
        y: &[f64],
        model: Value,
        rounds: usize,
        names: Option<&[&str]>,
    ) -> Value {
        python_train(&self.train.x, y, model, rounds, names, &self.rows)
    }
}

/// 1 above the median-ish 152, else 0.
pub(super) fn two_classes(y: &[f64]) -> Vec<f64> {
    y.iter()
        .map(|&v| if v > 152.0 { 1.0 } else { 0.0 })
        .collect()
}

/// 0, 1, 2 by thirds of the target's range.
pub(super) fn three_classes(y: &[f64]) -> Vec<f64> {
    y.iter()
        .map(|&v| {
            if v < 125.0 {
                0.0
            } else if v < 180.0 {
                1.0
            } else {
                2.0
            }
        })
        .collect()
}

/// The rows predictions are checked on: `n_train` training rows (an
/// XGBoost split condition is one of them, as float32), 25 new ones, and
/// edge cases: every feature missing, zeros, huge values, values below
/// LightGBM's zero threshold, missing values where training had none.
pub(super) fn prediction_rows(train: &Data, n_train: usize) -> Vec<Vec<f64>> {
    let nan = f64::NAN;
    let mut rows: Vec<Vec<f64>> = train.x[..n_train].to_vec();
    rows.extend(diabetes_like(25, 99).x);
    rows.push(vec![nan; 8]);
    rows.push(vec![0.0; 8]);
    rows.push(vec![1e30; 8]);
    rows.push(vec![-1e30; 8]);
    rows.push(vec![1e-40; 8]);
    let mut r = train.x[0].clone();
    r[2] = nan;
    r[4] = nan;
    r[6] = nan;
    rows.push(r);
    let mut r = train.x[1].clone();
    r[4] = nan;
    rows.push(r);
    rows
}

/// Rows as JSON: NaN (which JSON lacks) as null.
pub(super) fn rows_json(rows: &[Vec<f64>]) -> Value {
    Value::Array(
        rows.iter()
            .map(|r| {
                Value::Array(
                    r.iter()
                        .map(|v| if v.is_nan() { Value::Null } else { json!(v) })
                        .collect(),
                )
            })
            .collect(),
    )
}

/// A float8 constant holding exactly `v` (Rust's shortest round-trip text).
fn lit(v: f64) -> String {
    if v.is_nan() {
        "'NaN'::float8".to_string()
    } else {
        format!("'{v:?}'::float8")
    }
}

pub(super) fn array_of(row: &[f64]) -> String {
    let items: Vec<String> = row.iter().map(|v| lit(*v)).collect();
    format!("ARRAY[{}]", items.join(", "))
}

/// Table `name` (id int, <columns> float8): row i has id i + 1.
pub(super) fn create_table(proxy: &Proxy, name: &str, columns: &[&str], rows: &[Vec<f64>]) {
    let cols: Vec<String> = columns.iter().map(|c| format!("{c} float8")).collect();
    let values: Vec<String> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let v: Vec<String> = r.iter().map(|v| lit(*v)).collect();
            format!("({}, {})", i + 1, v.join(", "))
        })
        .collect();
    ok_script(
        proxy,
        &format!(
            "CREATE TABLE {name} (id int PRIMARY KEY, {});\nINSERT INTO {name} VALUES\n{};\n",
            cols.join(", "),
            values.join(",\n")
        ),
    );
}

/// `ARRAY[c1, c2, ...]` and `(c1, c2, ...)` of the columns.
pub(super) fn array_input(columns: &[&str]) -> String {
    format!("ARRAY[{}]", columns.join(", "))
}

pub(super) fn row_input(columns: &[&str]) -> String {
    format!("({})", columns.join(", "))
}

/// `SELECT pgml.<func>(<model>, <input>) FROM <table> ORDER BY id` through
/// the proxy with psql: each row's value as text.
pub(super) fn column(
    proxy: &Proxy,
    func: &str,
    model: &str,
    table: &str,
    input: &str,
) -> Vec<String> {
    ok(
        proxy,
        &format!("SELECT pgml.{func}({model}, {input}) FROM {table} ORDER BY id"),
    )
    .lines()
    .map(str::to_string)
    .collect()
}
