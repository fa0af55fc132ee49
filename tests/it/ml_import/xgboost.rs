//! XGBoost JSON models trained by Python, imported and predicting as
//! xgboost does; and psycopg 3 sending LightGBM and XGBoost models as bytes
//! and as str.

use serde_json::json;

use super::checks::*;
use super::data::*;
use super::edits::xgb_any_node;
use super::importing::*;
use super::*;

/// XGBoost JSON models (reg:squarederror, binary:logistic, multi:softprob,
/// multi:softmax; 3.x's bracketed base_score, a vector of them for
/// multiclass; missing values in training, so default directions matter)
/// predict what xgboost's predict gives, within 1e-6 (relative for the
/// regression), on rows that include training rows (split conditions are
/// float32 values of them: xgboost compares the float32 feature) and
/// missing values. Imported through psql, a text and a bytea parameter.
#[test]
fn xgboost_json_predicts_as_xgboost() {
    let (pg, proxy) = single();
    let diab = Diab::create(&proxy, 500, 3, 40);
    let (train, rows) = (&diab.train, &diab.rows);
    let three = three_classes(&train.y);
    let reg = diab.fit(&train.y, xgb("reg:squarederror", &[]), 40, Some(&NAMES));
    let bin = diab.fit(
        &two_classes(&train.y),
        xgb("binary:logistic", &[]),
        30,
        None,
    );
    let prob = diab.fit(
        &three,
        xgb("multi:softprob", &[("num_class", json!(3))]),
        20,
        None,
    );
    let soft = diab.fit(
        &three,
        xgb("multi:softmax", &[("num_class", json!(3))]),
        20,
        None,
    );
    // The models use default directions.
    for answer in [&reg, &bin, &prob, &soft] {
        assert!(
            xgb_any_node(model_text(answer), "default_left", 1),
            "a split sends missing values left"
        );
    }
    let array = array_input(&NAMES);

    import_psql(
        &pg,
        &proxy,
        "xreg",
        "regression",
        "xgboost_json",
        model_text(&reg),
        "",
    );
    let reg_want = floats(&reg["predict"]);
    let what = "reg:squarederror";
    assert_predicts_close(&proxy, "'xreg'", "diab", &array, &reg_want, 1e-6, what);
    let row = row_input(&NAMES);
    let what = "reg:squarederror, row input";
    assert_predicts_close(&proxy, "'xreg'", "diab", &row, &reg_want, 1e-6, what);

    let rt = runtime();
    let (b, p) = rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        import_as_parameters(
            &client,
            &proxy,
            ("classification", "xgboost_json"),
            ("xbin", model_text(&bin)),
            ("xprob", model_text(&prob)),
        )
        .await
    });
    b.check(&pg, "xbin", "classification", "xgboost_json");
    p.check(&pg, "xprob", "classification", "xgboost_json");
    let bin_proba = binary_proba(&floats(&bin["predict"]));
    assert_classifies(
        &proxy,
        "'xbin'",
        "diab",
        &array,
        &bin_proba,
        "binary:logistic",
    );
    let prob_proba = matrix(&prob["predict"]);
    assert_classifies(
        &proxy,
        "'xprob'",
        "diab",
        &array,
        &prob_proba,
        "multi:softprob",
    );

    // multi:softmax: predict is xgboost's class; probabilities are the
    // softmax of its margins.
    import_psql(
        &pg,
        &proxy,
        "xsoft",
        "classification",
        "xgboost_json",
        model_text(&soft),
        &names_arg(&NAMES),
    );
    let soft_proba: Vec<Vec<f64>> = matrix(&soft["margin"]).iter().map(|m| softmax(m)).collect();
    assert_proba(
        &column(&proxy, "predict_proba", "'xsoft'", "diab", &array),
        &soft_proba,
        1e-6,
        "multi:softmax predict_proba",
    );
    let classes = floats(&soft["predict"]);
    let got = column(&proxy, "predict", "'xsoft'", "diab", &array);
    for (i, (g, (c, pr))) in got.iter().zip(classes.iter().zip(&soft_proba)).enumerate() {
        if argmax(pr).is_some() {
            assert_eq!(real(g), *c as f32, "multi:softmax predict, row {}", i + 1);
        }
    }
    // Constants with NaN.
    let n = rows.len();
    for i in [0, 39, n - 7, n - 2, n - 1] {
        let got = real(&ok(
            &proxy,
            &format!("SELECT pgml.predict('xreg', {})", array_of(&rows[i])),
        ));
        let what = format!("constant row {}", i + 1);
        assert_close(&[got], &reg_want[i..=i], 1e-6, &what);
    }
}

/// psycopg 3 sends the model as bytes (a binary bytea parameter, and a text
/// one: `\x` hex) and as str: each form imports the same model, which
/// predicts as Python's library does. LightGBM text and XGBoost JSON.
#[test]
fn psycopg_sends_the_model_as_bytea_or_text() {
    let (pg, proxy) = single();
    let diab = Diab::create(&proxy, 300, 7, 10);
    let train = &diab.train;
    let lgb_model = diab.fit(&train.y, lgb("regression", &[]), 15, Some(&NAMES));
    let xgb_model = diab.fit(&train.y, xgb("reg:squarederror", &[]), 15, None);
    let url = proxy.url("app", "app_pw", "app");
    let array = array_input(&NAMES);
    for (prefix, format, answer) in [
        ("plgb", "lightgbm", &lgb_model),
        ("pxgb", "xgboost_json", &xgb_model),
    ] {
        let out = python_client_json(
            "import_model.py",
            &url,
            &json!({"model": model_text(answer), "task": "regression", "format": format, "project": prefix}),
        );
        let entries = out.as_array().expect("a list");
        assert_eq!(entries.len(), 3, "{out}");
        let want = floats(&answer["predict"]);
        for e in entries {
            let form = e["form"].as_str().unwrap();
            let project = format!("{prefix}_{form}");
            let row = e["row"]
                .as_array()
                .unwrap_or_else(|| panic!("{format} as psycopg {form}: {e}\n{}", proxy.log()));
            let cols: Vec<String> = row
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect();
            Imported::from_texts(&cols).check(&pg, &project, "regression", format);
            let (model, what) = (
                format!("'{project}'"),
                format!("{format} as psycopg {form}"),
            );
            if format == "lightgbm" {
                assert_predicts_exactly(&proxy, &model, "diab", &array, &want, &what);
            } else {
                assert_predicts_close(&proxy, &model, "diab", &array, &want, 1e-6, &what);
            }
        }
    }
}
