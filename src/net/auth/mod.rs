//! Authentication: verifying clients (md5, SCRAM-SHA-256) and the secrets
//! we keep for them. Authenticating to servers lives in `backend::connect`.

pub mod md5;
pub mod scram;
pub mod secret;

pub use secret::Secret;
