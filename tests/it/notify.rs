//! LISTEN/NOTIFY in transaction mode: listeners served by the pool's one
//! listening connection get every payload in order while other clients
//! churn through a small pool, nothing from channels they do not listen to,
//! nothing after UNLISTEN; and notifications flow again after a Postgres
//! restart. The delivery scenario also runs directly against Postgres.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use crate::common::*;

/// A connection whose notifications (channel, payload) and notices arrive
/// on a channel.
async fn listener(url: &str) -> (tokio_postgres::Client, mpsc::UnboundedReceiver<Heard>) {
    let (client, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let m = std::future::poll_fn(|cx| connection.poll_message(cx)).await;
            let heard = match m {
                Some(Ok(AsyncMessage::Notification(n))) => Heard::Note {
                    channel: n.channel().to_string(),
                    payload: n.payload().to_string(),
                    pid: n.process_id(),
                },
                Some(Ok(AsyncMessage::Notice(n))) => Heard::Notice(n.message().to_string()),
                Some(Ok(_)) => continue,
                _ => return,
            };
            if tx.send(heard).is_err() {
                return;
            }
        }
    });
    (client, rx)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Heard {
    Note {
        channel: String,
        payload: String,
        pid: i32,
    },
    Notice(String),
}

/// The next `n` notifications (notices skipped), or what came in 20 s.
async fn next_notes(rx: &mut mpsc::UnboundedReceiver<Heard>, n: usize) -> Vec<(String, String)> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Heard::Note {
                channel,
                payload,
                pid,
            })) => {
                assert!(pid > 0, "the sending backend's pid");
                got.push((channel, payload));
            }
            Ok(Some(Heard::Notice(_))) => {}
            _ => break,
        }
    }
    got
}

/// What arrives within 300 ms, once nothing more is expected.
async fn late_notes(rx: &mut mpsc::UnboundedReceiver<Heard>) -> Vec<(String, String)> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got = Vec::new();
    while let Ok(heard) = rx.try_recv() {
        if let Heard::Note {
            channel, payload, ..
        } = heard
        {
            got.push((channel, payload));
        }
    }
    got
}

/// Two listeners, one of them also on a second channel; four clients churn
/// transactions; a sender notifies 60 payloads with NOTIFY and pg_notify,
/// some inside a transaction, and one on a channel nobody listens to.
async fn delivery_scenario(url: &str) -> Vec<Vec<(String, String)>> {
    let (l1, mut rx1) = listener(url).await;
    let (l2, mut rx2) = listener(url).await;
    l1.batch_execute("LISTEN ch1").await.expect("listen");
    l2.batch_execute("LISTEN ch1").await.expect("listen");
    l2.batch_execute("LISTEN \"Ch2\"").await.expect("listen");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut churn = Vec::new();
    for _ in 0..4 {
        let c = connect(url).await;
        let stop = stop.clone();
        churn.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c.batch_execute("BEGIN; select pg_sleep(0.002); COMMIT")
                    .await
                    .expect("churn");
            }
        }));
    }
    let sender = connect(url).await;
    for i in 0..60 {
        match i % 4 {
            0 => sender
                .batch_execute(&format!("NOTIFY ch1, 'n{i}'"))
                .await
                .expect("notify"),
            1 => {
                sender
                    .query("select pg_notify('ch1', $1)", &[&format!("n{i}")])
                    .await
                    .expect("pg_notify");
            }
            2 => sender
                .batch_execute(&format!(
                    "BEGIN; NOTIFY ch1, 'n{i}'; NOTIFY \"Ch2\", 'c{i}'; COMMIT"
                ))
                .await
                .expect("notify in a transaction"),
            _ => sender
                .batch_execute(&format!("NOTIFY nobody, 'x{i}'; NOTIFY ch1, 'n{i}'"))
                .await
                .expect("notify"),
        }
    }
    // The listeners themselves can still run statements in between.
    assert_eq!(
        l1.query_one("select 1", &[])
            .await
            .expect("query")
            .get::<_, i32>(0),
        1
    );
    let got1 = next_notes(&mut rx1, 60).await;
    let got2 = next_notes(&mut rx2, 75).await;
    // After UNLISTEN nothing more arrives on that channel.
    l1.batch_execute("UNLISTEN *").await.expect("unlisten");
    sender
        .batch_execute("NOTIFY ch1, 'after'")
        .await
        .expect("notify");
    let got2_after = next_notes(&mut rx2, 1).await;
    let late = late_notes(&mut rx1).await;
    assert!(late.is_empty(), "after UNLISTEN: {late:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in churn {
        c.await.expect("churn task");
    }
    vec![got1, got2, got2_after]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_every_listener_in_order() {
    let pg = PgCluster::start();
    let direct = delivery_scenario(&direct_url(&pg)).await;
    let ch1: Vec<(String, String)> = (0..60)
        .map(|i| ("ch1".to_string(), format!("n{i}")))
        .collect();
    assert_eq!(direct[0], ch1, "the scenario itself");
    assert_eq!(direct[1].len(), 75);

    let port = free_port();
    let proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 3));
    let pooled = delivery_scenario(&proxy.url("app", "app_pw", "app")).await;
    assert_eq!(pooled, direct);
}

/// The listening connection dies with Postgres; once the server is back it
/// listens again, listeners are warned that notifications may have been
/// lost meanwhile, and new notifications arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_survives_a_restart() {
    let pg = PgCluster::start();
    let port = free_port();
    let proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 2));
    let url = proxy.url("app", "app_pw", "app");
    let (l, mut rx) = listener(&url).await;
    l.batch_execute("LISTEN ch1").await.expect("listen");
    let sender = connect(&url).await;
    sender
        .batch_execute("NOTIFY ch1, 'before'")
        .await
        .expect("notify");
    assert_eq!(
        next_notes(&mut rx, 1).await,
        [("ch1".into(), "before".into())]
    );

    pg.stop_immediate();
    tokio::time::sleep(Duration::from_secs(1)).await;
    pg.restart();
    // The warning comes once the listening connection is back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let warned = loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Heard::Notice(m))) if m.contains("notifications sent meanwhile") => break true,
            Ok(Some(_)) => {}
            _ => break false,
        }
    };
    assert!(
        warned,
        "listeners are told notifications may have been lost"
    );
    // The sender's next statement waits out the restart (query_wait_timeout).
    sender
        .batch_execute("NOTIFY ch1, 'after'")
        .await
        .expect("notify after the restart");
    assert_eq!(
        next_notes(&mut rx, 1).await,
        [("ch1".into(), "after".into())]
    );
    // The listener's own connection to pgmlcat never dropped.
    assert_eq!(
        l.query_one("select 1", &[])
            .await
            .expect("query")
            .get::<_, i32>(0),
        1
    );
}

/// LISTEN and UNLISTEN through the extended protocol (a prepared
/// statement: Parse, Describe, Bind, Execute, Close), as pgJDBC and
/// tokio-postgres send them, inside and outside a transaction block, mixed
/// with ordinary prepared statements of the same client.
async fn extended_scenario(url: &str) -> Vec<(String, String)> {
    let (l, mut rx) = listener(url).await;
    let listen = l.prepare("LISTEN ch3").await.expect("prepare LISTEN");
    assert!(listen.columns().is_empty(), "LISTEN returns no rows");
    assert_eq!(l.execute(&listen, &[]).await.expect("LISTEN"), 0);
    let plain = l.prepare("select $1::int * 2").await.expect("prepare");
    let sender = connect(url).await;
    for i in 0..5 {
        sender
            .query("select pg_notify('ch3', $1)", &[&format!("e{i}")])
            .await
            .expect("notify");
        let row = l.query_one(&plain, &[&i]).await.expect("plain statement");
        assert_eq!(row.get::<_, i32>(0), i * 2);
    }
    let mut got = next_notes(&mut rx, 5).await;
    l.batch_execute("BEGIN").await.expect("begin");
    l.query("UNLISTEN ch3", &[])
        .await
        .expect("UNLISTEN, extended");
    l.batch_execute("COMMIT").await.expect("commit");
    sender
        .batch_execute("NOTIFY ch3, 'gone'")
        .await
        .expect("notify");
    got.extend(late_notes(&mut rx).await);
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_through_the_extended_protocol() {
    let pg = PgCluster::start();
    let direct = extended_scenario(&direct_url(&pg)).await;
    let expected: Vec<(String, String)> = (0..5)
        .map(|i| ("ch3".to_string(), format!("e{i}")))
        .collect();
    assert_eq!(direct, expected, "the scenario itself");
    let port = free_port();
    let proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 2));
    let pooled = extended_scenario(&proxy.url("app", "app_pw", "app")).await;
    assert_eq!(pooled, direct);
}

/// As in Postgres, a LISTEN or UNLISTEN in a transaction block takes effect
/// when the block commits, and not at all if it rolls back.
async fn transaction_scenario(url: &str) -> Vec<(String, String)> {
    let (l, mut rx) = listener(url).await;
    let sender = connect(url).await;
    let notify = |payload: &'static str| {
        let sender = &sender;
        async move {
            sender
                .batch_execute(&format!("NOTIFY tx1, '{payload}'"))
                .await
                .expect("notify");
        }
    };
    for sql in ["BEGIN", "LISTEN tx1", "ROLLBACK"] {
        l.batch_execute(sql).await.expect(sql);
    }
    notify("after rolled-back LISTEN").await;
    for sql in ["BEGIN", "select 1", "LISTEN tx1"] {
        l.batch_execute(sql).await.expect(sql);
    }
    notify("before COMMIT").await;
    l.batch_execute("COMMIT").await.expect("commit");
    notify("after COMMIT").await;
    for sql in ["BEGIN", "UNLISTEN tx1", "ROLLBACK"] {
        l.batch_execute(sql).await.expect(sql);
    }
    notify("after rolled-back UNLISTEN").await;
    late_notes(&mut rx).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_takes_effect_at_commit() {
    let pg = PgCluster::start();
    let direct = transaction_scenario(&direct_url(&pg)).await;
    let expected: Vec<(String, String)> = ["after COMMIT", "after rolled-back UNLISTEN"]
        .iter()
        .map(|p| ("tx1".to_string(), p.to_string()))
        .collect();
    assert_eq!(direct, expected, "the scenario itself");
    let port = free_port();
    let proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 2));
    let pooled = transaction_scenario(&proxy.url("app", "app_pw", "app")).await;
    assert_eq!(pooled, direct);
}

/// A LISTEN in a transaction that pgcat's idle timeout rolls back never
/// takes effect, not even when a later transaction of the client commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_rolled_back_by_the_idle_timeout_is_gone() {
    let pg = PgCluster::start();
    let port = free_port();
    let config = simple_config(port, &pg, "transaction", 2).replace(
        "connect_timeout = 3000",
        "connect_timeout = 3000\nidle_client_in_transaction_timeout = 300",
    );
    let proxy = Proxy::start(port, &config);
    let url = proxy.url("app", "app_pw", "app");
    let (l, mut rx) = listener(&url).await;
    let sender = connect(&url).await;
    for sql in ["BEGIN", "select 1", "LISTEN idle1"] {
        l.batch_execute(sql).await.expect(sql);
    }
    tokio::time::sleep(Duration::from_millis(900)).await;
    let err = l.batch_execute("select 1").await.expect_err("timed out");
    assert_eq!(err.code().map(|c| c.code()), Some("58000"), "{err}");
    for sql in ["BEGIN", "select 1", "COMMIT"] {
        l.batch_execute(sql).await.expect(sql);
    }
    sender
        .batch_execute("NOTIFY idle1, 'after the rollback'")
        .await
        .expect("notify");
    assert_eq!(late_notes(&mut rx).await, Vec::new());
    // The client still listens where it asked to, and that works.
    l.batch_execute("LISTEN idle2").await.expect("listen");
    sender
        .batch_execute("NOTIFY idle2, 'heard'")
        .await
        .expect("notify");
    assert_eq!(
        next_notes(&mut rx, 1).await,
        vec![("idle2".to_string(), "heard".to_string())]
    );
}
