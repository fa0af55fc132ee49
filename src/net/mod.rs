//! The wire: framing, the messages we write and read, startup packets, auth.

pub mod auth;
pub mod bufpool;
pub mod codec;
pub mod extended;
pub mod messages;
pub mod oid;
pub mod rows;
pub mod socket;
pub mod startup;
pub mod stream;
pub mod tag;
pub mod tls;
