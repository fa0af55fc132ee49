//! Reads that name no shard run on every shard; this plans the query each
//! shard gets (`plan`) and merges what they return (`rows`) into one
//! result, as one Postgres holding all rows would have answered.
//!
//! Supported: a single SELECT (joins of co-located tables and CTEs included)
//! with ORDER BY, LIMIT/OFFSET, GROUP BY and top-level count/sum/min/max/avg.
//! Refused with 0A000: DISTINCT, HAVING, window functions, set operations,
//! expressions over aggregates, aggregate DISTINCT/FILTER.

mod plan;
mod rows;

pub use plan::plan;
pub use rows::{add, aggregate, compare, oid, sort};

/// A row of text values (None: NULL), as the merge reads and writes them.
pub type Row = Vec<Option<String>>;

/// Where an output column is: a position in the select list, a name to
/// find in the RowDescription, or the k-th hidden column pgmlcat appended.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnRef {
    Position(usize),
    Name(String),
    Hidden(usize),
}

/// One ORDER BY key of the merged result.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderKey {
    pub column: ColumnRef,
    pub desc: bool,
    pub nulls_first: bool,
}

/// How a column is combined across shards in an aggregate query.
#[derive(Debug, Clone, PartialEq)]
pub enum Combine {
    Group,
    Count,
    Sum,
    Min,
    Max,
    /// This column holds the sum; the count is in the hidden column.
    Avg {
        count: usize,
    },
}

/// How a keyless read runs on every shard and merges back into one result.
#[derive(Debug, Clone)]
pub struct MergePlan {
    /// What each shard runs: the statement with hidden columns appended,
    /// averages split into sums and counts, LIMIT widened to offset+limit.
    pub shard_sql: String,
    /// Columns appended for the merge, dropped before the client sees rows.
    pub hidden: usize,
    pub order: Vec<OrderKey>,
    pub limit: Option<u64>,
    pub offset: u64,
    /// Per select-list item, then per hidden column (None: not aggregating).
    pub combine: Option<(Vec<Combine>, Vec<Combine>)>,
}

impl MergePlan {
    /// Whether rows must be decoded and merged (sorted or re-aggregated),
    /// rather than passed through shard after shard.
    pub fn merges_rows(&self) -> bool {
        !self.order.is_empty() || self.combine.is_some()
    }
}
