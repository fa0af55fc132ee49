//! XGBoost's JSON model (`Booster.save_model("model.json")`, or
//! `save_raw("json")`) read into a `Forest`: gbtree boosters with numerical
//! splits and the squared-error, logistic and softmax objectives.
//!
//! XGBoost sends a row left when `(float) x < split_condition` and adds
//! `base_score` (as a margin) to the trees' sum. In LightGBM's form a row
//! goes left when `x <= threshold` in double, so the threshold is the
//! largest double that rounds to a float below the split condition
//! (`float_split`), and the base margin is added to the leaves of each
//! class's first tree.

use serde_json::Value;

use crate::ml::algorithms::forest::{
    invalid, Child, Forest, Leaf, Missing, Objective, Split, Tree, MAX_FEATURES,
};
use crate::ml::error::MlResult;

/// Most trees and nodes per tree: a bound on what a malformed file can
/// make us allocate (JSON arrays already hold them).
const MAX_NODES: usize = 1 << 21;

pub fn parse(bytes: &[u8]) -> MlResult<Forest> {
    let root: Value = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("the xgboost_json model is not JSON: {e}")))?;
    let learner = root.get("learner").ok_or_else(|| {
        invalid("the xgboost_json model has no \"learner\": give the JSON Booster.save_model(\"model.json\") writes")
    })?;
    let booster = field(learner, "gradient_booster")?;
    match booster.get("name").and_then(Value::as_str) {
        Some("gbtree") => {}
        other => {
            return Err(invalid(format!(
                "xgboost booster {} is not supported; gbtree is",
                other.unwrap_or("(none)")
            )))
        }
    }
    let params = field(learner, "learner_model_param")?;
    let num_feature: usize = number_text(params, "num_feature")?;
    if num_feature == 0 || num_feature > MAX_FEATURES {
        return Err(invalid(format!(
            "num_feature {num_feature} is not supported"
        )));
    }
    if params.get("num_target").is_some() && number_text::<usize>(params, "num_target")? > 1 {
        return Err(invalid("multi-target xgboost models are not supported"));
    }
    let num_class: usize = number_text(params, "num_class")?;
    let objective_name = field(learner, "objective")?
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("the xgboost_json model's objective has no name"))?;
    let objective = match objective_name {
        "reg:squarederror" | "reg:linear" => Objective::Regression,
        "binary:logistic" => Objective::Binary { sigmoid: 1.0 },
        "multi:softprob" | "multi:softmax" if num_class >= 2 => Objective::Multiclass(num_class),
        other => {
            return Err(invalid(format!(
                "xgboost objective \"{other}\" is not supported; reg:squarederror, \
                 binary:logistic, multi:softprob and multi:softmax are"
            )))
        }
    };
    let k = objective.outputs();
    let base = base_margins(params, objective, k)?;

    let model = field(booster, "model")?;
    let trees_json = field(model, "trees")?
        .as_array()
        .ok_or_else(|| invalid("\"trees\" is not a list"))?;
    let classes: Vec<usize> = match model.get("tree_info").and_then(Value::as_array) {
        Some(info) => info
            .iter()
            .map(|c| c.as_u64().map(|c| c as usize).filter(|c| *c < k))
            .collect::<Option<_>>()
            .ok_or_else(|| invalid("\"tree_info\" names a class the model does not have"))?,
        None => (0..trees_json.len()).map(|i| i % k).collect(),
    };
    if classes.len() != trees_json.len() {
        return Err(invalid(format!(
            "\"tree_info\" has {} entries for {} trees",
            classes.len(),
            trees_json.len()
        )));
    }
    // LightGBM's order: iteration by iteration, class by class.
    let mut by_class: Vec<Vec<Tree>> = vec![Vec::new(); k];
    for (i, (t, &class)) in trees_json.iter().zip(&classes).enumerate() {
        let tree = tree(t, num_feature).map_err(|e| invalid(format!("tree {i}: {e}")))?;
        by_class[class].push(tree);
    }
    let per_class = by_class[0].len();
    if by_class.iter().any(|t| t.len() != per_class) || per_class == 0 {
        return Err(invalid(
            "every class needs the same, non-zero number of trees",
        ));
    }
    for (class, trees) in by_class.iter_mut().enumerate() {
        for leaf in &mut trees[0].leaves {
            leaf.value += base[class];
        }
    }
    let mut iters: Vec<std::vec::IntoIter<Tree>> =
        by_class.into_iter().map(Vec::into_iter).collect();
    let mut trees = Vec::with_capacity(per_class * k);
    for _ in 0..per_class {
        for class in iters.iter_mut() {
            trees.extend(class.next());
        }
    }
    let feature_names = learner
        .get("feature_names")
        .and_then(Value::as_array)
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let forest = Forest {
        objective,
        num_features: num_feature,
        feature_names,
        trees,
    };
    forest.validate()?;
    Ok(forest)
}

fn field<'a>(v: &'a Value, name: &str) -> MlResult<&'a Value> {
    v.get(name)
        .ok_or_else(|| invalid(format!("the xgboost_json model has no \"{name}\"")))
}

/// A count XGBoost writes as a JSON string ("10") or number.
fn number_text<T: std::str::FromStr>(v: &Value, name: &str) -> MlResult<T> {
    let text = match v.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(invalid(format!("the xgboost_json model has no \"{name}\""))),
    };
    text.trim()
        .parse()
        .map_err(|_| invalid(format!("\"{name}\" = {text:?} is not a count")))
}

/// The raw-score intercept of each class: `base_score` ("5E-1", or
/// "[5E-1]" / "[a,b,c]" since XGBoost 3) as a margin: the logit of a
/// probability for logistic models, as it is otherwise.
fn base_margins(params: &Value, objective: Objective, k: usize) -> MlResult<Vec<f64>> {
    let text = match params.get("base_score") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(invalid("the xgboost_json model has no base_score")),
    };
    let values: Vec<f64> = text
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|v| v.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| invalid(format!("base_score {text:?} is not a number")))?;
    let values = match values.as_slice() {
        [one] => vec![*one; k],
        many if many.len() == k => many.to_vec(),
        _ => {
            return Err(invalid(format!(
                "base_score {text:?} does not have {k} values"
            )))
        }
    };
    values
        .into_iter()
        .map(|b| {
            // XGBoost keeps base_score as a float.
            let b = b as f32 as f64;
            let margin = match objective {
                Objective::Binary { .. } => {
                    if !(b > 0.0 && b < 1.0) {
                        return Err(invalid(format!(
                            "base_score {b} of a logistic model is not a probability"
                        )));
                    }
                    (b / (1.0 - b)).ln()
                }
                _ => b,
            };
            if margin.is_finite() {
                Ok(margin)
            } else {
                Err(invalid(format!("base_score {b} is not finite")))
            }
        })
        .collect()
}

/// One tree of numbers by node id (`left_children`, `split_indices`...)
/// into LightGBM's split/leaf numbering, walked from the root.
fn tree(t: &Value, num_feature: usize) -> Result<Tree, String> {
    if let Some(size) = t.pointer("/tree_param/size_leaf_vector") {
        let size = size
            .as_str()
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(usize::MAX);
        if size > 1 {
            return Err("vector leaves (multi_strategy) are not supported".into());
        }
    }
    let ints = |name: &str| -> Result<Vec<i64>, String> {
        let list = t
            .get(name)
            .and_then(Value::as_array)
            .ok_or_else(|| format!("no \"{name}\" list"))?;
        if list.len() > MAX_NODES {
            return Err(format!("more than {MAX_NODES} nodes"));
        }
        list.iter()
            .map(|v| match v {
                Value::Bool(b) => Some(i64::from(*b)),
                v => v.as_i64(),
            })
            .collect::<Option<_>>()
            .ok_or_else(|| format!("\"{name}\" holds a value that is not an integer"))
    };
    let floats = |name: &str| -> Result<Vec<f64>, String> {
        let list = t
            .get(name)
            .and_then(Value::as_array)
            .ok_or_else(|| format!("no \"{name}\" list"))?;
        list.iter()
            .map(Value::as_f64)
            .collect::<Option<_>>()
            .ok_or_else(|| format!("\"{name}\" holds a value that is not a number"))
    };
    let lefts = ints("left_children")?;
    let rights = ints("right_children")?;
    let features = ints("split_indices")?;
    let conditions = floats("split_conditions")?;
    let default_left = ints("default_left")?;
    let n = lefts.len();
    if n == 0 {
        return Err("it has no nodes".into());
    }
    if [
        rights.len(),
        features.len(),
        conditions.len(),
        default_left.len(),
    ]
    .iter()
    .any(|&l| l != n)
    {
        return Err("its node lists have different lengths".into());
    }
    if let Ok(types) = ints("split_type") {
        if types.iter().any(|&t| t != 0) {
            return Err("categorical splits are not supported".into());
        }
    }
    let gains = floats("loss_changes").unwrap_or_else(|_| vec![0.0; n]);
    let hessians = floats("sum_hessian").unwrap_or_else(|_| vec![1.0; n]);
    let at = |list: &[f64], i: usize| list.get(i).copied().unwrap_or(0.0);

    // Node ids → LightGBM's numbering, in preorder from the root; a node
    // reached twice (a cycle, a shared child) is refused.
    let mut number: Vec<Option<Child>> = vec![None; n];
    let mut out = Tree::default();
    let mut order = Vec::new();
    let mut stack = vec![0usize];
    while let Some(id) = stack.pop() {
        if number[id].is_some() {
            return Err(format!(
                "node {id} is reached twice (a cycle or a shared node)"
            ));
        }
        let (l, r) = (lefts[id], rights[id]);
        if l == -1 && r == -1 {
            number[id] = Some(Child::Leaf(out.leaves.len()));
            out.leaves.push(Leaf {
                value: conditions[id] as f32 as f64,
                count: at(&hessians, id).max(0.0),
            });
            continue;
        }
        let child = |c: i64| usize::try_from(c).ok().filter(|&c| c < n);
        let (Some(l), Some(r)) = (child(l), child(r)) else {
            return Err(format!("node {id} has a child outside the tree ({l}, {r})"));
        };
        let feature = usize::try_from(features[id])
            .ok()
            .filter(|&f| f < num_feature)
            .ok_or_else(|| {
                format!(
                    "node {id} splits on feature {}, which the model does not have",
                    features[id]
                )
            })?;
        number[id] = Some(Child::Split(out.splits.len()));
        order.push((id, l, r));
        out.splits.push(Split {
            feature,
            threshold: float_split(conditions[id] as f32).ok_or_else(|| {
                format!(
                    "node {id} has split condition {}, which is not finite",
                    conditions[id]
                )
            })?,
            default_left: default_left[id] != 0,
            missing: Missing::NaN,
            // Set below, once the children are numbered.
            left: Child::Leaf(0),
            right: Child::Leaf(0),
            gain: at(&gains, id),
        });
        stack.push(r);
        stack.push(l);
    }
    for (id, l, r) in order {
        let Some(Child::Split(s)) = number[id] else {
            continue;
        };
        let (Some(left), Some(right)) = (number[l], number[r]) else {
            return Err(format!("node {id} has a child that is not reached"));
        };
        out.splits[s].left = left;
        out.splits[s].right = right;
    }
    Ok(out)
}

/// The largest double `t` with `x <= t` exactly when `(float) x < c`
/// (round to nearest, ties to even): below the midpoint between `c` and the
/// float under it, and on the midpoint when the tie rounds down.
fn float_split(c: f32) -> Option<f64> {
    if !c.is_finite() {
        return None;
    }
    let below = c.next_down();
    if !below.is_finite() {
        return None;
    }
    let mid = (f64::from(below) + f64::from(c)) / 2.0;
    // A tie goes to the float with the even mantissa.
    if below.to_bits() & 1 == 0 {
        Some(mid)
    } else {
        Some(mid.next_down())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_split_matches_float_comparison() {
        for &c in &[0.5f32, 1.0, -3.25, 1e-30, 123456.79, -0.0, 7.0e20] {
            let t = float_split(c).unwrap();
            for &x in &[
                t,
                t.next_up(),
                t.next_down(),
                f64::from(c),
                f64::from(c.next_down()),
            ] {
                assert_eq!(x <= t, (x as f32) < c, "c={c} x={x}");
            }
        }
        assert_eq!(float_split(f32::INFINITY), None);
    }
}
