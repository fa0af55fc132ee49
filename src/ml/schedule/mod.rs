//! Scheduled and conditional retraining: `pgml.schedule(project, every,
//! relation, condition)` and `pgml.unschedule(project)` keep one row per
//! project in `pgml.schedules`; `runner` (in every pgmlcat process) runs
//! each due time once and records it in `pgml.schedule_runs`.

pub mod runner;

use std::sync::Arc;

use super::args::ScheduleArgs;
use super::catalog;
use super::db::Db;
use super::error::{MlError, MlResult};
use super::service::Ml;
use crate::backend::registry::Pool;

/// When a due run retrains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Always,
    /// Any feature of `pgml.drift(project, relation)` drifted.
    Drift,
    /// The relation has more than N rows beyond the deployed model's snapshot.
    NewRows(u64),
}

impl Condition {
    pub fn parse(text: Option<&str>) -> MlResult<Condition> {
        let Some(text) = text else {
            return Ok(Condition::Always);
        };
        let t = text.trim().to_ascii_lowercase();
        match t.as_str() {
            "always" => return Ok(Condition::Always),
            "drift" => return Ok(Condition::Drift),
            _ => {}
        }
        let rows = t
            .strip_prefix("new_rows")
            .and_then(|rest| rest.trim_start().strip_prefix('>'))
            .and_then(|n| n.trim().parse::<u64>().ok());
        rows.map(Condition::NewRows).ok_or_else(|| {
            MlError::invalid(format!(
                "unknown schedule condition \"{text}\"; valid conditions: 'always', 'drift', 'new_rows > N'"
            ))
        })
    }

    pub fn text(self) -> String {
        match self {
            Condition::Always => "always".into(),
            Condition::Drift => "drift".into(),
            Condition::NewRows(n) => format!("new_rows > {n}"),
        }
    }
}

/// `pgml.schedule`: creates or replaces the project's schedule; its first
/// run is one interval from now.
pub async fn schedule(
    ml: &Arc<Ml>,
    pool: &Arc<Pool>,
    args: ScheduleArgs,
) -> MlResult<Vec<Option<String>>> {
    let condition = Condition::parse(args.condition.as_deref())?;
    let mut db = Db::checkout(pool.primary(0)).await?;
    ml.ensure_schema(pool, &mut db).await?;
    let project = catalog::project(&mut db, &args.project)
        .await?
        .ok_or_else(|| {
            MlError::UndefinedObject(format!("project \"{}\" does not exist", args.project))
        })?;
    if catalog::deployed(&mut db, &args.project).await?.is_none() {
        return Err(MlError::UndefinedObject(format!(
            "project \"{}\" has no deployed model to retrain",
            args.project
        )));
    }
    // Postgres reads the interval (a bad one is its own 22007).
    let long_enough = db
        .query_one(
            "SELECT ($1::interval >= interval '1 second')::text",
            &[Some(&args.every)],
        )
        .await?;
    if long_enough.first().and_then(|v| v.as_deref()) != Some("true") {
        return Err(MlError::invalid(format!(
            "argument \"every\" must be at least 1 second, not {}",
            args.every
        )));
    }
    let id = project.id.to_string();
    let condition = condition.text();
    // Printed as the `postgres` IntervalStyle writes it, whatever the
    // server's default (interval_binary reads that form).
    let row = db
        .in_transaction(async |db: &mut Db| {
            db.execute("SET LOCAL IntervalStyle = postgres").await?;
            db.query_one(
                "INSERT INTO pgml.schedules (project_id, every, relation_name, condition, next_run) \
                 VALUES ($1::bigint, $2::interval, $3, $4, clock_timestamp() + $2::interval) \
                 ON CONFLICT (project_id) DO UPDATE SET every = EXCLUDED.every, \
                     relation_name = EXCLUDED.relation_name, condition = EXCLUDED.condition, \
                     next_run = EXCLUDED.next_run, owner = current_user \
                 RETURNING every::text, relation_name, condition, \
                           to_char(next_run AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
                &[
                    Some(&id),
                    Some(&args.every),
                    args.relation.as_deref(),
                    Some(&condition),
                ],
            )
            .await
        })
        .await?;
    let mut out = vec![Some(args.project)];
    out.extend(row);
    Ok(out)
}

/// `pgml.unschedule`: whether there was a schedule to remove.
pub async fn unschedule(
    ml: &Arc<Ml>,
    pool: &Arc<Pool>,
    project: &str,
) -> MlResult<Vec<Option<String>>> {
    let mut db = Db::checkout(pool.primary(0)).await?;
    ml.ensure_schema(pool, &mut db).await?;
    let removed = db
        .query(
            "DELETE FROM pgml.schedules s USING pgml.projects p \
             WHERE p.id = s.project_id AND p.name = $1 RETURNING s.id",
            &[Some(project)],
        )
        .await?;
    Ok(vec![
        Some(project.to_string()),
        Some(if removed.is_empty() { "f" } else { "t" }.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions() {
        assert_eq!(Condition::parse(None).unwrap(), Condition::Always);
        assert_eq!(Condition::parse(Some(" DRIFT ")).unwrap(), Condition::Drift);
        assert_eq!(
            Condition::parse(Some("new_rows>5")).unwrap(),
            Condition::NewRows(5)
        );
        assert_eq!(
            Condition::parse(Some("new_rows > 100")).unwrap().text(),
            "new_rows > 100"
        );
        for bad in ["sometimes", "new_rows > -1", "new_rows < 3", "new_rows >"] {
            assert_eq!(Condition::parse(Some(bad)).unwrap_err().sqlstate(), "22023");
        }
    }
}
