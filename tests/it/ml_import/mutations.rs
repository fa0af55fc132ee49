//! Deterministic mutations of valid LightGBM and XGBoost models: each is
//! imported (and then predicts) or refused with 22023, never a crash, a
//! hang or a dropped connection.

use serde_json::{json, Value};

use super::data::*;
use super::edits::*;
use super::importing::*;
use super::*;

/// One deterministic mutation of LightGBM model text: (what, text).
fn lgb_mutation(base: &str, i: u64) -> (String, String) {
    let mut rng = Rng(1000 + i);
    let lines: Vec<&str> = base.split('\n').collect();
    let end = lines
        .iter()
        .position(|l| l.starts_with("end of trees"))
        .expect("end of trees");
    let n_trees = lines.iter().filter(|l| l.starts_with("Tree=")).count();
    let kind = i % 11;
    let tree = rng.below(n_trees);
    let (what, text) = match kind {
        0 => {
            let k = rng.below(end);
            let mut l = lines.clone();
            l.remove(k);
            (format!("line {k} ({:?}) deleted", lines[k]), l.join("\n"))
        }
        1 => {
            let k = rng.below(end);
            let mut l = lines.clone();
            l.insert(k, lines[k]);
            (format!("line {k} ({:?}) doubled", lines[k]), l.join("\n"))
        }
        2 => {
            let key = *rng.pick(&[
                "split_feature",
                "threshold",
                "decision_type",
                "left_child",
                "right_child",
                "leaf_value",
            ]);
            let t = tokens(base, key, tree);
            let (a, b) = (rng.below(t.len()), rng.below(t.len()));
            let text = edit(base, key, tree, |v| {
                let mut t: Vec<&str> = v.split(' ').collect();
                t.swap(a, b);
                t.join(" ")
            });
            (
                format!("tree {tree} {key}: tokens {a} and {b} swapped"),
                text,
            )
        }
        3 => {
            let key = *rng.pick(&["left_child", "right_child"]);
            let t = tokens(base, key, tree);
            let at = rng.below(t.len());
            let new = *rng.pick(&[
                "1000000",
                "-1000000",
                "0",
                "7",
                "8",
                "-8",
                "-9",
                "2147483647",
                "-2147483648",
                "99999999999",
            ]);
            (
                format!("tree {tree} {key}[{at}] = {new}"),
                edit(base, key, tree, set_token(at, new)),
            )
        }
        4 => {
            let t = tokens(base, "split_feature", tree);
            let at = rng.below(t.len());
            let new = *rng.pick(&["8", "1000", "-1", "2147483648", "7"]);
            (
                format!("tree {tree} split_feature[{at}] = {new}"),
                edit(base, "split_feature", tree, set_token(at, new)),
            )
        }
        5 => {
            let key = *rng.pick(&[
                "threshold",
                "leaf_value",
                "shrinkage",
                "decision_type",
                "num_cat",
            ]);
            let t = tokens(base, key, tree);
            let at = rng.below(t.len());
            let new = *rng.pick(&["nan", "inf", "-inf", "1e400", "", "x", "-0"]);
            (
                format!("tree {tree} {key}[{at}] = {new:?}"),
                edit(base, key, tree, set_token(at, new)),
            )
        }
        6 => {
            let at = rng.below(base.len());
            (format!("truncated at byte {at}"), base[..at].to_string())
        }
        7 => {
            let new = *rng.pick(&["0", "1", "2", "1000", "-3"]);
            (
                format!("tree {tree} num_leaves = {new}"),
                edit(base, "num_leaves", tree, |_| new.to_string()),
            )
        }
        8 => {
            let t = tokens(base, "decision_type", tree);
            let at = rng.below(t.len());
            let new = *rng.pick(&["1", "3", "255", "-1", "64", "9"]);
            (
                format!("tree {tree} decision_type[{at}] = {new}"),
                edit(base, "decision_type", tree, set_token(at, new)),
            )
        }
        9 => {
            let (key, values): (&str, &[&str]) = *rng.pick(&[
                ("max_feature_idx", &["0", "3", "100", "-1"][..]),
                ("num_class", &["0", "2", "-1"][..]),
                ("num_tree_per_iteration", &["0", "2"][..]),
                (
                    "objective",
                    &[
                        "binary sigmoid:1",
                        "multiclass num_class:3",
                        "xentropy",
                        "lambdarank",
                        "nonsense",
                    ][..],
                ),
            ]);
            let new = *rng.pick(values);
            (
                format!("header {key} = {new}"),
                edit(base, key, 0, |_| new.to_string()),
            )
        }
        _ => {
            let t = tokens(base, "tree_sizes", 0);
            let at = rng.below(t.len());
            let size: usize = t[at].parse().unwrap();
            let new = match rng.below(3) {
                0 => (size + 10).to_string(),
                1 => "0".to_string(),
                _ => (size / 2).to_string(),
            };
            (
                format!("tree_sizes[{at}] = {new}"),
                edit(base, "tree_sizes", 0, set_token(at, &new)),
            )
        }
    };
    // Half the time the tree sizes are made to agree with the text, so
    // LightGBM's loader itself would read the mutated trees.
    if i.is_multiple_of(2) && kind != 10 {
        (format!("{what}, tree_sizes fixed"), fix_tree_sizes(&text))
    } else {
        (what, text)
    }
}

/// One deterministic mutation of an XGBoost JSON model: (what, text).
fn xgb_mutation(base: &str, i: u64) -> (String, String) {
    let mut rng = Rng(2000 + i);
    let v: Value = serde_json::from_str(base).unwrap();
    let n_trees = v["learner"]["gradient_booster"]["model"]["trees"]
        .as_array()
        .unwrap()
        .len();
    let tree = rng.below(n_trees);
    let n_nodes = v["learner"]["gradient_booster"]["model"]["trees"][tree]["left_children"]
        .as_array()
        .unwrap()
        .len();
    let node = rng.below(n_nodes);
    let mut what = String::new();
    let text = xgb_edit(base, |v| match i % 12 {
        0 | 1 => {
            let key = if i.is_multiple_of(12) {
                "left_children"
            } else {
                "right_children"
            };
            let new = rng
                .pick(&[
                    json!(9999),
                    json!(-5),
                    json!(0),
                    json!(node),
                    json!(2147483648u64),
                    json!(-2147483649i64),
                ])
                .clone();
            what = format!("tree {tree} {key}[{node}] = {new}");
            tree_mut(v, tree)[key][node] = new;
        }
        2 => {
            let new = rng
                .pick(&[json!(8), json!(1000), json!(-1), json!(4294967296u64)])
                .clone();
            what = format!("tree {tree} split_indices[{node}] = {new}");
            tree_mut(v, tree)["split_indices"][node] = new;
        }
        3 => {
            let new = rng
                .pick(&[json!(1e38), Value::Null, json!("x"), json!(-1e38)])
                .clone();
            what = format!("tree {tree} split_conditions[{node}] = {new}");
            tree_mut(v, tree)["split_conditions"][node] = new;
        }
        4 => {
            let new = rng
                .pick(&[json!(2), json!(-1), json!("x"), json!(true)])
                .clone();
            what = format!("tree {tree} default_left[{node}] = {new}");
            tree_mut(v, tree)["default_left"][node] = new;
        }
        5 => {
            let key = *rng.pick(&[
                "left_children",
                "right_children",
                "split_indices",
                "split_conditions",
                "default_left",
                "base_weights",
                "tree_param",
                "split_type",
            ]);
            what = format!("tree {tree} without {key}");
            tree_mut(v, tree).as_object_mut().unwrap().remove(key);
        }
        6 => {
            let key = *rng.pick(&[
                "right_children",
                "split_indices",
                "split_conditions",
                "default_left",
                "base_weights",
            ]);
            what = format!("tree {tree} {key} one short");
            tree_mut(v, tree)[key].as_array_mut().unwrap().pop();
        }
        7 => {
            let new = rng.pick(&[json!(5), json!(-1), json!(1)]).clone();
            what = format!("tree_info[{tree}] = {new}");
            v["learner"]["gradient_booster"]["model"]["tree_info"][tree] = new;
        }
        8 => {
            let new = *rng.pick(&["1000", "0", "-1", "x"]);
            what = format!("num_trees = {new}");
            v["learner"]["gradient_booster"]["model"]["gbtree_model_param"]["num_trees"] =
                json!(new);
        }
        9 => {
            let new = *rng.pick(&["[abc]", "[1,2]", "", "[NaN]", "0.5", "[1e400]"]);
            what = format!("base_score = {new:?}");
            v["learner"]["learner_model_param"]["base_score"] = json!(new);
        }
        10 => {
            let new = *rng.pick(&["0", "1000", "-1"]);
            what = format!("tree {tree} num_nodes = {new}");
            tree_mut(v, tree)["tree_param"]["num_nodes"] = json!(new);
        }
        _ => {
            let new = *rng.pick(&["0", "2", "100000000000"]);
            what = format!("num_feature = {new}");
            v["learner"]["learner_model_param"]["num_feature"] = json!(new);
        }
    });
    (what, text)
}

/// 30 mutations of a LightGBM model and 12 of an XGBoost model (lines
/// deleted and doubled, numbers swapped, indices made large or negative,
/// counts and header values changed, truncation): each is imported (and
/// then predicts, or refuses a feature count the mutation changed: 42804)
/// or refused with 22023; never a crash, a hang or a dropped connection.
#[test]
fn mutated_models_are_imported_or_refused_never_a_crash() {
    let (_pg, proxy) = single();
    let train = diabetes_like(300, 6);
    let (lgb, xgb) = small_models(&train);
    let mut mutations: Vec<(String, &str, &str, String)> = Vec::new();
    for i in 0..30 {
        let (what, text) = lgb_mutation(&lgb, i);
        mutations.push((
            format!("lightgbm #{i}: {what}"),
            "regression",
            "lightgbm",
            text,
        ));
    }
    for i in 0..12 {
        let (what, text) = xgb_mutation(&xgb, i);
        mutations.push((
            format!("xgboost #{i}: {what}"),
            "classification",
            "xgboost_json",
            text,
        ));
    }
    let features = array_of(&train.x[7]);
    let rt = runtime();
    rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        // The models before mutation import.
        import_simple(&client, "unmutated_lgb", "regression", "lightgbm", &lgb, "")
            .await
            .unwrap_or_else(|e| panic!("the unmutated LightGBM model: {e:?}"));
        import_simple(
            &client,
            "unmutated_xgb",
            "classification",
            "xgboost_json",
            &xgb,
            "",
        )
        .await
        .unwrap_or_else(|e| panic!("the unmutated XGBoost model: {e:?}"));
        let (mut imported, mut refused, mut failures) = (0, 0, Vec::new());
        for (i, (what, task, format, text)) in mutations.iter().enumerate() {
            let project = format!("mut_{i}");
            match import_simple(&client, &project, task, format, text, "").await {
                Ok(_) => {
                    imported += 1;
                    let sql = format!("SELECT pgml.predict('{project}', {features})");
                    match timed(what, client.simple_query(&sql)).await {
                        Ok(msgs) => {
                            let rows = simple_rows(&msgs);
                            if rows.len() != 1 {
                                failures
                                    .push(format!("{what}: imported, then predict gave {rows:?}"));
                            } else {
                                eprintln!("{what}: imported, predicts {}", rows[0][0]);
                            }
                        }
                        Err(e) => {
                            let (state, message) = db_error(&e, what);
                            eprintln!("{what}: imported, predict: {state} {message}");
                            if state != "42804" {
                                failures.push(format!(
                                    "{what}: imported, then predict failed: {state} {message}"
                                ));
                            }
                        }
                    }
                }
                Err(e) => {
                    refused += 1;
                    let (state, message) = db_error(&e, what);
                    eprintln!("{what}: {state} {message}");
                    if state != "22023" {
                        failures.push(format!("{what}: {state} {message}"));
                    }
                }
            }
            alive(&client, what).await;
        }
        eprintln!("{imported} mutations imported, {refused} refused");
        assert!(
            failures.is_empty(),
            "{} of {} mutations went wrong:\n{}",
            failures.len(),
            mutations.len(),
            failures.join("\n")
        );
        assert!(
            refused >= 10,
            "most mutations break the model: only {refused} refused"
        );
    });
    assert_eq!(
        ok(&proxy, "SELECT 1"),
        "1",
        "a new connection after the mutations"
    );
}
