//! The web dashboard (`[general] dashboard_port`, off by default): what
//! the admin console and the pgml catalog tell, as pages a browser shows —
//! projects and their deployed models, metrics, deployments, feature
//! importance, ROC curves, drift, schedules and their runs, prediction rate
//! and latency, pools. Every page asks for the admin credentials (HTTP
//! Basic); pages are rendered on the server, with SVG charts and no script
//! or external asset, and everything from the database is escaped.

mod charts;
mod html;
mod pages;
mod rates;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::app::App;

pub use rates::Rates;

/// Requests served at once; more wait to be accepted. A page reads the
/// catalog (and may scan a relation), so a few at a time is plenty.
const MAX_REQUESTS: usize = 16;
/// A client has this long to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the dashboard until the process ends.
pub async fn serve(app: Arc<App>, listener: TcpListener) {
    let rates = Arc::new(Rates::default());
    tokio::spawn(rates::sample(app.clone(), Arc::downgrade(&rates)));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_REQUESTS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (app, rates) = (app.clone(), rates.clone());
        tokio::spawn(async move {
            let _ =
                tokio::time::timeout(Duration::from_secs(120), respond(&app, &rates, stream)).await;
            drop(slot);
        });
    }
}

/// A GET request's path and query parameters (percent-decoded).
pub struct Request {
    pub path: String,
    pub query: Vec<(String, String)>,
}

impl Request {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct Response {
    pub status: &'static str,
    pub body: String,
}

impl Response {
    pub fn ok(body: String) -> Response {
        Response {
            status: "200 OK",
            body,
        }
    }

    pub fn not_found(what: &str) -> Response {
        Response {
            status: "404 Not Found",
            body: html::page(
                "Not found",
                &format!("<h1>Not found</h1><p>{}</p>", html::esc(what)),
            ),
        }
    }
}

async fn respond(app: &App, rates: &Rates, mut stream: TcpStream) -> std::io::Result<()> {
    let Ok(head) = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await else {
        return Ok(()); // too slow: dropped
    };
    let Some(head) = head? else {
        return write(&mut stream, "431 Request Header Fields Too Large", "", "").await;
    };
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or("/"),
    );
    if method != "GET" && method != "HEAD" {
        return write(
            &mut stream,
            "405 Method Not Allowed",
            "Allow: GET, HEAD\r\n",
            "",
        )
        .await;
    }
    let authorization = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("authorization")
            .then(|| value.trim().to_string())
    });
    if !authorized(app, authorization.as_deref()) {
        return write(
            &mut stream,
            "401 Unauthorized",
            "WWW-Authenticate: Basic realm=\"pgmlcat\", charset=\"UTF-8\"\r\n",
            "admin credentials required\n",
        )
        .await;
    }
    let response = pages::route(app, rates, &parse_target(target)).await;
    let body = if method == "HEAD" {
        ""
    } else {
        response.body.as_str()
    };
    write(&mut stream, response.status, "", body).await
}

/// The request head, up to its blank line; None when it is too large.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Ok(None);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(head))
}

async fn write(
    stream: &mut TcpStream,
    status: &str,
    extra: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; frame-ancestors 'none'\r\n\
         X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\nCache-Control: no-store\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// HTTP Basic against the admin console's credentials, compared in
/// constant time.
fn authorized(app: &App, header: Option<&str>) -> bool {
    let general = &app.config().general;
    if general.admin_password.is_empty() {
        return false;
    }
    let Some(encoded) = header.and_then(|h| {
        let (scheme, rest) = h.split_once(' ')?;
        scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
    }) else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
        return false;
    };
    let expected = format!("{}:{}", general.admin_username, general.admin_password);
    decoded.ct_eq(expected.as_bytes()).into()
}

fn parse_target(target: &str) -> Request {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Request {
        path: decode(path),
        query: query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect(),
    }
}

/// Percent-decoding (and `+` as space, as forms write it).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_decode() {
        let r = parse_target("/project?db=127.0.0.1%3A5432&name=a%20b%3Cc+d&x");
        assert_eq!(r.path, "/project");
        assert_eq!(r.param("db"), Some("127.0.0.1:5432"));
        assert_eq!(r.param("name"), Some("a b<c d"));
        assert_eq!(r.param("x"), Some(""));
        assert_eq!(decode("%zz%4"), "%zz%4");
        assert_eq!(decode(&html::url_component("<img src=x>é")), "<img src=x>é");
    }
}
