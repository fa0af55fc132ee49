//! The relation's side of a drift check, counted by Postgres: one
//! aggregate query per shard (replicas first) that bins every numeric
//! feature the way training's histogram did and counts every category and
//! NULL, so no row leaves the database. The shards' counts are added.

use std::collections::HashMap;
use std::sync::Arc;

use super::compare::{Baseline, Observed, BINS};
use crate::backend::registry::Pool;
use crate::backend::server::quote_ident;
use crate::ml::db::Db;
use crate::ml::error::{MlError, MlResult};
use crate::ml::pull;
use crate::router::Target;

/// Counts of each feature (`features`: name and baseline) in `relation`.
pub async fn observe(
    pool: &Arc<Pool>,
    relation: &str,
    features: &[(String, Baseline)],
) -> MlResult<Vec<Observed>> {
    let reads = (0..pool.shards.len()).map(|shard| {
        let server = pool.choose(shard, Target::Replica).clone();
        async move {
            let mut db = Db::checkout(&server).await?;
            let source = pull::describe(&mut db, relation).await?;
            let mut booleans = Vec::new();
            for (name, _) in features {
                let column = source
                    .columns
                    .iter()
                    .find(|c| &c.name == name)
                    .ok_or_else(|| {
                        MlError::UndefinedColumn(format!(
                            "relation {relation} has no column \"{name}\", a feature of the model"
                        ))
                    })?;
                booleans.push(column.pg_type == "boolean");
            }
            db.query(&count_sql(&source.relation, features, &booleans), &[])
                .await
        }
    });
    let shards = futures_util::future::try_join_all(reads).await?;
    let mut seen = vec![
        Observed {
            bins: vec![0.0; BINS],
            ..Default::default()
        };
        features.len()
    ];
    let mut categories: Vec<HashMap<String, f64>> = vec![HashMap::new(); features.len()];
    for row in shards.into_iter().flatten() {
        let (Some(Some(i)), Some(value), Some(Some(count))) = (row.first(), row.get(1), row.get(2))
        else {
            return Err(MlError::Internal("bad drift count row".into()));
        };
        let (Ok(i), Ok(count)) = (i.parse::<usize>(), count.parse::<f64>()) else {
            return Err(MlError::Internal(format!(
                "bad drift count row {i} {count}"
            )));
        };
        let (Some(s), Some((_, baseline))) = (seen.get_mut(i), features.get(i)) else {
            return Err(MlError::Internal(format!("drift count of feature {i}")));
        };
        s.rows += count;
        match (value, baseline) {
            (None, _) => s.missing += count,
            (Some(bin), Baseline::Numeric { .. }) => {
                let b: usize = bin
                    .parse()
                    .map_err(|_| MlError::Internal(format!("drift bin {bin}")))?;
                if let Some(slot) = s.bins.get_mut(b) {
                    *slot += count;
                }
            }
            (Some(category), Baseline::Categorical { .. }) => {
                *categories[i].entry(category.clone()).or_default() += count;
            }
            (Some(_), Baseline::Array { .. }) => {}
        }
    }
    for (s, c) in seen.iter_mut().zip(categories) {
        let mut c: Vec<(String, f64)> = c.into_iter().collect();
        c.sort_by(|a, b| a.0.cmp(&b.0));
        s.categories = c;
    }
    Ok(seen)
}

/// Per feature: its rows grouped by bin (numbers), by value (text) or by
/// whether it is NULL, and counted; the features' counts in one result.
/// A scan per feature, grouped on the bin itself: measured on 1M rows × 10
/// features 2.7× faster than one scan that made ten (feature, bin) rows of
/// each row and grouped those.
///
/// `booleans`: which features are boolean columns, which training read as
/// 0 and 1 (Postgres has no boolean to float8 cast).
fn count_sql(relation: &str, features: &[(String, Baseline)], booleans: &[bool]) -> String {
    let parts: Vec<String> = features
        .iter()
        .enumerate()
        .map(|(i, (name, baseline))| {
            let column = format!("t.{}", quote_ident(name));
            let value = match baseline {
                Baseline::Numeric { bins, .. } if booleans.get(i) == Some(&true) => {
                    bins.sql(&format!("{column}::int"))
                }
                Baseline::Numeric { bins, .. } => bins.sql(&column),
                Baseline::Categorical { .. } => format!("{column}::text"),
                Baseline::Array { .. } => format!("{column} IS NOT NULL OR NULL"),
            };
            format!("SELECT {i}, b::text, count(*) FROM (SELECT {value} AS b FROM {relation} AS t) s GROUP BY b")
        })
        .collect();
    parts.join(" UNION ALL ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::drift::compare::Bins;

    #[test]
    fn a_grouped_count_per_feature() {
        let features = vec![
            (
                "Age".to_string(),
                Baseline::Numeric {
                    bins: Bins {
                        lo: 0.0,
                        width: 2.5,
                    },
                    counts: vec![1.0; BINS],
                    missing: 0.0,
                },
            ),
            (
                "city".to_string(),
                Baseline::Categorical {
                    counts: vec![],
                    missing: 0.0,
                },
            ),
        ];
        let sql = count_sql("public.people", &features, &[false, false]);
        assert!(sql.starts_with(
            "SELECT 0, b::text, count(*) FROM (SELECT CASE WHEN NULLIF(t.\"Age\"::float8, 'NaN')"
        ));
        assert!(sql.contains(
            " UNION ALL SELECT 1, b::text, count(*) FROM (SELECT t.\"city\"::text AS b \
             FROM public.people AS t) s GROUP BY b"
        ));
    }
}
