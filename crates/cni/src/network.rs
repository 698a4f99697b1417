//! ADD and DEL of a configuration list, and the cache that lets DEL run after a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::attachment::Attachment;
use crate::config::{self, NetworkConfig};
use crate::exec::{self, Invocation, PluginError};
use crate::result::{CniResult, ResultError};

/// Why a pod could not be attached to or detached from its network.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A plugin failed.
    #[error("plugin type={plugin:?} name={network:?}: {source}", plugin = .source.plugin_name())]
    Plugin {
        /// The network.
        network: String,
        /// Why.
        source: PluginError,
    },
    /// A plugin's configuration cannot be used.
    #[error("network {network:?}: {reason}")]
    Config {
        /// The network.
        network: String,
        /// What is wrong.
        reason: String,
    },
    /// A plugin's answer is not a CNI result.
    #[error("network {network:?}: plugin {plugin:?} answered ADD with an invalid result: {source}")]
    Result {
        /// The network.
        network: String,
        /// The plugin.
        plugin: String,
        /// Why.
        source: ResultError,
    },
    /// The result cache could not be written or read.
    #[error("CNI result cache {path}: {reason}")]
    Cache {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl PluginError {
    fn plugin_name(&self) -> &str {
        match self {
            PluginError::NotFound { plugin, .. }
            | PluginError::Timeout { plugin, .. }
            | PluginError::Failed { plugin, .. }
            | PluginError::Crashed { plugin, .. }
            | PluginError::TooLarge { plugin } => plugin,
            PluginError::Spawn { plugin, .. } => plugin.to_str().unwrap_or_default(),
        }
    }
}

/// Shorthand for this module's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs a network's plugins for pods. Defaults: a 60 s deadline per plugin run.
#[derive(Clone, Debug)]
pub struct Cni {
    bin_dirs: Vec<PathBuf>,
    cache_dir: PathBuf,
    timeout: Duration,
}

/// What a successful ADD leaves behind for the DEL that will follow it.
#[derive(Serialize, Deserialize)]
struct Cached {
    config: Value,
    attachment: Attachment,
    result: Value,
}

impl Cni {
    /// Plugins from `bin_dirs` (searched in order; `CNI_PATH`), results cached in `cache_dir`.
    pub fn new(bin_dirs: Vec<PathBuf>, cache_dir: PathBuf) -> Cni {
        Cni {
            bin_dirs,
            cache_dir,
            timeout: Duration::from_secs(60),
        }
    }

    /// Sets the deadline of each plugin run.
    pub fn with_timeout(mut self, timeout: Duration) -> Cni {
        self.timeout = timeout;
        self
    }

    /// Attaches the pod: runs every plugin's ADD in order, each given the previous result.
    /// On a failure the plugins already run are undone (DEL), so nothing is left allocated.
    pub fn add(&self, config: &NetworkConfig, attachment: &Attachment) -> Result<CniResult> {
        let mut previous: Option<Value> = None;
        for (i, plugin) in config.plugins.iter().enumerate() {
            match self.run_add(config, plugin, previous.as_ref(), attachment) {
                Ok(result) => previous = Some(result),
                Err(e) => {
                    self.undo(config, i, previous.as_ref(), attachment);
                    return Err(e);
                }
            }
        }
        let raw = previous.unwrap_or(Value::Null);
        let result = CniResult::from_value(raw).map_err(|source| Error::Result {
            network: config.name.clone(),
            plugin: String::new(),
            source,
        })?;
        self.write_cache(config, attachment, &result)?;
        Ok(result)
    }

    /// Detaches the pod: every plugin's DEL in reverse order, with the cached result of its
    /// ADD as `prevResult`. The configuration cached at ADD is used when there is one, so a
    /// network whose file changed or vanished is still undone as it was done. Detaching a pod
    /// that was never attached succeeds (plugins treat DEL as idempotent).
    pub fn del(&self, config: &NetworkConfig, attachment: &Attachment) -> Result<()> {
        let path = self.cache_path(&config.name, attachment);
        let cached = read_cache(&path)?;
        let (config, previous) = match cached {
            Some(c) => (cached_config(&c.config, config)?, Some(c.result)),
            None => (config.clone(), None),
        };
        for plugin in config.plugins.iter().rev() {
            self.run(&config, plugin, "DEL", previous.as_ref(), attachment)?;
        }
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Cache {
                path,
                reason: e.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// The result of the ADD of `attachment` to network `network`, as cached then: the pod's
    /// IPs for an agent that restarts while the pod's namespace is still attached. `None`
    /// when there is no cached result (never attached, or detached since).
    pub fn cached(&self, network: &str, attachment: &Attachment) -> Result<Option<CniResult>> {
        let path = self.cache_path(network, attachment);
        let Some(cached) = read_cache(&path)? else {
            return Ok(None);
        };
        CniResult::from_value(cached.result)
            .map(Some)
            .map_err(|source| Error::Result {
                network: network.to_string(),
                plugin: String::new(),
                source,
            })
    }

    /// Every attachment with a cached ADD result, with the configuration it was made with:
    /// after a crash, what a start-up clean-up must DEL for pods that are gone.
    pub fn attachments(&self) -> Result<Vec<(NetworkConfig, Attachment)>> {
        self.cached_attachments(|_| true)
    }

    /// The cached attachments of sandbox `container_id` (one per network and interface).
    pub fn attachments_of(&self, container_id: &str) -> Result<Vec<(NetworkConfig, Attachment)>> {
        let marker = format!("-{container_id}-");
        let found = self.cached_attachments(|name| name.contains(&marker))?;
        Ok(found
            .into_iter()
            .filter(|(_, a)| a.container_id == container_id)
            .collect())
    }

    fn cached_attachments(
        &self,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Vec<(NetworkConfig, Attachment)>> {
        let entries = match std::fs::read_dir(&self.cache_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.cache_err(&self.cache_dir, e)),
        };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !name.ends_with(".json") || !wanted(&name) {
                continue;
            }
            if let Some(c) = read_cache(&path)? {
                let config = cached_config(&c.config, &NetworkConfig::placeholder())?;
                found.push((config, c.attachment));
            }
        }
        Ok(found)
    }

    fn run_add(
        &self,
        config: &NetworkConfig,
        plugin: &Map<String, Value>,
        previous: Option<&Value>,
        attachment: &Attachment,
    ) -> Result<Value> {
        let out = self.run(config, plugin, "ADD", previous, attachment)?;
        let name = plugin_name(plugin);
        let invalid = |source| Error::Result {
            network: config.name.clone(),
            plugin: name.to_string(),
            source,
        };
        let value: Value = serde_json::from_slice(&out)
            .map_err(|e| invalid(ResultError::Invalid(e.to_string())))?;
        CniResult::from_value(value.clone()).map_err(invalid)?;
        Ok(value)
    }

    fn undo(
        &self,
        config: &NetworkConfig,
        done: usize,
        previous: Option<&Value>,
        attachment: &Attachment,
    ) {
        for plugin in config.plugins[..done].iter().rev() {
            if let Err(e) = self.run(config, plugin, "DEL", previous, attachment) {
                tracing::warn!(network = %config.name, "undoing a failed ADD: {e}");
            }
        }
    }

    fn run(
        &self,
        config: &NetworkConfig,
        plugin: &Map<String, Value>,
        command: &'static str,
        previous: Option<&Value>,
        attachment: &Attachment,
    ) -> Result<Vec<u8>> {
        let network = config.name.clone();
        let kind = config::plugin_type(plugin).map_err(|reason| Error::Config {
            network: network.clone(),
            reason,
        })?;
        let plugin_err = |source| Error::Plugin {
            network: network.clone(),
            source,
        };
        let path = exec::find(kind, &self.bin_dirs).map_err(plugin_err)?;
        let stdin = plugin_stdin(config, plugin, previous, attachment);
        let call = Invocation {
            plugin: kind,
            command,
            env: self.env(attachment),
            stdin: serde_json::to_vec(&stdin).unwrap_or_default(),
            timeout: self.timeout,
        };
        exec::run(&path, &call).map_err(plugin_err)
    }

    fn env(&self, attachment: &Attachment) -> Vec<(&'static str, String)> {
        let path = std::env::join_paths(&self.bin_dirs)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        vec![
            ("CNI_CONTAINERID", attachment.container_id.clone()),
            ("CNI_NETNS", attachment.netns.display().to_string()),
            ("CNI_IFNAME", attachment.ifname.clone()),
            ("CNI_ARGS", attachment.cni_args()),
            ("CNI_PATH", path),
        ]
    }

    fn cache_path(&self, network: &str, attachment: &Attachment) -> PathBuf {
        let name = format!(
            "{network}-{}-{}",
            attachment.container_id, attachment.ifname
        );
        let safe: String = name
            .chars()
            .map(|c| match c.is_ascii_alphanumeric() || "-_.".contains(c) {
                true => c,
                false => '_',
            })
            .collect();
        self.cache_dir.join(format!("{safe}.json"))
    }

    fn write_cache(
        &self,
        config: &NetworkConfig,
        attachment: &Attachment,
        result: &CniResult,
    ) -> Result<()> {
        let path = self.cache_path(&config.name, attachment);
        let cached = Cached {
            config: config.to_list_json(),
            attachment: attachment.clone(),
            result: result.raw.clone(),
        };
        let tmp = path.with_extension("tmp");
        std::fs::create_dir_all(&self.cache_dir)
            .and_then(|_| std::fs::write(&tmp, serde_json::to_vec(&cached).unwrap_or_default()))
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| self.cache_err(&path, e))
    }

    fn cache_err(&self, path: &Path, e: std::io::Error) -> Error {
        Error::Cache {
            path: path.to_owned(),
            reason: e.to_string(),
        }
    }
}

impl NetworkConfig {
    fn placeholder() -> NetworkConfig {
        NetworkConfig {
            name: String::new(),
            cni_version: String::new(),
            plugins: Vec::new(),
            source: PathBuf::new(),
        }
    }
}

fn read_cache(path: &Path) -> Result<Option<Cached>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Cache {
                path: path.to_owned(),
                reason: e.to_string(),
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::Cache {
            path: path.to_owned(),
            reason: format!("{e}; remove the file once the pod's network is cleaned up by hand"),
        })
}

/// The configuration cached with a result, or `fallback` if it cannot be read as one.
fn cached_config(value: &Value, fallback: &NetworkConfig) -> Result<NetworkConfig> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    NetworkConfig::parse(&bytes, true).or_else(|reason| match fallback.plugins.is_empty() {
        true => Err(Error::Config {
            network: fallback.name.clone(),
            reason: format!("cached configuration unreadable: {reason}"),
        }),
        false => Ok(fallback.clone()),
    })
}

/// What a plugin reads on stdin: its own configuration plus the network's `name` and
/// `cniVersion`, the previous result, and the runtime configuration its capabilities ask for.
fn plugin_stdin(
    config: &NetworkConfig,
    plugin: &Map<String, Value>,
    previous: Option<&Value>,
    attachment: &Attachment,
) -> Value {
    let mut stdin = plugin.clone();
    stdin.insert("name".into(), Value::String(config.name.clone()));
    stdin.insert(
        "cniVersion".into(),
        Value::String(config.cni_version.clone()),
    );
    if let Some(previous) = previous {
        stdin.insert("prevResult".into(), previous.clone());
    }
    let runtime = runtime_config(plugin, attachment);
    if !runtime.is_empty() {
        stdin.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    Value::Object(stdin)
}

/// The runtime configuration a plugin's `capabilities` ask for and the attachment has:
/// `portMappings` (host ports) and `ipRanges` (the node's pod CIDRs, one range set each).
fn runtime_config(plugin: &Map<String, Value>, attachment: &Attachment) -> Map<String, Value> {
    let wants = |capability: &str| {
        plugin
            .get("capabilities")
            .and_then(|c| c.get(capability))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let mut runtime = Map::new();
    if wants("portMappings") && !attachment.port_mappings.is_empty() {
        let ports = serde_json::to_value(&attachment.port_mappings).unwrap_or_default();
        runtime.insert("portMappings".into(), ports);
    }
    if wants("ipRanges") && !attachment.ip_ranges.is_empty() {
        let sets = attachment
            .ip_ranges
            .iter()
            .map(|subnet| serde_json::json!([{ "subnet": subnet }]))
            .collect();
        runtime.insert("ipRanges".into(), Value::Array(sets));
    }
    runtime
}

fn plugin_name(plugin: &Map<String, Value>) -> &str {
    plugin
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attachment::PortMapping;

    #[test]
    fn plugins_get_name_version_previous_result_and_the_ports_they_ask_for() {
        let config = NetworkConfig::parse(
            br#"{"cniVersion":"1.0.0","name":"k8s","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
            true,
        )
        .unwrap();
        let ports = vec![PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: String::new(),
        }];
        let a = Attachment::new("id", Path::new("/n")).ports(ports);
        let bridge = plugin_stdin(&config, &config.plugins[0], None, &a);
        assert_eq!(bridge["name"], "k8s");
        assert_eq!(bridge["cniVersion"], "1.0.0");
        assert!(bridge.get("runtimeConfig").is_none() && bridge.get("prevResult").is_none());
        let prev = serde_json::json!({"cniVersion": "1.0.0", "ips": []});
        let portmap = plugin_stdin(&config, &config.plugins[1], Some(&prev), &a);
        assert_eq!(portmap["prevResult"], prev);
        assert_eq!(
            portmap["runtimeConfig"]["portMappings"][0]["hostPort"],
            8080
        );
    }

    #[test]
    fn ip_ranges_go_to_plugins_that_ask_for_them_one_range_set_per_cidr() {
        let config = NetworkConfig::parse(
            br#"{"cniVersion":"1.0.0","name":"k8s","plugins":[{"type":"bridge","capabilities":{"ipRanges":true}},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
            true,
        )
        .unwrap();
        let cidrs = vec!["10.244.1.0/24".to_string(), "fd00:1::/64".to_string()];
        let a = Attachment::new("id", Path::new("/n")).ip_ranges(cidrs);
        let bridge = plugin_stdin(&config, &config.plugins[0], None, &a);
        assert_eq!(
            bridge["runtimeConfig"]["ipRanges"],
            serde_json::json!([[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:1::/64"}]])
        );
        let portmap = plugin_stdin(&config, &config.plugins[1], None, &a);
        assert!(portmap.get("runtimeConfig").is_none(), "{portmap}");
    }

    #[test]
    fn cache_names_stay_in_the_cache_directory() {
        let cni = Cni::new(vec![], PathBuf::from("/c"));
        let a = Attachment::new("../../etc/x", Path::new("/n"));
        let p = cni.cache_path("net/../..", &a);
        assert_eq!(p.parent(), Some(Path::new("/c")));
    }
}
