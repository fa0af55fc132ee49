//! Checks a parsed config for values that parse but cannot work.
//! Every message names the key.

use super::{Config, Role};

pub fn validate(config: &Config) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    let g = &config.general;
    if g.max_message_size < 1024 {
        errors.push("general.max_message_size: must be at least 1024 bytes".to_string());
    }
    if g.peer_id > crate::frontend::cancel::MAX_PEER_ID {
        errors.push(format!(
            "general.peer_id: at most {}",
            crate::frontend::cancel::MAX_PEER_ID
        ));
    }
    for (id, addr) in &config.peers {
        if !id
            .parse::<u16>()
            .is_ok_and(|id| (1..=crate::frontend::cancel::MAX_PEER_ID).contains(&id))
        {
            errors.push(format!("peers.{id}: a peer id is a number from 1 to 16383"));
        }
        if !addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        {
            errors.push(format!("peers.{id}: \"{addr}\" is not host:port"));
        }
    }
    if g.dashboard_port.unwrap_or(0) != 0 && g.admin_password.is_empty() {
        errors.push(
            "general.dashboard_port: the dashboard asks for the admin credentials; set admin_password"
                .into(),
        );
    }
    match (&g.tls_certificate, &g.tls_private_key) {
        (Some(_), None) => {
            errors.push("general.tls_private_key: needed with tls_certificate".into())
        }
        (None, Some(_)) => {
            errors.push("general.tls_certificate: needed with tls_private_key".into())
        }
        (None, None) if g.tls_required => {
            errors.push("general.tls_required: needs tls_certificate and tls_private_key".into())
        }
        _ => {}
    }
    for (name, pool) in &config.pools {
        let at = format!("pools.{name}");
        if pool.users.is_empty() {
            errors.push(format!("{at}.users: a pool needs at least one user"));
        }
        if pool.shards.is_empty() {
            errors.push(format!("{at}.shards: a pool needs at least one shard"));
        }
        for key in pool.shards.keys() {
            if key.parse::<usize>().is_err() {
                errors.push(format!(
                    "{at}.shards.{key}: shard keys must be numbers 0, 1, 2, ..."
                ));
            }
        }
        let shards = pool.shards_in_order();
        let n = shards.len();
        for i in 0..n {
            if !pool.shards.contains_key(&i.to_string()) {
                errors.push(format!(
                    "{at}.shards.{i}: missing; shards must be numbered 0..{}",
                    n.saturating_sub(1)
                ));
            }
        }
        for (key, shard) in &pool.shards {
            let at = format!("{at}.shards.{key}");
            if shard.servers.is_empty() {
                errors.push(format!("{at}.servers: a shard needs at least one server"));
            }
            let primaries = shard
                .servers
                .iter()
                .filter(|s| s.2 == Role::Primary)
                .count();
            if primaries > 1 {
                errors.push(format!(
                    "{at}.servers: at most one server may be the primary, found {primaries}"
                ));
            }
            for (i, (host, port, _)) in shard.servers.iter().enumerate() {
                if host.trim().is_empty() {
                    errors.push(format!("{at}.servers[{i}]: host is empty"));
                }
                if *port == 0 {
                    errors.push(format!("{at}.servers[{i}]: port 0 is not valid"));
                }
            }
            if shard.database.is_empty() {
                errors.push(format!("{at}.database: must not be empty"));
            }
        }
        let mut seen = std::collections::HashSet::new();
        let auth_query = config.auth_query(pool).is_some();
        for (key, user) in &pool.users {
            let at = format!("{at}.users.{key}");
            let trusted = config.auth_type(user) == super::AuthType::Trust;
            if user.password.is_none() && !auth_query && !trusted {
                // pgcat's words, which its users (and specs) look for.
                errors.push(format!(
                    "{at}.password: no password and no auth_query. You have to specify a user \
                     password for every pool if auth_query is not specified"
                ));
            }
            if user.username.is_empty() {
                errors.push(format!("{at}.username: must not be empty"));
            }
            if !seen.insert(user.username.as_str()) {
                errors.push(format!(
                    "{at}.username: user {:?} is listed twice in this pool",
                    user.username
                ));
            }
            if user.pool_size == 0 {
                errors.push(format!("{at}.pool_size: must be at least 1"));
            }
            if let Some(min) = user.min_pool_size {
                if min > user.pool_size {
                    errors.push(format!(
                        "{at}.min_pool_size: {min} is larger than pool_size {}",
                        user.pool_size
                    ));
                }
            }
        }
        // The sharding settings as the router will read them (default_shard,
        // regexes, automatic key), so --check reports what start-up would.
        if let Err(e) = crate::router::shard::Sharding::from_pool(pool, pool.shards.len().max(1)) {
            errors.push(format!("{at}.{e}"));
        }
        if !["pg_bigint_hash", "sha1"].contains(&pool.sharding_function.as_str()) {
            errors.push(format!(
                "{at}.sharding_function: {:?} is not one of pg_bigint_hash, sha1",
                pool.sharding_function
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}
