//! Arbitrary bytes as a stream of client messages: framing, then every
//! parser the session applies to a message of that type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmlcat::frontend::prepared::ClientStatements;
use pgmlcat::net::extended as prepared;
use pgmlcat::net::tag::client as tag;
use pgmlcat::net::{codec, messages};

fuzz_target!(|data: &[u8]| {
    let mut statements = ClientStatements::default();
    let mut pos = 0;
    while let Ok(Some(h)) = codec::header(&data[pos..], 1 << 20) {
        if data.len() - pos < h.total {
            break;
        }
        let msg = &data[pos..pos + h.total];
        match h.tag {
            tag::PARSE => {
                if let Ok((name, end)) = prepared::first_name(msg) {
                    let name = name.to_string();
                    let p = statements.define(&name, msg, end, 0);
                    assert!(prepared::first_name(&p.parse).is_ok());
                }
            }
            tag::BIND => {
                if let Ok((_, at, end)) = prepared::bind_statement(msg) {
                    let renamed = prepared::rename_bind(msg, at, end, "pgmlcat_x");
                    let len = u32::from_be_bytes([renamed[1], renamed[2], renamed[3], renamed[4]]) as usize;
                    assert_eq!(len + 1, renamed.len());
                }
            }
            tag::DESCRIBE | tag::CLOSE => {
                let _ = prepared::target(msg);
            }
            tag::QUERY => {
                let _ = codec::cstr(msg, 5);
            }
            _ => {
                let _ = messages::parse_error_fields(&msg[5..]);
                let _ = messages::parse_parameter_status(&msg[5..]);
            }
        }
        pos += h.total;
    }
});
