//! The backend messages whose insides the proxy reads or rewrites:
//! RowDescription (kept whole as `Field`s so it can be written back),
//! DataRow (field spans, no copies) and CommandComplete. Used by the
//! cross-shard merge and by the prediction rewriter alike.

use bytes::{BufMut, BytesMut};

use super::codec::{read_i16, read_i32};
use super::messages::tagged;
use super::tag;
use crate::errors::{Error, Result};

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

fn truncated(what: &str) -> Error {
    Error::protocol(format!("malformed {what} from the server"))
}

/// `n` bytes at `*pos`, advancing it.
fn take<'a>(body: &'a [u8], pos: &mut usize, n: usize, what: &str) -> Result<&'a [u8]> {
    let end = pos.checked_add(n).ok_or_else(|| truncated(what))?;
    let s = body.get(*pos..end).ok_or_else(|| truncated(what))?;
    *pos = end;
    Ok(s)
}

/// The fields of a RowDescription body.
pub fn parse_row_description(body: &[u8]) -> Result<Vec<Field>> {
    const WHAT: &str = "RowDescription";
    let n = read_i16(body, 0).map_err(|_| truncated(WHAT))?;
    let mut pos = 2;
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
            table_oid: read_i32(f, 0)? as u32,
            attnum: read_i16(f, 4)?,
            type_oid: read_i32(f, 6)? as u32,
            typlen: read_i16(f, 10)?,
            typmod: read_i32(f, 12)?,
            format: read_i16(f, 16)?,
        });
    }
    Ok(fields)
}

pub fn write_row_description(out: &mut BytesMut, fields: &[Field]) {
    tagged(out, tag::server::ROW_DESCRIPTION, |b| {
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
pub fn data_row_spans(body: &[u8], mut span: impl FnMut(Option<(usize, usize)>)) -> Result<()> {
    const WHAT: &str = "DataRow";
    let n = read_i16(body, 0).map_err(|_| truncated(WHAT))?;
    let mut pos = 2;
    for _ in 0..n {
        let len = read_i32(body, pos).map_err(|_| truncated(WHAT))?;
        pos += 4;
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

/// The values of a DataRow body as text (None is NULL; invalid UTF-8 is
/// replaced), for merging rows of several shards.
pub fn data_row_text(body: &[u8]) -> Result<Vec<Option<String>>> {
    let mut values = Vec::new();
    data_row_spans(body, |span| {
        values.push(span.map(|(s, e)| String::from_utf8_lossy(&body[s..e]).into_owned()))
    })?;
    Ok(values)
}

/// The command tag of a CommandComplete body (`SELECT 3`, `INSERT 0 1`).
pub fn command_tag(body: &[u8]) -> &[u8] {
    body.split(|&b| b == 0).next().unwrap_or(body)
}

/// The row count at the end of a command tag (`COPY 7`, `INSERT 0 5`);
/// 0 for tags without one.
pub fn command_count(tag: &str) -> u64 {
    tag.rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
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
        assert_eq!(out[0], tag::server::ROW_DESCRIPTION);
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
        assert_eq!(
            data_row_text(&body).unwrap(),
            vec![Some("x".to_string()), None]
        );
    }

    #[test]
    fn counts_come_from_the_tag() {
        assert_eq!(command_count("COPY 7"), 7);
        assert_eq!(command_count("INSERT 0 5"), 5);
        assert_eq!(command_count("BEGIN"), 0);
    }
}
