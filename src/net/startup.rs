//! The untagged packets a client may open a connection with.

use crate::errors::{Error, Result};
use crate::net::codec::{cstr, read_i32};

const SSL_REQUEST: i32 = 80877103;
const GSSENC_REQUEST: i32 = 80877104;
const CANCEL_REQUEST: i32 = 80877102;

#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel { pid: i32, secret: i32 },
    Startup(Startup),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Startup {
    pub major: i32,
    pub minor: i32,
    /// Parameters in the order the client sent them.
    pub params: Vec<(String, String)>,
}

impl Startup {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `_pq_.` protocol options we do not understand (we understand none).
    pub fn protocol_options(&self) -> Vec<String> {
        self.params
            .iter()
            .filter(|(k, _)| k.starts_with("_pq_."))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// Parses a whole startup-phase packet, length prefix included.
pub fn parse(packet: &[u8]) -> Result<StartupPacket> {
    let code = read_i32(packet, 4)?;
    match code {
        SSL_REQUEST => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST => Ok(StartupPacket::Cancel {
            pid: read_i32(packet, 8)?,
            secret: read_i32(packet, 12)?,
        }),
        version => {
            let major = version >> 16;
            let minor = version & 0xffff;
            let mut params = Vec::new();
            let mut pos = 8;
            // The list ends with an empty name; tolerate a missing final NUL as libpq-era servers do not.
            while pos < packet.len() && packet[pos] != 0 {
                let (name, next) = cstr(packet, pos)?;
                let (value, next) = cstr(packet, next)?;
                params.push((name.to_string(), value.to_string()));
                pos = next;
            }
            if pos >= packet.len() {
                return Err(Error::protocol("startup packet is not terminated"));
            }
            Ok(StartupPacket::Startup(Startup {
                major,
                minor,
                params,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn parses_startup_params() {
        let mut buf = BytesMut::new();
        postgres_protocol::message::frontend::startup_message(
            [("user", "app"), ("database", "db")],
            &mut buf,
        )
        .unwrap();
        let StartupPacket::Startup(s) = parse(&buf).unwrap() else {
            panic!("not a startup packet")
        };
        assert_eq!((s.major, s.minor), (3, 0));
        assert_eq!(s.param("user"), Some("app"));
        assert_eq!(s.param("database"), Some("db"));
    }

    #[test]
    fn rejects_unterminated() {
        let packet = [0, 0, 0, 12, 0, 3, 0, 0, b'u', 0, b'x', 0];
        assert!(parse(&packet).is_err());
    }

    #[test]
    fn parses_cancel() {
        let mut buf = BytesMut::new();
        postgres_protocol::message::frontend::cancel_request(7, 9, &mut buf);
        assert_eq!(
            parse(&buf).unwrap(),
            StartupPacket::Cancel { pid: 7, secret: 9 }
        );
    }
}
