//! The first packets of a connection: startup packets and the SCRAM
//! exchange's client messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmlcat::net::auth::scram::{Exchange, Verifier};
use pgmlcat::net::{codec, startup};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(len)) = codec::startup_len(data) {
        if data.len() >= len {
            let _ = startup::parse(&data[..len]);
        }
    }
    // Split the input into a client-first and a client-final message.
    let verifier = Verifier::parse(
        "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$WJ3bJtqL4dymVwZ7LxUGTAQKrg8DJQ4HIpV2GP6MRUU=:Os+3ePNaBjkhUCTR9wrR/sAuU2Bv1IM3wovPaBMBTsk=",
    )
    .expect("a valid verifier");
    let cut = data.first().map_or(0, |&b| b as usize).min(data.len());
    let (first, last) = data.split_at(cut);
    if let Ok((exchange, _)) = Exchange::start(first, &verifier) {
        let _ = exchange.finish(last, &verifier);
    }
});
