//! Messages pgmlcat itself writes to clients (the backend side of the
//! protocol), and small readers for the messages it must look inside.
//! Messages to servers are written with `postgres_protocol::message::frontend`.

use bytes::{BufMut, BytesMut};

use super::tag::server as tag;
use crate::errors::{Error, ErrorFields, Severity};
use crate::net::codec::{cstr, read_i32};

/// Transaction status carried by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    Idle,
    InTransaction,
    Failed,
}

impl TxStatus {
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'I' => Some(TxStatus::Idle),
            tag::ROW_DESCRIPTION => Some(TxStatus::InTransaction),
            b'E' => Some(TxStatus::Failed),
            _ => None,
        }
    }

    pub fn as_byte(self) -> u8 {
        match self {
            TxStatus::Idle => b'I',
            TxStatus::InTransaction => tag::ROW_DESCRIPTION,
            TxStatus::Failed => b'E',
        }
    }
}

/// Writes a complete message: tag, length, then what `body` puts.
pub fn tagged(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_i32(0);
    body(buf);
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Writes a complete message whose body is already in hand (a server's
/// message passed on, or one kept from earlier).
pub fn message(buf: &mut BytesMut, tag: u8, body: &[u8]) {
    buf.reserve(5 + body.len());
    buf.put_u8(tag);
    buf.put_i32(body.len() as i32 + 4);
    buf.put_slice(body);
}

fn put_cstr(buf: &mut BytesMut, s: &str) {
    buf.put_slice(s.as_bytes());
    buf.put_u8(0);
}

pub fn auth_ok(buf: &mut BytesMut) {
    tagged(buf, tag::AUTHENTICATION, |b| b.put_i32(0));
}

pub fn auth_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    tagged(buf, tag::AUTHENTICATION, |b| {
        b.put_i32(5);
        b.put_slice(&salt);
    });
}

pub fn auth_sasl(buf: &mut BytesMut) {
    tagged(buf, tag::AUTHENTICATION, |b| {
        b.put_i32(10);
        put_cstr(b, "SCRAM-SHA-256");
        b.put_u8(0);
    });
}

pub fn auth_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    tagged(buf, tag::AUTHENTICATION, |b| {
        b.put_i32(11);
        b.put_slice(data);
    });
}

pub fn auth_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    tagged(buf, tag::AUTHENTICATION, |b| {
        b.put_i32(12);
        b.put_slice(data);
    });
}

pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    tagged(buf, tag::PARAMETER_STATUS, |b| {
        put_cstr(b, name);
        put_cstr(b, value);
    });
}

pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    tagged(buf, tag::BACKEND_KEY_DATA, |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

pub fn ready_for_query(buf: &mut BytesMut, status: TxStatus) {
    tagged(buf, tag::READY_FOR_QUERY, |b| b.put_u8(status.as_byte()));
}

pub fn parse_complete(buf: &mut BytesMut) {
    tagged(buf, tag::PARSE_COMPLETE, |_| {});
}

pub fn close_complete(buf: &mut BytesMut) {
    tagged(buf, tag::CLOSE_COMPLETE, |_| {});
}

pub fn bind_complete(buf: &mut BytesMut) {
    tagged(buf, tag::BIND_COMPLETE, |_| {});
}

pub fn no_data(buf: &mut BytesMut) {
    tagged(buf, tag::NO_DATA, |_| {});
}

/// ParameterDescription: the type oid of each parameter of a statement.
pub fn parameter_description(buf: &mut BytesMut, types: &[u32]) {
    tagged(buf, tag::PARAMETER_DESCRIPTION, |b| {
        b.put_i16(types.len() as i16);
        for t in types {
            b.put_u32(*t);
        }
    });
}

/// CopyInResponse: the overall format (0 text, 1 binary) and each column's.
pub fn copy_in_response(buf: &mut BytesMut, format: u8, columns: &[u16]) {
    tagged(buf, tag::COPY_IN_RESPONSE, |b| {
        b.put_u8(format);
        b.put_i16(columns.len() as i16);
        for c in columns {
            b.put_u16(*c);
        }
    });
}

pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    tagged(buf, tag::COMMAND_COMPLETE, |b| put_cstr(b, tag));
}

pub fn empty_query(buf: &mut BytesMut) {
    tagged(buf, tag::EMPTY_QUERY_RESPONSE, |_| {});
}

/// NegotiateProtocolVersion: we speak 3.0 and none of the `_pq_.` options.
pub fn negotiate_protocol_version(buf: &mut BytesMut, minor: i32, unknown: &[String]) {
    tagged(buf, tag::NEGOTIATE_PROTOCOL_VERSION, |b| {
        b.put_i32(minor);
        b.put_i32(unknown.len() as i32);
        for opt in unknown {
            put_cstr(b, opt);
        }
    });
}

/// A column of a RowDescription: (name, type oid). Text format, no table.
pub fn row_description(buf: &mut BytesMut, columns: &[(&str, u32)]) {
    row_description_in(buf, columns, &[]);
}

/// A RowDescription whose columns come in `formats` (a Bind's result
/// formats: none = all text, one = all alike, else one per column).
pub fn row_description_in(buf: &mut BytesMut, columns: &[(&str, u32)], formats: &[i16]) {
    tagged(buf, tag::ROW_DESCRIPTION, |b| {
        b.put_i16(columns.len() as i16);
        for (i, (name, oid)) in columns.iter().enumerate() {
            put_cstr(b, name);
            b.put_i32(0); // table oid
            b.put_i16(0); // column attnum
            b.put_u32(*oid);
            b.put_i16(-1); // type size
            b.put_i32(-1); // type modifier
            b.put_i16(format_of(formats, i));
        }
    });
}

/// Column `i`'s format code in a Bind's list of result formats.
pub fn format_of(formats: &[i16], i: usize) -> i16 {
    match formats {
        [] => 0,
        [one] => *one,
        many => many.get(i).copied().unwrap_or(0),
    }
}

/// A DataRow of text or binary values (None is NULL).
pub fn data_row<V: AsRef<[u8]>>(buf: &mut BytesMut, values: &[Option<V>]) {
    tagged(buf, tag::DATA_ROW, |b| {
        b.put_i16(values.len() as i16);
        for v in values {
            match v {
                Some(s) => {
                    let s = s.as_ref();
                    b.put_i32(s.len() as i32);
                    b.put_slice(s);
                }
                None => b.put_i32(-1),
            }
        }
    });
}

pub fn error_fields(buf: &mut BytesMut, tag: u8, severity: &str, code: &str, message: &str) {
    tagged(buf, tag, |b| {
        b.put_u8(b'S');
        put_cstr(b, severity);
        b.put_u8(b'V');
        put_cstr(b, severity);
        b.put_u8(b'C');
        put_cstr(b, code);
        b.put_u8(b'M');
        put_cstr(b, message);
        b.put_u8(0);
    });
}

/// The ErrorResponse for one of our errors.
pub fn error_response(buf: &mut BytesMut, err: &Error) {
    error_with_severity(buf, err, err.severity());
}

pub fn error_with_severity(buf: &mut BytesMut, err: &Error, severity: Severity) {
    error_fields(
        buf,
        tag::ERROR_RESPONSE,
        severity.as_str(),
        err.sqlstate(),
        &err.to_string(),
    );
}

/// The ErrorResponse Postgres gives for a prepared statement whose result
/// columns changed since it was prepared; drivers that prepare it again
/// (pgJDBC) know it by its routine.
pub fn cached_plan_changed(buf: &mut BytesMut) {
    tagged(buf, tag::ERROR_RESPONSE, |b| {
        for (field, value) in [
            (b'S', "ERROR"),
            (b'V', "ERROR"),
            (b'C', "0A000"),
            (b'M', "cached plan must not change result type"),
            (b'F', "plancache.c"),
            (b'R', "RevalidateCachedQuery"),
        ] {
            b.put_u8(field);
            put_cstr(b, value);
        }
        b.put_u8(0);
    });
}

/// NotificationResponse: a NOTIFY on a channel the client listens to.
pub fn notification(buf: &mut BytesMut, pid: i32, channel: &str, payload: &str) {
    tagged(buf, tag::NOTIFICATION_RESPONSE, |b| {
        b.put_i32(pid);
        put_cstr(b, channel);
        put_cstr(b, payload);
    });
}

pub fn notice(buf: &mut BytesMut, message: &str) {
    error_fields(buf, tag::NOTICE_RESPONSE, "NOTICE", "00000", message);
}

/// Severity, code and message of an ErrorResponse read by postgres-protocol.
pub fn error_fields_of(
    body: &postgres_protocol::message::backend::ErrorResponseBody,
) -> ErrorFields {
    use fallible_iterator::FallibleIterator;
    let mut fields = ErrorFields {
        severity: String::new(),
        code: String::new(),
        message: String::new(),
    };
    let mut it = body.fields();
    while let Ok(Some(f)) = it.next() {
        let value = String::from_utf8_lossy(f.value_bytes()).into_owned();
        match f.type_() {
            b'V' => fields.severity = value,
            b'S' if fields.severity.is_empty() => fields.severity = value,
            b'C' => fields.code = value,
            b'M' => fields.message = value,
            _ => {}
        }
    }
    fields
}

/// Reads severity, code and message out of an ErrorResponse/NoticeResponse body
/// (the bytes after the 5-byte header).
pub fn parse_error_fields(body: &[u8]) -> ErrorFields {
    let mut fields = ErrorFields {
        severity: String::new(),
        code: String::new(),
        message: String::new(),
    };
    let mut pos = 0;
    while pos < body.len() && body[pos] != 0 {
        let kind = body[pos];
        let Ok((value, next)) = cstr(body, pos + 1) else {
            break;
        };
        match kind {
            b'V' => fields.severity = value.to_string(),
            b'S' if fields.severity.is_empty() => fields.severity = value.to_string(),
            b'C' => fields.code = value.to_string(),
            b'M' => fields.message = value.to_string(),
            _ => {}
        }
        pos = next;
    }
    fields
}

/// Reads a ParameterStatus body into (name, value).
pub fn parse_parameter_status(body: &[u8]) -> Option<(&str, &str)> {
    let (name, pos) = cstr(body, 0).ok()?;
    let (value, _) = cstr(body, pos).ok()?;
    Some((name, value))
}

/// Reads the (pid, secret) of a BackendKeyData body.
pub fn parse_backend_key(body: &[u8]) -> Option<(i32, i32)> {
    Some((read_i32(body, 0).ok()?, read_i32(body, 4).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_round_trips() {
        let mut buf = BytesMut::new();
        error_response(&mut buf, &Error::UnknownDatabase("nope".into()));
        assert_eq!(buf[0], tag::ERROR_RESPONSE);
        let fields = parse_error_fields(&buf[5..]);
        assert_eq!(fields.code, "3D000");
        assert_eq!(fields.severity, "FATAL");
        assert!(fields.message.contains("nope"));
    }

    #[test]
    fn lengths_are_right() {
        let mut buf = BytesMut::new();
        ready_for_query(&mut buf, TxStatus::Idle);
        assert_eq!(&buf[..], b"Z\0\0\0\x05I");
    }
}
