//! Framing of the Postgres wire protocol: where one message ends and the
//! next begins. Knows nothing about sockets or sessions.

use crate::errors::{Error, Result};

/// Tag byte plus the four length bytes.
pub const HEADER_LEN: usize = 5;

/// The largest startup packet Postgres accepts (MAX_STARTUP_PACKET_LENGTH).
pub const MAX_STARTUP_LEN: usize = 10_000;

/// A message header read off the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    /// Length of the whole message including the tag byte.
    pub total: usize,
}

/// Reads the header at the start of `buf`, if five bytes are there.
/// A length field below 4 or above `max` is a protocol violation.
#[inline]
pub fn header(buf: &[u8], max: usize) -> Result<Option<Header>> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len < 4 {
        return Err(Error::protocol(format!(
            "invalid message length {len} for message type '{}'",
            printable(buf[0])
        )));
    }
    if len > max {
        return Err(Error::protocol(format!(
            "message of type '{}' is {len} bytes, larger than the limit of {max} bytes",
            printable(buf[0])
        )));
    }
    Ok(Some(Header {
        tag: buf[0],
        total: len + 1,
    }))
}

/// The length of an untagged startup-phase packet, if its four length bytes are there.
pub fn startup_len(buf: &[u8]) -> Result<Option<usize>> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(8..=MAX_STARTUP_LEN).contains(&len) {
        return Err(Error::protocol(format!(
            "invalid startup packet length {len}"
        )));
    }
    Ok(Some(len))
}

pub fn printable(tag: u8) -> char {
    if tag.is_ascii_graphic() {
        tag as char
    } else {
        '?'
    }
}

/// Reads a NUL-terminated string at `pos`; returns it and the position after the NUL.
pub fn cstr(buf: &[u8], pos: usize) -> Result<(&str, usize)> {
    let (bytes, next) = cstr_bytes(buf, pos)?;
    let s = std::str::from_utf8(bytes).map_err(|_| Error::protocol("string is not valid UTF-8"))?;
    Ok((s, next))
}

/// The bytes of a NUL-terminated string at `pos`, unchecked (for text the
/// proxy may not need to read at all), and the position after the NUL.
#[inline]
pub fn cstr_bytes(buf: &[u8], pos: usize) -> Result<(&[u8], usize)> {
    let rest = buf
        .get(pos..)
        .ok_or_else(|| Error::protocol("message truncated"))?;
    let end = memchr::memchr(0, rest).ok_or_else(|| Error::protocol("string not terminated"))?;
    Ok((&rest[..end], pos + end + 1))
}

pub fn read_i16(buf: &[u8], pos: usize) -> Result<i16> {
    buf.get(pos..pos + 2)
        .map(|b| i16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(|| Error::protocol("message truncated"))
}

pub fn read_i32(buf: &[u8], pos: usize) -> Result<i32> {
    buf.get(pos..pos + 4)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| Error::protocol("message truncated"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_needs_five_bytes() {
        assert_eq!(header(b"Q\0\0\0", 100).unwrap(), None);
        assert_eq!(
            header(b"Q\0\0\0\x05x", 100).unwrap(),
            Some(Header {
                tag: b'Q',
                total: 6
            })
        );
    }

    #[test]
    fn header_rejects_short_and_huge_lengths() {
        assert!(header(b"Q\0\0\0\x03", 100).is_err());
        assert!(header(b"Q\x40\0\0\0", 100).is_err());
    }

    #[test]
    fn startup_len_bounds() {
        assert!(startup_len(&[0, 0, 0, 4]).is_err());
        assert!(startup_len(&[0x40, 0, 0, 0]).is_err());
        assert_eq!(startup_len(&[0, 0, 0, 8]).unwrap(), Some(8));
    }

    #[test]
    fn cstr_reads_and_rejects_unterminated() {
        assert_eq!(cstr(b"ab\0cd\0", 0).unwrap(), ("ab", 3));
        assert_eq!(cstr(b"ab\0cd\0", 3).unwrap(), ("cd", 6));
        assert!(cstr(b"ab", 0).is_err());
        assert!(cstr(b"ab", 9).is_err());
    }
}
