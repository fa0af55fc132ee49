//! pgmlcat: a Postgres pooler in the line of pgcat, with in-line ML in the
//! line of PostgresML. The README says what it does for a user; this says
//! where the code for it lives and how a query travels through it.
//!
//! # Layout
//!
//! | module | what it owns |
//! |---|---|
//! | [`config`] | `pgcat.toml`: schema, `${ENV}` expansion, validation |
//! | [`net`] | every byte on the wire: framing, message readers and writers, startup packets, auth (md5, SCRAM), TLS, the buffer pool |
//! | [`frontend`] | accepting clients, the handshake, the session and what it does with each message |
//! | [`router`] | pure policy: read/write intent, shard keys and hashing, which shard and role, custom commands, merge plans |
//! | [`backend`] | server connections and their one reader ([`backend::server::ServerState::observe`]), per-server pools, the (database, user) pools |
//! | [`ml`] | `pgml.*`: call parsing, catalog, data pull, preprocessing, algorithms, training (AutoML too), deploy, model cache, how a prediction (or an explanation) runs, evaluation, model import, drift, scheduled retraining |
//! | [`admin`] | the admin console (`SHOW`, `PAUSE`, `RELOAD`, ...) |
//! | [`dashboard`] | the web pages over the admin console's tables and the pgml catalog |
//! | [`stats`] | counters and the Prometheus endpoint |
//! | [`app`] | the state every task shares, and reload; [`runtime`] signals and background tasks |
//!
//! # The life of a query
//!
//! 1. **Accept.** [`frontend::listener::serve`] accepts a connection and the
//!    handshake ([`frontend::handshake`]) reads the startup packet,
//!    authenticates the client against the config and picks its pool. The
//!    client is now a [`frontend::session::Session`], run as its own task.
//! 2. **Wait.** Between transactions a session holds no server and no
//!    buffers: it waits on its socket, its idle timer and shutdown. Bytes
//!    arrive into a buffer lent by [`net::bufpool`], and are cut into
//!    messages by [`net::codec`] without copying.
//! 3. **Decide once.** A session whose pool a reload replaced moves to the
//!    new one here, between transactions. Each message is analysed once: a
//!    Query's text (only
//!    when the pool routes by content or the text may be `pgml.*`) goes to
//!    [`router::statement::Analyses`], which parses each distinct text at most
//!    once into an [`router::statement::Analysis`] (intent, named shard,
//!    tables, insert split, COPY plan, merge plan). The frontend's `decide`
//!    turns that, the client's state and the pool's policy
//!    ([`router::place`]) into one plan: answer locally (pgcat's commands
//!    and intercepted statements among them), run a `pgml` call,
//!    rewrite a prediction, fan out to every shard, split an INSERT or COPY,
//!    or forward to one shard and role. `dispatch` then matches on it.
//! 4. **Lease.** Forwarding checks out a server from the chosen
//!    [`backend::pool`] (a sync fast path when one is idle; a read skips
//!    replicas that have not replayed the client's last write or are past
//!    its lag bound, by the shard's [`backend::freshness`] clock), brings its
//!    session parameters in line with the client's, and binds it to the
//!    session until the transaction ends (transaction mode) or the client
//!    leaves (session mode). Statements across shards hold a
//!    [`backend::shards::ShardSet`] instead.
//! 5. **Relay.** The client's bytes go to the server as they came (what a
//!    statement may do beyond its rows — set a parameter, take an advisory
//!    lock — is noted on the way, one pass over its text; the client's
//!    unnamed statement is parsed again first on a connection that has not
//!    seen it). The first batch
//!    on a fresh lease is kept until answered, so a server that was
//!    shutting down can be replaced unseen. The server's replies are read
//!    by the one reader, [`backend::server::ServerState::observe`], which
//!    keeps the books (ReadyForQuery status, ParameterStatus, effects of
//!    commands, FATAL) and passes the frame on untouched, unless a plan
//!    needs it: a merge of shards' rows ([`router::merge`]) or predictions
//!    spliced into rows ([`ml::predict`]). A prediction the streaming
//!    rewrite cannot serve (inside an expression, an aggregate, an UPDATE...)
//!    runs by [`ml::predict::lookup`]: the proxy's own collection queries and
//!    a COPY of predictions into a temporary table on the same server, in
//!    the same transaction, then the statement with lookups, its answer
//!    relayed as it comes. LISTEN/UNLISTEN never reach it:
//!    the pool's one listening connection ([`backend::listen`]) serves
//!    them, and notifications come to the session as an event of its own.
//! 6. **Release.** At ReadyForQuery outside a transaction the parameters
//!    the transaction changed are read back, the server is asked what it
//!    holds if a statement may have left state that cannot move
//!    ([`backend::held`]; if it holds any, the client keeps the server:
//!    it is pinned), and otherwise the server goes back to its pool and
//!    the session returns its buffers.
//!
//! Beside queries, a process runs background tasks that touch no client's
//! path: pool maintenance and reload ([`runtime`]), the model cache's LISTEN
//! for deployments, and, per database it has served a pgml call on, the
//! retraining scheduler ([`ml::schedule::runner`]).
//!
//! Errors are one type, [`errors::Error`], whose SQLSTATE and wording are
//! decided in one place; whatever the failure, the client gets an
//! ErrorResponse and, where Postgres would keep it, a usable connection.

pub mod admin;
pub mod app;
pub mod backend;
pub mod config;
pub mod dashboard;
pub mod errors;
pub mod frontend;
pub mod ml;
pub mod net;
pub mod router;
pub mod runtime;
pub mod stats;
