//! MD5 password authentication (AuthenticationMD5Password).

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// `md5` + hex(md5(password + username)): what pg_authid stores.
pub fn stored_hash(password: &str, user: &str) -> String {
    postgres_protocol::password::md5(password.as_bytes(), user)
}

/// What the client must answer for a stored hash ("md5..." form) and salt.
pub fn expected_response(stored: &str, salt: [u8; 4]) -> String {
    let inner = stored.strip_prefix("md5").unwrap_or(stored);
    let mut h = Md5::new();
    h.update(inner.as_bytes());
    h.update(salt);
    format!("md5{:x}", h.finalize())
}

/// Constant-time comparison of the client's response with the expected one.
pub fn verify(stored: &str, salt: [u8; 4], response: &[u8]) -> bool {
    let expected = expected_response(stored, salt);
    expected.as_bytes().ct_eq(response).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_libpq() {
        // libpq: md5(md5(password || user) || salt)
        let salt = [1, 2, 3, 4];
        let stored = stored_hash("secret", "alice");
        let client = postgres_protocol::authentication::md5_hash(b"alice", b"secret", salt);
        assert!(verify(&stored, salt, client.as_bytes()));
        assert!(!verify(&stored, salt, b"md5wrong"));
    }
}
