//! The few backend messages the rewriter looks inside or writes:
//! RowDescription, DataRow, CommandComplete.

use bytes::{BufMut, BytesMut};

use crate::ml::binary::{be_i16, be_i32};
use crate::ml::error::{MlError, MlResult};

/// The message writers the rewriter shares with the rest of the proxy.
pub use crate::net::messages::{command_complete, tagged as message};

/// One field of a RowDescription.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub table_oid: u32,
    pub attnum: i16,
    pub type_oid: u32,
    pub typlen: i16,
    pub typmod: i32,
    pub format: i16,
}

fn truncated(what: &str) -> MlError {
    MlError::Internal(format!("malformed {what} from the server"))
}

fn take<'a>(body: &'a [u8], pos: &mut usize, n: usize, what: &str) -> MlResult<&'a [u8]> {
    let end = pos.checked_add(n).ok_or_else(|| truncated(what))?;
    let s = body.get(*pos..end).ok_or_else(|| truncated(what))?;
    *pos = end;
    Ok(s)
}

pub fn parse_row_description(body: &[u8]) -> MlResult<Vec<Field>> {
    const WHAT: &str = "RowDescription";
    let mut pos = 0;
    let n = be_i16(take(body, &mut pos, 2, WHAT)?);
    let mut fields = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        let rest = body.get(pos..).ok_or_else(|| truncated(WHAT))?;
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| truncated(WHAT))?;
        let name = String::from_utf8_lossy(&rest[..end]).into_owned();
        pos += end + 1;
        let f = take(body, &mut pos, 18, WHAT)?;
        fields.push(Field {
            name,
            table_oid: be_i32(&f[0..4]) as u32,
            attnum: be_i16(&f[4..6]),
            type_oid: be_i32(&f[6..10]) as u32,
            typlen: be_i16(&f[10..12]),
            typmod: be_i32(&f[12..16]),
            format: be_i16(&f[16..18]),
        });
    }
    Ok(fields)
}

pub fn write_row_description(out: &mut BytesMut, fields: &[Field]) {
    message(out, b'T', |b| {
        b.put_i16(fields.len() as i16);
        for f in fields {
            b.put_slice(f.name.as_bytes());
            b.put_u8(0);
            b.put_u32(f.table_oid);
            b.put_i16(f.attnum);
            b.put_u32(f.type_oid);
            b.put_i16(f.typlen);
            b.put_i32(f.typmod);
            b.put_i16(f.format);
        }
    });
}

/// The field spans of a DataRow body, in order: `Some((start, end))` into
/// `body`, `None` for NULL. Checked against the body's length.
pub fn data_row_spans(body: &[u8], mut span: impl FnMut(Option<(usize, usize)>)) -> MlResult<()> {
    const WHAT: &str = "DataRow";
    let mut pos = 0;
    let n = be_i16(take(body, &mut pos, 2, WHAT)?);
    for _ in 0..n {
        let len = be_i32(take(body, &mut pos, 4, WHAT)?);
        if len < 0 {
            span(None);
        } else {
            let start = pos;
            take(body, &mut pos, len as usize, WHAT)?;
            span(Some((start, pos)));
        }
    }
    Ok(())
}

/// The tag of a CommandComplete body.
pub fn command_tag(body: &[u8]) -> &[u8] {
    body.split(|&b| b == 0).next().unwrap_or(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_description_round_trips() {
        let fields = vec![Field {
            name: "a".into(),
            table_oid: 7,
            attnum: 2,
            type_oid: 23,
            typlen: 4,
            typmod: -1,
            format: 1,
        }];
        let mut out = BytesMut::new();
        write_row_description(&mut out, &fields);
        assert_eq!(out[0], b'T');
        assert_eq!(parse_row_description(&out[5..]).unwrap(), fields);
        assert!(parse_row_description(&out[5..out.len() - 1]).is_err());
    }

    #[test]
    fn data_row_with_null_and_truncation() {
        let body = [0, 2, 0, 0, 0, 1, b'x', 255, 255, 255, 255];
        let mut spans = Vec::new();
        data_row_spans(&body, |s| spans.push(s)).unwrap();
        assert_eq!(spans, vec![Some((6, 7)), None]);
        assert!(data_row_spans(&body[..5], |_| {}).is_err());
    }
}
