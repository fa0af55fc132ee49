//! Import checks: models parse and predict as their own libraries'
//! structure says, malformed ones are refused with 22023 naming the
//! problem, and thousands of mutated files never get past the checks into
//! something that crashes LightGBM (the fuzz target `model_import` goes
//! further; this runs in every `cargo test`).

use ndarray::{array, Array2};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

use super::*;
use crate::ml::algorithms::{self, Algorithm};

/// A small LightGBM regression model's text, trained here.
fn lightgbm_text() -> String {
    let mut rng = StdRng::seed_from_u64(7);
    let x = Array2::from_shape_fn((200, 3), |_| rng.gen_range(-1.0..1.0));
    let y = Array2::from_shape_fn((200, 1), |(r, _)| x[[r, 0]] * 2.0 - x[[r, 2]]);
    let mut params = Map::new();
    params.insert("num_iterations".into(), json!(5));
    params.insert("num_leaves".into(), json!(4));
    let model = algorithms::fit(
        Algorithm::Lightgbm,
        Task::Regression,
        x.view(),
        y.view(),
        0,
        &params,
        1,
    )
    .unwrap();
    String::from_utf8(model.to_bytes().unwrap()).unwrap()
}

/// An XGBoost JSON model of two stumps (binary:logistic): x0 < 0.5 and
/// x1 < -1.0, missing going left in the first.
fn xgboost_json() -> Value {
    let stump = |feature: i64, cond: f64, default_left: i64| {
        json!({
            "left_children": [1, -1, -1],
            "right_children": [2, -1, -1],
            "split_indices": [feature, 0, 0],
            "split_conditions": [cond, -0.4, 0.6],
            "default_left": [default_left, 0, 0],
            "split_type": [0, 0, 0],
            "loss_changes": [3.0, 0.0, 0.0],
            "sum_hessian": [10.0, 4.0, 6.0],
            "tree_param": {"num_nodes": "3", "size_leaf_vector": "1"}
        })
    };
    json!({
        "learner": {
            "feature_names": ["a", "b"],
            "gradient_booster": {
                "name": "gbtree",
                "model": {"trees": [stump(0, 0.5, 1), stump(1, -1.0, 0)], "tree_info": [0, 0]}
            },
            "learner_model_param": {"base_score": "[5E-1]", "num_class": "0", "num_feature": "2"},
            "objective": {"name": "binary:logistic"}
        },
        "version": [3, 2, 0]
    })
}

#[test]
fn an_xgboost_model_predicts_as_its_trees_say() {
    let forest = parse("xgboost_json", xgboost_json().to_string().as_bytes()).unwrap();
    let built = build(&forest, Task::Classification, &[]).unwrap();
    assert_eq!(built.names, vec!["a", "b"]);
    let x = array![[0.0, 0.0], [0.5, -2.0], [f64::NAN, f64::NAN]];
    let p = built.model.predict_proba(x.view()).unwrap();
    let sigmoid = |m: f64| 1.0 / (1.0 + (-m).exp());
    // Row 0: left (-0.4), right (0.6); row 1: 0.5 is not < 0.5 (0.6), left
    // (-0.4); row 2: missing goes left in tree 0 and right in tree 1.
    for (row, margin) in [(0, 0.2), (1, 0.2), (2, 0.2)] {
        assert!(
            (p[[row, 1]] - sigmoid(margin)).abs() < 1e-6,
            "row {row}: {}",
            p[[row, 1]]
        );
    }
    let x = array![[0.0, -2.0], [0.7, 0.0], [0.499_999_99, -1.000_000_01]];
    let p = built.model.predict_proba(x.view()).unwrap();
    // The last row: (float) 0.49999999 is 0.5, not < 0.5: right; (float)
    // -1.00000001 is -1.0, not < -1.0: right.
    for (row, margin) in [(0, -0.8), (1, 1.2), (2, 1.2)] {
        assert!(
            (p[[row, 1]] - sigmoid(margin)).abs() < 1e-6,
            "row {row}: {}",
            p[[row, 1]]
        );
    }
}

#[test]
fn malformed_models_are_refused_naming_the_problem() {
    let mut cycle = xgboost_json();
    cycle["learner"]["gradient_booster"]["model"]["trees"][0]["left_children"] = json!([0, -1, -1]);
    let mut out_of_range = xgboost_json();
    out_of_range["learner"]["gradient_booster"]["model"]["trees"][1]["right_children"] =
        json!([9, -1, -1]);
    let mut categorical = xgboost_json();
    categorical["learner"]["gradient_booster"]["model"]["trees"][0]["split_type"] =
        json!([1, 0, 0]);
    let mut ranking = xgboost_json();
    ranking["learner"]["objective"]["name"] = json!("rank:pairwise");
    for (model, expected) in [
        (cycle, "reached twice"),
        (out_of_range, "outside the tree"),
        (categorical, "categorical"),
        (ranking, "rank:pairwise"),
    ] {
        let e = parse("xgboost_json", model.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.sqlstate(), "22023");
        assert!(e.to_string().contains(expected), "{e}");
    }
    let text = lightgbm_text();
    let cyclic = text.replacen("left_child=1", "left_child=0", 1);
    let e = parse("lightgbm", cyclic.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("reached twice"), "{e}");
    for (bad, expected) in [
        ("", "not a LightGBM text model"),
        ("garbage", "not a LightGBM text model"),
        (&text[..text.len() / 3], "tree"),
    ] {
        let e = parse("lightgbm", bad.as_bytes()).unwrap_err();
        assert_eq!(e.sqlstate(), "22023");
        assert!(e.to_string().contains(expected), "{bad:.40}: {e}");
    }
    assert!(parse("onnx", b"x")
        .unwrap_err()
        .to_string()
        .contains("onnx"));
    let forest = parse("lightgbm", text.as_bytes()).unwrap();
    let e = build(&forest, Task::Classification, &[]).err().unwrap();
    assert!(e.to_string().contains("regression"), "{e}");
    let e = build(&forest, Task::Regression, &["a".into()])
        .err()
        .unwrap();
    assert!(e.to_string().contains("3 features"), "{e}");
}

#[test]
fn a_lightgbm_model_reimports_to_the_same_predictions() {
    let text = lightgbm_text();
    let original =
        algorithms::load(Algorithm::Lightgbm, Task::Regression, text.as_bytes()).unwrap();
    let forest = parse("lightgbm", text.as_bytes()).unwrap();
    let built = build(&forest, Task::Regression, &[]).unwrap();
    let x = array![[0.1, -0.3, 0.7], [-0.9, 0.0, 0.2], [f64::NAN, 1.0, -1.0]];
    assert_eq!(
        original.predict(x.view()).unwrap(),
        built.model.predict(x.view()).unwrap()
    );
    // TreeSHAP works on the rewritten text: counts survived.
    let c = built.model.tree_contributions(x.view()).unwrap().unwrap();
    let o = original.tree_contributions(x.view()).unwrap().unwrap();
    assert_eq!(c, o);
}

/// Mutations of valid files: each is refused or builds a model that
/// predicts; none panics, crashes or hangs.
#[test]
fn mutated_models_are_refused_or_work() {
    let mut rng = StdRng::seed_from_u64(19);
    let text = lightgbm_text();
    let lines: Vec<&str> = text.lines().collect();
    let x = array![[0.1, -0.3, 0.7], [f64::NAN, 1e30, -1e-40]];
    let mut imported = 0;
    for _ in 0..600 {
        let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        for _ in 0..rng.gen_range(1..4) {
            let i = rng.gen_range(0..l.len());
            match rng.gen_range(0..5) {
                0 => {
                    l.remove(i);
                }
                1 => {
                    let dup = l[i].clone();
                    l.insert(i, dup);
                }
                2 => {
                    let j = rng.gen_range(0..l.len());
                    l.swap(i, j);
                }
                _ => {
                    // A number in the line replaced by an extreme one.
                    let tokens: Vec<String> = l[i]
                        .split(' ')
                        .map(|t| {
                            if rng.gen_bool(0.3) {
                                let pick = ["-1", "0", "1", "-2", "99999", "1e308", "nan", "-0"];
                                let v = pick[rng.gen_range(0..pick.len())];
                                match t.split_once('=') {
                                    Some((k, _)) => format!("{k}={v}"),
                                    None => v.to_string(),
                                }
                            } else {
                                t.to_string()
                            }
                        })
                        .collect();
                    l[i] = tokens.join(" ");
                }
            }
        }
        let mutated = l.join("\n");
        if let Ok(forest) = parse("lightgbm", mutated.as_bytes()) {
            if let Ok(built) = build(&forest, Task::Regression, &[]) {
                imported += 1;
                if built.model.num_features() == 3 {
                    built.model.predict(x.view()).unwrap();
                    built.model.tree_contributions(x.view()).unwrap().unwrap();
                }
            }
        }
    }
    assert!(
        imported > 0,
        "no mutation kept a valid model: the test checks nothing"
    );
    let json = xgboost_json();
    for _ in 0..600 {
        let mut m = json.clone();
        mutate(&mut m, &mut rng);
        if let Ok(forest) = parse("xgboost_json", m.to_string().as_bytes()) {
            if let Ok(built) = build(&forest, Task::Classification, &[]) {
                if built.model.num_features() == 2 {
                    built
                        .model
                        .predict_proba(array![[0.3, 2.0]].view())
                        .unwrap();
                }
            }
        }
    }
}

/// Replaces some numbers of the JSON by extreme or wrong-typed values.
fn mutate(v: &mut Value, rng: &mut StdRng) {
    match v {
        Value::Number(_) if rng.gen_bool(0.08) => {
            let picks = [
                json!(-1),
                json!(0),
                json!(5),
                json!(1e300),
                json!(-7),
                json!("x"),
                json!(null),
            ];
            *v = picks[rng.gen_range(0..picks.len())].clone();
        }
        Value::String(s) if rng.gen_bool(0.05) => {
            *s = ["0", "-1", "3", "[1,2]", "1e999", ""][rng.gen_range(0..6)].to_string();
        }
        Value::Array(items) => {
            if rng.gen_bool(0.03) && !items.is_empty() {
                items.pop();
            }
            for item in items {
                mutate(item, rng);
            }
        }
        Value::Object(map) => {
            for (_, item) in map.iter_mut() {
                mutate(item, rng);
            }
        }
        _ => {}
    }
}
