//! Several pgmlcat processes in front of one database (#21, point 3): a
//! cancel request that reaches another process than the client's is
//! forwarded by the peer id its key holds (`[general] peer_id`, `[peers]`).

use std::time::Duration;

use crate::common::*;

/// `simple_config` with this process's peer id and both peers listed.
fn peer_config(port: u16, pg: &PgCluster, peer_id: u16, peers: &[(u16, u16)]) -> String {
    let config = simple_config(port, pg, "transaction", 2);
    let config = config.replacen(
        "[general]\n",
        &format!("[general]\npeer_id = {peer_id}\n"),
        1,
    );
    let listed: String = peers
        .iter()
        .map(|(id, port)| format!("{id} = \"127.0.0.1:{port}\"\n"))
        .collect();
    format!("{config}\n[peers]\n{listed}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_to_another_peer_stops_the_query() {
    let pg = PgCluster::start();
    let (pa, pb) = (free_port(), free_port());
    let peers = [(1, pa), (2, pb)];
    let _a = Proxy::start(pa, &peer_config(pa, &pg, 1, &peers));
    let b = Proxy::start(pb, &peer_config(pb, &pg, 2, &peers));
    let client = connect(&format!(
        "host=127.0.0.1 port={pa} user=app password=app_pw dbname=app"
    ))
    .await;
    let token = client.cancel_token();
    let cancel = async move {
        // The client's key, sent to B, not to A where the query runs.
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", pb))
            .await
            .expect("connect to B");
        token
            .cancel_query_raw(stream, tokio_postgres::NoTls)
            .await
            .expect("send cancel to B");
    };
    assert_sleep_cancelled(&client, cancel, Duration::from_millis(2500)).await;
    // A key of no listed peer sent to B is dropped, and B goes on serving.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", pb))
        .await
        .expect("connect to B");
    let mut packet = Vec::new();
    packet.extend_from_slice(&16i32.to_be_bytes());
    packet.extend_from_slice(&80877102i32.to_be_bytes());
    packet.extend_from_slice(&((9i32 << 16) | 5).to_be_bytes());
    packet.extend_from_slice(&7i32.to_be_bytes());
    tokio::io::AsyncWriteExt::write_all(&mut raw, &packet)
        .await
        .expect("send a stray cancel");
    drop(raw);
    assert_eq!(b.psql("select 2").expect("B serves").trim(), "2");
}

/// Peer ids out of range and addresses that are not host:port are refused
/// at load, naming the key.
#[test]
fn bad_peers_are_refused() {
    let pg = PgCluster::start();
    let port = free_port();
    let config = peer_config(port, &pg, 20000, &[(1, 6432)])
        + "\"0\" = \"127.0.0.1:1\"\n\"3\" = \"nowhere\"\n";
    let path = std::env::temp_dir().join(format!("pgmlcat-peers-{port}.toml"));
    std::fs::write(&path, config).expect("write config");
    let out = run(
        env!("CARGO_BIN_EXE_pgmlcat"),
        &["--check", path.to_str().expect("utf-8 path")],
    );
    let _ = std::fs::remove_file(&path);
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    for needle in ["general.peer_id", "peers.0", "peers.3"] {
        assert!(text.contains(needle), "{needle} not in: {text}");
    }
}
