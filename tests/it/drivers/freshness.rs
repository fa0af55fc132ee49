//! Read-your-writes with the drivers applications use: each sends its
//! writes, its transactions and its reads its own way (pgJDBC batches a
//! statement's Parse with its Bind; node-postgres does for a named
//! statement's first run; pgx prepares in a round trip of its own).

use super::{jdbc_url, node_url, pgx_conn, Client};
use crate::common::*;

/// What a ReadYourWrites client printed: `stale=S writer_on_replica=W
/// bystander_on_primary=P bystander_reads=R stale_ids=...`.
#[derive(Debug)]
struct Freshness {
    /// The writer's reads that missed the row it had just committed.
    stale: u32,
    /// The writer's reads a replica answered.
    writer_on_replica: u32,
    /// The never-writing bystander's reads the primary answered.
    bystander_on_primary: u32,
    bystander_reads: u32,
    /// The ids read stale, `tx` after those written in a transaction.
    stale_ids: String,
}

/// Runs a ReadYourWrites client: `n` insert-then-read pairs from id `first`
/// on `url`, reads through `read_url` when given.
fn read_your_writes(
    client: &Client,
    n: u32,
    first: u32,
    url: &str,
    read_url: Option<&str>,
) -> Freshness {
    let (n, first) = (n.to_string(), first.to_string());
    let mut args = vec![n.as_str(), first.as_str(), url];
    args.extend(read_url);
    let out = client.stdout(&args);
    let field = |name: &str| -> u32 {
        out.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}=<count> in {out:?}"))
    };
    Freshness {
        stale: field("stale"),
        writer_on_replica: field("writer_on_replica"),
        bystander_on_primary: field("bystander_on_primary"),
        bystander_reads: field("bystander_reads"),
        stale_ids: out
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("stale_ids="))
            .unwrap_or_else(|| panic!("no stale_ids= in {out:?}"))
            .to_string(),
    }
}

/// pgJDBC with prepareThreshold=1: every statement server-prepared from its
/// first execution. Under its default (5) the first four executions of each
/// are unnamed Parse/Bind/Execute batches, as most drivers send every one.
fn jdbc_prepared_url(port: u16) -> String {
    format!("{}&prepareThreshold=1", jdbc_url(port))
}

/// libpq's key=value form, which pgx, psycopg 3 and (split by the
/// client) asyncpg take.
fn conninfo(port: u16) -> String {
    pgx_conn(port, "")
}

/// A driver's name, its client program and the connection string it takes
/// for a port.
type Driver<'a> = (&'a str, &'a Client, fn(u16) -> String);

/// Runs every driver's client at once, `n` pairs each, the k-th writing ids
/// from `base + 100_000 * k`, on `port`, reading through `read_port` when
/// given; what each printed, with its name.
fn all_at_once<'a>(
    drivers: &[Driver<'a>],
    n: u32,
    base: u32,
    port: u16,
    read_port: Option<u16>,
) -> Vec<(&'a str, Freshness)> {
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..)
            .zip(drivers)
            .map(|(k, &(name, client, url))| {
                let run = s.spawn(move || {
                    let read_url = read_port.map(url);
                    read_your_writes(
                        client,
                        n,
                        base + 100_000 * k,
                        &url(port),
                        read_url.as_deref(),
                    )
                });
                (name, run)
            })
            .collect();
        runs.into_iter()
            .map(|(name, run)| {
                let seen = run
                    .join()
                    .unwrap_or_else(|_| panic!("{name}'s run panicked (its message is above)"));
                (name, seen)
            })
            .collect()
    })
}

/// Read-your-writes with pgJDBC, pgx v4, node-postgres, psycopg 3 and
/// asyncpg on a primary and two streaming
/// replicas that replay 300 ms late: each driver's writer inserts a row
/// (a prepared INSERT, in autocommit mode or, every other time, in an
/// explicit transaction, whose BEGIN each driver sends its own way) and
/// reads it back at once with a prepared SELECT; twice every 20 pairs it
/// first waits for its reads to go back to the replicas, so that a write
/// the router missed cannot hide behind an earlier one. pgJDBC runs twice,
/// server-preparing from the first execution and under its default
/// prepareThreshold. Directly, reads on a replica miss the rows (the test
/// can see staleness); through pgmlcat, with all of them at once, no
/// read misses its row and (but for a stalled machine) every one went to
/// the primary, while a
/// connection of each that never writes keeps reading from the replicas.
/// With `read_your_writes = false` the same reads through pgmlcat miss rows
/// again.
#[test]
fn drivers_read_their_own_writes_from_lagging_replicas() {
    let (primary, replicas) = crate::freshness::lagging_replicas("300ms");
    let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
    let java = Client::java("ReadYourWrites");
    let go = Client::go("pgx_read_your_writes.go");
    let node = Client::node("read_your_writes.js");
    let psycopg = Client::python("read_your_writes.py", "psycopg");
    let asyncpg = Client::python("read_your_writes.py", "asyncpg");
    let drivers: [Driver; 6] = [
        ("pgJDBC prepareThreshold=1", &java, jdbc_prepared_url),
        ("pgJDBC default prepareThreshold", &java, jdbc_url),
        ("pgx", &go, conninfo),
        ("node-postgres", &node, node_url),
        ("psycopg 3", &psycopg, conninfo),
        ("asyncpg", &asyncpg, conninfo),
    ];

    // Directly: written on the primary, read right after on a replica.
    for (name, seen) in all_at_once(&drivers, 20, 1_000_000, primary.port, Some(ports[0])) {
        eprintln!("{name} directly: {seen:?}");
        assert!(
            seen.stale > 0 && seen.writer_on_replica == 20,
            "{name}: a replica 300 ms behind read directly shows no staleness, the test \
             would prove nothing: {seen:?}"
        );
    }

    // Through pgmlcat.
    let port = free_port();
    // Kept to the end: its log tail is printed if an assertion fails.
    let _proxy = Proxy::start(
        port,
        &crate::freshness::patient_config(port, primary.port, &ports, ""),
    );
    let through = all_at_once(&drivers, 200, 2_000_000, port, None);
    for (name, seen) in &through {
        eprintln!("{name} through pgmlcat: {seen:?}");
    }
    for (name, seen) in &through {
        assert_eq!(
            seen.stale, 0,
            "{name}: stale reads through pgmlcat, of ids {} (`tx`: written in a \
             transaction): {seen:?}",
            seen.stale_ids
        );
        // A replica has the row 300 ms after the commit: a read right
        // after it reaches one only if the machine stalled that long.
        assert!(
            seen.writer_on_replica <= 5,
            "{name}: reads right after a write went to a replica 300 ms behind: {seen:?}"
        );
        assert_eq!(
            (seen.bystander_on_primary, seen.bystander_reads),
            (0, 200 / 4),
            "{name}: a client that never wrote read from the primary: {seen:?}"
        );
    }

    // pgcat's routing: the writers' reads go to the replicas and miss rows.
    let port = free_port();
    let _pgcat_like = Proxy::start(
        port,
        &crate::freshness::patient_config(port, primary.port, &ports, "read_your_writes = false"),
    );
    for (name, seen) in all_at_once(&drivers, 20, 3_000_000, port, None) {
        eprintln!("{name} through pgmlcat without read_your_writes: {seen:?}");
        assert!(
            seen.stale > 0,
            "{name}: without read_your_writes the replicas should have served stale reads: \
             {seen:?}"
        );
    }
}
