//! The admin console's ML commands: SHOW PROJECTS (from each database's
//! catalog), SHOW MODELS (the warm model cache) and SHOW TRAININGS.

use std::collections::BTreeSet;

use super::table::{null, s, Table, INT8, TEXT};
use crate::app::App;
use crate::errors::Result;
use crate::ml::db::Db;
use crate::ml::service::Ml;

const FLOAT8: u32 = 701;

/// Projects of every database a pool leads to (ML-enabled pools only).
pub async fn projects(app: &App) -> Result<Table> {
    let mut t = Table::new(&[
        ("database", TEXT),
        ("project", TEXT),
        ("task", TEXT),
        ("models", INT8),
        ("deployed_model", INT8),
        ("algorithm", TEXT),
        ("key_metric", TEXT),
        ("score", FLOAT8),
        ("predictions", INT8),
    ]);
    for (key, pool) in ml_databases(app) {
        let Ok(mut db) = Db::checkout(pool.primary(0)).await else {
            continue;
        };
        let rows = db
            .query(
                "SELECT p.name, p.task, (SELECT count(*) FROM pgml.models m WHERE m.project_id = p.id), \
                        d.id, d.algorithm, \
                        (SELECT m.metrics->>(CASE p.task WHEN 'regression' THEN 'r2' WHEN 'classification' THEN 'f1' \
                                                         WHEN 'clustering' THEN 'silhouette' ELSE 'cumulative_explained_variance' END) \
                           FROM pgml.models m WHERE m.id = d.id) \
                 FROM pgml.projects p LEFT JOIN pgml.deployed_models d ON d.name = p.name \
                 WHERE to_regclass('pgml.projects') IS NOT NULL ORDER BY p.name",
                &[],
            )
            .await;
        let Ok(rows) = rows else {
            continue; // no pgml schema there yet
        };
        for r in rows {
            let project = r.first().cloned().flatten().unwrap_or_default();
            let task = r.get(1).cloned().flatten().unwrap_or_default();
            let metric = crate::ml::Task::parse(&task)
                .map(|t| t.key_metric().to_string())
                .ok();
            t.row(vec![
                s(&key),
                s(&project),
                s(&task),
                r.get(2).cloned().flatten(),
                r.get(3).cloned().flatten(),
                r.get(4).cloned().flatten(),
                metric,
                r.get(5).cloned().flatten(),
                s(app.ml.metrics.predictions(&project)),
            ]);
        }
    }
    Ok(t)
}

/// Retraining schedules of every ML database, with their runs.
pub async fn schedules(app: &App) -> Result<Table> {
    let mut t = Table::new(&[
        ("database", TEXT),
        ("project", TEXT),
        ("every", TEXT),
        ("condition", TEXT),
        ("relation", TEXT),
        ("next_run", TEXT),
        ("last_outcome", TEXT),
        ("last_finished", TEXT),
        ("runs", INT8),
        ("failures", INT8),
    ]);
    for (key, pool) in ml_databases(app) {
        let Ok(mut db) = Db::checkout(pool.primary(0)).await else {
            continue;
        };
        let Ok(rows) = db
            .query(
                "SELECT p.name, s.every::text, s.condition, s.relation_name, s.next_run::text,                         l.outcome, l.finished::text,                         (SELECT count(*) FROM pgml.schedule_runs r WHERE r.schedule_id = s.id),                         (SELECT count(*) FROM pgml.schedule_runs r WHERE r.schedule_id = s.id AND r.outcome = 'failed')                  FROM pgml.schedules s JOIN pgml.projects p ON p.id = s.project_id                  LEFT JOIN LATERAL (SELECT outcome, finished FROM pgml.schedule_runs r                                     WHERE r.schedule_id = s.id ORDER BY r.due DESC LIMIT 1) l ON true                  ORDER BY p.name",
                &[],
            )
            .await
        else {
            continue; // no schedules there yet
        };
        for r in rows {
            let mut row = vec![s(&key)];
            row.extend(r);
            t.row(row);
        }
    }
    Ok(t)
}

/// One pool per database whose pgml catalog the admin reads (ML-enabled
/// pools only), with the database's key.
pub fn ml_databases(app: &App) -> Vec<(String, std::sync::Arc<crate::backend::registry::Pool>)> {
    let registry = app.registry.load();
    let mut seen = BTreeSet::new();
    registry
        .pools()
        .filter(|pool| pool.ml_enabled)
        .filter_map(|pool| {
            let key = Ml::database_key(pool);
            seen.insert(key.clone()).then(|| (key, pool.clone()))
        })
        .collect()
}

/// Deployed models held warm in this process.
pub fn models(app: &App) -> Table {
    let mut t = Table::new(&[
        ("database", TEXT),
        ("project", TEXT),
        ("model_id", INT8),
        ("algorithm", TEXT),
        ("task", TEXT),
        ("key_metric", TEXT),
        ("score", FLOAT8),
        ("predictions", INT8),
        ("cache", TEXT),
        ("loaded_seconds", INT8),
    ]);
    for m in app.ml.cache.entries() {
        let metric = crate::ml::Task::parse(&m.task)
            .map(|t| t.key_metric().to_string())
            .ok();
        t.row(vec![
            s(&m.database),
            s(&m.project),
            s(m.model_id),
            s(&m.algorithm),
            s(&m.task),
            metric,
            m.score.map(s).unwrap_or_else(null),
            s(app.ml.metrics.predictions(&m.project)),
            s("loaded"),
            s(m.loaded_for.as_secs()),
        ]);
    }
    t
}

/// Trainings running now, with their last progress message.
pub fn trainings(app: &App) -> Table {
    let mut t = Table::new(&[
        ("database", TEXT),
        ("project", TEXT),
        ("algorithm", TEXT),
        ("seconds", INT8),
        ("progress", TEXT),
    ]);
    let mut running: Vec<_> = app.ml.running.iter().map(|e| e.value().clone()).collect();
    running.sort_by_key(|r| r.started);
    for r in running {
        t.row(vec![
            s(&r.database),
            s(&r.project),
            s(&r.algorithm),
            s(r.started.elapsed().as_secs()),
            s(&r.progress),
        ]);
    }
    t
}
