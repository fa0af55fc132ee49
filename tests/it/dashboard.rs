//! The web dashboard (`[general] dashboard_port`): its pages rendered by
//! headless Chromium and read back from the DOM Chromium built, checked
//! against what the test put in the catalog (read on the cluster
//! directly); HTTP Basic auth, the Content-Security-Policy, and names
//! from the database escaped.
//!
//! The Chromium tests skip (with a message) when /usr/bin/chromium is
//! missing, unless PGMLCAT_REQUIRE_CHROMIUM is set (scripts/test.sh sets
//! it: scripts/setup.sh installs Chromium). One screenshot of each page
//! goes to target/test-artifacts/dashboard/.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const ADMIN: &str = "admin";
const PASSWORD: &str = "admin_pw";

/// A project name that runs script if any page puts it into HTML unescaped.
const XSS: &str = "<img src=x onerror=\"document.body.setAttribute('data-xss','1')\"><script>document.body.setAttribute('data-xss','2')</script>";

// ---------------------------------------------------------------------------
// The proxy with its dashboard
// ---------------------------------------------------------------------------

/// One cluster behind a proxy whose dashboard listens on its own port.
struct Setup {
    pg: PgCluster,
    proxy: Proxy,
    dashboard: u16,
}

impl Setup {
    fn start() -> Setup {
        let pg = PgCluster::start();
        let port = free_port();
        let dashboard = free_port();
        let proxy = Proxy::start(port, &config(port, dashboard, &pg, PASSWORD));
        wait_for_port(dashboard, &proxy);
        Setup {
            pg,
            proxy,
            dashboard,
        }
    }

    /// The database key the dashboard (and SHOW PROJECTS) names the
    /// cluster's database by.
    fn db_key(&self) -> String {
        format!("127.0.0.1:{}/app", self.pg.port)
    }

    /// `/project?db=...&name=...` for `project`, percent-encoded.
    fn project_path(&self, project: &str) -> String {
        format!(
            "/project?db={}&name={}",
            percent_encode(&self.db_key()),
            percent_encode(project)
        )
    }

    /// An address for Chromium, with the admin's credentials in it.
    fn browser_url(&self, path: &str) -> String {
        format!(
            "http://{ADMIN}:{PASSWORD}@127.0.0.1:{}{path}",
            self.dashboard
        )
    }

    /// `path` as the admin, over a plain TCP connection.
    fn get(&self, path: &str) -> Response {
        http_get(self.dashboard, path, Some((ADMIN, PASSWORD)))
    }
}

fn config(port: u16, dashboard: u16, pg: &PgCluster, password: &str) -> String {
    simple_config(port, pg, "transaction", 4)
        .replace(
            "connect_timeout = 3000",
            &format!("connect_timeout = 3000\ndashboard_port = {dashboard}"),
        )
        .replace(
            "admin_password = \"admin_pw\"",
            &format!("admin_password = \"{password}\""),
        )
}

fn wait_for_port(port: u16, proxy: &Proxy) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            panic!(
                "the dashboard did not listen on port {port} within 20 s\n{}",
                proxy.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// HTTP over a plain TcpStream
// ---------------------------------------------------------------------------

struct Response {
    status: u16,
    /// Header names lowercased.
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn http_get(port: u16, path: &str, auth: Option<(&str, &str)>) -> Response {
    use base64::Engine;
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the dashboard");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if let Some((user, password)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        req.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("send the request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("GET {path}: reading the answer: {e}"));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "GET {path}: not an HTTP answer: {:?}",
                String::from_utf8_lossy(&raw)
            )
        });
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body: String::from_utf8(body).unwrap_or_else(|e| panic!("GET {path}: body not UTF-8: {e}")),
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
        data = &data[eol + 2..];
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[..size.min(data.len())]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

/// The query parameters of a link (`/project?db=..&name=..`), decoded.
fn query_params(href: &str) -> BTreeMap<String, String> {
    let query = href.split_once('?').map(|(_, q)| q).unwrap_or("");
    let query = query.split('#').next().unwrap_or("");
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Headless Chromium
// ---------------------------------------------------------------------------

/// Whether the Chromium tests can run; false (after saying so) when
/// Chromium is missing and PGMLCAT_REQUIRE_CHROMIUM is not set.
fn chromium_present(test: &str) -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    if std::env::var_os("PGMLCAT_REQUIRE_CHROMIUM").is_some() {
        panic!("{CHROMIUM} is missing and PGMLCAT_REQUIRE_CHROMIUM is set (scripts/setup.sh installs it)");
    }
    eprintln!(
        "dashboard::{test}: skipped: {CHROMIUM} is missing (apt-get install chromium, or run \
         scripts/setup.sh; set PGMLCAT_REQUIRE_CHROMIUM=1 to fail instead)"
    );
    false
}

/// Runs headless Chromium on `url` with `args`; its stdout.
fn chromium(url: &str, args: &[&str]) -> String {
    let profile = tempfile::Builder::new()
        .prefix("pgmlcat-chromium.")
        .tempdir()
        .expect("a temp dir for Chromium's profile");
    let out = Command::new("timeout")
        .args(["-k", "10", "120", CHROMIUM])
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("spawn chromium");
    if !out.status.success() {
        panic!(
            "chromium {args:?} {url} failed ({})\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The DOM Chromium built for `url`, parsed.
fn dump_dom(url: &str) -> Dom {
    let html = chromium(url, &["--dump-dom"]);
    assert!(
        html.contains("<body"),
        "chromium dumped no document for {url}:\n{html}"
    );
    Dom::parse(&html)
}

/// A screenshot of `url` in target/test-artifacts/dashboard/`name`.png.
fn screenshot(url: &str, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/dashboard");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts/dashboard");
    let file = dir.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&file);
    chromium(
        url,
        &[
            &format!("--screenshot={}", file.display()),
            "--window-size=1400,1000",
        ],
    );
    let png = std::fs::read(&file)
        .unwrap_or_else(|e| panic!("no screenshot {} of {url}: {e}", file.display()));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 1000,
        "{} is not a PNG of a page",
        file.display()
    );
    eprintln!("dashboard: screenshot {}", file.display());
    file
}

// ---------------------------------------------------------------------------
// A small reader of the serialized DOM
// ---------------------------------------------------------------------------

struct Elem {
    tag: String,
    attrs: Vec<(String, String)>,
    parent: Option<usize>,
    /// All descendant text (raw text elements keep theirs to themselves).
    text: String,
}

/// The elements of a document, in document order.
struct Dom {
    elems: Vec<Elem>,
    html: String,
}

const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
    "wbr",
];
const RAW_TEXT: &[&str] = &["script", "style", "textarea", "title"];

fn decode_entities(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let end = rest.find(';').filter(|&e| e <= 10);
        let decoded = end.and_then(|e| {
            let name = &rest[1..e];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ if name.starts_with("#x") || name.starts_with("#X") => {
                    u32::from_str_radix(&name[2..], 16)
                        .ok()
                        .and_then(char::from_u32)
                }
                _ if name.starts_with('#') => name[1..].parse().ok().and_then(char::from_u32),
                _ => None,
            };
            c.map(|c| (c, e))
        });
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &rest[e + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

impl Dom {
    fn parse(html: &str) -> Dom {
        let mut elems: Vec<Elem> = Vec::new();
        let mut stack: Vec<usize> = Vec::new();
        let b = html.as_bytes();
        let mut i = 0;
        let add_text = |elems: &mut Vec<Elem>, stack: &[usize], text: &str| {
            if text.is_empty() {
                return;
            }
            let text = decode_entities(text);
            for &e in stack {
                elems[e].text.push_str(&text);
            }
        };
        while i < b.len() {
            if html[i..].starts_with("<!--") {
                i = html[i..].find("-->").map_or(b.len(), |e| i + e + 3);
            } else if html[i..].starts_with("<!") || html[i..].starts_with("<?") {
                i = html[i..].find('>').map_or(b.len(), |e| i + e + 1);
            } else if html[i..].starts_with("</") {
                let end = html[i..].find('>').map_or(b.len(), |e| i + e);
                let name = html[i + 2..end].trim().to_ascii_lowercase();
                if let Some(pos) = stack.iter().rposition(|&e| elems[e].tag == name) {
                    stack.truncate(pos);
                }
                i = (end + 1).min(b.len());
            } else if b[i] == b'<' && i + 1 < b.len() && b[i + 1].is_ascii_alphabetic() {
                let mut j = i + 1;
                while j < b.len() && !b[j].is_ascii_whitespace() && b[j] != b'>' && b[j] != b'/' {
                    j += 1;
                }
                let tag = html[i + 1..j].to_ascii_lowercase();
                let mut attrs = Vec::new();
                let mut self_closing = false;
                loop {
                    while j < b.len() && b[j].is_ascii_whitespace() {
                        j += 1;
                    }
                    if j >= b.len() {
                        break;
                    }
                    if b[j] == b'>' {
                        j += 1;
                        break;
                    }
                    if b[j] == b'/' {
                        self_closing = true;
                        j += 1;
                        continue;
                    }
                    let start = j;
                    while j < b.len()
                        && !b[j].is_ascii_whitespace()
                        && b[j] != b'='
                        && b[j] != b'>'
                        && !(b[j] == b'/' && j > start)
                    {
                        j += 1;
                    }
                    let name = html[start..j].to_ascii_lowercase();
                    while j < b.len() && b[j].is_ascii_whitespace() {
                        j += 1;
                    }
                    let mut value = String::new();
                    if j < b.len() && b[j] == b'=' {
                        j += 1;
                        while j < b.len() && b[j].is_ascii_whitespace() {
                            j += 1;
                        }
                        if j < b.len() && (b[j] == b'"' || b[j] == b'\'') {
                            let q = b[j] as char;
                            let end = html[j + 1..].find(q).map_or(b.len(), |e| j + 1 + e);
                            value = decode_entities(&html[j + 1..end]);
                            j = (end + 1).min(b.len());
                        } else {
                            let start = j;
                            while j < b.len() && !b[j].is_ascii_whitespace() && b[j] != b'>' {
                                j += 1;
                            }
                            value = decode_entities(&html[start..j]);
                        }
                    }
                    attrs.push((name, value));
                }
                let id = elems.len();
                elems.push(Elem {
                    tag: tag.clone(),
                    attrs,
                    parent: stack.last().copied(),
                    text: String::new(),
                });
                i = j;
                if RAW_TEXT.contains(&tag.as_str()) && !self_closing {
                    let close = format!("</{tag}");
                    let end = html[i..]
                        .to_ascii_lowercase()
                        .find(&close)
                        .map_or(b.len(), |e| i + e);
                    elems[id].text = if tag == "title" || tag == "textarea" {
                        decode_entities(&html[i..end])
                    } else {
                        html[i..end].to_string()
                    };
                    i = html[end..].find('>').map_or(b.len(), |e| end + e + 1);
                } else if !self_closing && !VOID.contains(&tag.as_str()) {
                    stack.push(id);
                }
            } else {
                // A stray '<' is text; anything else starts on a char boundary.
                let from = if b[i] == b'<' { i + 1 } else { i };
                let end = html[from..].find('<').map_or(b.len(), |e| from + e);
                add_text(&mut elems, &stack, &html[i..end]);
                i = end;
            }
        }
        Dom {
            elems,
            html: html.to_string(),
        }
    }

    fn attr(&self, e: usize, name: &str) -> Option<&str> {
        self.elems[e]
            .attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The element's text, whitespace collapsed.
    fn text(&self, e: usize) -> String {
        self.elems[e]
            .text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn is_within(&self, mut e: usize, ancestor: usize) -> bool {
        while let Some(p) = self.elems[e].parent {
            if p == ancestor {
                return true;
            }
            e = p;
        }
        false
    }

    /// Every element named `tag` ("*": any), in document order.
    fn all(&self, tag: &str) -> Vec<usize> {
        (0..self.elems.len())
            .filter(|&e| tag == "*" || self.elems[e].tag == tag)
            .collect()
    }

    /// The descendants of `within` named `tag` ("*": any).
    fn find(&self, within: usize, tag: &str) -> Vec<usize> {
        self.all(tag)
            .into_iter()
            .filter(|&e| self.is_within(e, within))
            .collect()
    }

    fn by_id(&self, id: &str) -> Option<usize> {
        (0..self.elems.len()).find(|&e| self.attr(e, "id") == Some(id))
    }

    /// The element with `id`, which must be a `tag`.
    fn expect_id(&self, tag: &str, id: &str) -> usize {
        let e = self
            .by_id(id)
            .unwrap_or_else(|| panic!("no #{id} on the page:\n{}", self.html));
        assert_eq!(self.elems[e].tag, tag, "#{id} is a {}", self.elems[e].tag);
        e
    }

    /// The `<tr>`s under `within` carrying attribute `attr`, by its value.
    fn rows_by(&self, within: usize, attr: &str) -> Vec<(String, usize)> {
        self.find(within, "tr")
            .into_iter()
            .filter_map(|r| self.attr(r, attr).map(|v| (v.to_string(), r)))
            .collect()
    }

    /// The text of the `<td data-col="col">` of row `row`.
    fn cell(&self, row: usize, col: &str) -> String {
        self.find(row, "td")
            .into_iter()
            .find(|&c| self.attr(c, "data-col") == Some(col))
            .map(|c| self.text(c))
            .unwrap_or_else(|| {
                panic!(
                    "row {:?} has no <td data-col=\"{col}\">; its text: {}",
                    self.elems[row].attrs,
                    self.text(row)
                )
            })
    }

    /// The data rows (with `<td>`s) of a table.
    fn data_rows(&self, table: usize) -> Vec<usize> {
        self.find(table, "tr")
            .into_iter()
            .filter(|&r| !self.find(r, "td").is_empty())
            .collect()
    }

    fn body(&self) -> usize {
        self.all("body")
            .first()
            .copied()
            .unwrap_or_else(|| panic!("no <body>:\n{}", self.html))
    }
}

// ---------------------------------------------------------------------------
// What the database holds
// ---------------------------------------------------------------------------

struct Deployed {
    id: String,
    algorithm: String,
    task: String,
    metrics: serde_json::Map<String, Value>,
    deployments: usize,
}

/// The deployed model of `project` and its metrics, read on the cluster.
fn deployed(pg: &PgCluster, project: &str) -> Deployed {
    let name = project.replace('\'', "''");
    let row = pg.psql(
        "app",
        &format!(
            "SELECT d.id, d.algorithm, p.task, m.metrics::text, \
                    (SELECT count(*) FROM pgml.deployments x WHERE x.project_id = p.id) \
             FROM pgml.deployed_models d JOIN pgml.models m ON m.id = d.id \
             JOIN pgml.projects p ON p.id = m.project_id WHERE d.name = '{name}'"
        ),
    );
    let f: Vec<&str> = row.split('|').collect();
    assert_eq!(f.len(), 5, "deployed model of {project}: {row:?}");
    let (metrics_text, count) = (f[3], f[4]);
    let metrics: Value = serde_json::from_str(metrics_text)
        .unwrap_or_else(|e| panic!("metrics of {project}: {metrics_text}: {e}"));
    Deployed {
        id: f[0].to_string(),
        algorithm: f[1].to_string(),
        task: f[2].to_string(),
        metrics: metrics.as_object().cloned().unwrap_or_default(),
        deployments: count.parse().unwrap(),
    }
}

fn key_metric(task: &str) -> &'static str {
    match task {
        "regression" => "r2",
        "classification" => "f1",
        other => panic!("no key metric for {other}"),
    }
}

fn four(v: f64) -> String {
    format!("{v:.4}")
}

fn metric(d: &Deployed, name: &str) -> f64 {
    d.metrics
        .get(name)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no {name} in {:?}", d.metrics))
}

/// `project` as an SQL string literal.
fn lit(project: &str) -> String {
    format!("'{}'", project.replace('\'', "''"))
}

/// The features pgml.feature_importance names for `project`.
fn importance_features(proxy: &Proxy, project: &str) -> BTreeSet<String> {
    ok(
        proxy,
        &format!("SELECT * FROM pgml.feature_importance({})", lit(project)),
    )
    .lines()
    .map(|l| l.split('|').next().unwrap_or_default().to_string())
    .collect()
}

/// pgml.drift(project) through the proxy: (feature, statistic) -> drifted
/// ("true", "false", or "" for NULL).
fn drift(proxy: &Proxy, project: &str) -> BTreeMap<(String, String), String> {
    ok(
        proxy,
        &format!("SELECT * FROM pgml.drift({})", lit(project)),
    )
    .lines()
    .map(|l| {
        let f: Vec<&str> = l.split('|').collect();
        assert_eq!(f.len(), 5, "pgml.drift row {l:?}");
        let drifted = match f[4] {
            "t" => "true",
            "f" => "false",
            _ => "",
        };
        ((f[0].to_string(), f[1].to_string()), drifted.to_string())
    })
    .collect()
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[test]
fn pages_show_what_the_catalog_holds() {
    if !chromium_present("pages_show_what_the_catalog_holds") {
        return;
    }
    let s = Setup::start();
    let proxy = &s.proxy;
    ok(proxy, "SELECT * FROM pgml.load_dataset('breast_cancer')");
    ok(proxy, "SELECT * FROM pgml.load_dataset('diabetes')");
    let params = r#"'{"seed": 0, "deterministic": true, "num_threads": 1}'"#;
    ok(proxy, &format!(
        "SELECT * FROM pgml.train('cancer', 'classification', 'pgml.breast_cancer', 'malignant', algorithm => 'lightgbm', hyperparams => {params})"
    ));
    // Two models of diabetes, the second deployed whatever its score: two deployments.
    ok(
        proxy,
        "SELECT * FROM pgml.train('diabetes', 'regression', 'pgml.diabetes', 'target')",
    );
    ok(proxy, &format!(
        "SELECT * FROM pgml.train('diabetes', 'regression', 'pgml.diabetes', 'target', algorithm => 'lightgbm', hyperparams => {params})"
    ));
    ok(
        proxy,
        "SELECT * FROM pgml.deploy('diabetes', 'most_recent')",
    );

    // Predictions, row by row as an application asks for them.
    let features = |table: &str, label: &str| {
        s.pg.psql(
            "app",
            &format!(
                "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute \
                 WHERE attrelid = '{table}'::regclass AND attnum > 0 AND NOT attisdropped AND attname <> '{label}'"
            ),
        )
    };
    let cancer_features = features("pgml.breast_cancer", "malignant");
    let diabetes_features = features("pgml.diabetes", "target");
    let n = ok(
        proxy,
        &format!(
        "SELECT count(pgml.predict('cancer', ARRAY[{cancer_features}])) FROM pgml.breast_cancer"
    ),
    );
    assert_eq!(n, "569");
    let n = ok(proxy, &format!(
        "SELECT count(pgml.predict('diabetes', ({diabetes_features}))) FROM (SELECT * FROM pgml.diabetes LIMIT 100) d"
    ));
    assert_eq!(n, "100");

    // A schedule whose condition stays false: its runs are 'skipped' and
    // leave the deployment as it is while the pages are read.
    let sched = ok(
        proxy,
        "SELECT * FROM pgml.schedule('diabetes', '2 seconds', condition => 'new_rows > 100000')",
    );
    let f: Vec<&str> = sched.split('|').collect();
    assert_eq!(
        (f.len(), f[0], f[1], f[3]),
        (5, "diabetes", "00:00:02", "new_rows > 100000"),
        "{sched}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs = s.pg.psql(
            "app",
            "SELECT count(*) FROM pgml.schedule_runs WHERE project = 'diabetes' AND outcome = 'skipped'",
        );
        if runs != "0" {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "no skipped run of the schedule in 60 s: {}\n{}",
                s.pg.psql("app", "SELECT * FROM pgml.schedule_runs"),
                proxy.log()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    // The dashboard samples the prediction counters every few seconds:
    // the rate sparkline needs two samples after the predictions.
    let deadline = Instant::now() + Duration::from_secs(60);
    for project in ["cancer", "diabetes"] {
        loop {
            let page = s.get(&s.project_path(project)).body;
            let rate = page
                .split_once("<section id=\"rate\"")
                .and_then(|(_, r)| r.split_once("</section>"))
                .map(|(r, _)| r.to_string())
                .unwrap_or_default();
            if rate.contains("<svg") {
                break;
            }
            if Instant::now() > deadline {
                panic!("{project}: no rate sparkline within 60 s: {rate}\n{page}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    let cancer = deployed(&s.pg, "cancer");
    let diabetes = deployed(&s.pg, "diabetes");
    assert_eq!(cancer.task, "classification");
    assert_eq!(diabetes.task, "regression");
    assert!(
        diabetes.deployments >= 2,
        "diabetes deployments: {}",
        diabetes.deployments
    );

    // ---- / ----
    let home_url = s.browser_url("/");
    let home = dump_dom(&home_url);
    screenshot(&home_url, "index");
    assert!(
        home.all("script").is_empty(),
        "the dashboard has no JavaScript"
    );
    let projects = home.expect_id("table", "projects");
    let rows: BTreeMap<String, usize> =
        home.rows_by(projects, "data-project").into_iter().collect();
    assert_eq!(
        rows.keys().cloned().collect::<Vec<_>>(),
        ["cancer", "diabetes"],
        "projects rows"
    );
    for (project, d, predictions) in [("cancer", &cancer, 569), ("diabetes", &diabetes, 100)] {
        let row = rows[project];
        let key = key_metric(&d.task);
        assert_eq!(home.cell(row, "database"), s.db_key(), "{project}");
        assert_eq!(home.cell(row, "project"), project);
        assert_eq!(home.cell(row, "task"), d.task, "{project}");
        assert_eq!(home.cell(row, "deployed_model"), d.id, "{project}");
        assert_eq!(home.cell(row, "algorithm"), d.algorithm, "{project}");
        assert_eq!(home.cell(row, "key_metric"), key, "{project}");
        assert_eq!(home.cell(row, "score"), four(metric(d, key)), "{project}");
        assert_eq!(
            home.cell(row, "predictions"),
            predictions.to_string(),
            "{project}"
        );
        let rate = home.cell(row, "rate");
        assert!(
            rate.parse::<f64>().is_ok(),
            "{project}: rate {rate:?} after predictions"
        );
        home.cell(row, "latency_ms");
        // The project cell links to its page.
        let cell = home
            .find(row, "td")
            .into_iter()
            .find(|&c| home.attr(c, "data-col") == Some("project"))
            .unwrap();
        let link = home
            .find(cell, "a")
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("{project}: the project cell has no link"));
        let href = home.attr(link, "href").unwrap_or_default();
        assert!(href.starts_with("/project?"), "{project}: link {href:?}");
        let q = query_params(href);
        assert_eq!(q.get("db"), Some(&s.db_key()), "{project}: link {href:?}");
        assert_eq!(
            q.get("name").map(String::as_str),
            Some(project),
            "{project}: link {href:?}"
        );
    }
    let pools = home.expect_id("table", "pools");
    let pool_rows: BTreeMap<String, usize> = home.rows_by(pools, "data-pool").into_iter().collect();
    let pool = pool_rows
        .get("app/app")
        .unwrap_or_else(|| panic!("no pool app/app in {:?}", pool_rows.keys()));
    let pool_cells: Vec<String> = home
        .find(*pool, "td")
        .into_iter()
        .map(|c| home.text(c))
        .collect();
    assert!(
        pool_cells.iter().any(|c| c == "transaction"),
        "pool app/app: {pool_cells:?}"
    );
    let schedules = home.expect_id("table", "schedules");
    let sched_rows: BTreeMap<String, usize> = home
        .rows_by(schedules, "data-project")
        .into_iter()
        .collect();
    let sched = sched_rows
        .get("diabetes")
        .unwrap_or_else(|| panic!("no schedule row for diabetes: {:?}", sched_rows.keys()));
    let sched_text = home.text(*sched);
    assert!(
        sched_text.contains("new_rows > 100000"),
        "schedule row: {sched_text}"
    );
    assert!(
        !sched_rows.contains_key("cancer"),
        "cancer has no schedule: {sched_rows:?}"
    );

    // ---- the project pages ----
    for (project, d) in [("cancer", &cancer), ("diabetes", &diabetes)] {
        let url = s.browser_url(&s.project_path(project));
        let page = dump_dom(&url);
        screenshot(&url, &format!("project-{project}"));
        assert!(page.all("script").is_empty(), "{project}: JavaScript");
        let h1 = page.expect_id("h1", "project-name");
        assert_eq!(page.text(h1), project);

        let section = page.expect_id("section", "deployed");
        assert_eq!(
            page.attr(section, "data-model-id"),
            Some(d.id.as_str()),
            "{project}"
        );
        assert!(
            page.text(section).contains(&d.algorithm),
            "{project}: deployed section does not name {}: {}",
            d.algorithm,
            page.text(section)
        );
        let metrics = page.expect_id("table", "metrics");
        let metric_rows: BTreeMap<String, usize> =
            page.rows_by(metrics, "data-metric").into_iter().collect();
        let key = key_metric(&d.task);
        assert!(
            metric_rows.contains_key(key),
            "{project}: no {key} in {:?}",
            metric_rows.keys()
        );
        for (name, &row) in &metric_rows {
            let shown = page.cell(row, "value");
            match d.metrics.get(name).and_then(Value::as_f64) {
                Some(v) => assert_eq!(shown, four(v), "{project} {name}"),
                None => panic!(
                    "{project}: metric {name} ({shown}) is not in the catalog's {:?}",
                    d.metrics
                ),
            }
        }

        let deployments = page.expect_id("table", "deployments");
        let dep_rows = page.data_rows(deployments);
        assert_eq!(dep_rows.len(), d.deployments, "{project}: deployments");
        let newest: Vec<String> = page
            .find(dep_rows[0], "td")
            .into_iter()
            .map(|c| page.text(c))
            .collect();
        assert_eq!(
            newest.first(),
            Some(&d.id),
            "{project}: the newest deployment first: {newest:?}"
        );
        assert!(newest.contains(&d.algorithm), "{project}: {newest:?}");

        let importance = page.expect_id("section", "importance");
        assert!(
            !page.find(importance, "svg").is_empty(),
            "{project}: no importance chart"
        );
        let shown: BTreeSet<String> = page
            .rows_by(importance, "data-feature")
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            shown,
            importance_features(proxy, project),
            "{project}: importance rows"
        );

        let roc = page.by_id("roc");
        if project == "cancer" {
            let roc = roc.unwrap_or_else(|| panic!("no #roc for a binary classifier"));
            assert_eq!(page.elems[roc].tag, "section");
            let auc: f64 = page
                .attr(roc, "data-auc")
                .unwrap_or_else(|| panic!("#roc has no data-auc"))
                .parse()
                .expect("data-auc is a number");
            let expected = metric(d, "roc_auc");
            assert!(
                (auc - expected).abs() <= 0.00005 + 1e-9,
                "data-auc {auc}, roc_auc {expected}"
            );
            let svg = page.find(roc, "svg");
            assert!(!svg.is_empty(), "no ROC chart");
            let curve = ["path", "polyline", "line"]
                .iter()
                .any(|t| !page.find(svg[0], t).is_empty());
            assert!(curve, "the ROC chart draws no curve");
        } else {
            assert!(roc.is_none(), "{project}: a ROC section for a regression");
        }

        let drift_table = page.expect_id("table", "drift");
        let expected = drift(proxy, project);
        let mut shown = BTreeMap::new();
        for (feature, row) in page.rows_by(drift_table, "data-feature") {
            let statistic = page
                .attr(row, "data-statistic")
                .unwrap_or_default()
                .to_string();
            let drifted = page
                .attr(row, "data-drifted")
                .unwrap_or_default()
                .to_string();
            shown.insert((feature, statistic), drifted);
        }
        assert_eq!(
            shown.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{project}: drift rows"
        );
        for (k, want) in &expected {
            if !want.is_empty() {
                assert_eq!(&shown[k], want, "{project}: drift {k:?}");
            }
        }

        let runs = page.expect_id("table", "runs");
        let run_rows = page.data_rows(runs);
        if project == "diabetes" {
            assert!(!run_rows.is_empty(), "diabetes: no schedule runs shown");
            assert!(
                run_rows.iter().any(|&r| page.text(r).contains("skipped")),
                "diabetes runs: {}",
                page.text(runs)
            );
        } else {
            let outcomes = ["running", "deployed", "kept", "skipped", "failed"];
            let shown: Vec<String> = run_rows.iter().map(|&r| page.text(r)).collect();
            assert!(
                !shown.iter().any(|t| outcomes.iter().any(|o| t.contains(o))),
                "cancer has no runs: {shown:?}"
            );
        }

        let rate = page.expect_id("section", "rate");
        assert!(
            !page.find(rate, "svg").is_empty(),
            "{project}: no rate sparkline"
        );
    }

    // Unknown pages and projects.
    assert_eq!(s.get("/nothing-here").status, 404);
    assert_eq!(s.get("/project").status, 404);
    assert_eq!(s.get(&s.project_path("no such project")).status, 404);
    let other_db = format!(
        "/project?db={}&name=cancer",
        percent_encode("127.0.0.1:1/none")
    );
    assert_eq!(s.get(&other_db).status, 404);
}

#[test]
fn only_the_admin_gets_in_and_pages_run_no_script() {
    let s = Setup::start();
    let port = s.dashboard;
    for (auth, what) in [
        (None, "no credentials"),
        (Some((ADMIN, "wrong")), "a wrong password"),
        (Some(("app", "app_pw")), "a pool user"),
    ] {
        let r = http_get(port, "/", auth);
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.to_ascii_lowercase().starts_with("basic"),
            "{what}: WWW-Authenticate {challenge:?}"
        );
        assert!(!r.body.contains("id=\"projects\""), "{what}: {}", r.body);
    }
    let r = http_get(port, "/project?db=x&name=y", None);
    assert_eq!(r.status, 401, "a project page without credentials");

    let r = s.get("/");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("text/html"),
        "{:?}",
        r.headers
    );
    let csp = r
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("no Content-Security-Policy: {:?}", r.headers));
    let directives: BTreeMap<String, String> = csp
        .split(';')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            let (k, v) = d.split_once(' ').unwrap_or((d, ""));
            (k.to_string(), v.trim().to_string())
        })
        .collect();
    assert_eq!(
        directives.get("default-src").map(String::as_str),
        Some("'none'"),
        "{csp}"
    );
    assert_eq!(
        directives.get("style-src").map(String::as_str),
        Some("'unsafe-inline'"),
        "{csp}"
    );
    assert_eq!(
        directives.get("img-src").map(String::as_str),
        Some("data:"),
        "{csp}"
    );
    assert!(!directives.contains_key("script-src"), "{csp}");
    let lower = r.body.to_ascii_lowercase();
    assert!(!lower.contains("<script"), "no JavaScript at all");
    assert!(
        !lower.contains("src=\"http") && !lower.contains("href=\"http"),
        "no external assets"
    );
    // Every page carries the policy, 404s included.
    let r = s.get("/nothing-here");
    assert_eq!(r.status, 404);
    assert!(
        r.header("content-security-policy").is_some(),
        "404: {:?}",
        r.headers
    );
}

#[test]
fn names_from_the_database_are_text() {
    if !chromium_present("names_from_the_database_are_text") {
        return;
    }
    let s = Setup::start();
    let proxy = &s.proxy;
    ok(
        proxy,
        "CREATE TABLE tiny AS SELECT g::real AS x, (2 * g + g % 3)::real AS y FROM generate_series(1, 60) g",
    );
    ok(
        proxy,
        &format!(
            "SELECT * FROM pgml.train({}, 'regression', 'tiny', 'y')",
            lit(XSS)
        ),
    );
    let d = deployed(&s.pg, XSS);

    let home_url = s.browser_url("/");
    let project_url = s.browser_url(&s.project_path(XSS));
    for (url, page_name) in [(&home_url, "index-xss"), (&project_url, "project-xss")] {
        let dom = dump_dom(url);
        screenshot(url, page_name);
        let body = dom.body();
        assert_eq!(
            dom.attr(body, "data-xss"),
            None,
            "{page_name}: script ran:\n{}",
            dom.html
        );
        assert!(
            dom.all("img")
                .into_iter()
                .all(|i| dom.attr(i, "src") != Some("x")),
            "{page_name}: the name became an <img>:\n{}",
            dom.html
        );
        assert!(
            dom.all("script").is_empty(),
            "{page_name}: the name became a <script>:\n{}",
            dom.html
        );
        assert!(
            dom.text(body).contains(XSS),
            "{page_name}: the name is not on the page as text:\n{}",
            dom.html
        );
        if page_name == "index-xss" {
            let projects = dom.expect_id("table", "projects");
            let rows = dom.rows_by(projects, "data-project");
            let row = rows
                .iter()
                .find(|(name, _)| name == XSS)
                .map(|&(_, r)| r)
                .unwrap_or_else(|| {
                    panic!(
                        "no row whose data-project is the whole name: {:?}",
                        rows.iter().map(|(n, _)| n).collect::<Vec<_>>()
                    )
                });
            assert_eq!(dom.cell(row, "project"), XSS);
            assert_eq!(dom.cell(row, "deployed_model"), d.id);
            let link = dom.find(row, "a");
            assert!(!link.is_empty(), "no link to the project page");
            let q = query_params(dom.attr(link[0], "href").unwrap_or_default());
            assert_eq!(q.get("name").map(String::as_str), Some(XSS), "link {q:?}");
            assert_eq!(q.get("db"), Some(&s.db_key()), "link {q:?}");
        } else {
            let h1 = dom.expect_id("h1", "project-name");
            assert_eq!(dom.text(h1), XSS);
            let section = dom.expect_id("section", "deployed");
            assert_eq!(dom.attr(section, "data-model-id"), Some(d.id.as_str()));
        }
    }

    // The HTML as sent: the name escaped.
    for path in ["/".to_string(), s.project_path(XSS)] {
        let r = s.get(&path);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let lower = r.body.to_ascii_lowercase();
        assert!(
            r.body.contains("&lt;img"),
            "{path}: the name is not escaped:\n{}",
            r.body
        );
        assert!(!lower.contains("<img src=x"), "{path}:\n{}", r.body);
        assert!(!lower.contains("<script"), "{path}:\n{}", r.body);
        assert!(
            !r.body.contains("onerror=\"document"),
            "{path}: a quote left unescaped:\n{}",
            r.body
        );
    }
}

#[test]
fn a_dashboard_needs_an_admin_password() {
    let pg = PgCluster::start();
    let port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("pgcat.toml");
    std::fs::write(&path, config(port, free_port(), &pg, "")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgmlcat"))
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pgmlcat");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "pgmlcat started with dashboard_port and an empty admin_password\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("admin_password"),
        "the error names admin_password: {log}"
    );
}
