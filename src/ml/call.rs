//! Finding the pgml functions pgmlcat answers itself (`train`, `deploy`,
//! ...) in a statement, and reading their arguments, positional or named,
//! as Postgres would bind them.

use sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName, SelectItem, SetExpr,
    Statement, TableFactor, UnaryOperator, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::error::{MlError, MlResult};

/// The functions answered from the proxy (predictions are rewritten, not answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Train,
    TrainJoint,
    Deploy,
    Snapshot,
    LoadDataset,
    Version,
    FeatureImportance,
    Evaluate,
    ConfusionMatrix,
    RocCurve,
    ImportModel,
    ExportModel,
    Drift,
    Schedule,
    Unschedule,
}

impl Function {
    fn from_name(name: &str) -> Option<Function> {
        Some(match name {
            "train" => Function::Train,
            "train_joint" => Function::TrainJoint,
            "deploy" => Function::Deploy,
            "snapshot" => Function::Snapshot,
            "load_dataset" => Function::LoadDataset,
            "version" => Function::Version,
            "feature_importance" => Function::FeatureImportance,
            "evaluate" => Function::Evaluate,
            "confusion_matrix" => Function::ConfusionMatrix,
            "roc_curve" => Function::RocCurve,
            "import_model" => Function::ImportModel,
            "export_model" => Function::ExportModel,
            "drift" => Function::Drift,
            "schedule" => Function::Schedule,
            "unschedule" => Function::Unschedule,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Function::Train => "train",
            Function::TrainJoint => "train_joint",
            Function::Deploy => "deploy",
            Function::Snapshot => "snapshot",
            Function::LoadDataset => "load_dataset",
            Function::Version => "version",
            Function::FeatureImportance => "feature_importance",
            Function::Evaluate => "evaluate",
            Function::ConfusionMatrix => "confusion_matrix",
            Function::RocCurve => "roc_curve",
            Function::ImportModel => "import_model",
            Function::ExportModel => "export_model",
            Function::Drift => "drift",
            Function::Schedule => "schedule",
            Function::Unschedule => "unschedule",
        }
    }

    /// Parameter names in declaration order, as PostgresML declares them, so
    /// positional and named arguments bind alike.
    pub fn parameters(self) -> &'static [&'static str] {
        const TRAIN: &[&str] = &[
            "project_name",
            "task",
            "relation_name",
            "y_column_name",
            "algorithm",
            "hyperparams",
            "search",
            "search_params",
            "search_args",
            "test_size",
            "test_sampling",
            "runtime",
            "automatic_deploy",
            "materialize_snapshot",
            "preprocess",
            // pgmlcat's: one model per group of these columns.
            "group_by",
        ];
        match self {
            Function::Train | Function::TrainJoint => TRAIN,
            Function::Deploy => &["project_name", "strategy", "algorithm"],
            Function::Snapshot => &[
                "relation_name",
                "y_column_name",
                "test_size",
                "test_sampling",
                "preprocess",
            ],
            Function::LoadDataset => &["source", "subset", "limit", "kwargs"],
            Function::Version => &[],
            Function::FeatureImportance => &["project_name"],
            Function::Evaluate => &["project_name", "relation_name", "threshold"],
            Function::ConfusionMatrix | Function::RocCurve => &["project_name", "relation_name"],
            Function::ImportModel => &["project_name", "task", "format", "model", "feature_names"],
            Function::ExportModel => &["model_id"],
            Function::Drift => &["project_name", "relation_name"],
            Function::Schedule => &["project_name", "every", "relation_name", "condition"],
            Function::Unschedule => &["project_name"],
        }
    }
}

/// A constant argument as written in SQL (casts dropped: `'{}'::jsonb` is
/// the text `{}`, read as JSON where JSON is expected).
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Null,
    Text(String),
    Number(f64),
    Bool(bool),
    Array(Vec<Arg>),
    /// `$n` of the extended protocol (1-based as written).
    Param(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct FnCall {
    pub func: Function,
    /// Bound to parameter names; unset parameters take their defaults.
    pub args: Vec<(&'static str, Arg)>,
    /// `SELECT * FROM pgml.f()` gives the record's columns; `SELECT pgml.f()`
    /// one composite column named after the function (or its alias).
    pub expand: bool,
    pub alias: Option<String>,
    /// The result formats of the Bind (none: all text).
    pub result_formats: Vec<i16>,
    /// The parameter types the client declared in its Parse (0: none),
    /// for reading binary parameters.
    pub param_types: Vec<u32>,
}

impl FnCall {
    pub fn get(&self, name: &str) -> Option<&Arg> {
        self.args.iter().find(|(n, _)| *n == name).map(|(_, a)| a)
    }

    /// The type of parameter `i` (0-based) as the client sees it: as it
    /// declared it; else the type of the argument it stands for where that
    /// is not text (`pgml.schedule`'s `every` is an interval, as Postgres
    /// would describe it, so a driver sends it as one); else text.
    pub fn param_type(&self, i: usize) -> u32 {
        use crate::net::oid;
        if let Some(&declared) = self.param_types.get(i).filter(|&&t| t != 0) {
            return declared;
        }
        let argument = self
            .args
            .iter()
            .find(|(_, a)| *a == Arg::Param(i + 1))
            .map(|(name, _)| *name);
        match argument {
            Some("every") => oid::INTERVAL,
            _ => oid::TEXT,
        }
    }

    /// Highest `$n` used, so Parse can describe that many parameters.
    pub fn param_count(&self) -> usize {
        fn max_param(arg: &Arg) -> usize {
            match arg {
                Arg::Param(n) => *n,
                Arg::Array(items) => items.iter().map(max_param).max().unwrap_or(0),
                _ => 0,
            }
        }
        self.args
            .iter()
            .map(|(_, a)| max_param(a))
            .max()
            .unwrap_or(0)
    }

    /// Replaces `$n` with the values bound to them (text format; None = NULL).
    pub fn bind(&mut self, values: &[Option<String>]) -> MlResult<()> {
        fn bind_arg(arg: &mut Arg, values: &[Option<String>]) -> MlResult<()> {
            match arg {
                Arg::Param(n) => {
                    let value = values
                        .get(*n - 1)
                        .ok_or_else(|| MlError::invalid(format!("there is no parameter ${n}")))?;
                    *arg = match value {
                        None => Arg::Null,
                        Some(v) => Arg::Text(v.clone()),
                    };
                }
                Arg::Array(items) => {
                    for item in items {
                        bind_arg(item, values)?;
                    }
                }
                _ => {}
            }
            Ok(())
        }
        for (_, arg) in &mut self.args {
            bind_arg(arg, values)?;
        }
        Ok(())
    }
}

/// Cheap test the hot path runs before any parsing.
pub fn mentions_pgml(sql: &str) -> bool {
    mentions_pgml_bytes(sql.as_bytes())
}

/// `mentions_pgml` on raw statement bytes: it runs on every Query and
/// Parse, so it jumps from one `p` to the next instead of comparing at
/// every position.
#[inline]
pub fn mentions_pgml_bytes(sql: &[u8]) -> bool {
    memchr::memchr2_iter(b'p', b'P', sql).any(|i| {
        sql.get(i + 1..i + 4)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"gml"))
    })
}

/// The pgml function calls this query string is made of, if it calls any.
/// Several statements are fine when every one is such a call (psql -c
/// "SELECT pgml.load_dataset('iris'); SELECT pgml.train(...)"). A statement
/// that uses one of these functions in any other shape is refused (0A000)
/// rather than sent to a server that has no such function.
pub fn parse_calls(sql: &str) -> MlResult<Option<Vec<FnCall>>> {
    let Ok(statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
        return Ok(None);
    };
    if !statements.iter().any(uses_function) {
        return Ok(None);
    }
    statements
        .iter()
        .map(call_of)
        .collect::<MlResult<Vec<_>>>()
        .map(Some)
}

/// Like `parse_calls` for one statement (the extended protocol's Parse).
pub fn parse_call(sql: &str) -> MlResult<Option<FnCall>> {
    match parse_calls(sql)? {
        None => Ok(None),
        Some(mut calls) if calls.len() == 1 => Ok(calls.pop()),
        Some(_) => Err(MlError::Unsupported(
            "cannot insert multiple commands into a prepared statement".into(),
        )),
    }
}

fn shape_error() -> MlError {
    MlError::Unsupported(
        "pgml functions must be called alone: SELECT * FROM pgml.train(...) or SELECT pgml.train(...), \
         without WHERE, ORDER BY or LIMIT"
            .into(),
    )
}

fn call_of(statement: &Statement) -> MlResult<FnCall> {
    let Statement::Query(query) = statement else {
        return Err(shape_error());
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(shape_error());
    };
    // The proxy answers the call itself: nothing may filter, sort or cut
    // its rows, since nothing would.
    if query.with.is_some()
        || query.order_by.is_some()
        || query.limit_clause.is_some()
        || query.fetch.is_some()
        || select.selection.is_some()
        || select.group_by != sqlparser::ast::GroupByExpr::Expressions(vec![], vec![])
        || select.having.is_some()
        || select.distinct.is_some()
        || select.projection.len() != 1
    {
        return Err(shape_error());
    }
    match (select.from.as_slice(), &select.projection[0]) {
        ([from], SelectItem::Wildcard(_)) if from.joins.is_empty() => match &from.relation {
            TableFactor::Table {
                name,
                args: Some(args),
                alias,
                ..
            } => {
                let func = ours(name).ok_or_else(shape_error)?;
                Ok(FnCall {
                    func,
                    args: bind(func, &args.args)?,
                    expand: true,
                    alias: alias.as_ref().map(|a| a.name.value.clone()),
                    result_formats: Vec::new(),
                    param_types: Vec::new(),
                })
            }
            _ => Err(shape_error()),
        },
        ([], item) => {
            let (expr, alias) = match item {
                SelectItem::UnnamedExpr(e) => (e, None),
                SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
                _ => return Err(shape_error()),
            };
            let Expr::Function(f) = expr else {
                return Err(shape_error());
            };
            let func = ours(&f.name).ok_or_else(shape_error)?;
            let args = match &f.args {
                FunctionArguments::List(list) => list.args.as_slice(),
                FunctionArguments::None => &[],
                FunctionArguments::Subquery(_) => return Err(shape_error()),
            };
            Ok(FnCall {
                func,
                args: bind(func, args)?,
                expand: false,
                alias,
                result_formats: Vec::new(),
                param_types: Vec::new(),
            })
        }
        _ => Err(shape_error()),
    }
}

/// `pgml.<one of ours>` with Postgres's identifier rules: unquoted names
/// fold to lower case, quoted ones are exact.
fn ours(name: &ObjectName) -> Option<Function> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| {
            let ident = p.as_ident()?;
            Some(match ident.quote_style {
                Some(_) => ident.value.clone(),
                None => ident.value.to_lowercase(),
            })
        })
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        [schema, func] if schema == "pgml" => Function::from_name(func),
        _ => None,
    }
}

fn uses_function(statement: &Statement) -> bool {
    use sqlparser::ast::Visit;
    use std::ops::ControlFlow;
    struct Finder;
    impl sqlparser::ast::Visitor for Finder {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            match expr {
                Expr::Function(f) if ours(&f.name).is_some() => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            }
        }
        fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
            match t {
                TableFactor::Table {
                    name,
                    args: Some(_),
                    ..
                } if ours(name).is_some() => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            }
        }
    }
    statement.visit(&mut Finder).is_break()
}

fn bind(func: Function, args: &[FunctionArg]) -> MlResult<Vec<(&'static str, Arg)>> {
    let params = func.parameters();
    let mut bound: Vec<(&'static str, Arg)> = Vec::new();
    let mut named_seen = false;
    for (i, arg) in args.iter().enumerate() {
        let (name, expr) = match arg {
            FunctionArg::Unnamed(e) => {
                if named_seen {
                    return Err(MlError::invalid(
                        "positional argument cannot follow named argument",
                    ));
                }
                let name = params.get(i).ok_or_else(|| {
                    MlError::invalid(format!(
                        "pgml.{} takes at most {} arguments, {} given",
                        func.name(),
                        params.len(),
                        args.len()
                    ))
                })?;
                (*name, e)
            }
            FunctionArg::Named { name, arg, .. }
            | FunctionArg::ExprNamed {
                name: Expr::Identifier(name),
                arg,
                ..
            } => {
                named_seen = true;
                let wanted = name.value.to_lowercase();
                let name = params.iter().find(|p| **p == wanted).ok_or_else(|| {
                    MlError::invalid(format!(
                        "pgml.{} has no parameter \"{}\"; parameters: {}",
                        func.name(),
                        name.value,
                        params.join(", ")
                    ))
                })?;
                (*name, arg)
            }
            FunctionArg::ExprNamed { .. } => {
                return Err(MlError::invalid("unsupported argument form"));
            }
        };
        if bound.iter().any(|(n, _)| *n == name) {
            return Err(MlError::invalid(format!(
                "argument \"{name}\" given more than once"
            )));
        }
        let FunctionArgExpr::Expr(expr) = expr else {
            return Err(MlError::invalid(format!(
                "argument \"{name}\" must be a constant"
            )));
        };
        bound.push((name, constant(expr, name)?));
    }
    Ok(bound)
}

/// Arguments must be constants (or `$n`): pgmlcat evaluates the call itself.
fn constant(expr: &Expr, name: &str) -> MlResult<Arg> {
    let not_constant = || {
        MlError::Unsupported(format!(
            "argument \"{name}\" must be a constant or a $n parameter, not {expr}"
        ))
    };
    Ok(match expr {
        Expr::Value(v) => match &v.value {
            Value::Null => Arg::Null,
            Value::Boolean(b) => Arg::Bool(*b),
            Value::Number(n, _) => Arg::Number(n.parse().map_err(|_| not_constant())?),
            Value::Placeholder(p) => Arg::Param(
                p.trim_start_matches('$')
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(not_constant)?,
            ),
            other => Arg::Text(other.clone().into_string().ok_or_else(not_constant)?),
        },
        Expr::Cast { expr, .. } | Expr::Nested(expr) => constant(expr, name)?,
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match constant(expr, name)? {
            Arg::Number(n) => Arg::Number(-n),
            _ => return Err(not_constant()),
        },
        Expr::Array(array) => Arg::Array(
            array
                .elem
                .iter()
                .map(|e| constant(e, name))
                .collect::<MlResult<_>>()?,
        ),
        _ => return Err(not_constant()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(sql: &str) -> FnCall {
        match parse_call(sql) {
            Ok(Some(c)) => c,
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn positional_and_named_arguments_bind_alike() {
        let a = call("SELECT * FROM pgml.train('p', 'classification', 'iris', 'target', algorithm => 'lightgbm', hyperparams => '{\"n_estimators\": 10}'::jsonb)");
        assert_eq!(a.func, Function::Train);
        assert!(a.expand);
        assert_eq!(a.get("project_name"), Some(&Arg::Text("p".into())));
        assert_eq!(a.get("algorithm"), Some(&Arg::Text("lightgbm".into())));
        assert_eq!(
            a.get("hyperparams"),
            Some(&Arg::Text("{\"n_estimators\": 10}".into()))
        );
        let b = call("select PGML.Train(project_name => 'p', test_size => 0.5, automatic_deploy => false, y_column_name => ARRAY['a','b'])");
        assert!(!b.expand);
        assert_eq!(b.get("test_size"), Some(&Arg::Number(0.5)));
        assert_eq!(b.get("automatic_deploy"), Some(&Arg::Bool(false)));
        assert_eq!(
            b.get("y_column_name"),
            Some(&Arg::Array(vec![
                Arg::Text("a".into()),
                Arg::Text("b".into())
            ]))
        );
    }

    #[test]
    fn quoting_follows_postgres_rules() {
        assert_eq!(
            call("SELECT \"pgml\".\"version\"()").func,
            Function::Version
        );
        assert_eq!(parse_call("SELECT \"PGML\".version()").unwrap(), None);
        assert_eq!(parse_call("SELECT * FROM pgml.models").unwrap(), None);
        assert_eq!(
            parse_call("SELECT pgml.predict('p', ARRAY[1])").unwrap(),
            None
        );
    }

    #[test]
    fn parameters_are_bound_later() {
        let mut c = call("SELECT * FROM pgml.train($1, 'regression', $2)");
        assert_eq!(c.param_count(), 2);
        c.bind(&[Some("p".into()), None]).unwrap();
        assert_eq!(c.get("project_name"), Some(&Arg::Text("p".into())));
        assert_eq!(c.get("relation_name"), Some(&Arg::Null));
    }

    #[test]
    fn other_shapes_are_refused_not_forwarded() {
        for sql in [
            "SELECT 1, pgml.version()",
            "SELECT * FROM t WHERE x = (SELECT pgml.version())",
            "SELECT pgml.train('p', relation_name => (SELECT 'x'))",
            "SELECT pgml.version(); SELECT 1",
            "SELECT 1; SELECT pgml.version()",
        ] {
            let err = parse_call(sql).unwrap_err();
            assert_eq!(err.sqlstate(), "0A000", "{sql}");
        }
        let err = parse_call("SELECT pgml.train('p', nope => 1)").unwrap_err();
        assert_eq!(err.sqlstate(), "22023");
        let err = parse_call("SELECT pgml.deploy('p', 'best_score', 'x', 'y')").unwrap_err();
        assert_eq!(err.sqlstate(), "22023");
    }

    #[test]
    fn several_calls_in_one_query_string() {
        let calls = parse_calls("SELECT pgml.load_dataset('iris'); SELECT * FROM pgml.version()")
            .unwrap()
            .unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1].func, Function::Version);
        assert_eq!(
            parse_call("SELECT pgml.version(); SELECT pgml.version()")
                .unwrap_err()
                .sqlstate(),
            "0A000"
        );
    }

    #[test]
    fn cheap_mention_check() {
        assert!(mentions_pgml("select PGML.train()"));
        assert!(mentions_pgml("select \"pGmL\".predict()"));
        assert!(!mentions_pgml("select 1"));
        assert!(!mentions_pgml("select pgm"), "cut short at the end");
        assert!(!mentions_pgml("select p, pg, pgm l"));
    }
}

/// The statements of a query string, each its exact text (without the
/// `;`), empty ones left out: split at the semicolons the tokenizer sees
/// outside strings, quoted names, comments and dollar quotes. None when
/// the string cannot be tokenized.
pub fn split_statements(sql: &str) -> Option<Vec<&str>> {
    use sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .ok()?;
    // Byte offset of each line's start, for the tokens' (line, column).
    let mut lines = vec![0usize];
    lines.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
    let offset = |line: u64, column: u64| -> Option<usize> {
        let start = *lines.get(usize::try_from(line).ok()?.checked_sub(1)?)?;
        let col = usize::try_from(column).ok()?.checked_sub(1)?;
        match sql[start..].char_indices().nth(col) {
            Some((i, _)) => Some(start + i),
            None => Some(sql.len()),
        }
    };
    let mut out = Vec::new();
    let mut from = 0;
    for t in &tokens {
        if t.token == Token::SemiColon {
            let at = offset(t.span.start.line, t.span.start.column)?;
            out.push(&sql[from..at]);
            from = at + 1;
        }
    }
    out.push(&sql[from..]);
    Some(out.into_iter().filter(|s| !s.trim().is_empty()).collect())
}

#[cfg(test)]
mod split_tests {
    use super::split_statements;

    #[test]
    fn semicolons_inside_strings_comments_and_dollar_quotes_do_not_split() {
        let sql = "SELECT 'a;b'; -- c;d\nSELECT $x$;$x$, \"e;f\";\n\n SELECT 1 /* ; */;";
        assert_eq!(
            split_statements(sql).unwrap(),
            vec![
                "SELECT 'a;b'",
                " -- c;d\nSELECT $x$;$x$, \"e;f\"",
                "\n\n SELECT 1 /* ; */"
            ]
        );
        assert_eq!(
            split_statements("SELECT 'é;'; SELECT 2").unwrap(),
            vec!["SELECT 'é;'", " SELECT 2"]
        );
    }
}
