//! Does a statement only read? Read off its parse (sqlparser, Postgres
//! dialect); anything it cannot prove read-only counts as a write, so the
//! primary is the fallback, never a replica.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, Query, SetExpr, Statement, TransactionAccessMode, TransactionMode, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// What a statement (or a multi-statement string) means for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    Read,
    Write,
    /// A lone BEGIN / START TRANSACTION; `read_only` for `READ ONLY`.
    Begin {
        read_only: bool,
    },
    /// A lone COMMIT/END (`commit`) or ROLLBACK/ABORT.
    End {
        commit: bool,
    },
}

/// Parses and classifies `sql` (the analysis does both once: this is for
/// callers and tests that have only the text).
pub fn classify(sql: &str) -> Intent {
    match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(statements) => intent_of(&statements),
        Err(_) => Intent::Write,
    }
}

/// The intent of parsed statements (a multi-statement string counts as one).
pub fn intent_of(statements: &[Statement]) -> Intent {
    if let [Statement::StartTransaction { modes, .. }] = statements {
        let read_only = modes.iter().any(|m| {
            matches!(
                m,
                TransactionMode::AccessMode(TransactionAccessMode::ReadOnly)
            )
        });
        return Intent::Begin { read_only };
    }
    match statements {
        [Statement::Commit { .. }] => return Intent::End { commit: true },
        [Statement::Rollback {
            savepoint: None, ..
        }] => return Intent::End { commit: false },
        _ => {}
    }
    let mut check = ReadOnly;
    if statements.iter().any(|s| s.visit(&mut check).is_break()) {
        Intent::Write
    } else {
        Intent::Read
    }
}

struct ReadOnly;

impl Visitor for ReadOnly {
    type Break = ();

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        match statement {
            Statement::Query(_) | Statement::ShowVariable { .. } => ControlFlow::Continue(()),
            _ => ControlFlow::Break(()),
        }
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if !query.locks.is_empty() {
            return ControlFlow::Break(()); // FOR UPDATE / FOR SHARE
        }
        match query.body.as_ref() {
            SetExpr::Select(select) if select.into.is_some() => ControlFlow::Break(()),
            SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
                ControlFlow::Break(())
            }
            _ => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = expr {
            let name = f.name.to_string().to_ascii_lowercase();
            let name = name.rsplit('.').next().unwrap_or(&name).trim_matches('"');
            if !READ_ONLY_FUNCTIONS.contains(&name) && !AGGREGATES.contains(&name) {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }
}

/// Built-in functions known not to write or take locks. A function missing
/// here (user functions, nextval, pg_advisory_lock, set_config...) sends the
/// statement to the primary.
const READ_ONLY_FUNCTIONS: &[&str] = &[
    "rank",
    "dense_rank",
    "row_number",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
    "cume_dist",
    "percent_rank",
    // conditionals and comparison; ROW(...) parses as a function call
    "row",
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "num_nonnulls",
    "num_nulls",
    // math
    "abs",
    "ceil",
    "ceiling",
    "floor",
    "round",
    "trunc",
    "sign",
    "sqrt",
    "cbrt",
    "exp",
    "ln",
    "log",
    "log10",
    "power",
    "pow",
    "mod",
    "div",
    "pi",
    "degrees",
    "radians",
    "sin",
    "cos",
    "tan",
    "asin",
    "acos",
    "atan",
    "atan2",
    "width_bucket",
    "gcd",
    "lcm",
    "factorial",
    "random",
    "scale",
    // strings
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "bit_length",
    "lower",
    "upper",
    "initcap",
    "substr",
    "substring",
    "position",
    "strpos",
    "replace",
    "translate",
    "trim",
    "btrim",
    "ltrim",
    "rtrim",
    "lpad",
    "rpad",
    "left",
    "right",
    "repeat",
    "reverse",
    "split_part",
    "concat",
    "concat_ws",
    "format",
    "md5",
    "sha256",
    "sha512",
    "encode",
    "decode",
    "to_hex",
    "ascii",
    "chr",
    "quote_ident",
    "quote_literal",
    "quote_nullable",
    "regexp_replace",
    "regexp_match",
    "regexp_matches",
    "regexp_split_to_array",
    "regexp_split_to_table",
    "starts_with",
    "string_to_array",
    "array_to_string",
    "to_char",
    "to_number",
    "to_date",
    "to_timestamp",
    "hashtext",
    "unaccent",
    // dates and times
    "now",
    "current_timestamp",
    "current_date",
    "current_time",
    "localtime",
    "localtimestamp",
    "clock_timestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "date_trunc",
    "date_part",
    "extract",
    "age",
    "make_date",
    "make_time",
    "make_timestamp",
    "make_timestamptz",
    "make_interval",
    "justify_days",
    "justify_hours",
    "justify_interval",
    "timezone",
    "date_bin",
    "isfinite",
    // json and arrays
    "json_build_object",
    "jsonb_build_object",
    "json_build_array",
    "jsonb_build_array",
    "to_json",
    "to_jsonb",
    "row_to_json",
    "json_array_length",
    "jsonb_array_length",
    "jsonb_extract_path",
    "jsonb_extract_path_text",
    "json_extract_path",
    "json_extract_path_text",
    "jsonb_each",
    "jsonb_each_text",
    "json_each",
    "json_each_text",
    "jsonb_array_elements",
    "jsonb_array_elements_text",
    "json_array_elements",
    "json_array_elements_text",
    "jsonb_object_keys",
    "json_object_keys",
    "jsonb_typeof",
    "json_typeof",
    "jsonb_set",
    "jsonb_insert",
    "jsonb_pretty",
    "jsonb_strip_nulls",
    "jsonb_path_query",
    "jsonb_path_exists",
    "array_length",
    "array_upper",
    "array_lower",
    "array_position",
    "array_positions",
    "array_append",
    "array_prepend",
    "array_cat",
    "array_remove",
    "array_replace",
    "cardinality",
    "unnest",
    "generate_series",
    "generate_subscripts",
    // system information that reads
    "version",
    "current_database",
    "current_schema",
    "current_schemas",
    "current_user",
    "session_user",
    "user",
    "current_setting",
    "pg_backend_pid",
    "pg_is_in_recovery",
    "pg_postmaster_start_time",
    "inet_server_addr",
    "inet_server_port",
    "pg_typeof",
    "pg_column_size",
    "pg_database_size",
    "pg_relation_size",
    "pg_total_relation_size",
    "pg_table_size",
    "pg_indexes_size",
    "pg_size_pretty",
    "has_table_privilege",
    "has_schema_privilege",
    "has_database_privilege",
    "to_regclass",
    "format_type",
    "obj_description",
    "col_description",
    "pg_get_viewdef",
    "pg_get_indexdef",
    "pg_get_constraintdef",
    "pg_get_expr",
    "pg_last_wal_replay_lsn",
    "pg_sleep",
    "gen_random_uuid",
    "uuid_generate_v4",
];

/// Aggregate functions (read-only, and what cross-row plans must know).
pub const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "array_agg",
    "string_agg",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    "bool_and",
    "bool_or",
    "every",
    "bit_and",
    "bit_or",
    "bit_xor",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "corr",
    "covar_pop",
    "covar_samp",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "percentile_cont",
    "percentile_disc",
    "mode",
    "xmlagg",
    "range_agg",
    "range_intersect_agg",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads() {
        for sql in [
            "select 1",
            "SELECT a, count(*) FROM t WHERE b = 1 GROUP BY a ORDER BY 2 DESC LIMIT 5",
            "with x as (select * from t) select * from x join u using (id)",
            "select now(), lower(name) from users union all select now(), 'x'",
            "show work_mem",
            "select 1; select 2",
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
            "SELECT to_json(ROW(a, b))::text FROM t",
        ] {
            assert_eq!(classify(sql), Intent::Read, "{sql}");
        }
    }

    #[test]
    fn writes() {
        for sql in [
            "insert into t values (1)",
            "update t set a = 1",
            "delete from t",
            "create table t(a int)",
            "select * from t for update",
            "select * from t for share",
            "select nextval('s')",
            "select pg_advisory_lock(1)",
            "select set_config('a.b', 'c', false)",
            "select my_function(1)",
            "with d as (delete from t returning *) select * from d",
            "select * into new_t from t",
            "select 1; insert into t values (1)",
            "this is not sql",
            "vacuum",
        ] {
            assert_eq!(classify(sql), Intent::Write, "{sql}");
        }
    }

    #[test]
    fn transactions() {
        assert_eq!(classify("BEGIN"), Intent::Begin { read_only: false });
        assert_eq!(
            classify("begin read only"),
            Intent::Begin { read_only: true }
        );
        assert_eq!(
            classify("START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"),
            Intent::Begin { read_only: true }
        );
        assert_eq!(
            classify("begin; insert into t values (1); commit"),
            Intent::Write
        );
        assert_eq!(classify("COMMIT"), Intent::End { commit: true });
        assert_eq!(classify("end"), Intent::End { commit: true });
        assert_eq!(classify("rollback"), Intent::End { commit: false });
    }
}
