//! node-postgres clients: the scripts of tests/it/clients/node/, run by
//! the machine's Node.js against npm's `pg` at the version that
//! directory's package-lock.json pins (scripts/setup.sh installs it there,
//! where the scripts' `require('pg')` finds it).

use std::process::Command;

use serde_json::Value;

use super::python::json_answer;

const HINT: &str = "scripts/setup.sh installs Node.js and node-postgres";

fn script(name: &str) -> String {
    format!(
        "{}/tests/it/clients/node/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Runs tests/it/clients/node/`name` against `url` with `input` as JSON on
/// stdin; its JSON answer. Panics unless it succeeds.
pub fn node_client_json(name: &str, url: &str, input: &Value) -> Value {
    let mut cmd = Command::new("node");
    cmd.arg(script(name)).arg(url);
    json_answer(cmd, name, input, HINT)
}
