//! The session's state, by side, and its modes as types: what the client
//! side holds (its socket, buffers, statement names, parameters, routing
//! choices), what the server side holds (the binding to servers, what is
//! owed back), the transaction as the client sees it, and the two modes
//! that change how the next client message is read (`Recovery`, `Batch`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::super::expect::ExpectQueue;
use super::super::multi::copy_split::{BoundCopy, CopySplit};
use super::super::params::ClientParams;
use super::super::prepared::ClientStatements;
use crate::backend::{Pooled, ServerPool};
use crate::net::messages::TxStatus;
use crate::net::stream::Stream;
use crate::router::RouteState;

/// The client's side of the session.
pub struct ClientSide {
    pub stream: Stream,
    pub peer: SocketAddr,
    /// Bytes from the client not handled yet. Allocated while the client
    /// has something to say; an idle client holds none.
    pub buf: BytesMut,
    /// Answers queued for the client.
    pub out: BytesMut,
    /// Bytes of a large CopyData still to pass through to the server.
    pub stream_left: usize,
    pub statements: ClientStatements,
    pub params: ClientParams,
    /// SET SERVER ROLE / PRIMARY READS / SHARD.
    pub route: RouteState,
}

/// The servers' side of the session.
pub struct ServerSide {
    pub binding: Binding,
    /// Messages queued for the server.
    pub out: BytesMut,
    /// What the server owes, in order (see `expect`).
    pub expect: ExpectQueue,
    /// Server statement names sent whose ParseComplete has not come yet.
    pub pending: HashSet<String>,
    /// Bytes of a large server message still to pass through.
    pub stream_left: usize,
    /// The pool of the server held, or last held: bans and log lines.
    pub last_pool: Arc<ServerPool>,
}

/// The servers a session holds.
// The server is held inline: boxing it would cost an allocation per
// transaction, on the hottest path there is.
#[allow(clippy::large_enum_variant)]
pub enum Binding {
    /// None: between transactions in transaction mode, or before the
    /// first statement.
    Idle,
    /// One server, for the client's transaction (or its whole session).
    One(Pooled),
    /// A COPY FROM STDIN split across shards, streaming the client's rows.
    CopySplit(Box<CopySplit>),
}

impl Binding {
    /// The one server held, if that is what is held.
    pub fn one(&mut self) -> Option<&mut Pooled> {
        match self {
            Binding::One(p) => Some(p),
            _ => None,
        }
    }

    /// The one server held, to look at.
    pub fn held(&self) -> Option<&Pooled> {
        match self {
            Binding::One(p) => Some(p),
            _ => None,
        }
    }

    pub fn is_idle(&self) -> bool {
        matches!(self, Binding::Idle)
    }
}

/// The transaction as the client sees it.
pub struct Transaction {
    /// Transaction status as last reported to the client.
    pub status: TxStatus,
    /// A BEGIN answered by the session, sent with the first real statement
    /// once that statement shows where the transaction belongs.
    pub deferred: Option<DeferredBegin>,
    /// When the server was checked out (for transaction time).
    pub started: Option<Instant>,
    /// A pgml call ran in this transaction block (it may have trained or
    /// deployed): predictions read their models through the block, not
    /// from the shared cache, until it ends.
    pub ml_wrote: bool,
    /// The held server was chosen as the primary for a statement that may
    /// write: the client's later reads must see the transaction's commit.
    pub wrote: bool,
}

pub struct DeferredBegin {
    pub sql: String,
    pub read_only: bool,
}

/// After an error the session raised itself in the extended protocol,
/// what happens to the client's messages up to its Sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    None,
    /// No server saw the batch: drop messages until Sync, then answer
    /// ReadyForQuery here.
    SkipToSync,
    /// A server holds the rest of the batch: drop messages until Sync and
    /// let that Sync through, so the server ends the batch itself.
    DiscardToSync,
    /// pgcat's idle transaction timeout rolled the client's transaction
    /// back: its next message is answered with that error.
    TimedOut,
}

/// Extended-protocol messages kept back instead of being sent.
pub enum Batch {
    None,
    /// On a sharded pool without a server: Parse/Describe/Close wait for
    /// the Bind or Sync that shows which shard they belong to.
    Holding(Vec<(u8, Bytes)>),
    /// A keyless read, collected until Sync to run on every shard.
    FanOut(Vec<(u8, Bytes)>),
    /// A COPY into the sharded table, bound: it starts at its Execute.
    CopyBound(Box<BoundCopy>),
}

impl Batch {
    pub fn held(&mut self) -> Option<&mut Vec<(u8, Bytes)>> {
        match self {
            Batch::Holding(v) => Some(v),
            _ => None,
        }
    }

    /// Messages held back so far (empty when none).
    pub fn take_held(&mut self) -> Vec<(u8, Bytes)> {
        match std::mem::replace(self, Batch::None) {
            Batch::Holding(v) => v,
            other => {
                *self = other;
                Vec::new()
            }
        }
    }

    pub fn holding(&self) -> bool {
        matches!(self, Batch::Holding(v) if !v.is_empty())
    }
}
