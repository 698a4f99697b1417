//! `wasmlet node --config FILE`: the node's settings in a YAML file, as the kubelet's
//! `--config`, with flags given on the command line winning.
//!
//! The file is a mapping whose keys are the long flags of `wasmlet node` without their
//! dashes (`node-ip: 10.0.0.21`, `cluster-dns: [10.96.0.10]`, `drain-on-shutdown: true`); a
//! list gives a repeatable flag each of its items. Keeping the flags' own names means one
//! set of names to document and one parser (clap's) for both, so a setting is read the same
//! way from either place.

use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Parser};

use crate::node::NodeArgs;

/// The largest config file read: a node's settings are a few hundred bytes.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// What can be wrong with a config file.
#[derive(Debug)]
pub enum ConfigFileError {
    /// The file could not be read.
    Read(String, std::io::Error),
    /// The file is larger than [`MAX_FILE_BYTES`].
    TooLarge(String, u64),
    /// The file is not YAML, or not a mapping of settings.
    Parse(String, String),
    /// A key that is not a flag of `wasmlet node`.
    UnknownSetting(String, String),
    /// A value that is not a scalar or a list of scalars.
    BadValue(String, String),
    /// clap refused the settings (a value of the wrong type, say).
    Invalid(String, clap::Error),
}

impl std::fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Read(file, e) => write!(f, "cannot read the node config {file}: {e}"),
            Self::TooLarge(file, size) => write!(
                f,
                "the node config {file} is {size} bytes, more than the {MAX_FILE_BYTES} a config \
                 may have: is it the right file?"
            ),
            Self::Parse(file, e) => write!(
                f,
                "the node config {file} is not a YAML mapping of settings ({e}); write one \
                 setting per line, e.g. `node-ip: 10.0.0.21`"
            ),
            Self::UnknownSetting(file, key) => write!(
                f,
                "unknown setting `{key}` in the node config {file}: the settings are the flags \
                 of `wasmlet node --help` without their dashes (e.g. `max-pods: 200`)"
            ),
            Self::BadValue(file, key) => write!(
                f,
                "setting `{key}` in the node config {file} must be a value or a list of values"
            ),
            Self::Invalid(file, e) => {
                write!(f, "the node config {file} is not valid: {}", e.render())
            }
        }
    }
}

impl std::error::Error for ConfigFileError {}

/// `wasmlet node`'s flags alone, to parse the merged settings.
#[derive(Parser)]
#[command(name = "wasmlet node")]
struct NodeOnly {
    #[command(flatten)]
    args: NodeArgs,
}

/// The settings of `file` merged under those of the command line (`matches`, the `node`
/// subcommand's): a setting given on the command line wins over the file's, a list included.
pub fn merge(file: &Path, matches: &ArgMatches) -> Result<NodeArgs, ConfigFileError> {
    let name = file.display().to_string();
    let settings = read(file, &name)?;
    let mut tokens: Vec<OsString> = vec!["wasmlet node".into()];
    let command = NodeArgs::augment_args(clap::Command::new("wasmlet node"));
    for arg in command.get_arguments() {
        if matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
            tokens.extend(command_line_tokens(arg, matches));
        }
    }
    for (key, value) in settings {
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && key != "config")
            .ok_or_else(|| ConfigFileError::UnknownSetting(name.clone(), key.clone()))?;
        if matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
            continue;
        }
        tokens.extend(file_tokens(arg, &key, &value, &name)?);
    }
    let parsed = NodeOnly::try_parse_from(tokens).map_err(|e| ConfigFileError::Invalid(name, e))?;
    let mut args = parsed.args;
    args.config = Some(file.to_path_buf());
    Ok(args)
}

/// The file's settings, in its order.
fn read(file: &Path, name: &str) -> Result<Vec<(String, serde_yaml::Value)>, ConfigFileError> {
    use std::io::Read;
    let handle = std::fs::File::open(file).map_err(|e| ConfigFileError::Read(name.into(), e))?;
    let mut text = String::new();
    handle
        .take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| ConfigFileError::Read(name.into(), e))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(ConfigFileError::TooLarge(name.into(), text.len() as u64));
    }
    let value: serde_yaml::Value = serde_yaml::from_str(&text)
        .map_err(|e| ConfigFileError::Parse(name.into(), e.to_string()))?;
    let map = match value {
        serde_yaml::Value::Mapping(map) => map,
        serde_yaml::Value::Null => return Ok(Vec::new()),
        _ => return Err(ConfigFileError::Parse(name.into(), "not a mapping".into())),
    };
    map.into_iter()
        .map(|(k, v)| match k {
            serde_yaml::Value::String(k) => Ok((k, v)),
            other => Err(ConfigFileError::Parse(
                name.into(),
                format!("a key is not a string: {other:?}"),
            )),
        })
        .collect()
}

/// A setting given on the command line, back as flags.
fn command_line_tokens(arg: &clap::Arg, matches: &ArgMatches) -> Vec<OsString> {
    let long = arg.get_long().unwrap_or_default();
    if !arg.get_action().takes_values() {
        return vec![format!("--{long}").into()];
    }
    let raw = matches.get_raw(arg.get_id().as_str()).into_iter().flatten();
    raw.map(|v| {
        let mut token = OsString::from(format!("--{long}="));
        token.push(v);
        token
    })
    .collect()
}

/// A setting of the file as flags: one per item of a list; a switch (`drain-on-shutdown`)
/// given only when true.
fn file_tokens(
    arg: &clap::Arg,
    key: &str,
    value: &serde_yaml::Value,
    file: &str,
) -> Result<Vec<OsString>, ConfigFileError> {
    let items: Vec<String> = match value {
        serde_yaml::Value::Sequence(items) => items
            .iter()
            .map(|v| scalar(v).ok_or_else(|| ConfigFileError::BadValue(file.into(), key.into())))
            .collect::<Result<_, _>>()?,
        v => vec![scalar(v).ok_or_else(|| ConfigFileError::BadValue(file.into(), key.into()))?],
    };
    if !arg.get_action().takes_values() {
        return match items.as_slice() {
            [v] if v == "true" => Ok(vec![format!("--{key}").into()]),
            [v] if v == "false" => Ok(Vec::new()),
            _ => Err(ConfigFileError::BadValue(file.into(), key.into())),
        };
    }
    Ok(items
        .into_iter()
        .map(|v| format!("--{key}={v}").into())
        .collect())
}

/// A YAML scalar as the text a flag would take.
fn scalar(value: &serde_yaml::Value) -> Option<String> {
    match value {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Null => Some(String::new()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(cli: &[&str], yaml: &str) -> Result<NodeArgs, ConfigFileError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.yaml");
        std::fs::write(&file, yaml).unwrap();
        let mut argv = vec!["wasmlet node", "--config", file.to_str().unwrap()];
        argv.extend_from_slice(cli);
        let matches = NodeOnly::command().try_get_matches_from(argv).unwrap();
        merge(&file, &matches)
    }

    #[test]
    fn the_file_sets_what_the_command_line_does_not() {
        let yaml = "node-name: wasm-1\nnode-ip: 10.0.0.21\nmax-pods: 200\n\
                    cluster-dns: [10.96.0.10, 10.96.0.11]\ndrain-on-shutdown: true\n\
                    rotate-certificates: false\ninsecure-registry: [a:5000, b:5000]\n";
        let args = parse(&[], yaml).unwrap();
        assert_eq!(args.node_name.as_deref(), Some("wasm-1"));
        assert_eq!(args.node_ip.to_string(), "10.0.0.21");
        assert_eq!(args.max_pods, 200);
        assert_eq!(args.cluster_dns.len(), 2);
        assert!(args.drain_on_shutdown);
        assert!(!args.rotate_certificates);
        assert_eq!(args.insecure_registry, ["a:5000", "b:5000"]);
        assert_eq!(args.port, 10250, "unset settings keep their defaults");
    }

    #[test]
    fn flags_win_over_the_file_lists_included() {
        let yaml = "node-name: from-file\nmax-pods: 200\ninsecure-registry: [a:5000]\n";
        let cli = [
            "--node-name",
            "from-flag",
            "--insecure-registry",
            "c:5000",
            "--drain-on-shutdown",
        ];
        let args = parse(&cli, yaml).unwrap();
        assert_eq!(args.node_name.as_deref(), Some("from-flag"));
        assert_eq!(args.insecure_registry, ["c:5000"]);
        assert_eq!(args.max_pods, 200);
        assert!(args.drain_on_shutdown);
    }

    #[test]
    fn bad_files_name_the_problem() {
        let unknown = parse(&[], "max-podz: 3\n").unwrap_err().to_string();
        assert!(unknown.contains("unknown setting `max-podz`"), "{unknown}");
        let typed = parse(&[], "max-pods: many\n").unwrap_err().to_string();
        assert!(typed.contains("max-pods"), "{typed}");
        let nested = parse(&[], "node-labels: {a: b}\n").unwrap_err().to_string();
        assert!(nested.contains("`node-labels`"), "{nested}");
        let list = parse(&[], "- a\n").unwrap_err().to_string();
        assert!(list.contains("not a YAML mapping"), "{list}");
        let recursive = parse(&[], "config: other.yaml\n").unwrap_err().to_string();
        assert!(
            recursive.contains("unknown setting `config`"),
            "{recursive}"
        );
        assert!(parse(&[], "").is_ok(), "an empty file sets nothing");
    }
}
