//! What a statement means for routing, worked out once per text. The text
//! is parsed (sqlparser, Postgres dialect) at most once, and everything the
//! session may ask of it is read off that one parse: read or write, the
//! shard a comment or the automatic key names, whether it touches tables,
//! how it merges across shards, how a multi-row INSERT or a COPY splits.
//! Analyses are kept per pool by text (`Analyses`), so a prepared
//! statement, or any text a client sends again, is never parsed twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::copy::{self, CopyIn};
use super::merge::{self, MergePlan};
use super::rw::{self, Intent};
use super::shard::{KeyFacts, Sharding};
use super::RouteConfig;
use crate::errors::Error;

/// Everything routing needs to know about one statement text.
#[derive(Debug)]
pub struct Analysis {
    pub intent: Intent,
    /// The shard a `/* shard_id: n */` or `/* sharding_key: v */` comment
    /// names; Err when it names one that cannot be (the message).
    pub comment: Option<Result<usize, String>>,
    /// Where the automatic sharding key appears.
    pub keys: KeyFacts,
    /// Whether it reads or writes any table (`SELECT 1`, `SET` run anywhere).
    pub touches_tables: bool,
    /// A read that names no shard: how it runs on every shard and merges
    /// (Err: why it cannot; None: not a statement pgmlcat can merge).
    pub merge: Option<Result<Arc<MergePlan>, String>>,
    /// A multi-row INSERT into the sharded table whose rows fall on several
    /// shards, one INSERT per shard.
    pub insert_split: Option<Vec<(usize, String)>>,
    /// A COPY FROM STDIN into the sharded table.
    pub copy_in: Option<CopyIn>,
    /// Schema statements only (CREATE, ALTER, DROP, COMMENT...): under
    /// `default_shard = "all"`, without a key, they run on every shard.
    pub ddl: bool,
    /// A `/* max_lag_ms: N */` comment: replicas no further behind serve it.
    pub max_lag: Option<std::time::Duration>,
    /// Session settings only (SET, RESET, DISCARD): routed as writes, as
    /// pgcat routes them, but they write no data, so no read waits for
    /// their replay (pgJDBC opens every connection with two SETs).
    pub session_only: bool,
}

impl Analysis {
    /// Whether it may write: anything not known to only read.
    pub fn may_write(&self) -> bool {
        !matches!(
            self.intent,
            Intent::Read | Intent::Begin { read_only: true }
        )
    }

    /// Whether it may write data a later read must see: it may write, and
    /// it is not a session setting.
    pub fn may_write_data(&self) -> bool {
        self.may_write() && !self.session_only
    }

    /// The shard the comment names, as a result for the client.
    pub fn comment_shard(&self) -> Option<Result<usize, Error>> {
        self.comment
            .as_ref()
            .map(|c| c.clone().map_err(Error::InvalidParameter))
    }

    /// The merge plan of a keyless read, or the error the client gets.
    pub fn merge_plan(&self, sharding: &Sharding) -> Result<Arc<MergePlan>, Error> {
        match &self.merge {
            Some(Ok(plan)) => Ok(plan.clone()),
            Some(Err(why)) => Err(Error::Unsupported(why.clone())),
            None => Err(Error::NoShard(sharding.missing_key())),
        }
    }
}

/// Whether a statement changes the schema only (no rows).
fn is_session_setting(s: &sqlparser::ast::Statement) -> bool {
    use sqlparser::ast::Statement as S;
    matches!(s, S::Set(_) | S::Reset(_) | S::Discard { .. })
}

fn is_schema_change(s: &sqlparser::ast::Statement) -> bool {
    use sqlparser::ast::Statement as S;
    matches!(
        s,
        S::CreateTable(_)
            | S::CreateIndex(_)
            | S::CreateView { .. }
            | S::CreateSequence { .. }
            | S::CreateSchema { .. }
            | S::CreateType { .. }
            | S::CreateFunction(_)
            | S::CreateExtension { .. }
            | S::AlterTable { .. }
            | S::AlterIndex { .. }
            | S::AlterView { .. }
            | S::Drop { .. }
            | S::DropFunction { .. }
            | S::Comment { .. }
    )
}

/// The bound of a `/* max_lag_ms: N */` comment anywhere in `sql` (ORMs'
/// comment tags go first or last).
pub fn max_lag_comment(sql: &str) -> Option<std::time::Duration> {
    const TAG: &str = "/* max_lag_ms:";
    let at = sql.find(TAG)? + TAG.len();
    let rest = &sql[at..];
    let end = rest.find("*/")?;
    rest[..end]
        .trim()
        .parse::<u64>()
        .ok()
        .map(std::time::Duration::from_millis)
}

/// Works out the analysis of `sql` for a pool. Only sharded pools need
/// more than the intent; the intent of a text longer than the parser may
/// look at (`query_parser_max_length`) is a write.
pub fn analyse(sql: &str, sharding: &Sharding, route: &RouteConfig) -> Analysis {
    let too_long = route.max_length.is_some_and(|max| sql.len() > max);
    // Only a sharded pool looks past the length limit (for its keys).
    let parsed = if too_long && sharding.shards <= 1 {
        None
    } else {
        Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()
    };
    let statements = parsed.as_deref().unwrap_or_default();
    let intent = match &parsed {
        Some(s) if !too_long => rw::intent_of(s),
        _ => Intent::Write,
    };
    let mut analysis = Analysis {
        intent,
        comment: None,
        keys: KeyFacts::None,
        // What cannot be parsed may touch anything.
        touches_tables: parsed.is_none() || Sharding::touches_tables(statements),
        merge: None,
        insert_split: None,
        copy_in: None,
        ddl: false,
        max_lag: max_lag_comment(sql),
        session_only: !statements.is_empty() && statements.iter().all(is_session_setting),
    };
    if sharding.shards <= 1 {
        return analysis;
    }
    analysis.ddl = !statements.is_empty() && statements.iter().all(is_schema_change);
    // DROP names its tables where the relation visitor does not look.
    analysis.touches_tables |= analysis.ddl;
    analysis.comment = sharding
        .from_comment(sql)
        .map(|r| r.map_err(|e| e.to_string()));
    analysis.keys = sharding.key_facts(statements);
    if analysis.intent == Intent::Read {
        analysis.merge = match statements {
            [one] => merge::plan(one)
                .map(|p| p.map(Arc::new))
                .map_err(|e| e.to_string())
                .transpose(),
            [] => None,
            _ => Some(Err(Error::Unsupported(
                "more than one statement across shards is not supported; add the sharding key to run it on one shard".into(),
            )
            .to_string())),
        };
    }
    analysis.insert_split = sharding.split_insert(statements);
    if let Some((table, _)) = sharding.automatic() {
        analysis.copy_in = copy::parse(statements, table);
    }
    analysis
}

/// Most analyses one pool keeps; beyond, the table starts over (texts
/// with inlined constants would otherwise grow it without bound).
const MAX_ANALYSES: usize = 4096;

/// A pool's analyses by statement text, and how many parses it took.
#[derive(Default)]
pub struct Analyses {
    by_text: RwLock<HashMap<Box<str>, Arc<Analysis>>>,
    parses: AtomicU64,
}

impl Analyses {
    /// The analysis of `sql`: kept from before, or worked out now.
    pub fn get(&self, sql: &str, sharding: &Sharding, route: &RouteConfig) -> Arc<Analysis> {
        if let Some(a) = self.by_text.read().get(sql) {
            return a.clone();
        }
        self.parses.fetch_add(1, Ordering::Relaxed);
        let analysis = Arc::new(analyse(sql, sharding, route));
        let mut map = self.by_text.write();
        if map.len() >= MAX_ANALYSES {
            map.clear();
        }
        map.insert(sql.into(), analysis.clone());
        analysis
    }

    /// How many statement texts were parsed (each once).
    pub fn parses(&self) -> u64 {
        self.parses.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DefaultRole, PoolConfig};
    use crate::router::hash::Key;
    use crate::router::shard::{KeyType, KeyValue};

    fn sharded(n: usize) -> Sharding {
        let p = PoolConfig {
            automatic_sharding_key: Some("users.id".into()),
            sharding_key_type: KeyType::Bigint,
            shard_id_regex: Some(r"/\* shard_id: (\d+) \*/".into()),
            ..Default::default()
        };
        Sharding::from_pool(&p, n).expect("a valid sharding config")
    }

    fn route() -> RouteConfig {
        RouteConfig {
            default_role: DefaultRole::Any,
            parser: true,
            max_length: Some(200),
            primary_reads: true,
        }
    }

    #[test]
    fn one_parse_answers_every_question() {
        let s = sharded(3);
        let a = analyse(
            "select name from users where id = 42 order by name",
            &s,
            &route(),
        );
        assert_eq!(a.intent, Intent::Read);
        assert!(a.touches_tables);
        assert_eq!(a.keys.resolve(&|_| None), Some(Key::Bigint(42).shard(3)));
        assert!(matches!(a.merge, Some(Ok(_))));
        assert!(a.insert_split.is_none() && a.copy_in.is_none());

        let a = analyse("select * from users where id = $1", &s, &route());
        assert_eq!(a.keys, KeyFacts::Where(vec![vec![KeyValue::Param(0)]]));
        assert_eq!(a.keys.resolve(&|i| (i == 0).then_some(2)), Some(2));

        let a = analyse("/* shard_id: 7 */ select 1", &s, &route());
        assert!(
            matches!(a.comment, Some(Err(_))),
            "shard 7 of 3 is an error"
        );
        assert!(!a.touches_tables);

        let a = analyse("copy users (id, name) from stdin", &s, &route());
        assert_eq!(a.intent, Intent::Write);
        assert!(a.copy_in.is_some() && a.merge.is_none());

        let a = analyse("select a from t union select a from u", &s, &route());
        assert!(matches!(a.merge, Some(Err(_))));
    }

    #[test]
    fn unsharded_pools_need_only_the_intent() {
        let s = sharded(1);
        let a = analyse("select * from users where id = 42", &s, &route());
        assert_eq!(a.intent, Intent::Read);
        assert_eq!(a.keys, KeyFacts::None);
        assert!(a.merge.is_none());
    }

    #[test]
    fn what_cannot_be_parsed_is_a_write_touching_tables() {
        let a = analyse("this is not sql", &sharded(2), &route());
        assert_eq!(a.intent, Intent::Write);
        assert!(a.touches_tables);
        let long = format!("select {}", "1+".repeat(200) + "1");
        assert_eq!(analyse(&long, &sharded(2), &route()).intent, Intent::Write);
    }

    #[test]
    fn each_text_is_parsed_once() {
        let (s, r) = (sharded(2), route());
        let cache = Analyses::default();
        for _ in 0..3 {
            cache.get("select * from users where id = 1", &s, &r);
        }
        cache.get("select * from users where id = 2", &s, &r);
        assert_eq!(cache.parses(), 2);
    }
}
