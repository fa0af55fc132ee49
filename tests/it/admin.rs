//! The admin console and /metrics, checked against what the test itself did.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::common::*;
use tokio_postgres::SimpleQueryMessage;

fn config(port: u16, metrics_port: u16, pg: &PgCluster) -> String {
    simple_config(port, pg, "transaction", 4).replace(
        "connect_timeout = 3000",
        &format!("connect_timeout = 3000\nenable_prometheus_exporter = true\nprometheus_exporter_port = {metrics_port}"),
    )
}

/// Rows of an admin SHOW as column-name maps.
async fn show(admin: &tokio_postgres::Client, what: &str) -> Vec<HashMap<String, String>> {
    let messages = admin
        .simple_query(&format!("SHOW {what}"))
        .await
        .unwrap_or_else(|e| panic!("SHOW {what}: {e}"));
    rows(&messages)
}

/// The rows of a simple query's answer as column-name maps.
fn rows(messages: &[SimpleQueryMessage]) -> Vec<HashMap<String, String>> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_string(), r.get(i).unwrap_or("").to_string()))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

fn columns(rows: &[HashMap<String, String>]) -> Vec<String> {
    let mut c: Vec<String> = rows
        .first()
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default();
    c.sort();
    c
}

async fn admin(proxy: &Proxy, db: &str) -> tokio_postgres::Client {
    connect(&proxy.url("admin", "admin_pw", db)).await
}

pub(crate) fn scrape(port: u16) -> prometheus_parse::Scrape {
    use std::io::{Read, Write};
    // The exporter's listener may come up a moment after the proxy's own
    // (the proxy is started once its client port answers).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut s = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("metrics port {port}: {e}"),
        }
    };
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("response");
    let (head, body) = body.split_once("\r\n\r\n").expect("http response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format")
}

pub(crate) fn metric(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_is_for_admins_only() {
    let pg = PgCluster::start();
    let port = free_port();
    let proxy = Proxy::start(port, &config(port, free_port(), &pg));
    for db in ["pgcat", "pgbouncer", "pgmlcat"] {
        let a = admin(&proxy, db).await;
        let v = show(&a, "VERSION").await;
        assert!(v[0]["version"].starts_with("pgmlcat"), "{v:?}");
    }
    for (user, pw) in [("app", "app_pw"), ("admin", "wrong"), ("nobody", "x")] {
        let err = tokio_postgres::connect(&proxy.url(user, pw, "pgcat"), tokio_postgres::NoTls)
            .await
            .err()
            .expect("refused");
        assert_eq!(err.code().map(|c| c.code()), Some("28P01"), "{user}: {err}");
    }
    // psql works against it too (it sends SET and the like).
    let out = run_env(
        "psql",
        &[
            "-X",
            "-w",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "admin",
            "-d",
            "pgbouncer",
            "-c",
            "SHOW POOLS",
        ],
        &[("PGPASSWORD", "admin_pw")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("cl_active"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_commands_match_what_clients_did() {
    let pg = PgCluster::start();
    let port = free_port();
    let metrics_port = free_port();
    let proxy = Proxy::start(port, &config(port, metrics_port, &pg));
    // PgBouncer's columns and units (pgcat's are on `pgcat`: see
    // pgcat_columns_and_units_on_the_pgcat_database).
    let a = admin(&proxy, "pgbouncer").await;
    let url = proxy.url("app", "app_pw", "app");
    let held: Vec<_> = futures_util::future::join_all((0..3).map(|_| connect(&url))).await;
    held[0]
        .batch_execute("begin; select 1")
        .await
        .expect("hold a server");
    let before = show(&a, "STATS").await;
    let xacts = |rows: &[HashMap<String, String>]| -> i64 {
        rows.iter()
            .find(|r| r["database"] == "app")
            .map_or(0, |r| r["total_xact_count"].parse().unwrap_or(0))
    };
    let queries = |rows: &[HashMap<String, String>]| -> i64 {
        rows.iter()
            .find(|r| r["database"] == "app")
            .map_or(0, |r| r["total_query_count"].parse().unwrap_or(0))
    };
    for i in 0..10 {
        held[1]
            .simple_query(&format!("select {i}"))
            .await
            .expect("query");
    }
    let after = show(&a, "STATS").await;
    assert_eq!(xacts(&after) - xacts(&before), 10);
    assert_eq!(queries(&after) - queries(&before), 10);
    assert_eq!(columns(&after), {
        let mut c: Vec<String> = [
            "database",
            "total_xact_count",
            "total_query_count",
            "total_received",
            "total_sent",
            "total_xact_time",
            "total_query_time",
            "total_wait_time",
            "avg_xact_count",
            "avg_query_count",
            "avg_recv",
            "avg_sent",
            "avg_xact_time",
            "avg_query_time",
            "avg_wait_time",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        c.sort();
        c
    });

    let pools = show(&a, "POOLS").await;
    let app = pools
        .iter()
        .find(|r| r["database"] == "app" && r["user"] == "app")
        .expect("app pool");
    assert_eq!(app["cl_active"], "3");
    assert_eq!(app["cl_waiting"], "0");
    assert_eq!(app["sv_active"], "1", "one client holds a transaction");
    assert_eq!(app["pool_mode"], "transaction");
    for col in [
        "cl_active_cancel_req",
        "sv_idle",
        "sv_used",
        "sv_tested",
        "sv_login",
        "maxwait",
        "maxwait_us",
    ] {
        assert!(app.contains_key(col), "SHOW POOLS lacks {col}");
    }
    let clients = show(&a, "CLIENTS").await;
    assert_eq!(clients.iter().filter(|c| c["database"] == "app").count(), 3);
    assert_eq!(clients.iter().filter(|c| c["state"] == "active").count(), 1);
    assert_eq!(
        clients
            .iter()
            .filter(|c| c["database"] == "pgbouncer")
            .count(),
        1,
        "the console's own client is listed, as in PgBouncer"
    );
    let servers = show(&a, "SERVERS").await;
    let mine = |state: &str| {
        servers
            .iter()
            .filter(|s| s["state"] == state && s["port"] == pg.port.to_string())
            .count()
    };
    assert_eq!(mine("active"), 1, "as sv_active: {servers:?}");
    assert!(
        mine("idle") >= 1,
        "connections back in the pool are idle: {servers:?}"
    );
    let dbs = show(&a, "DATABASES").await;
    let app_db = dbs
        .iter()
        .find(|d| d["name"] == "app")
        .expect("app database");
    assert_eq!(app_db["pool_size"], "4");
    assert_eq!(app_db["port"], pg.port.to_string());
    assert!(show(&a, "USERS").await.iter().any(|u| u["name"] == "app"));
    let config = show(&a, "CONFIG").await;
    assert!(config
        .iter()
        .any(|c| c["key"] == "connect_timeout" && c["value"] == "3000"));
    assert!(config
        .iter()
        .all(|c| !c["value"].contains("admin_pw") && !c["value"].contains("app_pw")));
    let lists = show(&a, "LISTS").await;
    assert!(lists
        .iter()
        .any(|l| l["list"] == "pools" && l["items"] == "1"));
    assert!(!show(&a, "HELP").await.is_empty());
    a.simple_query("SET application_name = 'x'")
        .await
        .expect("SET is accepted");
    let err = a.simple_query("SHOW NONSENSE").await.expect_err("unknown");
    assert_eq!(err.code().map(|c| c.code()), Some("58000"), "pgcat's class");

    // /metrics agrees.
    let scrape = scrape(metrics_port);
    let labels = [("database", "app"), ("user", "app")];
    assert_eq!(
        metric(&scrape, "pgmlcat_queries_total", &labels) as i64,
        queries(&show(&a, "STATS").await)
    );
    assert_eq!(
        metric(
            &scrape,
            "pgmlcat_clients",
            &[("database", "app"), ("state", "active")]
        ) as i64,
        1
    );
    assert_eq!(
        metric(
            &scrape,
            "pgmlcat_clients",
            &[("database", "app"), ("state", "idle")]
        ) as i64,
        2
    );
    assert_eq!(
        metric(
            &scrape,
            "pgmlcat_server_connections",
            &[("database", "app"), ("state", "active")]
        ) as i64,
        1
    );
    held[0].batch_execute("commit").await.expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgcat_columns_and_units_on_the_pgcat_database() {
    let pg = PgCluster::start();
    let port = free_port();
    let proxy = Proxy::start(port, &config(port, free_port(), &pg));
    let a = admin(&proxy, "pgcat").await;
    let b = admin(&proxy, "pgbouncer").await;
    let url = proxy.url("app", "app_pw", "app");
    let clients: Vec<_> = futures_util::future::join_all((0..3).map(|_| connect(&url))).await;
    // pgcat's SHOW CLIENTS sequence: three statements, then a transaction
    // of two (its BEGIN and COMMIT count as queries, the block as one).
    clients[0].simple_query("select 1").await.expect("select");
    for sql in [
        "select 2",
        "select 3",
        "begin",
        "select pg_sleep(0.3)",
        "commit",
    ] {
        clients[0].simple_query(sql).await.expect(sql);
    }
    clients[1]
        .batch_execute("begin; select 1")
        .await
        .expect("hold");

    let pools = show(&a, "POOLS").await;
    let app = pools
        .iter()
        .find(|r| r["database"] == "app")
        .expect("app pool");
    assert_eq!(app["cl_idle"], "2", "{app:?}");
    assert_eq!(
        app["cl_active"], "1",
        "pgcat: only the client holding a server"
    );
    assert_eq!(app["sv_active"], "1");
    assert_eq!(app["cl_cancel_req"], "0");
    let pgb = show(&b, "POOLS").await;
    let pgb = pgb
        .iter()
        .find(|r| r["database"] == "app")
        .expect("app pool");
    assert_eq!(pgb["cl_active"], "3", "PgBouncer: every client not waiting");
    assert!(!pgb.contains_key("cl_idle"));

    let rows = show(&a, "CLIENTS").await;
    let first = rows
        .iter()
        .find(|r| r["database"] == "app" && r["query_count"] == "6")
        .unwrap_or_else(|| panic!("a client with 6 queries: {rows:?}"));
    assert_eq!(first["transaction_count"], "4", "{first:?}");
    assert_eq!(first["error_count"], "0");
    assert!(first["client_id"].starts_with("0x"), "{first:?}");
    assert_eq!(rows.iter().filter(|r| r["database"] == "pgcat").count(), 1);
    assert_eq!(
        rows.iter().filter(|r| r["database"] == "pgbouncer").count(),
        1
    );

    // Query time: pgcat counts milliseconds, PgBouncer microseconds.
    let stats = show(&a, "STATS").await;
    let app = stats.iter().find(|r| r["database"] == "app").expect("app");
    let ms: i64 = app["total_query_time"].parse().unwrap();
    assert!((300..1300).contains(&ms), "pgcat's unit is ms: {app:?}");
    assert_eq!(app["user"], "app");
    assert!(app.contains_key("total_errors") && app.contains_key("instance"));
    let stats = show(&b, "STATS").await;
    let app = stats.iter().find(|r| r["database"] == "app").expect("app");
    let us: i64 = app["total_query_time"].parse().unwrap();
    assert!(us >= 300_000, "PgBouncer's unit is µs: {app:?}");
    clients[1].batch_execute("commit").await.expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_a_pool_and_rejects_a_broken_config() {
    let pg = PgCluster::start();
    pg.psql("postgres", "create database other owner app");
    let port = free_port();
    let base = config(port, free_port(), &pg);
    let proxy = Proxy::start(port, &base);
    let a = admin(&proxy, "pgcat").await;
    let old = connect(&proxy.url("app", "app_pw", "app")).await;
    old.batch_execute("begin; select 1")
        .await
        .expect("old client mid-transaction");
    let added = format!(
        "{base}\n[pools.other]\npool_mode = \"session\"\n[pools.other.users.0]\nusername = \"app\"\npassword = \"app_pw\"\npool_size = 2\n[pools.other.shards.0]\nservers = [[\"127.0.0.1\", {}, \"primary\"]]\ndatabase = \"other\"\n",
        pg.port
    );
    proxy.write_config(&added);
    a.simple_query("RELOAD").await.expect("reload");
    let new = connect(&proxy.url("app", "app_pw", "other")).await;
    let db: String = new
        .query_one("select current_database()::text", &[])
        .await
        .expect("new pool")
        .get(0);
    assert_eq!(db, "other");
    old.batch_execute("commit")
        .await
        .expect("old client unaffected");

    proxy.write_config(&base.replace("pool_size = 4", "pool_size = 0"));
    let err = a.simple_query("RELOAD").await.expect_err("broken config");
    let msg = err
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(msg.contains("pool_size"), "{msg}");
    // pgcat's console session ends on a rejected RELOAD (FATAL); the
    // PgBouncer console goes on. Both name the reason; the log has it.
    assert_eq!(err.as_db_error().map(|d| d.severity()), Some("FATAL"));
    assert!(a.is_closed() || a.simple_query("SHOW POOLS").await.is_err());
    let b = admin(&proxy, "pgbouncer").await;
    proxy.write_config(&base.replace(
        "[pools.app]\n",
        "[pools.app]\ndefault_shard = \"shard_99\"\n",
    ));
    let err = b.simple_query("RELOAD").await.expect_err("no shard 99");
    let msg = err
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(msg.contains("Invalid shard 99"), "{msg}");
    b.simple_query("SHOW POOLS").await.expect("console goes on");
    assert!(proxy.log().contains("Reloading config"));
    let v: i32 = old
        .query_one("select 9", &[])
        .await
        .expect("traffic continues")
        .get(0);
    assert_eq!(v, 9);
    let v: i32 = new
        .query_one("select 9", &[])
        .await
        .expect("new pool kept")
        .get(0);
    assert_eq!(v, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_new_transactions_until_resume() {
    let pg = PgCluster::start();
    let port = free_port();
    let proxy = Proxy::start(port, &config(port, free_port(), &pg));
    let a = admin(&proxy, "pgcat").await;
    let url = proxy.url("app", "app_pw", "app");
    let running = connect(&url).await;
    let later = connect(&url).await;
    running
        .batch_execute("begin; select 1")
        .await
        .expect("transaction in progress");
    // PAUSE waits for the running transaction.
    let pause = tokio::spawn(async move {
        a.simple_query("PAUSE").await.expect("pause");
        a
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pause.is_finished(),
        "PAUSE returned while a transaction was running"
    );
    running
        .batch_execute("select 2; commit")
        .await
        .expect("the running transaction may finish");
    let a = tokio::time::timeout(Duration::from_secs(5), pause)
        .await
        .expect("PAUSE returns")
        .expect("task");
    // New work waits.
    let held = tokio::spawn(async move {
        let started = Instant::now();
        later
            .simple_query("select 3")
            .await
            .expect("runs after RESUME");
        started.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!held.is_finished(), "query ran while paused");
    a.simple_query("RESUME").await.expect("resume");
    let waited = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("query finished")
        .expect("task");
    assert!(waited >= Duration::from_millis(400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ban_unban_and_shutdown() {
    let primary = PgCluster::start();
    let replica = PgCluster::replica_of(&primary);
    let port = free_port();
    let cfg = config(port, free_port(), &primary).replace(
        &format!("servers = [[\"127.0.0.1\", {}, \"primary\"]]", primary.port),
        &format!(
            "servers = [[\"127.0.0.1\", {}, \"primary\"], [\"127.0.0.1\", {}, \"replica\"]]",
            primary.port, replica.port
        ),
    );
    let mut proxy = Proxy::start(port, &cfg);
    let a = admin(&proxy, "pgcat").await;
    a.simple_query(&format!("BAN 127.0.0.1 {} 60", replica.port))
        .await
        .expect("ban replica");
    let bans = show(&a, "BANS").await;
    assert_eq!(bans.len(), 1);
    assert_eq!(bans[0]["port"], replica.port.to_string());
    let err = a
        .simple_query(&format!("BAN 127.0.0.1 {} 60", primary.port))
        .await
        .expect_err("primary");
    let msg = err
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(msg.contains("never banned"), "{msg}");
    a.simple_query(&format!("UNBAN 127.0.0.1 {}", replica.port))
        .await
        .expect("unban");
    assert!(show(&a, "BANS").await.is_empty());

    // pgcat's form: BAN <host> <seconds> bans every server on the host but
    // the primary, and lists what it banned; UNBAN <host> lifts them.
    let banned = rows(&a.simple_query("BAN 127.0.0.1 60").await.expect("ban host"));
    assert_eq!(banned.len(), 1, "{banned:?}");
    assert_eq!(banned[0]["role"], "replica");
    assert_eq!(banned[0]["host"], "127.0.0.1");
    assert_eq!(show(&a, "BANS").await.len(), 1);
    let lifted = rows(&a.simple_query("UNBAN 127.0.0.1").await.expect("unban host"));
    assert_eq!(lifted.len(), 1, "{lifted:?}");
    assert!(show(&a, "BANS").await.is_empty());

    // Bad commands and arguments are errors of pgcat's class (58000), and
    // the console stays usable.
    for bad in [
        "BAN",
        "BAN 127.0.0.1 soon",
        "BAN 127.0.0.1 0",
        "UNBAN nowhere",
        "UNBAN",
        "PAUSE nosuchdb",
        "FROB",
        "SHOW 1",
        ";;;;;",
    ] {
        let err = a.simple_query(bad).await.expect_err(bad);
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("58000"),
            "{bad}: {err:?}"
        );
    }
    assert!(!show(&a, "POOLS").await.is_empty());
    let _ = a.simple_query("SHUTDOWN").await;
    assert!(
        proxy.wait_exit(Duration::from_secs(5)).is_some(),
        "SHUTDOWN did not stop the process"
    );
}

/// Total observations of a histogram (its +Inf bucket).
fn histogram_count(scrape: &prometheus_parse::Scrape, name: &str) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .map(|s| match &s.value {
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            _ => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ml_projects_models_trainings_and_metrics() {
    let pg = PgCluster::start();
    let (port, metrics_port) = (free_port(), free_port());
    let proxy = Proxy::start(port, &config(port, metrics_port, &pg));
    let app = connect(&proxy.url("app", "app_pw", "app")).await;
    let a = admin(&proxy, "pgbouncer").await;
    assert!(show(&a, "PROJECTS").await.is_empty(), "no pgml schema yet");
    app.batch_execute("SELECT pgml.load_dataset('iris')")
        .await
        .unwrap();
    app.batch_execute(
        "CREATE TABLE big AS SELECT random()::real AS a, random()::real AS b, (g % 2) AS y FROM generate_series(1, 300000) g",
    )
    .await
    .unwrap();
    app.simple_query("SELECT * FROM pgml.train('iris', 'classification', 'pgml.iris', 'target', algorithm => 'lightgbm')")
        .await
        .unwrap();
    assert!(app
        .simple_query("SELECT * FROM pgml.train('iris', algorithm => 'no_such')")
        .await
        .is_err());
    // 150 predictions in one query, 1 constant one.
    let rows = app
        .simple_query("SELECT pgml.predict('iris', ARRAY[sepal_length, sepal_width, petal_length, petal_width]) FROM pgml.iris")
        .await
        .unwrap();
    assert_eq!(
        rows.iter()
            .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
            .count(),
        150
    );
    app.simple_query("SELECT pgml.predict('iris', ARRAY[5.1, 3.5, 1.4, 0.2])")
        .await
        .unwrap();

    let projects = show(&a, "PROJECTS").await;
    assert_eq!(projects.len(), 1, "{projects:?}");
    let p = &projects[0];
    assert_eq!(
        (
            p["project"].as_str(),
            p["task"].as_str(),
            p["models"].as_str()
        ),
        ("iris", "classification", "1")
    );
    assert_eq!(
        (p["algorithm"].as_str(), p["key_metric"].as_str()),
        ("lightgbm", "f1")
    );
    assert!(p["score"].parse::<f64>().unwrap() > 0.8, "{p:?}");
    assert_eq!(p["predictions"], "151");
    let models = show(&a, "MODELS").await;
    assert_eq!(models.len(), 1, "{models:?}");
    assert_eq!(
        (
            models[0]["project"].as_str(),
            models[0]["cache"].as_str(),
            models[0]["predictions"].as_str()
        ),
        ("iris", "loaded", "151")
    );
    assert_eq!(models[0]["model_id"], p["deployed_model"]);

    // A training shows in SHOW TRAININGS while it runs.
    assert!(show(&a, "TRAININGS").await.is_empty());
    let url = proxy.url("app", "app_pw", "app");
    let training = tokio::spawn(async move {
        let c = connect(&url).await;
        c.simple_query("SELECT * FROM pgml.train('big', 'classification', 'big', 'y', algorithm => 'lightgbm', hyperparams => '{\"n_estimators\": 400}')")
            .await
            .map(|_| ())
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let t = show(&a, "TRAININGS").await;
        if let Some(row) = t.first().filter(|r| r["progress"].contains("fitting")) {
            break row.clone();
        }
        assert!(
            !training.is_finished() && Instant::now() < deadline,
            "the training never showed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (
            seen["project"].as_str(),
            seen["algorithm"].as_str(),
            seen["database"].as_str()
        ),
        ("big", "lightgbm", "app")
    );
    assert!(
        seen["progress"].contains("225000 rows"),
        "75% of 300000 train: {seen:?}"
    );
    training.await.unwrap().unwrap();
    assert!(show(&a, "TRAININGS").await.is_empty());

    let m = scrape(metrics_port);
    assert_eq!(
        metric(&m, "pgmlcat_predictions_total", &[("project", "iris")]),
        151.0
    );
    assert_eq!(metric(&m, "pgmlcat_trainings_started_total", &[]), 3.0);
    assert_eq!(metric(&m, "pgmlcat_trainings_failed_total", &[]), 1.0);
    assert_eq!(
        histogram_count(&m, "pgmlcat_prediction_seconds"),
        2.0,
        "one batch per query"
    );
    assert_eq!(histogram_count(&m, "pgmlcat_training_seconds"), 2.0);
}
