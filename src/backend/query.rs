//! The proxy's own conversations with a server, outside any client's
//! traffic: health checks, resets, parameter syncs, catalog queries of the
//! ML side, COPY in and out, conversions for merges. One exchange loop
//! serves them all: it reads through [`Server::recv`] (so the connection's
//! bookkeeping is kept), stops at ReadyForQuery, and turns the server's
//! first ErrorResponse into `Error::ServerRefused` once the connection is
//! usable again.

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{DataRowBody, Message};
use postgres_protocol::message::frontend;
use tokio::io::AsyncWriteExt;

use super::server::Server;
use crate::errors::{Error, Result};
use crate::net::messages::error_fields_of;
use crate::net::rows::command_count;

/// A row of text values (None: NULL).
pub type Row = Vec<Option<String>>;

fn encode(e: impl std::fmt::Display) -> Error {
    Error::protocol(format!("could not encode a query: {e}"))
}

impl Server {
    /// Sends `out` and reads the answers up to ReadyForQuery, handing each
    /// other message to `each`. The first error (the server's, or one
    /// `each` returned) is the result; reading goes on to ReadyForQuery
    /// either way, so the connection stays usable. I/O failures end at once
    /// and mark the connection broken. The proxy's own statements never
    /// count as session state a client left (a SET of the client's
    /// parameters, the catalog's CREATE TABLE).
    pub async fn exchange(
        &mut self,
        out: &[u8],
        mut each: impl FnMut(Message) -> Result<()>,
    ) -> Result<()> {
        self.send(out).await?;
        let dirty = self.state.dirty;
        let changes = std::mem::take(&mut self.state.changes);
        let mut first_error = None;
        loop {
            match self.recv_message().await? {
                Message::ReadyForQuery(_) => {
                    self.state.dirty = dirty;
                    self.state.changes = changes;
                    return first_error.map_or(Ok(()), Err);
                }
                Message::ErrorResponse(body) => {
                    first_error.get_or_insert(Error::ServerRefused {
                        addr: self.addr.to_string(),
                        fields: error_fields_of(&body),
                    });
                }
                m if first_error.is_none() => {
                    if let Err(e) = each(m) {
                        first_error = Some(e);
                    }
                }
                _ => {}
            }
        }
    }

    /// Writes bytes to the server; a failure marks the connection broken.
    pub async fn send(&mut self, out: &[u8]) -> Result<()> {
        if let Err(e) = self.stream.write_all(out).await {
            self.state.broken = true;
            return Err(Error::ServerLost(format!("server {}: {e}", self.addr)));
        }
        Ok(())
    }

    /// Statements without results (BEGIN, SET ..., DISCARD ALL), simple protocol.
    pub async fn execute(&mut self, sql: &str) -> Result<()> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).map_err(encode)?;
        self.exchange(&out, |_| Ok(())).await
    }

    /// A simple-protocol query; every row as text.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Row>> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).map_err(encode)?;
        self.rows(&out).await
    }

    /// The first row of a simple-protocol query, if any.
    pub async fn query_row(&mut self, sql: &str) -> Result<Option<Row>> {
        Ok(self.simple_query(sql).await?.into_iter().next())
    }

    /// One statement with text parameters (None = NULL), extended protocol
    /// (values never spliced into SQL); every row as text.
    pub async fn query(&mut self, sql: &str, params: &[Option<&str>]) -> Result<Vec<Row>> {
        let mut out = BytesMut::new();
        frontend::parse("", sql, std::iter::empty(), &mut out).map_err(encode)?;
        frontend::bind(
            "",
            "",
            std::iter::empty::<i16>(),
            params.iter(),
            |p, buf| match p {
                Some(v) => {
                    buf.extend_from_slice(v.as_bytes());
                    Ok(postgres_protocol::IsNull::No)
                }
                None => Ok(postgres_protocol::IsNull::Yes),
            },
            std::iter::empty::<i16>(),
            &mut out,
        )
        .map_err(|_| Error::protocol("could not encode query parameters"))?;
        frontend::execute("", 0, &mut out).map_err(encode)?;
        frontend::sync(&mut out);
        self.rows(&out).await
    }

    /// Sends `out` and collects every DataRow of the answer as text.
    async fn rows(&mut self, out: &[u8]) -> Result<Vec<Row>> {
        let mut rows = Vec::new();
        self.exchange(out, |m| {
            if let Message::DataRow(body) = m {
                rows.push(text_row(&body)?);
            }
            Ok(())
        })
        .await?;
        Ok(rows)
    }

    /// `COPY ... TO STDOUT`: every CopyData payload goes to `chunk` in order.
    pub async fn copy_out(
        &mut self,
        sql: &str,
        mut chunk: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).map_err(encode)?;
        self.exchange(&out, |m| match m {
            Message::CopyData(body) => chunk(body.data()),
            _ => Ok(()),
        })
        .await
    }

    /// Starts `COPY ... TO STDOUT` read a message at a time with
    /// `next_copy_data`, for a reader that awaits between messages. Until
    /// the answer is read through, the connection counts as broken, so a
    /// reader that stops early never hands a half-read one back.
    pub async fn start_copy_out(&mut self, sql: &str) -> Result<()> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).map_err(encode)?;
        self.send(&out).await?;
        self.state.broken = true;
        Ok(())
    }

    /// The next CopyData's bytes of `start_copy_out`'s answer; None once
    /// it is read through. A refusal is read through to ReadyForQuery.
    pub async fn next_copy_data(&mut self) -> Result<Option<bytes::Bytes>> {
        let mut first_error = None;
        loop {
            match self.recv_message().await? {
                Message::CopyData(body) if first_error.is_none() => {
                    return Ok(Some(body.into_bytes()))
                }
                Message::ReadyForQuery(_) => {
                    self.state.broken = false;
                    return first_error.map_or(Ok(None), Err);
                }
                Message::ErrorResponse(body) => {
                    first_error.get_or_insert(Error::ServerRefused {
                        addr: self.addr.to_string(),
                        fields: error_fields_of(&body),
                    });
                }
                _ => {}
            }
        }
    }

    /// Starts `COPY ... FROM STDIN`: returns once the server is ready for
    /// the data (CopyInResponse), with its overall format (0 text, 1 binary)
    /// and column formats. A refusal is read through to ReadyForQuery.
    pub async fn start_copy_in(&mut self, sql: &str) -> Result<(u8, Vec<u16>)> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).map_err(encode)?;
        self.send(&out).await?;
        loop {
            match self.recv_message().await? {
                Message::CopyInResponse(body) => {
                    let formats = body.column_formats().collect().map_err(encode)?;
                    return Ok((body.format(), formats));
                }
                Message::ErrorResponse(body) => {
                    let e = Error::ServerRefused {
                        addr: self.addr.to_string(),
                        fields: error_fields_of(&body),
                    };
                    self.exchange(&[], |_| Ok(())).await?;
                    return Err(e);
                }
                Message::ReadyForQuery(_) => {
                    return Err(Error::protocol(format!(
                        "server {} did not start the COPY",
                        self.addr
                    )))
                }
                _ => {}
            }
        }
    }

    /// Ends a COPY FROM STDIN started with [`Server::start_copy_in`]:
    /// CopyDone (or CopyFail with `fail`'s text), then the row count.
    pub async fn finish_copy_in(&mut self, fail: Option<&str>) -> Result<u64> {
        let mut out = BytesMut::new();
        match fail {
            Some(why) => frontend::copy_fail(why, &mut out).map_err(encode)?,
            None => frontend::copy_done(&mut out),
        }
        let mut rows = 0;
        self.exchange(&out, |m| {
            if let Message::CommandComplete(body) = m {
                rows = command_count(body.tag().map_err(encode)?);
            }
            Ok(())
        })
        .await?;
        Ok(rows)
    }

    /// `COPY ... FROM STDIN` with the given payload, in 64 KiB messages.
    pub async fn copy_in(&mut self, sql: &str, data: &[u8]) -> Result<u64> {
        self.start_copy_in(sql).await?;
        let mut out = BytesMut::new();
        for piece in data.chunks(64 * 1024) {
            frontend::CopyData::new(piece)
                .map_err(encode)?
                .write(&mut out);
        }
        self.send(&out).await?;
        self.finish_copy_in(None).await
    }

    /// One statement with a client's parameters as the client bound them
    /// (declared types, format codes, raw values): the type of its first
    /// column, and that column of every row, in binary, to `each` (NULLs
    /// skipped). For the collections of pgml.predict's general method.
    pub async fn first_column(
        &mut self,
        sql: &str,
        bound: Bound<'_>,
        mut each: impl FnMut(u32, &[u8]),
    ) -> Result<u32> {
        let mut out = BytesMut::new();
        bound.write(sql, &[1], &mut out)?;
        frontend::describe(b'P', "", &mut out).map_err(encode)?;
        frontend::execute("", 0, &mut out).map_err(encode)?;
        frontend::sync(&mut out);
        let mut type_oid = 0;
        self.exchange(&out, |m| {
            match m {
                Message::RowDescription(body) => {
                    let mut fields = body.fields();
                    if let Some(f) = fields.next().map_err(encode)? {
                        type_oid = f.type_oid();
                    }
                }
                Message::DataRow(body) => {
                    if let Some(Some(r)) = body.ranges().next().map_err(encode)? {
                        each(type_oid, &body.buffer()[r]);
                    }
                }
                _ => {}
            }
            Ok(())
        })
        .await?;
        Ok(type_oid)
    }

    /// The parameter types Postgres gives `sql` when the client declared
    /// `declared` (0: unspecified).
    pub async fn parameter_types(&mut self, sql: &str, declared: &[u32]) -> Result<Vec<u32>> {
        let mut out = BytesMut::new();
        frontend::parse("", sql, declared.iter().copied(), &mut out).map_err(encode)?;
        frontend::describe(b'S', "", &mut out).map_err(encode)?;
        frontend::sync(&mut out);
        let mut types = Vec::new();
        self.exchange(&out, |m| {
            if let Message::ParameterDescription(body) = m {
                types = body.parameters().collect().map_err(encode)?;
            }
            Ok(())
        })
        .await?;
        Ok(types)
    }

    /// Text values converted by Postgres to the binary form of `type_name`
    /// (a name as `format_type` prints it), in order; for merging results
    /// of several shards into a client's binary format.
    pub async fn binary_values(
        &mut self,
        type_name: &str,
        values: &[Option<&str>],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let sql = format!(
            "SELECT v::{type_name} FROM unnest($1::text[]) WITH ORDINALITY AS u(v, n) ORDER BY n"
        );
        let array = text_array(values);
        let mut out = BytesMut::new();
        frontend::parse("", &sql, std::iter::empty(), &mut out).map_err(encode)?;
        frontend::bind(
            "",
            "",
            std::iter::empty::<i16>(),
            std::iter::once(array.as_str()),
            |v, buf| {
                buf.extend_from_slice(v.as_bytes());
                Ok(postgres_protocol::IsNull::No)
            },
            std::iter::once(1i16),
            &mut out,
        )
        .map_err(|_| Error::protocol("could not encode a conversion query"))?;
        frontend::execute("", 0, &mut out).map_err(encode)?;
        frontend::sync(&mut out);
        let mut converted = Vec::with_capacity(values.len());
        self.exchange(&out, |m| {
            if let Message::DataRow(body) = m {
                let first = body.ranges().next().map_err(encode)?.flatten();
                converted.push(first.map(|r| body.buffer()[r].to_vec()));
            }
            Ok(())
        })
        .await?;
        Ok(converted)
    }
}

/// A DataRow's values as text.
fn text_row(body: &DataRowBody) -> Result<Row> {
    let buf = body.buffer();
    body.ranges()
        .map(|r| Ok(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned())))
        .collect()
        .map_err(|e| Error::protocol(format!("malformed DataRow: {e}")))
}

/// Values as one text[] literal (`{"a","b",NULL}`).
fn text_array(values: &[Option<&str>]) -> String {
    let mut array = String::from("{");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            array.push(',');
        }
        match v {
            None => array.push_str("NULL"),
            Some(v) => {
                array.push('"');
                for c in v.chars() {
                    if c == '"' || c == '\\' {
                        array.push('\\');
                    }
                    array.push(c);
                }
                array.push('"');
            }
        }
    }
    array.push('}');
    array
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_arrays_quote_and_escape() {
        assert_eq!(
            text_array(&[Some("a\"b"), None, Some("c\\")]),
            r#"{"a\"b",NULL,"c\\"}"#
        );
        assert_eq!(text_array(&[]), "{}");
    }
}

/// A client's Bind, carried to a statement of the proxy's own: the types
/// its statement declared, its parameter format codes and values.
#[derive(Clone, Copy, Default)]
pub struct Bound<'a> {
    pub types: &'a [u32],
    pub formats: &'a [i16],
    pub values: &'a [Option<Vec<u8>>],
}

impl Bound<'_> {
    /// Parse (unnamed) and Bind (unnamed portal) of `sql` with these
    /// parameters and `results` as the result format codes.
    pub fn write(&self, sql: &str, results: &[i16], out: &mut BytesMut) -> Result<()> {
        frontend::parse("", sql, self.types.iter().copied(), out).map_err(encode)?;
        frontend::bind(
            "",
            "",
            self.formats.iter().copied(),
            self.values.iter(),
            |v, buf| match v {
                Some(v) => {
                    buf.extend_from_slice(v);
                    Ok(postgres_protocol::IsNull::No)
                }
                None => Ok(postgres_protocol::IsNull::Yes),
            },
            results.iter().copied(),
            out,
        )
        .map_err(|_| Error::protocol("could not encode a client's parameters"))
    }
}
