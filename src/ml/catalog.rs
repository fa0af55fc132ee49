//! The `pgml` schema on the user's database: PostgresML-compatible catalog
//! tables, created on first use, and the reads and writes training and
//! deployment need. Every value goes in as a parameter.

use serde_json::Value;

use super::db::Db;
use super::error::{MlError, MlResult};
use super::explain::Insight;
use super::labels::Classes;
use super::preprocess::Preprocessor;
use super::task::Task;

/// Channel other pgmlcat processes LISTEN on to learn of deployments.
pub const DEPLOY_CHANNEL: &str = "pgml_deploy";

const SCHEMA: &str = r#"
CREATE SCHEMA IF NOT EXISTS pgml;
CREATE TABLE IF NOT EXISTS pgml.projects (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    task TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS pgml.snapshots (
    id BIGSERIAL PRIMARY KEY,
    relation_name TEXT NOT NULL,
    y_column_name TEXT[],
    test_size REAL NOT NULL,
    test_sampling TEXT NOT NULL,
    status TEXT NOT NULL,
    columns JSONB,
    analysis JSONB,
    materialized BOOLEAN NOT NULL DEFAULT false,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS pgml.models (
    id BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES pgml.projects(id) ON DELETE CASCADE,
    snapshot_id BIGINT REFERENCES pgml.snapshots(id) ON DELETE SET NULL,
    num_features INT NOT NULL,
    algorithm TEXT NOT NULL,
    runtime TEXT NOT NULL DEFAULT 'rust',
    hyperparams JSONB NOT NULL,
    status TEXT NOT NULL,
    metrics JSONB,
    search TEXT,
    search_params JSONB NOT NULL DEFAULT '{}',
    search_args JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
-- pgml.train(..., group_by => ...): one row for the set (group_key NULL),
-- which deployments point at, and one per group, whose group_of is the
-- set's id and group_key the group's values ({"column": "text form"}).
ALTER TABLE pgml.models ADD COLUMN IF NOT EXISTS group_key JSONB;
ALTER TABLE pgml.models ADD COLUMN IF NOT EXISTS group_of BIGINT REFERENCES pgml.models(id) ON DELETE CASCADE;
CREATE INDEX IF NOT EXISTS models_group_of ON pgml.models (group_of) WHERE group_of IS NOT NULL;
CREATE TABLE IF NOT EXISTS pgml.deployments (
    id BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES pgml.projects(id) ON DELETE CASCADE,
    model_id BIGINT NOT NULL REFERENCES pgml.models(id) ON DELETE CASCADE,
    strategy TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS pgml.files (
    id BIGSERIAL PRIMARY KEY,
    model_id BIGINT NOT NULL REFERENCES pgml.models(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    part INTEGER NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    data BYTEA NOT NULL,
    UNIQUE (model_id, path, part)
);
-- Model files are stored uncompressed: compressing a LightGBM model halves
-- its size and doubles the time a training spends writing it.
ALTER TABLE pgml.files ALTER COLUMN data SET STORAGE EXTERNAL;
-- pgml.drift: the project's thresholds over the defaults ({"psi": 0.1}).
ALTER TABLE pgml.projects ADD COLUMN IF NOT EXISTS drift_thresholds JSONB;
-- pgml.schedule: one retraining schedule per project, and its runs. A
-- run's due time is claimed once (UNIQUE), whichever pgmlcat claims it.
CREATE TABLE IF NOT EXISTS pgml.schedules (
    id BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL UNIQUE REFERENCES pgml.projects(id) ON DELETE CASCADE,
    every INTERVAL NOT NULL,
    relation_name TEXT,
    condition TEXT NOT NULL DEFAULT 'always',
    next_run TIMESTAMPTZ NOT NULL,
    -- Runs train with this role's rights: the pgmlcat pools of this user run it.
    owner TEXT NOT NULL DEFAULT current_user,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS pgml.schedule_runs (
    id BIGSERIAL PRIMARY KEY,
    -- Runs outlive their schedule (unschedule keeps the history).
    schedule_id BIGINT REFERENCES pgml.schedules(id) ON DELETE SET NULL,
    project TEXT NOT NULL,
    due TIMESTAMPTZ NOT NULL,
    started TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    finished TIMESTAMPTZ,
    outcome TEXT NOT NULL DEFAULT 'running',
    model_id BIGINT,
    detail TEXT,
    instance TEXT,
    UNIQUE (schedule_id, due)
);
CREATE OR REPLACE VIEW pgml.overview AS
SELECT p.name, d.created_at AS deployed_at, p.task, m.algorithm, s.relation_name,
       s.y_column_name, s.test_sampling, s.test_size
FROM pgml.projects p
JOIN pgml.models m ON p.id = m.project_id
JOIN pgml.deployments d ON d.project_id = p.id AND d.model_id = m.id
JOIN pgml.snapshots s ON s.id = m.snapshot_id
ORDER BY d.created_at DESC;
CREATE OR REPLACE VIEW pgml.trained_models AS
SELECT m.id, p.name, p.task, m.algorithm, m.created_at, s.test_sampling, s.test_size,
       d.model_id IS NOT NULL AS deployed
FROM pgml.projects p
JOIN pgml.models m ON p.id = m.project_id AND m.group_of IS NULL
JOIN pgml.snapshots s ON s.id = m.snapshot_id
LEFT JOIN (SELECT DISTINCT ON (project_id) project_id, model_id, created_at
           FROM pgml.deployments ORDER BY project_id, created_at DESC, id DESC) d
       ON d.model_id = m.id
ORDER BY m.created_at DESC;
CREATE OR REPLACE VIEW pgml.deployed_models AS
SELECT m.id, p.name, p.task, m.algorithm, d.created_at AS deployed_at
FROM pgml.projects p
JOIN (SELECT DISTINCT ON (project_id) project_id, model_id, created_at
      FROM pgml.deployments ORDER BY project_id, created_at DESC, id DESC) d
  ON d.project_id = p.id
JOIN pgml.models m ON m.id = d.model_id
ORDER BY p.name ASC;
"#;

/// Creates the schema once; an advisory lock keeps two pgmlcat processes
/// (or sessions) from racing on CREATE ... IF NOT EXISTS.
pub async fn ensure_schema(db: &mut Db) -> MlResult<()> {
    let ready = db
        .query_one(
            "SELECT to_regclass('pgml.files') IS NOT NULL AND to_regclass('pgml.deployed_models') IS NOT NULL \
             AND to_regclass('pgml.schedule_runs') IS NOT NULL \
             AND EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass('pgml.models') AND attname = 'group_of')",
            &[],
        )
        .await?;
    if ready.first().and_then(|v| v.as_deref()) == Some("t") {
        return Ok(());
    }
    let result = db
        .in_transaction(async |db: &mut Db| {
            db.execute("SELECT pg_advisory_xact_lock(7304151)").await?;
            db.execute(SCHEMA).await
        })
        .await;
    result.map_err(|e| match e {
        MlError::Server(f) if f.code == "42501" => MlError::InsufficientPrivilege(format!(
            "{}: pgml.train keeps models in a \"pgml\" schema; the pool's user needs CREATE on the database (GRANT CREATE ON DATABASE ... TO ...) or an existing pgml schema it can write",
            f.message
        )),
        other => other,
    })
}

pub struct Project {
    pub id: i64,
    pub task: Task,
}

pub async fn project(db: &mut Db, name: &str) -> MlResult<Option<Project>> {
    let rows = db
        .query(
            "SELECT id, task FROM pgml.projects WHERE name = $1",
            &[Some(name)],
        )
        .await?;
    let Some(row) = rows.into_iter().next() else {
        return Ok(None);
    };
    Ok(Some(Project {
        id: int(&row, 0)?,
        task: Task::parse(text(&row, 1)?)?,
    }))
}

pub async fn create_project(db: &mut Db, name: &str, task: Task) -> MlResult<i64> {
    let row = db
        .query_one(
            "INSERT INTO pgml.projects (name, task) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET updated_at = clock_timestamp() RETURNING id",
            &[Some(name), Some(task.name())],
        )
        .await?;
    int(&row, 0)
}

pub struct SnapshotRow {
    pub id: i64,
    pub relation: String,
    pub y_columns: Vec<String>,
    pub test_size: f64,
    pub test_sampling: String,
    pub materialized: bool,
}

pub struct NewSnapshot<'a> {
    pub relation: &'a str,
    pub y_columns: &'a [String],
    pub test_size: f64,
    pub test_sampling: &'a str,
    pub columns: &'a Value,
    pub analysis: &'a Value,
}

pub async fn insert_snapshot(db: &mut Db, s: &NewSnapshot<'_>) -> MlResult<i64> {
    let y = serde_json::to_string(s.y_columns).map_err(json_err)?;
    let size = s.test_size.to_string();
    let columns = s.columns.to_string();
    let analysis = s.analysis.to_string();
    let row = db
        .query_one(
            "INSERT INTO pgml.snapshots (relation_name, y_column_name, test_size, test_sampling, status, columns, analysis) \
             VALUES ($1, ARRAY(SELECT jsonb_array_elements_text($2::jsonb)), $3::real, $4, 'snapshot', $5::jsonb, $6::jsonb) RETURNING id",
            &[Some(s.relation), Some(&y), Some(&size), Some(s.test_sampling), Some(&columns), Some(&analysis)],
        )
        .await?;
    int(&row, 0)
}

pub async fn mark_materialized(db: &mut Db, snapshot_id: i64) -> MlResult<()> {
    let id = snapshot_id.to_string();
    db.query(
        "UPDATE pgml.snapshots SET materialized = true, updated_at = clock_timestamp() WHERE id = $1::bigint",
        &[Some(&id)],
    )
    .await?;
    Ok(())
}

/// The snapshot the project's most recent model was trained on.
pub async fn last_snapshot(db: &mut Db, project_id: i64) -> MlResult<Option<SnapshotRow>> {
    let id = project_id.to_string();
    let rows = db
        .query(
            "SELECT s.id, s.relation_name, array_to_json(coalesce(s.y_column_name, '{}'))::text, s.test_size::float8, s.test_sampling, s.materialized \
             FROM pgml.snapshots s JOIN pgml.models m ON m.snapshot_id = s.id \
             WHERE m.project_id = $1::bigint ORDER BY m.id DESC LIMIT 1",
            &[Some(&id)],
        )
        .await?;
    let Some(row) = rows.into_iter().next() else {
        return Ok(None);
    };
    Ok(Some(SnapshotRow {
        id: int(&row, 0)?,
        relation: text(&row, 1)?.to_string(),
        y_columns: serde_json::from_str(text(&row, 2)?).map_err(json_err)?,
        test_size: text(&row, 3)?.parse().map_err(|_| bad_row())?,
        test_sampling: text(&row, 4)?.to_string(),
        materialized: text(&row, 5)? == "t",
    }))
}

#[derive(Clone, Copy)]
pub struct NewModel<'a> {
    pub project_id: i64,
    pub snapshot_id: i64,
    pub num_features: usize,
    pub algorithm: &'a str,
    pub hyperparams: &'a Value,
    pub metrics: &'a Value,
    pub search: Option<&'a str>,
    pub search_params: &'a Value,
    pub search_args: &'a Value,
    /// A group's model: its set's id and its group key.
    pub group: Option<(i64, &'a Value)>,
}

pub async fn insert_model(db: &mut Db, m: &NewModel<'_>) -> MlResult<i64> {
    let project = m.project_id.to_string();
    let snapshot = m.snapshot_id.to_string();
    let features = m.num_features.to_string();
    let (h, me, sp, sa) = (
        m.hyperparams.to_string(),
        m.metrics.to_string(),
        m.search_params.to_string(),
        m.search_args.to_string(),
    );
    let (group_of, group_key) = match m.group {
        Some((set, key)) => (Some(set.to_string()), Some(key.to_string())),
        None => (None, None),
    };
    let row = db
        .query_one(
            "INSERT INTO pgml.models (project_id, snapshot_id, num_features, algorithm, hyperparams, status, metrics, search, search_params, search_args, group_of, group_key) \
             VALUES ($1::bigint, $2::bigint, $3::int, $4, $5::jsonb, 'successful', $6::jsonb, $7, $8::jsonb, $9::jsonb, $10::bigint, $11::jsonb) RETURNING id",
            &[Some(&project), Some(&snapshot), Some(&features), Some(m.algorithm), Some(&h), Some(&me), m.search, Some(&sp), Some(&sa), group_of.as_deref(), group_key.as_deref()],
        )
        .await?;
    int(&row, 0)
}

/// A model's named blob, as `pgml.files` keeps it.
pub struct File<'a> {
    pub model_id: i64,
    pub path: &'a str,
    pub data: &'a [u8],
}

/// The files every model is stored as (`cache::build` reads them back):
/// the model's own bytes, `meta.json` and `preprocessor.json`.
pub struct ModelFiles {
    model: Vec<u8>,
    meta: Vec<u8>,
    preprocessor: Vec<u8>,
}

/// A model's `meta.json`: what it predicts and from which features, and
/// what explanations need (`insight`).
pub struct Meta<'a> {
    pub task: Task,
    pub algorithm: &'a str,
    pub classes: &'a Option<Classes>,
    pub y_columns: &'a [String],
    pub insight: &'a Insight,
}

impl ModelFiles {
    /// `extra`: keys the meta carries besides (an import's format).
    pub fn new(
        model: Vec<u8>,
        meta: &Meta<'_>,
        pre: &Preprocessor,
        extra: &[(&str, Value)],
    ) -> MlResult<ModelFiles> {
        let mut json = serde_json::json!({
            "task": meta.task,
            "algorithm": meta.algorithm,
            "classes": meta.classes,
            "y_columns": meta.y_columns,
            "features": pre.feature_names(),
            "num_features": pre.num_features(),
            "insight": meta.insight,
        });
        for (key, value) in extra {
            json[*key] = value.clone();
        }
        Ok(ModelFiles {
            model,
            meta: json.to_string().into_bytes(),
            preprocessor: serde_json::to_vec(pre).map_err(|e| MlError::Internal(e.to_string()))?,
        })
    }

    /// The rows of `model_id`'s files.
    pub fn of(&self, model_id: i64) -> [File<'_>; 3] {
        let file = |path, data| File {
            model_id,
            path,
            data,
        };
        [
            file("model", &self.model),
            file("meta.json", &self.meta),
            file("preprocessor.json", &self.preprocessor),
        ]
    }
}

/// Stores model files by binary COPY: bytes as they are (no hex on the
/// wire or in the server's parser), many models per round trip, in
/// batches of about 16 MB.
pub async fn insert_files(db: &mut Db, files: &[File<'_>]) -> MlResult<()> {
    const BATCH: usize = 16 << 20;
    const SQL: &str = "COPY pgml.files (model_id, path, part, data) FROM STDIN (FORMAT binary)";
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        if out.is_empty() {
            out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
            out.extend_from_slice(&0i32.to_be_bytes());
            out.extend_from_slice(&0i32.to_be_bytes());
        }
        let len = |n: usize| {
            i32::try_from(n)
                .map(i32::to_be_bytes)
                .map_err(|_| MlError::data(format!("model file {} is over 2 GB", f.path)))
        };
        out.extend_from_slice(&4i16.to_be_bytes());
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&f.model_id.to_be_bytes());
        out.extend_from_slice(&len(f.path.len())?);
        out.extend_from_slice(f.path.as_bytes());
        out.extend_from_slice(&4i32.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&len(f.data.len())?);
        out.extend_from_slice(f.data);
        if out.len() >= BATCH || i + 1 == files.len() {
            out.extend_from_slice(&(-1i16).to_be_bytes());
            db.copy_in(SQL, &out).await?;
            out.clear();
        }
    }
    Ok(())
}

/// The files of the models `ids`, by model: one round trip for them all.
pub async fn files(
    db: &mut Db,
    ids: &[i64],
) -> MlResult<std::collections::HashMap<i64, Vec<(String, Vec<u8>)>>> {
    let list: Vec<String> = ids.iter().map(i64::to_string).collect();
    let ids = format!("{{{}}}", list.join(","));
    let rows = db
        .query(
            "SELECT model_id, path, encode(data, 'hex') FROM pgml.files \
             WHERE model_id = ANY($1::bigint[]) ORDER BY model_id, path, part",
            &[Some(&ids)],
        )
        .await?;
    let mut out: std::collections::HashMap<i64, Vec<(String, Vec<u8>)>> = Default::default();
    for r in rows {
        out.entry(int(&r, 0)?)
            .or_default()
            .push((text(&r, 1)?.to_string(), unhex(text(&r, 2)?)?));
    }
    Ok(out)
}

/// One file of a model (its parts joined), if it has it.
pub async fn file(db: &mut Db, model_id: i64, path: &str) -> MlResult<Option<Vec<u8>>> {
    let id = model_id.to_string();
    let rows = db
        .query(
            "SELECT encode(data, 'hex') FROM pgml.files \
             WHERE model_id = $1::bigint AND path = $2 ORDER BY part",
            &[Some(&id), Some(path)],
        )
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut data = Vec::new();
    for r in rows {
        data.extend(unhex(text(&r, 0)?)?);
    }
    Ok(Some(data))
}

/// A model row joined with its project, for loading and deploying.
#[derive(Debug, Clone)]
pub struct ModelRow {
    pub id: i64,
    pub project_id: i64,
    pub project: String,
    pub task: Task,
    pub algorithm: String,
    pub metrics: Value,
    pub snapshot_id: Option<i64>,
    /// A group's model: the id of its set, which is what deploys.
    pub group_of: Option<i64>,
}

const MODEL_COLUMNS: &str = "m.id, m.project_id, p.name, p.task, m.algorithm, coalesce(m.metrics, '{}')::text, m.snapshot_id, m.group_of";

fn model_row(row: &[Option<String>]) -> MlResult<ModelRow> {
    Ok(ModelRow {
        id: int(row, 0)?,
        project_id: int(row, 1)?,
        project: text(row, 2)?.to_string(),
        task: Task::parse(text(row, 3)?)?,
        algorithm: text(row, 4)?.to_string(),
        metrics: serde_json::from_str(text(row, 5)?).map_err(json_err)?,
        snapshot_id: row
            .get(6)
            .and_then(|v| v.as_deref())
            .and_then(|v| v.parse().ok()),
        group_of: row
            .get(7)
            .and_then(|v| v.as_deref())
            .and_then(|v| v.parse().ok()),
    })
}

pub async fn model(db: &mut Db, model_id: i64) -> MlResult<Option<ModelRow>> {
    let id = model_id.to_string();
    let sql = format!("SELECT {MODEL_COLUMNS} FROM pgml.models m JOIN pgml.projects p ON p.id = m.project_id WHERE m.id = $1::bigint");
    let rows = db.query(&sql, &[Some(&id)]).await?;
    rows.first().map(|r| model_row(r)).transpose()
}

/// The label columns of a model's training snapshot (none: an imported
/// model, or a snapshot deleted since).
pub async fn label_columns(db: &mut Db, model_id: i64) -> MlResult<Vec<String>> {
    let id = model_id.to_string();
    let rows = db
        .query(
            "SELECT unnest(s.y_column_name) FROM pgml.models m \
             JOIN pgml.snapshots s ON s.id = m.snapshot_id WHERE m.id = $1::bigint",
            &[Some(&id)],
        )
        .await?;
    rows.iter()
        .map(|r| text(r, 0).map(str::to_string))
        .collect()
}

/// Every model of a project that deploys (a single model or a group
/// set, not a group's own model), oldest first.
pub async fn models(db: &mut Db, project_id: i64) -> MlResult<Vec<ModelRow>> {
    let id = project_id.to_string();
    let sql = format!("SELECT {MODEL_COLUMNS} FROM pgml.models m JOIN pgml.projects p ON p.id = m.project_id WHERE m.project_id = $1::bigint AND m.group_of IS NULL ORDER BY m.id");
    let rows = db.query(&sql, &[Some(&id)]).await?;
    rows.iter().map(|r| model_row(r)).collect()
}

/// Deployment history of a project, newest first: model ids.
pub async fn deployments(db: &mut Db, project_id: i64) -> MlResult<Vec<i64>> {
    let id = project_id.to_string();
    let rows = db
        .query(
            "SELECT model_id FROM pgml.deployments WHERE project_id = $1::bigint ORDER BY created_at DESC, id DESC",
            &[Some(&id)],
        )
        .await?;
    rows.iter().map(|r| int(r, 0)).collect()
}

/// What a project's deployed model was trained with and on, as a drift
/// check and a scheduled retraining read it.
pub struct DeployedTraining {
    pub model_id: i64,
    pub algorithm: String,
    pub hyperparams: Value,
    /// None: the model has no snapshot (an imported model).
    pub snapshot: Option<TrainingSnapshot>,
    /// `pgml.projects.drift_thresholds` (an empty object when unset).
    pub drift_thresholds: Value,
}

pub struct TrainingSnapshot {
    pub relation: String,
    pub y_columns: Vec<String>,
    pub test_size: f64,
    pub test_sampling: String,
    /// Per column: name, label, preprocessor, statistics.
    pub columns: Vec<Value>,
    pub analysis: Value,
}

/// The deployed model of `project` with its snapshot; None when the
/// project has no deployed model.
pub async fn deployed_training(db: &mut Db, project: &str) -> MlResult<Option<DeployedTraining>> {
    let rows = db
        .query(
            "SELECT m.id::text, m.algorithm, m.hyperparams::text, coalesce(p.drift_thresholds, '{}')::text, \
                    s.relation_name, coalesce(array_to_json(s.y_column_name), '[]')::text, \
                    s.test_size::text, s.test_sampling, coalesce(s.columns, '[]')::text, \
                    coalesce(s.analysis, '{}')::text \
             FROM pgml.projects p \
             JOIN LATERAL (SELECT d.model_id FROM pgml.deployments d WHERE d.project_id = p.id \
                           ORDER BY d.created_at DESC, d.id DESC LIMIT 1) d ON true \
             JOIN pgml.models m ON m.id = d.model_id \
             LEFT JOIN pgml.snapshots s ON s.id = m.snapshot_id \
             WHERE p.name = $1",
            &[Some(project)],
        )
        .await?;
    let Some(row) = rows.into_iter().next() else {
        return Ok(None);
    };
    let [Some(id), Some(algorithm), Some(hyperparams), Some(thresholds), relation, Some(y), test_size, sampling, Some(columns), Some(analysis)] =
        <[Option<String>; 10]>::try_from(row)
            .map_err(|_| MlError::Internal("bad deployed model row".into()))?
    else {
        return Err(MlError::Internal(format!(
            "deployed model row of project \"{project}\""
        )));
    };
    let json = |text: &str| {
        serde_json::from_str::<Value>(text)
            .map_err(|e| MlError::Internal(format!("catalog JSON of project \"{project}\": {e}")))
    };
    let snapshot = match (relation, test_size, sampling) {
        (Some(relation), Some(test_size), Some(test_sampling)) => Some(TrainingSnapshot {
            relation,
            y_columns: json(&y)?
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            test_size: test_size.parse().unwrap_or(0.25),
            test_sampling,
            columns: match json(&columns)? {
                Value::Array(columns) => columns,
                _ => Vec::new(),
            },
            analysis: json(&analysis)?,
        }),
        _ => None,
    };
    Ok(Some(DeployedTraining {
        model_id: id
            .parse()
            .map_err(|_| MlError::Internal(format!("model id {id}")))?,
        algorithm,
        hyperparams: json(&hyperparams)?,
        snapshot,
        drift_thresholds: json(&thresholds)?,
    }))
}

/// The feature columns of a snapshot's `columns` (labels left out).
pub fn feature_columns(columns: &[Value]) -> impl Iterator<Item = &Value> {
    columns
        .iter()
        .filter(|c| c.get("label").and_then(Value::as_bool) != Some(true))
}

/// The deployed model of a project, by name.
pub async fn deployed(db: &mut Db, project: &str) -> MlResult<Option<ModelRow>> {
    let sql = format!(
        "SELECT {MODEL_COLUMNS} FROM pgml.deployments d JOIN pgml.models m ON m.id = d.model_id \
         JOIN pgml.projects p ON p.id = d.project_id WHERE p.name = $1 \
         ORDER BY d.created_at DESC, d.id DESC LIMIT 1"
    );
    let rows = db.query(&sql, &[Some(project)]).await?;
    rows.first().map(|r| model_row(r)).transpose()
}

/// Records a deployment and tells other pgmlcat processes (delivered at commit).
pub async fn deploy(
    db: &mut Db,
    project_id: i64,
    model_id: i64,
    strategy: &str,
    project: &str,
) -> MlResult<()> {
    let (p, m) = (project_id.to_string(), model_id.to_string());
    db.query(
        "INSERT INTO pgml.deployments (project_id, model_id, strategy) VALUES ($1::bigint, $2::bigint, $3)",
        &[Some(&p), Some(&m), Some(strategy)],
    )
    .await?;
    db.query(
        "SELECT pg_notify($1, $2)",
        &[Some(DEPLOY_CHANNEL), Some(project)],
    )
    .await?;
    Ok(())
}

/// The models of a group set: (model id, group values in their text
/// forms, in the order of the set's group columns), and those columns.
pub async fn group_models(
    db: &mut Db,
    set_id: i64,
) -> MlResult<(Vec<String>, Vec<(i64, Vec<Option<String>>)>)> {
    let id = set_id.to_string();
    let columns = db
        .query_one(
            "SELECT coalesce(hyperparams->'group_by', '[]')::text FROM pgml.models WHERE id = $1::bigint",
            &[Some(&id)],
        )
        .await?;
    let columns: Vec<String> = serde_json::from_str(text(&columns, 0)?).map_err(json_err)?;
    let rows = db
        .query(
            "SELECT id, group_key::text FROM pgml.models WHERE group_of = $1::bigint ORDER BY id",
            &[Some(&id)],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let key: serde_json::Map<String, Value> =
            serde_json::from_str(text(&row, 1)?).map_err(json_err)?;
        let values = columns
            .iter()
            .map(|c| key.get(c).and_then(Value::as_str).map(str::to_string))
            .collect();
        out.push((int(&row, 0)?, values));
    }
    Ok((columns, out))
}

pub async fn snapshot_columns(db: &mut Db, snapshot_id: i64) -> MlResult<Value> {
    let id = snapshot_id.to_string();
    let row = db
        .query_one(
            "SELECT coalesce(columns, 'null')::text FROM pgml.snapshots WHERE id = $1::bigint",
            &[Some(&id)],
        )
        .await?;
    serde_json::from_str(text(&row, 0)?).map_err(json_err)
}

fn bad_row() -> MlError {
    MlError::Internal("unexpected row from the pgml catalog".into())
}

pub(crate) fn text(row: &[Option<String>], i: usize) -> MlResult<&str> {
    row.get(i).and_then(|v| v.as_deref()).ok_or_else(bad_row)
}

pub(crate) fn int(row: &[Option<String>], i: usize) -> MlResult<i64> {
    text(row, i)?.parse().map_err(|_| bad_row())
}

fn json_err(e: serde_json::Error) -> MlError {
    MlError::Internal(format!("catalog JSON: {e}"))
}

fn unhex(s: &str) -> MlResult<Vec<u8>> {
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return Err(bad_row());
    }
    bytes
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(bad_row)
        })
        .collect()
}
