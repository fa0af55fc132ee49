//! Client side of the house: accepting, the handshake, and the session:
//! its loop (`session`), what each message means (`decide`, `dispatch`),
//! the server on loan (`lease`), forwarding (`extended`), answers
//! (`relay`, `local`), statements across shards (`multi`) and pgml.*
//! (`ml`, `predict`).

pub mod cancel;
mod decide;
mod dispatch;
mod expect;
mod extended;
mod fresh;
pub mod handshake;
mod lease;
pub mod listener;
mod local;
mod lookup;
mod ml;
mod ml_script;
mod multi;
mod notes;
mod notify;
pub mod params;
mod pins;
mod predict;
pub mod prepared;
mod relay;
mod resend;
pub mod session;
