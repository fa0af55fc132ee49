//! `pgml.explain` and `pgml.feature_importance` of linear models: a
//! regression (numpy's least squares, the training split's means and
//! standard deviations) and a logistic regression.

use super::explanation::*;
use super::metrics::*;
use super::*;

#[test]
fn explain_linear_regression_is_coef_times_distance_to_the_training_mean() {
    let (pg, proxy) = single();
    train_on(&proxy, "diabetes", "dia_lin", "linear", "");
    let rows = Rows::read(&pg, "pgml.diabetes", "target");
    let (intercept, coef) = stored_linear(&pg, "dia_lin");
    assert_eq!(coef.len(), 10);
    let y = rows.label_f64();
    let n_train = rows.n_train();
    assert_eq!(n_train, 331);
    let py = reference(&json!({
        "mode": "linear",
        "coef": [coef],
        "intercept": [intercept],
        "x_train": rows.train_x(),
        "y_train": &y[..n_train],
        "x": rows.x,
    }));
    // The stored model is the training split's least squares.
    let ols = &py["lstsq"];
    assert!(
        close(intercept, ols["intercept"].as_f64().unwrap(), 1e-6),
        "{intercept} vs {ols}"
    );
    for (c, w) in coef.iter().zip(floats(&ols["coef"])) {
        assert!(close(*c, w, 1e-6), "coefficient {c} vs numpy's {w}");
    }

    let arr = array_of(&rows.features);
    let sql = format!(
        "SELECT pgml.predict('dia_lin', {arr}), pgml.explain('dia_lin', {arr}) FROM pgml.diabetes ORDER BY ctid"
    );
    let out = select(&proxy, &sql, 2);
    assert_eq!(out.len(), 442);
    let mut outputs = Vec::new();
    for (i, r) in out.iter().enumerate() {
        let what = format!("row {i}");
        let e = Explanation::parse(&r[1]);
        check_shape(&e, &rows.features, &["base", "contributions"], &what);
        let want = &py["explain"][i][0];
        e.assert_sums_to(&r[0], &what);
        assert!(
            close(e.sum(), want["output"].as_f64().unwrap(), 1e-9),
            "{what}: {want}"
        );
        assert!(
            close(e.base, want["base"].as_f64().unwrap(), 1e-6),
            "{what}: base {} = intercept + coef . mean {}",
            e.base,
            want["base"]
        );
        for (j, (f, c)) in rows
            .features
            .iter()
            .zip(floats(&want["contributions"]))
            .enumerate()
        {
            let got = e.get(f).unwrap();
            assert!(
                close(got, c, 1e-6),
                "{what}: {f}: {got}, coef {} * (x {} - mean {}) = {c}",
                coef[j],
                rows.x[i][j],
                py["mean"][j]
            );
        }
        outputs.push(want["output"].as_f64().unwrap());
    }
    let row = row_of(&rows.features);
    let sql = format!(
        "SELECT pgml.explain('dia_lin', {row}), pgml.explain('dia_lin', {row}, 2) FROM pgml.diabetes ORDER BY ctid"
    );
    let by_row = select(&proxy, &sql, 2);
    assert_eq!(by_row.len(), out.len());
    for (i, (r, a)) in by_row.iter().zip(&out).enumerate() {
        let what = format!("{sql}: row {i}");
        let whole = Explanation::parse(&r[0]);
        whole.assert_close_to(&Explanation::parse(&a[1]), 1e-6, &what);
        Explanation::parse(&r[1]).assert_top_k_of(&whole, 2, &what);
    }

    // Importance: |coef_j| * std_j over the training split.
    check_importance(
        &feature_importance(&proxy, "dia_lin"),
        &rows.features,
        &[("coefficient", floats(&py["importance"]))],
        1e-6,
        "dia_lin",
    );

    // Evaluation on the whole table, from the model's own outputs.
    let want = regression_reference(&y, &outputs);
    let got = evaluate(&proxy, "'dia_lin', 'pgml.diabetes'");
    assert_metrics(&got, &want, &REGRESSION, "dia_lin on pgml.diabetes");
    assert_same_names(&got, &training_metrics(&pg, "dia_lin"), "dia_lin");
}

#[test]
fn explain_logistic_is_linear_in_each_feature() {
    let (pg, proxy) = single();
    train_on(&proxy, "breast_cancer", "bc_logit", "linear", "");
    let features = breast_cancer_features(&pg);
    let rows = Rows::read(&pg, "pgml.breast_cancer", "malignant");
    let f = features.len();
    let moments = reference(&json!({
        "mode": "linear", "coef": [vec![0.0; f]], "intercept": [0.0], "x_train": rows.train_x(),
    }));
    let mean = floats(&moments["mean"]);

    let arr = array_of(&features);
    let sql = format!(
        "SELECT pgml.predict_proba('bc_logit', {arr}), pgml.explain('bc_logit', {arr}) FROM pgml.breast_cancer ORDER BY ctid"
    );
    let out = select(&proxy, &sql, 2);
    assert_eq!(out.len(), 569);
    let mut full = Vec::new();
    for (i, r) in out.iter().enumerate() {
        let what = format!("row {i}");
        let e = Explanation::parse(&r[1]);
        check_shape(&e, &features, &["base", "contributions"], &what);
        e.assert_margin_of(&r[0], &what);
        full.push(e);
    }
    // contribution_j = coef_j (x_j - mean_j) with one coef_j for every row:
    // read coef_j off the row farthest from the mean, then check them all.
    let mut coef = Vec::new();
    for (j, name) in features.iter().enumerate() {
        let far = (0..rows.len())
            .max_by(|a, b| {
                (rows.x[*a][j] - mean[j])
                    .abs()
                    .total_cmp(&(rows.x[*b][j] - mean[j]).abs())
            })
            .unwrap();
        coef.push(full[far].get(name).unwrap() / (rows.x[far][j] - mean[j]));
    }
    assert!(
        coef.iter().any(|c| c.abs() > 1e-6),
        "a model that uses its features: {coef:?}"
    );
    let base = full[0].base;
    let intercept = base - coef.iter().zip(&mean).map(|(c, m)| c * m).sum::<f64>();
    let py = reference(&json!({
        "mode": "linear",
        "coef": [coef],
        "intercept": [intercept],
        "x_train": rows.train_x(),
        "x": rows.x,
    }));
    for (i, e) in full.iter().enumerate() {
        assert!(
            close(e.base, base, 1e-12),
            "row {i}: one base for every row"
        );
        let want = floats(&py["explain"][i][0]["contributions"]);
        for (j, name) in features.iter().enumerate() {
            let got = e.get(name).unwrap();
            assert!(
                close(got, want[j], 1e-6),
                "row {i}: {name} = {got}, but coef {} * (x {} - training mean {}) = {}",
                coef[j],
                rows.x[i][j],
                mean[j],
                want[j]
            );
        }
    }
    // The coefficient importance is |coef_j| * std_j of those same coefs.
    check_importance(
        &feature_importance(&proxy, "bc_logit"),
        &features,
        &[("coefficient", floats(&py["importance"]))],
        1e-6,
        "bc_logit",
    );

    // Evaluation from the margins.
    let (codes, _) = rows.codes();
    let proba: Vec<Vec<f64>> = full
        .iter()
        .map(|e| {
            let p = sigmoid(e.sum());
            vec![1.0 - p, p]
        })
        .collect();
    let want = classification_reference(&codes, &proba, 0.5);
    let got = evaluate(&proxy, "'bc_logit', 'pgml.breast_cancer'");
    let mut names = CLASSIFICATION.to_vec();
    names.push("roc_auc");
    assert_metrics(&got, &want, &names, "bc_logit on pgml.breast_cancer");
}
