//! The dashboard's pages: `/` (projects, pools, schedules) and
//! `/project?db=...&name=...` (one project: its deployed model, metrics,
//! deployments, importance, ROC, drift, runs and prediction rate). The
//! tables are the admin console's (`SHOW PROJECTS`, `SHOW POOLS`, `SHOW
//! SCHEDULES`), so both tell the same numbers.

use std::fmt::Write;
use std::sync::Arc;

use serde_json::Value;

use super::charts;
use super::html::{self, cell, esc, project_href};
use super::{Rates, Request, Response};
use crate::admin::{ml as admin_ml, show, table::Table};
use crate::app::App;
use crate::backend::registry::Pool;
use crate::ml::db::Db;
use crate::ml::service::Progress;
use crate::ml::task::Task;
use crate::ml::{catalog, drift, evaluate, inspect};

/// Relations that had more rows than this at training are not read for a
/// page (the ROC pulls rows, drift scans in the database): counted from
/// the snapshot, since a view or a partitioned table has no size of its own.
const ROC_MAX_ROWS: i64 = 200_000;
const DRIFT_MAX_ROWS: i64 = 20_000_000;

pub async fn route(app: &App, rates: &Rates, request: &Request) -> Response {
    match request.path.as_str() {
        "/" => Response::ok(overview(app, rates).await),
        "/project" => match (request.param("db"), request.param("name")) {
            (Some(db), Some(name)) => project(app, rates, db, name).await,
            _ => Response::not_found("a project page needs db and name"),
        },
        other => Response::not_found(&format!("no page {other}")),
    }
}

async fn overview(app: &App, rates: &Rates) -> String {
    let mut body = String::from("<h1>Overview</h1>");
    let projects = admin_ml::projects(app).await;
    body.push_str("<section><h2>Projects</h2>");
    match projects {
        Ok(t) => body.push_str(&projects_table(&t, rates)),
        Err(e) => body.push_str(&error(&e.to_string())),
    }
    body.push_str("</section><section><h2>Pools</h2>");
    body.push_str(&html::table(
        "pools",
        &show::pools(app),
        Some(("pool", &[0, 1])),
    ));
    body.push_str("</section><section><h2>Retraining schedules</h2>");
    match admin_ml::schedules(app).await {
        Ok(t) => body.push_str(&html::table("schedules", &t, Some(("project", &[1])))),
        Err(e) => body.push_str(&error(&e.to_string())),
    }
    body.push_str("</section>");
    html::page("Overview", &body)
}

/// SHOW PROJECTS with links, and this process's prediction rate and latency.
fn projects_table(t: &Table, rates: &Rates) -> String {
    let mut out = String::from(
        "<table id=\"projects\"><thead><tr><th>database</th><th>project</th><th>task</th>\
         <th>deployed model</th><th>algorithm</th><th>key metric</th><th>score</th>\
         <th>predictions</th><th>rows/s (1 min)</th><th>latency ms</th></tr></thead><tbody>",
    );
    for row in t.rows() {
        let get = |i: usize| row.get(i).and_then(|v| v.as_deref());
        let (database, project) = (get(0).unwrap_or(""), get(1).unwrap_or(""));
        let recent = rates.recent(project);
        let _ = write!(
            out,
            "<tr data-project=\"{}\"><td data-col=\"database\">{}</td>\
             <td data-col=\"project\"><a href=\"{}\">{}</a></td>{}{}{}{}{}{}{}{}</tr>",
            esc(project),
            esc(database),
            project_href(database, project),
            esc(project),
            cell("task", get(2)),
            cell("deployed_model", get(4)),
            cell("algorithm", get(5)),
            cell("key_metric", get(6)),
            cell("score", get(7)),
            cell("predictions", get(8)),
            cell(
                "rate",
                recent.as_ref().map(|r| format!("{:.1}", r.rate)).as_deref()
            ),
            cell(
                "latency_ms",
                recent
                    .and_then(|r| r.latency_ms)
                    .map(|l| format!("{l:.4}"))
                    .as_deref()
            ),
        );
    }
    out.push_str("</tbody></table>");
    out
}

fn error(message: &str) -> String {
    format!("<p class=\"muted\">{}</p>", esc(message))
}

async fn project(app: &App, rates: &Rates, database: &str, name: &str) -> Response {
    let Some((_, pool)) = admin_ml::ml_databases(app)
        .into_iter()
        .find(|(key, _)| key == database)
    else {
        return Response::not_found(&format!("no ML database {database}"));
    };
    match project_body(app, rates, &pool, database, name).await {
        Ok(Some(body)) => Response::ok(html::page(name, &body)),
        Ok(None) => Response::not_found(&format!("no project \"{name}\" with a deployed model")),
        Err(e) => Response::ok(html::page(name, &error(&e.to_string()))),
    }
}

/// What the catalog says of the project, read in one checkout.
struct Catalog {
    model: catalog::ModelRow,
    deployments: Vec<Vec<Option<String>>>,
    runs: Vec<Vec<Option<String>>>,
    relation: Option<(String, i64)>,
}

async fn read_catalog(pool: &Arc<Pool>, name: &str) -> crate::ml::error::MlResult<Option<Catalog>> {
    let mut db = Db::checkout(pool.primary(0)).await?;
    let Some(model) = catalog::deployed(&mut db, name).await? else {
        return Ok(None);
    };
    let deployments = db
        .query(
            "SELECT d.model_id::text, m.algorithm, d.strategy, d.created_at::text, m.metrics->>$2 \
             FROM pgml.deployments d JOIN pgml.models m ON m.id = d.model_id \
             JOIN pgml.projects p ON p.id = d.project_id WHERE p.name = $1 \
             ORDER BY d.created_at DESC, d.id DESC LIMIT 20",
            &[Some(name), Some(model.task.key_metric())],
        )
        .await?;
    let runs = db
        .query(
            "SELECT r.due::text, r.outcome, r.model_id::text, r.finished::text, r.instance, r.detail \
             FROM pgml.schedule_runs r WHERE r.project = $1 ORDER BY r.due DESC LIMIT 20",
            &[Some(name)],
        )
        .await
        .unwrap_or_default();
    let relation = db
        .query(
            "SELECT s.relation_name, coalesce(s.analysis->>'samples', '0') \
             FROM pgml.snapshots s JOIN pgml.models m ON m.snapshot_id = s.id WHERE m.id = $1::bigint",
            &[Some(&model.id.to_string())],
        )
        .await?
        .into_iter()
        .next()
        .and_then(|r| Some((r.first()?.clone()?, r.get(1)?.as_deref()?.parse().ok()?)));
    Ok(Some(Catalog {
        model,
        deployments,
        runs,
        relation,
    }))
}

async fn project_body(
    app: &App,
    rates: &Rates,
    pool: &Arc<Pool>,
    database: &str,
    name: &str,
) -> crate::ml::error::MlResult<Option<String>> {
    let Some(c) = read_catalog(pool, name).await? else {
        return Ok(None);
    };
    let ml = &app.ml;
    let m = &c.model;
    let mut b = format!(
        "<h1 id=\"project-name\">{}</h1><p class=\"muted\">{} · {} · {}</p>",
        esc(name),
        esc(m.task.name()),
        esc(database),
        c.relation
            .as_ref()
            .map(|(r, _)| format!("trained on {}", esc(r)))
            .unwrap_or_default()
    );
    let _ = write!(
        b,
        "<div class=\"grid\"><section id=\"deployed\" data-model-id=\"{}\"><h2>Deployed model {} ({})</h2>{}</section>",
        m.id,
        m.id,
        esc(&m.algorithm),
        metrics_table(&m.metrics)
    );
    b.push_str(&recent_section(rates, name));
    b.push_str("</div>");
    b.push_str("<section><h2>Deployments</h2>");
    b.push_str(&rows_table(
        "deployments",
        &["model_id", "algorithm", "strategy", "deployed_at", "score"],
        &c.deployments,
    ));
    b.push_str("</section><div class=\"grid\">");
    b.push_str(&importance_section(
        inspect::feature_importance(ml, pool, name).await,
    ));
    if m.task == Task::Classification {
        b.push_str(&roc_section(app, pool, name, &m.metrics, c.relation.as_ref()).await);
    }
    b.push_str("</div>");
    b.push_str(&drift_section(app, pool, name, c.relation.as_ref()).await);
    b.push_str("<section><h2>Scheduled runs</h2>");
    b.push_str(&rows_table(
        "runs",
        &[
            "due", "outcome", "model_id", "finished", "instance", "detail",
        ],
        &c.runs,
    ));
    b.push_str("</section>");
    Ok(Some(b))
}

fn metrics_table(metrics: &Value) -> String {
    let mut out = String::from("<table id=\"metrics\"><tbody>");
    if let Value::Object(map) = metrics {
        for (k, v) in map {
            let text = match v {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                // Leaderboards and the like: not a number to show here.
                _ => continue,
            };
            let _ = write!(
                out,
                "<tr data-metric=\"{}\"><td>{}</td>{}</tr>",
                esc(k),
                esc(k),
                cell("value", Some(&text))
            );
        }
    }
    out.push_str("</tbody></table>");
    out
}

fn rows_table(id: &str, columns: &[&str], rows: &[Vec<Option<String>>]) -> String {
    let mut out = format!("<table id=\"{}\"><thead><tr>", esc(id));
    for c in columns {
        let _ = write!(out, "<th>{}</th>", esc(c));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for (c, v) in columns.iter().zip(row) {
            out.push_str(&cell(c, v.as_deref()));
        }
        out.push_str("</tr>");
    }
    if rows.is_empty() {
        let _ = write!(
            out,
            "<tr><td colspan=\"{}\" class=\"muted\">none</td></tr>",
            columns.len()
        );
    }
    out.push_str("</tbody></table>");
    out
}

fn recent_section(rates: &Rates, name: &str) -> String {
    let mut out = String::from("<section id=\"rate\"><h2>Predictions (this process)</h2>");
    match rates.recent(name) {
        Some(r) => {
            let _ = write!(
                out,
                "<p><span data-col=\"rate\">{:.1}</span> rows/s over the last minute; mean batch latency \
                 <span data-col=\"latency_ms\">{}</span> ms</p>{}",
                r.rate,
                r.latency_ms.map_or("–".into(), |l| format!("{l:.4}")),
                charts::sparkline(&r.per_second)
            );
        }
        None => out.push_str("<p class=\"muted\">no predictions sampled yet</p>"),
    }
    out.push_str("</section>");
    out
}

fn importance_section(rows: crate::ml::error::MlResult<crate::ml::exec::Rows>) -> String {
    let mut out = String::from("<section id=\"importance\"><h2>Feature importance</h2>");
    match rows {
        Ok(rows) => {
            // The first method stored (gain for LightGBM) charted; all listed.
            let first = rows.first().and_then(|r| r.get(2).cloned().flatten());
            let bars: Vec<(String, f64)> = rows
                .iter()
                .filter(|r| r.get(2).cloned().flatten() == first)
                .filter_map(|r| Some((r.first()?.clone()?, r.get(1)?.as_deref()?.parse().ok()?)))
                .take(20)
                .collect();
            out.push_str(&charts::bars(&bars));
            out.push_str("<table><thead><tr><th>feature</th><th>importance</th><th>method</th></tr></thead><tbody>");
            for r in &rows {
                let get = |i: usize| r.get(i).and_then(|v| v.as_deref());
                let _ = write!(
                    out,
                    "<tr data-feature=\"{}\" data-method=\"{}\">{}{}{}</tr>",
                    esc(get(0).unwrap_or("")),
                    esc(get(2).unwrap_or("")),
                    cell("feature", get(0)),
                    cell("importance", get(1)),
                    cell("method", get(2))
                );
            }
            out.push_str("</tbody></table>");
        }
        Err(e) => out.push_str(&error(&e.to_string())),
    }
    out.push_str("</section>");
    out
}

async fn roc_section(
    app: &App,
    pool: &Arc<Pool>,
    name: &str,
    metrics: &Value,
    relation: Option<&(String, i64)>,
) -> String {
    let auc = metrics.get("roc_auc").and_then(Value::as_f64);
    let mut out = format!(
        "<section id=\"roc\" data-auc=\"{}\"><h2>ROC curve</h2>",
        auc.map(|a| format!("{a:.4}")).unwrap_or_default()
    );
    let Some((relation, rows)) = relation else {
        out.push_str(&error("the model has no training relation"));
        out.push_str("</section>");
        return out;
    };
    if *rows > ROC_MAX_ROWS {
        out.push_str(&error(&format!(
            "{relation} is large: SELECT * FROM pgml.roc_curve('{name}', '{relation}') draws it"
        )));
        out.push_str("</section>");
        return out;
    }
    let app_ml = app.ml.clone();
    match evaluate::score(&app_ml, pool, name, relation, &Progress::default())
        .await
        .and_then(|s| s.roc_curve())
    {
        Ok(points) => {
            // Points in order of falling threshold; at most ~300 drawn.
            let step = (points.len() / 300).max(1);
            let xy: Vec<(f64, f64)> = points
                .iter()
                .step_by(step)
                .chain(points.last())
                .map(|p| (p[2], p[1]))
                .collect();
            let _ = write!(
                out,
                "{}<p class=\"muted\">the deployed model on all of {} now; roc_auc at training (test split): {}</p>",
                charts::roc(&xy),
                esc(relation),
                auc.map_or("–".into(), |a| format!("{a:.4}"))
            );
        }
        Err(e) => out.push_str(&error(&e.to_string())),
    }
    out.push_str("</section>");
    out
}

async fn drift_section(
    app: &App,
    pool: &Arc<Pool>,
    name: &str,
    relation: Option<&(String, i64)>,
) -> String {
    let mut out = String::from("<section><h2>Drift: training against ");
    let _ = write!(
        out,
        "{} now</h2>",
        esc(relation.map_or("the training relation", |(r, _)| r.as_str()))
    );
    if relation.is_some_and(|(_, rows)| *rows > DRIFT_MAX_ROWS) {
        out.push_str(&error(&format!(
            "the relation is large: SELECT * FROM pgml.drift('{name}') computes it"
        )));
    } else {
        match drift::check(&app.ml, pool, name, None).await {
            Ok(rows) => {
                out.push_str(
                    "<table id=\"drift\"><thead><tr><th>feature</th><th>statistic</th><th>value</th>\
                     <th>threshold</th><th>drifted</th></tr></thead><tbody>",
                );
                for d in rows {
                    let drifted = d.drifted().map_or("", |b| if b { "true" } else { "false" });
                    let _ = write!(
                        out,
                        "<tr data-feature=\"{}\" data-statistic=\"{}\" data-drifted=\"{drifted}\">{}{}{}{}{}</tr>",
                        esc(&d.feature),
                        d.statistic.name(),
                        cell("feature", Some(&d.feature)),
                        cell("statistic", Some(d.statistic.name())),
                        cell("value", d.value.map(|v| v.to_string()).as_deref()),
                        cell("threshold", Some(&d.threshold.to_string())),
                        cell("drifted", Some(drifted)),
                    );
                }
                out.push_str("</tbody></table>");
            }
            Err(e) => out.push_str(&error(&e.to_string())),
        }
    }
    out.push_str("</section>");
    out
}
