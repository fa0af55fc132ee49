//! Turns the server's answer to the rewritten statement into the answer the
//! client expects: RowDescription entries of prediction columns retyped,
//! hidden columns dropped, features replaced by predictions, the proxy's
//! WHERE/ORDER BY/LIMIT applied and the row count fixed.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use crate::ml::error::{MlError, MlResult};

use super::eval::cmp_keys;
use super::format::{
    float4_array_binary, float4_array_text, float4_binary, put_float4_text, FLOAT4_ARRAY_OID,
    FLOAT4_OID, JSONB_OID,
};
use super::json;
use super::plan::Plan;
use super::types::{
    client_format, marker_number, Call, Col, ConstItem, Features, Func, Input, Layout, Output,
    Prediction, Predictor, Shape,
};
use crate::ml::binary;
use crate::net::messages;
use crate::net::rows::{self as wire, Field};
use crate::net::tag::server;

/// Rows per predictor call: LightGBM is much faster per batch.
pub(super) const BATCH: usize = 2048;

impl Input {
    pub(super) fn of(type_oid: u32) -> Input {
        match type_oid {
            crate::net::oid::TEXT => Input::Json,
            t => match binary::element_of(t) {
                Some(elem) => Input::Array(elem),
                None => Input::Other(t),
            },
        }
    }
}

type Row = Vec<Option<Vec<u8>>>;

/// The DataRows of one batch in one buffer: row `r`'s field `c` is
/// `spans[r * width + c]` of `bytes` (`None`: NULL). No allocation per row.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    spans: Vec<Option<(usize, usize)>>,
    width: usize,
    rows: usize,
}

impl Batch {
    fn push(&mut self, body: &[u8]) -> MlResult<()> {
        let base = self.bytes.len();
        let before = self.spans.len();
        wire::data_row_spans(body, |span| {
            self.spans.push(span.map(|(a, b)| (base + a, base + b)))
        })?;
        let width = self.spans.len() - before;
        if self.rows > 0 && width != self.width {
            return Err(MlError::Internal(
                "DataRows of one statement with different column counts".into(),
            ));
        }
        self.width = width;
        self.bytes.extend_from_slice(body);
        self.rows += 1;
        Ok(())
    }

    fn field(&self, row: usize, col: usize) -> Option<&[u8]> {
        let (a, b) = (*self.spans.get(row * self.width + col)?)?;
        self.bytes.get(a..b)
    }

    fn owned(&self, row: usize) -> Row {
        (0..self.width)
            .map(|c| self.field(row, c).map(<[u8]>::to_vec))
            .collect()
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.spans.clear();
        self.rows = 0;
    }
}

/// A row with its predictions (one slot per server column).
struct Done {
    seq: u64,
    key: Vec<Option<f32>>,
    fields: Row,
    preds: Vec<Option<Prediction>>,
}

pub struct Rewriter {
    shape: Arc<Shape>,
    predictor: Arc<dyn Predictor>,
    formats: Vec<i16>,
    /// The result formats the server was asked for (Bind's list).
    server_formats: Vec<i16>,
    layout: Option<Arc<Layout>>,
    batch: Batch,
    ranked: Vec<Done>,
    seq: u64,
    skipped: u64,
    sent: u64,
}

fn func_type(func: Func) -> (u32, i16) {
    match func.output() {
        Output::Real => (FLOAT4_OID, 4),
        Output::RealArray => (FLOAT4_ARRAY_OID, -1),
        Output::Jsonb => (JSONB_OID, -1),
    }
}

/// A prediction as one DataRow value (length prefix included).
pub(super) fn put_prediction(
    out: &mut BytesMut,
    func: Func,
    p: Option<&Prediction>,
    format: i16,
) -> MlResult<()> {
    let Some(p) = p else {
        out.put_i32(-1);
        return Ok(());
    };
    // The length goes in front once the value is written.
    let at = out.len();
    out.put_i32(0);
    match (p, func.output(), format) {
        (Prediction::Scalar(x), Output::Real, 0) => put_float4_text(*x, out),
        (Prediction::Scalar(x), Output::Real, _) => float4_binary(*x, out),
        (Prediction::Vector(xs), Output::RealArray, 0) => {
            out.put_slice(float4_array_text(xs).as_bytes())
        }
        (Prediction::Vector(xs), Output::RealArray, _) => float4_array_binary(xs, out),
        (Prediction::Json(text), Output::Jsonb, format) => {
            // jsonb's binary form is a version byte, then the text.
            if format != 0 {
                out.put_u8(1);
            }
            out.put_slice(text.as_bytes());
        }
        _ => {
            return Err(MlError::Internal(format!(
                "the model returned the wrong shape of result for pgml.{}",
                func.name()
            )))
        }
    }
    let len = (out.len() - at - 4) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

fn scalar(p: Option<&Prediction>) -> Option<f32> {
    match p {
        Some(Prediction::Scalar(x)) => Some(*x),
        _ => None,
    }
}

impl Plan {
    /// The rewriter of one execution: `result_formats` are the client's,
    /// `server_formats` what the server's Bind asked for (empty for the
    /// simple protocol: text).
    pub fn rewriter(
        &self,
        predictor: Arc<dyn Predictor>,
        result_formats: &[i16],
        server_formats: &[i16],
    ) -> Rewriter {
        Rewriter {
            shape: self.shape.clone(),
            predictor,
            formats: result_formats.to_vec(),
            server_formats: server_formats.to_vec(),
            layout: self.shape.layout.lock().clone(),
            batch: Batch::default(),
            ranked: Vec::new(),
            seq: 0,
            skipped: 0,
            sent: 0,
        }
    }

    /// The client's RowDescription for `result_formats`, from the server's
    /// description seen earlier; false when there is none yet.
    pub(super) fn describe_cached(
        &self,
        predictor: Arc<dyn Predictor>,
        result_formats: &[i16],
        out: &mut BytesMut,
    ) -> MlResult<bool> {
        let Some(body) = self.shape.description.lock().clone() else {
            return Ok(false);
        };
        self.rewriter(predictor, result_formats, &[]).on_message(
            server::ROW_DESCRIPTION,
            &body,
            out,
        )?;
        Ok(true)
    }

    /// For `server_sql == None`: RowDescription, DataRow(s) and
    /// CommandComplete, as the simple protocol answers.
    pub fn answer_constant(&self, predictor: &dyn Predictor, out: &mut BytesMut) -> MlResult<()> {
        self.describe_constant(&[], out)?;
        self.execute_constant(predictor, &[], out)
    }

    /// The RowDescription of a constant statement (Describe in the
    /// extended protocol; formats as in `rewriter`).
    pub(super) fn describe_constant(
        &self,
        result_formats: &[i16],
        out: &mut BytesMut,
    ) -> MlResult<()> {
        let items = self.constant_items()?;
        let fields: Vec<Field> = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let func = self
                    .shape
                    .calls
                    .get(item.call)
                    .map_or(Func::Predict, |c| c.func);
                let (type_oid, typlen) = func_type(func);
                Field {
                    name: item.name.clone(),
                    table_oid: 0,
                    attnum: 0,
                    type_oid,
                    typlen,
                    typmod: -1,
                    format: client_format(result_formats, i),
                }
            })
            .collect();
        wire::write_row_description(out, &fields);
        Ok(())
    }

    /// The DataRow(s) and CommandComplete of a constant statement.
    pub(super) fn execute_constant(
        &self,
        predictor: &dyn Predictor,
        result_formats: &[i16],
        out: &mut BytesMut,
    ) -> MlResult<()> {
        let items = self.constant_items()?;
        let mut values = Vec::with_capacity(items.len());
        for item in items {
            let call = self
                .shape
                .calls
                .get(item.call)
                .ok_or_else(|| MlError::Internal("constant item without its call".into()))?;
            let value = match &item.input {
                None => None,
                Some(f) => {
                    let mut res = predictor.predict(item.call, std::slice::from_ref(f))?;
                    if res.len() != 1 {
                        return Err(MlError::Internal("the model returned no prediction".into()));
                    }
                    res.pop().flatten()
                }
            };
            values.push((call.func, value));
        }
        // predict_batch is set-returning: one row per prediction.
        if let [(Func::PredictBatch, value)] = values.as_slice() {
            let preds: Vec<f32> = match value {
                None | Some(Prediction::Json(_)) => Vec::new(),
                Some(Prediction::Vector(v)) => v.clone(),
                Some(Prediction::Scalar(x)) => vec![*x],
            };
            for x in &preds {
                let p = Prediction::Scalar(*x);
                let mut err = Ok(());
                messages::tagged(out, server::DATA_ROW, |b| {
                    b.put_i16(1);
                    err = put_prediction(
                        b,
                        Func::Predict,
                        Some(&p),
                        client_format(result_formats, 0),
                    );
                });
                err?;
            }
            messages::command_complete(out, &format!("SELECT {}", preds.len()));
            return Ok(());
        }
        let mut err = Ok(());
        messages::tagged(out, server::DATA_ROW, |b| {
            b.put_i16(values.len() as i16);
            for (i, (func, value)) in values.iter().enumerate() {
                if err.is_ok() {
                    err =
                        put_prediction(b, *func, value.as_ref(), client_format(result_formats, i));
                }
            }
        });
        err?;
        messages::command_complete(out, "SELECT 1");
        Ok(())
    }

    fn constant_items(&self) -> MlResult<&[ConstItem]> {
        self.shape
            .constant
            .as_deref()
            .ok_or_else(|| MlError::Internal("the statement needs the server".into()))
    }
}

impl Rewriter {
    /// Feeds one complete backend message (tag + body without the 5-byte
    /// header) of the server's answer to `server_sql`; appends the complete
    /// messages the client must get to `out`. After an error the session
    /// must send its own ErrorResponse and drain the server's answer.
    pub fn on_message(&mut self, tag: u8, body: &[u8], out: &mut BytesMut) -> MlResult<()> {
        match tag {
            server::ROW_DESCRIPTION => self.row_description(body, out),
            server::DATA_ROW => {
                if self.layout.is_none() {
                    self.layout = self.shape.layout.lock().clone();
                }
                if self.layout.is_none() {
                    return Err(MlError::Internal(
                        "a DataRow arrived before any RowDescription of this statement; Describe it first".into(),
                    ));
                }
                self.batch.push(body)?;
                if self.batch.rows >= BATCH {
                    self.process_batch(out)?;
                }
                Ok(())
            }
            server::COMMAND_COMPLETE => {
                self.process_batch(out)?;
                self.emit_ranked(out)?;
                if wire::command_tag(body).starts_with(b"SELECT ") {
                    messages::command_complete(out, &format!("SELECT {}", self.sent));
                } else {
                    messages::message(out, tag, body);
                }
                self.sent = 0;
                Ok(())
            }
            server::PORTAL_SUSPENDED => {
                if !self.shape.order.is_empty() {
                    return Err(MlError::Unsupported(
                        "fetching a few rows at a time (Execute with a row limit) from a statement ordered \
                         by pgml.predict is not supported"
                            .into(),
                    ));
                }
                self.process_batch(out)?;
                messages::message(out, tag, body);
                self.sent = 0;
                Ok(())
            }
            server::ERROR_RESPONSE => {
                // What streamed before the error reaches the client, as it
                // would from Postgres; a pending sort never completes.
                if self.shape.order.is_empty() {
                    self.process_batch(out)?;
                }
                self.ranked.clear();
                self.batch.clear();
                messages::message(out, tag, body);
                Ok(())
            }
            _ => {
                messages::message(out, tag, body);
                Ok(())
            }
        }
    }

    fn row_description(&mut self, body: &[u8], out: &mut BytesMut) -> MlResult<()> {
        let fields = wire::parse_row_description(body)?;
        {
            let mut cached = self.shape.description.lock();
            if cached.is_none() {
                *cached = Some(body.to_vec());
            }
        }
        let mut cols = Vec::with_capacity(fields.len());
        let mut marker_col = HashMap::new();
        let mut client_fields = Vec::with_capacity(fields.len());
        for (i, mut f) in fields.into_iter().enumerate() {
            let Some(k) = marker_number(&f.name) else {
                // The client's format, whatever this description was for.
                f.format = client_format(&self.formats, client_fields.len());
                cols.push(Col::Pass {
                    client: client_fields.len(),
                });
                client_fields.push(f);
                continue;
            };
            let input = Input::of(f.type_oid);
            let marker = self.shape.markers.get(k).ok_or_else(|| {
                MlError::Internal(format!("unknown prediction column {}", f.name))
            })?;
            let func = self
                .shape
                .calls
                .get(marker.call)
                .map(|c| c.func)
                .ok_or_else(|| MlError::Internal("prediction column without its call".into()))?;
            marker_col.entry(k).or_insert(i);
            match &marker.name {
                None => cols.push(Col::Hidden { marker: k, input }),
                Some(name) => {
                    cols.push(Col::Pred {
                        marker: k,
                        client: client_fields.len(),
                        input,
                    });
                    let (type_oid, typlen) = func_type(func);
                    client_fields.push(Field {
                        name: name.clone(),
                        table_oid: 0,
                        attnum: 0,
                        type_oid,
                        typlen,
                        typmod: -1,
                        format: client_format(&self.formats, client_fields.len()),
                    });
                }
            }
        }
        let layout = Arc::new(Layout { cols, marker_col });
        *self.shape.layout.lock() = Some(layout.clone());
        self.layout = Some(layout);
        wire::write_row_description(out, &client_fields);
        Ok(())
    }

    /// The features in one value of replacement column `ci`.
    fn features(&self, input: Input, ci: usize, value: &[u8], call: &Call) -> MlResult<Features> {
        let binary = client_format(&self.server_formats, ci) == 1;
        decode_features(input, binary, value, call)
    }

    fn limit_reached(&self) -> bool {
        self.shape.limit.is_some_and(|l| self.sent >= l)
    }

    fn process_batch(&mut self, out: &mut BytesMut) -> MlResult<()> {
        if self.batch.rows == 0 {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.batch);
        let result = self.predict_batch(&rows, out);
        // The buffers are kept for the next batch.
        self.batch = rows;
        self.batch.clear();
        result
    }

    fn predict_batch(&mut self, rows: &Batch, out: &mut BytesMut) -> MlResult<()> {
        if self.shape.order.is_empty() && self.limit_reached() {
            return Ok(());
        }
        let layout = self
            .layout
            .clone()
            .ok_or_else(|| MlError::Internal("rows without a RowDescription".into()))?;
        // Column-major: one vector of predictions per replacement column.
        let mut preds: Vec<Vec<Option<Prediction>>> = vec![Vec::new(); layout.cols.len()];
        for (ci, col) in layout.cols.iter().enumerate() {
            let (marker, input) = match col {
                Col::Pred { marker, input, .. } | Col::Hidden { marker, input } => {
                    (*marker, *input)
                }
                Col::Pass { .. } => continue,
            };
            let call_no = self
                .shape
                .markers
                .get(marker)
                .map_or(usize::MAX, |m| m.call);
            let call =
                self.shape.calls.get(call_no).ok_or_else(|| {
                    MlError::Internal("prediction column without its call".into())
                })?;
            let mut which = Vec::new();
            let mut inputs = Vec::new();
            for ri in 0..rows.rows {
                if let Some(value) = rows.field(ri, ci) {
                    inputs.push(self.features(input, ci, value, call)?);
                    which.push(ri);
                }
            }
            if inputs.is_empty() {
                continue;
            }
            let results = self.predictor.predict(call_no, &inputs)?;
            if results.len() != inputs.len() {
                return Err(MlError::Internal(format!(
                    "the model returned {} predictions for {} rows",
                    results.len(),
                    inputs.len()
                )));
            }
            let mut column = vec![None; rows.rows];
            for (ri, p) in which.into_iter().zip(results) {
                column[ri] = p;
            }
            preds[ci] = column;
        }
        for ri in 0..rows.rows {
            let pred = |ci: usize| {
                preds
                    .get(ci)
                    .and_then(|c| c.get(ri))
                    .and_then(|p| p.as_ref())
            };
            let value = |m: usize| layout.marker_col.get(&m).and_then(|&c| scalar(pred(c)));
            if let Some(filter) = &self.shape.filter {
                if filter.eval(&|m| value(m).map(f64::from)) != Some(true) {
                    continue;
                }
            }
            self.seq += 1;
            if self.shape.order.is_empty() {
                self.emit(&layout, |ci| rows.field(ri, ci), pred, out)?;
            } else {
                let key = self.shape.order.iter().map(|k| value(k.marker)).collect();
                self.ranked.push(Done {
                    seq: self.seq,
                    key,
                    preds: (0..layout.cols.len()).map(|ci| pred(ci).cloned()).collect(),
                    fields: rows.owned(ri),
                });
                self.prune();
            }
        }
        Ok(())
    }

    /// Keeps only the best `offset + limit` rows once enough accumulate:
    /// a bounded top-k, O(n) per pruning.
    fn prune(&mut self) {
        let Some(limit) = self.shape.limit else {
            return;
        };
        let k = usize::try_from(limit.saturating_add(self.shape.offset)).unwrap_or(usize::MAX);
        if self.ranked.len() <= k.saturating_mul(2).max(BATCH) {
            return;
        }
        let order = &self.shape.order;
        let cmp = |a: &Done, b: &Done| cmp_keys(order, &a.key, &b.key).then(a.seq.cmp(&b.seq));
        if k == 0 {
            self.ranked.clear();
            return;
        }
        self.ranked.select_nth_unstable_by(k - 1, cmp);
        self.ranked.truncate(k);
    }

    fn emit_ranked(&mut self, out: &mut BytesMut) -> MlResult<()> {
        if self.ranked.is_empty() {
            return Ok(());
        }
        let mut ranked = std::mem::take(&mut self.ranked);
        let order = &self.shape.order;
        ranked.sort_by(|a, b| cmp_keys(order, &a.key, &b.key).then(a.seq.cmp(&b.seq)));
        let layout = self
            .layout
            .clone()
            .ok_or_else(|| MlError::Internal("rows without a RowDescription".into()))?;
        for done in &ranked {
            let pred = |ci: usize| done.preds.get(ci).and_then(|p| p.as_ref());
            let field = |ci: usize| done.fields.get(ci).and_then(|f| f.as_deref());
            self.emit(&layout, field, pred, out)?;
        }
        Ok(())
    }

    /// Sends one row, after the proxy's OFFSET and within its LIMIT.
    fn emit<'f, 'p>(
        &mut self,
        layout: &Layout,
        field: impl Fn(usize) -> Option<&'f [u8]>,
        pred: impl Fn(usize) -> Option<&'p Prediction>,
        out: &mut BytesMut,
    ) -> MlResult<()> {
        if self.skipped < self.shape.offset {
            self.skipped += 1;
            return Ok(());
        }
        if self.limit_reached() {
            return Ok(());
        }
        let visible = layout
            .cols
            .iter()
            .filter(|c| !matches!(c, Col::Hidden { .. }))
            .count();
        let mut err = Ok(());
        messages::tagged(out, server::DATA_ROW, |b| {
            b.put_i16(visible as i16);
            for (ci, col) in layout.cols.iter().enumerate() {
                match col {
                    Col::Hidden { .. } => {}
                    Col::Pass { .. } => match field(ci) {
                        Some(v) => {
                            b.put_i32(v.len() as i32);
                            b.put_slice(v);
                        }
                        _ => b.put_i32(-1),
                    },
                    Col::Pred { marker, client, .. } => {
                        let func = self
                            .shape
                            .markers
                            .get(*marker)
                            .and_then(|m| self.shape.calls.get(m.call))
                            .map_or(Func::Predict, |c| c.func);
                        if err.is_ok() {
                            err = put_prediction(
                                b,
                                func,
                                pred(ci),
                                client_format(&self.formats, *client),
                            );
                        }
                    }
                }
            }
        });
        err?;
        self.sent += 1;
        Ok(())
    }
}

/// The features in one value the server gave for `call` (an array of
/// numbers in text or binary, or a row as JSON text).
pub(super) fn decode_features(
    input: Input,
    binary: bool,
    value: &[u8],
    call: &Call,
) -> MlResult<Features> {
    let func = call.func.name();
    match input {
        Input::Json if call.grouped => json::decode_grouped(value, call.input, func),
        Input::Json => json::decode(value, call.input, func),
        Input::Array(elem) => {
            let mut dense = Vec::new();
            let mut null = None;
            let push = |v: Option<f64>| match v {
                Some(v) => dense.push(v),
                None => {
                    null.get_or_insert(dense.len());
                }
            };
            if binary {
                binary::array_each(value, push)?;
            } else {
                binary::text_array_each(value, elem, push)?;
            }
            match null {
                Some(i) => Err(json::null_feature(i, func)),
                None => Ok(Features::Array(dense)),
            }
        }
        Input::Other(oid) => Err(MlError::DatatypeMismatch(format!(
            "pgml.{func}: the features must be an array of numbers or booleans, or a row; \
             the server gave type oid {oid}"
        ))),
    }
}
