//! Environment overrides: `STREAMGATE_<SECTION>_<KEY>=value` replaces that key of the
//! file before anything is parsed. The names and value types come from the defaults,
//! so a new setting is overridable without a line here. An unknown name is a warning
//! that names it and the closest valid one, not an error: Kubernetes gives every pod of
//! a Service named `streamgate` variables such as `STREAMGATE_PORT` and
//! `STREAMGATE_SERVICE_HOST`, and the node must start there. A known name with a value
//! of the wrong type is an error.

use super::{Config, ConfigError, ENV_PREFIX};

/// Every leaf key of the default config as (env suffix, section, key).
fn env_keys() -> Vec<(String, String, String)> {
    let defaults = toml::Value::try_from(Config::default()).expect("defaults serialize");
    let mut keys = Vec::new();
    if let toml::Value::Table(t) = defaults {
        for (section, v) in t {
            if let toml::Value::Table(inner) = v {
                for key in inner.keys() {
                    keys.push((
                        format!("{section}_{key}").to_uppercase(),
                        section.clone(),
                        key.clone(),
                    ));
                }
            }
        }
    }
    keys
}

/// The valid variable closest to `suffix` (by edit distance), when one is close enough
/// to be a likely typo.
fn closest<'a>(suffix: &str, keys: &'a [(String, String, String)]) -> Option<&'a str> {
    keys.iter()
        .map(|(s, _, _)| (strsim::levenshtein(suffix, s), s.as_str()))
        .filter(|(d, s)| *d <= (s.len() / 3).max(2))
        .min()
        .map(|(_, s)| s)
}

/// Applies the overrides to `table`; returns a warning for each `STREAMGATE_*`
/// variable that names no setting (ignored).
pub(super) fn apply_env(
    table: &mut toml::Table,
    env: &[(String, String)],
) -> Result<Vec<String>, ConfigError> {
    let mut warnings = Vec::new();
    let keys = env_keys();
    let defaults = toml::Value::try_from(Config::default()).expect("defaults serialize");
    for (var, raw) in env {
        let Some(suffix) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if suffix == "CONFIG" {
            continue; // the config file path, read by the CLI
        }
        let Some((_, section, key)) = keys.iter().find(|(s, _, _)| s == suffix) else {
            let hint = match closest(suffix, &keys) {
                Some(s) => format!("did you mean {ENV_PREFIX}{s}?"),
                None => "streamgate.example.toml lists every setting; a key `k` of section `[s]` is STREAMGATE_S_K".to_string(),
            };
            warnings.push(format!(
                "environment variable {var} names no setting and is ignored ({hint})"
            ));
            continue;
        };
        let default = &defaults[section.as_str()][key.as_str()];
        let value = if default.is_str() {
            toml::Value::String(raw.clone())
        } else {
            let parsed = format!("v = {raw}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"));
            match parsed {
                Some(v) if v.type_str() == default.type_str() => v,
                _ => {
                    return Err(ConfigError::Env {
                        var: var.clone(),
                        message: format!(
                            "expected a {} like {default}, got {raw:?}",
                            default.type_str()
                        ),
                    })
                }
            }
        };
        let section_table = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match section_table {
            toml::Value::Table(t) => {
                t.insert(key.clone(), value);
            }
            _ => {
                return Err(ConfigError::Env {
                    var: var.clone(),
                    message: format!("[{section}] in the config file is not a table"),
                })
            }
        }
    }
    Ok(warnings)
}
