//! node-postgres clients: the scripts of tests/it/clients/node/, run by
//! the machine's Node.js against npm's `pg` at the version that
//! directory's package-lock.json pins (scripts/setup.sh installs it there,
//! where the scripts' `require('pg')` finds it).

use std::process::Command;

use serde_json::Value;

use super::python::json_answer;
use super::run;

const HINT: &str = "scripts/setup.sh installs Node.js and node-postgres";

fn script(name: &str) -> String {
    format!(
        "{}/tests/it/clients/node/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Runs tests/it/clients/node/`name` with `args`; panics unless it
/// succeeds; its trimmed stdout.
pub fn node_client(name: &str, args: &[&str]) -> String {
    let path = script(name);
    let mut argv = vec![path.as_str()];
    argv.extend_from_slice(args);
    let out = run("node", &argv);
    assert!(
        out.status.success(),
        "{name} {args:?} ({HINT}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs tests/it/clients/node/`name` against `url` with `input` as JSON on
/// stdin; its JSON answer. Panics unless it succeeds.
pub fn node_client_json(name: &str, url: &str, input: &Value) -> Value {
    let mut cmd = Command::new("node");
    cmd.arg(script(name)).arg(url);
    json_answer(cmd, name, input, HINT)
}
