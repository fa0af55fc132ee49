//! pgml.drift, pgml.schedule and pgml.unschedule through the drivers
//! applications use, which send parameters and read results each their
//! own way: the rows must be the ones psql reads.

use serde_json::{json, Value};

use super::{drift, drifted, numeric_tables, set, train, Drift};
use crate::common::*;

/// The rows a Python client printed (lists of [feature, statistic, value,
/// threshold, drifted]) as `Drift`s: values read back to float4.
fn client_rows(rows: &Value, what: &str) -> Vec<Drift> {
    let f = |v: &Value| v.as_f64().map(|x| x as f32);
    rows.as_array()
        .unwrap_or_else(|| panic!("{what}: not a list: {rows}"))
        .iter()
        .map(|r| {
            let c = r.as_array().unwrap_or_else(|| panic!("{what}: {r}"));
            assert_eq!(c.len(), 5, "{what}: {r}");
            Drift {
                feature: c[0]
                    .as_str()
                    .unwrap_or_else(|| panic!("{what}: {r}"))
                    .into(),
                statistic: c[1]
                    .as_str()
                    .unwrap_or_else(|| panic!("{what}: {r}"))
                    .into(),
                value: f(&c[2]),
                threshold: f(&c[3]).unwrap_or_else(|| panic!("{what}: threshold {r}")),
                drifted: c[4].as_bool(),
            }
        })
        .collect()
}

/// Every `{"error": ...}` in a Python client's answer, with where it is.
fn client_errors(at: &str, v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(e) = m.get("error") {
                let sql = m.get("sql").map(|s| format!(" ({s})")).unwrap_or_default();
                out.push(format!("{at}{sql}: {e}"));
            }
            for (k, v) in m {
                client_errors(&format!("{at}.{k}"), v, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                client_errors(&format!("{at}[{i}]"), v, out);
            }
        }
        _ => {}
    }
}

/// Real drivers through the proxy: psycopg 3 (parameters as text, as
/// binary with their types declared, a binary cursor), asyncpg
/// (prepared, every value in binary) and node-postgres (untyped text
/// parameters) read pgml.drift's rows as psql does,
/// a NULL relation meaning the default one; pgml.schedule takes a Python
/// timedelta as a binary interval and gives it back (text and binary
/// results) with an aware next_run; pgml.unschedule answers true, then
/// false.
#[test]
fn drivers_call_drift_and_schedule() {
    let (pg, proxy) = single();
    numeric_tables(&pg, "true");
    train(&proxy, "p", "base", "y", "");
    let shifted = drift(&proxy, "'p', 'shifted'");
    let default = drift(&proxy, "'p', NULL");
    assert_eq!(
        drifted(&shifted),
        set(&[("x2", "psi"), ("x2", "ks")]),
        "{shifted:#?}"
    );
    assert_eq!(default.len(), 9, "{default:#?}");
    let url = proxy.url("app", "app_pw", "app");
    let input = json!({"project": "p", "relation": "shifted"});
    let scripts = ["drift_schedule.py", "drift_schedule_asyncpg.py"];
    let outs: Vec<Value> = scripts
        .iter()
        .map(|script| python_client_json(script, &url, &input))
        .collect();
    let mut errors = Vec::new();
    for (script, out) in scripts.iter().zip(&outs) {
        client_errors(script, out, &mut errors);
    }
    assert!(
        errors.is_empty(),
        "calls the drivers could not make:\n{}",
        errors.join("\n")
    );
    for (script, out) in scripts.iter().zip(outs) {
        for (key, want) in [("drift", &shifted), ("default", &default)] {
            let forms = out[key]
                .as_object()
                .unwrap_or_else(|| panic!("{script}: no {key} in {out}"));
            assert!(!forms.is_empty(), "{script}: {key}");
            for (form, rows) in forms {
                let what = format!("{script} {key} {form}");
                assert_eq!(
                    &client_rows(rows, &what),
                    want,
                    "{what}: as psql reads them"
                );
            }
        }
        let schedules = out["schedule"]
            .as_array()
            .unwrap_or_else(|| panic!("{script}: {out}"));
        assert!(!schedules.is_empty(), "{script}");
        for s in schedules {
            assert_eq!(s["project"], "p", "{script}: {s}");
            assert_eq!(s["every_type"], "timedelta", "{script}: {s}");
            assert_eq!(s["every_is_30s"], true, "{script}: every {s}");
            assert_eq!(s["condition"], "always", "{script}: {s}");
            assert_eq!(s["next_run_type"], "datetime", "{script}: {s}");
            assert_eq!(s["next_run_aware"], true, "{script}: {s}");
            assert_eq!(s["next_run_within_a_minute"], true, "{script}: {s}");
            let four = s["sql"].as_str().unwrap_or("").matches(',').count() == 3;
            let relation = if four { json!("shifted") } else { Value::Null };
            assert_eq!(s["relation"], relation, "{script}: {s}");
        }
        assert_eq!(out["unschedule"], json!([["p", true]]), "{script}: {out}");
        assert_eq!(
            out["unschedule_again"],
            json!([["p", false]]),
            "{script}: {out}"
        );
    }
    node_postgres(&url, &input, &shifted, &default);
    assert_eq!(
        pg.psql("app", "SELECT count(*) FROM pgml.schedules"),
        "0",
        "unscheduled"
    );
}

/// node-postgres (parameters as text with no declared type, unnamed and
/// named statements, results parsed from text) after the Python drivers:
/// the same drift rows, a schedule whose interval it sent as text comes
/// back as 30 seconds with a next run within a minute, unschedule answers
/// true, then false.
fn node_postgres(url: &str, input: &Value, shifted: &[Drift], default: &[Drift]) {
    let script = "drift_schedule.js";
    let out = node_client_json(script, url, input);
    let mut errors = Vec::new();
    client_errors(script, &out, &mut errors);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    for (key, want) in [("drift", shifted), ("default", default)] {
        for form in ["unnamed", "named"] {
            let what = format!("{script} {key} {form}");
            assert_eq!(client_rows(&out[key][form], &what), want, "{what}");
        }
    }
    let schedules = out["schedule"].as_array().map_or(&[][..], Vec::as_slice);
    assert_eq!(schedules.len(), 2, "{out}");
    for (s, relation) in schedules.iter().zip([Value::Null, json!("shifted")]) {
        assert_eq!(s["project"], "p", "{s}");
        assert_eq!(s["every_type"], "PostgresInterval", "{s}");
        assert_eq!(s["every_is_30s"], true, "{s}");
        assert_eq!(s["relation"], relation, "{s}");
        assert_eq!(s["condition"], "always", "{s}");
        assert_eq!(s["next_run_type"], "Date", "{s}");
        assert_eq!(s["next_run_within_a_minute"], true, "{s}");
    }
    assert_eq!(out["unschedule"], json!([["p", true]]), "{out}");
    assert_eq!(out["unschedule_again"], json!([["p", false]]), "{out}");
}
