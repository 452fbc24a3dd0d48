//! Layered configuration: defaults, then a TOML file, then environment variables, then flags.
//!
//! Every Flotilla binary loads its one `Config` through [`load_layered`]. Sources are passed in
//! (never read from `std::env` here), so tests hand over a map.

use anyhow::Context as _;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::path::Path;

/// Reads `--set KEY=VALUE` flags as override pairs for [`load_layered`].
pub fn parse_set(items: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|item| {
            item.split_once('=')
                .map(|(key, value)| (key.trim().to_string(), value.trim().to_string()))
                .ok_or_else(|| anyhow::anyhow!("--set expects KEY=VALUE, got `{item}`"))
        })
        .collect()
}

/// Builds a config from its layers, lowest precedence first:
///
/// 1. the type's serde defaults;
/// 2. `file`, a TOML document, when given;
/// 3. every `env` variable named `<prefix>_<SECTION>__<FIELD>` (double underscores separate
///    path segments; `GATEWAY_HTTP__LISTEN=127.0.0.1:9000` sets `http.listen`);
/// 4. `overrides`, `("section.field", "value")` pairs from command-line flags.
///
/// Values from env and flags are parsed as TOML values (numbers, booleans, arrays) and fall back
/// to plain strings.
pub fn load_layered<T: DeserializeOwned>(
    file: Option<&Path>,
    env: &BTreeMap<String, String>,
    prefix: &str,
    overrides: &[(String, String)],
) -> anyhow::Result<T> {
    let mut table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            text.parse::<toml::Table>()
                .with_context(|| format!("parsing config file {}", path.display()))?
        }
        None => toml::Table::new(),
    };
    let env_prefix = format!("{prefix}_");
    for (name, value) in env {
        let Some(path) = name.strip_prefix(&env_prefix) else {
            continue;
        };
        let segments: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        set_path(&mut table, &segments, value).with_context(|| format!("applying {name}"))?;
    }
    for (path, value) in overrides {
        let segments: Vec<String> = path.split('.').map(str::to_string).collect();
        set_path(&mut table, &segments, value).with_context(|| format!("applying --{path}"))?;
    }
    toml::Value::Table(table)
        .try_into::<T>()
        .context("invalid configuration")
}

fn set_path(table: &mut toml::Table, segments: &[String], raw: &str) -> anyhow::Result<()> {
    let (last, parents) = segments.split_last().context("empty config key")?;
    let mut current = table;
    for segment in parents {
        let entry = current
            .entry(segment.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .with_context(|| format!("`{segment}` is not a section"))?;
    }
    current.insert(last.clone(), parse_value(raw));
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    format!("value = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut table| table.remove("value"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, Default)]
    #[serde(default)]
    struct Sample {
        http: Http,
        name: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(default)]
    struct Http {
        listen: String,
        max_body_bytes: u64,
        peers: Vec<String>,
    }

    impl Default for Http {
        fn default() -> Self {
            Self {
                listen: "127.0.0.1:8080".into(),
                max_body_bytes: 10,
                peers: vec![],
            }
        }
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "name = \"file\"\n[http]\nmax_body_bytes = 20\n").unwrap();
        let env = BTreeMap::from([
            ("GATEWAY_HTTP__MAX_BODY_BYTES".to_string(), "30".to_string()),
            (
                "GATEWAY_HTTP__PEERS".to_string(),
                "[\"a\", \"b\"]".to_string(),
            ),
            ("OTHER_NAME".to_string(), "ignored".to_string()),
        ]);
        let flags = vec![("http.listen".to_string(), "127.0.0.1:0".to_string())];
        let config: Sample = load_layered(Some(&file), &env, "GATEWAY", &flags).unwrap();
        assert_eq!(config.name, "file");
        assert_eq!(config.http.max_body_bytes, 30);
        assert_eq!(config.http.peers, vec!["a", "b"]);
        assert_eq!(config.http.listen, "127.0.0.1:0");

        let defaults: Sample = load_layered(None, &BTreeMap::new(), "GATEWAY", &[]).unwrap();
        assert_eq!(defaults.http.max_body_bytes, 10);
    }

    #[test]
    fn bad_values_are_errors_not_panics() {
        let env = BTreeMap::from([(
            "GATEWAY_HTTP__MAX_BODY_BYTES".to_string(),
            "lots".to_string(),
        )]);
        let error = load_layered::<Sample>(None, &env, "GATEWAY", &[]).unwrap_err();
        assert!(
            format!("{error:#}").contains("invalid configuration"),
            "{error:#}"
        );
    }
}
