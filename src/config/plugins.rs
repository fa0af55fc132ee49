//! pgcat's plugins. `intercept` is acted on: statements whose text matches
//! a configured query are answered with the configured rows (IDEs such as
//! IntelliJ ask things a pooler should answer for the pool, e.g.
//! `current_database()` on a sharded pool). `prewarmer`, `query_logger`
//! and `table_access` are accepted so pgcat configs load, and ignored.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Plugins {
    pub intercept: Option<InterceptConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct InterceptConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub queries: BTreeMap<String, InterceptQuery>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InterceptQuery {
    pub query: String,
    /// `[name, type]` per column; types as pgcat names them.
    pub schema: Vec<Vec<String>>,
    /// Rows of text values; an empty string is NULL, as in pgcat.
    #[serde(default)]
    pub result: Vec<Vec<String>>,
}

/// One pool's intercepted statements (by their words), `${DATABASE}` and
/// `${USER}` filled in.
#[derive(Debug)]
pub struct Intercept {
    rules: Vec<(Vec<String>, Answer)>,
}

/// The rows a matched statement gets.
#[derive(Debug)]
pub struct Answer {
    pub columns: Vec<(String, u32)>,
    pub rows: Vec<Vec<Option<String>>>,
}

/// pgcat's type names, as OIDs; anything else is `any`.
fn type_oid(name: &str) -> u32 {
    use crate::net::oid;
    match name {
        "text" => oid::TEXT,
        "anyarray" => 2277,
        "oid" => oid::OID,
        "bool" => oid::BOOL,
        "int4" => oid::INT4,
        _ => 2276,
    }
}

/// The words a statement is matched by: white space runs and trailing
/// semicolons do not count (case is compared without regard to it).
fn words(sql: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut sql = sql.trim_ascii();
    while let Some(rest) = sql.strip_suffix(b";") {
        sql = rest;
    }
    sql.trim_ascii_end()
        .split(u8::is_ascii_whitespace)
        .filter(|w| !w.is_empty())
}

impl Intercept {
    /// The pool's intercept rules: its own plugins, else the global ones.
    pub fn build(
        pool: Option<&Plugins>,
        global: Option<&Plugins>,
        database: &str,
        user: &str,
    ) -> Option<Intercept> {
        let cfg = pool
            .and_then(|p| p.intercept.as_ref())
            .or_else(|| global.and_then(|p| p.intercept.as_ref()))
            .filter(|i| i.enabled)?;
        let fill = |s: &str| s.replace("${DATABASE}", database).replace("${USER}", user);
        let rules = cfg
            .queries
            .values()
            .map(|q| {
                let columns = q
                    .schema
                    .iter()
                    .map(|c| {
                        let name = c.first().map_or("?column?", String::as_str);
                        (
                            name.to_string(),
                            type_oid(c.get(1).map_or("", String::as_str)),
                        )
                    })
                    .collect();
                let rows = q
                    .result
                    .iter()
                    .map(|r| r.iter().map(|v| (!v.is_empty()).then(|| fill(v))).collect())
                    .collect();
                let query = fill(&q.query);
                let words = words(query.as_bytes())
                    .map(|w| String::from_utf8_lossy(w).into_owned())
                    .collect();
                (words, Answer { columns, rows })
            })
            .collect();
        Some(Intercept { rules })
    }

    /// The answer for `sql`, if it is one of the intercepted statements.
    /// Compared word by word on the raw bytes, without allocating: every
    /// simple Query of a pool with the plugin on is asked, and most differ
    /// by their second word.
    pub fn answer(&self, sql: &[u8]) -> Option<&Answer> {
        self.rules
            .iter()
            .find(|(rule, _)| {
                let mut text = words(sql);
                rule.iter().all(|w| {
                    text.next()
                        .is_some_and(|t| t.eq_ignore_ascii_case(w.as_bytes()))
                }) && text.next().is_none()
            })
            .map(|(_, a)| a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_as_pgcat_spells_it_and_fills_in_the_pool() {
        let plugins: Plugins = toml::from_str(
            r#"
            [intercept]
            enabled = true
            [intercept.queries.0]
            query = "select current_database() as a, current_schemas(false) as b"
            schema = [["a", "text"], ["b", "text"]]
            result = [["${DATABASE}", "{public}"], ["${USER}", ""]]
            "#,
        )
        .expect("pgcat's plugin config");
        let i = Intercept::build(Some(&plugins), None, "sharded_db", "u").expect("enabled");
        let a = i
            .answer(b"SELECT  current_database() AS a,\n current_schemas(false) AS b;")
            .expect("matched");
        assert_eq!(
            a.columns,
            vec![("a".to_string(), 25), ("b".to_string(), 25)]
        );
        assert_eq!(a.rows[0][0].as_deref(), Some("sharded_db"));
        assert_eq!(a.rows[1], vec![Some("u".to_string()), None]);
        assert!(i.answer(b"select current_database()").is_none());
        assert!(i
            .answer(b"select current_database() as a, current_schemas(false) as b, 1")
            .is_none());
        let off = Plugins {
            intercept: Some(InterceptConfig::default()),
        };
        assert!(Intercept::build(Some(&off), Some(&plugins), "d", "u").is_none());
        assert!(Intercept::build(None, Some(&plugins), "d", "u").is_some());
    }
}
