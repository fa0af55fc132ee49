//! Reading pgcat.toml: parse, warn about keys we do not know, validate.

use std::path::Path;

use super::validate::validate;
use super::Config;

/// A config that parsed and validated, with the warnings it produced.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// Parses and validates config text. Errors name the key and what is wrong.
pub fn parse(text: &str) -> Result<Loaded, Vec<String>> {
    let mut unknown = Vec::new();
    let de = toml::Deserializer::new(text);
    let config: Config = serde_ignored::deserialize(de, |path| unknown.push(path.to_string()))
        .map_err(|e| vec![e.to_string().trim_end().to_string()])?;
    validate(&config)?;
    let warnings = unknown
        .into_iter()
        .map(|key| format!("unknown config key `{key}` ignored"))
        .collect();
    Ok(Loaded { config, warnings })
}

pub fn load_file(path: &Path) -> Result<Loaded, Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
    parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[general]
host = "127.0.0.1"
port = 6433
admin_username = "admin"
admin_password = "pw"

[pools.app.users.0]
username = "app"
password = "app_pw"
pool_size = 5

[pools.app.shards.0]
servers = [["127.0.0.1", 5432, "primary"]]
database = "app"
"#;

    #[test]
    fn loads_minimal() {
        let loaded = parse(MINIMAL).expect("valid");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(loaded.config.general.port, 6433);
        assert_eq!(loaded.config.pools["app"].users["0"].pool_size, 5);
    }

    #[test]
    fn unknown_keys_warn() {
        let text = MINIMAL.replace("port = 6433", "port = 6433\nfrobnicate = 1");
        let loaded = parse(&text).expect("still valid");
        assert_eq!(loaded.warnings.len(), 1);
        assert!(loaded.warnings[0].contains("general.frobnicate"));
    }

    #[test]
    fn bad_value_names_the_key() {
        let text = MINIMAL.replace("pool_size = 5", "pool_size = \"five\"");
        let err = parse(&text).unwrap_err().join("\n");
        assert!(err.contains("pool_size"), "{err}");
        let text = MINIMAL.replace("\"primary\"", "\"leader\"");
        let err = parse(&text).unwrap_err().join("\n");
        assert!(err.contains("leader") && err.contains("servers"), "{err}");
    }

    #[test]
    fn password_from_env() {
        std::env::set_var("PGMLCAT_CFG_TEST_PW", "from-env");
        let text = MINIMAL.replace("\"app_pw\"", "\"${PGMLCAT_CFG_TEST_PW}\"");
        let loaded = parse(&text).expect("valid");
        let pw = loaded.config.pools["app"].users["0"].password.clone();
        assert_eq!(pw.as_deref(), Some("from-env"));
        let text = MINIMAL.replace("\"app_pw\"", "\"${PGMLCAT_CFG_TEST_MISSING}\"");
        let err = parse(&text).unwrap_err().join("\n");
        assert!(err.contains("PGMLCAT_CFG_TEST_MISSING"), "{err}");
    }
}
