//! LISTEN/UNLISTEN in transaction mode, on the client's side: a lone
//! `LISTEN channel` or `UNLISTEN channel | *` is answered here and served
//! by the pool's shared listener (`backend::listen`), not by the server the
//! client happens to hold. Notifications wait in the client's queue until
//! the protocol allows them: at once when the client is idle, else when
//! its transaction and pending answers are done, as Postgres sends them.
//! NOTIFY and pg_notify are ordinary statements and pass through.

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::session::{Flow, Session};
use crate::backend::listen::{Listener, Sink};
use crate::errors::{Error, Result};
use crate::net::messages::{self, TxStatus};

/// A client's LISTEN or UNLISTEN.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Listen(String),
    /// None: UNLISTEN *.
    Unlisten(Option<String>),
}

/// Whether a statement may be a LISTEN/UNLISTEN (its first word), decided
/// on the raw bytes like `commands::might_be`.
pub fn might_be(sql: &[u8]) -> bool {
    use crate::router::commands::starts_with_word;
    starts_with_word(sql, b"listen") || starts_with_word(sql, b"unlisten")
}

/// `LISTEN name` / `UNLISTEN name | *`, alone (an optional `;`), the name
/// folded as Postgres folds an identifier. None for anything else (a
/// string of several statements goes to the server as it is).
pub fn parse(sql: &str) -> Option<Command> {
    let sql = sql.trim();
    let sql = sql.strip_suffix(';').unwrap_or(sql).trim_end();
    let (word, rest) = sql.split_once(|c: char| c.is_ascii_whitespace())?;
    let rest = rest.trim();
    if word.eq_ignore_ascii_case("listen") {
        super::prepared::identifier(rest).map(Command::Listen)
    } else if word.eq_ignore_ascii_case("unlisten") {
        if rest == "*" {
            return Some(Command::Unlisten(None));
        }
        super::prepared::identifier(rest).map(|n| Command::Unlisten(Some(n)))
    } else {
        None
    }
}

/// A listening client's end of the pool's listener.
pub(super) struct Listening {
    listener: Listener,
    id: u64,
    sink: Sink,
    /// Notifications for this client, in order, until it can be sent them.
    pub queue: mpsc::UnboundedReceiver<Bytes>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.listener.gone(self.id);
    }
}

impl Session {
    /// Answers a LISTEN/UNLISTEN in place among the answers due.
    pub(super) async fn notify_command(&mut self, command: Command) -> Result<Flow> {
        let id = self.stats.id;
        let (tag, result) = match command {
            Command::Listen(channel) => {
                let listening = match self.listening.take() {
                    Some(l) => l,
                    None => {
                        let (sink, queue) = mpsc::unbounded_channel();
                        Box::new(Listening {
                            listener: self.pool.listener().clone(),
                            id,
                            sink,
                            queue,
                        })
                    }
                };
                let result = listening
                    .listener
                    .listen(id, channel, listening.sink.clone())
                    .await;
                self.listening = Some(listening);
                ("LISTEN", result)
            }
            Command::Unlisten(channel) => match &self.listening {
                Some(l) => {
                    let listener = l.listener.clone();
                    ("UNLISTEN", listener.unlisten(id, channel).await)
                }
                None => ("UNLISTEN", Ok(())),
            },
        };
        let mut out = BytesMut::new();
        match result {
            Ok(()) => messages::command_complete(&mut out, tag),
            Err(e) => {
                tracing::warn!(client = %self.client.peer, error = %e, "{tag} failed");
                messages::error_response(&mut out, &e);
            }
        }
        messages::ready_for_query(&mut out, self.tx.status);
        self.respond_in_order(out.freeze());
        Ok(Flow::Continue)
    }

    /// A LISTEN through the extended protocol, in transaction mode: not
    /// served (it would LISTEN on a pooled server and be lost), so refused
    /// with what to do instead. Cheap: the first byte of the text first.
    pub(super) fn extended_refusal(&self, parse: &[u8]) -> Result<Option<Error>> {
        let (_, name_end) = super::prepared::first_name(parse)?;
        let (text, _) = crate::net::codec::cstr_bytes(parse, name_end)?;
        if !might_be(text) {
            return Ok(None);
        }
        Ok(Some(Error::Unsupported(
            "LISTEN/UNLISTEN through the extended query protocol is not served in transaction mode: send it as a simple query (pgJDBC: preferQueryMode=simple for the listening connection) or use a session-mode pool".into(),
        )))
    }

    /// Whether a notification may be sent to the client now: it is not in
    /// a transaction and owes nothing, as when Postgres sends them.
    pub(super) fn may_notify(&self) -> bool {
        self.tx.status == TxStatus::Idle
            && self.server.expect.is_empty()
            && self.server.stream_left == 0
            && self.client.stream_left == 0
    }

    /// Sends `first` and whatever else is queued.
    pub(super) async fn send_notifications(&mut self, first: Bytes) -> Flow {
        let mut out = BytesMut::from(&first[..]);
        if let Some(l) = self.listening.as_mut() {
            while let Ok(more) = l.queue.try_recv() {
                out.extend_from_slice(&more);
            }
        }
        self.write_client(&out).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_listen_and_unlisten() {
        assert!(might_be(b" LISTEN x"));
        assert!(might_be(b"unlisten *"));
        assert!(!might_be(b"select 1"));
        assert_eq!(parse("LISTEN Ch1"), Some(Command::Listen("ch1".into())));
        assert_eq!(
            parse("listen \"Mixed Case\";"),
            Some(Command::Listen("Mixed Case".into()))
        );
        assert_eq!(parse("UNLISTEN *"), Some(Command::Unlisten(None)));
        assert_eq!(
            parse("unlisten ch1 ;"),
            Some(Command::Unlisten(Some("ch1".into())))
        );
        assert_eq!(parse("LISTEN a; select 1"), None);
        assert_eq!(parse("LISTEN"), None);
        assert_eq!(parse("NOTIFY a"), None);
    }
}
