//! Expected numbers are worked out by hand in the comments.

use serde_json::json;

use super::*;
use crate::ml::frame::ColumnData;

fn num_col(name: &str, values: &[Option<f64>]) -> Column {
    Column {
        name: name.into(),
        pg_type: "double precision".into(),
        data: ColumnData::Float(values.to_vec()),
    }
}

fn text_col(name: &str, values: &[Option<&str>]) -> Column {
    Column {
        name: name.into(),
        pg_type: "text".into(),
        data: ColumnData::Text(values.iter().map(|v| v.map(String::from)).collect()),
    }
}

fn frame(columns: Vec<Column>) -> Frame {
    let rows = columns.first().map_or(0, |c| c.data.len());
    Frame { columns, rows }
}

fn specs(json: Value, frame: &Frame) -> BTreeMap<String, ColumnSpec> {
    let names: Vec<&str> = frame.columns.iter().map(|c| c.name.as_str()).collect();
    parse_specs(&json, &names).unwrap()
}

/// Fits on every row of a one-column frame and returns its single feature.
fn fit_one(col: Column, spec: Value) -> MlResult<(Preprocessor, Vec<f64>)> {
    let f = frame(vec![col]);
    let name = f.columns[0].name.clone();
    let specs = specs(json!({ name: spec }), &f);
    let rows: Vec<usize> = (0..f.rows).collect();
    let p = Preprocessor::fit(&f, &[0], &specs, None, &rows)?;
    let x = p.transform(&f, &rows)?;
    Ok((p, x.column(0).to_vec()))
}

fn assert_close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
    }
}

#[test]
fn numbers_pass_through_by_default() {
    let (p, x) = fit_one(num_col("x", &[Some(1.5), Some(-2.0)]), json!({})).unwrap();
    assert_eq!(x, vec![1.5, -2.0]);
    assert_eq!(p.num_features(), 1);
    assert_eq!(p.feature_names(), vec!["x"]);
}

#[test]
fn null_without_impute_is_an_error() {
    let err = fit_one(num_col("age", &[Some(1.0), None]), json!({})).unwrap_err();
    assert_eq!(err.sqlstate(), "22000");
    assert!(
        err.to_string().contains("\"age\"") && err.to_string().contains("impute"),
        "{err}"
    );
    // A NULL that only shows up at prediction time is reported the same way.
    let (p, _) = fit_one(num_col("age", &[Some(1.0), Some(2.0)]), json!({})).unwrap();
    let err = p.transform_row(&[RawValue::Null]).unwrap_err();
    assert_eq!(err.sqlstate(), "22000");
}

#[test]
fn every_impute() {
    // Present values 1, 2, 2, 7: mean 3, median 2, mode 2, min 1, max 7.
    let values = [
        Some(1.0),
        Some(2.0),
        None,
        Some(2.0),
        Some(7.0),
        Some(f64::NAN),
    ];
    for (impute, fill) in [
        ("mean", 3.0),
        ("median", 2.0),
        ("mode", 2.0),
        ("min", 1.0),
        ("max", 7.0),
        ("zero", 0.0),
    ] {
        let (_, x) = fit_one(num_col("x", &values), json!({ "impute": impute })).unwrap();
        assert_eq!(x, vec![1.0, 2.0, fill, 2.0, 7.0, fill], "{impute}");
    }
    let err = fit_one(num_col("x", &[None, None]), json!({"impute": "mean"})).unwrap_err();
    assert_eq!(err.sqlstate(), "22000");
    let (_, x) = fit_one(num_col("x", &[None, None]), json!({"impute": "zero"})).unwrap();
    assert_eq!(x, vec![0.0, 0.0]);
}

#[test]
fn every_scale() {
    let four = [Some(1.0), Some(2.0), Some(3.0), Some(4.0)];
    // mean 2.5, population std sqrt(1.25).
    let (_, x) = fit_one(num_col("x", &four), json!({"scale": "standard"})).unwrap();
    let s = 1.25f64.sqrt();
    assert_close(&x, &[-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s]);
    let (_, x) = fit_one(num_col("x", &four), json!({"scale": "min_max"})).unwrap();
    assert_close(&x, &[0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]);
    let (_, x) = fit_one(
        num_col("x", &[Some(-8.0), Some(2.0), Some(4.0)]),
        json!({"scale": "max_abs"}),
    )
    .unwrap();
    assert_close(&x, &[-1.0, 0.25, 0.5]);
    // 1 2 3 4 10: median 3, q1 2, q3 4, IQR 2.
    let five = [Some(1.0), Some(2.0), Some(3.0), Some(4.0), Some(10.0)];
    let (_, x) = fit_one(num_col("x", &five), json!({"scale": "robust"})).unwrap();
    assert_close(&x, &[-1.0, -0.5, 0.0, 0.5, 3.5]);
    // A constant column is centred, not divided by zero.
    let (_, x) = fit_one(
        num_col("x", &[Some(5.0), Some(5.0)]),
        json!({"scale": "standard"}),
    )
    .unwrap();
    assert_close(&x, &[0.0, 0.0]);
}

#[test]
fn fitted_on_train_rows_only() {
    // Train on rows 0 and 1 (2, 4: min 2, max 4); row 2 is test data.
    let f = frame(vec![num_col(
        "x",
        &[Some(2.0), Some(4.0), Some(10.0), None],
    )]);
    let s = specs(json!({"x": {"scale": "min_max", "impute": "mean"}}), &f);
    let p = Preprocessor::fit(&f, &[0], &s, None, &[0, 1]).unwrap();
    let x = p.transform(&f, &[2, 3]).unwrap();
    // 10 → (10 - 2) / 2 = 4; NULL → mean 3 → 0.5.
    assert_close(&x.column(0).to_vec(), &[4.0, 0.5]);
}

#[test]
fn scale_applies_after_impute() {
    // 0, 4, NULL→mean 2: imputed 0 4 2, mean 2, std sqrt(8/3).
    let (_, x) = fit_one(
        num_col("x", &[Some(0.0), Some(4.0), None]),
        json!({"impute": "mean", "scale": "standard"}),
    )
    .unwrap();
    let s = (8.0f64 / 3.0).sqrt();
    assert_close(&x, &[-2.0 / s, 2.0 / s, 0.0]);
}

#[test]
fn native_text_codes() {
    let col = text_col("c", &[Some("b"), Some("a"), None, Some("b"), Some("c")]);
    let (p, x) = fit_one(col, json!({})).unwrap();
    // First seen: b 1, a 2, c 3; NULL 0.
    assert_eq!(x, vec![1.0, 2.0, 0.0, 1.0, 3.0]);
    // Unseen at prediction is NULL.
    assert_eq!(
        p.transform_row(&[RawValue::Text("zzz".into())]).unwrap(),
        vec![0.0]
    );
    assert_eq!(
        p.transform_row(&[RawValue::Text("c".into())]).unwrap(),
        vec![3.0]
    );
}

#[test]
fn text_mode_impute_and_bad_impute() {
    let col = text_col("c", &[Some("a"), Some("b"), Some("b"), None]);
    let (p, x) = fit_one(col.clone(), json!({"impute": "mode"})).unwrap();
    assert_eq!(x, vec![1.0, 2.0, 2.0, 2.0]);
    assert_eq!(
        p.transform_row(&[RawValue::Text("new".into())]).unwrap(),
        vec![2.0]
    );
    let err = fit_one(col, json!({"impute": "mean"})).unwrap_err();
    assert_eq!(err.sqlstate(), "22023");
    assert!(err.to_string().contains("mode"), "{err}");
}

#[test]
fn one_hot() {
    let col = text_col("color", &[Some("red"), Some("blue"), None, Some("red")]);
    let f = frame(vec![col]);
    let s = specs(
        json!({"color": {"encode": "one_hot", "scale": "standard"}}),
        &f,
    );
    let p = Preprocessor::fit(&f, &[0], &s, None, &[0, 1, 2, 3]).unwrap();
    assert_eq!(p.num_features(), 2);
    assert_eq!(p.feature_names(), vec!["color=red", "color=blue"]);
    let x = p.transform(&f, &[0, 1, 2, 3]).unwrap();
    assert_eq!(
        x.as_slice().unwrap(),
        &[1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    );
    assert_eq!(
        p.transform_row(&[RawValue::Text("green".into())]).unwrap(),
        vec![0.0, 0.0]
    );
}

#[test]
fn ordinal() {
    let col = text_col("size", &[Some("high"), Some("low"), None]);
    let (p, x) = fit_one(
        col.clone(),
        json!({"encode": {"ordinal": ["low", "mid", "high"]}}),
    )
    .unwrap();
    assert_eq!(x, vec![3.0, 1.0, 0.0]);
    // Listed but not in the training rows is still known.
    assert_eq!(
        p.transform_row(&[RawValue::Text("mid".into())]).unwrap(),
        vec![2.0]
    );
    let err = fit_one(col, json!({"encode": {"ordinal": ["low", "mid"]}})).unwrap_err();
    assert_eq!(err.sqlstate(), "22000");
    assert!(err.to_string().contains("high"), "{err}");
}

#[test]
fn target_encoding() {
    let col = text_col(
        "city",
        &[Some("a"), Some("b"), Some("a"), None, Some("b"), Some("c")],
    );
    let f = frame(vec![col]);
    let s = specs(json!({"city": {"encode": "target"}}), &f);
    let label = [1.0, 10.0, 3.0, 5.0, 20.0, 100.0];
    // Train on rows 0..5: a = (1+3)/2 = 2, b = 15, NULL = 5; c is unseen.
    let p = Preprocessor::fit(&f, &[0], &s, Some(&label), &[0, 1, 2, 3, 4]).unwrap();
    let x = p.transform(&f, &[0, 1, 3, 5]).unwrap();
    assert_eq!(x.column(0).to_vec(), vec![2.0, 15.0, 5.0, 5.0]);
    let err = Preprocessor::fit(&f, &[0], &s, None, &[0, 1]).unwrap_err();
    assert_eq!(err.sqlstate(), "22023");
}

#[test]
fn target_encoding_without_null_rows_uses_the_prior() {
    let f = frame(vec![text_col("k", &[Some("a"), Some("b")])]);
    let s = specs(json!({"k": {"encode": "target"}}), &f);
    let p = Preprocessor::fit(&f, &[0], &s, Some(&[2.0, 4.0]), &[0, 1]).unwrap();
    // Unseen → NULL → no NULL rows in training → overall mean 3.
    assert_eq!(
        p.transform_row(&[RawValue::Text("zz".into())]).unwrap(),
        vec![3.0]
    );
}

#[test]
fn numbers_as_categories() {
    let (p, x) = fit_one(
        num_col("grade", &[Some(1.0), Some(2.0), Some(1.0)]),
        json!({"encode": "one_hot"}),
    )
    .unwrap();
    assert_eq!(x, vec![1.0, 0.0, 1.0]);
    assert_eq!(p.feature_names(), vec!["grade=1", "grade=2"]);
    assert_eq!(
        p.transform_row(&[RawValue::Number(2.0)]).unwrap(),
        vec![0.0, 1.0]
    );
}

#[test]
fn arrays_are_one_feature_per_element() {
    let col = Column {
        name: "v".into(),
        pg_type: "real[]".into(),
        data: ColumnData::Array {
            width: 2,
            values: vec![Some(vec![1.0, 10.0]), None, Some(vec![3.0, f64::NAN])],
        },
    };
    let (p, _) = fit_one(col.clone(), json!({"impute": "mean"})).unwrap();
    let f = frame(vec![col]);
    let x = p.transform(&f, &[0, 1, 2]).unwrap();
    // Element means: (1+3)/2 = 2 and 10.
    assert_eq!(x.as_slice().unwrap(), &[1.0, 10.0, 2.0, 10.0, 3.0, 10.0]);
    assert_eq!(p.feature_names(), vec!["v[1]", "v[2]"]);
    let row = p
        .transform_row(&[RawValue::Array(vec![Some(5.0), None])])
        .unwrap();
    assert_eq!(row, vec![5.0, 10.0]);
    assert_eq!(
        p.transform_row(&[RawValue::Text("{7, NULL}".into())])
            .unwrap(),
        vec![7.0, 10.0]
    );
    let err = p
        .transform_row(&[RawValue::Array(vec![Some(1.0)])])
        .unwrap_err();
    assert_eq!(err.sqlstate(), "42804");
    let err = fit_one(f.columns[0].clone(), json!({})).unwrap_err();
    assert_eq!(err.sqlstate(), "22000");
}

#[test]
fn transform_row_checks_types_and_count() {
    let f = frame(vec![
        num_col("x", &[Some(1.0), Some(2.0)]),
        text_col("c", &[Some("a"), Some("b")]),
    ]);
    let p = Preprocessor::fit(&f, &[0, 1], &BTreeMap::new(), None, &[0, 1]).unwrap();
    let err = p.transform_row(&[RawValue::Number(1.0)]).unwrap_err();
    assert_eq!(err.sqlstate(), "42804");
    assert!(
        err.to_string().contains("expected 2 features, got 1"),
        "{err}"
    );
    let err = p
        .transform_row(&[RawValue::Text("abc".into()), RawValue::Text("a".into())])
        .unwrap_err();
    assert_eq!(err.sqlstate(), "42804");
    assert!(err.to_string().contains("\"x\""), "{err}");
    // A record's text form: numbers and booleans as text are accepted.
    let row = p
        .transform_row(&[RawValue::Text(" 2.5".into()), RawValue::Text("b".into())])
        .unwrap();
    assert_eq!(row, vec![2.5, 2.0]);
    let row = p
        .transform_row(&[RawValue::Text("t".into()), RawValue::Null])
        .unwrap();
    assert_eq!(row, vec![1.0, 0.0]);
}

#[test]
fn transform_finds_columns_by_name() {
    let f = frame(vec![
        num_col("x", &[Some(1.0), Some(2.0)]),
        num_col("y", &[Some(5.0), Some(6.0)]),
    ]);
    let p = Preprocessor::fit(&f, &[1, 0], &BTreeMap::new(), None, &[0, 1]).unwrap();
    assert_eq!(p.column_names(), vec!["y", "x"]);
    let swapped = frame(vec![f.columns[1].clone(), f.columns[0].clone()]);
    assert_eq!(
        p.transform(&swapped, &[1]).unwrap().as_slice().unwrap(),
        &[6.0, 2.0]
    );
    let missing = frame(vec![f.columns[0].clone()]);
    assert_eq!(p.transform(&missing, &[0]).unwrap_err().sqlstate(), "42703");
    assert_eq!(p.transform(&f, &[9]).unwrap_err().sqlstate(), "XX000");
}

#[test]
fn survives_a_json_round_trip() {
    let f = frame(vec![
        num_col("x", &[Some(1.0), None, Some(4.0)]),
        text_col("c", &[Some("a"), Some("b"), None]),
    ]);
    let s = specs(
        json!({"x": {"impute": "median", "scale": "robust"}, "c": {"encode": "one_hot"}}),
        &f,
    );
    let p = Preprocessor::fit(&f, &[0, 1], &s, None, &[0, 1, 2]).unwrap();
    let stored = serde_json::to_string(&p).unwrap();
    let back: Preprocessor = serde_json::from_str(&stored).unwrap();
    // serde_json (without float_roundtrip) may parse a float 1 ulp off.
    assert_eq!(back.feature_names(), p.feature_names());
    let (a, b) = (
        back.transform(&f, &[0, 1, 2]).unwrap(),
        p.transform(&f, &[0, 1, 2]).unwrap(),
    );
    assert_close(a.as_slice().unwrap(), b.as_slice().unwrap());
}

#[test]
fn snapshot_columns_json() {
    let f = frame(vec![
        num_col("x", &[Some(1.0), None, Some(3.0)]),
        num_col("y", &[Some(0.0), Some(1.0), Some(1.0)]),
    ]);
    let s = specs(json!({"x": {"impute": "mean"}}), &f);
    let p = Preprocessor::fit(&f, &[0], &s, None, &[0, 1, 2]).unwrap();
    let mut columns = p.columns_json(vec![column_statistics(&f.columns[0], &[0, 1, 2])]);
    assert_eq!(columns[0]["name"], json!("x"));
    assert_eq!(columns[0]["position"], json!(1));
    assert_eq!(columns[0]["nullable"], json!(true));
    assert_eq!(columns[0]["label"], json!(false));
    assert_eq!(columns[0]["preprocessor"]["impute"], json!("mean"));
    assert_eq!(columns[0]["statistics"]["mean"], json!(2.0));
    assert_eq!(columns[0]["statistics"]["missing"], json!(1));
    let label = label_column_json(
        &f.columns[1],
        2,
        &[0, 1, 2],
        column_statistics(&f.columns[1], &[0, 1, 2]),
    );
    assert_eq!(label["label"], json!(true));
    assert_eq!(label["statistics"]["mode"], json!(1.0));
    if let Value::Array(list) = &mut columns {
        list.push(label);
    }
    assert_eq!(columns.as_array().map(Vec::len), Some(2));
}

#[test]
fn tiny_and_empty_training_rows() {
    // Two rows, one NULL: impute from the single value.
    let (_, x) = fit_one(
        num_col("x", &[None, Some(4.0)]),
        json!({"impute": "median", "scale": "standard"}),
    )
    .unwrap();
    assert_close(&x, &[0.0, 0.0]);
    // No training rows: numbers need nothing, imputing needs values.
    let f = frame(vec![num_col("x", &[Some(1.0)])]);
    let p = Preprocessor::fit(&f, &[0], &BTreeMap::new(), None, &[]).unwrap();
    assert_eq!(p.transform(&f, &[]).unwrap().dim(), (0, 1));
}
