//! `${VAR}` and `${VAR:-default}` in string values, so secrets can come from
//! the environment instead of the file.

use serde::{Deserialize, Deserializer};

/// Expands `${NAME}` / `${NAME:-default}`; `$$` stays a literal `$`.
pub fn expand(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(inner) = tail.strip_prefix("${") {
            let end = inner
                .find('}')
                .ok_or_else(|| format!("unterminated ${{...}} in {text:?}"))?;
            let spec = &inner[..end];
            let (name, default) = match spec.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (spec, None),
            };
            match (std::env::var(name), default) {
                (Ok(v), _) => out.push_str(&v),
                (Err(_), Some(d)) => out.push_str(d),
                (Err(_), None) => return Err(format!("environment variable {name} is not set")),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

pub fn env_string<'de, D: Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    let raw = String::deserialize(de)?;
    expand(&raw).map_err(serde::de::Error::custom)
}

pub fn env_string_opt<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    let raw = Option::<String>::deserialize(de)?;
    raw.map(|r| expand(&r).map_err(serde::de::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn expands_variables() {
        std::env::set_var("PGMLCAT_TEST_PW", "s3cret");
        assert_eq!(expand("${PGMLCAT_TEST_PW}").unwrap(), "s3cret");
        assert_eq!(expand("a${PGMLCAT_TEST_PW}b").unwrap(), "as3cretb");
        assert_eq!(expand("${PGMLCAT_NOPE:-dflt}").unwrap(), "dflt");
        assert_eq!(expand("cost $5 and $$").unwrap(), "cost $5 and $");
        assert!(expand("${PGMLCAT_NOPE}")
            .unwrap_err()
            .contains("PGMLCAT_NOPE"));
        assert!(expand("${OPEN").is_err());
    }
}
