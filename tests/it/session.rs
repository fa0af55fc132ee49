//! The session in process: a `Session` over a loopback socket pair against
//! real Postgres clusters, driven one event at a time, with assertions on
//! its state (`Session::view`) as well as on the bytes the client gets.
//! Covers the transitions of the modes the session keeps as types:
//! binding (idle, one server, a split COPY), batch (holding, fan-out),
//! recovery (skip or discard to Sync), and the deferred BEGIN.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::message::frontend;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;
use pgmlcat::app::App;
use pgmlcat::frontend::session::{BatchView, BindingView, Flow, Recovery, Session};
use pgmlcat::net::messages::TxStatus;
use pgmlcat::net::stream::Stream;
use pgmlcat::net::tag::server as tag;

/// One client and its session, in this process.
struct TestClient {
    session: Session,
    client: TcpStream,
    inbox: BytesMut,
    app: Arc<App>,
}

impl TestClient {
    async fn new(config: &str) -> TestClient {
        let loaded = pgmlcat::config::parse(config).expect("a valid config");
        let app = App::new(loaded.config, PathBuf::from("in-process.toml")).expect("the app");
        let pool = app
            .registry
            .load()
            .get("app", "app")
            .cloned()
            .expect("pool app/app");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (accepted, peer) = listener.accept().await.expect("accept");
        let session = Session::start(
            app.clone(),
            Stream::Plain(accepted),
            peer,
            BytesMut::new(),
            pool,
            &[("application_name".into(), "in-process".into())],
        );
        TestClient {
            session,
            client,
            inbox: BytesMut::new(),
            app,
        }
    }

    /// Sends `out` and drives the session until `readies` ReadyForQuery
    /// came back; returns every message the client got, as (tag, body).
    async fn exchange(&mut self, out: &[u8], readies: usize) -> Vec<(u8, Bytes)> {
        self.client
            .write_all(out)
            .await
            .expect("write to the session");
        let mut got = Vec::new();
        let mut seen = 0;
        while seen < readies {
            let step = tokio::time::timeout(Duration::from_secs(10), self.session.step()).await;
            let flow = step
                .expect("the session answers")
                .expect("no session error");
            assert_eq!(flow, Flow::Continue, "the session closed");
            self.drain_inbox().await;
            while let Some((t, body)) = self.next_message() {
                if t == tag::READY_FOR_QUERY {
                    seen += 1;
                }
                got.push((t, body));
            }
        }
        got
    }

    /// Sends `out` and drives the session once (for messages that get no
    /// answer yet, like a held Parse).
    async fn send(&mut self, out: &[u8]) {
        self.client
            .write_all(out)
            .await
            .expect("write to the session");
        let step = tokio::time::timeout(Duration::from_secs(10), self.session.step()).await;
        assert_eq!(step.expect("a step").expect("no error"), Flow::Continue);
    }

    /// Reads what the session has written so far (a step finishes its
    /// writes before it returns, so it is already in the socket).
    async fn drain_inbox(&mut self) {
        use tokio::io::AsyncReadExt;
        while let Ok(Ok(n)) = tokio::time::timeout(
            Duration::from_millis(20),
            self.client.read_buf(&mut self.inbox),
        )
        .await
        {
            if n == 0 {
                break;
            }
        }
    }

    fn next_message(&mut self) -> Option<(u8, Bytes)> {
        if self.inbox.len() < 5 {
            return None;
        }
        let len = u32::from_be_bytes([self.inbox[1], self.inbox[2], self.inbox[3], self.inbox[4]]);
        let total = len as usize + 1;
        if self.inbox.len() < total {
            return None;
        }
        let t = self.inbox[0];
        let mut msg = self.inbox.split_to(total);
        msg.advance(5);
        Some((t, msg.freeze()))
    }

    /// How many statement texts the pool has parsed for routing.
    fn parses(&self) -> u64 {
        let registry = self.app.registry.load();
        let pool = registry.get("app", "app").expect("pool app/app");
        pool.analyses.parses()
    }
}

fn query(sql: &str) -> BytesMut {
    let mut out = BytesMut::new();
    frontend::query(sql, &mut out).expect("a query message");
    out
}

/// Parse (unnamed), Bind with text parameters, Execute, then Sync.
fn extended(sql: &str, params: &[&str]) -> BytesMut {
    let mut out = parse_only(sql);
    bind_execute(&mut out, params);
    frontend::sync(&mut out);
    out
}

fn parse_only(sql: &str) -> BytesMut {
    let mut out = BytesMut::new();
    frontend::parse("", sql, std::iter::empty(), &mut out).expect("parse");
    out
}

fn bind_execute(out: &mut BytesMut, params: &[&str]) {
    frontend::bind(
        "",
        "",
        std::iter::empty::<i16>(),
        params.iter(),
        |p, buf| {
            buf.extend_from_slice(p.as_bytes());
            Ok(postgres_protocol::IsNull::No)
        },
        std::iter::empty::<i16>(),
        out,
    )
    .map_err(|_| "bind")
    .expect("bind");
    frontend::execute("", 0, out).expect("execute");
}

fn tags(msgs: &[(u8, Bytes)]) -> String {
    msgs.iter().map(|(t, _)| *t as char).collect()
}

fn data_rows(msgs: &[(u8, Bytes)]) -> Vec<String> {
    msgs.iter()
        .filter(|(t, _)| *t == tag::DATA_ROW)
        .map(|(_, b)| {
            let len = i32::from_be_bytes([b[2], b[3], b[4], b[5]]);
            String::from_utf8_lossy(&b[6..6 + len as usize]).into_owned()
        })
        .collect()
}

fn error_code(msgs: &[(u8, Bytes)]) -> Option<String> {
    let (_, body) = msgs.iter().find(|(t, _)| *t == tag::ERROR_RESPONSE)?;
    Some(pgmlcat::net::messages::parse_error_fields(body).code)
}

/// Two shards, each with `users` hash-partitioned the way the proxy places
/// keys, and a row per shard.
fn two_shards() -> (Vec<PgCluster>, String, [i64; 2]) {
    let shards = vec![PgCluster::start(), PgCluster::start()];
    let config = sharded_pool_config(free_port(), &shards).replace(
        "pool_mode = \"transaction\"",
        "pool_mode = \"transaction\"\nautomatic_sharding_key = \"users.id\"",
    );
    // Keys that land on shard 0 and shard 1 (PARTITION BY HASH placement).
    let on = |shard: usize| {
        (1i64..)
            .find(|k| {
                let key = pgmlcat::router::hash::Key::Bigint(*k);
                key.shard(2) == shard
            })
            .expect("a key for every shard")
    };
    let keys = [on(0), on(1)];
    for (i, pg) in shards.iter().enumerate() {
        pg.psql("app", "create table users (id int8 primary key, name text)");
        pg.psql(
            "app",
            &format!("insert into users values ({}, 'on shard {i}')", keys[i]),
        );
    }
    (shards, config, keys)
}

#[tokio::test]
async fn a_transaction_binds_a_server_and_gives_it_back() {
    let pg = PgCluster::start();
    let mut c = TestClient::new(&simple_config(free_port(), &pg, "transaction", 2)).await;
    assert_eq!(c.session.view().binding, BindingView::Idle);

    let got = c.exchange(&query("select 40 + 2"), 1).await;
    assert_eq!(tags(&got), "TDCZ");
    assert_eq!(data_rows(&got), ["42"]);
    let v = c.session.view();
    assert_eq!(
        v.binding,
        BindingView::Idle,
        "given back after the statement"
    );
    assert!(!v.holds_buffer, "an idle client lends its buffer back");
    assert_eq!(v.owed, 0);

    c.exchange(&query("begin"), 1).await;
    let v = c.session.view();
    assert_eq!(v.binding, BindingView::One { shard: 0 });
    assert_eq!(v.status, TxStatus::InTransaction);
    let got = c.exchange(&query("select 1/0"), 1).await;
    assert_eq!(error_code(&got).as_deref(), Some("22012"));
    assert_eq!(c.session.view().status, TxStatus::Failed);
    assert_eq!(c.session.view().binding, BindingView::One { shard: 0 });
    c.exchange(&query("rollback"), 1).await;
    assert_eq!(c.session.view().binding, BindingView::Idle);
    assert_eq!(c.session.view().status, TxStatus::Idle);
}

#[tokio::test]
async fn held_messages_wait_for_the_bind_that_names_the_shard() {
    let (shards, config, keys) = two_shards();
    let mut c = TestClient::new(&config).await;
    c.send(&parse_only("select name from users where id = $1"))
        .await;
    assert_eq!(c.session.view().batch, BatchView::Holding(1));
    assert_eq!(c.session.view().binding, BindingView::Idle);

    let mut rest = BytesMut::new();
    bind_execute(&mut rest, &[&keys[1].to_string()]);
    frontend::sync(&mut rest);
    let got = c.exchange(&rest, 1).await;
    assert_eq!(tags(&got), "12DCZ");
    assert_eq!(
        data_rows(&got),
        ["on shard 1"],
        "the Bind's key chose shard 1"
    );
    let v = c.session.view();
    assert_eq!(v.batch, BatchView::None);
    assert_eq!(v.binding, BindingView::Idle);
    assert_eq!(
        shards[1].psql(
            "app",
            &format!("select name from users where id = {}", keys[1])
        ),
        "on shard 1",
        "the row is where the proxy looked"
    );
}

#[tokio::test]
async fn a_keyless_read_collects_its_batch_and_runs_everywhere() {
    let (shards, config, _) = two_shards();
    let mut c = TestClient::new(&config).await;
    let mut batch = parse_only("select name from users order by name");
    bind_execute(&mut batch, &[]);
    c.send(&batch).await;
    assert_eq!(
        c.session.view().batch,
        BatchView::FanOut(3),
        "Parse, Bind, Execute"
    );
    let mut sync = BytesMut::new();
    frontend::sync(&mut sync);
    let got = c.exchange(&sync, 1).await;
    assert_eq!(data_rows(&got), ["on shard 0", "on shard 1"]);
    assert_eq!(c.session.view().batch, BatchView::None);
    assert_eq!(c.session.view().binding, BindingView::Idle);
    // The same answer as one Postgres holding both rows.
    let direct: Vec<String> = shards
        .iter()
        .map(|pg| pg.psql("app", "select name from users"))
        .collect();
    let mut direct = direct;
    direct.sort();
    assert_eq!(data_rows(&got), direct);
}

#[tokio::test]
async fn a_refusal_without_a_server_skips_to_sync() {
    let (_shards, config, _) = two_shards();
    let mut c = TestClient::new(&config).await;
    // A keyless write: refused at its Bind, before any server.
    let mut batch = parse_only("delete from users");
    bind_execute(&mut batch, &[]);
    c.send(&batch).await;
    assert_eq!(c.session.view().recovery, Recovery::SkipToSync);
    assert_eq!(c.session.view().binding, BindingView::Idle);
    let mut sync = BytesMut::new();
    frontend::sync(&mut sync);
    let got = c.exchange(&sync, 1).await;
    assert_eq!(error_code(&got).as_deref(), Some("0A000"));
    assert_eq!(
        tags(&got),
        "EZ",
        "the Execute was dropped, the Sync answered here"
    );
    assert_eq!(c.session.view().recovery, Recovery::None);
    // The session goes on.
    let got = c.exchange(&query("select 1"), 1).await;
    assert_eq!(data_rows(&got), ["1"]);
}

#[tokio::test]
async fn a_refusal_with_a_server_discards_to_sync_and_lets_the_sync_through() {
    let (_shards, config, keys) = two_shards();
    let mut c = TestClient::new(&config).await;
    c.exchange(&query("begin"), 1).await;
    let got = c
        .exchange(
            &query(&format!("select name from users where id = {}", keys[0])),
            1,
        )
        .await;
    assert_eq!(data_rows(&got), ["on shard 0"]);
    assert_eq!(c.session.view().binding, BindingView::One { shard: 0 });
    // A statement keyed to the other shard, inside the transaction.
    let mut batch = parse_only("select name from users where id = $1");
    bind_execute(&mut batch, &[&keys[1].to_string()]);
    c.send(&batch).await;
    assert_eq!(c.session.view().recovery, Recovery::DiscardToSync);
    let mut sync = BytesMut::new();
    frontend::sync(&mut sync);
    let got = c.exchange(&sync, 1).await;
    assert_eq!(error_code(&got).as_deref(), Some("0A000"));
    assert_eq!(c.session.view().recovery, Recovery::None);
    assert_eq!(
        c.session.view().binding,
        BindingView::One { shard: 0 },
        "the transaction keeps its server"
    );
    c.exchange(&query("rollback"), 1).await;
    assert_eq!(c.session.view().binding, BindingView::Idle);
}

#[tokio::test]
async fn a_lone_begin_waits_for_the_statement_that_places_it() {
    let (_shards, config, keys) = two_shards();
    let mut c = TestClient::new(&config).await;
    let got = c.exchange(&query("begin"), 1).await;
    assert_eq!(tags(&got), "CZ");
    let v = c.session.view();
    assert!(v.deferred_begin);
    assert_eq!(v.binding, BindingView::Idle, "no server yet");
    assert_eq!(v.status, TxStatus::InTransaction);
    let got = c
        .exchange(
            &query(&format!("select name from users where id = {}", keys[1])),
            1,
        )
        .await;
    assert_eq!(data_rows(&got), ["on shard 1"]);
    let v = c.session.view();
    assert!(!v.deferred_begin);
    assert_eq!(v.binding, BindingView::One { shard: 1 });
    c.exchange(&query("commit"), 1).await;
    assert_eq!(c.session.view().binding, BindingView::Idle);
}

#[tokio::test]
async fn a_split_copy_binds_every_shard_until_copy_done() {
    let (shards, config, keys) = two_shards();
    let mut c = TestClient::new(&config).await;
    c.send(&query("copy users (id, name) from stdin")).await;
    // The COPY started: the client got CopyInResponse.
    c.drain_inbox().await;
    let (t, _) = c.next_message().expect("CopyInResponse");
    assert_eq!(t, tag::COPY_IN_RESPONSE);
    assert_eq!(
        c.session.view().binding,
        BindingView::CopySplit { shards: 2 }
    );

    let rows = format!(
        "{}\tcopied a\n{}\tcopied b\n",
        keys[0] + 1000,
        keys[1] + 1000
    );
    let mut data = BytesMut::new();
    frontend::CopyData::new(rows.as_bytes())
        .expect("copy data")
        .write(&mut data);
    c.send(&data).await;
    assert_eq!(
        c.session.view().binding,
        BindingView::CopySplit { shards: 2 }
    );
    let mut done = BytesMut::new();
    frontend::copy_done(&mut done);
    let got = c.exchange(&done, 1).await;
    assert_eq!(tags(&got), "CZ");
    assert_eq!(c.session.view().binding, BindingView::Idle);
    let total: i64 = shards
        .iter()
        .map(|pg| {
            pg.psql(
                "app",
                "select count(*) from users where name like 'copied%'",
            )
            .parse::<i64>()
            .expect("a count")
        })
        .sum();
    assert_eq!(total, 2, "both rows landed, each on one shard");
}

#[tokio::test]
async fn a_sharded_statement_is_parsed_once() {
    let (_shards, config, keys) = two_shards();
    let mut c = TestClient::new(&config).await;
    let before = c.parses();
    let sql = format!("select name from users where id = {}", keys[0]);
    c.exchange(&query(&sql), 1).await;
    assert_eq!(c.parses(), before + 1, "one parse for a new text");
    c.exchange(&query(&sql), 1).await;
    assert_eq!(c.parses(), before + 1, "none for a text seen before");
    // A keyless read that fans out: still one parse for its whole journey
    // (routing, the merge plan, the target).
    c.exchange(&query("select count(*) from users"), 1).await;
    assert_eq!(c.parses(), before + 2);
    // Extended: Parse, Bind (the key is a parameter), Execute: one parse.
    let got = c
        .exchange(
            &extended(
                "select name from users where id = $1",
                &[&keys[1].to_string()],
            ),
            1,
        )
        .await;
    assert_eq!(data_rows(&got), ["on shard 1"]);
    assert_eq!(c.parses(), before + 3);
}
