//! Python programs the tests run: the reference scripts of
//! tests/reference/ (figures computed with numpy, scikit-learn, lightgbm
//! or xgboost, with no pgmlcat involved) and the client scripts of
//! tests/it/clients/ (drivers other than the Rust ones).

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::run;

/// The Python the tests run: `PGMLCAT_PYTHON`, else `python3` from PATH
/// (on a machine whose first python3 is a pyenv one without Debian's
/// python3-psycopg and python3-asyncpg, set it to /usr/bin/python3).
pub fn python() -> String {
    std::env::var("PGMLCAT_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs tests/reference/`script` (e.g. "ml_import_reference.py") with
/// `request` as JSON on stdin and .tools/py (where scripts/setup.sh puts
/// numpy, scikit-learn, lightgbm and xgboost when the system Python lacks
/// them) first on PYTHONPATH; its JSON answer. Panics unless it succeeds.
pub fn python_reference(script: &str, request: &Value) -> Value {
    let path = format!("{}/tests/reference/{script}", env!("CARGO_MANIFEST_DIR"));
    python_json(&path, &[], request, true)
}

/// Runs tests/it/clients/`name` (a Python client) against `conninfo` with
/// `input` as JSON on stdin; its JSON answer. Panics unless it succeeds.
pub fn python_client_json(name: &str, conninfo: &str, input: &Value) -> Value {
    let path = format!("{}/tests/it/clients/{name}", env!("CARGO_MANIFEST_DIR"));
    python_json(&path, &[conninfo], input, false)
}

/// Runs tests/it/clients/`name` (a Python client) against `conninfo`;
/// panics unless it succeeds; its trimmed stdout.
pub fn python_client(name: &str, conninfo: &str) -> String {
    let script = format!("{}/tests/it/clients/{name}", env!("CARGO_MANIFEST_DIR"));
    let out = run(&python(), &[&script, conninfo]);
    assert!(
        out.status.success(),
        "{name} against {conninfo}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `python3 <script> <args>` with `input` as JSON on stdin (written from a
/// thread of its own, so a large request cannot deadlock against a large
/// answer) and, with `tools`, .tools/py first on PYTHONPATH; its JSON stdout.
fn python_json(script: &str, args: &[&str], input: &Value, tools: bool) -> Value {
    let mut cmd = Command::new(python());
    cmd.arg(script).args(args);
    if tools {
        let tools = format!("{}/.tools/py", env!("CARGO_MANIFEST_DIR"));
        let path = match std::env::var("PYTHONPATH") {
            Ok(p) if !p.is_empty() => format!("{tools}:{p}"),
            _ => tools,
        };
        cmd.env("PYTHONPATH", path);
    }
    json_answer(
        cmd,
        script,
        input,
        "scripts/setup.sh installs numpy, scikit-learn, lightgbm, xgboost",
    )
}

/// Runs `cmd` with `input` as JSON on stdin (written from a thread of its
/// own, so a large request cannot deadlock against a large answer); its
/// JSON stdout. Panics unless it succeeds, with `hint` and its stderr.
pub(super) fn json_answer(mut cmd: Command, what: &str, input: &Value, hint: &str) -> Value {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what} ({hint}): {e}"));
    let body = input.to_string();
    let mut stdin = child.stdin.take().expect("the program's stdin");
    let writer = std::thread::spawn(move || {
        stdin
            .write_all(body.as_bytes())
            .expect("write the request to the program");
    });
    let out = child.wait_with_output().expect("wait for the program");
    writer.join().expect("the thread writing to the program");
    assert!(
        out.status.success(),
        "{what} failed ({hint}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}'s answer: {e}\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
