//! Statements pgmlcat looks into: custom commands and read/write routing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmlcat::router::{commands, rw};

fuzz_target!(|data: &[u8]| {
    if let Ok(sql) = std::str::from_utf8(data) {
        let _ = commands::parse(sql);
        let _ = rw::classify(sql);
    }
});
