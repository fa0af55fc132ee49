//! Linear and ridge regression trained by the database: one aggregate
//! query per shard returns the normal equations' sufficient statistics
//! (count, Σx_i, Σx_i·x_j, Σx_i·y, Σy, Σy², in float8) per group and side of
//! the split; the proxy adds the shards' up and solves the centered system
//! by Cholesky. No row leaves the database, so the relation's size costs
//! the servers a scan and the proxy nothing.
//!
//! The split is a deterministic hash of the whole row: a row is a test row
//! when `(hash_record(row) & 2147483647) % 10000 < round(test_size ×
//! 10000)` (`hashtext(row::text)` before Postgres 14), whichever shard
//! holds it. Test metrics come from the test
//! side's statistics (r2, mean_squared_error, explained_variance; not
//! mean_absolute_error, which needs every residual).

use std::collections::HashMap;
use std::time::Instant;

use serde_json::{json, Map, Value};

use super::models::{identity_preprocessor, Record, Run, Snapshot};
use super::Trained;
use crate::backend::server::quote_ident;
use crate::ml::algorithms::{self, hyper::Hyper, Algorithm};
use crate::ml::db::Db;
use crate::ml::error::{MlError, MlResult};
use crate::ml::explain::Insight;
use crate::ml::frame::{Column, ColumnData};
use crate::ml::predict::GroupKey;
use crate::ml::preprocess::{self, Preprocessor};
use crate::ml::pull::{self, SourceColumn};
use crate::ml::service::group_text;
use crate::ml::task::Task;
use crate::router::Target;

/// Postgres allows 1664 result columns; 50 features need 1,529.
const MAX_FEATURES: usize = 50;
/// Estimated rows (summed over shards) from which linear and ridge
/// regression train by pushdown unless `"pushdown": false`.
pub const AUTO_ROWS: f64 = 1_000_000.0;
const BUCKETS: i64 = 10_000;

/// Whether the training is one pushdown can do.
pub(super) fn applies(task: Task, algorithm: Algorithm) -> bool {
    task == Task::Regression && matches!(algorithm, Algorithm::Linear | Algorithm::Ridge)
}

/// Whether the relation is large enough to push down unasked: its rows
/// as the planner estimates them (`pg_class.reltuples`), over every shard.
pub(super) async fn large(run: &Run<'_>) -> MlResult<bool> {
    Ok(run.check_pushdown().is_ok() && run.estimate("reltuples").await? >= AUTO_ROWS)
}

/// The statistics of one group and side of the split. `xx` is the upper
/// triangle of Σx_i·x_j, row by row.
#[derive(Debug, Clone, Default, PartialEq)]
struct Sums {
    n: f64,
    x: Vec<f64>,
    xx: Vec<f64>,
    xy: Vec<f64>,
    y: f64,
    yy: f64,
}

impl Sums {
    fn add(&mut self, other: &Sums) {
        if self.x.is_empty() {
            *self = other.clone();
            return;
        }
        self.n += other.n;
        self.y += other.y;
        self.yy += other.yy;
        for (a, b) in [
            (&mut self.x, &other.x),
            (&mut self.xx, &other.xx),
            (&mut self.xy, &other.xy),
        ] {
            a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
        }
    }
}

/// Per (group, is a test row).
type Table = HashMap<(GroupKey, bool), Sums>;

/// What one shard read: its feature columns and label, and the sums.
struct ShardSums {
    features: Vec<SourceColumn>,
    label: SourceColumn,
    table: Table,
    bytes: usize,
}

impl Run<'_> {
    /// Trains by aggregates and saves the model(s).
    pub async fn train_pushdown(self) -> MlResult<Trained> {
        self.check_pushdown()?;
        let started = Instant::now();
        let cut = (self.source.test_size * BUCKETS as f64).round() as i64;
        let reads = self
            .shards()
            .into_iter()
            .map(|shard| self.shard_sums(shard, cut));
        let read = futures_util::future::try_join_all(reads).await?;
        let first = read
            .first()
            .ok_or_else(|| MlError::Internal("no shard to read".into()))?;
        let (features, label) = (first.features.clone(), first.label.clone());
        let mut table = Table::new();
        let mut bytes = 0;
        for shard in &read {
            if shard
                .features
                .iter()
                .map(|c| &c.name)
                .ne(features.iter().map(|c| &c.name))
            {
                return Err(MlError::data(
                    "the shards' relations have different columns",
                ));
            }
            bytes += shard.bytes;
            for (key, sums) in &shard.table {
                table.entry(key.clone()).or_default().add(sums);
            }
        }
        let rows: f64 = table.values().map(|s| s.n).sum();
        self.progress.notice(format!(
            "pgml.train: pushdown aggregated {rows} rows on {} shard(s) in {:.3}s; {bytes} bytes of statistics moved",
            read.len(),
            started.elapsed().as_secs_f64()
        ));
        self.solve_groups(&features, &label, table).await
    }

    pub(super) fn check_pushdown(&self) -> MlResult<()> {
        let refuse = |why: &str| {
            Err(MlError::Unsupported(format!(
                "pushdown training {why}; train with hyperparams => '{{\"pushdown\": false}}'"
            )))
        };
        if !applies(self.task, self.algorithm) {
            return refuse("is for linear and ridge regression");
        }
        if let Some(why) = self.own_way_refusal() {
            return refuse(why);
        }
        if !(self.source.test_size > 0.0 && self.source.test_size <= 1.0) {
            return Err(MlError::invalid(
                "pushdown training needs test_size as a fraction (0 < test_size <= 1)",
            ));
        }
        Ok(())
    }

    /// One shard's statistics, by one aggregate query.
    async fn shard_sums(&self, shard: usize, cut: i64) -> MlResult<ShardSums> {
        let mut db = Db::checkout(self.pool.choose(shard, Target::Replica)).await?;
        let source = pull::describe(&mut db, &self.source.relation).await?;
        let (label, features) = self.label_and_features(&source)?;
        if features.len() > MAX_FEATURES {
            return Err(MlError::Unsupported(format!(
                "pushdown training takes at most {MAX_FEATURES} features, the relation has {}; train with hyperparams => '{{\"pushdown\": false}}'",
                features.len()
            )));
        }
        for c in features.iter().chain([&label]) {
            if !c.is_number() {
                return Err(MlError::Unsupported(format!(
                    "pushdown training takes numeric columns only; column \"{}\" has type {}; leave it out with a view, or train with hyperparams => '{{\"pushdown\": false}}'",
                    c.name, c.pg_type
                )));
            }
        }
        let version = db
            .query_one("SELECT current_setting('server_version_num')", &[])
            .await?;
        let version = version
            .first()
            .and_then(|v| v.as_deref())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let split = (row_hash(version), cut);
        let sql = aggregate_sql(
            &source.relation,
            &features,
            &label,
            &self.args.group_by,
            split,
        );
        let rows = db.query(&sql, &[]).await?;
        let bytes = rows
            .iter()
            .flatten()
            .map(|v| v.as_ref().map_or(0, String::len))
            .sum();
        let (table, nulls) = parse_rows(rows, self.args.group_by.len(), features.len())?;
        if nulls > 0.0 {
            let columns: Vec<&SourceColumn> = features.iter().chain([&label]).collect();
            return Err(null_columns(&mut db, &source.relation, &columns).await);
        }
        Ok(ShardSums {
            features,
            label,
            table,
            bytes,
        })
    }

    /// Every group's model from its sums, then the catalog.
    async fn solve_groups(
        &self,
        features: &[SourceColumn],
        label: &SourceColumn,
        table: Table,
    ) -> MlResult<Trained> {
        let k = features.len();
        let valid: &[&str] = match self.algorithm {
            Algorithm::Ridge => &["alpha", "max_iter", "tol", "fit_intercept"],
            _ => &["fit_intercept"],
        };
        let h = Hyper::new(self.algorithm.name(), &self.args.hyperparams, valid)?;
        let intercept = h.bool("fit_intercept", true)?;
        let alpha = match self.algorithm {
            Algorithm::Ridge => h.f64("alpha", 1.0)?,
            _ => 0.0,
        };
        if alpha < 0.0 {
            return Err(MlError::invalid(
                "hyperparameter \"alpha\" for algorithm ridge must be >= 0",
            ));
        }
        let pre = identity_preprocessor(features)?;
        let mut hyperparams = self.args.hyperparams.clone();
        hyperparams.insert("pushdown".into(), Value::Bool(true));
        // Groups in a stable order: by their key.
        let mut keys: Vec<GroupKey> = table.keys().map(|(g, _)| g.clone()).collect();
        keys.sort_unstable();
        keys.dedup();
        let (mut records, mut all_train, mut all_test) =
            (Vec::new(), Sums::default(), Moments::default());
        for key in keys {
            let train = table.get(&(key.clone(), false));
            let test = table.get(&(key.clone(), true));
            let fitted = train
                .ok_or_else(|| MlError::data("no training rows (every row fell on the test side)"))
                .and_then(|t| solve(t, k, alpha, intercept));
            let (b, w) = match fitted {
                Ok(fit) => fit,
                Err(MlError::Data(reason)) if !self.args.group_by.is_empty() => {
                    self.progress.notice(format!(
                        "pgml.train: group {} has no model: {reason}",
                        group_text(&self.args.group_by, &key)
                    ));
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(t) = train {
                all_train.add(t);
            }
            let moments = test.map(|t| Moments::of(t, b, &w)).unwrap_or_default();
            all_test.add(&moments);
            let mut metrics = moments.metrics();
            metrics.insert("pushdown".into(), Value::Bool(true));
            let model = algorithms::load(
                self.algorithm,
                self.task,
                &model_json(self.algorithm, b, &w)?,
            )?;
            let insight = match train {
                Some(t) => {
                    let means: Vec<f64> = (0..k).map(|i| t.x[i] / t.n).collect();
                    let stds: Vec<f64> = (0..k)
                        .map(|i| {
                            (t.xx[tri(k, i, i)] / t.n - means[i] * means[i])
                                .max(0.0)
                                .sqrt()
                        })
                        .collect();
                    Insight::linear(&*model, &pre.feature_names(), means, &stds)
                }
                None => Insight::default(),
            };
            records.push(Record {
                key,
                model,
                pre: pre.clone(),
                classes: None,
                metrics,
                hyperparams: hyperparams.clone(),
                insight,
            });
        }
        if records.is_empty() {
            return Err(MlError::data("no group could be trained (see the NOTICEs)"));
        }
        let mut set_metrics = all_test.metrics();
        set_metrics.insert("groups".into(), json!(records.len()));
        set_metrics.insert("pushdown".into(), Value::Bool(true));
        let snapshot = Snapshot {
            columns: snapshot_columns(&pre, features, label, &all_train)?,
            analysis: json!({
                "samples": all_train.n + all_test.n,
                "train_rows": all_train.n,
                "test_rows": all_test.n,
                "groups": records.len(),
                "pushdown": true,
            }),
        };
        self.save(records, &snapshot, set_metrics).await
    }
}

/// How a row's side of the split is hashed: `hash_record` (Postgres 14
/// and later: each column's own hash, no text), else the hash of the row's
/// text form.
fn row_hash(server_version: i64) -> &'static str {
    if server_version >= 140000 {
        "hash_record(__pgml_r)"
    } else {
        "hashtext(__pgml_r::text)"
    }
}

/// The aggregate query: per group and side of the split, the count, the
/// rows with a NULL among the features and label, Σx_i, Σx_i·x_j (i <= j),
/// Σx_i·y, Σy and Σy². Every aggregate is a row's work for the server, so
/// there are no others.
fn aggregate_sql(
    relation: &str,
    features: &[SourceColumn],
    label: &SourceColumn,
    group_by: &[String],
    split: (&str, i64),
) -> String {
    let k = features.len();
    let (hash, cut) = split;
    let mut inner: Vec<String> = group_by
        .iter()
        .enumerate()
        .map(|(i, g)| format!("{}::text AS g{i}", quote_ident(g)))
        .collect();
    inner.extend(
        features
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{}::float8 AS c{i}", quote_ident(&c.name))),
    );
    inner.push(format!("{}::float8 AS y", quote_ident(&label.name)));
    inner.push(format!("(({hash} & 2147483647) % {BUCKETS}) < {cut} AS t"));
    let columns: Vec<String> = (0..k)
        .map(|i| format!("c{i}"))
        .chain(["y".into()])
        .collect();
    let mut outer: Vec<String> = (0..group_by.len()).map(|i| format!("g{i}")).collect();
    outer.push("t".into());
    outer.push("count(*)".into());
    outer.push(format!(
        "count(*) FILTER (WHERE NOT (({}) IS NOT NULL))",
        columns.join(", ")
    ));
    outer.extend((0..k).map(|i| format!("sum(c{i})")));
    for i in 0..k {
        outer.extend((i..k).map(|j| format!("sum(c{i} * c{j})")));
    }
    outer.extend((0..k).map(|i| format!("sum(c{i} * y)")));
    outer.push("sum(y)".into());
    outer.push("sum(y * y)".into());
    let groups: Vec<String> = (0..group_by.len())
        .map(|i| format!("g{i}"))
        .chain(["t".to_string()])
        .collect();
    format!(
        "SELECT {} FROM (SELECT {} FROM {relation} AS __pgml_r) s GROUP BY {}",
        outer.join(", "),
        inner.join(", "),
        groups.join(", ")
    )
}

/// The columns that hold NULLs, named in the error: asked only when the
/// aggregate counted rows with one.
async fn null_columns(db: &mut Db, relation: &str, columns: &[&SourceColumn]) -> MlError {
    let counts: Vec<String> = columns
        .iter()
        .map(|c| format!("count(*) - count({})", quote_ident(&c.name)))
        .collect();
    let sql = format!("SELECT {} FROM {relation}", counts.join(", "));
    let named = match db.query_one(&sql, &[]).await {
        Ok(row) => columns
            .iter()
            .zip(row)
            .filter(|(_, n)| n.as_deref().is_some_and(|n| n != "0"))
            .map(|(c, n)| format!("\"{}\" ({} NULL)", c.name, n.unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(", "),
        Err(e) => return e,
    };
    MlError::data(format!(
        "columns with NULL values: {named}; pushdown training needs every feature and the label present (impute them in a view)"
    ))
}

/// The query's rows into sums, and the number of rows with a NULL.
fn parse_rows(rows: Vec<Vec<Option<String>>>, groups: usize, k: usize) -> MlResult<(Table, f64)> {
    let bad = || MlError::Internal("unexpected row from the pushdown aggregate".into());
    let mut table = Table::new();
    let mut nulls = 0.0;
    for row in rows {
        let mut it = row.into_iter();
        let key: GroupKey = it.by_ref().take(groups).collect();
        let test = it.next().flatten().ok_or_else(bad)? == "t";
        let values = it
            .map(|v| {
                v.as_deref()
                    .map_or(Ok(f64::NAN), |v| v.parse().map_err(|_| bad()))
            })
            .collect::<MlResult<Vec<f64>>>()?;
        // count(*), the NULL rows, k sums, k(k+1)/2 products, k, 2.
        if values.len() != 2 + k + k * (k + 1) / 2 + k + 2 {
            return Err(bad());
        }
        nulls += values[1];
        let mut at = 2;
        let mut take = |count: usize| {
            at += count;
            values[at - count..at].to_vec()
        };
        let x = take(k);
        let xx = take(k * (k + 1) / 2);
        let xy = take(k);
        let (y, yy) = (take(1)[0], take(1)[0]);
        let sums = Sums {
            n: values[0],
            x,
            xx,
            xy,
            y,
            yy,
        };
        if nulls == 0.0
            && sums
                .x
                .iter()
                .chain(&sums.xx)
                .chain(&sums.xy)
                .chain([&sums.y, &sums.yy])
                .any(|v| !v.is_finite())
        {
            return Err(MlError::data(
                "the features or the label hold NaN or infinite values, or their products overflow float8",
            ));
        }
        table.insert((key, test), sums);
    }
    Ok((table, nulls))
}

fn tri(k: usize, i: usize, j: usize) -> usize {
    let (i, j) = if i <= j { (i, j) } else { (j, i) };
    i * k - i * (i + 1) / 2 + j
}

/// The intercept and coefficients minimizing Σ(y - b - w·x)² + n·alpha·|w|²
/// (with alpha 0: least squares; as linfa's ridge, whose objective is that
/// divided by 2n), from the centered normal equations by Cholesky.
fn solve(s: &Sums, k: usize, alpha: f64, fit_intercept: bool) -> MlResult<(f64, Vec<f64>)> {
    if s.n < 2.0 {
        return Err(MlError::data(format!(
            "{} training rows: a linear model needs at least 2",
            s.n
        )));
    }
    let n = s.n;
    let mut a = vec![0.0; k * k];
    let mut b = vec![0.0; k];
    for i in 0..k {
        for j in 0..k {
            let centering = if fit_intercept {
                s.x[i] * s.x[j] / n
            } else {
                0.0
            };
            a[i * k + j] = s.xx[tri(k, i, j)] - centering;
        }
        a[i * k + i] += n * alpha;
        b[i] = s.xy[i] - if fit_intercept { s.x[i] * s.y / n } else { 0.0 };
    }
    let w = cholesky_solve(&mut a, &b, k).ok_or_else(|| {
        MlError::data(
            "the features are collinear (or constant): the normal equations have no unique solution; drop the redundant feature or use ridge",
        )
    })?;
    let intercept = if fit_intercept {
        (s.y - w.iter().zip(&s.x).map(|(w, x)| w * x).sum::<f64>()) / n
    } else {
        0.0
    };
    Ok((intercept, w))
}

/// Solves A·w = b for a symmetric positive definite A (row-major, k×k,
/// overwritten by its Cholesky factor); None when A is not.
fn cholesky_solve(a: &mut [f64], b: &[f64], k: usize) -> Option<Vec<f64>> {
    let scale = (0..k).map(|i| a[i * k + i].abs()).fold(0.0, f64::max);
    for j in 0..k {
        let mut d = a[j * k + j];
        for p in 0..j {
            d -= a[j * k + p] * a[j * k + p];
        }
        // Relative to the largest diagonal: a pivot this small is a
        // rank deficiency, not a number to divide by.
        if d.is_nan() || d <= scale * 1e-12 {
            return None;
        }
        let d = d.sqrt();
        a[j * k + j] = d;
        for i in j + 1..k {
            let mut v = a[i * k + j];
            for p in 0..j {
                v -= a[i * k + p] * a[j * k + p];
            }
            a[i * k + j] = v / d;
        }
    }
    let mut z = vec![0.0; k];
    for i in 0..k {
        let v = b[i] - (0..i).map(|p| a[i * k + p] * z[p]).sum::<f64>();
        z[i] = v / a[i * k + i];
    }
    let mut w = vec![0.0; k];
    for i in (0..k).rev() {
        let v = z[i] - (i + 1..k).map(|p| a[p * k + i] * w[p]).sum::<f64>();
        w[i] = v / a[i * k + i];
    }
    Some(w)
}

/// The test side's moments of y and of the residual y - ŷ, from which the
/// regression metrics follow; they add over groups.
#[derive(Debug, Default, Clone, Copy)]
struct Moments {
    n: f64,
    y: f64,
    yy: f64,
    res: f64,
    res2: f64,
}

impl Moments {
    /// ŷ = b + w·x: Σŷ = nb + w·Σx, Σyŷ = bΣy + w·Σxy, Σŷ² = nb² + 2b w·Σx + wᵀΣxxᵀw.
    fn of(s: &Sums, b: f64, w: &[f64]) -> Moments {
        let k = w.len();
        let wx: f64 = w.iter().zip(&s.x).map(|(w, x)| w * x).sum();
        let wxy: f64 = w.iter().zip(&s.xy).map(|(w, v)| w * v).sum();
        let mut wxxw = 0.0;
        for i in 0..k {
            for j in 0..k {
                wxxw += w[i] * w[j] * s.xx[tri(k, i, j)];
            }
        }
        let pred = s.n * b + wx;
        let pred_y = b * s.y + wxy;
        let pred2 = s.n * b * b + 2.0 * b * wx + wxxw;
        Moments {
            n: s.n,
            y: s.y,
            yy: s.yy,
            res: s.y - pred,
            res2: (s.yy - 2.0 * pred_y + pred2).max(0.0),
        }
    }

    fn add(&mut self, o: &Moments) {
        self.n += o.n;
        self.y += o.y;
        self.yy += o.yy;
        self.res += o.res;
        self.res2 += o.res2;
    }

    /// r2, mean_squared_error and explained_variance, as `metrics::regression`
    /// computes them from the residuals.
    fn metrics(&self) -> Map<String, Value> {
        let mut m = Map::new();
        if self.n == 0.0 {
            return m;
        }
        let ss_tot = (self.yy - self.y * self.y / self.n).max(0.0);
        let var_res = (self.res2 - self.res * self.res / self.n).max(0.0);
        let score = |num: f64| match (ss_tot == 0.0, num == 0.0) {
            (true, true) => 1.0,
            (true, false) => 0.0,
            _ => 1.0 - num / ss_tot,
        };
        m.insert("r2".into(), json!(score(self.res2)));
        m.insert("mean_squared_error".into(), json!(self.res2 / self.n));
        m.insert("explained_variance".into(), json!(score(var_res)));
        m
    }
}

/// The model in the form the algorithm stores, so it loads and predicts
/// as one fitted from pulled rows.
fn model_json(algorithm: Algorithm, intercept: f64, w: &[f64]) -> MlResult<Vec<u8>> {
    let vector = |v: &[f64]| json!({"v": 1, "dim": [v.len()], "data": v});
    let output = match algorithm {
        Algorithm::Ridge => json!({
            "hyperplane": vector(w),
            "intercept": intercept,
            "duality_gap": 0.0,
            "n_steps": 0,
            "variance": {"Ok": vector(&vec![0.0; w.len()])},
        }),
        _ => json!({"intercept": intercept, "params": vector(w)}),
    };
    serde_json::to_vec(&json!({"n_features": w.len(), "outputs": [output]}))
        .map_err(|e| MlError::Internal(e.to_string()))
}

/// The snapshot's columns, with what the sums tell of each: count, mean
/// and standard deviation over the training rows.
fn snapshot_columns(
    pre: &Preprocessor,
    features: &[SourceColumn],
    label: &SourceColumn,
    s: &Sums,
) -> MlResult<Value> {
    let k = features.len();
    let stats = |sum: f64, sum2: f64| {
        let mean = sum / s.n;
        json!({
            "count": s.n,
            "mean": mean,
            "std_dev": (sum2 / s.n - mean * mean).max(0.0).sqrt(),
            "missing": 0,
        })
    };
    let feature_stats = (0..k).map(|i| stats(s.x[i], s.xx[tri(k, i, i)])).collect();
    let mut columns = pre.columns_json(feature_stats);
    let label_column = Column {
        name: label.name.clone(),
        pg_type: label.pg_type.clone(),
        data: ColumnData::Float(vec![Some(0.0)]),
    };
    if let Value::Array(list) = &mut columns {
        list.push(preprocess::label_column_json(
            &label_column,
            k + 1,
            &[0],
            stats(s.y, s.yy),
        ));
    }
    Ok(columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums_of(rows: &[(Vec<f64>, f64)]) -> Sums {
        let k = rows[0].0.len();
        let mut s = Sums {
            x: vec![0.0; k],
            xx: vec![0.0; k * (k + 1) / 2],
            xy: vec![0.0; k],
            ..Sums::default()
        };
        for (x, y) in rows {
            s.n += 1.0;
            s.y += y;
            s.yy += y * y;
            for i in 0..k {
                s.x[i] += x[i];
                s.xy[i] += x[i] * y;
                for j in i..k {
                    s.xx[tri(k, i, j)] += x[i] * x[j];
                }
            }
        }
        s
    }

    #[test]
    fn solves_an_exact_linear_relation() {
        let rows: Vec<(Vec<f64>, f64)> = (0..50)
            .map(|i| {
                let (a, b) = ((i as f64 * 0.37).sin(), (i as f64 * 0.11).cos() * 3.0);
                (vec![a, b], 2.0 + 1.5 * a - 0.25 * b)
            })
            .collect();
        let s = sums_of(&rows);
        let (b, w) = solve(&s, 2, 0.0, true).unwrap();
        assert!(
            (b - 2.0).abs() < 1e-10 && (w[0] - 1.5).abs() < 1e-10 && (w[1] + 0.25).abs() < 1e-10
        );
        let m = Moments::of(&s, b, &w).metrics();
        assert!((m["r2"].as_f64().unwrap() - 1.0).abs() < 1e-9, "{m:?}");
        // A constant feature is refused, not divided by.
        let flat: Vec<_> = rows.iter().map(|(x, y)| (vec![x[0], 1.0], *y)).collect();
        assert!(solve(&sums_of(&flat), 2, 0.0, true).is_err());
        // Ridge: the minimizer of the objective linfa's ridge uses.
        let (_, wr) = solve(&s, 2, 0.5, true).unwrap();
        assert!(wr[0].abs() < 1.5);
    }

    #[test]
    fn stored_models_load_and_predict() {
        for alg in [Algorithm::Linear, Algorithm::Ridge] {
            let bytes = model_json(alg, 1.0, &[2.0, -1.0]).unwrap();
            let model = algorithms::load(alg, Task::Regression, &bytes).unwrap();
            let x = ndarray::arr2(&[[1.0, 1.0], [0.0, 3.0]]);
            let y = model.predict(x.view()).unwrap();
            assert_eq!(y.column(0).to_vec(), vec![2.0, -2.0], "{alg:?}");
        }
    }

    #[test]
    fn metrics_from_moments_equal_those_from_residuals() {
        let rows: Vec<(Vec<f64>, f64)> = (0..40)
            .map(|i| (vec![i as f64 * 0.1], (i as f64 * 0.3).sin()))
            .collect();
        let (b, w) = (0.2, vec![-0.05]);
        let m = Moments::of(&sums_of(&rows), b, &w).metrics();
        let truth = ndarray::Array2::from_shape_fn((40, 1), |(i, _)| rows[i].1);
        let pred = ndarray::Array2::from_shape_fn((40, 1), |(i, _)| b + w[0] * rows[i].0[0]);
        let r = crate::ml::metrics::regression(truth.view(), pred.view()).unwrap();
        for key in ["r2", "mean_squared_error", "explained_variance"] {
            let (a, e) = (m[key].as_f64().unwrap(), r[key].as_f64().unwrap());
            assert!((a - e).abs() < 1e-9, "{key}: {a} vs {e}");
        }
    }
}
