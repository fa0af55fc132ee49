use super::*;

fn planned(sql: &str) -> LookupPlan {
    match plan(sql) {
        Ok(p) => p,
        Err(e) => panic!("{sql}: {e}"),
    }
}

#[test]
fn an_update_collects_over_its_rows_and_looks_up_in_set() {
    let p = planned("UPDATE t SET score = pgml.predict('p', ARRAY[f1, f2]) WHERE id > 3");
    assert_eq!(p.sites.len(), 1);
    assert_eq!(
        p.sites[0].collect_sql,
        "SELECT ((ARRAY[f1, f2])) AS k FROM t WHERE id > 3 FOR UPDATE OF t"
    );
    assert_eq!(p.own, Own::Locking);
    assert!(p
        .final_sql
        .starts_with("UPDATE t SET score = coalesce((SELECT"));
    assert!(p.final_sql.contains("pg_temp.__pgml_m0"));
}

#[test]
fn a_filter_collects_without_the_conjuncts_that_call_pgml() {
    let p = planned(
        "SELECT id, pgml.predict('p', ARRAY[a]) + 1 FROM t WHERE x > 1 AND pgml.predict('q', ARRAY[b]) > $1",
    );
    assert_eq!(p.sites.len(), 2);
    // The WHERE call first, collected without its own conjunct.
    assert_eq!(
        p.sites[0].collect_sql,
        "SELECT ((ARRAY[b])) AS k FROM t WHERE x > 1"
    );
    // The SELECT-list call sees the whole WHERE, the first call a lookup.
    assert!(p.sites[1].collect_sql.contains("__pgml_m0"));
    assert!(p.sites[1].collect_sql.contains("$1"));
}

#[test]
fn calls_in_aggregates_are_per_row_and_outside_per_group() {
    let p = planned(
        "SELECT region, avg(pgml.predict('p', ARRAY[a])) FROM t GROUP BY region \
         HAVING count(*) > 2 ORDER BY pgml.predict('p', ARRAY[avg(a)])",
    );
    assert_eq!(p.sites[0].collect_sql, "SELECT ((ARRAY[a])) AS k FROM t");
    assert_eq!(
        p.sites[1].collect_sql,
        "SELECT ((ARRAY[avg(a)])) AS k FROM t GROUP BY region HAVING count(*) > 2"
    );
}

#[test]
fn nested_blocks_come_first_and_a_call_is_named_as_postgres_names_it() {
    let p = planned(
        "WITH s AS (SELECT id, pgml.predict('p', ARRAY[a]) FROM t) \
         SELECT id, pgml.predict('q', ARRAY[s.predict]) FROM s",
    );
    assert_eq!(p.sites.len(), 2);
    assert_eq!(p.sites[0].collect_sql, "SELECT ((ARRAY[a])) AS k FROM t");
    assert!(p.sites[1]
        .collect_sql
        .starts_with("WITH s AS (SELECT id, coalesce("));
    assert!(p.final_sql.contains("AS \"predict\""));
    assert!(p.describe_sql.contains("AS \"predict\""));
    assert!(!p.describe_sql.contains("__pgml_m"));
}

#[test]
fn explain_without_analyze_evaluates_nothing() {
    assert!(!planned("EXPLAIN SELECT avg(pgml.predict('p', ARRAY[a])) FROM t").evaluates);
    assert!(planned("EXPLAIN ANALYZE SELECT avg(pgml.predict('p', ARRAY[a])) FROM t").evaluates);
    assert!(planned("EXPLAIN (ANALYZE) SELECT avg(pgml.predict('p', ARRAY[a])) FROM t").evaluates);
}

#[test]
fn what_cannot_be_reproduced_is_refused_by_name() {
    let refused = |sql: &str| match plan(sql) {
        Err(MlError::Unsupported(m)) => m,
        other => panic!("{sql}: {other:?}"),
    };
    assert!(refused("UPDATE t SET s = pgml.predict('p', ARRAY[random()])").contains("random()"));
    assert!(
        refused("INSERT INTO t SELECT 1 RETURNING pgml.predict('p', ARRAY[a])")
            .contains("RETURNING")
    );
    assert!(refused("SELECT 1; SELECT avg(pgml.predict('p', ARRAY[1]))").contains("several"));
}
