//! What a statement's text may do beyond returning rows, read once on its
//! way to a server: change session parameters (SET, RESET, set_config) or
//! state only its server connection can hold (see `pins`). No parse: the
//! first word, and one `memchr` pass over the `_`s (set_config,
//! pg_advisory_*). A false positive costs one catalog read when the
//! transaction ends; the common statement costs a few instructions.

use super::pins::{self, Touch};

/// What a statement may do beyond its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notes {
    /// It may change session parameters (see `params::named_parameters`).
    pub sets: bool,
    /// What it may do to state only one connection can hold.
    pub pins: Touch,
}

pub fn read(text: &[u8]) -> Notes {
    let word = crate::router::commands::first_word(text);
    let mut notes = Notes {
        sets: word.eq_ignore_ascii_case(b"set") || word.eq_ignore_ascii_case(b"reset"),
        pins: pins::by_first_word(word, text),
    };
    for i in memchr::memchr_iter(b'_', text) {
        let after = &text[i + 1..];
        // The letter after the `_` first: most `_`s are in names.
        match after.first().map(|b| b | 0x20) {
            Some(b'c')
                if i >= 3
                    && text[i - 3..i].eq_ignore_ascii_case(b"set")
                    && pins::starts_with_ci(after, b"config") =>
            {
                notes.sets = true;
            }
            Some(b'a') => match pins::advisory(after) {
                Touch::None => {}
                Touch::May if notes.pins != Touch::None => {}
                t => notes.pins = t,
            },
            _ => {}
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_reads_both() {
        let n = read(b"select set_config('a', 'b', false), pg_advisory_lock(1)");
        assert!(n.sets);
        assert!(matches!(n.pins, Touch::Makes(_)));
        let n = read(b"  SET search_path TO x");
        assert!(n.sets && n.pins == Touch::None);
        let n = read(b"SELECT abalance FROM pgbench_accounts WHERE aid = $1");
        assert_eq!(
            n,
            Notes {
                sets: false,
                pins: Touch::None
            }
        );
        assert_eq!(read(b"select pg_advisory_unlock(1)").pins, Touch::May);
        assert_eq!(read(b"").pins, Touch::None);
    }
}
