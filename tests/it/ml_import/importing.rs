//! pgml.import_model every way a client sends the model (psql, the
//! simple protocol, a text or a bytea parameter) and pgml.export_model.

use tokio_postgres::types::{ToSql, Type};

use super::timed;
use crate::common::*;

/// pgml.import_model's row.
#[derive(Debug, Clone)]
pub(super) struct Imported {
    project: String,
    task: String,
    pub(super) algorithm: String,
    pub(super) model_id: i64,
}

impl Imported {
    pub(super) fn from_texts(cols: &[String]) -> Imported {
        assert_eq!(cols.len(), 4, "pgml.import_model's row: {cols:?}");
        Imported {
            project: cols[0].clone(),
            task: cols[1].clone(),
            algorithm: cols[2].clone(),
            model_id: cols[3]
                .parse()
                .unwrap_or_else(|e| panic!("model_id {:?}: {e}", cols[3])),
        }
    }

    fn from_row(row: &tokio_postgres::Row) -> Imported {
        let text = |i: usize| -> String {
            row.try_get(i)
                .unwrap_or_else(|e| panic!("column {i} ({:?}): {e:?}", row.columns()[i]))
        };
        Imported {
            project: text(0),
            task: text(1),
            algorithm: text(2),
            model_id: row
                .try_get(3)
                .unwrap_or_else(|e| panic!("model_id ({:?}): {e:?}", row.columns()[3])),
        }
    }

    /// Echoes the call; the algorithm names the format's library (or, for
    /// XGBoost, LightGBM); the model is the project's deployed one.
    pub(super) fn check(&self, pg: &PgCluster, project: &str, task: &str, format: &str) {
        assert_eq!(
            (self.project.as_str(), self.task.as_str()),
            (project, task),
            "{self:?}"
        );
        // The contract leaves an XGBoost import's algorithm open: it may
        // keep its library's name or be stored as the LightGBM model it
        // becomes.
        let names: &[&str] = if format == "lightgbm" {
            &["lightgbm"]
        } else {
            &["xgboost", "lightgbm"]
        };
        assert!(
            names.iter().any(|n| self.algorithm.eq_ignore_ascii_case(n)),
            "algorithm of a {format} import: {self:?}"
        );
        assert!(self.model_id > 0, "{self:?}");
        assert_eq!(
            deployed_id(pg, project),
            self.model_id,
            "the imported model is deployed at once: {self:?}"
        );
    }
}

const TAG: &str = "$model$";

/// `SELECT * FROM pgml.import_model(...)` with the model dollar-quoted;
/// `extra` is appended to the arguments (e.g. feature_names).
fn import_sql(project: &str, task: &str, format: &str, model: &str, extra: &str) -> String {
    assert!(!model.contains(TAG), "the model holds {TAG}");
    format!(
        "SELECT * FROM pgml.import_model('{project}', '{task}', '{format}', {TAG}{model}{TAG}{extra})"
    )
}

/// `, feature_names => ARRAY['a', ...]`.
pub(super) fn names_arg(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    format!(", feature_names => ARRAY[{}]", quoted.join(", "))
}

/// The import through psql, the model a literal in its input file.
pub(super) fn import_psql(
    pg: &PgCluster,
    proxy: &Proxy,
    project: &str,
    task: &str,
    format: &str,
    model: &str,
    extra: &str,
) -> Imported {
    let out = ok_script(
        proxy,
        &format!("{};\n", import_sql(project, task, format, model, extra)),
    );
    let cols: Vec<String> = out.split('|').map(str::to_string).collect();
    let imported = Imported::from_texts(&cols);
    imported.check(pg, project, task, format);
    imported
}

/// The import in one simple-protocol statement: the row's values, or the
/// error.
pub(super) async fn import_simple(
    client: &tokio_postgres::Client,
    project: &str,
    task: &str,
    format: &str,
    model: &str,
    extra: &str,
) -> Result<Imported, tokio_postgres::Error> {
    let sql = import_sql(project, task, format, model, extra);
    let msgs = timed(&head(&sql), client.simple_query(&sql)).await?;
    let rows = simple_rows(&msgs);
    assert_eq!(rows.len(), 1, "{}: {rows:?}", head(&sql));
    Ok(Imported::from_texts(&rows[0]))
}

/// The import with the model a text parameter (the extended protocol; the
/// proxy describes the parameters).
async fn import_text_param(
    client: &tokio_postgres::Client,
    project: &str,
    task: &str,
    format: &str,
    model: &str,
) -> Result<Imported, tokio_postgres::Error> {
    let rows = timed(
        &format!("import {project} (text parameter)"),
        client.query(
            "SELECT * FROM pgml.import_model($1, $2, $3, $4)",
            &[&project, &task, &format, &model],
        ),
    )
    .await?;
    assert_eq!(rows.len(), 1, "import {project}");
    Ok(Imported::from_row(&rows[0]))
}

/// The import with the model a bytea parameter, declared so in the Parse
/// (sent in binary: the bytes themselves).
pub(super) async fn import_bytea_param(
    client: &tokio_postgres::Client,
    project: &str,
    task: &str,
    format: &str,
    model: &[u8],
) -> Result<Imported, tokio_postgres::Error> {
    let params: [(&(dyn ToSql + Sync), Type); 4] = [
        (&project, Type::TEXT),
        (&task, Type::TEXT),
        (&format, Type::TEXT),
        (&model, Type::BYTEA),
    ];
    let rows = timed(
        &format!("import {project} (bytea parameter)"),
        client.query_typed("SELECT * FROM pgml.import_model($1, $2, $3, $4)", &params),
    )
    .await?;
    assert_eq!(rows.len(), 1, "import {project}");
    Ok(Imported::from_row(&rows[0]))
}

/// Imports `text.1` into project `text.0` with the model a text
/// parameter, then `bytea.1` into `bytea.0` with the model a bytea
/// parameter, both `task` and `format`; panics (with the proxy's log)
/// unless both are imported.
pub(super) async fn import_as_parameters(
    client: &tokio_postgres::Client,
    proxy: &Proxy,
    (task, format): (&str, &str),
    text: (&str, &str),
    bytea: (&str, &str),
) -> (Imported, Imported) {
    let t = import_text_param(client, text.0, task, format, text.1)
        .await
        .unwrap_or_else(|e| panic!("import {} (text): {e:?}\n{}", text.0, proxy.log()));
    let b = import_bytea_param(client, bytea.0, task, format, bytea.1.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("import {} (bytea): {e:?}\n{}", bytea.0, proxy.log()));
    (t, b)
}

/// pgml.export_model's text, through the simple protocol (exact bytes).
pub(super) async fn export(
    client: &tokio_postgres::Client,
    model_id: i64,
) -> Result<String, tokio_postgres::Error> {
    let sql = format!("SELECT pgml.export_model({model_id})");
    let msgs = timed(&sql, client.simple_query(&sql)).await?;
    let rows = simple_rows(&msgs);
    assert_eq!(rows.len(), 1, "{sql}");
    assert_eq!(rows[0].len(), 1, "{sql}");
    Ok(rows[0][0].clone())
}
