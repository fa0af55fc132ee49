//! `pgml.drift(project, relation)`: has the data moved away from what the
//! deployed model was trained on? Training's side is what the snapshot
//! stored of each feature over the training split (`compare::Baseline`);
//! the other side is a relation counted by Postgres (`relation`), or the
//! rows this process was asked to predict (`serving`). `compare` turns both
//! into PSI and KS (numbers), L-infinity (categories) and the change in
//! missing rate, each against a threshold the project may override.

pub mod compare;
mod relation;
pub mod serving;

use std::sync::Arc;

use serde_json::Value;

use self::compare::{Baseline, Observed, Statistic};
use super::catalog;
use super::db::Db;
use super::error::{MlError, MlResult};
use super::exec::Rows;
use super::predict::format::float4_text;
use super::service::Ml;
use crate::backend::registry::Pool;

/// The relation name that means "the rows predicted", not a table.
pub const SERVING: &str = "serving";

/// What a drift check compares: the deployed model's training statistics,
/// the relation it read, and the project's thresholds.
pub struct Baselines {
    pub model_id: i64,
    pub relation: String,
    pub features: Vec<(String, Baseline)>,
    thresholds: [f64; 4],
}

impl Baselines {
    fn threshold(&self, s: Statistic) -> f64 {
        self.thresholds[s as usize]
    }
}

/// One reported statistic.
pub struct Drift {
    pub feature: String,
    pub statistic: Statistic,
    pub value: Option<f64>,
    pub threshold: f64,
}

impl Drift {
    pub fn drifted(&self) -> Option<bool> {
        self.value
            .map(|v| self.statistic.drifted(v, self.threshold))
    }
}

/// The rows of `pgml.drift`.
pub async fn rows(
    ml: &Arc<Ml>,
    pool: &Arc<Pool>,
    project: &str,
    relation: Option<&str>,
) -> MlResult<Rows> {
    Ok(check(ml, pool, project, relation)
        .await?
        .into_iter()
        .map(|d| {
            vec![
                Some(d.feature.clone()),
                Some(d.statistic.name().to_string()),
                d.value.map(|v| float4_text(v as f32)),
                Some(float4_text(d.threshold as f32)),
                d.drifted().map(|b| if b { "t" } else { "f" }.to_string()),
            ]
        })
        .collect())
}

/// Every statistic of every feature of `project`'s deployed model against
/// `relation` (None: the training relation as it is now; `serving`: the
/// rows predicted).
pub async fn check(
    ml: &Arc<Ml>,
    pool: &Arc<Pool>,
    project: &str,
    relation: Option<&str>,
) -> MlResult<Vec<Drift>> {
    let mut db = Db::checkout(pool.primary(0)).await?;
    ml.ensure_schema(pool, &mut db).await?;
    let mut base = baselines(&mut db, project).await?;
    drop(db);
    if relation == Some(SERVING) {
        // The sample keeps long texts cut short: training's categories are
        // compared cut alike.
        for (_, b) in &mut base.features {
            *b = serving::bounded_baseline(std::mem::replace(
                b,
                Baseline::Array {
                    rows: 0.0,
                    missing: 0.0,
                },
            ));
        }
    }
    let seen = match relation {
        Some(SERVING) => ml
            .serving
            .observe(&Ml::database_key(pool), project, &base.features)
            .ok_or_else(|| {
                MlError::Disabled(format!(
                    "pgml.drift: this pgmlcat process has predicted no rows of project \"{project}\"'s model yet (the serving sample is kept per process)"
                ))
            })?,
        Some(r) => relation::observe(pool, r, &base.features).await?,
        None => relation::observe(pool, &base.relation, &base.features).await?,
    };
    Ok(report(&base, &seen))
}

fn report(base: &Baselines, seen: &[Observed]) -> Vec<Drift> {
    let mut out = Vec::new();
    for ((name, baseline), seen) in base.features.iter().zip(seen) {
        for (statistic, value) in compare::compare(baseline, seen) {
            out.push(Drift {
                feature: name.clone(),
                statistic,
                value,
                threshold: base.threshold(statistic),
            });
        }
    }
    out
}

/// The deployed model's training statistics and the project's thresholds.
pub async fn baselines(db: &mut Db, project: &str) -> MlResult<Baselines> {
    let trained = catalog::deployed_training(db, project)
        .await?
        .ok_or_else(|| {
            MlError::UndefinedObject(format!("project \"{project}\" has no deployed model"))
        })?;
    let model_id = trained.model_id;
    let no_statistics = || {
        MlError::Disabled(format!(
            "model {model_id} of project \"{project}\" has no training statistics to compare with (an imported model)"
        ))
    };
    let snapshot = trained.snapshot.ok_or_else(no_statistics)?;
    let train_rows = snapshot.analysis.get("train_rows").and_then(Value::as_f64);
    let features: Vec<(String, Baseline)> = catalog::feature_columns(&snapshot.columns)
        .filter_map(|c| {
            let name = c.get("name")?.as_str()?.to_string();
            let baseline = Baseline::from_statistics(c.get("statistics")?, train_rows)?;
            Some((name, baseline))
        })
        .collect();
    if features.is_empty() {
        return Err(no_statistics());
    }
    Ok(Baselines {
        model_id,
        relation: snapshot.relation,
        features,
        thresholds: thresholds_of(project, &trained.drift_thresholds)?,
    })
}

/// The defaults, overridden by `pgml.projects.drift_thresholds`.
fn thresholds_of(project: &str, json: &Value) -> MlResult<[f64; 4]> {
    let mut t = Statistic::ALL.map(Statistic::default_threshold);
    let bad = || {
        MlError::invalid(format!(
            "pgml.projects.drift_thresholds of project \"{project}\" must be an object of numbers with keys psi, ks, linf, missing; it is {json}"
        ))
    };
    let Value::Object(map) = json else {
        return Err(bad());
    };
    for (key, value) in map {
        let s = Statistic::ALL
            .into_iter()
            .find(|s| s.name() == key)
            .ok_or_else(bad)?;
        t[s as usize] = value.as_f64().filter(|v| v.is_finite()).ok_or_else(bad)?;
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_default_and_override() {
        let t = |text: &str| thresholds_of("p", &serde_json::from_str(text).unwrap());
        assert_eq!(t("{}").unwrap(), [0.2, 0.1, 0.3, 0.05]);
        assert_eq!(t(r#"{"ks": 0.5}"#).unwrap()[1], 0.5);
        for bad in [r#"{"kl": 1}"#, r#"{"psi": "x"}"#, "[1]"] {
            assert_eq!(t(bad).unwrap_err().sqlstate(), "22023");
        }
    }
}
