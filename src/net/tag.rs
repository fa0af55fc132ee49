//! Message type bytes of the wire protocol, by name. Every `match` on a
//! message's type outside `net/` uses these: a byte literal says nothing
//! about which side sent it (`b'D'` is Describe from a client and DataRow
//! from a server). Server tags are postgres-protocol's own constants.

/// What clients send.
pub mod client {
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const BIND: u8 = b'B';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const CLOSE: u8 = b'C';
    pub const SYNC: u8 = b'S';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const TERMINATE: u8 = b'X';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    /// PasswordMessage, SASLInitialResponse and SASLResponse share it.
    pub const PASSWORD: u8 = b'p';

    /// The target of a Describe or Close: a prepared statement...
    pub const STATEMENT: u8 = b'S';
    /// ...or a portal.
    pub const PORTAL: u8 = b'P';
}

/// The one-byte answer to SSLRequest and GSSENCRequest, before any message.
pub mod encryption {
    pub const ACCEPTED: u8 = b'S';
    pub const REFUSED: u8 = b'N';
}

/// What servers send.
pub mod server {
    pub use postgres_protocol::message::backend::{
        AUTHENTICATION_TAG as AUTHENTICATION, BACKEND_KEY_DATA_TAG as BACKEND_KEY_DATA,
        BIND_COMPLETE_TAG as BIND_COMPLETE, CLOSE_COMPLETE_TAG as CLOSE_COMPLETE,
        COMMAND_COMPLETE_TAG as COMMAND_COMPLETE, COPY_DATA_TAG as COPY_DATA,
        COPY_DONE_TAG as COPY_DONE, COPY_IN_RESPONSE_TAG as COPY_IN_RESPONSE,
        COPY_OUT_RESPONSE_TAG as COPY_OUT_RESPONSE, DATA_ROW_TAG as DATA_ROW,
        EMPTY_QUERY_RESPONSE_TAG as EMPTY_QUERY_RESPONSE, ERROR_RESPONSE_TAG as ERROR_RESPONSE,
        NOTICE_RESPONSE_TAG as NOTICE_RESPONSE, NOTIFICATION_RESPONSE_TAG as NOTIFICATION_RESPONSE,
        NO_DATA_TAG as NO_DATA, PARAMETER_DESCRIPTION_TAG as PARAMETER_DESCRIPTION,
        PARAMETER_STATUS_TAG as PARAMETER_STATUS, PARSE_COMPLETE_TAG as PARSE_COMPLETE,
        PORTAL_SUSPENDED_TAG as PORTAL_SUSPENDED, READY_FOR_QUERY_TAG as READY_FOR_QUERY,
        ROW_DESCRIPTION_TAG as ROW_DESCRIPTION,
    };
    /// CopyBothResponse (replication); never expected, named for completeness.
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    /// NegotiateProtocolVersion.
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
}
