//! What pgml.explain, pgml.feature_importance and the evaluation
//! functions refuse, with which SQLSTATE; and the other clients: psycopg 3
//! and tokio-postgres parameters, binary results, typed columns.

use tokio_postgres::types::Type;

use super::explanation::*;
use super::*;

/// `sql`'s error (SQLSTATE, message); the session goes on after it.
async fn sqlstate(client: &tokio_postgres::Client, sql: &str) -> (String, String) {
    let error = expect_error(client, sql).await;
    let one: i32 = client
        .query_one("SELECT 1", &[])
        .await
        .unwrap_or_else(|e| panic!("after {sql}: {e}"))
        .get(0);
    assert_eq!(one, 1, "the session goes on after {sql}");
    error
}

#[test]
fn unsupported_and_unknown_get_their_sqlstates() {
    let (pg, proxy) = single();
    ok(&proxy, "SELECT * FROM pgml.load_dataset('iris')");
    ok(
        &proxy,
        "CREATE TABLE iris_bin AS SELECT sepal_length, sepal_width, petal_length, petal_width, target = 2 AS virginica FROM pgml.iris",
    );
    // An int label 0/1, and a relation where it is 0/1/2.
    ok(
        &proxy,
        "CREATE TABLE iris_bin2 AS SELECT sepal_length, sepal_width, petal_length, petal_width, (target = 2)::int AS target FROM pgml.iris; \
         CREATE TABLE iris_new AS SELECT sepal_length, sepal_width, petal_length, petal_width, target FROM pgml.iris",
    );
    for (project, task, relation, label, algorithm, extra) in [
        (
            "iris_svm",
            "classification",
            "pgml.iris",
            "target",
            "svm",
            "",
        ),
        (
            "iris_width",
            "regression",
            "pgml.iris",
            "petal_width",
            "lightgbm",
            LGBM,
        ),
        (
            "iris_bin",
            "classification",
            "iris_bin",
            "virginica",
            "lightgbm",
            LGBM,
        ),
        (
            "iris_bin2",
            "classification",
            "iris_bin2",
            "target",
            "lightgbm",
            LGBM,
        ),
    ] {
        train(&proxy, project, task, relation, label, algorithm, extra);
    }
    const F: &str = "ARRAY[sepal_length, sepal_width, petal_length, petal_width]";
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        let cases = [
            // An algorithm without explanations or importances.
            (
                format!("SELECT pgml.explain('iris_svm', {F}) FROM pgml.iris"),
                "0A000",
                "",
            ),
            (
                "SELECT pgml.explain('iris_svm', ARRAY[1, 2, 3, 4])".to_string(),
                "0A000",
                "",
            ),
            (
                "SELECT * FROM pgml.feature_importance('iris_svm')".to_string(),
                "0A000",
                "",
            ),
            // Unknown projects.
            (
                format!("SELECT pgml.explain('no_such_project', {F}) FROM pgml.iris"),
                "42704",
                "no_such_project",
            ),
            (
                "SELECT * FROM pgml.feature_importance('no_such_project')".to_string(),
                "42704",
                "no_such_project",
            ),
            (
                "SELECT * FROM pgml.evaluate('no_such_project', 'pgml.iris')".to_string(),
                "42704",
                "no_such_project",
            ),
            (
                "SELECT * FROM pgml.confusion_matrix('no_such_project', 'pgml.iris')".to_string(),
                "42704",
                "no_such_project",
            ),
            (
                "SELECT * FROM pgml.roc_curve('no_such_project', 'iris_bin')".to_string(),
                "42704",
                "no_such_project",
            ),
            // Missing relations.
            (
                "SELECT * FROM pgml.evaluate('iris_bin', 'no_such_table')".to_string(),
                "42P01",
                "no_such_table",
            ),
            (
                "SELECT * FROM pgml.confusion_matrix('iris_bin', 'no_such_table')".to_string(),
                "42P01",
                "no_such_table",
            ),
            (
                "SELECT * FROM pgml.roc_curve('iris_bin', 'no_such_table')".to_string(),
                "42P01",
                "no_such_table",
            ),
            (
                "SELECT * FROM pgml.evaluate('iris_width', 'public.no_such_table')".to_string(),
                "42P01",
                "no_such_table",
            ),
            // A ROC curve is for binary classification.
            (
                "SELECT * FROM pgml.roc_curve('iris_width', 'pgml.iris')".to_string(),
                "22023",
                "",
            ),
            // A label value the model never saw (the README: 22000).
            (
                "SELECT * FROM pgml.evaluate('iris_bin2', 'iris_new')".to_string(),
                "22000",
                "",
            ),
            // A negative top_k.
            (
                format!("SELECT pgml.explain('iris_bin', {F}, -1) FROM pgml.iris"),
                "22023",
                "top_k",
            ),
        ];
        for (sql, code, word) in &cases {
            let (got, message) = sqlstate(&client, sql).await;
            assert_eq!(&got, code, "{sql}: {message}");
            assert!(
                message.contains(word),
                "{sql}: the message names {word}: {message}"
            );
        }
        // What works still works on that session.
        let rows = client
            .simple_query("SELECT * FROM pgml.evaluate('iris_bin', 'iris_bin')")
            .await
            .unwrap();
        assert_eq!(simple_rows(&rows).len(), 1);
    });
    // Nothing was written to the catalog by the failed calls.
    assert_eq!(pg.psql("app", "SELECT count(*) FROM pgml.projects"), "4");
}

/// Prepares `sql` and checks its result columns' (name, type): the
/// statement.
async fn prepare_with_columns(
    client: &tokio_postgres::Client,
    sql: &str,
    want: &[(&str, &str)],
) -> tokio_postgres::Statement {
    let stmt = client
        .prepare(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let cols: Vec<(&str, &str)> = stmt
        .columns()
        .iter()
        .map(|c| (c.name(), c.type_().name()))
        .collect();
    assert_eq!(cols, want, "{sql}");
    stmt
}

/// A jsonb (binary: version 1, then the text) or json column as text.
struct JsonText(String);

impl<'a> tokio_postgres::types::FromSql<'a> for JsonText {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<JsonText, Box<dyn std::error::Error + Sync + Send>> {
        let body = if *ty == Type::JSONB {
            match raw.split_first() {
                Some((1, rest)) => rest,
                _ => return Err("jsonb binary without version 1".into()),
            }
        } else {
            raw
        };
        Ok(JsonText(std::str::from_utf8(body)?.to_string()))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB || *ty == Type::JSON
    }
}

/// psycopg 3 (server-side parameters, text and binary results) calling
/// pgml.explain with the project and top_k as $n.
const PSYCOPG_EXPLAIN: &str = r#"
import json, sys
import psycopg

F = "ARRAY[age, sex, bmi, bp, s1, s2, s3, s4, s5, s6]"
out = {}
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    sql = f"SELECT pgml.explain(%s, {F}, top_k => %s) FROM pgml.diabetes ORDER BY ctid"
    with conn.cursor() as cur:
        cur.execute(sql, ("dia_lgbm", 3))
        out["text3"] = [json.dumps(r[0]) for r in cur.fetchall()]
        cur.execute(sql, ("dia_lgbm", 2), prepare=True)
        cur.execute(sql, ("dia_lgbm", 2), prepare=True)
        out["prepared2"] = [json.dumps(r[0]) for r in cur.fetchall()]
    with conn.cursor(binary=True) as cur:
        cur.execute(f"SELECT pgml.explain(%s, {F}, %s) FROM pgml.diabetes ORDER BY ctid", ("dia_lgbm", 1))
        out["binary1"] = [json.dumps(r[0]) for r in cur.fetchall()]
    with conn.cursor() as cur:
        x = [float(v) for v in sys.argv[2].split(",")]
        marks = ", ".join(["%s"] * len(x))
        cur.execute(f"SELECT pgml.explain(%s, ARRAY[{marks}]::real[])", ["dia_lgbm", *x])
        out["constant"] = json.dumps(cur.fetchone()[0])
print(json.dumps(out))
"#;

#[test]
fn explain_with_parameters_from_psycopg_and_tokio_postgres() {
    let (pg, proxy) = single();
    train_on(&proxy, "diabetes", "dia_lgbm", "lightgbm", LGBM);
    let rows = Rows::read(&pg, "pgml.diabetes", "target");
    let arr = array_of(&rows.features);
    let full: Vec<Explanation> = select(
        &proxy,
        &format!("SELECT pgml.explain('dia_lgbm', {arr}) FROM pgml.diabetes ORDER BY ctid"),
        1,
    )
    .iter()
    .map(|r| Explanation::parse(&r[0]))
    .collect();
    assert_eq!(full.len(), rows.len());

    // psycopg 3 loads json with the key order of the text it got.
    let x7: Vec<String> = rows.x[7].iter().map(|v| v.to_string()).collect();
    let script_out = run(
        "python3",
        &[
            "-c",
            PSYCOPG_EXPLAIN,
            &proxy.url("app", "app_pw", "app"),
            &x7.join(","),
        ],
    );
    assert!(
        script_out.status.success(),
        "psycopg: {}\n{}",
        String::from_utf8_lossy(&script_out.stderr),
        proxy.log()
    );
    let got: Value = serde_json::from_slice(&script_out.stdout).unwrap();
    for (key, k, ordered) in [
        ("text3", 3, true),
        ("prepared2", 2, true),
        ("binary1", 1, false),
    ] {
        let list = got[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key}: {got}"));
        assert_eq!(list.len(), rows.len(), "psycopg {key}");
        for (i, v) in list.iter().enumerate() {
            let e = Explanation::parse(v.as_str().unwrap());
            if ordered {
                e.assert_ordered(&format!("psycopg {key} row {i}"));
            }
            e.assert_top_k_of(&full[i], k, &format!("psycopg {key} row {i}"));
        }
    }
    let constant = Explanation::parse(got["constant"].as_str().unwrap());
    constant.assert_top_k_of(&full[7], 10, "psycopg, constant features");

    // tokio-postgres: typed parameters, binary results.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        let sql =
            format!("SELECT pgml.explain($1, {arr}, top_k => $2) FROM pgml.diabetes ORDER BY ctid");
        let stmt = client
            .prepare_typed(&sql, &[Type::TEXT, Type::INT4])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}\n{}", proxy.log()));
        assert_eq!(stmt.columns().len(), 1);
        assert_eq!(stmt.columns()[0].type_(), &Type::JSONB, "{sql}");
        for k in [4i32, 1] {
            let got = client.query(&stmt, &[&"dia_lgbm", &k]).await.unwrap();
            assert_eq!(got.len(), rows.len());
            for (i, row) in got.iter().enumerate() {
                let JsonText(text) = row.get(0);
                Explanation::parse(&text).assert_top_k_of(
                    &full[i],
                    k as usize,
                    &format!("tokio-postgres top_k {k} row {i}"),
                );
            }
        }
        // The result columns of the other functions, as described.
        for (sql, want) in [
            (
                "SELECT * FROM pgml.feature_importance('dia_lgbm')",
                vec![
                    ("feature", "text"),
                    ("importance", "float4"),
                    ("method", "text"),
                ],
            ),
            (
                "SELECT * FROM pgml.evaluate('dia_lgbm', 'pgml.diabetes')",
                vec![("metrics", "jsonb")],
            ),
        ] {
            let stmt = prepare_with_columns(&client, sql, &want).await;
            let got = client
                .query(&stmt, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert!(!got.is_empty(), "{sql}");
            if want.len() == 1 {
                // evaluate's metrics, in binary.
                let JsonText(text) = got[0]
                    .try_get(0)
                    .unwrap_or_else(|e| panic!("{sql}: binary jsonb: {e}"));
                let metrics: Value = serde_json::from_str(&text).unwrap();
                assert!(metrics.get("r2").is_some(), "{sql}: {metrics}");
            }
        }
        let sql = "SELECT * FROM pgml.feature_importance($1)";
        let stmt = client
            .prepare_typed(sql, &[Type::TEXT])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let importance = client
            .query(&stmt, &[&"dia_lgbm"])
            .await
            .unwrap_or_else(|e| panic!("feature_importance($1): {e}"));
        assert_eq!(importance.len(), 20, "gain and shap for 10 features");
        // Binary results: importance is a float4.
        let first: f32 = importance[0]
            .try_get(1)
            .unwrap_or_else(|e| panic!("{sql}: importance in binary: {e}"));
        assert!(first > 0.0);
    });
}

#[test]
fn confusion_matrix_and_roc_curve_columns_are_typed() {
    let (_pg, proxy) = single();
    train_on(&proxy, "breast_cancer", "bc_lgbm", "lightgbm", LGBM);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = connect(&proxy.url("app", "app_pw", "app")).await;
        for (sql, want) in [
            (
                "SELECT * FROM pgml.confusion_matrix('bc_lgbm', 'pgml.breast_cancer')",
                vec![("actual", "text"), ("predicted", "text"), ("count", "int8")],
            ),
            (
                "SELECT * FROM pgml.roc_curve('bc_lgbm', 'pgml.breast_cancer')",
                vec![
                    ("threshold", "float4"),
                    ("recall", "float4"),
                    ("false_positive_rate", "float4"),
                    ("precision", "float4"),
                ],
            ),
        ] {
            prepare_with_columns(&client, sql, &want).await;
        }
        let sql = "SELECT * FROM pgml.confusion_matrix($1, $2)";
        let stmt = client
            .prepare_typed(sql, &[Type::TEXT, Type::TEXT])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let rows = client
            .query(&stmt, &[&"bc_lgbm", &"pgml.breast_cancer"])
            .await
            .unwrap_or_else(|e| panic!("confusion_matrix($1, $2): {e}"));
        // Binary results: count is an int8, the classes text.
        let total: i64 = rows
            .iter()
            .map(|r| {
                r.try_get::<_, i64>(2)
                    .unwrap_or_else(|e| panic!("{sql}: count in binary: {e}"))
            })
            .sum();
        let actual: &str = rows[0]
            .try_get(0)
            .unwrap_or_else(|e| panic!("{sql}: actual in binary: {e}"));
        assert!(!actual.is_empty());
        let sql = "SELECT * FROM pgml.roc_curve('bc_lgbm', 'pgml.breast_cancer')";
        let curve = client
            .query(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        for r in &curve {
            for c in 0..4 {
                let v: f32 = r
                    .try_get(c)
                    .unwrap_or_else(|e| panic!("{sql}: column {c} in binary: {e}"));
                assert!((0.0..=1.0).contains(&v), "{sql}: {v}");
            }
        }
        assert_eq!(total, 569, "every row counted once");
        assert!(rows.len() >= 2 && rows.len() <= 4);
        // A threshold the client declares float8 comes in binary: read as
        // the number it is (not as the eight bytes of an int8), and
        // described back as float8.
        let sql = "SELECT * FROM pgml.evaluate($1, $2, $3)";
        let stmt = client
            .prepare_typed(sql, &[Type::TEXT, Type::TEXT, Type::FLOAT8])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(stmt.params()[2], Type::FLOAT8, "{sql}: parameter types");
        let typed = client
            .query(&stmt, &[&"bc_lgbm", &"pgml.breast_cancer", &0.3f64])
            .await
            .unwrap_or_else(|e| panic!("{sql} with a binary float8: {e}"));
        let JsonText(typed) = typed[0].get(0);
        let literal = client
            .simple_query("SELECT * FROM pgml.evaluate('bc_lgbm', 'pgml.breast_cancer', 0.3)")
            .await
            .unwrap();
        let literal = literal
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .expect("evaluate with a literal threshold returns a row");
        let (typed, literal): (Value, Value) = (
            serde_json::from_str(&typed).unwrap(),
            serde_json::from_str(&literal).unwrap(),
        );
        assert_eq!(
            typed, literal,
            "threshold 0.3 as binary float8 and as a literal"
        );
        let default: Value = {
            let rows = client
                .query(&stmt, &[&"bc_lgbm", &"pgml.breast_cancer", &0.5f64])
                .await
                .unwrap();
            let JsonText(t) = rows[0].get(0);
            serde_json::from_str(&t).unwrap()
        };
        assert_ne!(
            typed["recall"], default["recall"],
            "the threshold took effect"
        );
    });
}
