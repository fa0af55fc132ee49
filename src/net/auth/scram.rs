//! The server side of SCRAM-SHA-256 (RFC 5802/7677) as Postgres speaks it,
//! without channel binding, and the client side for SCRAM pass-through:
//! a client that proves it knows the password reveals its ClientKey (the
//! proof is the key masked by a signature the verifier can compute), and
//! with it and the verifier's ServerKey pgmlcat logs in to a server that
//! holds the same verifier, as PgBouncer does, with no password anywhere.
//! With a password, the client side is postgres-protocol's.

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
    /// The server's verifier is not the one the keys came from (another
    /// salt or iteration count: the password differs there), or its
    /// signature is wrong.
    Mismatch(&'static str),
}

/// What a client proved it has in a SCRAM exchange: enough to log in to a
/// server holding the same verifier, never the password. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientKeys {
    client_key: [u8; 32],
    server_key: [u8; 32],
    salt: Vec<u8>,
    iterations: u32,
}

impl std::fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientKeys(redacted)")
    }
}

/// The client side of SCRAM with keys instead of a password.
pub struct KeyedClient {
    keys: ClientKeys,
    client_first_bare: String,
    nonce: String,
    /// The server signature to expect, once the proof is sent.
    expected: Option<[u8; 32]>,
}

impl KeyedClient {
    /// The exchange and its client-first-message.
    pub fn start(keys: ClientKeys) -> (KeyedClient, Vec<u8>) {
        let mut ours = [0u8; 18];
        rand::thread_rng().fill_bytes(&mut ours);
        let nonce = b64(&ours);
        let client_first_bare = format!("n=,r={nonce}");
        let first = format!("n,,{client_first_bare}").into_bytes();
        let client = KeyedClient {
            keys,
            client_first_bare,
            nonce,
            expected: None,
        };
        (client, first)
    }

    /// Takes the server-first-message; returns the client-final-message.
    pub fn update(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        let text =
            std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let attr = |name: &str| text.split(',').find_map(|a| a.strip_prefix(name));
        let nonce = attr("r=").ok_or(ScramError::Malformed("no nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::Malformed(
                "the server's nonce does not extend ours",
            ));
        }
        let salt = attr("s=")
            .and_then(unb64)
            .ok_or(ScramError::Malformed("no salt"))?;
        let iterations: u32 = attr("i=")
            .and_then(|i| i.parse().ok())
            .ok_or(ScramError::Malformed("no iteration count"))?;
        if salt != self.keys.salt || iterations != self.keys.iterations {
            return Err(ScramError::Mismatch(
                "the server's SCRAM verifier has another salt or iteration count than pgmlcat's",
            ));
        }
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let stored_key: [u8; 32] = Sha256::digest(self.keys.client_key).into();
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = self
            .keys
            .client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        self.expected = Some(hmac(&self.keys.server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", b64(&proof)).into_bytes())
    }

    /// Checks the server-final-message's signature.
    pub fn finish(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let text =
            std::str::from_utf8(server_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let signature = text
            .strip_prefix("v=")
            .and_then(unb64)
            .ok_or(ScramError::Malformed("no server signature"))?;
        match self.expected {
            Some(expected) if signature.ct_eq(&expected).unwrap_u8() == 1 => Ok(()),
            _ => Err(ScramError::Mismatch(
                "the server's SCRAM signature is wrong",
            )),
        }
    }
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

    /// Takes the client-final-message; returns the server-final-message and
    /// the keys the client proved it has, on success.
    pub fn finish(
        self,
        client_final: &[u8],
        verifier: &Verifier,
    ) -> Result<(String, ClientKeys), ScramError> {
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
        let keys = ClientKeys {
            client_key: client_key
                .try_into()
                .map_err(|_| ScramError::Malformed("proof has the wrong length"))?,
            server_key: verifier.server_key,
            salt: verifier.salt.clone(),
            iterations: verifier.iterations,
        };
        Ok((format!("v={}", b64(&server_signature)), keys))
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
        let (server_final, _) = ex.finish(client.message(), verifier)?;
        client
            .finish(server_final.as_bytes())
            .expect("client verifies server signature");
        Ok(())
    }

    /// The keys a client proves let pgmlcat log in to a server holding
    /// the same verifier, and to no other.
    #[test]
    fn keys_from_a_client_log_in_where_the_verifier_is_the_same() {
        let stored = postgres_protocol::password::scram_sha_256(b"s3cret");
        let verifier = Verifier::parse(&stored).expect("parses");
        // A client logs in to pgmlcat.
        let mut client = ScramSha256::new(b"s3cret", ChannelBinding::unsupported());
        let (ex, server_first) = Exchange::start(client.message(), &verifier).unwrap();
        client.update(server_first.as_bytes()).unwrap();
        let (_, keys) = ex.finish(client.message(), &verifier).unwrap();
        // pgmlcat logs in, with those keys, to a "server" with the verifier.
        let (mut ours, first) = KeyedClient::start(keys.clone());
        let (server, server_first) = Exchange::start(&first, &verifier).unwrap();
        let last = ours.update(server_first.as_bytes()).unwrap();
        let (server_final, _) = server.finish(&last, &verifier).expect("the server accepts");
        assert_eq!(ours.finish(server_final.as_bytes()), Ok(()));
        assert_eq!(
            ours.finish(b"v=AAAA"),
            Err(ScramError::Mismatch(
                "the server's SCRAM signature is wrong"
            ))
        );
        // Another salt: refused before any proof is sent.
        let other =
            Verifier::parse(&postgres_protocol::password::scram_sha_256(b"s3cret")).unwrap();
        let (mut ours, first) = KeyedClient::start(keys);
        let (_, server_first) = Exchange::start(&first, &other).unwrap();
        assert!(matches!(
            ours.update(server_first.as_bytes()),
            Err(ScramError::Mismatch(_))
        ));
        assert_eq!(format!("{:?}", ours.keys), "ClientKeys(redacted)");
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
