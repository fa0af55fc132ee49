//! Every malformed model, argument and unsupported XGBoost feature the
//! contract names is refused with 22023, never a crash.

use serde_json::{json, Value};

use super::data::*;
use super::edits::*;
use super::importing::*;
use super::*;

/// The model argument of a malformed case.
enum Model {
    Text(String),
    Bytes(Vec<u8>),
}

struct Case {
    what: &'static str,
    task: &'static str,
    format: &'static str,
    model: Model,
    extra: String,
}

fn case(what: &'static str, task: &'static str, format: &'static str, model: String) -> Case {
    Case {
        what,
        task,
        format,
        model: Model::Text(model),
        extra: String::new(),
    }
}

/// Every malformed model, argument and unsupported XGBoost feature named in
/// the contract is refused with 22023; the connection goes on; no model is
/// stored; a valid import works afterwards, and so does a new connection.
#[test]
fn malformed_models_are_refused_with_22023() {
    let (_pg, proxy) = single();
    let train = diabetes_like(300, 5);
    let few = &train.x[..5];
    let three = three_classes(&train.y);
    let (small, xbin) = small_models(&train);
    let small_multi = model_text(&python_train(
        &train.x,
        &three,
        lgb(
            "multiclass",
            &[("num_class", json!(3)), ("num_leaves", json!(8))],
        ),
        3,
        None,
        few,
    ))
    .to_string();
    let xmulti = model_text(&python_train(
        &train.x,
        &three,
        xgb(
            "multi:softprob",
            &[("num_class", json!(3)), ("max_depth", json!(3))],
        ),
        3,
        None,
        few,
    ))
    .to_string();
    // sex as a categorical feature (two categories).
    let cat_x: Vec<Vec<f64>> = train
        .x
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut r = r.clone();
            r[1] = (i % 5) as f64;
            r
        })
        .collect();
    let cat_y: Vec<f64> = cat_x
        .iter()
        .zip(&train.y)
        .map(|(r, y)| y + 30.0 * (r[1] - 2.0).abs())
        .collect();
    let mut model = xgb("reg:squarederror", &[]);
    model["categorical"] = json!([1]);
    let xcat = python_train(&cat_x, &cat_y, model, 3, None, &cat_x[..2]);
    let xcat = model_text(&xcat).to_string();
    assert!(xgb_any_node(&xcat, "split_type", 1), "a categorical split");
    let qid: Vec<u32> = (0..train.x.len() as u32).map(|i| i / 20).collect();
    let mut model = xgb("rank:pairwise", &[]);
    model["qid"] = json!(qid);
    let xrank = python_train(&train.x, &three, model, 3, None, few);
    let xrank = model_text(&xrank).to_string();
    let xlinear = model_text(&python_train(
        &train.x,
        &train.y,
        model_request(
            "xgboost",
            json!({"booster": "gblinear", "objective": "reg:squarederror", "nthread": 1}),
            &[],
        ),
        3,
        None,
        few,
    ))
    .to_string();
    // Node 1 of the first trees is a split (so pointing it back at the
    // root makes a cycle).
    assert!(!tokens(&small, "left_child", 0)[1].starts_with('-'));
    let xv: Value = serde_json::from_str(&xbin).unwrap();
    assert_ne!(
        xv["learner"]["gradient_booster"]["model"]["trees"][0]["left_children"][1],
        json!(-1)
    );

    let fixed = |t: String| fix_tree_sizes(&t);
    let mut cases = vec![
        case(
            "lightgbm: truncated in a tree",
            "regression",
            "lightgbm",
            small[..small.len() / 2].to_string(),
        ),
        case(
            "lightgbm: truncated in the header",
            "regression",
            "lightgbm",
            small[..120].to_string(),
        ),
        case(
            "lightgbm: a child index out of range",
            "regression",
            "lightgbm",
            fixed(edit(&small, "left_child", 0, set_token(0, "999"))),
        ),
        case(
            "lightgbm: a leaf index out of range",
            "regression",
            "lightgbm",
            fixed(edit(&small, "left_child", 0, set_token(0, "-999"))),
        ),
        case(
            "lightgbm: a cycle back to the root",
            "regression",
            "lightgbm",
            fixed(edit(&small, "left_child", 0, set_token(1, "0"))),
        ),
        case(
            "lightgbm: a node that is its own child",
            "regression",
            "lightgbm",
            fixed(edit(&small, "right_child", 1, set_token(2, "2"))),
        ),
        case(
            "lightgbm: one leaf value too few",
            "regression",
            "lightgbm",
            fixed(edit(&small, "leaf_value", 0, |v| {
                v.rsplit_once(' ').unwrap().0.to_string()
            })),
        ),
        case(
            "lightgbm: one leaf value too many",
            "regression",
            "lightgbm",
            fixed(edit(&small, "leaf_value", 2, |v| format!("{v} 0.25"))),
        ),
        case(
            "lightgbm: a split on a feature the model does not have",
            "regression",
            "lightgbm",
            fixed(edit(&small, "split_feature", 0, set_token(0, "99"))),
        ),
        case(
            "lightgbm: a threshold that is not a number",
            "regression",
            "lightgbm",
            fixed(edit(&small, "threshold", 0, set_token(0, "abc"))),
        ),
        case(
            "lightgbm: num_leaves disagrees with the arrays",
            "regression",
            "lightgbm",
            fixed(edit(&small, "num_leaves", 0, |_| "30".to_string())),
        ),
        case(
            "lightgbm: a categorical decision with no categories",
            "regression",
            "lightgbm",
            fixed(edit(&small, "decision_type", 0, set_token(0, "1"))),
        ),
        case(
            "lightgbm: num_class disagrees with the trees per iteration",
            "classification",
            "lightgbm",
            edit(&small_multi, "num_class", 0, |_| "4".to_string()),
        ),
        case(
            "lightgbm: garbage",
            "regression",
            "lightgbm",
            "hello, world".to_string(),
        ),
        case("lightgbm: empty", "regression", "lightgbm", String::new()),
        case(
            "lightgbm: a header line and nothing else",
            "regression",
            "lightgbm",
            "tree\n".to_string(),
        ),
        case("unknown format", "regression", "onnx", small.clone()),
        case("unknown task", "clustering", "lightgbm", small.clone()),
        case(
            "lightgbm text as xgboost_json",
            "regression",
            "xgboost_json",
            small.clone(),
        ),
        case(
            "xgboost json as lightgbm",
            "classification",
            "lightgbm",
            xbin.clone(),
        ),
        case(
            "xgboost: a categorical split",
            "regression",
            "xgboost_json",
            xcat,
        ),
        case(
            "xgboost: objective rank:pairwise",
            "regression",
            "xgboost_json",
            xrank,
        ),
        case(
            "xgboost: a gblinear booster",
            "regression",
            "xgboost_json",
            xlinear,
        ),
        case(
            "xgboost: num_class disagrees with the trees",
            "classification",
            "xgboost_json",
            xgb_edit(&xmulti, |v| {
                v["learner"]["learner_model_param"]["num_class"] = json!("2");
                v["learner"]["objective"]["softmax_multiclass_param"]["num_class"] = json!("2");
            }),
        ),
        case(
            "xgboost: a child index out of range",
            "classification",
            "xgboost_json",
            xgb_edit(&xbin, |v| tree_mut(v, 0)["left_children"][0] = json!(9999)),
        ),
        case(
            "xgboost: a cycle back to the root",
            "classification",
            "xgboost_json",
            xgb_edit(&xbin, |v| tree_mut(v, 0)["left_children"][1] = json!(0)),
        ),
        case(
            "xgboost: a split on a feature the model does not have",
            "classification",
            "xgboost_json",
            xgb_edit(&xbin, |v| tree_mut(v, 0)["split_indices"][0] = json!(50)),
        ),
        case(
            "xgboost: node arrays of different lengths",
            "classification",
            "xgboost_json",
            xgb_edit(&xbin, |v| {
                tree_mut(v, 1)["left_children"]
                    .as_array_mut()
                    .unwrap()
                    .pop();
            }),
        ),
        case(
            "xgboost: a tree for a class the model does not have",
            "classification",
            "xgboost_json",
            xgb_edit(&xbin, |v| {
                v["learner"]["gradient_booster"]["model"]["tree_info"][0] = json!(1)
            }),
        ),
        case(
            "xgboost: truncated",
            "classification",
            "xgboost_json",
            xbin[..xbin.len() / 2].to_string(),
        ),
        case(
            "xgboost: not JSON",
            "classification",
            "xgboost_json",
            "{\"learner\": nope".to_string(),
        ),
        case(
            "xgboost: JSON but no model",
            "classification",
            "xgboost_json",
            "{}".to_string(),
        ),
    ];
    cases.push(Case {
        what: "feature_names of the wrong length",
        task: "regression",
        format: "lightgbm",
        model: Model::Text(small.clone()),
        extra: names_arg(&["a", "b", "c"]),
    });
    cases.push(Case {
        what: "bytes that are not text, as bytea",
        task: "regression",
        format: "lightgbm",
        model: Model::Bytes(vec![
            0xff, 0xfe, 0x00, 0x01, 0x80, b't', b'r', b'e', b'e', 0xc3,
        ]),
        extra: String::new(),
    });
    // A NUL inside the first leaf value of the first tree (a field the
    // model needs: "-0.5" becomes "-\00.5").
    let mut nul = small.as_bytes().to_vec();
    nul[small.find("\nleaf_value=").unwrap() + "\nleaf_value=".len() + 1] = 0;
    cases.push(Case {
        what: "a NUL byte inside a leaf value, as bytea",
        task: "regression",
        format: "lightgbm",
        model: Model::Bytes(nul),
        extra: String::new(),
    });

    let rt = runtime();
    rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        // A valid import first (and the catalog exists).
        import_simple(&client, "valid", "regression", "lightgbm", &small, "")
            .await
            .unwrap_or_else(|e| panic!("the unmutated model: {e:?}\n{}", proxy.log()));
        let models_before = model_count(&client).await;
        let mut failures = Vec::new();
        for (i, c) in cases.iter().enumerate() {
            let project = format!("bad_{i}");
            let result = match &c.model {
                Model::Text(t) => {
                    import_simple(&client, &project, c.task, c.format, t, &c.extra).await
                }
                Model::Bytes(b) => import_bytea_param(&client, &project, c.task, c.format, b).await,
            };
            match result {
                Ok(imported) => failures.push(format!("{}: imported {imported:?}", c.what)),
                Err(e) => {
                    let (state, message) = db_error(&e, c.what);
                    eprintln!("{}: {state} {message}", c.what);
                    if state != "22023" || message.trim().is_empty() {
                        failures.push(format!("{}: {state} {message}", c.what));
                    }
                }
            }
            alive(&client, c.what).await;
        }
        assert!(
            failures.is_empty(),
            "not refused with 22023:\n{}\n{}",
            failures.join("\n"),
            proxy
                .log()
                .lines()
                .rev()
                .take(50)
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert_eq!(
            model_count(&client).await,
            models_before,
            "a refused import stores no model"
        );
        import_simple(&client, "valid_after", "regression", "lightgbm", &small, "")
            .await
            .unwrap_or_else(|e| panic!("a valid import after the refusals: {e:?}"));
    });
    assert_eq!(ok(&proxy, "SELECT 1"), "1", "a new connection");
}

async fn model_count(client: &tokio_postgres::Client) -> String {
    let msgs = timed(
        "count",
        client.simple_query("SELECT count(*) FROM pgml.models"),
    )
    .await
    .unwrap_or_else(|e| panic!("SELECT count(*) FROM pgml.models: {e:?}"));
    simple_rows(&msgs)[0][0].clone()
}
