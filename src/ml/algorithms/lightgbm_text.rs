//! LightGBM's text model format, read strictly into a `Forest`: numerical
//! splits of a gbdt model (no categorical splits, linear trees or random
//! forest averaging), objectives whose output pgmlcat's evaluator
//! reproduces. Every problem is a 22023 naming what is wrong.

use std::collections::HashMap;
use std::str::FromStr;

use super::forest::{invalid, Child, Forest, Leaf, Missing, Objective, Split, Tree, MAX_FEATURES};
use crate::ml::error::MlResult;

/// Most trees and leaves per tree a model may have: far above real models,
/// and a bound on what a malformed file can make us allocate.
const MAX_TREES: usize = 1_000_000;
const MAX_LEAVES: usize = 1 << 20;

pub fn parse(text: &str) -> MlResult<Forest> {
    let body = match text.find("\nend of trees") {
        Some(end) => &text[..end],
        None => text,
    };
    let mut lines = body.lines().map(|l| l.trim_end_matches('\r')).peekable();
    let mut header: HashMap<&str, &str> = HashMap::new();
    let mut keyed = false;
    while let Some(line) = lines.peek() {
        if line.starts_with("Tree=") {
            break;
        }
        // A flag stands alone on its line (`average_output`).
        match line.split_once('=') {
            Some((k, v)) => {
                keyed = true;
                header.insert(k.trim(), v)
            }
            None => header.insert(line.trim(), ""),
        };
        lines.next();
    }
    if !keyed {
        return Err(invalid(
            "this is not a LightGBM text model (no header such as num_class=...)",
        ));
    }
    for refused in ["average_output", "linear_tree"] {
        if header.contains_key(refused) {
            return Err(invalid(format!(
                "LightGBM models with {refused} are not supported"
            )));
        }
    }
    let num_class: usize = key(&header, "num_class")?;
    let per_iteration: usize = key(&header, "num_tree_per_iteration")?;
    let max_feature_idx: usize = key(&header, "max_feature_idx")?;
    if max_feature_idx >= MAX_FEATURES {
        return Err(invalid(format!(
            "max_feature_idx={max_feature_idx} is above the limit of {MAX_FEATURES} features"
        )));
    }
    let objective = objective(
        header
            .get("objective")
            .ok_or_else(|| invalid("the LightGBM model has no objective line"))?,
        num_class,
    )?;
    if per_iteration != objective.outputs() {
        return Err(invalid(format!(
            "num_tree_per_iteration={per_iteration} does not match the objective's {} outputs",
            objective.outputs()
        )));
    }
    let feature_names: Vec<String> = header
        .get("feature_names")
        .map(|v| v.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();

    let mut trees = Vec::new();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        let index: usize = line
            .strip_prefix("Tree=")
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| invalid(format!("expected Tree=<n>, found {:?}", short(line))))?;
        if index != trees.len() {
            return Err(invalid(format!(
                "Tree={index} where Tree={} was expected",
                trees.len()
            )));
        }
        if trees.len() >= MAX_TREES {
            return Err(invalid(format!("more than {MAX_TREES} trees")));
        }
        let mut keys: HashMap<&str, &str> = HashMap::new();
        for l in lines.by_ref() {
            if l.trim().is_empty() {
                break;
            }
            let (k, v) = l.split_once('=').ok_or_else(|| {
                invalid(format!(
                    "tree {index}: line {:?} is not key=value",
                    short(l)
                ))
            })?;
            keys.insert(k.trim(), v);
        }
        trees.push(tree(&keys).map_err(|e| invalid(format!("tree {index}: {e}")))?);
    }
    let forest = Forest {
        objective,
        num_features: max_feature_idx + 1,
        feature_names,
        trees,
    };
    forest.validate()?;
    Ok(forest)
}

fn short(line: &str) -> String {
    line.chars().take(60).collect()
}

fn key<T: FromStr>(header: &HashMap<&str, &str>, name: &str) -> MlResult<T> {
    let value = header
        .get(name)
        .ok_or_else(|| invalid(format!("the LightGBM model has no {name} line")))?;
    value
        .trim()
        .parse()
        .map_err(|_| invalid(format!("{name}={} is not a valid count", short(value))))
}

fn objective(text: &str, num_class: usize) -> MlResult<Objective> {
    let mut tokens = text.split_whitespace();
    let name = tokens.next().unwrap_or_default();
    let rest: Vec<&str> = tokens.collect();
    let unsupported = || {
        invalid(format!(
            "LightGBM objective \"{}\" is not supported; regression, binary and multiclass are",
            short(text)
        ))
    };
    match name {
        // With any option (`regression sqrt` squares its raw score) the
        // output is not the raw score: refused.
        "regression" | "regression_l1" | "huber" | "fair" | "quantile" | "mape" => {
            if !rest.is_empty() {
                return Err(unsupported());
            }
            if num_class != 1 {
                return Err(invalid(format!(
                    "a regression model with num_class={num_class}"
                )));
            }
            Ok(Objective::Regression)
        }
        "binary" => {
            if num_class != 1 {
                return Err(invalid(format!(
                    "a binary model with num_class={num_class}"
                )));
            }
            let mut sigmoid = 1.0;
            for t in rest {
                match t.split_once(':') {
                    Some(("sigmoid", v)) => {
                        sigmoid = v
                            .parse::<f64>()
                            .ok()
                            .filter(|s| s.is_finite() && *s > 0.0)
                            .ok_or_else(|| invalid(format!("binary objective sigmoid:{v}")))?;
                    }
                    _ => return Err(unsupported()),
                }
            }
            Ok(Objective::Binary { sigmoid })
        }
        "multiclass" | "softmax" => {
            let k = rest
                .iter()
                .find_map(|t| t.strip_prefix("num_class:"))
                .and_then(|k| k.parse::<usize>().ok())
                .ok_or_else(unsupported)?;
            if k != num_class || k < 2 {
                return Err(invalid(format!(
                    "the objective's num_class:{k} does not match num_class={num_class}"
                )));
            }
            Ok(Objective::Multiclass(k))
        }
        _ => Err(unsupported()),
    }
}

fn tree(keys: &HashMap<&str, &str>) -> Result<Tree, String> {
    let num_leaves: usize = one(keys, "num_leaves")?;
    if num_leaves == 0 || num_leaves > MAX_LEAVES {
        return Err(format!(
            "num_leaves={num_leaves} (1 to {MAX_LEAVES} are allowed)"
        ));
    }
    let num_cat: usize = keys
        .get("num_cat")
        .map_or(Ok(0), |_| one(keys, "num_cat"))?;
    if num_cat != 0 {
        return Err("categorical splits are not supported".into());
    }
    if keys.get("is_linear").is_some_and(|v| v.trim() != "0") {
        return Err("linear trees are not supported".into());
    }
    let values: Vec<f64> = list(keys, "leaf_value", num_leaves)?;
    let counts: Vec<f64> = match keys.get("leaf_count") {
        Some(_) if num_leaves > 1 => list(keys, "leaf_count", num_leaves)?,
        // Without counts every leaf weighs alike for TreeSHAP.
        _ => vec![1.0; num_leaves],
    };
    let leaves = values
        .into_iter()
        .zip(counts)
        .map(|(value, count)| Leaf { value, count })
        .collect();
    let n = num_leaves - 1;
    if n == 0 {
        return Ok(Tree {
            splits: Vec::new(),
            leaves,
        });
    }
    let features: Vec<usize> = list(keys, "split_feature", n)?;
    let thresholds: Vec<f64> = list(keys, "threshold", n)?;
    let decisions: Vec<i64> = match keys.get("decision_type") {
        Some(_) => list(keys, "decision_type", n)?,
        None => vec![0; n],
    };
    let lefts: Vec<i64> = list(keys, "left_child", n)?;
    let rights: Vec<i64> = list(keys, "right_child", n)?;
    let gains: Vec<f64> = match keys.get("split_gain") {
        Some(_) => list(keys, "split_gain", n)?,
        None => vec![0.0; n],
    };
    let child = |c: i64| {
        if c >= 0 {
            Child::Split(c as usize)
        } else {
            Child::Leaf(!c as usize)
        }
    };
    let mut splits = Vec::with_capacity(n);
    for i in 0..n {
        let d = decisions[i];
        if !(0..16).contains(&d) || d & 1 != 0 {
            return Err(format!(
                "split {i} has decision_type {d}: only numerical splits are supported"
            ));
        }
        let missing = match (d >> 2) & 3 {
            0 => Missing::None,
            1 => Missing::Zero,
            2 => Missing::NaN,
            _ => {
                return Err(format!(
                    "split {i} has an unknown missing type in decision_type {d}"
                ))
            }
        };
        splits.push(Split {
            feature: features[i],
            threshold: thresholds[i],
            default_left: d & 2 != 0,
            missing,
            left: child(lefts[i]),
            right: child(rights[i]),
            gain: gains[i],
        });
    }
    Ok(Tree { splits, leaves })
}

fn one<T: FromStr>(keys: &HashMap<&str, &str>, name: &str) -> Result<T, String> {
    let value = keys.get(name).ok_or_else(|| format!("no {name} line"))?;
    value
        .trim()
        .parse()
        .map_err(|_| format!("{name}={} is not valid", short(value)))
}

/// Exactly `count` numbers.
fn list<T: FromStr>(
    keys: &HashMap<&str, &str>,
    name: &str,
    count: usize,
) -> Result<Vec<T>, String> {
    let text = keys.get(name).ok_or_else(|| format!("no {name} line"))?;
    let mut out = Vec::with_capacity(count);
    for token in text.split_whitespace() {
        if out.len() == count {
            return Err(format!("{name} has more than {count} values"));
        }
        out.push(
            token.parse().map_err(|_| {
                format!("{name} has a value {:?} that is not a number", short(token))
            })?,
        );
    }
    if out.len() != count {
        return Err(format!(
            "{name} has {} values where {count} were expected",
            out.len()
        ));
    }
    Ok(out)
}
