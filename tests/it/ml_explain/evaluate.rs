//! `pgml.evaluate`, `pgml.confusion_matrix` and `pgml.roc_curve` on any
//! relation (the training one, its test split, a filtered copy, a view,
//! NULL labels) against scikit-learn's metrics.

use super::metrics::*;
use super::*;

/// Copies the rows of `relation` after the first `n_train` (the test
/// split of `test_sampling => 'last'`) into table `table` on `pg` and
/// evaluates `project` on it through the proxy: the metrics `names` are
/// the ones the training stored. The evaluation.
fn evaluate_test_split(
    pg: &PgCluster,
    proxy: &Proxy,
    project: &str,
    relation: &str,
    table: &str,
    n_train: usize,
    names: &[&str],
) -> Value {
    pg.psql(
        "app",
        &format!("CREATE TABLE {table} AS SELECT * FROM {relation} ORDER BY ctid OFFSET {n_train}"),
    );
    let got = evaluate(proxy, &format!("'{project}', '{table}'"));
    assert_metrics(
        &got,
        &training_metrics(pg, project),
        names,
        &format!("{project} on its test rows vs the training's metrics"),
    );
    got
}

#[test]
fn evaluate_binary_on_any_relation_matches_sklearn() {
    let (pg, proxy) = single();
    train_on(&proxy, "breast_cancer", "bc_lgbm", "lightgbm", LGBM);
    let features = breast_cancer_features(&pg);
    let arr = array_of(&features);
    let mut names = CLASSIFICATION.to_vec();
    names.push("roc_auc");

    // The training relation itself: probabilities from Python's lightgbm on
    // the stored model, checked against pgml.predict_proba row by row.
    let rows = Rows::read(&pg, "pgml.breast_cancer", "malignant");
    let (codes, classes) = rows.codes();
    assert_eq!(classes, ["false", "true"]);
    let proba = lightgbm_reference(&pg, "bc_lgbm", &rows.x, &[]).binary_proba();
    let sql = format!(
        "SELECT malignant, pgml.predict('bc_lgbm', {arr}), pgml.predict_proba('bc_lgbm', {arr}) FROM pgml.breast_cancer ORDER BY ctid"
    );
    let out = select(&proxy, &sql, 3);
    assert_eq!(out.len(), rows.len());
    for (i, r) in out.iter().enumerate() {
        let pr = reals(&r[2]);
        assert!(
            (pr[1] as f64 - proba[i][1]).abs() <= 1e-6,
            "row {i}: {pr:?} vs lightgbm {}",
            proba[i][1]
        );
        let class = real(&r[1]);
        assert_eq!(
            class,
            if proba[i][1] >= 0.5 { 1.0 } else { 0.0 },
            "row {i}: {r:?}"
        );
    }
    let want = classification_reference(&codes, &proba, 0.5);
    let got = evaluate(&proxy, "'bc_lgbm', 'pgml.breast_cancer'");
    assert_metrics(&got, &want, &names, "bc_lgbm on pgml.breast_cancer");
    assert_same_names(&got, &training_metrics(&pg, "bc_lgbm"), "bc_lgbm");
    for k in REGRESSION {
        assert!(got.get(k).is_none(), "{k} in classification metrics: {got}");
    }

    // The test split as a table of its own: the metrics the training stored.
    let n_train = rows.n_train();
    let got = evaluate_test_split(
        &pg,
        &proxy,
        "bc_lgbm",
        "pgml.breast_cancer",
        "bc_test",
        n_train,
        &names,
    );
    let test_want = classification_reference(&codes[n_train..], &proba[n_train..], 0.5);
    assert_metrics(&got, &test_want, &names, "bc_lgbm on bc_test");

    // The ROC curve: one row per distinct score, thresholds descending.
    let sql = "SELECT * FROM pgml.roc_curve('bc_lgbm', 'pgml.breast_cancer')";
    let curve: Vec<Vec<f32>> = ok(&proxy, sql)
        .lines()
        .map(|l| l.split('|').map(real).collect())
        .collect();
    let want_curve = want["roc"].as_array().unwrap();
    assert_eq!(
        curve.len(),
        want_curve.len(),
        "{sql}: one row per distinct score"
    );
    assert!(curve.len() > 100, "{} distinct scores", curve.len());
    for (i, (got, w)) in curve.iter().zip(want_curve).enumerate() {
        let w = floats(w);
        assert_eq!(got.len(), 4, "{sql}: row {i}");
        assert!(
            real_close(got[0], w[0]),
            "{sql}: row {i}: threshold {} vs {}",
            got[0],
            w[0]
        );
        for c in 1..4 {
            assert!(
                ((got[c] as f64) - w[c]).abs() <= 1e-6,
                "{sql}: row {i}: column {c}: {got:?} vs sklearn {w:?}"
            );
        }
        if i > 0 {
            assert!(got[0] <= curve[i - 1][0], "{sql}: thresholds descending");
        }
    }
    let last = curve.last().unwrap();
    assert_eq!(
        (last[1], last[2]),
        (1.0, 1.0),
        "the lowest threshold takes every row"
    );

    // A filtered copy, created through the proxy; its size checked directly.
    ok(
        &proxy,
        "CREATE TABLE bc_eval AS SELECT * FROM pgml.breast_cancer WHERE \"mean radius\" > 13",
    );
    let want_n = rows.x.iter().filter(|x| x[0] > 13.0).count();
    assert_eq!(
        pg.psql("app", "SELECT count(*) FROM bc_eval"),
        want_n.to_string()
    );
    let eval_rows = Rows::read(&pg, "bc_eval", "malignant");
    assert_eq!(eval_rows.len(), want_n);
    let (eval_codes, _) = eval_rows.codes();
    let eval_proba = lightgbm_reference(&pg, "bc_lgbm", &eval_rows.x, &[]).binary_proba();
    let want = classification_reference(&eval_codes, &eval_proba, 0.5);
    let got = evaluate(&proxy, "'bc_lgbm', 'bc_eval'");
    assert_metrics(&got, &want, &names, "bc_lgbm on bc_eval");
    check_confusion(
        &proxy,
        "'bc_lgbm', 'bc_eval'",
        &want,
        &bool_class_names(&proxy),
        "bc_eval",
    );
    let total: u64 = want["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[2].as_u64().unwrap())
        .sum();
    assert_eq!(total as usize, want_n);
    let eval_curve = ok(&proxy, "SELECT * FROM pgml.roc_curve('bc_lgbm', 'bc_eval')");
    assert_eq!(
        eval_curve.lines().count(),
        want["roc"].as_array().unwrap().len()
    );

    // threshold: positive when P(true) >= 0.3.
    let low = classification_reference(&eval_codes, &eval_proba, 0.3);
    assert_ne!(
        low["recall"], want["recall"],
        "the data has probabilities in [0.3, 0.5): the threshold shows"
    );
    for args in [
        "'bc_lgbm', 'bc_eval', 0.3",
        "'bc_lgbm', 'bc_eval', threshold => 0.3",
    ] {
        let got = evaluate(&proxy, args);
        assert_metrics(&got, &low, &names, args);
    }

    // NULL labels are skipped.
    pg.psql(
        "app",
        "UPDATE bc_eval SET malignant = NULL WHERE \"mean texture\" > 22",
    );
    let nulled = Rows::read(&pg, "bc_eval", "malignant");
    let n_null = nulled.labels.iter().filter(|l| l.is_none()).count();
    assert!(n_null > 10 && n_null < want_n - 10, "{n_null} NULL labels");
    let (null_codes, _) = nulled.codes();
    let null_proba = lightgbm_reference(&pg, "bc_lgbm", &nulled.x, &[]).binary_proba();
    let want = classification_reference(&null_codes, &null_proba, 0.5);
    let got = evaluate(&proxy, "'bc_lgbm', 'bc_eval'");
    assert_metrics(&got, &want, &names, "bc_lgbm on bc_eval with NULL labels");
    // (The README: a NOTICE counts them.)
    let (success, _, stderr) = proxy.psql_full("SELECT * FROM pgml.evaluate('bc_lgbm', 'bc_eval')");
    assert!(success, "{stderr}");
    assert!(
        stderr.contains("NOTICE") && stderr.contains(&n_null.to_string()),
        "a NOTICE counts the {n_null} rows skipped: {stderr}"
    );
}

/// How the proxy names the classes of a boolean label. The contract says
/// "the label's text form (numbers as Postgres prints them)", which does
/// not settle a boolean: 'false'/'true' (its ::text), 'f'/'t' (its output
/// form) or '0'/'1' (the class values pgml.predict returns). Any of them,
/// the same in every row, false's first.
fn bool_class_names(proxy: &Proxy) -> Vec<String> {
    let out = ok(
        proxy,
        "SELECT * FROM pgml.confusion_matrix('bc_lgbm', 'bc_eval')",
    );
    let mut got: Vec<String> = Vec::new();
    for line in out.lines() {
        let actual = line.split('|').next().unwrap().to_string();
        if !got.contains(&actual) {
            got.push(actual);
        }
    }
    assert!(
        got == ["false", "true"] || got == ["f", "t"] || got == ["0", "1"],
        "a boolean label's classes: {got:?}"
    );
    got
}

#[test]
fn evaluate_regression_equals_the_training_metrics_on_the_test_rows() {
    let (pg, proxy) = single();
    train_on(&proxy, "diabetes", "dia_lgbm", "lightgbm", LGBM);
    let rows = Rows::read(&pg, "pgml.diabetes", "target");
    let y = rows.label_f64();
    let py = lightgbm_reference(&pg, "dia_lgbm", &rows.x, &[]);
    let pred: Vec<f64> = py.predict.iter().map(|p| p[0]).collect();

    let want = regression_reference(&y, &pred);
    let got = evaluate(&proxy, "'dia_lgbm', 'pgml.diabetes'");
    assert_metrics(&got, &want, &REGRESSION, "dia_lgbm on pgml.diabetes");
    let stored = training_metrics(&pg, "dia_lgbm");
    assert_same_names(&got, &stored, "dia_lgbm");
    for k in ["accuracy", "f1", "roc_auc", "log_loss"] {
        assert!(got.get(k).is_none(), "{k} in regression metrics: {got}");
    }

    // The test split as a table of its own: the metrics the training stored.
    let n_train = rows.n_train();
    let got = evaluate_test_split(
        &pg,
        &proxy,
        "dia_lgbm",
        "pgml.diabetes",
        "dia_test",
        n_train,
        &REGRESSION,
    );
    assert_eq!(
        pg.psql("app", "SELECT count(*) FROM dia_test"),
        (rows.len() - n_train).to_string()
    );
    let want = regression_reference(&y[n_train..], &pred[n_train..]);
    assert_metrics(&got, &want, &REGRESSION, "dia_lgbm on dia_test");

    // A view with a filter, through the search_path; NULL labels skipped.
    pg.psql(
        "app",
        "CREATE VIEW dia_view AS SELECT age, sex, bmi, bp, s1, s2, s3, s4, s5, s6, \
         CASE WHEN bmi > 0.05 THEN NULL ELSE target END AS target FROM pgml.diabetes",
    );
    let keep: Vec<usize> = (0..rows.len()).filter(|i| rows.x[*i][2] <= 0.05).collect();
    assert!(
        keep.len() > 300 && keep.len() < rows.len(),
        "{}",
        keep.len()
    );
    assert_eq!(
        pg.psql("app", "SELECT count(target) FROM dia_view"),
        keep.len().to_string()
    );
    let want = regression_reference(
        &keep.iter().map(|i| y[*i]).collect::<Vec<_>>(),
        &keep.iter().map(|i| pred[*i]).collect::<Vec<_>>(),
    );
    let got = evaluate(&proxy, "'dia_lgbm', 'dia_view'");
    assert_metrics(&got, &want, &REGRESSION, "dia_lgbm on dia_view");

    // A regression has no ROC curve.
    assert_no_roc_curve(&proxy, "'dia_lgbm', 'pgml.diabetes'");
}
