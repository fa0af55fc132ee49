//! A user's secret as the config gives it: a plain password, an md5 hash
//! or a SCRAM-SHA-256 verifier. Never printed.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::scram::Verifier;

#[derive(Clone)]
pub enum Secret {
    /// A plain password, with the SCRAM verifier derived from it once.
    Plain {
        password: String,
        verifier: Verifier,
    },
    /// `md5` + 32 hex digits, as in pg_authid.
    Md5(String),
    /// `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`, as in pg_authid.
    Scram(Verifier),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Secret::Plain { .. } => "plain",
            Secret::Md5(_) => "md5",
            Secret::Scram(_) => "scram-sha-256",
        };
        write!(f, "Secret({kind}, redacted)")
    }
}

impl Secret {
    pub fn parse(text: &str) -> Secret {
        if text.len() == 35
            && text.starts_with("md5")
            && text[3..].bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Secret::Md5(text.to_string());
        }
        if let Some(v) = Verifier::parse(text) {
            return Secret::Scram(v);
        }
        Secret::Plain {
            password: text.to_string(),
            verifier: Verifier::derive(text),
        }
    }

    /// The md5 hash for `user`, if this secret can give one.
    pub fn md5_for(&self, user: &str) -> Option<String> {
        match self {
            Secret::Plain { password, .. } => Some(super::md5::stored_hash(password, user)),
            Secret::Md5(h) => Some(h.clone()),
            Secret::Scram(_) => None,
        }
    }

    pub fn scram_verifier(&self) -> Option<&Verifier> {
        match self {
            Secret::Plain { verifier, .. } | Secret::Scram(verifier) => Some(verifier),
            Secret::Md5(_) => None,
        }
    }

    pub fn plain(&self) -> Option<&str> {
        match self {
            Secret::Plain { password, .. } => Some(password),
            _ => None,
        }
    }
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

pub(crate) fn unb64(text: &str) -> Option<Vec<u8>> {
    B64.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_forms() {
        assert!(matches!(
            Secret::parse("md5a3556571e93b0d20722ba62be61e8c2d"),
            Secret::Md5(_)
        ));
        assert!(matches!(Secret::parse("hunter2"), Secret::Plain { .. }));
        let v = postgres_protocol::password::scram_sha_256(b"pw");
        assert!(matches!(Secret::parse(&v), Secret::Scram(_)));
        assert!(!format!("{:?}", Secret::parse("hunter2")).contains("hunter2"));
    }
}
