//! Statements pgmlcat looks into: custom commands, read/write routing, pgml
//! function calls, the constants of a simple-protocol prediction turned
//! into parameters, and the pgml.predict rewrite (plan, then the rewriter
//! on a RowDescription and DataRow built from the rewritten statement, the
//! value read as JSON text, as a binary array and as a text array).
#![no_main]

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use libfuzzer_sys::fuzz_target;
use pgmlcat::ml::predict::{self, Features, Prediction, Predictor};
use pgmlcat::ml::{call, MlResult};
use pgmlcat::net::tag::server as tag;
use pgmlcat::router::{commands, rw};

struct Sum;

impl Predictor for Sum {
    fn predict(&self, _call: usize, inputs: &[Features]) -> MlResult<Vec<Option<Prediction>>> {
        Ok(inputs
            .iter()
            .map(|f| match f {
                Features::Array(v) => Some(Prediction::Scalar(v.iter().sum::<f64>() as f32)),
                Features::Row(v) => Some(Prediction::Scalar(v.len() as f32)),
                Features::Grouped(..) => None,
            })
            .collect())
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let _ = commands::parse(sql);
    let _ = rw::classify(sql);
    let _ = call::parse_calls(sql);
    if let Some(n) = predict::normalize::normalize(sql) {
        let _ = predict::normalize::parameterize(&n.key, &n.literals);
        let _ = predict::normalize::restore(&n.key, &n.literals);
    }
    let Ok(Some(plan)) = predict::plan(sql) else {
        return;
    };
    let mut out = BytesMut::new();
    if plan.server_sql.is_none() {
        let _ = plan.answer_constant(&Sum, &mut out);
        return;
    }
    // A one-column answer whose value is fuzz input too: the rewriter must
    // reject what it cannot decode, never panic. text: JSON features;
    // float8[] in binary and in text: array features.
    for (type_oid, format) in [(25u32, 0i16), (1022, 1), (1022, 0)] {
        let mut rewriter = plan.rewriter(Arc::new(Sum), &[], &[format]);
        let mut row_description = BytesMut::new();
        row_description.put_i16(1);
        row_description.put_slice(b"__pgml_0\0");
        row_description.put_i32(0);
        row_description.put_i16(0);
        row_description.put_u32(type_oid);
        row_description.put_i16(-1);
        row_description.put_i32(-1);
        row_description.put_i16(format);
        let _ = rewriter.on_message(tag::ROW_DESCRIPTION, &row_description, &mut out);
        let mut data_row = BytesMut::new();
        data_row.put_i16(1);
        data_row.put_i32(data.len() as i32);
        data_row.put_slice(data);
        let _ = rewriter.on_message(tag::DATA_ROW, &data_row, &mut out);
        let _ = rewriter.on_message(tag::COMMAND_COMPLETE, b"SELECT 1\0", &mut out);
    }
});
