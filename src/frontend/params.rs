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
    wanted: Vec<(String, String)>,
    /// A hash of `wanted`, never 0: a server that was brought in line with
    /// the same fingerprint (and has reported no change since) needs no
    /// comparison at checkout.
    fingerprint: u64,
}

impl ClientParams {
    pub fn from_startup(params: &[(String, String)]) -> ClientParams {
        let wanted = params
            .iter()
            .filter(|(k, _)| !NOT_PARAMETERS.contains(&k.as_str()) && !k.starts_with("_pq_."))
            .cloned()
            .collect();
        let mut p = ClientParams {
            wanted,
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

    /// The server reported a new value while this client was on it.
    pub fn reported(&mut self, name: &str, value: &str) {
        if let Some(slot) = self.wanted.iter_mut().find(|(k, _)| k == name) {
            if slot.1 != value {
                slot.1 = value.to_string();
                self.rehash();
            }
        } else if REPORTED.contains(&name) {
            self.wanted.push((name.to_string(), value.to_string()));
            self.rehash();
        }
    }
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
