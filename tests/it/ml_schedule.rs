//! `pgml.schedule` / `pgml.unschedule` and the scheduler (#20, section 2 of
//! the contract): retrains that deploy only when better on the same test
//! rows, one run per due time across two pgmlcat processes, failed runs
//! that leave the deployment alone, conditions and their errors, and what
//! the admin console and /metrics tell of it.
//!
//! What a run did is read from `pgml.schedule_runs` on the cluster
//! directly. Waits poll with a deadline; the only fixed sleeps are the ones
//! that let time pass on purpose (how many runs in ~12 s, no run after
//! unschedule).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use crate::admin::{metric, scrape};
use crate::common::*;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::SimpleQueryMessage;

/// How long a scheduled run may take to show.
const WAIT: Duration = Duration::from_secs(45);

/// SQL on database `app` of `pg`, directly, as `postgres`.
fn q(pg: &PgCluster, sql: &str) -> String {
    pg.psql("app", sql)
}

/// The cluster's clock now, as timestamptz text.
fn clock(pg: &PgCluster) -> String {
    q(pg, "SELECT clock_timestamp()")
}

/// Every run of every schedule, for failure messages.
fn runs_dump(pg: &PgCluster) -> String {
    pg.try_psql(
        "app",
        "SELECT id, project, due, started, finished, outcome, model_id, detail, instance \
         FROM pgml.schedule_runs ORDER BY id",
    )
    .unwrap_or_else(|e| format!("(could not read pgml.schedule_runs: {e})"))
}

/// Polls `sql` on the cluster until it returns something; that output.
/// Panics after `WAIT` with every run so far.
fn wait_for(pg: &PgCluster, what: &str, sql: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(out) = pg.try_psql("app", sql) {
            if !out.is_empty() {
                return out;
            }
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: not within {} s\n{sql}\nruns so far:\n{}",
                WAIT.as_secs(),
                runs_dump(pg)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The first finished run of `project` that started after `after`:
/// (outcome, model_id or "", detail).
fn first_finished_after(pg: &PgCluster, project: &str, after: &str) -> (String, String, String) {
    let out = wait_for(
        pg,
        &format!("a finished run of {project} started after {after}"),
        &format!(
            "SELECT outcome || '|' || coalesce(model_id::text, '') || '|' || coalesce(detail, '') \
             FROM pgml.schedule_runs WHERE project = '{project}' AND started > '{after}' \
             AND outcome <> 'running' ORDER BY due LIMIT 1"
        ),
    );
    let mut parts = out.splitn(3, '|');
    let outcome = parts.next().unwrap_or("").to_string();
    let model = parts.next().unwrap_or("").to_string();
    let detail = parts.next().unwrap_or("").to_string();
    (outcome, model, detail)
}

/// `SELECT * FROM pgml.schedule(...)` through the proxy, split into its
/// five columns (project, every, relation, condition, next_run).
fn schedule(proxy: &Proxy, args: &str) -> Vec<String> {
    let out = ok(proxy, &format!("SELECT * FROM pgml.schedule({args})"));
    let cols: Vec<String> = out.split('|').map(str::to_string).collect();
    assert_eq!(cols.len(), 5, "pgml.schedule({args}) answered {out:?}");
    cols
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Table `t` (id, x, y) and the view `v` of it in id order (so a 'last'
/// split keeps the same test rows however `t` is updated), holding 40
/// rows whose label has nothing to do with x.
fn seed_noisy(proxy: &Proxy) {
    ok(
        proxy,
        "CREATE TABLE t (id int PRIMARY KEY, x real NOT NULL, y real NOT NULL); \
         INSERT INTO t SELECT g, g * 0.25, ((g * 37) % 41) * 2.5 FROM generate_series(1, 40) g; \
         CREATE VIEW v AS SELECT x, y FROM t ORDER BY id",
    );
}

/// 400 rows with y = 3x + 1 (and a little noise): ids 41..440, so the test
/// rows of a 'last' split (the last 110) are all among them.
fn add_clean(pg: &PgCluster) -> String {
    q(
        pg,
        "INSERT INTO t SELECT g, ((g * 13) % 97) * 0.4, \
         3 * (((g * 13) % 97) * 0.4) + 1 + ((g * 7) % 5 - 2) * 0.1 \
         FROM generate_series(41, 440) g",
    );
    clock(pg)
}

fn train_linear(proxy: &Proxy, project: &str, relation: &str, label: &str) {
    ok(
        proxy,
        &format!(
            "SELECT * FROM pgml.train('{project}', 'regression', '{relation}', '{label}', \
             algorithm => 'linear', test_sampling => 'last')"
        ),
    );
}

fn r2(pg: &PgCluster, model: &str) -> f64 {
    let text = q(
        pg,
        &format!("SELECT metrics->>'r2' FROM pgml.models WHERE id = {model}"),
    );
    text.parse()
        .unwrap_or_else(|e| panic!("r2 of model {model}: {text:?}: {e}"))
}

/// `simple_config` with /metrics on `metrics_port`.
fn metrics_config(port: u16, metrics_port: u16, pg: &PgCluster) -> String {
    simple_config(port, pg, "transaction", 4).replace(
        "connect_timeout = 3000",
        &format!(
            "connect_timeout = 3000\nenable_prometheus_exporter = true\nprometheus_exporter_port = {metrics_port}"
        ),
    )
}

/// (1) A scheduled retrain deploys when it is better on the same test rows
/// and keeps the deployment when it is not.
#[test]
fn retrain_deploys_only_when_better() {
    let (pg, proxy) = single();
    seed_noisy(&proxy);
    train_linear(&proxy, "p", "v", "y");
    let first = deployed_id(&pg, "p");

    let row = schedule(&proxy, "'p', '2 seconds'");
    assert_eq!(
        (row[0].as_str(), row[1].as_str(), row[3].as_str()),
        ("p", "00:00:02", "always"),
        "{row:?}"
    );
    assert_eq!(q(&pg, "SELECT count(*) FROM pgml.schedules"), "1");

    let predict = "SELECT pgml.predict('p', ARRAY[x]) FROM (VALUES (5::real), (30::real)) v(x)";
    let before = ok(&proxy, predict);

    // (a) Many clean rows: a retrain is far better on the new test rows.
    let inserted = add_clean(&pg);
    let deployed = wait_for(
        &pg,
        "a 'deployed' run after the clean rows",
        &format!(
            "SELECT model_id FROM pgml.schedule_runs WHERE project = 'p' \
             AND outcome = 'deployed' AND started > '{inserted}' ORDER BY due LIMIT 1"
        ),
    );
    // Runs on the noisy rows alone retrained the same model: never better.
    assert_eq!(
        q(
            &pg,
            &format!(
                "SELECT count(*) FROM pgml.schedule_runs WHERE project = 'p' \
                 AND outcome = 'deployed' AND started < '{inserted}'"
            )
        ),
        "0",
        "a run on unchanged data deployed\n{}",
        runs_dump(&pg)
    );
    assert_ne!(deployed, first.to_string());
    assert_eq!(
        deployed_id(&pg, "p").to_string(),
        deployed,
        "pgml.deployed_models is not the deployed run's model\n{}",
        runs_dump(&pg)
    );
    assert_eq!(
        q(
            &pg,
            &format!(
                "SELECT instance FROM pgml.schedule_runs WHERE model_id = {deployed} AND outcome = 'deployed'"
            )
        ),
        format!("{}:{}", hostname(), proxy.pid())
    );
    let after_a = ok(&proxy, predict);
    assert_ne!(after_a, before, "pgml.predict still serves the first model");
    let good_r2 = r2(&pg, &deployed);
    assert!(good_r2 > 0.9, "r2 of the deployed retrain: {good_r2}");

    // (b) Ruin the labels of the training rows only (ids up to 300; the
    // test rows, 331..440, stay clean): a retrain is worse on them.
    q(
        &pg,
        "UPDATE t SET y = ((id * 37) % 41) * 10 WHERE id <= 300",
    );
    let corrupted = clock(&pg);
    let (outcome, model, detail) = first_finished_after(&pg, "p", &corrupted);
    assert_eq!(outcome, "kept", "detail {detail:?}\n{}", runs_dump(&pg));
    assert!(!model.is_empty(), "a 'kept' run names the model it trained");
    assert_eq!(
        q(
            &pg,
            &format!("SELECT count(*) FROM pgml.models WHERE id = {model}")
        ),
        "1"
    );
    assert_eq!(
        q(
            &pg,
            &format!("SELECT count(*) FROM pgml.deployments WHERE model_id = {model}")
        ),
        "0",
        "the kept model was deployed"
    );
    assert_eq!(deployed_id(&pg, "p").to_string(), deployed);
    let bad_r2 = r2(&pg, &model);
    assert!(
        bad_r2 < good_r2,
        "the kept retrain ({bad_r2}) should be worse than the deployed one ({good_r2})"
    );
    // Only one deployment came of the whole schedule.
    assert_eq!(
        q(
            &pg,
            "SELECT count(*) FROM pgml.deployments d JOIN pgml.projects p ON p.id = d.project_id WHERE p.name = 'p'"
        ),
        "2",
        "the training's and the better retrain's\n{}",
        runs_dump(&pg)
    );
    // pgml.predict serves the retrain deployed in (a), not the kept one.
    assert_eq!(ok(&proxy, predict), after_a);
}

/// One run of a schedule: (due, started, finished or None) in
/// microseconds since the epoch, outcome, instance.
struct Run {
    due: i64,
    started: i64,
    finished: Option<i64>,
    outcome: String,
    instance: String,
}

fn runs(pg: &PgCluster, project: &str) -> Vec<Run> {
    let out = q(
        pg,
        &format!(
            "SELECT (extract(epoch FROM due) * 1000000)::bigint, \
             (extract(epoch FROM started) * 1000000)::bigint, \
             coalesce((extract(epoch FROM finished) * 1000000)::bigint, -1), outcome, instance \
             FROM pgml.schedule_runs WHERE project = '{project}' ORDER BY due"
        ),
    );
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            let finished: i64 = f[2].parse().unwrap();
            Run {
                due: f[0].parse().unwrap(),
                started: f[1].parse().unwrap(),
                finished: (finished >= 0).then_some(finished),
                outcome: f[3].to_string(),
                instance: f[4].to_string(),
            }
        })
        .collect()
}

fn epoch_us(pg: &PgCluster, ts: &str) -> i64 {
    q(
        pg,
        &format!("SELECT (extract(epoch FROM '{ts}'::timestamptz) * 1000000)::bigint"),
    )
    .parse()
    .unwrap()
}

/// (2) Two pgmlcat processes on one database: each due time is run exactly
/// once, by one of them, and runs of the schedule never overlap.
#[test]
fn two_processes_run_each_due_time_once() {
    let pg = PgCluster::start();
    let (port_a, port_b) = (free_port(), free_port());
    let (metrics_a, metrics_b) = (free_port(), free_port());
    let a = Proxy::start(port_a, &metrics_config(port_a, metrics_a, &pg));
    let b = Proxy::start(port_b, &metrics_config(port_b, metrics_b, &pg));
    ok(
        &a,
        "CREATE TABLE d AS SELECT g::real AS x, (2 * g + 1)::real AS y FROM generate_series(1, 300) g",
    );
    train_linear(&a, "p", "d", "y");
    // Both processes have served a pgml call on the database.
    let pa = ok(&a, "SELECT pgml.predict('p', ARRAY[10::real])");
    let pb = ok(&b, "SELECT pgml.predict('p', ARRAY[10::real])");
    assert_eq!(pa, pb);

    const EVERY: i64 = 2_000_000;
    let row = schedule(&b, "'p', '2 seconds', condition => 'always'");
    assert_eq!(row[3], "always");
    let first_due = epoch_us(&pg, &row[4]);
    // Let ~12 s of due times pass.
    let until = first_due + 12_500_000;
    loop {
        let now = epoch_us(&pg, &clock(&pg));
        if now >= until {
            break;
        }
        std::thread::sleep(Duration::from_millis(
            ((until - now) / 1000).clamp(1, 500) as u64
        ));
    }
    let snapshot = epoch_us(&pg, &clock(&pg));
    let all = runs(&pg, "p");
    let dump = runs_dump(&pg);

    // No due time run twice.
    assert_eq!(
        q(
            &pg,
            "SELECT count(*) FROM (SELECT schedule_id, due FROM pgml.schedule_runs \
             GROUP BY 1, 2 HAVING count(*) > 1) s"
        ),
        "0",
        "{dump}"
    );
    assert!(!all.is_empty(), "no run in 12 s\n{dump}");
    assert_eq!(
        all[0].due, first_due,
        "the first due time is the next_run pgml.schedule answered\n{dump}"
    );

    // Who ran them: these two processes only.
    let host = hostname();
    let ours = [format!("{host}:{}", a.pid()), format!("{host}:{}", b.pid())];
    let mut by_instance: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &all {
        *by_instance.entry(r.instance.as_str()).or_default() += 1;
    }
    assert!(
        by_instance.keys().all(|i| ours.iter().any(|o| o == i)),
        "instances {by_instance:?}, expected among {ours:?}\n{dump}"
    );
    eprintln!("runs per instance: {by_instance:?}");

    let mut problems = Vec::new();
    for r in &all {
        if !["kept", "deployed", "running"].contains(&r.outcome.as_str()) {
            problems.push(format!("due {}: outcome {}", r.due, r.outcome));
        }
        if r.started < r.due {
            problems.push(format!("due {} started early, at {}", r.due, r.started));
        }
    }
    for w in all.windows(2) {
        let (prev, next) = (&w[0], &w[1]);
        let gap = next.due - prev.due;
        if gap <= 0 || gap % EVERY != 0 {
            problems.push(format!(
                "dues {} and {} are not a multiple of the interval apart",
                prev.due, next.due
            ));
        }
        match prev.finished {
            Some(f) if next.started >= f => {}
            Some(f) => problems.push(format!(
                "run due {} started at {} before the run due {} finished at {f}",
                next.due, next.started, prev.due
            )),
            None => problems.push(format!(
                "run due {} started while the run due {} was still running",
                next.due, prev.due
            )),
        }
    }
    // Every due time up to 3 s ago was run, or passed while the previous
    // run was still going (then the next run stands for it).
    let mut due = first_due;
    let mut expected = 0;
    let mut covered = 0;
    while due <= snapshot - 3_000_000 {
        expected += 1;
        if all.iter().any(|r| r.due == due) {
            covered += 1;
        } else {
            let prev = all.iter().rev().find(|r| r.due < due);
            let next = all.iter().find(|r| r.due > due);
            let justified = match (prev, next) {
                (Some(p), Some(n)) => {
                    due <= n.started && p.finished.is_none_or(|f| due < f + 2_000_000)
                }
                (Some(p), None) => p.finished.is_none(),
                _ => false,
            };
            if justified {
                covered += 1;
            } else {
                problems.push(format!("due time {due} was never run"));
            }
        }
        due += EVERY;
    }
    assert!(expected >= 4, "{expected} due times in ~12 s?");
    assert_eq!(covered, expected);
    let skipped_dues = expected - all.iter().filter(|r| r.due <= snapshot - 3_000_000).count();
    assert!(
        skipped_dues <= 1,
        "{skipped_dues} due times folded into a later run: runs of a 300-row linear \
         regression should not take 2 s\n{dump}"
    );
    assert!(problems.is_empty(), "{problems:#?}\n{dump}");

    // Each process counts the runs it finished, as the catalog says it
    // ran them.
    for (proxy, metrics_port, instance) in [(&a, metrics_a, &ours[0]), (&b, metrics_b, &ours[1])] {
        let finished = |pg: &PgCluster| -> f64 {
            q(
                pg,
                &format!(
                    "SELECT count(*) FROM pgml.schedule_runs WHERE instance = '{instance}' AND outcome <> 'running'"
                ),
            )
            .parse()
            .unwrap()
        };
        let low = finished(&pg);
        let m = scrape(metrics_port);
        let high = finished(&pg);
        let counted: f64 = ["deployed", "kept", "skipped", "failed"]
            .iter()
            .map(|o| {
                metric(
                    &m,
                    "pgmlcat_schedule_runs_total",
                    &[("project", "p"), ("outcome", o)],
                )
            })
            .sum();
        assert!(
            low <= counted && counted <= high,
            "process on port {}: /metrics counts {counted} runs, the catalog {low}..{high}",
            proxy.port
        );
    }

    // The other process polls too: with the one that ran the last run
    // gone, it takes the schedule over.
    let last = all.last().map(|r| r.instance.clone()).unwrap_or_default();
    let survivor = if last == ours[0] {
        drop(a);
        ours[1].clone()
    } else {
        drop(b);
        ours[0].clone()
    };
    let gone = clock(&pg);
    let taken = wait_for(
        &pg,
        "a run by the remaining process",
        &format!(
            "SELECT instance FROM pgml.schedule_runs WHERE project = 'p' AND started > '{gone}' \
             AND outcome IN ('kept', 'deployed') LIMIT 1"
        ),
    );
    assert_eq!(taken, survivor);
}

/// (3) A run that fails leaves the deployed model and its predictions alone.
#[test]
fn a_failing_run_leaves_the_deployment_alone() {
    let (pg, proxy) = single();
    ok(
        &proxy,
        "CREATE TABLE ft AS SELECT g * 0.1 AS x, (2 * g * 0.1 + 3)::real AS label FROM generate_series(1, 200) g",
    );
    train_linear(&proxy, "f", "ft", "label");
    let model = deployed_id(&pg, "f");
    let predict =
        "SELECT pgml.predict('f', ARRAY[x]) FROM (VALUES (1.5::real), (7::real), (-3::real)) v(x)";
    let before = ok(&proxy, predict);
    assert_eq!(before.lines().count(), 3);

    let row = schedule(&proxy, "'f', '2 seconds', relation_name => 'ft'");
    assert_eq!(
        (
            row[0].as_str(),
            row[1].as_str(),
            row[2].as_str(),
            row[3].as_str()
        ),
        ("f", "00:00:02", "ft", "always"),
        "{row:?}"
    );
    q(&pg, "ALTER TABLE ft DROP COLUMN label");
    let broken = clock(&pg);
    let (outcome, _, detail) = first_finished_after(&pg, "f", &broken);
    assert_eq!(outcome, "failed", "detail {detail:?}\n{}", runs_dump(&pg));
    eprintln!("failed run's detail: {detail}");
    assert!(
        detail.contains("label"),
        "the detail is the error, about the missing label column: {detail:?}"
    );
    assert_eq!(deployed_id(&pg, "f"), model, "{}", runs_dump(&pg));
    assert_eq!(
        q(
            &pg,
            "SELECT count(*) FROM pgml.deployments d JOIN pgml.projects p ON p.id = d.project_id WHERE p.name = 'f'"
        ),
        "1"
    );
    assert_eq!(ok(&proxy, predict), before);
    // It keeps failing, and keeps nothing else from running.
    let (outcome, _, _) = first_finished_after(&pg, "f", &clock(&pg));
    assert_eq!(outcome, "failed");
    assert_eq!(deployed_id(&pg, "f"), model);
}

/// `interval` in binary: microseconds, days, months.
#[derive(Debug, PartialEq)]
struct Interval {
    micros: i64,
    days: i32,
    months: i32,
}

impl<'a> FromSql<'a> for Interval {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        if raw.len() != 16 {
            return Err(format!("an interval is 16 bytes, got {}", raw.len()).into());
        }
        Ok(Interval {
            micros: i64::from_be_bytes(raw[0..8].try_into()?),
            days: i32::from_be_bytes(raw[8..12].try_into()?),
            months: i32::from_be_bytes(raw[12..16].try_into()?),
        })
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
}

/// Sent as `interval_send` writes it: a driver's binary interval parameter.
impl tokio_postgres::types::ToSql for Interval {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&self.micros.to_be_bytes());
        out.extend_from_slice(&self.days.to_be_bytes());
        out.extend_from_slice(&self.months.to_be_bytes());
        Ok(tokio_postgres::types::IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }

    tokio_postgres::types::to_sql_checked!();
}

/// (4) Conditions: 'new_rows > 100' skips until 101 rows came, then
/// trains; bad arguments are refused with their SQLSTATEs; unschedule
/// stops the runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_errors_and_unschedule() {
    let (pg, proxy) = single();
    ok(
        &proxy,
        "CREATE TABLE c (x real, y real); \
         INSERT INTO c SELECT g * 0.1, 2 * g * 0.1 + 1 FROM generate_series(1, 200) g",
    );
    train_linear(&proxy, "c", "c", "y");
    let client = connect(&proxy.url("app", "app_pw", "app")).await;

    for (sql, code) in [
        (
            "SELECT * FROM pgml.schedule('c', '2 seconds', condition => 'sometimes')",
            "22023",
        ),
        (
            "SELECT * FROM pgml.schedule('c', '2 seconds', condition => 'new_rows > many')",
            "22023",
        ),
        (
            "SELECT * FROM pgml.schedule('c', '2 seconds', condition => 'new_rows >')",
            "22023",
        ),
        (
            "SELECT * FROM pgml.schedule('c', '2 seconds', NULL, 'new_rows < 5')",
            "22023",
        ),
        ("SELECT * FROM pgml.schedule('c', '0.5 seconds')", "22023"),
        ("SELECT * FROM pgml.schedule('c', '0 seconds')", "22023"),
        ("SELECT * FROM pgml.schedule('c', '-5 seconds')", "22023"),
        ("SELECT * FROM pgml.schedule('nope', '2 seconds')", "42704"),
    ] {
        let (got, message) = expect_error(&client, sql).await;
        assert_eq!(got, code, "{sql}: {message}");
    }
    assert_eq!(
        q(&pg, "SELECT count(*) FROM pgml.schedules"),
        "0",
        "a refused schedule was stored"
    );

    // A 'drift' schedule, then replaced: one schedule per project.
    let row = schedule(&proxy, "'c', '1 hour', condition => 'drift'");
    assert_eq!((row[1].as_str(), row[3].as_str()), ("01:00:00", "drift"));

    let replaced = clock(&pg);
    let row = schedule(&proxy, "'c', '2 seconds', condition => 'new_rows > 100'");
    assert_eq!(
        (row[0].as_str(), row[1].as_str(), row[3].as_str()),
        ("c", "00:00:02", "new_rows > 100")
    );
    assert_eq!(
        q(
            &pg,
            "SELECT count(*) || '|' || min(condition) || '|' || min(every::text) FROM pgml.schedules"
        ),
        "1|new_rows > 100|00:00:02",
        "scheduling again replaces the schedule"
    );

    // No new rows: skipped, saying why.
    let (outcome, _, detail) = first_finished_after(&pg, "c", &replaced);
    assert_eq!(outcome, "skipped", "{}", runs_dump(&pg));
    assert!(!detail.is_empty(), "a skipped run says why");
    // 50 new rows: still skipped.
    q(
        &pg,
        "INSERT INTO c SELECT g, 2 * g + 1 FROM generate_series(1, 50) g",
    );
    let fifty = clock(&pg);
    let (outcome, _, _) = first_finished_after(&pg, "c", &fifty);
    assert_eq!(outcome, "skipped", "50 new rows\n{}", runs_dump(&pg));
    // 101 new rows: the next run trains.
    q(
        &pg,
        "INSERT INTO c SELECT g, 2 * g + 1 FROM generate_series(51, 101) g",
    );
    let more = clock(&pg);
    let (outcome, model, detail) = first_finished_after(&pg, "c", &more);
    assert!(
        outcome == "deployed" || outcome == "kept",
        "101 new rows: {outcome} {detail:?}\n{}",
        runs_dump(&pg)
    );
    assert!(!model.is_empty());
    assert_eq!(
        q(
            &pg,
            &format!(
                "SELECT count(*) FROM pgml.schedule_runs WHERE project = 'c' \
                 AND outcome IN ('deployed', 'kept') AND started < '{more}'"
            )
        ),
        "0",
        "a run trained with 100 new rows or fewer\n{}",
        runs_dump(&pg)
    );

    // Every second, always: each run trains a model. Then unschedule:
    // true, then false; no run starts after it (its runs would train
    // models, and record runs).
    let row = schedule(&proxy, "'c', '1 second', condition => 'always'");
    assert_eq!((row[1].as_str(), row[3].as_str()), ("00:00:01", "always"));
    let always = clock(&pg);
    let (outcome, _, detail) = first_finished_after(&pg, "c", &always);
    assert!(
        outcome == "deployed" || outcome == "kept",
        "{outcome} {detail:?}"
    );
    let models = || {
        q(
            &pg,
            "SELECT count(*) FROM pgml.models m JOIN pgml.projects p ON p.id = m.project_id WHERE p.name = 'c'",
        )
    };
    let msgs = client
        .simple_query("SELECT * FROM pgml.unschedule('c')")
        .await
        .expect("unschedule");
    assert_eq!(
        simple_rows(&msgs),
        vec![vec!["c".to_string(), "t".to_string()]]
    );
    let unscheduled = clock(&pg);
    let msgs = client
        .simple_query("SELECT * FROM pgml.unschedule(project_name => 'c')")
        .await
        .expect("unschedule again");
    assert_eq!(
        simple_rows(&msgs),
        vec![vec!["c".to_string(), "f".to_string()]]
    );
    assert_eq!(q(&pg, "SELECT count(*) FROM pgml.schedules"), "0");
    // A run that had started may still finish; then nothing more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = models();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(models(), settled, "models trained after pgml.unschedule");
    assert_eq!(
        q(
            &pg,
            &format!("SELECT count(*) FROM pgml.schedule_runs WHERE started > '{unscheduled}'")
        ),
        "0",
        "runs after pgml.unschedule\n{}",
        runs_dump(&pg)
    );
    // The typed row, through the extended protocol with text parameters
    // (a second client, tokio-postgres: binary results).
    let statement = client
        .prepare("SELECT * FROM pgml.schedule($1, $2, condition => $3)")
        .await
        .expect("prepare pgml.schedule");
    let types: Vec<(String, Type)> = statement
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), c.type_().clone()))
        .collect();
    assert_eq!(
        types,
        vec![
            ("project".to_string(), Type::TEXT),
            ("every".to_string(), Type::INTERVAL),
            ("relation".to_string(), Type::TEXT),
            ("condition".to_string(), Type::TEXT),
            ("next_run".to_string(), Type::TIMESTAMPTZ),
        ]
    );
    // `every` is described as an interval, as Postgres describes it, and
    // sent as one in binary.
    let two_seconds = Interval {
        micros: 2_000_000,
        days: 0,
        months: 0,
    };
    let typed = client
        .query_one(&statement, &[&"c", &two_seconds, &"new_rows > 100"])
        .await
        .unwrap_or_else(|e| panic!("pgml.schedule with parameters: {e:?}"));
    assert_eq!(typed.get::<_, String>("project"), "c");
    assert_eq!(
        typed.get::<_, Interval>("every"),
        Interval {
            micros: 2_000_000,
            days: 0,
            months: 0
        }
    );
    let relation: Option<String> = typed.get("relation");
    assert!(
        relation.is_none() || relation.as_deref() == Some("c"),
        "relation {relation:?}"
    );
    assert_eq!(typed.get::<_, String>("condition"), "new_rows > 100");
    let next_run: SystemTime = typed.get("next_run");
    let off = match next_run.duration_since(SystemTime::now()) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    assert!(off < Duration::from_secs(10), "next_run is {off:?} away");
    let msgs = client
        .simple_query("SELECT * FROM pgml.unschedule('c')")
        .await
        .expect("unschedule");
    assert_eq!(
        simple_rows(&msgs),
        vec![vec!["c".to_string(), "t".to_string()]]
    );
}

/// Rows of a simple query as column-name maps.
fn named_rows(messages: &[SimpleQueryMessage]) -> Vec<HashMap<String, String>> {
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

/// (5) SHOW SCHEDULES and pgmlcat_schedule_runs_total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_schedules_and_metrics() {
    let pg = PgCluster::start();
    let (port, metrics_port) = (free_port(), free_port());
    let proxy = Proxy::start(port, &metrics_config(port, metrics_port, &pg));
    let admin = connect(&proxy.url("admin", "admin_pw", "pgbouncer")).await;
    let show = || async {
        named_rows(
            &admin
                .simple_query("SHOW SCHEDULES")
                .await
                .unwrap_or_else(|e| panic!("SHOW SCHEDULES: {e:?}")),
        )
    };
    assert!(show().await.is_empty(), "no schedule yet");

    seed_noisy(&proxy);
    train_linear(&proxy, "p", "v", "y");
    schedule(&proxy, "'p', '2 seconds'");
    let inserted = add_clean(&pg);
    let deployed = wait_for(
        &pg,
        "a 'deployed' run",
        &format!(
            "SELECT model_id FROM pgml.schedule_runs WHERE project = 'p' \
             AND outcome = 'deployed' AND started > '{inserted}' LIMIT 1"
        ),
    );
    assert_eq!(deployed_id(&pg, "p").to_string(), deployed);

    let count = |outcome: &str| {
        q(
            &pg,
            &format!(
                "SELECT count(*) FROM pgml.schedule_runs WHERE project = 'p' AND outcome = '{outcome}'"
            ),
        )
        .parse::<f64>()
        .unwrap()
    };
    let all_runs = || {
        q(
            &pg,
            "SELECT count(*) FROM pgml.schedule_runs WHERE project = 'p'",
        )
        .parse::<u64>()
        .unwrap()
    };

    let low = all_runs();
    let rows = show().await;
    let high = all_runs();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let s = &rows[0];
    let mut columns: Vec<&str> = s.keys().map(String::as_str).collect();
    columns.sort();
    assert_eq!(
        columns,
        [
            "condition",
            "database",
            "every",
            "failures",
            "last_finished",
            "last_outcome",
            "next_run",
            "project",
            "relation",
            "runs"
        ]
    );
    assert_eq!(s["project"], "p");
    let projects = named_rows(&admin.simple_query("SHOW PROJECTS").await.unwrap());
    assert_eq!(
        s["database"], projects[0]["database"],
        "the database key, as SHOW PROJECTS names it"
    );
    assert_eq!(s["condition"], "always");
    assert!(
        ["00:00:02", "2 seconds", "2s"].contains(&s["every"].as_str()),
        "every {:?}",
        s["every"]
    );
    let runs: u64 = s["runs"]
        .parse()
        .unwrap_or_else(|e| panic!("runs {s:?}: {e}"));
    assert!(
        low <= runs && runs <= high,
        "runs {runs}, catalog {low}..{high}"
    );
    assert!(runs >= 1);
    assert_eq!(s["failures"], "0");
    assert!(
        ["deployed", "kept", "running"].contains(&s["last_outcome"].as_str()),
        "{s:?}"
    );
    assert!(
        !s["next_run"].is_empty() && !s["last_finished"].is_empty(),
        "{s:?}"
    );

    // /metrics counts the runs this process finished, by outcome.
    let before = count("kept");
    let m = scrape(metrics_port);
    let after = count("kept");
    assert_eq!(
        metric(
            &m,
            "pgmlcat_schedule_runs_total",
            &[("project", "p"), ("outcome", "deployed")]
        ),
        count("deployed")
    );
    assert_eq!(count("deployed"), 1.0, "{}", runs_dump(&pg));
    let kept = metric(
        &m,
        "pgmlcat_schedule_runs_total",
        &[("project", "p"), ("outcome", "kept")],
    );
    assert!(
        before <= kept && kept <= after,
        "kept {kept}, catalog {before}..{after}"
    );
    assert_eq!(
        metric(
            &m,
            "pgmlcat_schedule_runs_total",
            &[("project", "p"), ("outcome", "failed")]
        ),
        0.0
    );

    // A failure shows in SHOW SCHEDULES' failures.
    q(&pg, "DROP VIEW v; CREATE VIEW v AS SELECT x FROM t");
    let broken = clock(&pg);
    let (outcome, _, _) = first_finished_after(&pg, "p", &broken);
    assert_eq!(outcome, "failed");
    let low = count("failed");
    let rows = show().await;
    let high = count("failed");
    let failures: f64 = rows[0]["failures"].parse().unwrap();
    assert!(
        failures >= 1.0 && low <= failures && failures <= high,
        "failures {failures}, catalog {low}..{high}: {rows:?}"
    );
}

/// (6) Due times that passed while no pgmlcat process was running are run
/// once, by the next process that serves a pgml call on the database; the
/// next due time after that is in the future.
#[test]
fn due_times_passed_while_down_run_once() {
    let pg = PgCluster::start();
    let port = free_port();
    let proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 4));
    ok(
        &proxy,
        "CREATE TABLE d AS SELECT g::real AS x, (2 * g + 1)::real AS y FROM generate_series(1, 300) g",
    );
    train_linear(&proxy, "p", "d", "y");
    schedule(&proxy, "'p', '2 seconds'");
    first_finished_after(&pg, "p", "-infinity");
    drop(proxy);
    let down = clock(&pg);
    // ~3 due times pass with no process to run them.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(
        q(
            &pg,
            &format!("SELECT count(*) FROM pgml.schedule_runs WHERE started > '{down}'")
        ),
        "0"
    );
    let port = free_port();
    let proxy = Proxy::start(port, &simple_config(port, &pg, "transaction", 4));
    let up = clock(&pg);
    ok(&proxy, "SELECT pgml.predict('p', ARRAY[10::real])");
    let (outcome, _, detail) = first_finished_after(&pg, "p", &up);
    assert!(
        outcome == "kept" || outcome == "deployed",
        "{outcome} {detail:?}"
    );
    // Let the following due time come and go.
    std::thread::sleep(Duration::from_secs(3));
    let dump = runs_dump(&pg);
    let backlog = q(
        &pg,
        &format!("SELECT count(*) FROM pgml.schedule_runs WHERE started > '{up}' AND due < '{up}'"),
    );
    assert_eq!(
        backlog, "1",
        "the due times passed while down run once\n{dump}"
    );
    let after: Vec<Run> = runs(&pg, "p")
        .into_iter()
        .filter(|r| r.started > epoch_us(&pg, &up))
        .collect();
    assert!(after.len() >= 2, "runs since the restart\n{dump}");
    assert!(
        after[1].due > after[0].started,
        "the run after the catch-up is for a due time after it\n{dump}"
    );
    assert_eq!(
        (after[1].due - after[0].due) % 2_000_000,
        0,
        "due times stay on the schedule's grid\n{dump}"
    );
}

/// (7) The 'drift' condition: skipped while the relation looks like the
/// training rows, a retrain once a feature drifted.
#[test]
fn drift_condition_retrains_on_drift() {
    let (pg, proxy) = single();
    ok(
        &proxy,
        "CREATE TABLE dr AS SELECT ((g * 37) % 200) * 0.05 AS x, (2 * (((g * 37) % 200) * 0.05) + 1)::real AS y \
         FROM generate_series(1, 400) g",
    );
    ok(
        &proxy,
        r#"SELECT * FROM pgml.train('dr', 'regression', 'dr', 'y', algorithm => 'lightgbm',
           hyperparams => '{"n_estimators": 7, "max_depth": 3, "num_threads": 1}',
           preprocess => '{"x": {"impute": "mean", "scale": "standard"}}', test_sampling => 'last')"#,
    );
    let first = deployed_id(&pg, "dr");
    let row = schedule(&proxy, "'dr', '2 seconds', condition => 'drift'");
    assert_eq!(row[3], "drift");
    let (outcome, _, detail) = first_finished_after(&pg, "dr", "-infinity");
    assert_eq!(outcome, "skipped", "{detail:?}\n{}", runs_dump(&pg));
    assert!(!detail.is_empty());
    // Twice as many rows far above the training range: x drifted.
    q(
        &pg,
        "INSERT INTO dr SELECT 100 + (g % 10), 2 * (100 + (g % 10)) + 1 FROM generate_series(1, 800) g",
    );
    let drifted = clock(&pg);
    let (outcome, model, detail) = first_finished_after(&pg, "dr", &drifted);
    assert!(
        outcome == "deployed" || outcome == "kept",
        "{outcome} {detail:?}\n{}",
        runs_dump(&pg)
    );
    assert!(!model.is_empty());
    // The retrain is the deployed model's algorithm, hyperparameters,
    // preprocessing and split, on the relation as it is now.
    let settings = |id: &str| {
        q(
            &pg,
            &format!(
                "SELECT m.algorithm, m.hyperparams, s.test_sampling, s.test_size, s.relation_name, \
                 (SELECT c->'preprocessor' FROM jsonb_array_elements(s.columns) c WHERE c->>'name' = 'x') \
                 FROM pgml.models m JOIN pgml.snapshots s ON s.id = m.snapshot_id WHERE m.id = {id}"
            ),
        )
    };
    assert_eq!(settings(&model), settings(&first.to_string()));
    assert_eq!(
        q(
            &pg,
            &format!(
                "SELECT s.analysis->>'samples' FROM pgml.models m JOIN pgml.snapshots s ON s.id = m.snapshot_id WHERE m.id = {model}"
            )
        ),
        "1200"
    );
}

/// (8) Runs that take longer than the interval, with two processes: a run
/// never starts before the previous one finished, and the due times that
/// passed meanwhile are folded into the next run, none run twice.
#[test]
fn long_runs_never_overlap() {
    let pg = PgCluster::start();
    let (port_a, port_b) = (free_port(), free_port());
    let a = Proxy::start(port_a, &simple_config(port_a, &pg, "transaction", 4));
    let b = Proxy::start(port_b, &simple_config(port_b, &pg, "transaction", 4));
    ok(
        &a,
        "CREATE TABLE big AS SELECT (g % 1000) * 0.01 AS x1, ((g * 7) % 1013) * 0.01 AS x2, \
         ((g * 13) % 997) * 0.01 AS x3, (((g % 1000) * 0.01) * 2 + ((g * 7) % 1013) * 0.01)::real AS y \
         FROM generate_series(1, 200000) g",
    );
    ok(
        &a,
        r#"SELECT * FROM pgml.train('slow', 'regression', 'big', 'y', algorithm => 'lightgbm',
           hyperparams => '{"n_estimators": 100, "num_leaves": 63, "num_threads": 1}')"#,
    );
    ok(&b, "SELECT pgml.predict('slow', ARRAY[1, 2, 3]::real[])");
    schedule(&a, "'slow', '1 second'");
    // At least three runs, each longer than the interval.
    wait_for(
        &pg,
        "three finished runs",
        "SELECT 1 FROM pgml.schedule_runs WHERE outcome <> 'running' HAVING count(*) >= 3",
    );
    let all = runs(&pg, "slow");
    let dump = runs_dump(&pg);
    assert_eq!(
        q(
            &pg,
            "SELECT count(*) FROM (SELECT due FROM pgml.schedule_runs GROUP BY due HAVING count(*) > 1) s"
        ),
        "0",
        "{dump}"
    );
    let mut problems = Vec::new();
    for r in &all {
        if !["kept", "deployed", "running"].contains(&r.outcome.as_str()) {
            problems.push(format!("due {}: outcome {}", r.due, r.outcome));
        }
    }
    for w in all.windows(2) {
        let (prev, next) = (&w[0], &w[1]);
        let gap = next.due - prev.due;
        if gap <= 0 || gap % 1_000_000 != 0 {
            problems.push(format!(
                "dues {} and {} are off the grid",
                prev.due, next.due
            ));
        }
        match prev.finished {
            Some(f) if next.started >= f => {
                // The due times in between had passed when the next run
                // was claimed.
                let mut d = prev.due + 1_000_000;
                while d < next.due {
                    if d > next.started {
                        problems.push(format!("due {d} was skipped before it came"));
                    }
                    d += 1_000_000;
                }
            }
            _ => problems.push(format!(
                "run due {} started at {} while the run due {} ran (finished {:?})",
                next.due, next.started, prev.due, prev.finished
            )),
        }
    }
    let long = all
        .iter()
        .filter(|r| r.finished.is_some_and(|f| f - r.started > 1_000_000))
        .count();
    assert!(long >= 1, "no run took longer than the interval\n{dump}");
    assert!(problems.is_empty(), "{problems:#?}\n{dump}");
    drop((a, b));
}
