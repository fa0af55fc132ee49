//! Client side of the house: accepting, the handshake, and the session.

pub mod cancel;
mod client_messages;
mod copy_split;
mod expect;
mod fanout;
mod fanout_extended;
pub mod handshake;
pub mod listener;
mod local;
mod ml;
pub mod params;
mod predict;
pub mod prepared;
mod relay;
pub mod session;
