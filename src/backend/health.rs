//! What pgmlcat knows about a server's health: bans, the role the server
//! really has (configured roles are only the starting guess), and how far a
//! replica is behind. The monitor refreshes it every second.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::Role;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

const UNKNOWN: u8 = 0;
const PRIMARY: u8 = 1;
const REPLICA: u8 = 2;

/// One observation of a server by the monitor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub in_recovery: bool,
    /// Current WAL position (primary) or replay position (replica), in bytes.
    pub lsn: i64,
    /// The primary's timeline (0 on replicas): a promoted server's is higher.
    pub timeline: i64,
    /// Seconds since the last replayed transaction (replicas).
    pub replay_age: Option<f64>,
}

pub struct Health {
    configured: Role,
    /// Whether writes go here now (the pool's monitor decides; the
    /// configured primary until it has): such a server is never banned.
    writer: AtomicBool,
    banned_until_ms: AtomicU64,
    /// When a connection to it last failed or was lost (ms; 0: never),
    /// writers too: `default_shard = "random_healthy"` avoids such shards.
    failed_at_ms: AtomicU64,
    observed: AtomicU8,
    reachable: AtomicBool,
    lagging: AtomicBool,
    lsn: AtomicI64,
    timeline: AtomicI64,
}

impl Health {
    pub fn new(configured: Role) -> Health {
        Health {
            configured,
            writer: AtomicBool::new(configured == Role::Primary),
            banned_until_ms: AtomicU64::new(0),
            failed_at_ms: AtomicU64::new(0),
            observed: AtomicU8::new(UNKNOWN),
            reachable: AtomicBool::new(true),
            lagging: AtomicBool::new(false),
            lsn: AtomicI64::new(0),
            timeline: AtomicI64::new(0),
        }
    }

    /// The role the server has now: observed if known, else configured.
    pub fn role(&self) -> Role {
        match self.observed.load(Ordering::Relaxed) {
            PRIMARY => Role::Primary,
            REPLICA => Role::Replica,
            _ => self.configured,
        }
    }

    pub fn configured_role(&self) -> Role {
        self.configured
    }

    pub fn writer(&self) -> bool {
        self.writer.load(Ordering::Relaxed)
    }

    pub fn set_writer(&self, writer: bool) {
        self.writer.store(writer, Ordering::Relaxed);
    }

    /// Bans the server for `ban_time`. The server writes go to is never
    /// banned: clients must get its errors, not be routed around it (its
    /// failure is still remembered: see `failed_within`).
    pub fn ban(&self, ban_time: Duration) -> bool {
        self.failed_at_ms.store(now_ms(), Ordering::Relaxed);
        if self.writer() {
            return false;
        }
        let until = now_ms() + ban_time.as_millis() as u64;
        self.banned_until_ms.fetch_max(until, Ordering::Relaxed);
        true
    }

    pub fn unban(&self) {
        self.banned_until_ms.store(0, Ordering::Relaxed);
    }

    /// Whether a connection to it failed within `window`.
    pub fn failed_within(&self, window: Duration) -> bool {
        let at = self.failed_at_ms.load(Ordering::Relaxed);
        at != 0 && now_ms().saturating_sub(at) < window.as_millis() as u64
    }

    pub fn banned(&self) -> bool {
        self.banned_until_ms.load(Ordering::Relaxed) > now_ms()
    }

    /// Seconds of ban left, for SHOW BANS.
    pub fn ban_remaining(&self) -> Option<Duration> {
        let until = self.banned_until_ms.load(Ordering::Relaxed);
        let now = now_ms();
        (until > now).then(|| Duration::from_millis(until - now))
    }

    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    pub fn lagging(&self) -> bool {
        self.lagging.load(Ordering::Relaxed)
    }

    pub fn set_lagging(&self, lagging: bool) {
        self.lagging.store(lagging, Ordering::Relaxed);
    }

    pub fn lsn(&self) -> i64 {
        self.lsn.load(Ordering::Relaxed)
    }

    pub fn timeline(&self) -> i64 {
        self.timeline.load(Ordering::Relaxed)
    }

    /// Usable for reads: reachable, not banned, not too far behind.
    pub fn serves_reads(&self) -> bool {
        self.reachable() && !self.banned() && !self.lagging()
    }

    pub fn observed(&self, o: Observation) {
        self.reachable.store(true, Ordering::Relaxed);
        self.observed.store(
            if o.in_recovery { REPLICA } else { PRIMARY },
            Ordering::Relaxed,
        );
        self.lsn.store(o.lsn, Ordering::Relaxed);
        self.timeline.store(o.timeline, Ordering::Relaxed);
    }

    pub fn unreachable(&self) {
        self.reachable.store(false, Ordering::Relaxed);
    }
}

/// The query the monitor runs: role, WAL position, timeline, replay age,
/// and the primary's WAL page and segment sizes. CASE keeps primary-only
/// functions away from replicas. The primary's position is where WAL is
/// inserted, not written: a commit acknowledged with `synchronous_commit =
/// off` may not be written yet, and a read that must see it waits for a
/// replica past where it ends (`freshness`).
pub const MONITOR_SQL: &str = "select pg_is_in_recovery(), \
    (case when pg_is_in_recovery() then coalesce(pg_last_wal_replay_lsn(), '0/0') \
          else pg_current_wal_insert_lsn() end - '0/0'::pg_lsn)::int8, \
    case when pg_is_in_recovery() then 0 \
         else ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int8 end, \
    case when pg_is_in_recovery() then extract(epoch from now() - pg_last_xact_replay_timestamp())::float8 end, \
    current_setting('wal_block_size')::int8, \
    pg_size_bytes(current_setting('wal_segment_size'))";

/// The end of the last record inserted, from the insert position: right
/// after a page's header (24 bytes; 40 on a segment's first page) nothing
/// of the page is written yet, and the record before ended at the page's
/// start, which is where a replica that replayed it stands. Left as it is,
/// no replica could reach it until other WAL came (read-your-writes would
/// keep a client on the primary for seconds on a quiet primary).
pub fn inserted_end(insert: i64, block: i64, segment: i64) -> i64 {
    const SHORT_HEADER: i64 = 24;
    const LONG_HEADER: i64 = 40;
    if segment > 0 && insert % segment == LONG_HEADER {
        insert - LONG_HEADER
    } else if block > 0 && insert % block == SHORT_HEADER {
        insert - SHORT_HEADER
    } else {
        insert
    }
}

pub fn parse_observation(row: &[Option<String>]) -> Option<Observation> {
    let in_recovery = row.first()?.as_deref()? == "t";
    let mut lsn = row.get(1)?.as_deref()?.parse().ok()?;
    let setting = |i: usize| {
        row.get(i)
            .and_then(|v| v.as_deref())
            .and_then(|v| v.parse().ok())
    };
    if let (false, Some(block), Some(segment)) = (in_recovery, setting(4), setting(5)) {
        lsn = inserted_end(lsn, block, segment);
    }
    let timeline = row.get(2)?.as_deref()?.parse().ok()?;
    let replay_age = row
        .get(3)
        .and_then(|v| v.as_deref())
        .and_then(|v| v.parse().ok());
    Some(Observation {
        in_recovery,
        lsn,
        timeline,
        replay_age,
    })
}

/// Replica lag limits of a pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct LagLimit {
    pub bytes: Option<u64>,
    pub seconds: Option<f64>,
}

impl LagLimit {
    /// Behind by more than allowed? Replay age counts only while the replica
    /// has WAL left to replay, so an idle primary does not make it "late".
    pub fn exceeded(&self, primary_lsn: i64, replica: &Observation) -> bool {
        let behind = (primary_lsn - replica.lsn).max(0) as u64;
        if self.bytes.is_some_and(|max| behind > max) {
            return true;
        }
        behind > 0
            && self
                .seconds
                .zip(replica.replay_age)
                .is_some_and(|(max, age)| age > max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_insert_position_past_a_page_header_ends_at_the_page() {
        const SEG: i64 = 16 << 20;
        assert_eq!(inserted_end(3 * 8192 + 24, 8192, SEG), 3 * 8192);
        assert_eq!(inserted_end(2 * SEG + 40, 8192, SEG), 2 * SEG);
        // A record that runs 16 bytes into the next page ends 40 bytes in:
        // only a segment's first page has a 40-byte header.
        assert_eq!(inserted_end(3 * 8192 + 40, 8192, SEG), 3 * 8192 + 40);
        assert_eq!(inserted_end(3 * 8192 + 100, 8192, SEG), 3 * 8192 + 100);
        let row = |lsn: &str| {
            [
                Some("f"),
                Some(lsn),
                Some("1"),
                None,
                Some("8192"),
                Some("16777216"),
            ]
            .map(|v| v.map(str::to_string))
        };
        assert_eq!(parse_observation(&row("24600")).map(|o| o.lsn), Some(24576));
        let replica = [
            Some("t"),
            Some("24600"),
            Some("0"),
            None,
            Some("8192"),
            Some("16777216"),
        ]
        .map(|v| v.map(str::to_string));
        assert_eq!(
            parse_observation(&replica).map(|o| o.lsn),
            Some(24600),
            "replay positions are ends already"
        );
    }

    #[test]
    fn primaries_are_never_banned() {
        let h = Health::new(Role::Primary);
        assert!(!h.ban(Duration::from_secs(60)));
        assert!(!h.banned());
        let r = Health::new(Role::Replica);
        assert!(r.ban(Duration::from_secs(60)));
        assert!(r.banned() && !r.serves_reads());
        r.unban();
        assert!(r.serves_reads());
    }

    #[test]
    fn observed_role_wins() {
        let h = Health::new(Role::Replica);
        h.observed(Observation {
            in_recovery: false,
            lsn: 10,
            timeline: 2,
            replay_age: None,
        });
        assert_eq!(h.role(), Role::Primary);
        assert!(
            h.ban(Duration::from_secs(1)),
            "a second primary that takes no writes (pgcat's \"replicas\" that are clusters of their own) can be banned"
        );
        h.unban();
        h.set_writer(true);
        assert!(
            !h.ban(Duration::from_secs(1)),
            "a promoted replica that writes go to is not"
        );
    }

    #[test]
    fn lag() {
        let limit = LagLimit {
            bytes: Some(1000),
            seconds: Some(5.0),
        };
        let replica = |lsn, age| Observation {
            in_recovery: true,
            lsn,
            timeline: 0,
            replay_age: Some(age),
        };
        assert!(
            limit.exceeded(5000, &replica(4500, 100.0)),
            "behind and stale"
        );
        assert!(limit.exceeded(5000, &replica(3000, 0.0)));
        assert!(
            !limit.exceeded(5000, &replica(5000, 100.0)),
            "idle primary, caught up"
        );
    }

    #[test]
    fn parses_monitor_rows() {
        let row = vec![
            Some("f".into()),
            Some("1234".into()),
            Some("3".into()),
            None,
        ];
        let o = parse_observation(&row).unwrap();
        assert!(!o.in_recovery && o.lsn == 1234 && o.timeline == 3 && o.replay_age.is_none());
    }
}
