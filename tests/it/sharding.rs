//! Sharding against real Postgres: pgmlcat's hash functions must agree with
//! the partition Postgres picks for a `PARTITION BY HASH` table.

use crate::common::*;
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

/// Three shards; on each, tables whose CHECK only accepts rows that hash to
/// that shard, so a misrouted insert fails.
/// Rows with every value as its raw wire bytes (binary format).
async fn raw_rows(
    c: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<Vec<Option<Vec<u8>>>> {
    struct Raw(Vec<u8>);
    impl<'a> tokio_postgres::types::FromSql<'a> for Raw {
        fn from_sql(
            _: &tokio_postgres::types::Type,
            raw: &'a [u8],
        ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
            Ok(Raw(raw.to_vec()))
        }
        fn accepts(_: &tokio_postgres::types::Type) -> bool {
            true
        }
    }
    c.query(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.get::<_, Option<Raw>>(i).map(|v| v.0))
                .collect()
        })
        .collect()
}

fn shard_clusters() -> Vec<PgCluster> {
    let shards: Vec<PgCluster> = (0..3).map(|_| PgCluster::start()).collect();
    for (i, pg) in shards.iter().enumerate() {
        pg.psql(
            "app",
            &format!(
                "create table users_p(id int8) partition by hash (id); \
                 create table users(id int8 primary key, name text, check (satisfies_hash_partition('users_p'::regclass, 3, {i}, id))); \
                 create table accounts_p(k text) partition by hash (k); \
                 create table accounts(k text primary key, check (satisfies_hash_partition('accounts_p'::regclass, 3, {i}, k))); \
                 create table devices_p(k uuid) partition by hash (k); \
                 create table devices(k uuid primary key, check (satisfies_hash_partition('devices_p'::regclass, 3, {i}, k)))"
            ),
        );
    }
    shards
}

fn sharded_config(port: u16, shards: &[PgCluster]) -> String {
    let mut cfg =
        format!("[general]\nhost = \"127.0.0.1\"\nport = {port}\nconnect_timeout = 3000\n");
    for (pool, key, key_type) in [
        ("app", "users.id", "bigint"),
        ("acct", "accounts.k", "text"),
        ("dev", "devices.k", "uuid"),
    ] {
        cfg.push_str(&format!(
            "\n[pools.{pool}]\npool_mode = \"transaction\"\ndefault_shard = \"all\"\nautomatic_sharding_key = \"{key}\"\nsharding_key_type = \"{key_type}\"\n\
             sharding_key_regex = '/\\* sharding_key: (\\S+) \\*/'\nshard_id_regex = '/\\* shard_id: (\\d+) \\*/'\n\
             [pools.{pool}.users.0]\nusername = \"app\"\npassword = \"app_pw\"\npool_size = 2\n"
        ));
        for (i, pg) in shards.iter().enumerate() {
            cfg.push_str(&format!(
                "[pools.{pool}.shards.{i}]\nservers = [[\"127.0.0.1\", {}, \"primary\"]]\ndatabase = \"app\"\n",
                pg.port
            ));
        }
    }
    cfg
}

fn count_on(pg: &PgCluster, sql: &str) -> i64 {
    pg.psql("app", sql).parse().expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_routing_method_lands_rows_on_the_right_shard() {
    let shards = shard_clusters();
    let port = free_port();
    let proxy = Proxy::start(port, &sharded_config(port, &shards));
    let c = connect(&proxy.url("app", "app_pw", "app")).await;
    // Automatic key, simple protocol (a misrouted row would fail the CHECK).
    for id in 1..=30i64 {
        c.simple_query(&format!(
            "insert into users (id, name) values ({id}, 'simple')"
        ))
        .await
        .expect("simple insert");
    }
    // Automatic key in Bind parameters (binary int8), extended protocol.
    for id in 31..=60i64 {
        c.execute(
            "insert into users (id, name) values ($1, $2)",
            &[&id, &"bind"],
        )
        .await
        .expect("bind insert");
    }
    // SET SHARDING KEY for a statement whose key pgmlcat cannot see.
    c.simple_query("SET SHARDING KEY TO '61'")
        .await
        .expect("set key");
    c.simple_query("insert into users (id, name) select 61, 'set key'")
        .await
        .expect("insert via key");
    let shown = c.simple_query("SHOW SHARD").await.expect("show shard");
    assert!(
        matches!(&shown[1], tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some(&Key::Bigint(61).shard(3).to_string()[..]))
    );
    c.simple_query("SET SHARD TO 'ANY'").await.expect("reset");
    // Comments.
    c.simple_query("/* sharding_key: 62 */ insert into users (id, name) select 62, 'comment'")
        .await
        .expect("comment key");
    let s = Key::Bigint(63).shard(3);
    c.simple_query(&format!(
        "/* shard_id: {s} */ insert into users (id, name) select 63, 'shard id'"
    ))
    .await
    .expect("comment shard");
    // SET SHARD.
    let s = Key::Bigint(64).shard(3);
    c.simple_query(&format!("SET SHARD TO '{s}'"))
        .await
        .expect("set shard");
    c.simple_query("insert into users (id, name) select 64, 'set shard'")
        .await
        .expect("insert on shard");
    c.simple_query("SET SHARD TO 'any'").await.expect("reset");
    // Every row is where Postgres's hash partitioning puts it.
    let total: i64 = shards
        .iter()
        .map(|pg| count_on(pg, "select count(*) from users"))
        .sum();
    assert_eq!(total, 64);
    for (i, pg) in shards.iter().enumerate() {
        for id in pg.psql("app", "select id from users").lines() {
            assert_eq!(
                Key::Bigint(id.parse().unwrap()).shard(3),
                i,
                "row {id} on shard {i}"
            );
        }
    }
    // Reads by key, both protocols.
    let name: String = c
        .query_one("select name from users where id = $1", &[&40i64])
        .await
        .expect("read by bind")
        .get(0);
    assert_eq!(name, "bind");
    let rows = c
        .simple_query("select name from users where id = 7")
        .await
        .expect("read by key");
    assert!(rows.iter().any(
        |m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("simple"))
    ));
    // A statement with no key: a clear error naming it, and the session goes on.
    let err = c
        .simple_query("update users set name = 'x'")
        .await
        .expect_err("no key");
    let db = err.as_db_error().expect("db error");
    assert_eq!(db.code().code(), "0A000");
    assert!(db.message().contains("users.id"), "{}", db.message());
    let n: i64 = c
        .query_one("select count(*) from users where id = 1", &[])
        .await
        .expect("usable")
        .get(0);
    assert_eq!(n, 1);
    // A transaction stays on its shard.
    c.batch_execute("begin").await.expect("begin");
    c.execute("insert into users (id, name) values ($1, 'tx')", &[&100i64])
        .await
        .expect("tx insert");
    let n: i64 = c
        .query_one("select count(*) from users where id = $1", &[&100i64])
        .await
        .expect("same shard")
        .get(0);
    assert_eq!(n, 1);
    c.batch_execute("commit").await.expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_and_uuid_keys_route_like_postgres() {
    let shards = shard_clusters();
    let port = free_port();
    let proxy = Proxy::start(port, &sharded_config(port, &shards));
    let acct = connect(&proxy.url("app", "app_pw", "acct")).await;
    for i in 0..40 {
        let k = format!("customer-{i}");
        if i % 2 == 0 {
            acct.simple_query(&format!("insert into accounts (k) values ('{k}')"))
                .await
                .expect("text simple");
        } else {
            acct.execute("insert into accounts (k) values ($1)", &[&k])
                .await
                .expect("text bind");
        }
    }
    let dev = connect(&proxy.url("app", "app_pw", "dev")).await;
    for i in 0..40 {
        let k = format!("{:08x}-0000-4000-8000-{:012x}", i * 7919, i);
        dev.simple_query(&format!("insert into devices (k) values ('{k}')"))
            .await
            .expect("uuid simple");
    }
    let total = |t: &str| -> i64 {
        shards
            .iter()
            .map(|pg| count_on(pg, &format!("select count(*) from {t}")))
            .sum()
    };
    assert_eq!(total("accounts"), 40);
    assert_eq!(total("devices"), 40);
    let spread = shards
        .iter()
        .filter(|pg| count_on(pg, "select count(*) from accounts") > 0)
        .count();
    assert_eq!(spread, 3, "text keys should spread over all shards");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_cannot_span_shards() {
    let shards = shard_clusters();
    let port = free_port();
    let proxy = Proxy::start(port, &sharded_config(port, &shards));
    let c = connect(&proxy.url("app", "app_pw", "app")).await;
    let a = 1i64;
    let b = (2..100)
        .find(|k| Key::Bigint(*k).shard(3) != Key::Bigint(a).shard(3))
        .unwrap();
    // Simple protocol.
    c.batch_execute("begin").await.expect("begin");
    c.simple_query(&format!("insert into users (id, name) values ({a}, 'a')"))
        .await
        .expect("first shard");
    let err = c
        .simple_query(&format!("insert into users (id, name) values ({b}, 'b')"))
        .await
        .expect_err("second shard");
    let db = err.as_db_error().expect("db error");
    assert_eq!(db.code().code(), "0A000");
    assert!(
        db.message().contains("cannot span shards"),
        "{}",
        db.message()
    );
    // Keyless statements stay on the transaction's shard.
    let n: i64 = c
        .query_one("select count(*) from users", &[])
        .await
        .expect("keyless in tx")
        .get(0);
    assert_eq!(n, 1);
    c.batch_execute("commit").await.expect("commit");
    // Extended protocol: the refusal comes in order and the session goes on.
    c.batch_execute("begin").await.expect("begin");
    c.execute(
        "insert into users (id, name) values ($1, 'x')",
        &[&(a + 3000)],
    )
    .await
    .ok();
    let shard_a = Key::Bigint(a + 3000).shard(3);
    let other = (4000..4100)
        .find(|k| Key::Bigint(*k).shard(3) != shard_a)
        .unwrap();
    let err = c
        .execute("insert into users (id, name) values ($1, 'y')", &[&other])
        .await
        .expect_err("other shard");
    assert_eq!(err.code().map(|c| c.code()), Some("0A000"));
    c.batch_execute("rollback").await.expect("rollback");
    let total: i64 = shards
        .iter()
        .map(|pg| count_on(pg, "select count(*) from users"))
        .sum();
    assert_eq!(total, 1, "only the committed row remains");
    let v: i32 = c.query_one("select 1", &[]).await.expect("usable").get(0);
    assert_eq!(v, 1);
}

/// Rows of a simple query as `a|b|c` lines (NULL as empty), like psql -At.
async fn lines(c: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_reads_merge_like_one_postgres() {
    let shards = shard_clusters();
    let reference = PgCluster::start();
    for (i, pg) in shards.iter().enumerate() {
        pg.psql(
            "app",
            &format!(
                "create table orders(id int8 primary key, customer int8, region text, amount numeric(10,2), qty int4, \
                 check (satisfies_hash_partition('users_p'::regclass, 3, {i}, id)))"
            ),
        );
    }
    reference.psql("app", "create table orders(id int8 primary key, customer int8, region text, amount numeric(10,2), qty int4)");
    let port = free_port();
    let proxy = Proxy::start(
        port,
        &sharded_config(port, &shards).replace("users.id", "orders.id"),
    );
    let c = connect(&proxy.url("app", "app_pw", "app")).await;
    let mut values = Vec::new();
    for id in 1..=200i64 {
        let region = ["north", "south", "east", "west"][(id % 4) as usize];
        let amount = format!("{}.{:02}", (id * 37) % 500, (id * 13) % 100);
        let qty = if id % 17 == 0 {
            "null".to_string()
        } else {
            ((id * 7) % 23).to_string()
        };
        let row = format!("({id}, {}, '{region}', {amount}, {qty})", id % 13);
        c.simple_query(&format!(
            "insert into orders (id, customer, region, amount, qty) values {row}"
        ))
        .await
        .expect("insert through the proxy");
        values.push(row);
    }
    reference.psql(
        "app",
        &format!("insert into orders values {}", values.join(",")),
    );
    let on_reference = |sql: &str| -> Vec<String> {
        let out = reference.psql("app", sql);
        out.lines().map(str::to_string).collect()
    };
    // Order-independent: the union of all shards.
    let mut got = lines(&c, "select id, region from orders").await;
    let mut want = on_reference("select id, region from orders");
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(got.len(), 200);
    // Ordered, limited, aggregated: exactly what one Postgres says.
    for sql in [
        "select id, amount from orders order by amount desc, id limit 7 offset 3",
        "select id, qty from orders order by qty nulls first, id desc limit 10",
        "select id from orders order by qty desc, id limit 5",
        "select * from orders order by id limit 3",
        "select id from orders order by id offset 195",
        "select region, count(*), sum(amount), min(amount), max(qty), avg(amount), avg(qty) from orders group by region order by region",
        "select count(*), sum(qty), avg(amount), min(region), max(amount) from orders",
        "select customer, count(*) as n from orders group by customer order by n desc, customer limit 5",
        "select count(*) from orders group by region order by 1",
        "select count(*) from orders where id < 0",
    ] {
        assert_eq!(lines(&c, sql).await, on_reference(sql), "{sql}");
    }
    // The extended protocol, binary results, parameters: byte for byte what
    // one Postgres returns.
    let direct = connect(&format!(
        "host=127.0.0.1 port={} user=app password=app_pw dbname=app",
        reference.port
    ))
    .await;
    for sql in [
        "select id, region from orders order by id",
        "select id, amount from orders where qty > $1 order by amount desc, id limit 7 offset 3",
        "select region, count(*), sum(amount), min(amount), max(qty), avg(amount), avg(qty) from orders where qty > $1 group by region order by region",
        "select count(*), sum(qty), avg(amount) from orders where qty > $1",
        "select customer, count(*) as n from orders group by customer order by n desc, customer limit 5",
    ] {
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = if sql.contains("$1") { vec![&5i32] } else { vec![] };
        let got = raw_rows(&c, sql, &params).await;
        let want = raw_rows(&direct, sql, &params).await;
        assert_eq!(got, want, "{sql}");
        assert!(!got.is_empty(), "{sql}");
    }
    // A statement prepared once and executed again.
    let stmt = c
        .prepare("select id from orders where region = $1 order by id desc limit 2")
        .await
        .unwrap();
    for region in ["north", "east"] {
        let ids: Vec<i64> = c
            .query(&stmt, &[&region])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let want: Vec<i64> = direct
            .query(
                "select id from orders where region = $1 order by id desc limit 2",
                &[&region],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(ids, want);
    }
    // Shapes that cannot be merged are refused clearly; the session goes on.
    let err = c
        .query("select distinct region from orders", &[])
        .await
        .expect_err("distinct");
    assert_eq!(err.code().map(|c| c.code()), Some("0A000"));
    assert_eq!(
        c.query_one("select 1::int4", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
    for sql in [
        "select distinct region from orders",
        "select region, count(*) from orders group by region having count(*) > 1",
    ] {
        let err = c.simple_query(sql).await.expect_err(sql);
        let db = err.as_db_error().expect("db error");
        assert_eq!(db.code().code(), "0A000", "{sql}");
        assert!(db.message().contains("across shards"), "{}", db.message());
    }
    // Writes without a key are still refused, never guessed.
    let err = c
        .simple_query("delete from orders")
        .await
        .expect_err("keyless write");
    assert_eq!(err.code().map(|c| c.code()), Some("0A000"));
    assert_eq!(lines(&c, "select count(*) from orders").await, vec!["200"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_row_inserts_split_per_shard_all_or_nothing() {
    let shards = shard_clusters();
    let port = free_port();
    let proxy = Proxy::start(port, &sharded_config(port, &shards));
    let c = connect(&proxy.url("app", "app_pw", "app")).await;
    let rows: Vec<String> = (1..=30).map(|id| format!("({id}, 'n{id}')")).collect();
    let out = c
        .simple_query(&format!(
            "insert into users (id, name) values {} returning id",
            rows.join(", ")
        ))
        .await
        .expect("split insert");
    let returned = out
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count();
    assert_eq!(returned, 30);
    assert!(out
        .iter()
        .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::CommandComplete(30))));
    for (i, pg) in shards.iter().enumerate() {
        for id in pg.psql("app", "select id from users").lines() {
            assert_eq!(Key::Bigint(id.parse().unwrap()).shard(3), i);
        }
    }
    // One part fails (id 5 exists): no shard keeps any of the new rows.
    let err = c
        .simple_query("insert into users (id, name) values (5, 'dup'), (31, 'x'), (32, 'y'), (33, 'z'), (34, 'w')")
        .await
        .expect_err("duplicate key");
    assert_eq!(err.code().map(|c| c.code()), Some("23505"));
    let total: i64 = shards
        .iter()
        .map(|pg| count_on(pg, "select count(*) from users"))
        .sum();
    assert_eq!(total, 30, "a failed split insert left rows behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_from_stdin_is_split_by_key() {
    use futures_util::SinkExt;
    let shards = shard_clusters();
    let port = free_port();
    let proxy = Proxy::start(port, &sharded_config(port, &shards));
    let c = connect(&proxy.url("app", "app_pw", "app")).await;
    // Text format, all columns, sent in uneven chunks.
    let text: String = (1..=500).map(|id| format!("{id}\tname\\t{id}\n")).collect();
    let sink = c.copy_in("copy users from stdin").await.expect("copy in");
    futures_util::pin_mut!(sink);
    for chunk in text.as_bytes().chunks(777) {
        sink.send(bytes::Bytes::copy_from_slice(chunk))
            .await
            .expect("chunk");
    }
    assert_eq!(sink.finish().await.expect("copy done"), 500);
    // CSV with a header and quoted fields holding delimiters and newlines.
    let csv: String = std::iter::once("name,id\n".to_string())
        .chain((501..=600).map(|id| format!("\"a, \"\"b\"\"\nc{id}\",{id}\n")))
        .collect();
    let sink = c
        .copy_in("COPY users (name, id) FROM STDIN WITH (FORMAT csv, HEADER true)")
        .await
        .expect("copy csv");
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from(csv)).await.expect("csv");
    assert_eq!(sink.finish().await.expect("csv done"), 100);
    let total: i64 = shards
        .iter()
        .map(|pg| count_on(pg, "select count(*) from users"))
        .sum();
    assert_eq!(total, 600);
    for (i, pg) in shards.iter().enumerate() {
        assert!(
            count_on(pg, "select count(*) from users") > 100,
            "shard {i} got too few rows"
        );
    }
    let quoted: i64 = shards
        .iter()
        .map(|pg| {
            count_on(
                pg,
                "select count(*) from users where name like 'a, \"b\"' || chr(10) || 'c%'",
            )
        })
        .sum();
    assert_eq!(
        quoted, 100,
        "CSV quoting, doubled quotes and embedded newlines survive the split"
    );
    // A row without a key aborts the whole COPY on every shard.
    let sink = c
        .copy_in("copy users (id, name) from stdin")
        .await
        .expect("copy");
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(
        b"700\tok\n\\N\tno key\n701\tok\n",
    ))
    .await
    .expect("send");
    let err = sink.finish().await.expect_err("null key");
    assert_eq!(err.code().map(|c| c.code()), Some("0A000"), "{err}");
    let total: i64 = shards
        .iter()
        .map(|pg| count_on(pg, "select count(*) from users"))
        .sum();
    assert_eq!(total, 600, "a failed COPY left rows behind");
    let v: i32 = c
        .query_one("select 1", &[])
        .await
        .expect("usable after a failed COPY")
        .get(0);
    assert_eq!(v, 1);
    // psql's COPY goes through the simple protocol.
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("copy.sql");
    let data: String = (801..=900).map(|id| format!("{id}\tpsql\n")).collect();
    std::fs::write(
        &script,
        format!("COPY users (id, name) FROM STDIN;\n{data}\\.\n"),
    )
    .expect("script");
    let out = run_env(
        "psql",
        &[
            "-X",
            "-w",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "app",
            "-d",
            "app",
            "-f",
            &script.to_string_lossy(),
        ],
        &[("PGPASSWORD", "app_pw")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("COPY 100"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let total: i64 = shards
        .iter()
        .map(|pg| count_on(pg, "select count(*) from users"))
        .sum();
    assert_eq!(total, 700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_transactions_may_read_across_shards() {
    let shards = shard_clusters();
    let port = free_port();
    let proxy = Proxy::start(port, &sharded_config(port, &shards));
    let c = connect(&proxy.url("app", "app_pw", "app")).await;
    let rows: Vec<String> = (1..=12).map(|id| format!("({id}, 'n')")).collect();
    c.simple_query(&format!(
        "insert into users (id, name) values {}",
        rows.join(",")
    ))
    .await
    .expect("insert");
    c.batch_execute("begin read only")
        .await
        .expect("begin read only");
    assert_eq!(lines(&c, "select count(*) from users").await, vec!["12"]);
    assert_eq!(lines(&c, "select max(id) from users").await, vec!["12"]);
    c.batch_execute("commit").await.expect("commit");
    // A read-write transaction must name its shard.
    c.batch_execute("begin").await.expect("begin");
    let err = c
        .simple_query("select count(*) from users")
        .await
        .expect_err("keyless read in a read-write transaction");
    assert_eq!(err.code().map(|c| c.code()), Some("0A000"));
    c.batch_execute("rollback").await.expect("rollback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injection_in_sharding_keys_stays_a_value() {
    let shards = shard_clusters();
    let port = free_port();
    let proxy = Proxy::start(port, &sharded_config(port, &shards));
    let c = connect(&proxy.url("app", "app_pw", "app")).await;
    // A bigint key that is really SQL is refused as a bad key.
    let err = c
        .simple_query("SET SHARDING KEY TO '1; drop table users'")
        .await
        .expect_err("not a bigint");
    assert_eq!(err.code().map(|c| c.code()), Some("22023"));
    let err = c
        .simple_query("/* sharding_key: 1;drop_table_users */ select 1 from users")
        .await
        .expect_err("not a bigint");
    assert_eq!(err.code().map(|c| c.code()), Some("22023"));
    // A text key is hashed as a value, never spliced into SQL.
    let acct = connect(&proxy.url("app", "app_pw", "acct")).await;
    acct.simple_query("SET SHARDING KEY TO 'x''; drop table accounts; --'")
        .await
        .expect("any text is a key");
    acct.execute(
        "insert into accounts (k) values ($1)",
        &[&"y'); drop table accounts; --"],
    )
    .await
    .expect("bound value");
    for pg in &shards {
        assert_eq!(
            pg.psql(
                "app",
                "select count(*) from pg_tables where tablename in ('users', 'accounts')"
            ),
            "2"
        );
    }
    let total: i64 = shards
        .iter()
        .map(|pg| count_on(pg, "select count(*) from accounts"))
        .sum();
    assert_eq!(total, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_shard_random_spreads_reads_and_refuses_keyless_writes() {
    let shards = shard_clusters();
    for pg in &shards {
        pg.psql("app", "create table countries(code text primary key); insert into countries values ('fr'), ('de')");
    }
    let port = free_port();
    let config = sharded_config(port, &shards).replacen(
        "default_shard = \"all\"",
        "default_shard = \"random\"",
        1,
    );
    let proxy = Proxy::start(port, &config);
    let c = connect(&proxy.url("app", "app_pw", "app")).await;
    let mut ports = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let rows = lines(&c, "select current_setting('port') from countries limit 1").await;
        ports.insert(rows[0].clone());
    }
    assert!(ports.len() >= 2, "30 keyless reads all went to {ports:?}");
    let err = c
        .simple_query("insert into users (name) values ('no key')")
        .await
        .expect_err("a keyless write is not placed at random");
    assert_eq!(err.code().map(|c| c.code()), Some("0A000"));
    let bad = sharded_config(port, &shards).replacen(
        "default_shard = \"all\"",
        "default_shard = \"shard_9\"",
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgcat.toml");
    std::fs::write(&path, bad).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgmlcat"))
        .arg("--check")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("default_shard"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// pgcat's default: with no `default_shard`, a statement that names no
/// shard goes to shard 0 (pgbench -i through a sharded pool works, as it
/// does through pgcat); rows with keys still go where their keys say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_default_shard_keyless_statements_go_to_shard_0() {
    let shards = shard_clusters();
    let port = free_port();
    let config = sharded_config(port, &shards).replace("default_shard = \"all\"\n", "");
    let proxy = Proxy::start(port, &config);
    let c = connect(&proxy.url("app", "app_pw", "app")).await;
    c.batch_execute("create table keyless(x int); insert into keyless values (1), (2)")
        .await
        .expect("keyless DDL and write go to shard 0");
    let n = lines(&c, "select count(*) from keyless").await;
    assert_eq!(n, ["2"], "a keyless read is shard 0's");
    assert_eq!(
        count_on(&shards[0], "select count(*) from keyless"),
        2,
        "on shard 0"
    );
    for pg in &shards[1..] {
        let exists = pg.psql(
            "app",
            "select count(*) from pg_tables where tablename = 'keyless'",
        );
        assert_eq!(exists, "0", "nothing on the other shards");
    }
    // A key still decides.
    for id in 1..=12i64 {
        c.simple_query(&format!("insert into users (id, name) values ({id}, 'k')"))
            .await
            .expect("keyed insert");
    }
    let on: Vec<i64> = shards
        .iter()
        .map(|pg| count_on(pg, "select count(*) from users where name = 'k'"))
        .collect();
    assert_eq!(on.iter().sum::<i64>(), 12);
    assert!(
        on.iter().filter(|n| **n > 0).count() >= 2,
        "keyed rows spread: {on:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_intercept_plugin_answers_with_the_pool_name() {
    let shards = shard_clusters();
    let port = free_port();
    // pgcat's three-shard spec set-up: an IDE's first question, answered
    // for the pool (a server would say its own database, "app").
    let config = format!(
        "{}\n[pools.sharded_db.plugins.intercept]\nenabled = true\n\
         [pools.sharded_db.plugins.intercept.queries.0]\n\
         query = \"select current_database() as a, current_schemas(false) as b\"\n\
         schema = [[\"a\", \"text\"], [\"b\", \"text\"]]\n\
         result = [[\"${{DATABASE}}\", \"{{public}}\"]]\n",
        sharded_config(port, &shards).replace("[pools.app", "[pools.sharded_db")
    );
    let proxy = Proxy::start(port, &config);
    let c = connect(&proxy.url("app", "app_pw", "sharded_db")).await;
    let rows = c
        .query(
            "SELECT current_database() AS a, current_schemas(false) AS b",
            &[],
        )
        .await;
    // Extended protocol goes to the servers (pgcat intercepts simple
    // queries only); the simple query is answered.
    assert!(rows.is_ok(), "{rows:?}");
    let got = lines(
        &c,
        "select current_database() as a,  current_schemas(false) as b;",
    )
    .await;
    assert_eq!(got, ["sharded_db|{public}"]);
    let other = lines(&c, "select current_database()").await;
    assert_eq!(other, ["app"], "other statements reach the servers");
}

/// Under `default_shard = "all"`, a keyless schema change runs on every
/// shard, all or nothing, and answers with the server's tag; keyless
/// writes are still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_all_schema_changes_run_on_every_shard() {
    let shards = shard_clusters();
    let port = free_port();
    let proxy = Proxy::start(port, &sharded_config(port, &shards));
    let c = connect(&proxy.url("app", "app_pw", "app")).await;
    let tables = |pg: &PgCluster| {
        pg.psql(
            "app",
            "select count(*) from pg_tables where tablename = 'everywhere'",
        )
    };
    c.simple_query("create table everywhere(id int8 primary key, v text)")
        .await
        .expect("create on every shard");
    for pg in &shards {
        assert_eq!(tables(pg), "1");
    }
    c.batch_execute("alter table everywhere add column w int; create index on everywhere(v)")
        .await
        .expect("alter and index on every shard");
    for pg in &shards {
        assert_eq!(
            pg.psql(
                "app",
                "select count(*) from pg_indexes where tablename = 'everywhere'"
            ),
            "2"
        );
    }
    // It fails on one shard: none keeps it.
    shards[1].psql("app", "create table clash(x int)");
    let err = c
        .simple_query("create table clash(x int)")
        .await
        .expect_err("exists on shard 1");
    assert_eq!(err.code().map(|c| c.code()), Some("42P07"), "{err}");
    assert_eq!(
        shards[0].psql(
            "app",
            "select count(*) from pg_tables where tablename = 'clash'"
        ),
        "0",
        "rolled back where it had succeeded"
    );
    let err = c
        .simple_query("update everywhere set v = 'x'")
        .await
        .expect_err("keyless write");
    assert_eq!(err.code().map(|c| c.code()), Some("0A000"));
    c.simple_query("drop table everywhere")
        .await
        .expect("drop on every shard");
    for pg in &shards {
        assert_eq!(tables(pg), "0");
    }
}

async fn port_of(c: &tokio_postgres::Client) -> Result<u16, tokio_postgres::Error> {
    c.query_one("select inet_server_port()", &[])
        .await
        .map(|r| r.get::<_, i32>(0) as u16)
}

/// pgcat's random_healthy: keyless reads go to random shards, but not to
/// one whose server failed lately (within ban_time), even though it is
/// back; a shard_id comment still reaches it. A client whose query was
/// in flight on the failing server is closed, as a direct connection is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_healthy_avoids_a_shard_that_failed_lately() {
    let shards = shard_clusters();
    let port = free_port();
    let config = sharded_config(port, &shards).replace(
        "default_shard = \"all\"",
        "default_shard = \"random_healthy\"",
    );
    let proxy = Proxy::start(port, &config);
    let url = proxy.url("app", "app_pw", "app");
    let mut c = connect(&url).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..40 {
        seen.insert(port_of(&c).await.expect("read"));
    }
    assert_eq!(seen.len(), 3, "reads spread over every shard");
    shards[1].stop();
    for _ in 0..20 {
        if port_of(&c).await.is_err() && c.is_closed() {
            c = connect(&url).await;
        }
    }
    shards[1].restart();
    for _ in 0..30 {
        let p = port_of(&c).await.expect("healthy shards answer");
        assert_ne!(p, shards[1].port, "a shard that failed lately is avoided");
    }
    let row = c
        .query_one("/* shard_id: 1 */ select inet_server_port()", &[])
        .await
        .expect("the comment still reaches it");
    assert_eq!(row.get::<_, i32>(0) as u16, shards[1].port);
}
