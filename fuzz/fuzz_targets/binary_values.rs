//! Values pgmlcat decodes from server bytes: numbers and arrays of them in
//! binary and text form (training pulls, prediction features). Whatever the
//! bytes, the decoders return a value or an error, never panic or loop.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmlcat::ml::binary;

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let _ = binary::array(data, &mut out);
    out.clear();
    let _ = binary::text_array(data, &mut out);
    if let Some((&selector, value)) = data.split_first() {
        let oid = [
            binary::BOOL,
            binary::INT2,
            binary::INT4,
            binary::INT8,
            binary::FLOAT4,
            binary::FLOAT8,
            binary::NUMERIC,
            25,
        ][usize::from(selector) % 8];
        let _ = binary::scalar(oid, value);
    }
});
