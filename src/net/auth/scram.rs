//! The server side of SCRAM-SHA-256 (RFC 5802/7677) as Postgres speaks it,
//! without channel binding. The client side is postgres-protocol's.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::secret::{b64, unb64};

type HmacSha256 = Hmac<Sha256>;

const ITERATIONS: u32 = 4096;

/// What Postgres stores for a SCRAM user: enough to verify, not to log in.
#[derive(Clone)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

impl Verifier {
    /// Derives a verifier from a plain password with a fresh salt. Done once
    /// per config load, so logins cost a few HMACs, not 4096 rounds of PBKDF2.
    pub fn derive(password: &str) -> Verifier {
        let mut salt = vec![0u8; 16];
        rand::thread_rng().fill_bytes(&mut salt);
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2::<HmacSha256>(password.as_bytes(), &salt, ITERATIONS, &mut salted)
            .expect("PBKDF2 output length is valid");
        let client_key = hmac(&salted, b"Client Key");
        Verifier {
            iterations: ITERATIONS,
            salt,
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// Parses `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(text: &str) -> Option<Verifier> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iter, salt) = iter_salt.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(Verifier {
            iterations: iter.parse().ok()?,
            salt: unb64(salt)?,
            stored_key: unb64(stored)?.try_into().ok()?,
            server_key: unb64(server)?.try_into().ok()?,
        })
    }
}

/// One SCRAM exchange with a client, between the two messages it sends.
pub struct Exchange {
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ScramError {
    /// The client's message is not SCRAM as we speak it.
    Malformed(&'static str),
    /// The proof is wrong: bad password.
    BadProof,
}

impl Exchange {
    /// Takes the client-first-message; returns the exchange and server-first-message.
    pub fn start(
        client_first: &[u8],
        verifier: &Verifier,
    ) -> Result<(Exchange, String), ScramError> {
        let text =
            std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        // gs2 header: "n,," or "y,," (client supports binding, we did not offer it).
        let bare = text
            .strip_prefix("n,,")
            .or_else(|| text.strip_prefix("y,,"))
            .ok_or(ScramError::Malformed("channel binding is not supported"))?;
        let client_nonce = bare
            .split(',')
            .find_map(|attr| attr.strip_prefix("r="))
            .filter(|n| !n.is_empty())
            .ok_or(ScramError::Malformed("no client nonce"))?;
        let mut ours = [0u8; 18];
        rand::thread_rng().fill_bytes(&mut ours);
        let nonce = format!("{client_nonce}{}", b64(&ours));
        let server_first = format!(
            "r={nonce},s={},i={}",
            b64(&verifier.salt),
            verifier.iterations
        );
        Ok((
            Exchange {
                client_first_bare: bare.to_string(),
                server_first: server_first.clone(),
                nonce,
            },
            server_first,
        ))
    }

    /// Takes the client-final-message; returns the server-final-message on success.
    pub fn finish(self, client_final: &[u8], verifier: &Verifier) -> Result<String, ScramError> {
        let text =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let nonce = without_proof
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("no nonce"))?;
        if nonce.as_bytes().ct_eq(self.nonce.as_bytes()).unwrap_u8() == 0 {
            return Err(ScramError::BadProof);
        }
        let proof = unb64(proof).ok_or(ScramError::Malformed("proof is not base64"))?;
        if proof.len() != 32 {
            return Err(ScramError::Malformed("proof has the wrong length"));
        }
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = hmac(&verifier.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        let stored: [u8; 32] = Sha256::digest(&client_key).into();
        if stored.ct_eq(&verifier.stored_key).unwrap_u8() == 0 {
            return Err(ScramError::BadProof);
        }
        let server_signature = hmac(&verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", b64(&server_signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn run(password: &str, verifier: &Verifier) -> Result<(), ScramError> {
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let (ex, server_first) = Exchange::start(client.message(), verifier)?;
        client
            .update(server_first.as_bytes())
            .expect("client accepts server-first");
        let server_final = ex.finish(client.message(), verifier)?;
        client
            .finish(server_final.as_bytes())
            .expect("client verifies server signature");
        Ok(())
    }

    #[test]
    fn accepts_right_password_with_derived_and_parsed_verifiers() {
        assert_eq!(run("s3cret", &Verifier::derive("s3cret")), Ok(()));
        let stored = postgres_protocol::password::scram_sha_256(b"s3cret");
        let parsed = Verifier::parse(&stored).expect("parses Postgres's verifier");
        assert_eq!(run("s3cret", &parsed), Ok(()));
    }

    #[test]
    fn rejects_wrong_password() {
        assert_eq!(
            run("wrong", &Verifier::derive("s3cret")),
            Err(ScramError::BadProof)
        );
    }

    #[test]
    fn rejects_garbage() {
        let v = Verifier::derive("x");
        assert!(Exchange::start(b"\xff\xfe", &v).is_err());
        assert!(Exchange::start(b"p=tls-server-end-point,,n=,r=abc", &v).is_err());
        let (ex, _) = Exchange::start(b"n,,n=,r=abc", &v).unwrap();
        assert!(ex.finish(b"c=biws,r=abc", &v).is_err());
    }
}
