//! The session parameters a client expects its server to have. Clients set
//! them at startup or with SET; each server the client lands on is brought
//! in line before the client's first statement on it.

/// Startup keys that are not session parameters.
const NOT_PARAMETERS: &[&str] = &["user", "database", "replication", "options"];

/// Parameters the server reports (GUC_REPORT) that clients may change.
const REPORTED: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
];

#[derive(Debug, Default, Clone)]
pub struct ClientParams {
    /// What the client asked for at startup, `options` included, kept
    /// apart only once its session changes a parameter (until then it is
    /// `wanted`: an idle client holds one copy).
    startup: Option<Vec<(String, String)>>,
    /// The values every server this client runs on must have.
    wanted: Vec<(String, String)>,
    /// A hash of `wanted`, never 0: a server that was brought in line with
    /// the same fingerprint (and has reported no change since) needs no
    /// comparison at checkout.
    fingerprint: u64,
}

impl ClientParams {
    pub fn from_startup(params: &[(String, String)]) -> ClientParams {
        let mut startup: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| !NOT_PARAMETERS.contains(&k.as_str()) && !k.starts_with("_pq_."))
            .cloned()
            .collect();
        if let Some((_, options)) = params.iter().find(|(k, _)| k == "options") {
            for (name, value) in parse_options(options) {
                startup.retain(|(k, _)| !k.eq_ignore_ascii_case(&name));
                startup.push((name, value));
            }
        }
        let mut p = ClientParams {
            wanted: startup,
            startup: None,
            fingerprint: 0,
        };
        p.rehash();
        p
    }

    fn rehash(&mut self) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.wanted.hash(&mut h);
        self.fingerprint = h.finish() | 1;
    }

    pub fn wanted(&self) -> &[(String, String)] {
        &self.wanted
    }

    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.wanted
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Values the server gave for parameters the client's statements named
    /// (a SET, a RESET, a set_config): they are the client's now.
    pub fn update(&mut self, values: Vec<(String, String)>) {
        let mut changed = false;
        for (name, value) in &values {
            changed |= self.set(name, value, true);
        }
        if changed {
            self.rehash();
        }
    }

    /// The server reported a new value while this client was on it.
    pub fn reported(&mut self, name: &str, value: &str) {
        if self.set(name, value, REPORTED.contains(&name)) {
            self.rehash();
        }
    }

    /// Sets one wanted value (adding the name only when `add`); whether
    /// anything changed. The caller rehashes.
    fn set(&mut self, name: &str, value: &str, add: bool) -> bool {
        let at = self
            .wanted
            .iter()
            .position(|(k, _)| k.eq_ignore_ascii_case(name));
        match at {
            Some(i) if self.wanted[i].1 == value => return false,
            None if !add => return false,
            _ => {}
        }
        if self.startup.is_none() {
            // What the client started with stays apart from its changes.
            self.startup = Some(self.wanted.clone());
        }
        match at {
            Some(i) => self.wanted[i].1 = value.to_string(),
            None => self.wanted.push((name.to_string(), value.to_string())),
        }
        true
    }

    /// What the session holds now, as the server said after the client's
    /// transaction: every parameter set for the session. A startup value
    /// the session no longer overrides (it was RESET) comes back from the
    /// startup list, as RESET returns to it on a direct connection.
    pub fn session_read(&mut self, session: Vec<(String, String)>) {
        let startup = self.startup.get_or_insert_with(|| self.wanted.clone());
        let mut wanted: Vec<(String, String)> = startup
            .iter()
            .filter(|(k, _)| !session.iter().any(|(n, _)| n.eq_ignore_ascii_case(k)))
            .cloned()
            .collect();
        wanted.extend(session);
        if wanted != self.wanted {
            self.wanted = wanted;
            self.rehash();
        }
    }
}

/// Whether a statement's text may call `set_config`, whose change of a
/// parameter the server reports only for GUC_REPORT ones: a scan for `_`
/// (memchr), each checked for `set` before and `config` after, in any
/// case. No parse; a false positive costs one catalog read.
pub fn mentions_set_config(text: &[u8]) -> bool {
    memchr::memchr_iter(b'_', text).any(|i| {
        i >= 3
            && text[i - 3..i].eq_ignore_ascii_case(b"set")
            && text
                .get(i + 1..i + 7)
                .is_some_and(|w| w.eq_ignore_ascii_case(b"config"))
    })
}

/// What `named_parameters` read in a statement text.
#[derive(Debug, PartialEq, Eq)]
pub struct Named {
    /// The parameters its SETs, RESETs and set_config calls name.
    pub names: Vec<String>,
    /// How many SET/RESET commands it holds.
    pub commands: u32,
    pub calls_set_config: bool,
}

/// What a statement text does to session parameters, read without a
/// server: the parameters its SETs, RESETs and set_config calls name (SET
/// LOCAL and SET TRANSACTION name none: they end with the transaction), and
/// how many SET/RESET commands it holds. `None` when it holds one this
/// reader cannot follow (any RESET, SET SESSION CHARACTERISTICS, a
/// set_config whose name is not a literal): the server is then asked for
/// everything.
pub fn named_parameters(text: &[u8]) -> Option<Named> {
    let text = std::str::from_utf8(text).ok()?;
    let mut names = Vec::new();
    let mut commands = 0u32;
    for part in text.split(';') {
        let mut words = part.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.eq_ignore_ascii_case("set") {
            commands += 1;
            let mut next = words.next().unwrap_or("");
            if next.eq_ignore_ascii_case("session") {
                next = words.next().unwrap_or("");
                if next.eq_ignore_ascii_case("characteristics") {
                    return None;
                }
                if next.eq_ignore_ascii_case("authorization") {
                    names.push("session_authorization".to_string());
                    continue;
                }
            }
            let lower = next.to_ascii_lowercase();
            match lower.as_str() {
                "local" | "transaction" | "constraints" => {}
                "time" => names.push("TimeZone".to_string()),
                "schema" => names.push("search_path".to_string()),
                "names" => names.push("client_encoding".to_string()),
                _ => names.push(guc_name(next)?),
            }
        } else if first.eq_ignore_ascii_case("reset") {
            // A RESET takes the client back to its startup value, not to the
            // server's default a named read would see: the whole session is
            // read, and what it no longer overrides comes from startup.
            return None;
        }
    }
    let calls_set_config = mentions_set_config(text.as_bytes());
    if calls_set_config {
        let lower = text.to_ascii_lowercase();
        for (i, _) in lower.match_indices("set_config") {
            let rest = lower[i + "set_config".len()..].trim_start();
            let rest = rest.strip_prefix('(')?.trim_start();
            let rest = rest.strip_prefix('\'')?;
            let end = rest.find('\'')?;
            // The original case of the name, from the same offsets.
            let start = text.len() - rest.len();
            names.push(canonical(&text[start..start + end]));
        }
    }
    Some(Named {
        names,
        commands,
        calls_set_config,
    })
}

/// A parameter name as SET writes it: an identifier (folded to lower case),
/// dotted for a custom parameter, or quoted. `=` or `TO` may follow it
/// without a space.
fn guc_name(word: &str) -> Option<String> {
    let word = word.split('=').next().unwrap_or("");
    if let Some(quoted) = word.strip_prefix('"') {
        return quoted.strip_suffix('"').map(canonical);
    }
    let ok = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '$');
    ok.then(|| canonical(word))
}

/// A parameter name as the server spells it: Postgres matches names in any
/// case, and the proxy keys its books by name, so `timezone` must be the
/// `TimeZone` the server reports. The mixed-case names are the reported
/// ones; every other built-in and custom name is lower case.
fn canonical(name: &str) -> String {
    REPORTED
        .iter()
        .find(|r| r.eq_ignore_ascii_case(name))
        .map_or_else(|| name.to_ascii_lowercase(), |r| r.to_string())
}

/// The `-c name=value` and `--name=value` items of a startup `options`
/// string, as Postgres reads them: items split at unescaped spaces, a
/// backslash escapes the next character, dashes in a name stand for
/// underscores. Anything else (other switches) is left out.
pub fn parse_options(options: &str) -> Vec<(String, String)> {
    let mut items = Vec::new();
    let mut item = String::new();
    let mut chars = options.chars();
    let mut pending = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    item.push(next);
                    pending = true;
                }
            }
            c if c.is_ascii_whitespace() => {
                if pending {
                    items.push(std::mem::take(&mut item));
                    pending = false;
                }
            }
            c => {
                item.push(c);
                pending = true;
            }
        }
    }
    if pending {
        items.push(item);
    }
    let mut out = Vec::new();
    let mut iter = items.into_iter();
    while let Some(item) = iter.next() {
        let setting = if item == "-c" {
            iter.next()
        } else if let Some(rest) = item.strip_prefix("-c") {
            Some(rest.to_string())
        } else {
            item.strip_prefix("--").map(str::to_string)
        };
        if let Some((name, value)) = setting.as_deref().and_then(|s| s.split_once('=')) {
            if !name.is_empty() {
                out.push((name.replace('-', "_"), value.to_string()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_parameters_not_login_keys() {
        let p = ClientParams::from_startup(&[
            ("user".into(), "a".into()),
            ("database".into(), "b".into()),
            ("application_name".into(), "psql".into()),
        ]);
        assert_eq!(
            p.wanted(),
            &[("application_name".to_string(), "psql".to_string())]
        );
    }

    #[test]
    fn reads_options_as_postgres_does() {
        assert_eq!(
            parse_options("-c search_path=s2,public -c statement_timeout=4321"),
            vec![
                ("search_path".to_string(), "s2,public".to_string()),
                ("statement_timeout".to_string(), "4321".to_string())
            ]
        );
        assert_eq!(
            parse_options(r"--work-mem=64MB -capplication_name=a\ b -x"),
            vec![
                ("work_mem".to_string(), "64MB".to_string()),
                ("application_name".to_string(), "a b".to_string())
            ]
        );
        let p = ClientParams::from_startup(&[
            ("options".into(), "-c search_path=s2".into()),
            ("DateStyle".into(), "ISO".into()),
        ]);
        assert_eq!(p.get("search_path"), Some("s2"));
        assert_eq!(p.get("DateStyle"), Some("ISO"));
    }

    #[test]
    fn names_what_statements_set() {
        let n = |t: &str| named_parameters(t.as_bytes()).map(|n| (n.names, n.commands));
        assert_eq!(
            n("SET search_path TO s2, public; SET statement_timeout = '1234ms'"),
            Some((vec!["search_path".into(), "statement_timeout".into()], 2))
        );
        assert_eq!(n("set local work_mem = '1MB'"), Some((vec![], 1)));
        assert_eq!(
            n("SET TIME ZONE '+05:30'"),
            Some((vec!["TimeZone".into()], 1))
        );
        assert_eq!(
            n("SET SESSION work_mem='2MB'"),
            Some((vec!["work_mem".into()], 1))
        );
        assert_eq!(n("RESET statement_timeout"), None, "read whole");
        assert_eq!(n("RESET ALL"), None);
        assert_eq!(
            n("select set_config('TimeZone', 'UTC', false)"),
            Some((vec!["TimeZone".into()], 0))
        );
        assert_eq!(n("select set_config($1, $2, false)"), None);
        assert_eq!(
            n("set timezone = 'UTC'"),
            Some((vec!["TimeZone".into()], 1))
        );
        let call = named_parameters(b"select set_config('a.b', 'x', false)");
        assert!(call.is_some_and(|n| n.calls_set_config));
        let set = named_parameters(b"SET a.b = 'x'");
        assert!(set.is_some_and(|n| !n.calls_set_config));
        assert_eq!(
            n("SET app.user_id = '7'"),
            Some((vec!["app.user_id".into()], 1))
        );
    }

    #[test]
    fn spots_set_config() {
        assert!(mentions_set_config(b"select Set_Config('a', 'b', false)"));
        assert!(!mentions_set_config(b"_config set_x"));
        assert!(mentions_set_config(
            b"SELECT set_config('search_path', 's2', false)"
        ));
        assert!(mentions_set_config(
            b"select pg_catalog.SET_CONFIG('a', 'b', false)"
        ));
        assert!(!mentions_set_config(
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 1"
        ));
    }

    #[test]
    fn the_session_read_decides() {
        let mut p = ClientParams::from_startup(&[("DateStyle".into(), "ISO".into())]);
        let before = p.fingerprint();
        p.session_read(vec![("search_path".into(), "s2".into())]);
        assert_eq!(p.get("search_path"), Some("s2"));
        assert_eq!(p.get("DateStyle"), Some("ISO"), "startup values stay");
        assert_ne!(p.fingerprint(), before);
        p.session_read(vec![]);
        assert_eq!(p.get("search_path"), None, "a RESET forgets it");
        assert_eq!(p.fingerprint(), before);
    }

    #[test]
    fn follows_reports() {
        let mut p = ClientParams::from_startup(&[]);
        let before = p.fingerprint();
        p.reported("TimeZone", "UTC");
        p.reported("server_version", "15");
        assert_eq!(p.get("TimeZone"), Some("UTC"));
        assert_eq!(p.get("server_version"), None);
        assert_ne!(p.fingerprint(), before, "a change changes the fingerprint");
        let after = p.fingerprint();
        p.reported("TimeZone", "UTC");
        assert_eq!(p.fingerprint(), after, "the same value changes nothing");
        assert_ne!(after, 0);
    }
}
