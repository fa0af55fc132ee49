//! The parts of WHERE and ORDER BY that depend on predictions, evaluated by
//! the proxy on the streamed rows with Postgres' semantics: three-valued
//! logic, `real` compared with numeric constants in double precision, NaN
//! equal to itself and above every number.

use std::cmp::Ordering;

use sqlparser::ast::{BinaryOperator, DataType, Expr, UnaryOperator, Value};

use crate::ml::error::{MlError, MlResult};

use super::types::{CmpOp, Cond, Operand, SortKey};

fn unsupported(e: &Expr) -> MlError {
    MlError::Unsupported(format!(
        "the condition `{e}` combines a pgml.predict result with something pgmlcat cannot evaluate; \
         conditions on predictions may only use predictions, numeric constants, comparisons, \
         BETWEEN, IS [NOT] NULL, AND, OR and NOT"
    ))
}

/// `resolve` maps a `pgml.predict*` call (or a subquery's prediction
/// column) to the marker of its column, `None` when `e` is neither.
pub fn cond_from_expr(
    e: &Expr,
    resolve: &mut dyn FnMut(&Expr) -> MlResult<Option<usize>>,
) -> MlResult<Cond> {
    Ok(match e {
        Expr::Nested(inner) => cond_from_expr(inner, resolve)?,
        Expr::Value(v) => match v.value {
            Value::Boolean(b) => Cond::Const(Some(b)),
            Value::Null => Cond::Const(None),
            _ => return Err(unsupported(e)),
        },
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => Cond::Not(Box::new(cond_from_expr(expr, resolve)?)),
        Expr::BinaryOp { left, op, right } => {
            let cmp = match op {
                BinaryOperator::And => {
                    return Ok(Cond::And(
                        Box::new(cond_from_expr(left, resolve)?),
                        Box::new(cond_from_expr(right, resolve)?),
                    ))
                }
                BinaryOperator::Or => {
                    return Ok(Cond::Or(
                        Box::new(cond_from_expr(left, resolve)?),
                        Box::new(cond_from_expr(right, resolve)?),
                    ))
                }
                BinaryOperator::Eq => CmpOp::Eq,
                BinaryOperator::NotEq => CmpOp::Ne,
                BinaryOperator::Lt => CmpOp::Lt,
                BinaryOperator::LtEq => CmpOp::Le,
                BinaryOperator::Gt => CmpOp::Gt,
                BinaryOperator::GtEq => CmpOp::Ge,
                _ => return Err(unsupported(e)),
            };
            Cond::Cmp(operand(left, resolve, e)?, cmp, operand(right, resolve, e)?)
        }
        Expr::Between {
            expr,
            negated,
            low,
            high,
        } => Cond::Between {
            value: operand(expr, resolve, e)?,
            low: operand(low, resolve, e)?,
            high: operand(high, resolve, e)?,
            negated: *negated,
        },
        Expr::IsNull(x) => Cond::IsNull(operand(x, resolve, e)?, false),
        Expr::IsNotNull(x) => Cond::IsNull(operand(x, resolve, e)?, true),
        _ => return Err(unsupported(e)),
    })
}

fn operand(
    x: &Expr,
    resolve: &mut dyn FnMut(&Expr) -> MlResult<Option<usize>>,
    whole: &Expr,
) -> MlResult<Operand> {
    if let Some(call) = resolve(x)? {
        return Ok(Operand::Pred(call));
    }
    Ok(match x {
        Expr::Nested(inner) => operand(inner, resolve, whole)?,
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match operand(expr, resolve, whole)? {
            Operand::Num(v) => Operand::Num(-v),
            _ => return Err(unsupported(whole)),
        },
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => Operand::Num(n.parse().map_err(|_| unsupported(whole))?),
            Value::Null => Operand::Null,
            _ => return Err(unsupported(whole)),
        },
        // `0.5::real` is rounded to single precision first, as Postgres does.
        Expr::Cast {
            expr, data_type, ..
        } => match (operand(expr, resolve, whole)?, data_type) {
            (Operand::Num(v), DataType::Real | DataType::Float4) => Operand::Num(v as f32 as f64),
            (
                Operand::Num(v),
                DataType::DoublePrecision
                | DataType::Float8
                | DataType::Numeric(_)
                | DataType::Decimal(_),
            ) => Operand::Num(v),
            (Operand::Null, _) => Operand::Null,
            _ => return Err(unsupported(whole)),
        },
        _ => return Err(unsupported(whole)),
    })
}

/// Postgres' float ordering: NaN is equal to NaN and greater than all else.
pub fn float_cmp(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

impl Cond {
    /// `preds(marker)` is that column's prediction for the row (None = NULL).
    pub fn eval(&self, preds: &dyn Fn(usize) -> Option<f64>) -> Option<bool> {
        let val = |o: &Operand| match o {
            Operand::Pred(c) => preds(*c),
            Operand::Num(v) => Some(*v),
            Operand::Null => None,
        };
        match self {
            Cond::Const(b) => *b,
            Cond::Cmp(a, op, b) => {
                let ord = float_cmp(val(a)?, val(b)?);
                Some(match op {
                    CmpOp::Eq => ord == Ordering::Equal,
                    CmpOp::Ne => ord != Ordering::Equal,
                    CmpOp::Lt => ord == Ordering::Less,
                    CmpOp::Le => ord != Ordering::Greater,
                    CmpOp::Gt => ord == Ordering::Greater,
                    CmpOp::Ge => ord != Ordering::Less,
                })
            }
            Cond::Between {
                value,
                low,
                high,
                negated,
            } => {
                let v = val(value);
                let ge = v
                    .zip(val(low))
                    .map(|(v, l)| float_cmp(v, l) != Ordering::Less);
                let le = v
                    .zip(val(high))
                    .map(|(v, h)| float_cmp(v, h) != Ordering::Greater);
                let inside = and3(ge, le);
                if *negated {
                    inside.map(|b| !b)
                } else {
                    inside
                }
            }
            Cond::IsNull(o, negated) => Some(val(o).is_none() != *negated),
            Cond::And(a, b) => and3(a.eval(preds), b.eval(preds)),
            Cond::Or(a, b) => match (a.eval(preds), b.eval(preds)) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
            Cond::Not(a) => a.eval(preds).map(|b| !b),
        }
    }
}

fn and3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

/// Compares two rows' key values (one per SortKey, None = NULL).
pub fn cmp_keys(keys: &[SortKey], a: &[Option<f32>], b: &[Option<f32>]) -> Ordering {
    for (i, k) in keys.iter().enumerate() {
        let x = a.get(i).copied().flatten();
        let y = b.get(i).copied().flatten();
        let ord = match (x, y) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => {
                if k.nulls_first {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (Some(_), None) => {
                if k.nulls_first {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (Some(x), Some(y)) => {
                let o = float_cmp(x as f64, y as f64);
                if k.desc {
                    o.reverse()
                } else {
                    o
                }
            }
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::predict::calls::{as_call, parse_expr};

    fn cond(sql: &str) -> Cond {
        let e = parse_expr(sql).unwrap();
        cond_from_expr(&e, &mut |x| Ok(as_call(x).map(|_| 0))).unwrap()
    }

    #[test]
    fn three_valued_logic_and_float_semantics() {
        let c = cond("pgml.predict('p', ARRAY[1]) > 0.1");
        // real 0.1 widened to double is above the numeric 0.1, as in Postgres.
        assert_eq!(c.eval(&|_| Some(0.1f32 as f64)), Some(true));
        assert_eq!(c.eval(&|_| None), None);
        assert_eq!(c.eval(&|_| Some(f64::NAN)), Some(true));
        let c = cond("pgml.predict('p', ARRAY[1]) > 0.1::real");
        assert_eq!(c.eval(&|_| Some(0.1f32 as f64)), Some(false));
        let c = cond("NOT (pgml.predict('p', ARRAY[1]) IS NULL OR pgml.predict('p', ARRAY[1]) BETWEEN -1 AND 1)");
        assert_eq!(c.eval(&|_| Some(2.0)), Some(true));
        assert_eq!(c.eval(&|_| Some(0.5)), Some(false));
        assert_eq!(c.eval(&|_| None), Some(false));
        let c = cond("pgml.predict('p', ARRAY[1]) = 1 OR NULL");
        assert_eq!(c.eval(&|_| Some(1.0)), Some(true));
        assert_eq!(c.eval(&|_| Some(2.0)), None);
    }

    #[test]
    fn other_expressions_are_unsupported() {
        let e = parse_expr("pgml.predict('p', ARRAY[1]) * 2 > x").unwrap();
        let err = cond_from_expr(&e, &mut |x| Ok(as_call(x).map(|_| 0))).unwrap_err();
        assert_eq!(err.sqlstate(), "0A000");
    }

    #[test]
    fn nulls_order_like_postgres() {
        let asc = [SortKey {
            marker: 0,
            desc: false,
            nulls_first: false,
        }];
        let mut v = vec![Some(2.0f32), None, Some(f32::NAN), Some(-1.0)];
        v.sort_by(|a, b| cmp_keys(&asc, &[*a], &[*b]));
        assert_eq!(format!("{v:?}"), "[Some(-1.0), Some(2.0), Some(NaN), None]");
        let desc = [SortKey {
            marker: 0,
            desc: true,
            nulls_first: true,
        }];
        v.sort_by(|a, b| cmp_keys(&desc, &[*a], &[*b]));
        assert_eq!(format!("{v:?}"), "[None, Some(NaN), Some(2.0), Some(-1.0)]");
    }
}
