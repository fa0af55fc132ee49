//! pgcat's (and PgBouncer's) `auth_query`: a user configured without a
//! password logs in with the hash the database holds for it, read through
//! `auth_query_user` with `$1` standing for the user name. The hash checks
//! the client's password (md5, or SCRAM with a SCRAM verifier) and, when
//! it is an md5 hash, logs the pool in to the servers too (md5 pass-through:
//! the hash is all md5 needs; a SCRAM verifier logs servers in with the
//! keys a client proves, see `scram`). It is fetched on the first login,
//! kept for `auth_query_cache_ttl`, and fetched again when a client's
//! password does not match it (the password may have changed in the
//! database) or the TTL has passed (it may have been revoked there).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use super::pool::ServerPool;
use super::server::{Credentials, Server};
use crate::net::auth::Secret;

pub struct AuthQuery {
    query: String,
    user: String,
    password: String,
    /// How long a fetched hash is trusted.
    ttl: Duration,
    /// The last hash fetched, and when.
    fetched: ArcSwapOption<(Arc<Secret>, Instant)>,
}

impl AuthQuery {
    pub fn new(query: &str, user: &str, password: &str, ttl: Duration) -> AuthQuery {
        AuthQuery {
            query: query.to_string(),
            user: user.to_string(),
            password: password.to_string(),
            ttl,
            fetched: ArcSwapOption::empty(),
        }
    }

    /// Whether `other` reads the same way (a reload keeps what was fetched).
    pub fn same_as(&self, other: &AuthQuery) -> bool {
        (&self.query, &self.user, &self.password) == (&other.query, &other.user, &other.password)
    }

    /// The hash last fetched, while the TTL trusts it.
    pub fn fetched(&self) -> Option<Arc<Secret>> {
        let kept = self.fetched.load_full()?;
        (kept.1.elapsed() < self.ttl).then(|| kept.0.clone())
    }

    /// What a predecessor fetched (a reload that left auth_query as it
    /// was), with its age.
    pub fn keep_from(&self, old: &AuthQuery) {
        self.fetched.store(old.fetched.load_full());
    }

    /// The statement for `username`, the name quoted as a literal's
    /// contents (the configured query puts `$1` inside quotes, as pgcat's
    /// and PgBouncer's examples do).
    fn statement(&self, username: &str) -> String {
        self.query.replace("$1", &username.replace('\'', "''"))
    }

    /// Reads `username`'s hash through `server` (the pool's first server)
    /// and keeps it. The error says why, in pgcat's words first.
    pub async fn fetch(&self, server: &ServerPool, username: &str) -> Result<Arc<Secret>, String> {
        let fail = |why: String| {
            format!("Error trying to obtain password from auth_query for user {username:?}: {why}")
        };
        let settings = server.settings();
        let secret = Secret::parse(&self.password);
        let creds = Credentials {
            user: self.user.clone(),
            md5: secret.md5_for(&self.user),
            password: Some(self.password.clone()),
            scram: None,
        };
        let params = [(
            "application_name".to_string(),
            "pgmlcat-auth-query".to_string(),
        )];
        let mut conn = Server::connect(
            server.addr.clone(),
            &creds,
            &params,
            settings.tls.as_ref(),
            settings.connect_timeout,
        )
        .await
        .map_err(|e| fail(e.to_string()))?;
        let row = conn
            .query_row(&self.statement(username))
            .await
            .map_err(|e| fail(e.to_string()))?
            .ok_or_else(|| fail("the query returned no row".into()))?;
        let (Some(Some(name)), Some(Some(hash))) = (row.first(), row.get(1)) else {
            return Err(fail("the row is not (user name, hash)".into()));
        };
        if name != username {
            return Err(fail(format!("the row is for user {name:?}")));
        }
        let secret = match Secret::parse(hash) {
            Secret::Plain { .. } => {
                return Err(fail("the hash is neither md5 nor SCRAM-SHA-256".into()))
            }
            hashed => Arc::new(hashed),
        };
        self.fetched
            .store(Some(Arc::new((secret.clone(), Instant::now()))));
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_name_stays_inside_its_quotes() {
        let q = AuthQuery::new(
            "SELECT * FROM public.user_lookup('$1');",
            "u",
            "p",
            Duration::ZERO,
        );
        assert_eq!(
            q.statement("x'); drop table t; --"),
            "SELECT * FROM public.user_lookup('x''); drop table t; --');"
        );
    }
}
