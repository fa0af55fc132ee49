//! The memos of the general method (`lookup`): one temporary table per
//! call site of (features, prediction), filled by binary COPY. The
//! features go back byte for byte as the server sent them, so the key the
//! statement compares with is the server's own value, never a re-encoding.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use crate::ml::error::{MlError, MlResult};

use super::lookup::{memo_table, value_type};
use super::rows::{decode_features, put_prediction, BATCH};
use super::types::{Input, Predictor};
use super::Call;
use crate::net::oid;

/// The helper functions a lookup calls: `miss` when the memo gives no
/// value for the features (NULL features are NULL, as the functions are
/// STRICT; so is a prediction the memo holds as NULL, of a group with no
/// model: looked for in table `t` only then), `fail` for features whose
/// prediction fails, with the error a direct call would give (none: the
/// prediction is NULL). Session-lived, replaced on each use.
pub const FUNCTIONS: &str = "\
CREATE OR REPLACE FUNCTION pg_temp.__pgml_miss(k anyelement, t text, r anycompatible) RETURNS anycompatible \
LANGUAGE plpgsql AS $pgml$ DECLARE present boolean; BEGIN \
IF k IS NULL THEN RETURN NULL; END IF; \
EXECUTE format('SELECT EXISTS (SELECT FROM %s WHERE __pgml_k = $1)', t) USING k INTO present; \
IF present THEN RETURN NULL; END IF; \
RAISE EXCEPTION USING ERRCODE = '40001', \
MESSAGE = 'pgml.predict: the features ' || left(k::text, 200) || ' changed while the statement ran', \
HINT = 'Another session changed the rows between the collection of their features and their use; run the statement again.'; \
END $pgml$; \
CREATE OR REPLACE FUNCTION pg_temp.__pgml_fail(c text, e text, r anycompatible) RETURNS anycompatible \
LANGUAGE plpgsql AS $pgml$ BEGIN \
IF c IS NULL THEN RETURN NULL; END IF; \
RAISE EXCEPTION USING ERRCODE = c, MESSAGE = e; END $pgml$";

/// `CREATE TEMP TABLE` of site `i`'s memo, its key of type `key_type`.
pub fn create_sql(i: usize, key_type: &str, call: &Call) -> String {
    format!(
        "CREATE TEMP TABLE {} (__pgml_k {key_type}, __pgml_v {}, __pgml_c text, __pgml_e text) \
         ON COMMIT DROP",
        memo_table(i),
        value_type(call.func)
    )
}

pub fn copy_sql(i: usize) -> String {
    format!("COPY {} FROM STDIN (FORMAT binary)", memo_table(i))
}

pub fn index_sql(i: usize) -> String {
    // A hash index: built in a quarter of a btree's time on a million
    // array keys, and probed faster for equality, all a lookup does.
    format!("CREATE INDEX ON {} USING hash (__pgml_k)", memo_table(i))
}

pub fn drop_sql(sites: usize) -> String {
    let tables: Vec<String> = (0..sites).map(memo_table).collect();
    format!("DROP TABLE IF EXISTS {}", tables.join(", "))
}

/// The SQL name of a features type the memo stores, for its key column.
pub fn type_name(type_oid: u32) -> Option<&'static str> {
    Some(match type_oid {
        oid::TEXT => "text",
        1000 => "boolean[]",
        1005 => "smallint[]",
        1007 => "integer[]",
        1016 => "bigint[]",
        1021 => "real[]",
        1022 => "double precision[]",
        1231 => "numeric[]",
        _ => return None,
    })
}

/// What a key costs beside its bytes (its Vec and its hash slot).
const KEY_OVERHEAD: usize = 48;

/// Keys per prediction job: large enough that LightGBM batches well,
/// small enough that predicting overlaps the collection's rows arriving.
const JOB: usize = 4 * BATCH;

/// The memo of one site as its collection's rows arrive: the distinct
/// keys (bytewise) go in jobs of `JOB` to the blocking pool, which
/// predicts them while the server is still sending (the two cores work at
/// once), each job making its rows of the binary COPY payload.
pub struct Collector {
    seen: std::collections::HashSet<Vec<u8>>,
    batch: Vec<Vec<u8>>,
    jobs: Vec<tokio::task::JoinHandle<MlResult<BytesMut>>>,
    /// Bytes held, against `max` (`[ml] max_memory_mb`): past it nothing
    /// more is kept and the statement fails.
    bytes: usize,
    max: usize,
    predictor: Arc<dyn Predictor>,
    call_index: usize,
    call: Call,
    type_oid: u32,
}

impl Collector {
    pub fn new(predictor: Arc<dyn Predictor>, call_index: usize, call: Call, max: usize) -> Self {
        Collector {
            seen: Default::default(),
            batch: Vec::new(),
            jobs: Vec::new(),
            bytes: 0,
            max,
            predictor,
            call_index,
            call,
            type_oid: 0,
        }
    }

    /// A key value of type `type_oid` from the collection (NULL keys are
    /// not kept: NULL features give NULL without a lookup).
    pub fn push(&mut self, type_oid: u32, value: &[u8]) {
        if self.bytes > self.max || self.seen.contains(value) {
            return;
        }
        self.type_oid = type_oid;
        // Held twice until its job is done: in `seen` and in the batch.
        self.bytes += 2 * (value.len() + KEY_OVERHEAD);
        self.seen.insert(value.to_vec());
        self.batch.push(value.to_vec());
        if self.batch.len() >= JOB {
            self.spawn();
        }
    }

    /// Whether the keys went past the cap.
    pub fn over(&self) -> bool {
        self.bytes > self.max
    }

    fn spawn(&mut self) {
        let keys = std::mem::take(&mut self.batch);
        let (predictor, call) = (self.predictor.clone(), self.call.clone());
        let (index, type_oid) = (self.call_index, self.type_oid);
        self.jobs.push(tokio::task::spawn_blocking(move || {
            rows(predictor.as_ref(), index, &call, type_oid, &keys)
        }));
    }

    /// The binary COPY payload of the memo; None when there are no keys.
    pub async fn finish(mut self) -> MlResult<Option<BytesMut>> {
        if !self.batch.is_empty() {
            self.spawn();
        }
        if self.jobs.is_empty() {
            return Ok(None);
        }
        let mut out = BytesMut::with_capacity(32);
        out.put_slice(b"PGCOPY\n\xff\r\n\0");
        out.put_i32(0);
        out.put_i32(0);
        for job in self.jobs {
            let part = job
                .await
                .map_err(|e| MlError::Internal(format!("a prediction job failed: {e}")))??;
            out.extend_from_slice(&part);
        }
        out.put_i16(-1);
        Ok(Some(out))
    }
}

/// The COPY rows of `keys`: each with its prediction, or with its error
/// when its features cannot be read (a NULL element); an error of the
/// model itself fails the statement.
fn rows(
    predictor: &dyn Predictor,
    call_index: usize,
    call: &Call,
    type_oid: u32,
    keys: &[Vec<u8>],
) -> MlResult<BytesMut> {
    let input = Input::of(type_oid);
    let mut out = BytesMut::with_capacity(keys.len() * 64);
    for chunk in keys.chunks(BATCH) {
        let mut good = Vec::with_capacity(chunk.len());
        let mut unreadable = Vec::with_capacity(chunk.len());
        for key in chunk {
            match decode_features(input, true, key, call) {
                Ok(f) => {
                    good.push(f);
                    unreadable.push(None);
                }
                Err(e) => unreadable.push(Some(e)),
            }
        }
        let predicted = predictor.predict(call_index, &good)?;
        if predicted.len() != good.len() {
            return Err(MlError::Internal(format!(
                "the model returned {} predictions for {} rows",
                predicted.len(),
                good.len()
            )));
        }
        let mut predicted = predicted.into_iter();
        for (key, error) in chunk.iter().zip(unreadable) {
            out.put_i16(4);
            put_field(&mut out, Some(key));
            match (error, predicted.next()) {
                (None, p) => {
                    put_prediction(&mut out, call.func, p.flatten().as_ref(), 1)?;
                    put_field(&mut out, None);
                    put_field(&mut out, None);
                }
                (Some(e), _) => {
                    put_field(&mut out, None);
                    put_field(&mut out, Some(e.sqlstate().as_bytes()));
                    put_field(&mut out, Some(e.to_string().as_bytes()));
                }
            }
        }
    }
    Ok(out)
}

fn put_field(out: &mut BytesMut, value: Option<&[u8]>) {
    match value {
        Some(v) => {
            out.put_i32(v.len() as i32);
            out.put_slice(v);
        }
        None => out.put_i32(-1),
    }
}
