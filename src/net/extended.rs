//! The extended-protocol messages whose insides the proxy reads or
//! rewrites: a Parse's statement name, a Bind's statement, parameters and
//! formats, a Describe's or Close's target; and the renamed Parse, Bind
//! and Describe the pooler sends in the client's stead. `msg` is always a
//! whole message, its 5-byte header included.

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::{cstr, read_i16, read_i32};
use super::tag::client;
use crate::errors::{Error, Result};

/// A Parse under statement name `name`; `rest` is everything a Parse
/// holds after the name (query, parameter types).
pub fn parse_named(name: &str, rest: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(6 + name.len() + rest.len());
    out.put_u8(client::PARSE);
    out.put_i32((4 + name.len() + 1 + rest.len()) as i32);
    out.put_slice(name.as_bytes());
    out.put_u8(0);
    out.put_slice(rest);
    out.freeze()
}

/// A Parse's statement name, query and declared parameter types (0:
/// unspecified, as the client sent them).
pub fn parse_parts(msg: &[u8]) -> Result<(&str, &str, Vec<u32>)> {
    let (name, at) = cstr(msg, 5)?;
    let (sql, mut pos) = cstr(msg, at)?;
    // A Parse may end after its query (no count): no types declared.
    let n = if pos + 2 <= msg.len() {
        read_i16(msg, pos)?.max(0) as usize
    } else {
        0
    };
    pos += 2;
    let mut types = Vec::with_capacity(n);
    for _ in 0..n {
        types.push(read_i32(msg, pos)? as u32);
        pos += 4;
    }
    Ok((name, sql, types))
}

/// The first string of a message body (Parse: statement name), with the
/// offset in `msg` just after its NUL. `msg` includes the 5-byte header.
pub fn first_name(msg: &[u8]) -> Result<(&str, usize)> {
    cstr(msg, 5)
}

/// Bind: returns (statement name, offset of the statement name, offset after it).
pub fn bind_statement(msg: &[u8]) -> Result<(&str, usize, usize)> {
    let (_portal, at) = cstr(msg, 5)?;
    let (stmt, end) = cstr(msg, at)?;
    Ok((stmt, at, end))
}

/// One Bind parameter: its bytes (None for NULL) and whether it is binary.
pub type BindParam<'a> = (Option<&'a [u8]>, bool);

/// A Bind's parameter values.
pub fn bind_params(msg: &[u8]) -> Result<Vec<BindParam<'_>>> {
    let (_, _, mut pos) = bind_statement(msg)?;
    let n_formats = read_i16(msg, pos)?.max(0) as usize;
    pos += 2;
    let mut formats = Vec::with_capacity(n_formats);
    for _ in 0..n_formats {
        formats.push(read_i16(msg, pos)? == 1);
        pos += 2;
    }
    let n_params = read_i16(msg, pos)?.max(0) as usize;
    pos += 2;
    let mut params = Vec::with_capacity(n_params);
    for i in 0..n_params {
        let len = read_i32(msg, pos)?;
        pos += 4;
        let binary = match formats.len() {
            0 => false,
            1 => formats[0],
            _ => formats.get(i).copied().unwrap_or(false),
        };
        if len < 0 {
            params.push((None, binary));
            continue;
        }
        let end = pos + len as usize;
        let value = msg
            .get(pos..end)
            .ok_or_else(|| Error::protocol("Bind parameter truncated"))?;
        params.push((Some(value), binary));
        pos = end;
    }
    Ok(params)
}

/// (parameter formats, parameter values, result formats) of a Bind.
pub type BindParts = (Vec<i16>, Vec<Option<Vec<u8>>>, Vec<i16>);

pub fn bind_parts(msg: &[u8]) -> Result<BindParts> {
    let (_, _, mut pos) = bind_statement(msg)?;
    let read_formats = |pos: &mut usize| -> Result<Vec<i16>> {
        let n = read_i16(msg, *pos)?.max(0) as usize;
        *pos += 2;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(read_i16(msg, *pos)?);
            *pos += 2;
        }
        Ok(v)
    };
    let formats = read_formats(&mut pos)?;
    let n = read_i16(msg, pos)?.max(0) as usize;
    pos += 2;
    let mut params = Vec::with_capacity(n);
    for _ in 0..n {
        let len = read_i32(msg, pos)?;
        pos += 4;
        if len < 0 {
            params.push(None);
            continue;
        }
        let end = pos + len as usize;
        params.push(Some(
            msg.get(pos..end)
                .ok_or_else(|| Error::protocol("Bind parameter truncated"))?
                .to_vec(),
        ));
        pos = end;
    }
    let results = read_formats(&mut pos)?;
    Ok((formats, params, results))
}

/// Rewrites a Bind so it names `global` instead of the client's statement.
pub fn rename_bind(msg: &[u8], at: usize, end: usize, global: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(msg.len() + global.len());
    out.put_u8(client::BIND);
    out.put_i32((msg.len() - 1 - (end - at) + global.len() + 1) as i32);
    out.put_slice(&msg[5..at]);
    out.put_slice(global.as_bytes());
    out.put_u8(0);
    out.put_slice(&msg[end..]);
    out.freeze()
}

/// Describe and Close: (kind 'S' or 'P', name).
pub fn target(msg: &[u8]) -> Result<(u8, &str)> {
    let kind = *msg
        .get(5)
        .ok_or_else(|| Error::protocol("Describe/Close without a target"))?;
    let (name, _) = cstr(msg, 6)?;
    Ok((kind, name))
}

/// What a statement returns, as a number: a hash of the RowDescription's
/// column count and each column's name, type and type modifier (what
/// Postgres compares before it says "cached plan must not change result
/// type"; not the formats, which each Bind chooses), or a constant for
/// NoData. Two copies of a statement with different shapes return
/// different rows.
pub fn result_shape(kind: u8, body: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    if kind != crate::net::tag::server::ROW_DESCRIPTION {
        return 1;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let columns = body
        .get(..2)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    columns.hash(&mut h);
    let mut at = 2;
    for _ in 0..columns {
        let Some(end) = body.get(at..).and_then(|b| memchr::memchr(0, b)) else {
            break;
        };
        body[at..at + end].hash(&mut h);
        // After the name: table oid (4), attnum (2), type oid (4), type
        // size (2), type modifier (4), format (2).
        let fixed = at + end + 1;
        body.get(fixed + 6..fixed + 10).hash(&mut h);
        body.get(fixed + 12..fixed + 16).hash(&mut h);
        at = fixed + 18;
    }
    h.finish() | 2
}

/// Describe of a statement under its server name.
pub fn describe_statement(global: &str) -> Bytes {
    statement_message(client::DESCRIBE, global)
}

/// Close of a statement under its server name.
pub fn close_statement(global: &str) -> Bytes {
    statement_message(client::CLOSE, global)
}

/// Describe or Close (`kind`) of a statement by name.
fn statement_message(kind: u8, global: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(7 + global.len());
    out.put_u8(kind);
    out.put_i32((4 + 1 + global.len() + 1) as i32);
    out.put_u8(client::STATEMENT);
    out.put_slice(global.as_bytes());
    out.put_u8(0);
    out.freeze()
}

/// Bind of the unnamed portal to `statement` with the parameters (text or
/// binary per `param_formats`; None is NULL) and the result formats the
/// server must use.
pub fn bind_portal<'a>(
    statement: &str,
    param_formats: &[i16],
    params: impl IntoIterator<Item = Option<&'a [u8]>>,
    result_formats: &[i16],
    out: &mut BytesMut,
) -> Result<()> {
    postgres_protocol::message::frontend::bind(
        "",
        statement,
        param_formats.iter().copied(),
        params,
        |v, buf| match v {
            Some(b) => {
                buf.extend_from_slice(b);
                Ok(postgres_protocol::IsNull::No)
            }
            None => Ok(postgres_protocol::IsNull::Yes),
        },
        result_formats.iter().copied(),
        out,
    )
    .map_err(|_| Error::protocol("could not encode Bind"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::message::frontend;

    #[test]
    fn bind_rename_keeps_the_rest() {
        let mut msg = BytesMut::new();
        frontend::bind(
            "portal",
            "s1",
            Some(1),
            [7i32],
            |v, buf| {
                buf.put_i32(v);
                Ok::<_, Box<dyn std::error::Error + Sync + Send>>(postgres_protocol::IsNull::No)
            },
            Some(1),
            &mut msg,
        )
        .map_err(|_| "bind")
        .unwrap();
        let (stmt, at, end) = bind_statement(&msg).unwrap();
        assert_eq!(stmt, "s1");
        let renamed = rename_bind(&msg, at, end, "pgmlcat_x");
        let params = bind_params(&msg).unwrap();
        assert_eq!(params, vec![(Some(&7i32.to_be_bytes()[..]), true)]);
        let (stmt2, _, end2) = bind_statement(&renamed).unwrap();
        assert_eq!(stmt2, "pgmlcat_x");
        assert_eq!(&renamed[end2..], &msg[end..]);
        let len = u32::from_be_bytes(renamed[1..5].try_into().unwrap()) as usize;
        assert_eq!(len + 1, renamed.len());
    }
}
