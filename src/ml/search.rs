//! Hyperparameter search: the candidate hyperparameter sets for
//! `search => 'grid' | 'random'` over `search_params`.

use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::{MlError, MlResult};

/// Most candidates one search may train; each is a full fit per fold.
pub const MAX_CANDIDATES: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Search {
    Grid,
    Random,
}

impl Search {
    pub fn parse(s: &str) -> MlResult<Search> {
        match s.trim().to_ascii_lowercase().as_str() {
            "grid" => Ok(Search::Grid),
            "random" => Ok(Search::Random),
            _ => Err(MlError::invalid(format!(
                "unknown search \"{s}\"; valid values: grid, random"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Search::Grid => "grid",
            Search::Random => "random",
        }
    }
}

/// Each candidate is `base` with one combination of `search_params` values
/// laid over it. Grid: every combination, parameters in name order with the
/// last varying fastest (scikit-learn's ParameterGrid order). Random:
/// `n_iter` distinct combinations drawn with `seed`, or the whole grid when
/// it has no more than `n_iter` combinations.
pub fn candidates(
    search: Search,
    base: &Map<String, Value>,
    search_params: &Map<String, Value>,
    n_iter: usize,
    seed: u64,
) -> MlResult<Vec<Map<String, Value>>> {
    let mut axes: Vec<(&String, &Vec<Value>)> = Vec::with_capacity(search_params.len());
    for (name, values) in search_params {
        match values {
            Value::Array(list) if !list.is_empty() => axes.push((name, list)),
            Value::Array(_) => {
                return Err(MlError::invalid(format!(
                    "search_params \"{name}\" is an empty list; give at least one value"
                )))
            }
            other => {
                return Err(MlError::invalid(format!(
                    "search_params \"{name}\" must be a list of values to try, e.g. {{\"{name}\": [{other}]}}"
                )))
            }
        }
    }
    // serde_json may keep insertion order; name order makes runs repeatable.
    axes.sort_by(|a, b| a.0.cmp(b.0));

    let total = axes
        .iter()
        .try_fold(1usize, |acc, (_, list)| acc.checked_mul(list.len()));
    let combination = |mut index: usize| {
        let mut candidate = base.clone();
        for (name, list) in axes.iter().rev() {
            candidate.insert((*name).clone(), list[index % list.len()].clone());
            index /= list.len();
        }
        candidate
    };

    match search {
        Search::Grid => {
            let total = total.filter(|&t| t <= MAX_CANDIDATES).ok_or_else(|| {
                MlError::invalid(format!(
                    "grid search over {} would train more than {MAX_CANDIDATES} candidates; \
                     use fewer values or search => 'random'",
                    describe(&axes)
                ))
            })?;
            Ok((0..total).map(combination).collect())
        }
        Search::Random => {
            if n_iter == 0 {
                return Err(MlError::invalid("search_args n_iter must be at least 1"));
            }
            if n_iter > MAX_CANDIDATES {
                return Err(MlError::invalid(format!(
                    "search_args n_iter = {n_iter} is above the limit of {MAX_CANDIDATES}"
                )));
            }
            let mut rng = StdRng::seed_from_u64(seed);
            match total {
                Some(total) if total <= n_iter => Ok((0..total).map(combination).collect()),
                Some(total) => Ok(sample(&mut rng, total, n_iter)
                    .into_iter()
                    .map(combination)
                    .collect()),
                // A grid too large to count: draw each value independently.
                None => Ok((0..n_iter)
                    .map(|_| {
                        let mut candidate = base.clone();
                        for (name, list) in &axes {
                            let pick = sample(&mut rng, list.len(), 1).index(0);
                            candidate.insert((*name).clone(), list[pick].clone());
                        }
                        candidate
                    })
                    .collect()),
            }
        }
    }
}

fn describe(axes: &[(&String, &Vec<Value>)]) -> String {
    axes.iter()
        .map(|(name, list)| format!("{name} ({})", list.len()))
        .collect::<Vec<_>>()
        .join(" × ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn parse() {
        assert_eq!(Search::parse("Grid").unwrap(), Search::Grid);
        assert_eq!(Search::parse("random").unwrap(), Search::Random);
        let err = Search::parse("bayes").unwrap_err();
        assert_eq!(err.sqlstate(), "22023");
        assert!(err.to_string().contains("grid, random"));
    }

    #[test]
    fn grid_is_the_cartesian_product_in_order() {
        let base = map(json!({"alpha": 1.0, "max_iter": 100}));
        let params = map(json!({"max_iter": [10, 20], "alpha": [0.1, 0.2, 0.3]}));
        let all = candidates(Search::Grid, &base, &params, 0, 0).unwrap();
        let pairs: Vec<(f64, i64)> = all
            .iter()
            .map(|c| {
                (
                    c["alpha"].as_f64().unwrap(),
                    c["max_iter"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            pairs,
            vec![
                (0.1, 10),
                (0.1, 20),
                (0.2, 10),
                (0.2, 20),
                (0.3, 10),
                (0.3, 20)
            ]
        );
    }

    #[test]
    fn base_fills_the_rest() {
        let base = map(json!({"fit_intercept": false}));
        let params = map(json!({"alpha": [1]}));
        let all = candidates(Search::Grid, &base, &params, 0, 0).unwrap();
        assert_eq!(all, vec![map(json!({"fit_intercept": false, "alpha": 1}))]);
        // No search_params: the base alone.
        let all = candidates(Search::Random, &base, &Map::new(), 10, 0).unwrap();
        assert_eq!(all, vec![base]);
    }

    #[test]
    fn random_draws_distinct_seeded() {
        let params = map(json!({"a": [1, 2, 3, 4, 5], "b": [1, 2, 3, 4, 5]}));
        let one = candidates(Search::Random, &Map::new(), &params, 7, 3).unwrap();
        assert_eq!(one.len(), 7);
        for (i, c) in one.iter().enumerate() {
            assert!(!one[..i].contains(c), "repeat {c:?}");
        }
        assert_eq!(
            one,
            candidates(Search::Random, &Map::new(), &params, 7, 3).unwrap()
        );
        assert_ne!(
            one,
            candidates(Search::Random, &Map::new(), &params, 7, 4).unwrap()
        );
        // A small grid is returned whole.
        let small = map(json!({"a": [1, 2]}));
        assert_eq!(
            candidates(Search::Random, &Map::new(), &small, 10, 3)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn random_over_an_uncountable_grid() {
        let mut params = Map::new();
        for i in 0..70 {
            params.insert(format!("p{i}"), json!([0, 1, 2]));
        }
        let all = candidates(Search::Random, &Map::new(), &params, 3, 1).unwrap();
        assert_eq!(all.len(), 3);
        assert!(all.iter().all(|c| c.len() == 70));
    }

    #[test]
    fn invalid_inputs() {
        let bad = map(json!({"alpha": 0.5}));
        let err = candidates(Search::Grid, &Map::new(), &bad, 0, 0).unwrap_err();
        assert_eq!(err.sqlstate(), "22023");
        assert!(err.to_string().contains("alpha"));
        let empty = map(json!({"alpha": []}));
        assert!(candidates(Search::Grid, &Map::new(), &empty, 0, 0).is_err());
        let params = map(json!({"a": [1]}));
        assert!(candidates(Search::Random, &Map::new(), &params, 0, 0).is_err());
    }

    #[test]
    fn grid_cap() {
        let list: Vec<i32> = (0..101).collect();
        let params = map(json!({"a": list, "b": list}));
        let err = candidates(Search::Grid, &Map::new(), &params, 0, 0).unwrap_err();
        assert!(err.to_string().contains("10000"), "{err}");
        assert_eq!(
            candidates(Search::Random, &Map::new(), &params, 5, 0)
                .unwrap()
                .len(),
            5
        );
    }
}
