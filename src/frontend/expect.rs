//! What the session is waiting for from the server, in order. Responses come
//! back in the order requests went out; this queue lets the session answer
//! some requests itself (a Parse the server already has, a Close of a shared
//! statement) and hide answers to requests the client never sent, while
//! keeping every response in its place.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::net::tag::server as tag;

#[derive(Debug)]
pub enum Expect {
    /// A Parse went to the server; ParseComplete ends it. `injected`: the
    /// client did not send it, so its ParseComplete is dropped. `name`: the
    /// server-side statement name to record once it exists.
    Parse {
        injected: bool,
        name: Option<String>,
    },
    /// A Bind/Describe/Execute/Close went to the server; one of these
    /// message types ends it.
    Reply(&'static [u8]),
    /// Sync, Query or FunctionCall: ReadyForQuery ends it.
    Sync,
    /// We answer this one ourselves with these bytes (whole messages).
    Synthetic(Bytes),
    /// A Close the session sent unseen (an older copy of a statement): its
    /// CloseComplete is dropped.
    HiddenClose,
    /// A Describe the session sent unseen after parsing a statement on a
    /// server, to learn what its copy returns: its ParameterDescription and
    /// RowDescription (or NoData) are dropped, their shape kept.
    HiddenDescribe(String),
}

/// What the queue learnt from a server message.
#[derive(Debug, PartialEq, Eq)]
pub enum Learnt {
    /// The server holds this statement now.
    Parsed(String),
    /// What the server's copy of this statement returns (see
    /// `net::extended::result_shape`).
    Shape(String, u64),
}

#[derive(Default)]
pub struct ExpectQueue {
    queue: VecDeque<Expect>,
}

/// What a server message means for the queue.
pub enum Matched {
    /// Forward the message.
    Forward,
    /// Drop the message: it answers a request the client never sent.
    Hide,
}

impl ExpectQueue {
    pub fn push(&mut self, e: Expect) {
        self.queue.push_back(e);
    }

    /// Queues what is owed before everything else (a Parse the session
    /// puts in front of a batch it sends again).
    pub fn push_front(&mut self, e: Expect) {
        self.queue.push_front(e);
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn clear(&mut self) {
        self.queue.clear();
    }

    /// How many ReadyForQuery the client is still owed.
    pub fn syncs(&self) -> usize {
        self.queue
            .iter()
            .filter(|e| matches!(e, Expect::Sync))
            .count()
    }

    /// Pops synthetic answers now at the front; `emit` writes each one.
    pub fn drain_synthetic(&mut self, mut emit: impl FnMut(&[u8])) {
        while let Some(Expect::Synthetic(bytes)) = self.queue.front() {
            emit(bytes);
            self.queue.pop_front();
        }
    }

    /// Accounts for one server message (`body`: its body); `learnt` hears
    /// what it says about the server's statements.
    pub fn on_server_message(
        &mut self,
        kind: u8,
        body: &[u8],
        mut learnt: impl FnMut(Learnt),
    ) -> Matched {
        match kind {
            tag::READY_FOR_QUERY => {
                if matches!(self.queue.front(), Some(Expect::Sync)) {
                    self.queue.pop_front();
                }
                Matched::Forward
            }
            tag::PARSE_COMPLETE => match self.queue.front() {
                Some(Expect::Parse { .. }) => {
                    let Some(Expect::Parse { injected, name }) = self.queue.pop_front() else {
                        return Matched::Forward;
                    };
                    if let Some(name) = name {
                        learnt(Learnt::Parsed(name));
                    }
                    if injected {
                        Matched::Hide
                    } else {
                        Matched::Forward
                    }
                }
                _ => Matched::Forward,
            },
            tag::ERROR_RESPONSE => {
                // In the extended protocol the server skips everything up to
                // Sync after an error; so do we. A simple Query goes on to 'Z'.
                while let Some(front) = self.queue.front() {
                    if matches!(front, Expect::Sync) {
                        break;
                    }
                    self.queue.pop_front();
                }
                Matched::Forward
            }
            tag::CLOSE_COMPLETE if matches!(self.queue.front(), Some(Expect::HiddenClose)) => {
                self.queue.pop_front();
                Matched::Hide
            }
            tag::PARAMETER_DESCRIPTION
                if matches!(self.queue.front(), Some(Expect::HiddenDescribe(_))) =>
            {
                Matched::Hide
            }
            tag::ROW_DESCRIPTION | tag::NO_DATA
                if matches!(self.queue.front(), Some(Expect::HiddenDescribe(_))) =>
            {
                if let Some(Expect::HiddenDescribe(name)) = self.queue.pop_front() {
                    let shape = crate::net::extended::result_shape(kind, body);
                    learnt(Learnt::Shape(name, shape));
                }
                Matched::Hide
            }
            t => {
                if let Some(Expect::Reply(ends)) = self.queue.front() {
                    if ends.contains(&t) {
                        self.queue.pop_front();
                    }
                }
                Matched::Forward
            }
        }
    }
}

/// What ends the answer to each client message the server owes one for.
pub const ANSWERS_BIND: &[u8] = &[tag::BIND_COMPLETE];
pub const ANSWERS_DESCRIBE: &[u8] = &[tag::ROW_DESCRIPTION, tag::NO_DATA];
pub const ANSWERS_EXECUTE: &[u8] = &[
    tag::COMMAND_COMPLETE,
    tag::EMPTY_QUERY_RESPONSE,
    tag::PORTAL_SUSPENDED,
];
pub const ANSWERS_CLOSE: &[u8] = &[tag::CLOSE_COMPLETE];

/// What the server owes for a client message sent unchanged; None for
/// messages it does not answer on their own (Flush, CopyData...).
pub fn expect_for(kind: u8) -> Option<Expect> {
    use crate::net::tag::client;
    match kind {
        client::BIND => Some(Expect::Reply(ANSWERS_BIND)),
        client::DESCRIBE => Some(Expect::Reply(ANSWERS_DESCRIBE)),
        client::EXECUTE => Some(Expect::Reply(ANSWERS_EXECUTE)),
        client::CLOSE => Some(Expect::Reply(ANSWERS_CLOSE)),
        client::SYNC | client::QUERY | client::FUNCTION_CALL => Some(Expect::Sync),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injected_parse_is_hidden_and_synthetic_waits_its_turn() {
        let mut q = ExpectQueue::default();
        q.push(Expect::Reply(ANSWERS_BIND));
        q.push(Expect::Synthetic(Bytes::from_static(b"1")));
        q.push(Expect::Parse {
            injected: true,
            name: Some("g".into()),
        });
        q.push(Expect::Reply(ANSWERS_BIND));
        q.push(Expect::Sync);
        let mut emitted = vec![];
        q.drain_synthetic(|t| emitted.push(t.to_vec()));
        assert!(
            emitted.is_empty(),
            "synthetic must wait for the Bind before it"
        );
        assert!(matches!(
            q.on_server_message(tag::BIND_COMPLETE, &[], |_| {}),
            Matched::Forward
        ));
        q.drain_synthetic(|t| emitted.push(t.to_vec()));
        assert_eq!(emitted, vec![b"1".to_vec()]);
        let mut names = vec![];
        assert!(matches!(
            q.on_server_message(tag::PARSE_COMPLETE, &[], |n| names.push(n)),
            Matched::Hide
        ));
        assert_eq!(names, vec![Learnt::Parsed("g".to_string())]);
        q.on_server_message(tag::BIND_COMPLETE, &[], |_| {});
        assert_eq!(q.syncs(), 1);
        q.on_server_message(tag::READY_FOR_QUERY, &[], |_| {});
        assert!(q.is_empty());
    }

    #[test]
    fn error_skips_to_sync() {
        let mut q = ExpectQueue::default();
        q.push(Expect::Parse {
            injected: false,
            name: Some("g".into()),
        });
        q.push(Expect::Reply(ANSWERS_BIND));
        q.push(Expect::Synthetic(Bytes::from_static(b"3")));
        q.push(Expect::Sync);
        let mut names = vec![];
        q.on_server_message(tag::ERROR_RESPONSE, &[], |n| names.push(n));
        assert!(names.is_empty(), "a failed Parse commits nothing");
        assert_eq!(q.syncs(), 1);
        q.on_server_message(tag::READY_FOR_QUERY, &[], |_| {});
        assert!(q.is_empty());
    }
}
