//! Recognising one `pgml.predict*` call in the AST: which function, which
//! model, what kind of input, and the expression that replaces it.

use std::ops::ControlFlow;

use sqlparser::ast::{
    CastKind, DataType, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, Ident,
    ObjectName, ObjectNamePart, UnaryOperator, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::ml::error::{MlError, MlResult};
use crate::ml::frame::RawValue;

use super::types::{Call, Features, Func, InputKind, ModelRef, TopK};

/// An identifier as Postgres resolves it: unquoted folds to lower case,
/// quoted is taken verbatim.
pub fn folded(ident: &Ident) -> String {
    match ident.quote_style {
        None => ident.value.to_lowercase(),
        Some(_) => ident.value.clone(),
    }
}

fn func_of(name: &ObjectName) -> Option<Func> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => Some(folded(i)),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let [schema, func] = parts.as_slice() else {
        return None;
    };
    if schema != "pgml" {
        return None;
    }
    match func.as_str() {
        "predict" => Some(Func::Predict),
        "predict_proba" => Some(Func::PredictProba),
        "predict_joint" => Some(Func::PredictJoint),
        "predict_batch" => Some(Func::PredictBatch),
        "explain" => Some(Func::Explain),
        _ => None,
    }
}

/// The call itself when `expr` is one (parentheses around it allowed).
pub fn as_call(expr: &Expr) -> Option<(Func, &Function)> {
    match expr {
        Expr::Nested(inner) => as_call(inner),
        Expr::Function(f) => func_of(&f.name).map(|func| (func, f)),
        _ => None,
    }
}

/// Whether `f` is an aggregate (a window function's `OVER` makes it none).
pub fn is_aggregate(f: &Function) -> bool {
    f.over.is_none()
        && matches!(f.name.0.last(), Some(ObjectNamePart::Identifier(i))
            if crate::router::rw::AGGREGATES.contains(&folded(i).as_str()))
}

/// Whether any `pgml.predict*` call occurs anywhere inside `node`.
pub fn contains_call<V: sqlparser::ast::Visit>(node: &V) -> bool {
    sqlparser::ast::visit_expressions(node, |e| match e {
        Expr::Function(f) if func_of(&f.name).is_some() => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

/// A call taken apart: what the planner needs to replace it.
pub struct Analysed {
    pub call: Call,
    /// SQL of the text column that makes the server return the features.
    pub replacement: String,
    /// `Some` when both arguments are constants: the features (`None`
    /// inside: the features are NULL, so is the prediction).
    pub constant: Option<Option<Features>>,
}

pub fn analyse(func: Func, f: &Function) -> MlResult<Analysed> {
    let name = func.name();
    if f.over.is_some() || f.filter.is_some() || !f.within_group.is_empty() {
        return Err(MlError::Unsupported(format!(
            "pgml.{name} with OVER, FILTER or WITHIN GROUP is not supported (it is not an aggregate)"
        )));
    }
    let FunctionArguments::List(list) = &f.args else {
        return Err(MlError::Unsupported(format!(
            "pgml.{name} needs an argument list: (project or model id, features)"
        )));
    };
    // After (model, features): `group => ...`, and for explain `top_k`,
    // third positionally or named.
    let mut group = None;
    let mut top_k = None;
    for (i, arg) in list.args.iter().enumerate().skip(2) {
        let (name, value) = match arg {
            FunctionArg::Named { arg: value, .. } | FunctionArg::ExprNamed { arg: value, .. } => {
                (arg_name(arg), value)
            }
            FunctionArg::Unnamed(value) if i == 2 => (Some("top_k".to_string()), value),
            FunctionArg::Unnamed(_) => return Err(too_many_arguments(func)),
        };
        match name.as_deref() {
            Some("group") if group.is_none() => group = Some(value),
            Some("top_k") if func == Func::Explain && top_k.is_none() => top_k = Some(value),
            _ => return Err(too_many_arguments(func)),
        }
    }
    if list.duplicate_treatment.is_some() || !list.clauses.is_empty() || list.args.len() < 2 {
        return Err(too_many_arguments(func));
    }
    if group.is_some() && func == Func::PredictBatch {
        return Err(MlError::Unsupported(
            "pgml.predict_batch takes no group: call pgml.predict(..., group => ...) per row"
                .into(),
        ));
    }
    let top_k = match top_k {
        None => TopK::All,
        Some(e) => top_k_of(e)?,
    };
    let model_arg = arg_expr(&list.args[0], &["project_name", "model_id"], name)?;
    let features_arg = arg_expr(&list.args[1], &["features", "row"], name)?;
    let model = match model_arg {
        FunctionArgExpr::Expr(e) => model_ref(e).ok_or_else(|| {
            MlError::Unsupported(format!(
                "the first argument of pgml.{name} must be a constant project name, model id or $n parameter, not `{e}`"
            ))
        })?,
        other => {
            return Err(MlError::Unsupported(format!(
                "the first argument of pgml.{name} must be a project name or model id, not `{other}`"
            )))
        }
    };
    let (input, arg) = match features_arg {
        FunctionArgExpr::QualifiedWildcard(obj) => (InputKind::Row, format!("{obj}.*")),
        FunctionArgExpr::Expr(e) => (input_kind(e), e.to_string()),
        other => {
            return Err(MlError::Unsupported(format!(
                "pgml.{name} features `{other}` are not supported; use ARRAY[...], (a, b, ...) or alias.*"
            )))
        }
    };
    // An array goes as itself (binary to the proxy, no float printing on
    // the server); rows and other expressions as JSON text.
    let features = match (input, group) {
        (InputKind::Array, None) => format!("({arg})"),
        (_, None) => format!("to_json({arg})::text"),
        (_, Some(g)) => grouped_features(&arg, g, name)?,
    };
    // A `$n` top_k stays in the server's statement, so the statement
    // still has (and types) every parameter the client binds.
    let features = match top_k {
        TopK::Param(n) => format!("CASE WHEN (${n}::int4 IS NULL) IS NOT NULL THEN {features} END"),
        _ => features,
    };
    let replacement = match &model {
        ModelRef::Null => "NULL::text".to_string(),
        // Keeps `$n` in the server statement so its type is still resolved
        // there, and gives STRICT's NULL when the parameter is NULL.
        ModelRef::Param(n) => {
            format!("CASE WHEN ${n}::text IS NULL THEN NULL ELSE {features} END")
        }
        _ => features,
    };
    let constant = match (&model, features_arg) {
        (ModelRef::Param(_), _) => None,
        _ if group.is_some() => None,
        (_, FunctionArgExpr::Expr(e)) => constant_features(e, name)?,
        _ => None,
    };
    Ok(Analysed {
        call: Call {
            func,
            model,
            input,
            grouped: group.is_some(),
            top_k,
        },
        replacement,
        constant,
    })
}

fn too_many_arguments(func: Func) -> MlError {
    let top_k = if func == Func::Explain {
        ", top_k (an integer)"
    } else {
        ""
    };
    MlError::Unsupported(format!(
        "pgml.{} takes (project or model id, features{top_k}), and optionally \
         group => <expression> for a project trained with group_by",
        func.name()
    ))
}

/// `top_k`: a non-negative integer, NULL (every contribution) or `$n`.
fn top_k_of(arg: &FunctionArgExpr) -> MlResult<TopK> {
    let FunctionArgExpr::Expr(e) = arg else {
        return Err(MlError::invalid("pgml.explain: top_k must be an integer"));
    };
    if is_null(e) {
        return Ok(TopK::All);
    }
    if let Some(ModelRef::Param(n)) = model_ref(e) {
        return Ok(TopK::Param(n));
    }
    match number(strip(e)) {
        Some(k) if k >= 0.0 && k.fract() == 0.0 => Ok(TopK::Const(k as usize)),
        Some(k) => Err(MlError::invalid(format!(
            "pgml.explain: top_k must be a non-negative integer, not {k}"
        ))),
        None => Err(MlError::Unsupported(format!(
            "pgml.explain: top_k must be a constant integer or $n parameter, not `{e}`"
        ))),
    }
}

/// Separates a grouped call's group from its features in the text the
/// server returns: JSON never holds a raw tab.
pub const GROUP_SEPARATOR: u8 = b'\t';

/// A grouped call's replacement: the group values' text forms as a JSON
/// array, a tab, the features as JSON. NULL features make it NULL (the
/// functions are STRICT), so the prediction is NULL.
fn grouped_features(features: &str, group: &FunctionArgExpr, func: &str) -> MlResult<String> {
    let FunctionArgExpr::Expr(g) = group else {
        return Err(MlError::Unsupported(format!(
            "pgml.{func}: group => takes an expression or a row of them, not `{group}`"
        )));
    };
    // `(region, store_id)`, `ROW(...)` and `ARRAY[...]` name several group
    // columns; anything else is one value.
    let parts: Vec<String> = match strip(g) {
        Expr::Tuple(items) => items.iter().map(ToString::to_string).collect(),
        Expr::Array(a) => a.elem.iter().map(ToString::to_string).collect(),
        Expr::Function(f) if is_row_constructor(f) => match &f.args {
            FunctionArguments::List(l) => l.args.iter().map(ToString::to_string).collect(),
            _ => vec![g.to_string()],
        },
        _ => vec![g.to_string()],
    };
    let texts: Vec<String> = parts.iter().map(|p| format!("({p})::text")).collect();
    Ok(format!(
        "json_build_array({})::text || chr(9) || to_json({features})::text",
        texts.join(", ")
    ))
}

/// The name of a named argument (`name => value`): Postgres's dialect
/// parses the name as an expression, so only a plain identifier is one.
fn arg_name(arg: &FunctionArg) -> Option<String> {
    match arg {
        FunctionArg::Named { name, .. } => Some(folded(name)),
        FunctionArg::ExprNamed {
            name: Expr::Identifier(name),
            ..
        } => Some(folded(name)),
        _ => None,
    }
}

fn arg_expr<'a>(arg: &'a FunctionArg, names: &[&str], func: &str) -> MlResult<&'a FunctionArgExpr> {
    match arg {
        FunctionArg::Unnamed(e) => Ok(e),
        FunctionArg::Named { arg: e, .. } | FunctionArg::ExprNamed { arg: e, .. }
            if arg_name(arg).is_some_and(|n| names.contains(&n.as_str())) =>
        {
            Ok(e)
        }
        _ => Err(MlError::Unsupported(format!(
            "pgml.{func}: argument `{arg}` is not supported; pass (project or model id, features)"
        ))),
    }
}

fn strip(e: &Expr) -> &Expr {
    match e {
        Expr::Nested(inner) => strip(inner),
        Expr::Cast {
            kind: CastKind::DoubleColon | CastKind::Cast,
            expr,
            ..
        } => strip(expr),
        other => other,
    }
}

fn model_ref(e: &Expr) -> Option<ModelRef> {
    let Expr::Value(v) = strip(e) else {
        return None;
    };
    match &v.value {
        Value::Null => Some(ModelRef::Null),
        Value::Number(n, _) => n.parse::<i64>().ok().map(ModelRef::Id),
        Value::Placeholder(p) => p
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .map(ModelRef::Param),
        other => string_literal(other).map(ModelRef::Project),
    }
}

fn string_literal(v: &Value) -> Option<String> {
    match v {
        Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => Some(s.clone()),
        Value::DollarQuotedString(d) => Some(d.value.clone()),
        _ => None,
    }
}

fn input_kind(e: &Expr) -> InputKind {
    match e {
        Expr::Nested(inner) => input_kind(inner),
        Expr::Array(_) => InputKind::Array,
        Expr::Cast {
            data_type: DataType::Array(_),
            ..
        } => InputKind::Array,
        Expr::Tuple(_) => InputKind::Row,
        Expr::Function(f) if is_row_constructor(f) => InputKind::Row,
        _ => InputKind::Either,
    }
}

fn is_row_constructor(f: &Function) -> bool {
    matches!(f.name.0.as_slice(), [ObjectNamePart::Identifier(i)] if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("row"))
}

/// A literal number, possibly negated.
fn number(e: &Expr) -> Option<f64> {
    match e {
        Expr::Nested(inner) => number(inner),
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => number(expr).map(|v| -v),
        Expr::UnaryOp {
            op: UnaryOperator::Plus,
            expr,
        } => number(expr),
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

fn is_null(e: &Expr) -> bool {
    matches!(strip(e), Expr::Value(v) if v.value == Value::Null)
}

/// `Ok(None)`: not a constant (the server must evaluate it).
fn constant_features(e: &Expr, func: &str) -> MlResult<Option<Option<Features>>> {
    if is_null(e) {
        return Ok(Some(None));
    }
    let elems: Vec<&Expr> = match e {
        Expr::Nested(inner) => return constant_features(inner, func),
        Expr::Array(a) => a.elem.iter().collect(),
        Expr::Tuple(items) => items.iter().collect(),
        Expr::Function(f) if is_row_constructor(f) => match &f.args {
            FunctionArguments::List(l) => {
                let mut out = Vec::new();
                for a in &l.args {
                    match a {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => out.push(x),
                        _ => return Ok(None),
                    }
                }
                out
            }
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    if matches!(e, Expr::Array(_)) {
        let mut values = Vec::with_capacity(elems.len());
        for (i, x) in elems.iter().enumerate() {
            if is_null(x) {
                return Err(MlError::data(format!(
                    "pgml.{func}: feature {} of the array is NULL; array features cannot contain NULLs",
                    i + 1
                )));
            }
            match number(x) {
                Some(v) => values.push(v),
                None => return Ok(None),
            }
        }
        return Ok(Some(Some(Features::Array(values))));
    }
    let mut values = Vec::with_capacity(elems.len());
    for x in elems {
        let v = if is_null(x) {
            RawValue::Null
        } else if let Some(n) = number(x) {
            RawValue::Number(n)
        } else {
            match strip(x) {
                Expr::Value(v) => match &v.value {
                    Value::Boolean(b) => RawValue::Number(if *b { 1.0 } else { 0.0 }),
                    other => match string_literal(other) {
                        Some(s) => RawValue::Text(s),
                        None => return Ok(None),
                    },
                },
                _ => return Ok(None),
            }
        };
        values.push(v);
    }
    Ok(Some(Some(Features::Row(values))))
}

/// Parses one SQL expression we generated ourselves.
pub fn parse_expr(sql: &str) -> MlResult<Expr> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| MlError::Internal(format!("cannot parse generated expression {sql:?}: {e}")))
}
