//! Trained models into the catalog and the cache, for the trainings that
//! make them other than by pulling one model's rows (`groups`,
//! `pushdown`): a single model, or a group set (a row for the set, which
//! deploys, and a row per group), committed in one transaction, with the
//! deploy rule of every training.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::{new_model_wins, Source, Trained};
use crate::backend::registry::Pool;
use crate::ml::algorithms::{Algorithm, Model};
use crate::ml::args::TrainArgs;
use crate::ml::catalog::{self, Meta, ModelFiles, NewModel, NewSnapshot, Project};
use crate::ml::db::Db;
use crate::ml::error::{MlError, MlResult};
use crate::ml::explain::Insight;
use crate::ml::labels::Classes;
use crate::ml::predict::GroupKey;
use crate::ml::preprocess::Preprocessor;
use crate::ml::pull::{Source as Relation, SourceColumn};
use crate::ml::service::{Deployed, GroupModels, Ml, Progress, StoredModel};
use crate::ml::task::Task;
use crate::router::Target;

/// One training: what `train` resolved before any data is read.
pub(super) struct Run<'a> {
    pub ml: &'a Ml,
    pub pool: &'a Arc<Pool>,
    pub args: &'a TrainArgs,
    pub existing: Option<&'a Project>,
    pub task: Task,
    pub algorithm: Algorithm,
    pub source: &'a Source,
    pub progress: &'a Progress,
}

/// A trained model as it goes into the catalog: a group's (`key` holds
/// its values) or the only one (`key` empty).
pub(super) struct Record {
    pub key: GroupKey,
    pub model: Box<dyn Model>,
    pub pre: Preprocessor,
    pub classes: Option<Classes>,
    pub metrics: Map<String, Value>,
    pub hyperparams: Map<String, Value>,
    pub insight: Insight,
}

/// What the snapshot row says of the data.
pub(super) struct Snapshot {
    pub columns: Value,
    pub analysis: Value,
}

impl Run<'_> {
    /// The shards the training reads: the one a shard_id comment or SET
    /// SHARD names, else every one.
    pub fn shards(&self) -> Vec<usize> {
        match self.progress.shard {
            Some(s) if s < self.pool.shards.len() => vec![s],
            _ => (0..self.pool.shards.len()).collect(),
        }
    }

    /// Why the training cannot go one of pgmlcat's own ways (pushdown,
    /// streaming), which use the one label and the features as stored;
    /// None when it can.
    pub fn own_way_refusal(&self) -> Option<&'static str> {
        if self.args.search.is_some() {
            return Some("does not search hyperparameters");
        }
        if self
            .args
            .preprocess
            .as_object()
            .is_some_and(|o| !o.is_empty())
        {
            return Some("takes no preprocess option (features are used as stored)");
        }
        if self.source.y_columns.len() != 1 {
            return Some("takes exactly one label column");
        }
        None
    }

    /// The relation's label and its features (every other column but the
    /// group columns, in table order). A missing label or group column is
    /// 42703; a group column may have any type (it is read as text).
    pub fn label_and_features(
        &self,
        source: &Relation,
    ) -> MlResult<(SourceColumn, Vec<SourceColumn>)> {
        let label = source
            .select(&self.source.y_columns)?
            .pop()
            .ok_or_else(|| MlError::Internal("no label column".into()))?;
        if let Some(g) =
            (self.args.group_by.iter()).find(|g| !source.columns.iter().any(|c| &c.name == *g))
        {
            return Err(MlError::UndefinedColumn(format!(
                "column \"{g}\" does not exist in relation {}",
                source.relation
            )));
        }
        let features: Vec<SourceColumn> = source
            .columns
            .iter()
            .filter(|c| c.name != label.name && !self.args.group_by.contains(&c.name))
            .cloned()
            .collect();
        if features.is_empty() {
            return Err(MlError::data(format!(
                "relation {} has no feature columns",
                source.relation
            )));
        }
        Ok((label, features))
    }

    /// `expr` of the relation's `pg_class` row (the planner's estimates),
    /// summed over the shards; 0 for a view. `expr` is pgmlcat's own SQL.
    pub async fn estimate(&self, expr: &str) -> MlResult<f64> {
        let sql = format!(
            "SELECT coalesce((SELECT ({expr})::float8 FROM pg_class WHERE oid = to_regclass($1)), 0)::text"
        );
        let mut total = 0.0;
        for shard in self.shards() {
            let mut db = Db::checkout(self.pool.choose(shard, Target::Replica)).await?;
            let row = db.query_one(&sql, &[Some(&self.source.relation)]).await?;
            total += row
                .first()
                .and_then(|v| v.as_deref())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
                .max(0.0);
        }
        Ok(total)
    }

    /// Writes the models (with `group_by`: a set whose metrics are
    /// `set_metrics`), deploys by the usual rule, caches what deployed.
    pub async fn save(
        &self,
        records: Vec<Record>,
        snapshot: &Snapshot,
        set_metrics: Map<String, Value>,
    ) -> MlResult<Trained> {
        let grouped = !self.args.group_by.is_empty();
        let count = records.len();
        let score_of =
            |m: &Map<String, Value>| m.get(self.task.key_metric()).and_then(Value::as_f64);
        let score = match (grouped, records.first()) {
            (true, _) => score_of(&set_metrics),
            (false, Some(r)) => score_of(&r.metrics),
            (false, None) => return Err(MlError::Internal("no model to save".into())),
        };
        let (id, ids, deployed) = self
            .write(&records, snapshot, &set_metrics, grouped, score)
            .await?;
        if deployed {
            self.progress
                .notice(format!("pgml.train: deployed model {id}"));
            self.cache(id, score, records, ids, grouped);
        }
        Ok(Trained {
            project: self.args.project.clone(),
            task: self.task,
            algorithm: self.algorithm.name().to_string(),
            deployed,
            model_id: id,
            groups: grouped.then_some(count),
        })
    }

    /// Returns the id that deploys (the set's, or the only model's), every
    /// model's id and whether it deployed.
    async fn write(
        &self,
        records: &[Record],
        snapshot: &Snapshot,
        set_metrics: &Map<String, Value>,
        grouped: bool,
        score: Option<f64>,
    ) -> MlResult<(i64, Vec<i64>, bool)> {
        let args = self.args;
        let files = records
            .iter()
            .map(|r| self.files(r))
            .collect::<MlResult<Vec<_>>>()?;
        let search_params = Value::Object(args.search_params.clone());
        let search_args = Value::Object(args.search_args.clone());
        let mut set_hyperparams = args.hyperparams.clone();
        set_hyperparams.insert("group_by".into(), json!(args.group_by));
        let set_hyperparams = Value::Object(set_hyperparams);
        let set_metrics = Value::Object(set_metrics.clone());
        let num_features = records.first().map_or(0, |r| r.pre.num_features());
        let mut db = Db::checkout(self.pool.primary(0)).await?;
        db.in_transaction(async |db: &mut Db| {
            let project_id = match self.existing {
                Some(p) => p.id,
                None => catalog::create_project(db, &args.project, self.task).await?,
            };
            let snapshot_id = catalog::insert_snapshot(
                db,
                &NewSnapshot {
                    relation: &self.source.relation,
                    y_columns: &self.source.y_columns,
                    test_size: self.source.test_size,
                    test_sampling: self.source.sampling.name(),
                    columns: &snapshot.columns,
                    analysis: &snapshot.analysis,
                },
            )
            .await?;
            let base = NewModel {
                project_id,
                snapshot_id,
                num_features,
                algorithm: self.algorithm.name(),
                hyperparams: &set_hyperparams,
                metrics: &set_metrics,
                search: args.search.map(|s| s.name()),
                search_params: &search_params,
                search_args: &search_args,
                group: None,
            };
            let set_id = match grouped {
                true => Some(catalog::insert_model(db, &base).await?),
                false => None,
            };
            let mut ids = Vec::with_capacity(records.len());
            for r in records {
                let key = key_object(&args.group_by, &r.key);
                let (hyperparams, metrics) = (
                    Value::Object(r.hyperparams.clone()),
                    Value::Object(r.metrics.clone()),
                );
                let row = NewModel {
                    hyperparams: &hyperparams,
                    metrics: &metrics,
                    group: set_id.map(|s| (s, &key)),
                    ..base
                };
                ids.push(catalog::insert_model(db, &row).await?);
            }
            let stored: Vec<catalog::File> = ids
                .iter()
                .zip(&files)
                .flat_map(|(&model_id, files)| files.of(model_id))
                .collect();
            catalog::insert_files(db, &stored).await?;
            let deploys = set_id
                .or(ids.first().copied())
                .ok_or_else(|| MlError::Internal("no model written".into()))?;
            let deploy = args.automatic_deploy
                && match catalog::deployed(db, &args.project).await? {
                    None => true,
                    Some(current) => new_model_wins(
                        args.deploy_rule,
                        current
                            .metrics
                            .get(self.task.key_metric())
                            .and_then(Value::as_f64),
                        score,
                    ),
                };
            if deploy {
                catalog::deploy(db, project_id, deploys, "new_score", &args.project).await?;
            }
            Ok((deploys, ids, deploy))
        })
        .await
    }

    /// The deployed model(s) into this process's cache; deployed inside a
    /// client's block, others see it at commit (see `train`).
    fn cache(
        &self,
        id: i64,
        score: Option<f64>,
        records: Vec<Record>,
        ids: Vec<i64>,
        grouped: bool,
    ) {
        if crate::ml::db::lent() {
            self.ml
                .cache
                .invalidate(&Ml::database_key(self.pool), &self.args.project);
            return;
        }
        let task = self.task;
        let mut models = records.into_iter().zip(ids).map(|(r, id)| {
            let stored = StoredModel {
                id,
                task,
                algorithm: self.algorithm,
                score: r.metrics.get(task.key_metric()).and_then(Value::as_f64),
                model: Arc::from(r.model),
                preprocessor: Arc::new(r.pre),
                classes: r.classes,
                means: r.insight.means,
            };
            (r.key, stored)
        });
        let deployed = if grouped {
            Deployed::Groups(GroupModels {
                id,
                task,
                algorithm: self.algorithm,
                score,
                columns: self.args.group_by.clone(),
                models: models.map(|(k, m)| (k, Arc::new(m))).collect(),
            })
        } else {
            match models.next() {
                Some((_, m)) => Deployed::Model(m),
                None => return,
            }
        };
        self.ml
            .cache
            .put_deployed(self.pool, &self.args.project, Arc::new(deployed));
    }

    /// A model's files, as every training writes them.
    fn files(&self, r: &Record) -> MlResult<ModelFiles> {
        let meta = Meta {
            task: self.task,
            algorithm: self.algorithm.name(),
            classes: &r.classes,
            y_columns: &self.source.y_columns,
            insight: &r.insight,
        };
        ModelFiles::new(r.model.to_bytes()?, &meta, &r.pre, &[])
    }
}

/// `{"store_id": "7"}`: the group's values in their text forms.
pub(super) fn key_object(columns: &[String], key: &GroupKey) -> Value {
    Value::Object(
        columns
            .iter()
            .zip(key)
            .map(|(c, v)| (c.clone(), v.clone().map_or(Value::Null, Value::String)))
            .collect(),
    )
}

/// The features as stored: numbers with the default treatment.
pub(super) fn identity_preprocessor(features: &[SourceColumn]) -> MlResult<Preprocessor> {
    let columns: Vec<(String, String)> = features
        .iter()
        .map(|c| (c.name.clone(), c.pg_type.clone()))
        .collect();
    Preprocessor::numeric(&columns)
}
