//! Sharding against real Postgres: pgmlcat's hash functions must agree with
//! the partition Postgres picks for a `PARTITION BY HASH` table.

mod common;

use common::*;
use pgmlcat::router::hash::{hash_bytes_extended, hashint8_extended, Key, PARTITION_SEED};

const SEED_SQL: &str = "8816678312871386365"; // PARTITION_SEED as int8

#[test]
fn hashes_match_postgres_for_bigint_text_and_uuid() {
    assert_eq!(PARTITION_SEED as i64, SEED_SQL.parse::<i64>().unwrap());
    let pg = PgCluster::start();
    // Raw extended hashes.
    let out = pg.psql(
        "app",
        &format!(
            "select string_agg(k::text || ':' || hashint8extended(k, {SEED_SQL})::text, ',' order by k) \
             from (select unnest(array[0, 1, -1, 42, 1000000007, -9223372036854775808, 9223372036854775807]::int8[]) k) s"
        ),
    );
    for pair in out.split(',') {
        let (k, h) = pair.split_once(':').unwrap();
        let k: i64 = k.parse().unwrap();
        let h: i64 = h.parse().unwrap();
        assert_eq!(
            hashint8_extended(k, PARTITION_SEED) as i64,
            h,
            "hashint8extended({k})"
        );
    }
    let texts = [
        "",
        "a",
        "abc",
        "hello world",
        "exactly12byt",
        "thirteen byte",
        "ünïcödé ✓",
        "a much longer text that spans several twelve byte blocks",
    ];
    for t in texts {
        let h: i64 = pg
            .psql(
                "app",
                &format!(
                    "select hashtextextended('{}', {SEED_SQL})",
                    t.replace('\'', "''")
                ),
            )
            .parse()
            .unwrap();
        assert_eq!(
            hash_bytes_extended(t.as_bytes(), PARTITION_SEED) as i64,
            h,
            "hashtextextended({t:?})"
        );
    }
    // Where Postgres puts rows of hash-partitioned tables, per type.
    pg.psql(
        "app",
        "create table b(k int8) partition by hash (k); \
         create table t(k text) partition by hash (k); \
         create table u(k uuid) partition by hash (k)",
    );
    for table in ["b", "t", "u"] {
        for r in 0..3 {
            pg.psql("app", &format!("create table {table}{r} partition of {table} for values with (modulus 3, remainder {r})"));
        }
    }
    pg.psql(
        "app",
        "insert into b select g * 7919 - 500000 from generate_series(1, 300) g; \
         insert into t select 'customer-' || g from generate_series(1, 300) g; \
         insert into u select md5(g::text)::uuid from generate_series(1, 300) g",
    );
    let placed = |table: &str| -> Vec<(String, usize)> {
        pg.psql(
            "app",
            &format!("select k::text || '|' || right(tableoid::regclass::text, 1) from {table}"),
        )
        .lines()
        .map(|l| {
            let (k, r) = l.rsplit_once('|').unwrap();
            (k.to_string(), r.parse().unwrap())
        })
        .collect()
    };
    for (k, r) in placed("b") {
        assert_eq!(Key::Bigint(k.parse().unwrap()).shard(3), r, "bigint {k}");
    }
    for (k, r) in placed("t") {
        assert_eq!(Key::Text(k.clone()).shard(3), r, "text {k}");
    }
    for (k, r) in placed("u") {
        assert_eq!(Key::uuid(&k).unwrap().shard(3), r, "uuid {k}");
    }
}
