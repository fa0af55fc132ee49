//! Every error a client can see, as one typed enum. The SQLSTATE and the
//! severity are decided here and nowhere else.

use std::fmt;

/// Fields of a Postgres ErrorResponse/NoticeResponse we care about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
}

impl fmt::Display for ErrorFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer broke the wire protocol (bad length, unexpected message...).
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("database \"{0}\" does not exist")]
    UnknownDatabase(String),
    /// Same message for a wrong password and an unknown user, as Postgres does.
    #[error("password authentication failed for user \"{0}\"")]
    AuthFailed(String),
    #[error("no server connection became free within {waited_ms} ms for pool {pool} (pool_size {pool_size}): the pool is exhausted")]
    PoolExhausted {
        pool: String,
        pool_size: u32,
        waited_ms: u64,
    },
    #[error("could not connect to server {addr}: {reason}")]
    ServerUnavailable { addr: String, reason: String },
    /// A server's ErrorResponse to a statement of the proxy's own (login,
    /// reset, its queries, a statement across shards); its SQLSTATE passes on.
    #[error("server {addr} refused the connection: {fields}")]
    ServerRefused { addr: String, fields: ErrorFields },
    #[error("server connection lost: {0}")]
    ServerLost(String),
    #[error("{0}")]
    Unsupported(String),
    /// pgcat's checkout_failure_limit: this client failed to get a server
    /// that many times.
    #[error("checkout failure limit reached ({failures} / {limit}): closing the connection")]
    CheckoutFailureLimit { failures: u64, limit: u64 },
    #[error("too many client connections (max_client_conn = {0})")]
    TooManyClients(usize),
    #[error("terminating connection: pgmlcat is shutting down")]
    Shutdown,
    #[error("terminating connection due to idle-in-transaction timeout ({0} ms)")]
    IdleInTransaction(u64),
    /// pgcat's idle_client_in_transaction_timeout: the transaction was
    /// rolled back; the connection goes on.
    #[error("idle transaction timeout: the transaction was rolled back after {0} ms idle (idle_client_in_transaction_timeout)")]
    IdleTransactionTimeout(u64),
    #[error("{0}")]
    InvalidParameter(String),
    /// An admin console command pgmlcat cannot carry out (unknown, bad
    /// arguments, no such pool): SQLSTATE 58000, as pgcat answers them.
    #[error("{0}")]
    Admin(String),
    #[error("configuration error: {0}")]
    Config(String),
    /// A statement on a sharded pool that names no shard.
    #[error("{0}")]
    NoShard(String),
    #[error("this server requires TLS: connect with sslmode=require or stronger")]
    TlsRequired,
    /// A pgml.* call failed; the ML side chose the SQLSTATE.
    #[error("{0}")]
    Ml(#[from] crate::ml::MlError),
    /// The client hung up; nobody to tell.
    #[error("client closed the connection")]
    ClientGone,
}

/// How the client connection fares after the error is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The session goes on.
    Error,
    /// The client connection is closed after the ErrorResponse.
    Fatal,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

impl Error {
    pub fn protocol(msg: impl Into<String>) -> Self {
        Error::Protocol(msg.into())
    }

    pub fn sqlstate(&self) -> &str {
        match self {
            Error::Io(_)
            | Error::ClientGone
            | Error::ServerUnavailable { .. }
            | Error::ServerLost(_) => "08006",
            Error::Protocol(_) => "08P01",
            Error::UnknownDatabase(_) => "3D000",
            Error::AuthFailed(_) => "28P01",
            // pgcat's class for a failed checkout (its specs and users
            // rescue "system errors").
            Error::PoolExhausted { .. } | Error::CheckoutFailureLimit { .. } => "58000",
            Error::TooManyClients(_) => "53300",
            Error::ServerRefused { fields, .. } => &fields.code,
            Error::Unsupported(_) | Error::NoShard(_) => "0A000",
            Error::TlsRequired => "28000",
            Error::Shutdown => "57P01",
            Error::IdleInTransaction(_) => "25P03",
            Error::InvalidParameter(_) => "22023",
            Error::Admin(_) | Error::IdleTransactionTimeout(_) => "58000",
            Error::Config(_) => "F0000",
            Error::Ml(e) => e.sqlstate(),
        }
    }

    pub fn severity(&self) -> Severity {
        match self {
            Error::PoolExhausted { .. }
            | Error::Unsupported(_)
            | Error::NoShard(_)
            | Error::InvalidParameter(_)
            | Error::Admin(_)
            | Error::IdleTransactionTimeout(_)
            | Error::CheckoutFailureLimit { .. }
            | Error::Ml(_)
            | Error::ServerUnavailable { .. }
            | Error::ServerRefused { .. } => Severity::Error,
            _ => Severity::Fatal,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
