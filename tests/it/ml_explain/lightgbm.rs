//! `pgml.explain` and `pgml.feature_importance` of LightGBM models:
//! regression, binary and multiclass against Python lightgbm's
//! pred_contrib and gain; array elements and one-hot categories named.

use std::collections::BTreeSet;

use super::explanation::*;
use super::metrics::*;
use super::*;

const DIABETES: [&str; 10] = [
    "age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6",
];

#[test]
fn explain_lightgbm_regression_is_lightgbm_treeshap() {
    let (pg, proxy) = single();
    train_on(&proxy, "diabetes", "dia_lgbm", "lightgbm", LGBM);
    let rows = Rows::read(&pg, "pgml.diabetes", "target");
    assert_eq!(rows.features, DIABETES.map(String::from).to_vec());
    assert_eq!(rows.len(), 442);
    let py = lightgbm_reference(&pg, "dia_lgbm", &rows.x, &rows.test_x());
    assert_eq!(py.num_class, 1);

    // Every row: the predicted value, the explanation, the features as
    // Postgres gives them directly.
    let arr = array_of(&rows.features);
    let sql = format!(
        "SELECT age::float8, s6::float8, pgml.predict('dia_lgbm', {arr}), pgml.explain('dia_lgbm', {arr}) \
         FROM pgml.diabetes ORDER BY ctid"
    );
    let out = select(&proxy, &sql, 4);
    assert_eq!(out.len(), rows.len(), "{sql}: every row");
    let mut full = Vec::new();
    for (i, r) in out.iter().enumerate() {
        let what = format!("row {i}");
        assert_eq!(
            r[0].parse::<f64>().unwrap(),
            rows.x[i][0],
            "{what}: the row order"
        );
        assert_eq!(
            r[1].parse::<f64>().unwrap(),
            rows.x[i][9],
            "{what}: the row order"
        );
        let e = Explanation::parse(&r[3]);
        check_shape(&e, &rows.features, &["base", "contributions"], &what);
        // Additivity: base + contributions = the prediction.
        e.assert_sums_to(&r[2], &what);
        assert!(
            close(e.sum(), py.predict[i][0], 1e-6),
            "{what}: lightgbm predicts {}",
            py.predict[i][0]
        );
        check_treeshap(&e, &py.contrib[i][0], &rows.features, &what);
        full.push(e);
    }
    // The base is the model's expected value: the same for every row.
    assert!(full.iter().all(|e| e.base == full[0].base));

    // Row forms and top_k, positional, named, NULL and above the feature count.
    // (A table in the same physical order, so ORDER BY ctid pairs the rows.)
    pg.psql(
        "app",
        "CREATE TABLE dia_features AS SELECT age, sex, bmi, bp, s1, s2, s3, s4, s5, s6 FROM pgml.diabetes ORDER BY ctid",
    );
    let row = row_of(&rows.features);
    // Each input form: its explanation adds up to its own prediction, equals
    // the ARRAY form's (within 1e-6: row input travels as text), and its
    // top_k (positional, named, NULL, above the feature count) is the cut.
    for (form, from, top_k, k) in [
        (row.clone(), "pgml.diabetes", "3", 3),
        (format!("ROW{row}"), "pgml.diabetes", "top_k => 5", 5),
        ("d.*".to_string(), "dia_features d", "100", 10),
        (arr.clone(), "pgml.diabetes", "top_k => 1", 1),
        (arr.clone(), "pgml.diabetes", "NULL", 10),
    ] {
        let sql = format!(
            "SELECT pgml.predict('dia_lgbm', {form}), pgml.explain('dia_lgbm', {form}), \
             pgml.explain('dia_lgbm', {form}, {top_k}) FROM {from} ORDER BY ctid"
        );
        let out = select(&proxy, &sql, 3);
        assert_eq!(out.len(), rows.len(), "{sql}");
        for (i, r) in out.iter().enumerate() {
            let what = format!("{sql}: row {i}");
            let whole = Explanation::parse(&r[1]);
            check_shape(&whole, &rows.features, &["base", "contributions"], &what);
            whole.assert_sums_to(&r[0], &what);
            whole.assert_close_to(&full[i], 1e-6, &what);
            let cut = Explanation::parse(&r[2]);
            cut.assert_ordered(&what);
            cut.assert_top_k_of(&whole, k, &what);
        }
    }

    // Where Postgres computes with the value (the general method): the rows
    // whose largest contribution is bmi's.
    let want = full
        .iter()
        .filter(|e| e.contributions[0].0 == "bmi")
        .count();
    assert!(want > 0 && want < rows.len(), "bmi leads in {want} rows");
    let sql = format!(
        "SELECT count(*) FROM pgml.diabetes WHERE pgml.explain('dia_lgbm', {arr}, 1)->'contributions' ? 'bmi'"
    );
    assert_eq!(ok(&proxy, &sql), want.to_string(), "{sql}");
    let sql = format!(
        "SELECT sum((pgml.explain('dia_lgbm', {arr})->'contributions'->>'bmi')::float8) FROM pgml.diabetes"
    );
    let sum: f64 = ok(&proxy, &sql).parse().unwrap();
    let want_sum: f64 = full.iter().map(|e| e.get("bmi").unwrap()).sum();
    assert!(close(sum, want_sum, 1e-9), "{sql}: {sum}, want {want_sum}");
    assert_eq!(pg.psql("app", "SELECT count(*) FROM pgml.diabetes"), "442");

    // All constant features: no server needed, same numbers.
    let consts: Vec<String> = rows.x[7].iter().map(|v| format!("{v}::float8")).collect();
    let sql = format!(
        "SELECT pgml.explain('dia_lgbm', ARRAY[{}]::real[], 4)",
        consts.join(", ")
    );
    let e = Explanation::parse(&ok(&proxy, &sql));
    e.assert_top_k_of(&full[7], 4, &sql);

    // Feature importance: LightGBM's normalized gain, then the mean |SHAP|
    // over the test split's rows.
    let fi = feature_importance(&proxy, "dia_lgbm");
    check_importance(
        &fi,
        &rows.features,
        &[("gain", py.gain.clone()), ("shap", py.shap.clone())],
        1e-6,
        "dia_lgbm",
    );
    let gain_sum: f64 = fi.iter().filter(|r| r.2 == "gain").map(|r| r.1).sum();
    assert!((gain_sum - 1.0).abs() < 1e-5, "gain sums to {gain_sum}");
}

#[test]
fn explain_lightgbm_binary_is_the_positive_class_margin() {
    let (pg, proxy) = single();
    train_on(&proxy, "breast_cancer", "bc_lgbm", "lightgbm", LGBM);
    let features = breast_cancer_features(&pg);
    let rows = Rows::read(&pg, "pgml.breast_cancer", "malignant");
    assert_eq!(rows.features, features);
    assert_eq!(rows.len(), 569);
    let py = lightgbm_reference(&pg, "bc_lgbm", &rows.x, &rows.test_x());
    assert_eq!(py.num_class, 1);

    let arr = array_of(&features);
    let sql = format!(
        "SELECT malignant, pgml.predict_proba('bc_lgbm', {arr}), pgml.explain('bc_lgbm', {arr}) \
         FROM pgml.breast_cancer ORDER BY ctid"
    );
    let out = select(&proxy, &sql, 3);
    assert_eq!(out.len(), rows.len());
    let mut full = Vec::new();
    for (i, r) in out.iter().enumerate() {
        let what = format!("row {i}");
        let label = if r[0] == "t" { "true" } else { "false" };
        assert_eq!(Some(label), rows.labels[i].as_deref(), "{what}: row order");
        let e = Explanation::parse(&r[2]);
        check_shape(&e, &features, &["base", "contributions"], &what);
        // The margin (log-odds) of the positive class, true.
        assert_eq!(reals(&r[1]).len(), 2, "{what}: {}", r[1]);
        e.assert_margin_of(&r[1], &what);
        assert!(
            close(e.sum(), py.raw[i][0], 1e-6),
            "{what}: lightgbm's raw score {}",
            py.raw[i][0]
        );
        check_treeshap(&e, &py.contrib[i][0], &features, &what);
        full.push(e);
    }

    // The row form, and top_k named. Row input travels as text (to_json):
    // a real's shortest decimal, which pgmlcat reads back as the float4 the
    // column holds (read as a float8, row 432 fell on the other side of a
    // split before), so both forms predict and explain every row alike.
    let row = row_of(&features);
    let sql = format!(
        "SELECT pgml.predict_proba('bc_lgbm', {arr}), pgml.predict_proba('bc_lgbm', {row}), \
         pgml.explain('bc_lgbm', {row}), pgml.explain('bc_lgbm', {row}, top_k => 4) \
         FROM pgml.breast_cancer ORDER BY ctid"
    );
    let out = select(&proxy, &sql, 4);
    assert_eq!(out.len(), rows.len());
    let mut differ = Vec::new();
    for (i, r) in out.iter().enumerate() {
        let what = format!("{sql}: row {i}");
        let whole = Explanation::parse(&r[2]);
        check_shape(&whole, &features, &["base", "contributions"], &what);
        whole.assert_margin_of(&r[1], &what);
        let agree = whole.names() == full[i].names()
            && close(whole.base, full[i].base, 1e-6)
            && whole
                .contributions
                .iter()
                .all(|(name, v)| close(*v, full[i].get(name).unwrap(), 1e-6));
        if !agree || r[0] != r[1] {
            differ.push((i, r[0].clone(), r[1].clone()));
        }
        let cut = Explanation::parse(&r[3]);
        cut.assert_ordered(&what);
        cut.assert_top_k_of(&whole, 4, &what);
        // Names with spaces come as they are.
        assert!(cut.names().iter().all(|n| features.contains(n)), "{what}");
    }
    assert!(
        differ.is_empty(),
        "the row and ARRAY forms explain {} rows differently (row, P by ARRAY, P by row): {differ:?}",
        differ.len()
    );
    // In a subquery, then filtered by Postgres.
    let sql = format!(
        "SELECT count(*) FROM (SELECT pgml.explain('bc_lgbm', {arr}) AS e FROM pgml.breast_cancer) s \
         WHERE (e->'contributions'->>'worst area')::float8 > 0"
    );
    let want = full
        .iter()
        .filter(|e| e.get("worst area").unwrap() > 0.0)
        .count();
    assert!(want > 0 && want < rows.len(), "{want}");
    assert_eq!(ok(&proxy, &sql), want.to_string(), "{sql}");

    let fi = feature_importance(&proxy, "bc_lgbm");
    check_importance(
        &fi,
        &features,
        &[("gain", py.gain.clone()), ("shap", py.shap.clone())],
        1e-6,
        "bc_lgbm",
    );
}

#[test]
fn explain_lightgbm_multiclass_names_the_class() {
    let (pg, proxy) = single();
    ok(&proxy, "SELECT * FROM pgml.load_dataset('iris')");
    // iris is ordered by class: mix it so the 'last' test rows have every class.
    ok(
        &proxy,
        "CREATE TABLE iris_mixed AS SELECT sepal_length, sepal_width, petal_length, petal_width, target \
         FROM (SELECT *, row_number() OVER () - 1 AS i FROM pgml.iris) s ORDER BY (i * 37) % 150",
    );
    train(
        &proxy,
        "iris_lgbm",
        "classification",
        "iris_mixed",
        "target",
        "lightgbm",
        LGBM,
    );
    let rows = Rows::read(&pg, "iris_mixed", "target");
    assert_eq!(rows.len(), 150);
    let (codes, classes) = rows.codes();
    assert_eq!(classes, ["0", "1", "2"]);
    let py = lightgbm_reference(&pg, "iris_lgbm", &rows.x, &rows.test_x());
    assert_eq!(py.num_class, 3);

    let arr = array_of(&rows.features);
    let sql = format!(
        "SELECT pgml.predict('iris_lgbm', {arr}), pgml.explain('iris_lgbm', {arr}) FROM iris_mixed ORDER BY ctid"
    );
    let out = select(&proxy, &sql, 2);
    assert_eq!(out.len(), 150);
    let mut full = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, r) in out.iter().enumerate() {
        let what = format!("row {i}");
        let e = Explanation::parse(&r[1]);
        check_shape(
            &e,
            &rows.features,
            &["base", "contributions", "class"],
            &what,
        );
        let predicted = real(&r[0]) as f64;
        assert_eq!(
            e.class,
            Some(predicted),
            "{what}: \"class\" is what pgml.predict returns"
        );
        let code = predicted as usize;
        seen.insert(code);
        // The raw score of the predicted class, the largest one.
        let raw = &py.raw[i];
        let best = (0..3).max_by(|a, b| raw[*a].total_cmp(&raw[*b])).unwrap();
        assert_eq!(code, best, "{what}: lightgbm's raw scores {raw:?}");
        assert!(
            close(e.sum(), raw[code], 1e-6),
            "{what}: base + contributions {} vs raw {}",
            e.sum(),
            raw[code]
        );
        check_treeshap(&e, &py.contrib[i][code], &rows.features, &what);
        full.push(e);
    }
    assert_eq!(seen.len(), 3, "every class is predicted somewhere");
    let sql = format!("SELECT pgml.explain('iris_lgbm', {arr}, 2) FROM iris_mixed ORDER BY ctid");
    for (i, r) in select(&proxy, &sql, 1).iter().enumerate() {
        let e = Explanation::parse(&r[0]);
        assert!(e.keys.contains("class"), "{sql}: {:?}", e.keys);
        e.assert_top_k_of(&full[i], 2, &format!("{sql}: row {i}"));
    }

    // Importance: gain, and mean |SHAP| summed over the classes.
    check_importance(
        &feature_importance(&proxy, "iris_lgbm"),
        &rows.features,
        &[("gain", py.gain.clone()), ("shap", py.shap.clone())],
        1e-6,
        "iris_lgbm",
    );

    // Evaluation: multiclass metrics (no roc_auc), confusion matrix, and
    // roc_curve refused.
    let want = classification_reference(&codes, &py.predict, 0.5);
    let got = evaluate(&proxy, "'iris_lgbm', 'iris_mixed'");
    assert_metrics(&got, &want, &CLASSIFICATION, "iris_lgbm on iris_mixed");
    assert!(
        got.get("roc_auc").is_none(),
        "roc_auc is binary only: {got}"
    );
    assert_same_names(&got, &training_metrics(&pg, "iris_lgbm"), "iris_lgbm");
    check_confusion(
        &proxy,
        "'iris_lgbm', 'iris_mixed'",
        &want,
        &classes,
        "iris_lgbm",
    );
    assert_no_roc_curve(&proxy, "'iris_lgbm', 'iris_mixed'");
}

#[test]
fn explain_names_array_elements_and_one_hot_categories() {
    let (pg, proxy) = single();
    pg.psql(
        "app",
        "CREATE TABLE kinds AS SELECT k::float8 / 10 AS x, (ARRAY['red', 'green', 'blue'])[k % 3 + 1] AS color, \
                ARRAY[sin(k * 0.7), cos(k * 1.3)] AS v, \
                k::float8 / 10 + (k % 3) * 2 + 3 * sin(k * 0.7) - cos(k * 1.3) AS y \
         FROM generate_series(1, 300) AS k; \
         CREATE VIEW kinds_x AS SELECT x, color, v FROM kinds",
    );
    train(
        &proxy,
        "kinds",
        "regression",
        "kinds",
        "y",
        "lightgbm",
        r#", hyperparams => '{"n_estimators": 20, "min_data_in_leaf": 5}', preprocess => '{"color": {"encode": "one_hot"}}'"#,
    );
    let want: BTreeSet<String> = [
        "x",
        "color=red",
        "color=green",
        "color=blue",
        "v[1]",
        "v[2]",
    ]
    .map(String::from)
    .into();
    let sql = "SELECT pgml.predict('kinds', k.*), pgml.explain('kinds', k.*) FROM kinds_x k";
    let out = select(&proxy, sql, 2);
    assert_eq!(out.len(), 300);
    for (i, r) in out.iter().enumerate() {
        let e = Explanation::parse(&r[1]);
        let what = format!("{sql}: row {i}");
        assert_eq!(e.names(), want, "{what}");
        assert_eq!(e.contributions.len(), want.len(), "{what}");
        e.assert_ordered(&what);
        e.assert_sums_to(&r[0], &what);
    }
    let fi = feature_importance(&proxy, "kinds");
    for method in ["gain", "shap"] {
        let names: BTreeSet<String> = fi
            .iter()
            .filter(|r| r.2 == method)
            .map(|r| r.0.clone())
            .collect();
        assert_eq!(names, want, "{method}: {fi:?}");
    }
}
