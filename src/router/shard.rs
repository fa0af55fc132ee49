//! Which shard a statement belongs to: pgcat's ways of saying it (SET
//! SHARDING KEY / SET SHARD, comments) and the automatic key found in the
//! statement itself (WHERE col = const, INSERT ... VALUES, Bind parameters).

use regex::Regex;
use sqlparser::ast::{BinaryOperator, Expr, SetExpr, Statement, TableObject, UnaryOperator, Value};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::hash::{sha1_shard, Key};
use crate::config::PoolConfig;
use crate::errors::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    Bigint,
    Text,
    Uuid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Function {
    PgBigintHash,
    Sha1,
}

/// A pool's sharding settings.
#[derive(Debug, Clone)]
pub struct Sharding {
    pub shards: usize,
    function: Function,
    key_type: KeyType,
    /// (table, column), lower case.
    automatic: Option<(String, String)>,
    key_regex: Option<Regex>,
    shard_regex: Option<Regex>,
    search_limit: usize,
    pub default_shard: DefaultShard,
}

/// Where statements that name no shard go (`default_shard`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultShard {
    /// `shard_<n>`: every such statement; unset is `shard_0`, as in pgcat.
    Fixed(usize),
    /// `all` (pgmlcat): keyless reads run on every shard and are merged, a
    /// multi-row INSERT is split by key, schema changes run on every shard,
    /// other keyless writes are refused.
    All,
    /// `random`: reads go to any shard; writes still need a key.
    Random,
    /// `random_healthy`: reads go to any shard whose primary is up.
    RandomHealthy,
}

impl Sharding {
    pub fn from_pool(p: &PoolConfig, shards: usize) -> Result<Sharding, String> {
        let regex = |key: &str, r: &Option<String>| {
            r.as_deref()
                .map(|r| Regex::new(r).map_err(|e| format!("{key}: {e}")))
                .transpose()
        };
        let automatic = match &p.automatic_sharding_key {
            Some(k) => Some(
                k.split_once('.')
                    .map(|(t, c)| (t.to_ascii_lowercase(), c.to_ascii_lowercase()))
                    .ok_or_else(|| format!("automatic_sharding_key: {k:?} is not table.column"))?,
            ),
            None => None,
        };
        let default_shard = match p.default_shard.as_deref() {
            None => DefaultShard::Fixed(0),
            Some("all") => DefaultShard::All,
            Some("random") => DefaultShard::Random,
            Some("random_healthy") => DefaultShard::RandomHealthy,
            Some(s) => {
                let n = s
                    .strip_prefix("shard_")
                    .and_then(|n| n.parse::<usize>().ok());
                match n {
                    Some(n) if n < shards => DefaultShard::Fixed(n),
                    // pgcat's words for a shard that is not there.
                    Some(n) => {
                        return Err(format!(
                            "default_shard: Invalid shard {n} ({s:?}): the pool has shards 0 to {}",
                            shards.saturating_sub(1)
                        ))
                    }
                    None => {
                        return Err(format!(
                            "default_shard: {s:?} is not shard_<n>, all, random or random_healthy"
                        ))
                    }
                }
            }
        };
        Ok(Sharding {
            shards,
            function: if p.sharding_function == "sha1" {
                Function::Sha1
            } else {
                Function::PgBigintHash
            },
            key_type: p.sharding_key_type,
            automatic,
            key_regex: regex("sharding_key_regex", &p.sharding_key_regex)?,
            shard_regex: regex("shard_id_regex", &p.shard_id_regex)?,
            search_limit: p.regex_search_limit.unwrap_or(1000),
            default_shard,
        })
    }

    /// The shard of a key given as text.
    pub fn shard_for(&self, value: &str) -> Result<usize, Error> {
        let bad = || {
            Error::InvalidParameter(format!(
                "invalid sharding key {value:?} for a {:?} key",
                self.key_type
            ))
        };
        if self.function == Function::Sha1 {
            return Ok(sha1_shard(value, self.shards));
        }
        let key = match self.key_type {
            KeyType::Bigint => Key::Bigint(value.trim().parse().map_err(|_| bad())?),
            KeyType::Text => Key::Text(value.to_string()),
            KeyType::Uuid => Key::uuid(value).ok_or_else(bad)?,
        };
        Ok(key.shard(self.shards))
    }

    /// The automatic key's (table, column), lower case.
    pub fn automatic(&self) -> Option<(&str, &str)> {
        self.automatic
            .as_ref()
            .map(|(t, c)| (t.as_str(), c.as_str()))
    }

    /// Whether the statements touch any table at all (`select 1`, `SET ...`,
    /// `select now()` run on any shard).
    pub fn touches_tables(statements: &[Statement]) -> bool {
        statements.iter().any(|s| {
            sqlparser::ast::visit_relations(s, |_| std::ops::ControlFlow::Break(())).is_break()
        })
    }

    /// Why a statement could not be placed, naming the key.
    pub fn missing_key(&self) -> String {
        let key = self.automatic.as_ref().map_or_else(
            || "the sharding key".to_string(),
            |(t, c)| format!("{t}.{c}"),
        );
        format!(
            "statement has no sharding key: give {key} = <value> in it, or SET SHARDING KEY TO '<value>', \
             SET SHARD TO '<n>', or a /* sharding_key: <value> */ comment (only reads run across all shards)"
        )
    }

    /// The shard of a key sent as a Bind parameter in binary format.
    pub fn shard_for_binary(&self, bytes: &[u8]) -> Option<usize> {
        match self.key_type {
            KeyType::Bigint => {
                let v = match bytes.len() {
                    8 => i64::from_be_bytes(bytes.try_into().ok()?),
                    4 => i32::from_be_bytes(bytes.try_into().ok()?) as i64,
                    2 => i16::from_be_bytes(bytes.try_into().ok()?) as i64,
                    _ => return None,
                };
                self.shard_for(&v.to_string()).ok()
            }
            KeyType::Text => self.shard_for(std::str::from_utf8(bytes).ok()?).ok(),
            KeyType::Uuid => {
                let b: [u8; 16] = bytes.try_into().ok()?;
                if self.function == Function::Sha1 {
                    return None;
                }
                Some(Key::Uuid(b).shard(self.shards))
            }
        }
    }

    /// `/* shard_id: N */` or `/* sharding_key: V */` in the first
    /// `regex_search_limit` bytes.
    pub fn from_comment(&self, sql: &str) -> Option<Result<usize, Error>> {
        let head = match sql.char_indices().nth(self.search_limit) {
            Some((i, _)) => &sql[..i],
            None => sql,
        };
        if let Some(caps) = self.shard_regex.as_ref().and_then(|r| r.captures(head)) {
            let n = caps.get(1)?.as_str();
            return Some(
                n.parse::<usize>()
                    .ok()
                    .filter(|n| *n < self.shards)
                    .ok_or_else(|| {
                        Error::InvalidParameter(format!(
                            "shard {n} does not exist ({} shards)",
                            self.shards
                        ))
                    }),
            );
        }
        let caps = self.key_regex.as_ref()?.captures(head)?;
        Some(self.shard_for(caps.get(1)?.as_str()))
    }

    /// Where the automatic key appears in a statement, with every constant
    /// already turned into its shard and `$n` left for the Bind to fill.
    pub fn key_facts(&self, statements: &[Statement]) -> KeyFacts {
        let Some((table, column)) = self.automatic.as_ref() else {
            return KeyFacts::None;
        };
        let [statement] = statements else {
            return KeyFacts::None;
        };
        match statement {
            Statement::Insert(insert) => {
                let TableObject::TableName(name) = &insert.table else {
                    return KeyFacts::None;
                };
                if !last_part(&name.to_string()).eq_ignore_ascii_case(table) {
                    return KeyFacts::None;
                }
                let Some(index) = insert
                    .columns
                    .iter()
                    .position(|c| last_part(&c.to_string()).eq_ignore_ascii_case(column))
                else {
                    return KeyFacts::None;
                };
                let Some(SetExpr::Values(values)) = insert.source.as_ref().map(|s| s.body.as_ref())
                else {
                    return KeyFacts::None;
                };
                KeyFacts::Rows(
                    values
                        .rows
                        .iter()
                        .map(|row| row.content.get(index).and_then(|e| self.key_value(e)))
                        .collect(),
                )
            }
            Statement::Query(_) | Statement::Update(_) | Statement::Delete(_) => {
                let selection = match statement {
                    Statement::Query(query) => match query.body.as_ref() {
                        SetExpr::Select(select) => select.selection.as_ref(),
                        _ => None,
                    },
                    Statement::Update(update) => update.selection.as_ref(),
                    Statement::Delete(delete) => delete.selection.as_ref(),
                    _ => None,
                };
                let mut terms = Vec::new();
                if let Some(e) = selection {
                    self.collect(e, table, column, &mut terms);
                }
                KeyFacts::Where(terms)
            }
            _ => KeyFacts::None,
        }
    }

    /// Parses `sql` and resolves its key (`param` resolves `$n`): for callers
    /// and tests that have only the text.
    pub fn from_statement(
        &self,
        sql: &str,
        param: &dyn Fn(usize) -> Option<usize>,
    ) -> Option<usize> {
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
        self.key_facts(&statements).resolve(param)
    }

    /// A multi-row `INSERT ... VALUES` whose rows fall on different shards,
    /// split into one INSERT per shard (same columns, RETURNING kept).
    /// None when it is not such an INSERT or a row's key cannot be read.
    pub fn split_insert(&self, statements: &[Statement]) -> Option<Vec<(usize, String)>> {
        let KeyFacts::Rows(rows) = self.key_facts(statements) else {
            return None;
        };
        let shards: Vec<usize> = rows
            .iter()
            .map(|v| match v {
                Some(KeyValue::Shard(s)) => Some(*s),
                _ => None,
            })
            .collect::<Option<_>>()?;
        if shards.iter().all(|s| *s == shards[0]) {
            return None;
        }
        let [Statement::Insert(insert)] = statements else {
            return None;
        };
        let SetExpr::Values(values) = insert.source.as_ref()?.body.as_ref() else {
            return None;
        };
        let mut by_shard: Vec<Vec<_>> = vec![Vec::new(); self.shards];
        for (row, shard) in values.rows.iter().zip(&shards) {
            by_shard[*shard].push(row.clone());
        }
        let mut parts = Vec::new();
        for (shard, rows) in by_shard.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let mut part = statements[0].clone();
            if let Statement::Insert(i) = &mut part {
                if let Some(SetExpr::Values(v)) = i.source.as_mut().map(|s| s.body.as_mut()) {
                    v.rows = rows;
                }
            }
            parts.push((shard, part.to_string()));
        }
        Some(parts)
    }

    /// Key comparisons joined by AND (an OR could span shards: not used).
    /// Each `key = value` is a group of one; `key IN (...)` a group of all
    /// its values, used only if every one resolves.
    fn collect(&self, e: &Expr, table: &str, column: &str, out: &mut Vec<Vec<KeyValue>>) {
        match e {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => {
                self.collect(left, table, column, out);
                self.collect(right, table, column, out);
            }
            Expr::Nested(inner) => self.collect(inner, table, column, out),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => {
                for (col, val) in [(left, right), (right, left)] {
                    if is_column(col, table, column) {
                        if let Some(v) = self.key_value(val) {
                            out.push(vec![v]);
                        }
                    }
                }
            }
            Expr::InList {
                expr,
                list,
                negated: false,
            } if is_column(expr, table, column) => {
                let found: Option<Vec<KeyValue>> = list.iter().map(|v| self.key_value(v)).collect();
                out.extend(found);
            }
            _ => {}
        }
    }

    /// A constant key (its shard) or a `$n` placeholder; None for anything
    /// else, and for a constant that is not a valid key.
    fn key_value(&self, e: &Expr) -> Option<KeyValue> {
        match e {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => self.shard_for(n).ok().map(KeyValue::Shard),
                Value::SingleQuotedString(s) => self.shard_for(s).ok().map(KeyValue::Shard),
                Value::Placeholder(p) => Some(KeyValue::Param(
                    p.strip_prefix('$')?.parse::<usize>().ok()?.checked_sub(1)?,
                )),
                _ => None,
            },
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr,
            } => match expr.as_ref() {
                Expr::Value(v) => match &v.value {
                    Value::Number(n, _) => {
                        self.shard_for(&format!("-{n}")).ok().map(KeyValue::Shard)
                    }
                    _ => None,
                },
                _ => None,
            },
            Expr::Cast { expr, .. } | Expr::Nested(expr) => self.key_value(expr),
            _ => None,
        }
    }
}

/// One value of the automatic key in a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyValue {
    /// A constant, already hashed to its shard.
    Shard(usize),
    /// `$n` (0-based here), known once the Bind comes.
    Param(usize),
}

/// Where the automatic key appears in a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFacts {
    /// Not a statement the key can be read from.
    None,
    /// AND-ed WHERE terms; a group resolves whole or not at all, and groups
    /// that do not resolve are left out.
    Where(Vec<Vec<KeyValue>>),
    /// INSERT ... VALUES: one value per row (None: not a readable key);
    /// every row must resolve.
    Rows(Vec<Option<KeyValue>>),
}

impl KeyFacts {
    /// The one shard every key value falls on, if there is one; `param`
    /// gives the shard of a Bind parameter.
    pub fn resolve(&self, param: &dyn Fn(usize) -> Option<usize>) -> Option<usize> {
        let value = |v: &KeyValue| match v {
            KeyValue::Shard(s) => Some(*s),
            KeyValue::Param(n) => param(*n),
        };
        let shards: Vec<usize> = match self {
            KeyFacts::None => return None,
            KeyFacts::Where(groups) => groups
                .iter()
                .filter_map(|g| g.iter().map(value).collect::<Option<Vec<_>>>())
                .flatten()
                .collect(),
            KeyFacts::Rows(rows) => rows
                .iter()
                .map(|v| v.as_ref().and_then(value))
                .collect::<Option<_>>()?,
        };
        let first = *shards.first()?;
        shards.iter().all(|s| *s == first).then_some(first)
    }
}

fn last_part(name: &str) -> String {
    name.rsplit('.')
        .next()
        .unwrap_or(name)
        .trim_matches('"')
        .to_ascii_lowercase()
}

/// `column` or `table.column`.
fn is_column(e: &Expr, table: &str, column: &str) -> bool {
    match e {
        Expr::Identifier(i) => i.value.eq_ignore_ascii_case(column),
        Expr::CompoundIdentifier(parts) => match parts.as_slice() {
            [.., t, c] => {
                c.value.eq_ignore_ascii_case(column) && t.value.eq_ignore_ascii_case(table)
            }
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sharding(key: &str, key_type: KeyType) -> Sharding {
        let p = PoolConfig {
            automatic_sharding_key: Some(key.to_string()),
            sharding_key_type: key_type,
            sharding_key_regex: Some(r"/\* sharding_key: (\S+) \*/".into()),
            shard_id_regex: Some(r"/\* shard_id: (\d+) \*/".into()),
            ..Default::default()
        };
        Sharding::from_pool(&p, 3).unwrap()
    }

    fn none(_: usize) -> Option<usize> {
        None
    }

    fn parsed(sql: &str) -> Vec<Statement> {
        Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap_or_default()
    }

    #[test]
    fn finds_keys_in_statements() {
        let s = sharding("users.id", KeyType::Bigint);
        let want = Key::Bigint(42).shard(3);
        assert_eq!(
            s.from_statement("select * from users where id = 42", &none),
            Some(want)
        );
        assert_eq!(
            s.from_statement("select * from users u where users.id = 42 and x > 1", &none),
            Some(want)
        );
        assert_eq!(
            s.from_statement("update users set a = 1 where id = 42", &none),
            Some(want)
        );
        assert_eq!(
            s.from_statement("delete from users where 42 = id", &none),
            Some(want)
        );
        assert_eq!(
            s.from_statement("insert into users (name, id) values ('a', 42)", &none),
            Some(want)
        );
        assert_eq!(
            s.from_statement("select * from users where id = $1", &|i| (i == 0)
                .then_some(2)),
            Some(2)
        );
        assert_eq!(s.from_statement("select * from users", &none), None);
        assert_eq!(
            s.from_statement("select * from users where id = 1 or id = 2", &none),
            None
        );
        let spread = (1..100).find(|k| Key::Bigint(*k).shard(3) != want).unwrap();
        assert_eq!(
            s.from_statement(
                &format!("select * from users where id in (42, {spread})"),
                &none
            ),
            None
        );
        assert_eq!(
            s.from_statement("select * from users where id in (42, 42)", &none),
            Some(want)
        );
    }

    #[test]
    fn splits_multi_row_inserts() {
        let s = sharding("users.id", KeyType::Bigint);
        let (a, b) = (
            1i64,
            (2..100)
                .find(|k| Key::Bigint(*k).shard(3) != Key::Bigint(1).shard(3))
                .unwrap(),
        );
        let sql = format!(
            "insert into users (id, name) values ({a}, 'a'), ({b}, 'b'), ({a}, 'c') returning id"
        );
        let parts = s.split_insert(&parsed(&sql)).unwrap();
        assert_eq!(parts.len(), 2);
        let on_a = parts
            .iter()
            .find(|(sh, _)| *sh == Key::Bigint(a).shard(3))
            .unwrap();
        assert!(
            on_a.1.contains("'a'") && on_a.1.contains("'c'") && !on_a.1.contains("'b'"),
            "{}",
            on_a.1
        );
        assert!(on_a.1.contains("RETURNING id"));
        assert!(s
            .split_insert(&parsed("insert into users (id) select 1"))
            .is_none());
        assert!(
            s.split_insert(&parsed("insert into users (id) values (1), (1)"))
                .is_none(),
            "rows on one shard are not split"
        );
    }

    #[test]
    fn comments_and_types() {
        let s = sharding("t.k", KeyType::Text);
        assert_eq!(
            s.from_comment("/* shard_id: 2 */ select 1")
                .unwrap()
                .unwrap(),
            2
        );
        assert!(s
            .from_comment("/* shard_id: 9 */ select 1")
            .unwrap()
            .is_err());
        assert_eq!(
            s.from_comment("/* sharding_key: abc */ select 1")
                .unwrap()
                .unwrap(),
            Key::Text("abc".into()).shard(3)
        );
        assert!(s.from_comment("select 1").is_none());
        let u = sharding("t.k", KeyType::Uuid);
        assert!(u.shard_for("not-a-uuid").is_err());
        assert!(!Sharding::touches_tables(&parsed("select 1, now()")));
        assert!(!Sharding::touches_tables(&parsed("SET TimeZone = 'UTC'")));
        assert!(Sharding::touches_tables(&parsed("select * from users")));
        assert!(u.shard_for("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").is_ok());
    }
}
