//! LISTEN/UNLISTEN in transaction mode, on the client's side: a lone
//! `LISTEN channel` or `UNLISTEN channel | *`, as a Query or through the
//! extended protocol (Parse, Bind, Execute...), is answered here and served
//! by the pool's shared listener (`backend::listen`), not by the server the
//! client happens to hold. Notifications wait in the client's queue until
//! the protocol allows them: at once when the client is idle, else when
//! its transaction and pending answers are done, as Postgres sends them.
//! NOTIFY and pg_notify are ordinary statements and pass through.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::prepared;
use super::session::{Flow, Session};
use crate::backend::listen::{Listener, Sink};
use crate::errors::Result;
use crate::net::codec;
use crate::net::messages::{self, TxStatus};
use crate::net::tag::client;

/// A client's LISTEN or UNLISTEN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Listen(String),
    /// None: UNLISTEN *.
    Unlisten(Option<String>),
}

impl Command {
    /// Its CommandComplete tag.
    fn tag(&self) -> &'static str {
        match self {
            Command::Listen(_) => "LISTEN",
            Command::Unlisten(_) => "UNLISTEN",
        }
    }
}

/// Whether a statement may be a LISTEN/UNLISTEN (its first word), decided
/// on the raw bytes.
pub fn might_be(sql: &[u8]) -> bool {
    let word = crate::router::commands::first_word(sql);
    word.eq_ignore_ascii_case(b"listen") || word.eq_ignore_ascii_case(b"unlisten")
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

/// A listening client's end of the pool's listener, and its LISTEN and
/// UNLISTEN statements and portals (extended protocol), answered here.
pub(super) struct Listening {
    listener: Listener,
    id: u64,
    sink: Sink,
    /// Notifications for this client, in order, until it can be sent them.
    pub queue: mpsc::UnboundedReceiver<Bytes>,
    statements: HashMap<String, Command>,
    portals: HashMap<String, Command>,
    /// LISTEN/UNLISTEN of the transaction block in progress: as in
    /// Postgres, they take effect when it commits, and not if it rolls back.
    pending: Vec<Command>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.listener.gone(self.id);
    }
}

impl Session {
    /// The client's end of the pool's listener, made on first use.
    fn listening(&mut self) -> &mut Listening {
        let id = self.stats.id;
        let pool = &self.pool;
        self.listening.get_or_insert_with(|| {
            let (sink, queue) = mpsc::unbounded_channel();
            Box::new(Listening {
                listener: pool.listener().clone(),
                id,
                sink,
                queue,
                statements: HashMap::new(),
                portals: HashMap::new(),
                pending: Vec::new(),
            })
        })
    }

    /// Carries out a LISTEN/UNLISTEN: its command tag, or the error. In a
    /// transaction block it waits for the block's end (see `pending`); so
    /// does one that comes while a server is held, whose transaction it is
    /// part of (a BEGIN may be on its way in the same batch, as pgJDBC
    /// sends it).
    async fn run_notify(&mut self, command: Command) -> (&'static str, Result<()>) {
        if self.tx.status == TxStatus::InTransaction || !self.server.binding.is_idle() {
            let tag = command.tag();
            self.listening().pending.push(command);
            return (tag, Ok(()));
        }
        self.notify_now(command).await
    }

    async fn notify_now(&mut self, command: Command) -> (&'static str, Result<()>) {
        let id = self.stats.id;
        let tag = command.tag();
        let result = match command {
            Command::Listen(channel) => {
                let l = self.listening();
                l.listener.listen(id, channel, l.sink.clone()).await
            }
            Command::Unlisten(channel) => match &self.listening {
                Some(l) => l.listener.unlisten(id, channel).await,
                None => Ok(()),
            },
        };
        (tag, result)
    }

    /// Answers a LISTEN/UNLISTEN Query in place among the answers due.
    pub(super) async fn notify_command(&mut self, command: Command) -> Result<Flow> {
        let (tag, result) = self.run_notify(command).await;
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

    /// A Parse in transaction mode: one of a LISTEN/UNLISTEN is answered
    /// here (its Describe, Bind, Execute and Close then too, see
    /// `notify_extended`); a name reused for other SQL is forgotten. True
    /// when the Parse was ours. Cheap: the first word of the text.
    pub(super) fn notify_parse(&mut self, msg: &[u8]) -> Result<bool> {
        let (name, name_end) = prepared::first_name(msg)?;
        // The text's start is enough to tell (no scan for its end).
        let command = if might_be(msg.get(name_end..).unwrap_or_default()) {
            let (text, _) = codec::cstr(msg, name_end)?;
            parse(text).filter(|_| self.tx.status != TxStatus::Failed)
        } else {
            None
        };
        let Some(command) = command else {
            if let Some(l) = self.listening.as_mut() {
                l.statements.remove(name);
            }
            return Ok(false);
        };
        let name = name.to_string();
        self.listening().statements.insert(name, command);
        self.answer(messages::parse_complete);
        Ok(true)
    }

    /// The Describe, Bind, Execute or Close of a LISTEN/UNLISTEN statement
    /// or portal, answered as Postgres would (NoData, BindComplete,
    /// CommandComplete, CloseComplete). True when the message was ours.
    pub(super) async fn notify_extended(&mut self, kind: u8, msg: &[u8]) -> Result<bool> {
        let Some(l) = self.listening.as_mut() else {
            return Ok(false);
        };
        match kind {
            client::BIND => {
                let (portal, _) = prepared::first_name(msg)?;
                let (statement, _, _) = prepared::bind_statement(msg)?;
                let Some(command) = l.statements.get(statement).cloned() else {
                    l.portals.remove(portal);
                    return Ok(false);
                };
                l.portals.insert(portal.to_string(), command);
                self.answer(messages::bind_complete);
            }
            client::DESCRIBE => {
                let (target, name) = prepared::target(msg)?;
                match target {
                    client::STATEMENT if l.statements.contains_key(name) => {
                        self.answer(|b| {
                            messages::parameter_description(b, &[]);
                            messages::no_data(b);
                        });
                    }
                    client::PORTAL if l.portals.contains_key(name) => {
                        self.answer(messages::no_data);
                    }
                    _ => return Ok(false),
                }
            }
            client::EXECUTE => {
                let (portal, _) = prepared::first_name(msg)?;
                let Some(command) = l.portals.get(portal).cloned() else {
                    return Ok(false);
                };
                match self.run_notify(command).await {
                    (tag, Ok(())) => self.answer(|b| messages::command_complete(b, tag)),
                    (_, Err(e)) => self.refuse_in_batch(e),
                }
            }
            client::CLOSE => {
                let (target, name) = prepared::target(msg)?;
                let known = match target {
                    client::STATEMENT => l.statements.remove(name).is_some(),
                    _ => l.portals.remove(name).is_some(),
                };
                if !known {
                    return Ok(false);
                }
                self.answer(messages::close_complete);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Whether LISTEN/UNLISTENs wait for their transaction block's end.
    pub(super) fn notify_pending(&self) -> bool {
        self.listening
            .as_ref()
            .is_some_and(|l| !l.pending.is_empty())
    }

    /// The transaction block ended: its LISTEN/UNLISTENs take effect if it
    /// committed, before the client hears that it did.
    pub(super) async fn settle_notify(&mut self, committed: bool) {
        let pending = match self.listening.as_mut() {
            Some(l) => std::mem::take(&mut l.pending),
            None => return,
        };
        if !committed {
            return;
        }
        for command in pending {
            if let (tag, Err(e)) = self.notify_now(command).await {
                tracing::warn!(client = %self.client.peer, error = %e, "{tag} at commit failed");
            }
        }
    }

    /// `settle_notify` for a transaction block that never reached a server
    /// (answered here): the listener is told without waiting.
    pub(super) fn settle_notify_now(&mut self, committed: bool) {
        let id = self.stats.id;
        let Some(l) = self.listening.as_mut() else {
            return;
        };
        for command in std::mem::take(&mut l.pending) {
            // Sent now; the answer is not awaited.
            match command {
                Command::Listen(channel) if committed => {
                    drop(l.listener.listen(id, channel, l.sink.clone()))
                }
                Command::Unlisten(channel) if committed => drop(l.listener.unlisten(id, channel)),
                _ => {}
            }
        }
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
