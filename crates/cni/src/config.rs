//! Network configurations: the first file of a configuration directory, as libcni and the
//! CRI runtimes pick it.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The largest configuration file read (configurations are a few hundred bytes).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Why no usable network configuration was found.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The directory has no `.conflist`, `.conf` or `.json` file (the kubelet reports the
    /// node's network as not ready in this case).
    #[error(
        "no network config found in {dir}: cni plugin not initialized; install the cluster's network add-on, or pass --cni-conf-dir"
    )]
    NoConfig {
        /// The directory.
        dir: PathBuf,
    },
    /// A file or the directory could not be read.
    #[error("cannot read CNI config {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a CNI configuration.
    #[error("failed to load CNI config file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// One network: a list of plugins run in order for each pod.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkConfig {
    /// The network's name (`name`).
    pub name: String,
    /// The CNI version the configuration is written for (`cniVersion`), given to every plugin.
    pub cni_version: String,
    /// The plugins' configurations, in order; each has a `type`, the plugin's file name.
    pub plugins: Vec<Map<String, Value>>,
    /// The file it was read from (empty when parsed from bytes).
    pub source: PathBuf,
}

impl NetworkConfig {
    /// The first configuration of `dir` in lexical order of file names, among `.conflist`,
    /// `.conf` and `.json` files. A file that does not parse is an error, not skipped, as in
    /// the CRI runtimes: the add-on's file is broken and nothing should guess around it.
    pub fn load_dir(dir: &Path) -> Result<NetworkConfig, ConfigError> {
        let read_err = |source| ConfigError::Read {
            path: dir.to_owned(),
            source,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(read_err)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_config_file(p))
            .collect();
        files.sort();
        let first = files.first().ok_or_else(|| ConfigError::NoConfig {
            dir: dir.to_owned(),
        })?;
        NetworkConfig::load_file(first)
    }

    /// Reads one `.conflist`, `.conf` or `.json` file.
    pub fn load_file(path: &Path) -> Result<NetworkConfig, ConfigError> {
        let bytes = read_bounded(path)?;
        let list = path.extension().is_some_and(|e| e == "conflist");
        let mut config =
            NetworkConfig::parse(&bytes, list).map_err(|reason| ConfigError::Invalid {
                path: path.to_owned(),
                reason,
            })?;
        config.source = path.to_owned();
        Ok(config)
    }

    /// Parses a configuration list (`list`) or a single plugin's configuration.
    pub fn parse(bytes: &[u8], list: bool) -> Result<NetworkConfig, String> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let Value::Object(object) = value else {
            return Err("not a JSON object".into());
        };
        let name = string_field(&object, "name")?;
        let cni_version = match object.get("cniVersion") {
            None => String::new(),
            Some(Value::String(v)) => v.clone(),
            Some(_) => return Err("cniVersion is not a string".into()),
        };
        let plugins = if list {
            plugin_list(&object)?
        } else {
            vec![object]
        };
        for plugin in &plugins {
            plugin_type(plugin)?;
        }
        Ok(NetworkConfig {
            name,
            cni_version,
            plugins,
            source: PathBuf::new(),
        })
    }

    /// The whole configuration as a configuration list, as cached for a later DEL.
    pub fn to_list_json(&self) -> Value {
        serde_json::json!({
            "cniVersion": self.cni_version,
            "name": self.name,
            "plugins": self.plugins,
        })
    }
}

/// A plugin's `type`: its file name in a plugin directory, never a path.
pub(crate) fn plugin_type(plugin: &Map<String, Value>) -> Result<&str, String> {
    let kind = match plugin.get("type") {
        Some(Value::String(t)) if !t.is_empty() => t.as_str(),
        _ => return Err("a plugin has no \"type\" (the plugin's file name)".into()),
    };
    if kind.contains('/') || kind.starts_with('.') {
        return Err(format!(
            "plugin type {kind:?} is not a file name; plugins are found by name in the CNI bin directories"
        ));
    }
    Ok(kind)
}

fn plugin_list(object: &Map<String, Value>) -> Result<Vec<Map<String, Value>>, String> {
    let Some(Value::Array(items)) = object.get("plugins") else {
        return Err("a .conflist needs a \"plugins\" array".into());
    };
    if items.is_empty() {
        return Err("the CNI config list has no networks (\"plugins\" is empty)".into());
    }
    items
        .iter()
        .map(|p| match p {
            Value::Object(o) => Ok(o.clone()),
            _ => Err("an entry of \"plugins\" is not a JSON object".into()),
        })
        .collect()
}

fn string_field(object: &Map<String, Value>, key: &str) -> Result<String, String> {
    match object.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(format!("missing network {key:?}")),
    }
}

fn is_config_file(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .is_some_and(|e| e == "conf" || e == "conflist" || e == "json")
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, ConfigError> {
    use std::io::Read;
    let read_err = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::Invalid {
            path: path.to_owned(),
            reason: format!("larger than {MAX_CONFIG_BYTES} bytes"),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_file_in_lexical_order_wins_and_a_conf_is_a_list_of_one() {
        let dir = tempfile::tempdir().unwrap();
        let conf = r#"{"cniVersion":"0.4.0","name":"one","type":"bridge"}"#;
        let list = r#"{"cniVersion":"1.0.0","name":"many","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#;
        std::fs::write(dir.path().join("20-one.conf"), conf).unwrap();
        std::fs::write(dir.path().join("10-many.conflist"), list).unwrap();
        std::fs::write(dir.path().join("00-ignored.txt"), "x").unwrap();
        let c = NetworkConfig::load_dir(dir.path()).unwrap();
        assert_eq!((c.name.as_str(), c.plugins.len()), ("many", 2));
        assert!(c.source.ends_with("10-many.conflist"));
        std::fs::remove_file(dir.path().join("10-many.conflist")).unwrap();
        let c = NetworkConfig::load_dir(dir.path()).unwrap();
        assert_eq!((c.name.as_str(), c.cni_version.as_str()), ("one", "0.4.0"));
        assert_eq!(c.plugins[0]["type"], "bridge");
    }

    #[test]
    fn an_empty_directory_reads_as_the_kubelets_not_ready_message() {
        let dir = tempfile::tempdir().unwrap();
        let err = NetworkConfig::load_dir(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("cni plugin not initialized"),
            "{err}"
        );
    }

    #[test]
    fn broken_files_are_errors_naming_the_file() {
        let cases = [
            ("{", true, "EOF"),
            ("[]", true, "not a JSON object"),
            (r#"{"name":"n"}"#, true, "\"plugins\" array"),
            (r#"{"name":"n","plugins":[]}"#, true, "no networks"),
            (r#"{"name":"n","plugins":[{"x":1}]}"#, true, "no \"type\""),
            (
                r#"{"name":"n","type":"../../bin/sh"}"#,
                false,
                "not a file name",
            ),
            (r#"{"type":"bridge"}"#, false, "missing network \"name\""),
        ];
        for (text, list, expected) in cases {
            let err = NetworkConfig::parse(text.as_bytes(), list).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("10-x.conflist"), "{").unwrap();
        let err = NetworkConfig::load_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("10-x.conflist"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn properties_any_bytes_parse_or_fail_cleanly(bytes: Vec<u8>, list: bool) {
            let _ = NetworkConfig::parse(&bytes, list);
        }
    }
}
