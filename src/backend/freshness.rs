//! How fresh a replica must be for a read: read-your-writes after a
//! client's write, or a bound on lag a statement or session asks for.
//!
//! Postgres reports no commit LSN on the wire, and asking for it would cost
//! each write a round trip. Instead each replicated shard keeps a clock:
//! rounds of samples of the primary's WAL insert position and the replicas'
//! replay positions, taken on the monitor's own connections, every
//! `POLL` while any client needs them (and every second otherwise). A
//! client whose write committed notes the round in progress; the first
//! primary sample of a later round was taken after the commit, so it is at
//! or past the commit's end, and a replica that replayed that far has the
//! write. Until such a sample exists the client reads from the primary.
//! Many clients' commits share one sample: the cost is per round, not per
//! transaction.
//!
//! Lag in time is read off the same samples: a replica that replayed to the
//! primary's position at time t has everything committed before t, so it
//! is at most `now - t` behind.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// How often the clock samples while a client needs it.
pub const POLL: Duration = Duration::from_millis(5);
/// How long sampling goes on after the last client that needed it.
const LINGER: Duration = Duration::from_secs(2);
/// Primary samples kept per shard (at `POLL`, a few seconds' worth).
const KEPT: usize = 1024;

/// Wakes the sampler (runtime::watch_freshness) when a clock is wanted.
pub fn wake() -> &'static Notify {
    static WAKE: OnceLock<Notify> = OnceLock::new();
    WAKE.get_or_init(Notify::new)
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    round: u64,
    at: Instant,
    lsn: i64,
}

#[derive(Default)]
struct ShardClock {
    /// Rounds begun so far.
    rounds: AtomicU64,
    /// The primary's insert position by round, oldest first.
    samples: Mutex<VecDeque<Sample>>,
}

/// A round of samples: its number, and when it began (before any server
/// was asked).
#[derive(Debug, Clone, Copy)]
pub struct Round {
    number: u64,
    began: Instant,
}

/// A pool's clocks, one per shard.
pub struct Clock {
    shards: Vec<ShardClock>,
    started: Instant,
    /// Sampling is wanted until then (ms since `started`).
    wanted_until: AtomicU64,
}

/// What a client's write left to wait for on one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub shard: usize,
    /// The round in progress when the write committed: a later round's
    /// primary sample is at or past the commit.
    round: u64,
    /// That sample's position, once there is one.
    lsn: Option<i64>,
}

/// How fresh a replica must be for a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any replica that serves reads (the pool's own lag limits apply).
    Any,
    /// One that replayed to at least this position (read-your-writes).
    Reached(i64),
    /// The primary: a write's position is not known yet.
    Primary,
    /// One at most this far behind the primary.
    Within(Duration),
}

impl Clock {
    pub fn new(shards: usize) -> Clock {
        Clock {
            shards: (0..shards).map(|_| ShardClock::default()).collect(),
            started: Instant::now(),
            wanted_until: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Whether sampling is wanted now.
    pub fn wanted(&self) -> bool {
        self.now_ms() < self.wanted_until.load(Ordering::Relaxed)
    }

    /// Sampling is wanted for the next `LINGER`; wakes the sampler if it
    /// was resting.
    pub fn want(&self) {
        let now = self.now_ms();
        let was = self
            .wanted_until
            .swap(now + LINGER.as_millis() as u64, Ordering::Relaxed);
        if was <= now {
            wake().notify_one();
        }
    }

    /// A write committed on `shard`: what the client's reads there wait for.
    pub fn mark(&self, shard: usize) -> Option<Mark> {
        let clock = self.shards.get(shard)?;
        self.want();
        Some(Mark {
            shard,
            round: clock.rounds.load(Ordering::Acquire),
            lsn: None,
        })
    }

    /// A round of samples of `shard` begins.
    pub fn begin_round(&self, shard: usize) -> Round {
        let number = self
            .shards
            .get(shard)
            .map_or(0, |c| c.rounds.fetch_add(1, Ordering::AcqRel) + 1);
        Round {
            number,
            began: Instant::now(),
        }
    }

    /// The primary's position of `shard`, read in `round`.
    pub fn record(&self, shard: usize, round: Round, lsn: i64) {
        let Some(clock) = self.shards.get(shard) else {
            return;
        };
        let mut samples = clock.samples.lock();
        if samples.len() == KEPT {
            samples.pop_front();
        }
        samples.push_back(Sample {
            round: round.number,
            // The primary was at `lsn` after this, and its commits before
            // this are all at or before `lsn`: lag measured from here is an
            // upper bound.
            at: round.began,
            lsn,
        });
    }

    /// The position `mark` waits for, once a sample after its commit exists.
    pub fn resolve(&self, mark: &mut Mark) -> Option<i64> {
        if mark.lsn.is_none() {
            let clock = self.shards.get(mark.shard)?;
            let samples = clock.samples.lock();
            mark.lsn = samples.iter().find(|s| s.round > mark.round).map(|s| s.lsn);
        }
        mark.lsn
    }

    /// What a read on `shard` needs: a bound on lag wins over a mark.
    pub fn need(&self, mark: Option<&mut Mark>, max_lag: Option<Duration>) -> Need {
        if let Some(bound) = max_lag {
            self.want();
            return Need::Within(bound);
        }
        let Some(mark) = mark else {
            return Need::Any;
        };
        match self.resolve(mark) {
            Some(lsn) => Need::Reached(lsn),
            None => {
                self.want();
                Need::Primary
            }
        }
    }

    /// How far behind the primary a replica that replayed to `replayed` is
    /// at most: the time since the newest primary sample it has reached.
    /// None when it reached none kept.
    pub fn lag(&self, shard: usize, replayed: i64) -> Option<Duration> {
        let clock = self.shards.get(shard)?;
        let samples = clock.samples.lock();
        samples
            .iter()
            .rev()
            .find(|s| s.lsn <= replayed)
            .map(|s| s.at.elapsed())
    }

    /// Whether a replica that replayed to `replayed` meets `need`.
    pub fn meets(&self, shard: usize, need: Need, replayed: i64) -> bool {
        match need {
            Need::Any => true,
            Need::Primary => false,
            Need::Reached(lsn) => replayed >= lsn,
            Need::Within(bound) => self.lag(shard, replayed).is_some_and(|l| l <= bound),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_waits_for_a_sample_begun_after_the_commit() {
        let clock = Clock::new(1);
        let round = clock.begin_round(0);
        let mut mark = clock.mark(0).expect("shard 0");
        // The round in progress at the commit may have read the primary
        // before the commit: it does not count.
        clock.record(0, round, 100);
        assert_eq!(clock.need(Some(&mut mark), None), Need::Primary);
        let next = clock.begin_round(0);
        clock.record(0, next, 150);
        assert_eq!(clock.need(Some(&mut mark), None), Need::Reached(150));
        assert!(!clock.meets(0, Need::Reached(150), 149));
        assert!(clock.meets(0, Need::Reached(150), 150));
        assert_eq!(clock.need(None, None), Need::Any);
        assert!(clock.wanted(), "a pending mark keeps the sampler going");
    }

    #[test]
    fn lag_is_the_age_of_the_newest_sample_reached() {
        let clock = Clock::new(1);
        let r = clock.begin_round(0);
        clock.record(0, r, 10);
        std::thread::sleep(Duration::from_millis(30));
        let r = clock.begin_round(0);
        clock.record(0, r, 20);
        let behind = clock.lag(0, 15).expect("reached the first sample");
        assert!(behind >= Duration::from_millis(30));
        assert!(clock.lag(0, 20).expect("reached both") < Duration::from_millis(30));
        assert_eq!(clock.lag(0, 5), None, "reached no sample kept");
        let bound = Need::Within(Duration::from_millis(20));
        assert!(clock.meets(0, bound, 20));
        assert!(!clock.meets(0, bound, 15));
        assert_eq!(
            clock.need(None, Some(Duration::from_millis(20))),
            bound,
            "a bound wins over no mark"
        );
    }
}
