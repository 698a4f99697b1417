//! Loading a Pod manifest: one or more YAML (or JSON) documents holding exactly one Pod and
//! any number of the ConfigMaps and Secrets it uses, then checking what wasmlet relies on.

use std::collections::BTreeSet;
use std::fmt;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use crate::keys;
use crate::objects::ConfigObjects;

/// Why a manifest could not be loaded. Document numbers count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The text of a document is not valid YAML or JSON.
    #[error("document {document}: {message}")]
    Syntax {
        /// Which document (from 1).
        document: usize,
        /// What the parser said.
        message: String,
    },
    /// A document has no `kind`.
    #[error("document {document}: missing field `kind`")]
    MissingKind {
        /// Which document (from 1).
        document: usize,
    },
    /// A document is of a kind (or API version) that a manifest may not hold.
    #[error(
        "document {document}: unsupported kind {kind:?} (apiVersion {api_version:?}): a manifest holds one v1 Pod plus v1 ConfigMaps and Secrets"
    )]
    UnsupportedKind {
        /// Which document (from 1).
        document: usize,
        /// Its `kind`.
        kind: String,
        /// Its `apiVersion`.
        api_version: String,
    },
    /// A field of a document has the wrong shape.
    #[error("document {document} ({kind}): {path}: {message}")]
    Field {
        /// Which document (from 1).
        document: usize,
        /// Its `kind`.
        kind: String,
        /// Where in the document, e.g. `spec.containers[0].image`.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The Pod is well-formed but not valid.
    #[error("document {document} (Pod): {}", join_problems(problems))]
    Invalid {
        /// Which document (from 1).
        document: usize,
        /// Every problem found.
        problems: Vec<FieldProblem>,
    },
    /// A ConfigMap or Secret beside the Pod is one the API server would refuse.
    #[error("document {document} ({kind} {name:?}): {}", join_problems(problems))]
    InvalidObject {
        /// Which document (from 1).
        document: usize,
        /// `ConfigMap` or `Secret`.
        kind: &'static str,
        /// Its `metadata.name`.
        name: String,
        /// Every problem found.
        problems: Vec<FieldProblem>,
    },
    /// The manifest is larger than [`MAX_MANIFEST_BYTES`].
    #[error(
        "the manifest is {size} bytes, more than the {limit} a manifest may have \
         (MAX_MANIFEST_BYTES); split it or move data out of its ConfigMaps and Secrets"
    )]
    TooLarge {
        /// The manifest's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The manifest nests more than [`MAX_MANIFEST_DEPTH`] levels.
    #[error(
        "line {line}: the manifest nests deeper than {limit} levels (MAX_MANIFEST_DEPTH); \
         a Pod needs about a dozen, so flatten the nested lists and maps"
    )]
    TooDeep {
        /// The line (from 1) where the limit was passed.
        line: usize,
        /// The limit.
        limit: usize,
    },
    /// No document is a Pod.
    #[error("no Pod in the manifest")]
    NoPod,
    /// More than one document is a Pod.
    #[error("documents {first} and {second} are both Pods: a manifest holds exactly one")]
    SeveralPods {
        /// The first Pod document.
        first: usize,
        /// The second Pod document.
        second: usize,
    },
}

/// Result type of this module.
pub type Result<T, E = ManifestError> = std::result::Result<T, E>;

/// One problem in a Pod, at a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// Where, e.g. `spec.containers[1].name`.
    pub path: String,
    /// What is wrong, e.g. `missing field`.
    pub message: String,
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

fn join_problems(problems: &[FieldProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A loaded manifest: the Pod and the objects given beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The Pod.
    pub pod: Pod,
    /// ConfigMaps given beside the Pod, in document order.
    pub config_maps: Vec<ConfigMap>,
    /// Secrets given beside the Pod, in document order.
    pub secrets: Vec<Secret>,
}

impl Manifest {
    /// The ConfigMaps and Secrets of the manifest, by name, ready for planning.
    pub fn config_objects(&self) -> ConfigObjects {
        ConfigObjects::from_objects(&self.config_maps, &self.secrets)
    }
}

/// The largest manifest accepted: 16 MiB, room for a Pod and ConfigMaps and Secrets at the
/// API server's 1.5 MiB object limit each, while keeping the parsed form in memory bounded.
/// Fixed.
pub const MAX_MANIFEST_BYTES: usize = 16 * 1024 * 1024;

/// The deepest nesting of lists and maps accepted: 100 levels, as many API decoders allow; a
/// Pod needs about a dozen. The YAML parser's cost grows with the square of the depth, so the
/// depth is checked by a linear scan of the text before parsing. Fixed.
pub const MAX_MANIFEST_DEPTH: usize = 100;

/// Parses a manifest (multi-document YAML, or JSON) and validates its Pod.
pub fn load_manifest(text: &str) -> Result<Manifest> {
    check_bounds(text)?;
    let mut pod: Option<(usize, Pod)> = None;
    let mut config_maps = Vec::new();
    let mut secrets = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let number = index + 1;
        let value =
            serde_yaml::Value::deserialize(document).map_err(|e| ManifestError::Syntax {
                document: number,
                message: e.to_string(),
            })?;
        if value.is_null() {
            continue;
        }
        let value = with_octal_modes(value);
        match document_kind(number, &value)? {
            DocumentKind::Pod => {
                if let Some((first, _)) = pod {
                    return Err(ManifestError::SeveralPods {
                        first,
                        second: number,
                    });
                }
                pod = Some((number, typed(number, "Pod", value)?));
            }
            DocumentKind::ConfigMap => {
                let config_map: ConfigMap = typed(number, "ConfigMap", value)?;
                let keys = config_map_keys(&config_map);
                check_keys(number, "ConfigMap", &config_map.metadata, keys)?;
                config_maps.push(config_map);
            }
            DocumentKind::Secret => {
                let secret: Secret = typed(number, "Secret", value)?;
                check_keys(number, "Secret", &secret.metadata, secret_keys(&secret))?;
                secrets.push(secret);
            }
        }
    }
    let (document, pod) = pod.ok_or(ManifestError::NoPod)?;
    validate_pod(&pod).map_err(|problems| ManifestError::Invalid { document, problems })?;
    Ok(Manifest {
        pod,
        config_maps,
        secrets,
    })
}

/// The keys of a ConfigMap with the field each is in; a key in both `data` and `binaryData`
/// comes twice.
fn config_map_keys(config_map: &ConfigMap) -> Vec<(&'static str, &str)> {
    let data = config_map.data.iter().flatten().map(|(k, _)| ("data", k));
    let binary = config_map.binary_data.iter().flatten();
    data.chain(binary.map(|(k, _)| ("binaryData", k)))
        .map(|(field, key)| (field, key.as_str()))
        .collect()
}

/// The keys of a Secret with the field each is in (`stringData` may repeat a `data` key: it
/// overrides it).
fn secret_keys(secret: &Secret) -> Vec<(&'static str, &str)> {
    let data = secret.data.iter().flatten().map(|(k, _)| ("data", k));
    let string = secret.string_data.iter().flatten();
    data.chain(string.map(|(k, _)| ("stringData", k)))
        .map(|(field, key)| (field, key.as_str()))
        .collect()
}

/// Refuses keys the API server would refuse ([`keys::key_problem`]), and a ConfigMap key in
/// both `data` and `binaryData`, naming each key.
fn check_keys(
    document: usize,
    kind: &'static str,
    metadata: &ObjectMeta,
    keys: Vec<(&'static str, &str)>,
) -> Result<()> {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (field, key) in keys {
        let path = format!("{field}[{key:?}]");
        if let Some(why) = keys::key_problem(key) {
            let message = format!("invalid key: {why}; rename the key");
            problems.push(FieldProblem { path, message });
        } else if !seen.insert(key) && field == "binaryData" {
            let message = "the key is in both data and binaryData; keep one".to_string();
            problems.push(FieldProblem { path, message });
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(ManifestError::InvalidObject {
        document,
        kind,
        name: metadata.name.clone().unwrap_or_default(),
        problems,
    })
}

enum DocumentKind {
    Pod,
    ConfigMap,
    Secret,
}

/// Refuses a manifest over [`MAX_MANIFEST_BYTES`] or nested deeper than
/// [`MAX_MANIFEST_DEPTH`], in one linear pass and before the parser sees it.
fn check_bounds(text: &str) -> Result<()> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge {
            size: text.len(),
            limit: MAX_MANIFEST_BYTES,
        });
    }
    let mut depth = DepthScan::default();
    for (index, line) in text.lines().enumerate() {
        if depth.line(line) > MAX_MANIFEST_DEPTH {
            return Err(ManifestError::TooDeep {
                line: index + 1,
                limit: MAX_MANIFEST_DEPTH,
            });
        }
    }
    Ok(())
}

/// An over-estimate of YAML nesting, line by line: block levels from indentation (and each
/// `- ` that opens a sequence entry on the same line), plus open flow `[` and `{` outside
/// quotes and comments.
#[derive(Debug, Default)]
struct DepthScan {
    /// The columns of the open block levels, increasing.
    indents: Vec<usize>,
    /// Open flow collections.
    flow: usize,
    /// Inside a quoted scalar, with its quote.
    quote: Option<u8>,
}

impl DepthScan {
    /// Takes one line; returns the deepest nesting seen on it.
    fn line(&mut self, line: &str) -> usize {
        let bytes = line.as_bytes();
        let indent = bytes.iter().take_while(|b| **b == b' ').count();
        let blank = matches!(bytes.get(indent), None | Some(b'#'));
        if self.flow == 0 && self.quote.is_none() && !blank {
            self.open_block(indent);
            self.sequence_entries(&bytes[indent..], indent);
        }
        self.indents.len() + self.flow_line(&bytes[indent..])
    }

    fn open_block(&mut self, column: usize) {
        while self.indents.last().is_some_and(|top| *top > column) {
            self.indents.pop();
        }
        if self.indents.last().is_none_or(|top| *top < column) {
            self.indents.push(column);
        }
    }

    /// `- - - x` opens one level per `- `.
    fn sequence_entries(&mut self, mut rest: &[u8], mut column: usize) {
        while let [b'-', b' ', tail @ ..] = rest {
            let spaces = tail.iter().take_while(|b| **b == b' ').count();
            column += 2 + spaces;
            rest = &tail[spaces..];
            self.open_block(column);
        }
    }

    /// Counts flow brackets on the line; returns the deepest flow nesting reached.
    fn flow_line(&mut self, bytes: &[u8]) -> usize {
        let mut deepest = self.flow;
        let mut previous = b' ';
        for &byte in bytes {
            match (self.quote, byte) {
                (Some(quote), b) if b == quote => self.quote = None,
                (Some(_), _) => {}
                (None, b'#') if previous == b' ' || previous == b'\t' => break,
                (None, b'"' | b'\'') if opens_scalar(previous) => self.quote = Some(byte),
                (None, b'[' | b'{') => {
                    self.flow += 1;
                    deepest = deepest.max(self.flow);
                }
                (None, b']' | b'}') => self.flow = self.flow.saturating_sub(1),
                _ => {}
            }
            previous = byte;
        }
        deepest
    }
}

/// Whether a quote after `previous` starts a quoted scalar (rather than sitting inside a
/// plain one, as in `don't`).
fn opens_scalar(previous: u8) -> bool {
    matches!(previous, b' ' | b'\t' | b'[' | b'{' | b',' | b':' | b'-')
}

fn document_kind(document: usize, value: &serde_yaml::Value) -> Result<DocumentKind> {
    let text_of = |field: &str| value.get(field).and_then(|v| v.as_str()).unwrap_or("");
    let kind = text_of("kind");
    if kind.is_empty() {
        return Err(ManifestError::MissingKind { document });
    }
    let api_version = text_of("apiVersion");
    match (api_version, kind) {
        ("v1", "Pod") => Ok(DocumentKind::Pod),
        ("v1", "ConfigMap") => Ok(DocumentKind::ConfigMap),
        ("v1", "Secret") => Ok(DocumentKind::Secret),
        _ => Err(ManifestError::UnsupportedKind {
            document,
            kind: kind.to_string(),
            api_version: api_version.to_string(),
        }),
    }
}

/// Kubernetes reads manifests as YAML 1.1, where `defaultMode: 0644` is octal; YAML 1.2 reads
/// it as the string "0644". File mode fields holding such a string get the octal number.
fn with_octal_modes(value: serde_yaml::Value) -> serde_yaml::Value {
    use serde_yaml::Value;
    match value {
        Value::Mapping(mapping) => Value::Mapping(
            mapping
                .into_iter()
                .map(|(key, value)| {
                    let is_mode = matches!(key.as_str(), Some("mode" | "defaultMode"));
                    let value = match (is_mode, value) {
                        (true, Value::String(text)) => {
                            octal_number(&text).unwrap_or(Value::String(text))
                        }
                        (_, other) => with_octal_modes(other),
                    };
                    (key, value)
                })
                .collect(),
        ),
        Value::Sequence(items) => {
            Value::Sequence(items.into_iter().map(with_octal_modes).collect())
        }
        other => other,
    }
}

fn octal_number(text: &str) -> Option<serde_yaml::Value> {
    let digits = text.strip_prefix('0').filter(|d| !d.is_empty())?;
    let number = u32::from_str_radix(digits, 8).ok()?;
    Some(serde_yaml::Value::Number(number.into()))
}

/// Deserializes one document into its type; a field the type does not know is an error
/// (as `kubectl`'s strict validation has it), so a typo such as `contaners` is not ignored.
fn typed<T: serde::de::DeserializeOwned>(
    document: usize,
    kind: &str,
    value: serde_yaml::Value,
) -> Result<T> {
    let mut unknown = Vec::new();
    let typed = deserialize_with_path(document, kind, value, &mut unknown)?;
    match unknown.into_iter().next() {
        Some(path) => Err(ManifestError::Field {
            document,
            kind: kind.to_string(),
            path,
            message: "unknown field".to_string(),
        }),
        None => Ok(typed),
    }
}

fn deserialize_with_path<T: serde::de::DeserializeOwned>(
    document: usize,
    kind: &str,
    value: serde_yaml::Value,
    unknown: &mut Vec<String>,
) -> Result<T> {
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(ignored_path(&path));
    let ignoring = serde_ignored::Deserializer::new(value, &mut record);
    serde_path_to_error::deserialize(ignoring).map_err(|error| {
        let path = error.path().to_string();
        ManifestError::Field {
            document,
            kind: kind.to_string(),
            path: if path == "." {
                "(root)".to_string()
            } else {
                path
            },
            message: error.into_inner().to_string(),
        }
    })
}

/// Checks what wasmlet relies on in a Pod: a name, at least one container, unique container
/// names, an image for each container, a known `restartPolicy`, unique volume names, and that
/// every volume mount names a volume of the pod. Returns every problem found.
pub fn validate_pod(pod: &Pod) -> std::result::Result<(), Vec<FieldProblem>> {
    let mut problems = Vec::new();
    let mut problem = |path: String, message: String| problems.push(FieldProblem { path, message });
    if pod.metadata.name.as_deref().unwrap_or("").is_empty() {
        problem("metadata.name".into(), "missing field".into());
    }
    let Some(spec) = &pod.spec else {
        problem("spec".into(), "missing field".into());
        return Err(problems);
    };
    if spec.containers.is_empty() {
        problem(
            "spec.containers".into(),
            "must have at least one container".into(),
        );
    }
    check_restart_policy(spec, &mut problem);
    let volumes = check_volume_names(spec, &mut problem);
    let mut names = BTreeSet::new();
    let init = spec.init_containers.iter().flatten();
    let groups = [
        ("initContainers", init.collect::<Vec<_>>()),
        ("containers", spec.containers.iter().collect()),
    ];
    for (field, containers) in groups {
        for (index, container) in containers.into_iter().enumerate() {
            let path = format!("spec.{field}[{index}]");
            check_container(&path, container, &volumes, &mut names, &mut problem);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn check_restart_policy(spec: &PodSpec, problem: &mut impl FnMut(String, String)) {
    if let Some(policy) = spec.restart_policy.as_deref()
        && !matches!(policy, "Always" | "OnFailure" | "Never")
    {
        problem(
            "spec.restartPolicy".into(),
            format!(
                "unsupported value {policy:?}: supported values: \"Always\", \"OnFailure\", \"Never\""
            ),
        );
    }
}

fn check_volume_names<'a>(
    spec: &'a PodSpec,
    problem: &mut impl FnMut(String, String),
) -> BTreeSet<&'a str> {
    let mut names = BTreeSet::new();
    for (index, volume) in spec.volumes.iter().flatten().enumerate() {
        if volume.name.is_empty() {
            problem(
                format!("spec.volumes[{index}].name"),
                "missing field".into(),
            );
        } else if !names.insert(volume.name.as_str()) {
            problem(
                format!("spec.volumes[{index}].name"),
                format!("duplicate volume name {:?}", volume.name),
            );
        }
    }
    names
}

fn check_container<'a>(
    path: &str,
    container: &'a Container,
    volumes: &BTreeSet<&str>,
    names: &mut BTreeSet<&'a str>,
    problem: &mut impl FnMut(String, String),
) {
    if container.name.is_empty() {
        problem(format!("{path}.name"), "missing field".into());
    } else if !names.insert(container.name.as_str()) {
        problem(
            format!("{path}.name"),
            format!("duplicate container name {:?}", container.name),
        );
    }
    if container.image.as_deref().unwrap_or("").trim().is_empty() {
        problem(format!("{path}.image"), "missing field".into());
    }
    for (index, mount) in container.volume_mounts.iter().flatten().enumerate() {
        if !volumes.contains(mount.name.as_str()) {
            problem(
                format!("{path}.volumeMounts[{index}].name"),
                format!("volume {:?} not found", mount.name),
            );
        }
        if mount.mount_path.is_empty() {
            problem(
                format!("{path}.volumeMounts[{index}].mountPath"),
                "missing field".into(),
            );
        }
    }
}

/// A path as `spec.containers[0].imagePullPolcy`.
fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        Path::Map { parent, key } => {
            let parent = ignored_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: hello}\nspec:\n  containers:\n  - name: main\n    image: registry.example/hello:v1\n";

    fn error_of(text: &str) -> String {
        match load_manifest(text) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn loads_a_single_pod() {
        let manifest = load_manifest(POD).unwrap();
        assert_eq!(manifest.pod.metadata.name.as_deref(), Some("hello"));
        assert!(manifest.config_maps.is_empty());
        assert!(manifest.secrets.is_empty());
    }

    #[test]
    fn loads_json() {
        let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"j"},"spec":{"containers":[{"name":"c","image":"i"}]}}"#;
        assert_eq!(
            load_manifest(json).unwrap().pod.metadata.name.as_deref(),
            Some("j")
        );
    }

    #[test]
    fn loads_config_maps_and_secrets_beside_the_pod() {
        let text = format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm}}\ndata: {{k: v}}\n---\n{POD}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\ndata: {{k: aGVsbG8=}}\nstringData: {{t: plain}}\n---\n"
        );
        let manifest = load_manifest(&text).unwrap();
        assert_eq!(manifest.config_maps.len(), 1);
        assert_eq!(manifest.secrets.len(), 1);
        let objects = manifest.config_objects();
        assert_eq!(objects.config_maps["cm"].data["k"], "v");
        assert_eq!(objects.secrets["s"].data["k"], b"hello");
        assert_eq!(objects.secrets["s"].data["t"], b"plain");
    }

    #[test]
    fn reports_errors_with_document_and_path() {
        let pod_header = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n";
        let cases: Vec<(String, &str)> = vec![
            (format!("{pod_header}spec:\n  containers:\n  - name: a\n"), "document 1 (Pod): spec.containers[0].image: missing field"),
            (format!("{pod_header}spec:\n  containers: []\n"), "document 1 (Pod): spec.containers: must have at least one container"),
            (format!("{pod_header}spec:\n  containers:\n  - image: i\n"), "document 1 (Pod): spec.containers[0].name: missing field"),
            (format!("{pod_header}spec:\n  containers:\n  - name: a\n    image: i\n    ports: 7\n"), "document 1 (Pod): spec.containers[0].ports: invalid type"),
            (format!("{pod_header}spec:\n  containers:\n  - {{name: a, image: i}}\n  - {{name: a, image: j}}\n"), "spec.containers[1].name: duplicate container name \"a\""),
            (format!("{pod_header}spec:\n  initContainers:\n  - {{name: a, image: i}}\n  containers:\n  - {{name: a, image: j}}\n"), "spec.containers[0].name: duplicate container name \"a\""),
            (format!("{pod_header}spec:\n  containers:\n  - name: a\n    image: i\n    volumeMounts:\n    - {{name: data, mountPath: /data}}\n"), "spec.containers[0].volumeMounts[0].name: volume \"data\" not found"),
            (format!("{pod_header}spec:\n  volumes:\n  - {{name: v, emptyDir: {{}}}}\n  - {{name: v, emptyDir: {{}}}}\n  containers:\n  - {{name: a, image: i}}\n"), "spec.volumes[1].name: duplicate volume name \"v\""),
            (format!("{pod_header}spec:\n  restartPolicy: Sometimes\n  containers:\n  - {{name: a, image: i}}\n"), "spec.restartPolicy: unsupported value \"Sometimes\""),
            ("apiVersion: v1\nkind: Pod\nmetadata: {}\nspec:\n  containers:\n  - {name: a, image: i}\n".to_string(), "document 1 (Pod): metadata.name: missing field"),
            (pod_header.to_string(), "document 1 (Pod): spec: missing field"),
            ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n".to_string(), "document 1: unsupported kind \"Deployment\" (apiVersion \"apps/v1\")"),
            ("apiVersion: v2\nkind: Pod\n".to_string(), "unsupported kind \"Pod\" (apiVersion \"v2\")"),
            ("metadata: {name: x}\n".to_string(), "document 1: missing field `kind`"),
            ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n".to_string(), "no Pod in the manifest"),
            (format!("{POD}---\n{POD}"), "documents 1 and 2 are both Pods"),
            (format!("{POD}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\ndata: [1]\n"), "document 2 (ConfigMap): data: invalid type"),
            ("key: [unclosed\n".to_string(), "document 1: "),
            (format!("{pod_header}spec:\n  contaners: []\n  containers:\n  - {{name: a, image: i}}\n"), "document 1 (Pod): spec.contaners: unknown field"),
            (format!("{pod_header}spec:\n  containers:\n  - {{name: a, image: i, imagePullPolcy: Always}}\n"), "document 1 (Pod): spec.containers[0].imagePullPolcy: unknown field"),
            (format!("{POD}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\nstringdata: {{a: b}}\n"), "document 2 (Secret): stringdata: unknown field"),
            ("".to_string(), "no Pod in the manifest"),
            (format!("{POD}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\ndata: {{..data: x, ok: y}}\n"), "document 2 (ConfigMap \"c\"): data[\"..data\"]: invalid key: a key may not start with '..'; rename the key"),
            (format!("{POD}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\ndata: {{'.': x}}\n"), "data[\".\"]: invalid key: a key may not be '.' or '..'"),
            (format!("{POD}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\nbinaryData: {{..2020: eA==}}\n"), "binaryData[\"..2020\"]: invalid key"),
            (format!("{POD}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\ndata: {{k: x}}\nbinaryData: {{k: eA==}}\n"), "binaryData[\"k\"]: the key is in both data and binaryData"),
            (format!("{POD}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\nstringData: {{a/b: x}}\n"), "document 2 (Secret \"s\"): stringData[\"a/b\"]: invalid key: a key may hold only"),
        ];
        for (text, expected) in cases {
            let message = error_of(&text);
            assert!(
                message.contains(expected),
                "got {message:?}, want {expected:?}"
            );
        }
    }

    #[test]
    fn reads_yaml_1_1_octal_file_modes() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: a, image: i}\n  volumes:\n  - name: v\n    configMap: {name: c, defaultMode: 0440, items: [{key: k, path: p, mode: 0600}]}\n  - name: w\n    secret: {secretName: s, defaultMode: 420}\n";
        let pod = load_manifest(text).unwrap().pod;
        let volumes = pod.spec.unwrap().volumes.unwrap();
        let config_map = volumes[0].config_map.as_ref().unwrap();
        assert_eq!(config_map.default_mode, Some(0o440));
        assert_eq!(config_map.items.as_ref().unwrap()[0].mode, Some(0o600));
        assert_eq!(volumes[1].secret.as_ref().unwrap().default_mode, Some(420));
    }

    #[test]
    fn validation_collects_every_problem() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: a}\n  - {name: a}\n";
        match load_manifest(text) {
            Err(ManifestError::Invalid { document, problems }) => {
                assert_eq!(document, 1);
                assert_eq!(problems.len(), 3, "{problems:?}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn pod_with_value(value: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n  - name: c\n    image: i\n    args: {value}\n"
        )
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let cases = [
            "[".repeat(200_000),
            format!("{}x{}", "[".repeat(200_000), "]".repeat(200_000)),
            "{a: ".repeat(200_000),
            format!("\n{}x", "- ".repeat(200_000)),
        ];
        for value in &cases {
            match load_manifest(&pod_with_value(value)) {
                Err(ManifestError::TooDeep { line, limit }) => {
                    assert!(line == 8 || line == 9, "line {line}");
                    assert_eq!(limit, MAX_MANIFEST_DEPTH);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let error = load_manifest(&pod_with_value(&cases[0])).unwrap_err();
        assert!(error.to_string().contains("MAX_MANIFEST_DEPTH"));
    }

    #[test]
    fn indentation_nesting_counts_levels() {
        let mut text = String::from("apiVersion: v1\nkind: Pod\nmetadata:\n");
        for level in 1..=MAX_MANIFEST_DEPTH + 1 {
            text.push_str(&format!("{}l{level}:\n", "  ".repeat(level)));
        }
        assert!(matches!(
            load_manifest(&text),
            Err(ManifestError::TooDeep { .. })
        ));
    }

    #[test]
    fn ordinary_nesting_and_quotes_are_accepted() {
        let value = format!(
            "['{}', \"{}\", don't, \"a\\\"b\"]",
            "[".repeat(150),
            "{".repeat(150)
        );
        let pod = load_manifest(&pod_with_value(&value)).unwrap().pod;
        let args = pod.spec.unwrap().containers[0].args.clone().unwrap();
        assert_eq!(args.len(), 4);
        assert!(load_manifest(&pod_with_value(&"[".repeat(50))).is_err());
        let nested = format!("{}x{}", "[".repeat(20), "]".repeat(20));
        assert!(!matches!(
            load_manifest(&pod_with_value(&nested)),
            Err(ManifestError::TooDeep { .. })
        ));
    }

    #[test]
    fn oversized_manifests_are_refused() {
        let text = " ".repeat(MAX_MANIFEST_BYTES + 1);
        assert!(matches!(
            load_manifest(&text),
            Err(ManifestError::TooLarge { .. })
        ));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const VALID: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {a: b}}\nspec:\n  containers:\n  - name: c\n    image: i\n    args: [x, 'y']\n    env:\n    - {name: A, value: '1'}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: m}\ndata: {k: v}\n";

        proptest! {
            #[test]
            fn manifest_bytes_properties(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let text = String::from_utf8_lossy(&bytes);
                let _ = load_manifest(&text);
            }

            #[test]
            fn mutated_manifest_properties(
                edits in proptest::collection::vec((any::<prop::sample::Index>(), "[-\\[\\]{}:,'\" \n#a-z0-9]{0,3}"), 0..6),
                cut in any::<prop::sample::Index>(),
            ) {
                let mut text = VALID.to_string();
                for (at, insert) in &edits {
                    let mut at = at.index(text.len() + 1);
                    while !text.is_char_boundary(at) { at -= 1; }
                    text.insert_str(at, insert);
                }
                let mut end = cut.index(text.len() + 1).max(text.len() / 2);
                while !text.is_char_boundary(end) { end -= 1; }
                if let Ok(manifest) = load_manifest(&text[..end]) {
                    // What loads, validates and re-loads from its own YAML.
                    prop_assert!(validate_pod(&manifest.pod).is_ok());
                    let again = serde_yaml::to_string(&manifest.pod).unwrap();
                    prop_assert_eq!(load_manifest(&again).unwrap().pod, manifest.pod);
                }
            }
        }
    }
}
