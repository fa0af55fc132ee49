//! LightGBM models trained by Python, imported every way a client sends
//! them, predicting as Python's lightgbm; and pgml.export_model's text
//! read back by Python's lightgbm.

use serde_json::json;

use super::checks::*;
use super::data::*;
use super::importing::*;
use super::*;

/// A Python-trained LightGBM regression (with missing values) imported with
/// feature names predicts what Python predicts, bit for bit as `real`: from
/// a table with ARRAY and row input, by project and by model id, from
/// constants, in text and binary results. A second import into the project
/// deploys the new model at once; the first still answers by its id. A
/// model without feature names, and a model given as a bytea literal.
#[test]
fn lightgbm_regression_predicts_as_python_lightgbm() {
    let (pg, proxy) = single();
    let diab = Diab::create(&proxy, 400, 1, 15);
    let (train, rows) = (&diab.train, &diab.rows);
    let big = diab.fit(&train.y, lgb("regression", &[]), 40, Some(&NAMES));
    let want = floats(&big["predict"]);

    let imported = import_psql(
        &pg,
        &proxy,
        "diab",
        "regression",
        "lightgbm",
        model_text(&big),
        &names_arg(&NAMES),
    );
    assert_eq!(imported.algorithm, "lightgbm", "{imported:?}");
    let array = array_input(&NAMES);
    assert_predicts_exactly(&proxy, "'diab'", "diab", &array, &want, "ARRAY input");
    let row = row_input(&NAMES);
    assert_predicts_exactly(&proxy, "'diab'", "diab", &row, &want, "row input");
    let by_id = imported.model_id.to_string();
    assert_predicts_exactly(&proxy, &by_id, "diab", &array, &want, "by model id");
    // Constants (NaN among them) need no table.
    let n = rows.len();
    for i in [0, 1, 20, n - 7, n - 5, n - 3, n - 1] {
        let got = ok(
            &proxy,
            &format!("SELECT pgml.predict('diab', {})", array_of(&rows[i])),
        );
        assert_exact(&[got], &want[i..=i], &format!("constant row {}", i + 1));
    }

    let rt = runtime();
    rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        // Binary results of the extended protocol.
        let sql = format!("SELECT pgml.predict('diab', {array}) FROM diab ORDER BY id");
        let got: Vec<String> = timed(&sql, client.query(sql.as_str(), &[]))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
            .iter()
            .map(|r| format!("{:?}", r.get::<_, f32>(0)))
            .collect();
        assert_exact(&got, &want, "binary results");
        // The model's feature count is enforced as for trained models.
        let err = timed(
            "3 features",
            client.simple_query("SELECT pgml.predict('diab', ARRAY[1, 2, 3])"),
        )
        .await
        .expect_err("3 features for an 8-feature model");
        let (state, message) = db_error(&err, "3 features");
        assert_eq!(state, "42804", "{message}");
        alive(&client, "a feature count error").await;
    });

    // A second import into the project, without feature_names (the
    // model's own line names them): deployed at once.
    let small = diab.fit(&train.y, lgb("regression", &[]), 8, Some(&NAMES));
    let second = import_psql(
        &pg,
        &proxy,
        "diab",
        "regression",
        "lightgbm",
        model_text(&small),
        "",
    );
    assert!(
        second.model_id > imported.model_id,
        "{second:?} after {imported:?}"
    );
    let small_want = floats(&small["predict"]);
    let what = "after the second import";
    assert_predicts_exactly(&proxy, "'diab'", "diab", &array, &small_want, what);
    let what = "the first model by its id after the second import";
    assert_predicts_exactly(&proxy, &by_id, "diab", &array, &want, what);
    // A model trained without names (Column_0, ...): named by default.
    let unnamed = diab.fit(&train.y, lgb("regression", &[]), 5, None);
    import_psql(
        &pg,
        &proxy,
        "unnamed",
        "regression",
        "lightgbm",
        model_text(&unnamed),
        "",
    );
    let what = "a model without feature names";
    let unnamed_want = floats(&unnamed["predict"]);
    assert_predicts_exactly(&proxy, "'unnamed'", "diab", &array, &unnamed_want, what);
    // The model as a bytea literal ('\x' hex).
    let hex: String = model_text(&small)
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    let out = ok_script(
        &proxy,
        &format!(
            "SELECT * FROM pgml.import_model('hexlit', 'regression', 'lightgbm', '\\x{hex}'::bytea);\n"
        ),
    );
    let cols: Vec<String> = out.split('|').map(str::to_string).collect();
    Imported::from_texts(&cols).check(&pg, "hexlit", "regression", "lightgbm");
    let what = "a bytea literal";
    assert_predicts_exactly(&proxy, "'hexlit'", "diab", &array, &small_want, what);
}

/// LightGBM binary and multiclass models imported through tokio-postgres
/// (the model a text parameter, then a bytea parameter): predict_proba is
/// Python's probabilities within 1e-6, predict the class index.
#[test]
fn lightgbm_classification_predicts_as_python_lightgbm() {
    let (pg, proxy) = single();
    let diab = Diab::create(&proxy, 400, 2, 15);
    let train = &diab.train;
    let bin = diab.fit(&two_classes(&train.y), lgb("binary", &[]), 30, Some(&NAMES));
    let multi = lgb("multiclass", &[("num_class", json!(3))]);
    let multi = diab.fit(&three_classes(&train.y), multi, 25, None);
    let array = array_input(&NAMES);
    let bin_proba = binary_proba(&floats(&bin["predict"]));
    let multi_proba = matrix(&multi["predict"]);

    let rt = runtime();
    let (b, m) = rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        let (b, m) = import_as_parameters(
            &client,
            &proxy,
            ("classification", "lightgbm"),
            ("bin", model_text(&bin)),
            ("multi", model_text(&multi)),
        )
        .await;
        // predict_proba in binary results.
        let sql = format!("SELECT pgml.predict_proba('multi', {array}) FROM diab ORDER BY id");
        let got: Vec<String> = timed(&sql, client.query(sql.as_str(), &[]))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
            .iter()
            .map(|r| {
                let p: Vec<f32> = r.get(0);
                let items: Vec<String> = p.iter().map(|v| format!("{v:?}")).collect();
                format!("{{{}}}", items.join(","))
            })
            .collect();
        assert_proba(
            &got,
            &multi_proba,
            1e-6,
            "multiclass predict_proba, binary results",
        );
        (b, m)
    });
    b.check(&pg, "bin", "classification", "lightgbm");
    m.check(&pg, "multi", "classification", "lightgbm");

    assert_classifies(&proxy, "'bin'", "diab", &array, &bin_proba, "binary");
    assert_classifies(
        &proxy,
        "'multi'",
        "diab",
        &array,
        &multi_proba,
        "multiclass",
    );
    assert_classes(
        &column(&proxy, "predict", "'multi'", "diab", &row_input(&NAMES)),
        &multi_proba,
        "multiclass predict, row input",
    );
}

/// A LightGBM model with a categorical feature (more categories than
/// max_cat_to_onehot: many-vs-many splits). The contract restricts only
/// XGBoost to numeric splits, so either it imports, and then predicts as
/// Python does for seen, unseen, negative, fractional and missing
/// categories and exports text that reads back the same, or it is refused
/// with 22023 naming the categorical split (the connection going on).
#[test]
fn lightgbm_categorical_splits_predict_as_python_or_are_refused() {
    let (pg, proxy) = single();
    let names = ["shop", "x1", "x2", "x3"];
    let mut rng = Rng(5);
    let effect = [10.0, -5.0, 3.0, 8.0, 0.0, -2.0];
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for _ in 0..400 {
        let shop = rng.below(6);
        let f = vec![shop as f64, rng.normal(), rng.normal(), rng.normal()];
        y.push(effect[shop] + 4.0 * f[1] - 2.0 * f[2] * f[3] + 0.3 * rng.normal());
        x.push(f);
    }
    for row in x.iter_mut().step_by(20) {
        row[0] = f64::NAN;
    }
    let mut rows: Vec<Vec<f64>> = x[..20].to_vec();
    for shop in [7.0, 12.0, -1.0, f64::NAN, 2.5, 100.0, 0.0, 5.0] {
        rows.push(vec![shop, x[0][1], x[0][2], x[0][3]]);
    }
    create_table(&proxy, "shops", &names, &rows);
    let mut model = lgb(
        "regression",
        &[
            ("max_cat_to_onehot", json!(4)),
            ("min_data_per_group", json!(5)),
            ("cat_smooth", json!(1.0)),
            ("cat_l2", json!(1.0)),
        ],
    );
    model["categorical"] = json!([0]);
    let answer = python_train(&x, &y, model, 20, Some(&names), &rows);
    let text = model_text(&answer);
    assert!(
        text.contains("cat_boundaries="),
        "the model has categorical splits"
    );
    let want = floats(&answer["predict"]);
    let rt = runtime();
    let imported = rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        let result = import_simple(&client, "shops", "regression", "lightgbm", text, "").await;
        let imported = match result {
            Ok(imported) => imported,
            Err(e) => {
                let (state, message) = db_error(&e, "categorical");
                assert_eq!(state, "22023", "{message}");
                assert!(message.contains("categorical"), "{message}");
                alive(&client, "a refused categorical model").await;
                return None;
            }
        };
        let exported = export(&client, imported.model_id)
            .await
            .unwrap_or_else(|e| panic!("export: {e:?}"));
        Some((imported, exported))
    });
    let Some((imported, exported)) = imported else {
        return;
    };
    imported.check(&pg, "shops", "regression", "lightgbm");
    let array = array_input(&names);
    assert_predicts_exactly(
        &proxy,
        "'shops'",
        "shops",
        &array,
        &want,
        "categorical splits",
    );
    let back = lgb_load(&exported, &rows);
    assert_eq!(
        back["predict"], answer["predict"],
        "the export predicts as the original"
    );
}

/// export_model gives LightGBM text that Python's lightgbm loads and
/// predicts with exactly as the original (imported regression and
/// multiclass; a model pgml.train trained, against pgml.predict); the text
/// imports again. A linear model: 0A000; an unknown id: 42704. An imported
/// XGBoost model: 0A000, or LightGBM text that predicts as xgboost does.
#[test]
fn export_model_round_trips_through_python_lightgbm() {
    let (pg, proxy) = single();
    let diab = Diab::create(&proxy, 300, 4, 15);
    let (train, rows) = (&diab.train, &diab.rows);
    let reg = diab.fit(&train.y, lgb("regression", &[]), 30, Some(&NAMES));
    let multi = diab.fit(
        &three_classes(&train.y),
        lgb("multiclass", &[("num_class", json!(3))]),
        10,
        Some(&NAMES),
    );
    let xbin = diab.fit(
        &two_classes(&train.y),
        xgb("binary:logistic", &[]),
        10,
        None,
    );
    let r = import_psql(
        &pg,
        &proxy,
        "ereg",
        "regression",
        "lightgbm",
        model_text(&reg),
        &names_arg(&NAMES),
    );
    let m = import_psql(
        &pg,
        &proxy,
        "emulti",
        "classification",
        "lightgbm",
        model_text(&multi),
        "",
    );
    let x = import_psql(
        &pg,
        &proxy,
        "exgb",
        "classification",
        "xgboost_json",
        model_text(&xbin),
        "",
    );

    // A model pgml.train trained (no missing values: they are the data
    // of a table), and a linear one.
    let complete: Vec<Vec<f64>> = train
        .x
        .iter()
        .map(|r| {
            r.iter()
                .map(|v| if v.is_nan() { 0.0 } else { *v })
                .collect()
        })
        .collect();
    let mut with_y: Vec<&str> = NAMES.to_vec();
    with_y.push("y");
    let table: Vec<Vec<f64>> = complete
        .iter()
        .zip(&train.y)
        .map(|(r, y)| r.iter().copied().chain([*y]).collect())
        .collect();
    create_table(&proxy, "tr", &with_y, &table);
    ok(
        &proxy,
        &format!("CREATE VIEW tr_v AS SELECT {}, y FROM tr", NAMES.join(", ")),
    );
    ok(
        &proxy,
        "SELECT * FROM pgml.train('trained', 'regression', 'tr_v', 'y', algorithm => 'lightgbm', hyperparams => '{\"n_estimators\": 20}')",
    );
    ok(
        &proxy,
        "SELECT * FROM pgml.train('lin', 'regression', 'tr_v', 'y', algorithm => 'linear')",
    );
    let trained = deployed_id(&pg, "trained");
    let linear = deployed_id(&pg, "lin");

    let rt = runtime();
    let (reg_text, multi_text, trained_text, xgb_export) = rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        let mut texts = Vec::new();
        for id in [r.model_id, m.model_id, trained] {
            texts.push(
                export(&client, id)
                    .await
                    .unwrap_or_else(|e| panic!("export_model({id}): {e:?}\n{}", proxy.log())),
            );
        }
        for (id, state) in [(linear, "0A000"), (987_654_321, "42704")] {
            let err = export(&client, id)
                .await
                .expect_err(&format!("export_model({id})"));
            let (got, message) = db_error(&err, "export_model");
            assert_eq!(got, state, "export_model({id}): {message}");
            alive(&client, &format!("export_model({id})")).await;
        }
        let xgb_export = match export(&client, x.model_id).await {
            Ok(text) => Some(text),
            Err(e) => {
                let (state, message) = db_error(&e, "export xgboost");
                assert_eq!(state, "0A000", "{message}");
                None
            }
        };
        alive(&client, "export of an xgboost model").await;
        (
            texts.remove(0),
            texts.remove(0),
            texts.remove(0),
            xgb_export,
        )
    });

    for (what, text, original) in [
        ("regression", &reg_text, &reg),
        ("multiclass", &multi_text, &multi),
    ] {
        let back = lgb_load(text, rows);
        assert_eq!(
            back["predict"], original["predict"],
            "{what}: the export's predictions"
        );
        assert_eq!(
            back["raw_score"], original["raw_score"],
            "{what}: the export's raw scores"
        );
        assert_eq!(back["num_feature"], json!(8), "{what}");
    }
    // The export imports again.
    import_psql(
        &pg,
        &proxy,
        "again",
        "regression",
        "lightgbm",
        &reg_text,
        "",
    );
    let array = array_input(&NAMES);
    let what = "the exported text imported again";
    assert_predicts_exactly(
        &proxy,
        "'again'",
        "diab",
        &array,
        &floats(&reg["predict"]),
        what,
    );
    // pgml.train's model: Python predicts from the export what pgml.predict gives.
    let back = lgb_load(&trained_text, &complete);
    let what = "a pgml.train model's export against pgml.predict";
    assert_predicts_exactly(
        &proxy,
        "'trained'",
        "tr",
        &array,
        &floats(&back["predict"]),
        what,
    );
    if let Some(text) = xgb_export {
        let back = lgb_load(&text, rows);
        let want = floats(&xbin["predict"]);
        let got: Vec<f32> = floats(&back["predict"]).iter().map(|v| *v as f32).collect();
        assert_close(
            &got,
            &want,
            1e-6,
            "an xgboost model exported as LightGBM text",
        );
    }
}
