//! A container's environment variables, resolved as the kubelet does: `envFrom` first (in
//! order, with prefixes), then `env` (in order, each value `$(VAR)`-expanded against what is
//! defined before it), later definitions replacing earlier ones.

use k8s_openapi::api::core::v1::{
    ConfigMapKeySelector, Container, EnvFromSource, EnvVar, EnvVarSource, Pod, SecretKeySelector,
};

use crate::downward::{self, DownwardError, NodeFacts};
use crate::expansion::{ExpansionBudget, ExpansionError, expand_with_pairs};
use crate::objects::ConfigObjects;

/// Why the environment could not be built; the kubelet reports these as
/// `CreateContainerConfigError` with this text as the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// A required ConfigMap is absent.
    #[error("configmap {0:?} not found")]
    ConfigMapNotFound(String),
    /// A required Secret is absent.
    #[error("secret {0:?} not found")]
    SecretNotFound(String),
    /// A required key is absent from a ConfigMap.
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKeyNotFound {
        /// The pod's namespace.
        namespace: String,
        /// The ConfigMap.
        name: String,
        /// The key.
        key: String,
    },
    /// A required key is absent from a Secret.
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKeyNotFound {
        /// The pod's namespace.
        namespace: String,
        /// The Secret.
        name: String,
        /// The key.
        key: String,
    },
    /// A `fieldRef` or `resourceFieldRef` could not be resolved.
    #[error(transparent)]
    Downward(#[from] DownwardError),
    /// Expanding the `$(VAR)` references of a variable's value went past a limit.
    #[error("env variable {variable:?}: {source}")]
    Expansion {
        /// The variable whose value was being expanded.
        variable: String,
        /// The limit reached.
        source: ExpansionError,
    },
}

/// Result type of this module.
pub type Result<T, E = EnvError> = std::result::Result<T, E>;

/// An ordered list of environment variables; a name appears once.
pub type EnvList = Vec<(String, String)>;

/// Sets `name` to `value`, replacing an earlier definition in place.
pub fn set_env(env: &mut EnvList, name: String, value: String) {
    match env.iter_mut().find(|(existing, _)| *existing == name) {
        Some(entry) => entry.1 = value,
        None => env.push((name, value)),
    }
}

/// Builds the environment of `container` (a container or init container of `pod`).
pub fn container_env(
    pod: &Pod,
    container: &Container,
    objects: &ConfigObjects,
    node: &NodeFacts,
) -> Result<EnvList> {
    let mut env = EnvList::new();
    let mut budget = ExpansionBudget::per_container();
    for source in container.env_from.iter().flatten() {
        add_env_from(source, objects, &mut env)?;
    }
    for var in container.env.iter().flatten() {
        if let Some(value) = env_var_value(pod, container, var, objects, node, &env, &mut budget)? {
            set_env(&mut env, var.name.clone(), value);
        }
    }
    Ok(env)
}

fn add_env_from(source: &EnvFromSource, objects: &ConfigObjects, env: &mut EnvList) -> Result<()> {
    let prefix = source.prefix.as_deref().unwrap_or("");
    if let Some(reference) = &source.config_map_ref {
        match objects.config_maps.get(&reference.name) {
            Some(content) => {
                for (key, value) in &content.data {
                    set_env(env, format!("{prefix}{key}"), value.clone());
                }
            }
            None if reference.optional == Some(true) => {}
            None => return Err(EnvError::ConfigMapNotFound(reference.name.clone())),
        }
    }
    if let Some(reference) = &source.secret_ref {
        match objects.secrets.get(&reference.name) {
            Some(content) => {
                for (key, value) in &content.data {
                    set_env(env, format!("{prefix}{key}"), text_of(value));
                }
            }
            None if reference.optional == Some(true) => {}
            None => return Err(EnvError::SecretNotFound(reference.name.clone())),
        }
    }
    Ok(())
}

/// The value of one `env` entry; `None` when an optional reference is missing (the variable
/// is then not set at all).
fn env_var_value(
    pod: &Pod,
    container: &Container,
    var: &EnvVar,
    objects: &ConfigObjects,
    node: &NodeFacts,
    defined: &EnvList,
    budget: &mut ExpansionBudget,
) -> Result<Option<String>> {
    match &var.value_from {
        None => expand_with_pairs(var.value.as_deref().unwrap_or(""), defined, budget)
            .map(Some)
            .map_err(|source| EnvError::Expansion {
                variable: var.name.clone(),
                source,
            }),
        Some(source) => value_from(pod, container, source, objects, node),
    }
}

fn value_from(
    pod: &Pod,
    container: &Container,
    source: &EnvVarSource,
    objects: &ConfigObjects,
    node: &NodeFacts,
) -> Result<Option<String>> {
    if let Some(field) = &source.field_ref {
        return Ok(Some(downward::field_value(pod, node, &field.field_path)?));
    }
    if let Some(resource) = &source.resource_field_ref {
        let target = match resource.container_name.as_deref().filter(|n| !n.is_empty()) {
            Some(name) => downward::find_container(pod, name)
                .ok_or_else(|| DownwardError::ContainerNotFound(name.to_string()))?,
            None => container,
        };
        let value = downward::resource_value(
            target,
            &resource.resource,
            resource.divisor.as_ref(),
            &node.allocatable,
        )?;
        return Ok(Some(value));
    }
    if let Some(selector) = &source.config_map_key_ref {
        return config_map_key(pod, selector, objects);
    }
    if let Some(selector) = &source.secret_key_ref {
        return secret_key(pod, selector, objects);
    }
    Ok(Some(String::new()))
}

fn config_map_key(
    pod: &Pod,
    selector: &ConfigMapKeySelector,
    objects: &ConfigObjects,
) -> Result<Option<String>> {
    let optional = selector.optional == Some(true);
    let Some(content) = objects.config_maps.get(&selector.name) else {
        return missing(optional, EnvError::ConfigMapNotFound(selector.name.clone()));
    };
    match content.data.get(&selector.key) {
        Some(value) => Ok(Some(value.clone())),
        None => missing(
            optional,
            EnvError::ConfigMapKeyNotFound {
                namespace: downward::pod_namespace(pod).to_string(),
                name: selector.name.clone(),
                key: selector.key.clone(),
            },
        ),
    }
}

fn secret_key(
    pod: &Pod,
    selector: &SecretKeySelector,
    objects: &ConfigObjects,
) -> Result<Option<String>> {
    let optional = selector.optional == Some(true);
    let Some(content) = objects.secrets.get(&selector.name) else {
        return missing(optional, EnvError::SecretNotFound(selector.name.clone()));
    };
    match content.data.get(&selector.key) {
        Some(value) => Ok(Some(text_of(value))),
        None => missing(
            optional,
            EnvError::SecretKeyNotFound {
                namespace: downward::pod_namespace(pod).to_string(),
                name: selector.name.clone(),
                key: selector.key.clone(),
            },
        ),
    }
}

fn missing(optional: bool, error: EnvError) -> Result<Option<String>> {
    if optional { Ok(None) } else { Err(error) }
}

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::{ConfigMapContent, SecretContent};
    use std::collections::BTreeMap;

    fn objects() -> ConfigObjects {
        ConfigObjects {
            config_maps: BTreeMap::from([(
                "settings".to_string(),
                ConfigMapContent {
                    data: BTreeMap::from([
                        ("MODE".to_string(), "fast".to_string()),
                        ("LEVEL".to_string(), "3".to_string()),
                    ]),
                    binary_data: BTreeMap::new(),
                },
            )]),
            secrets: BTreeMap::from([(
                "creds".to_string(),
                SecretContent {
                    data: BTreeMap::from([("TOKEN".to_string(), b"s3cret".to_vec())]),
                },
            )]),
            tokens: BTreeMap::new(),
        }
    }

    fn pod_with(container_yaml: &str) -> (Pod, Container) {
        let text = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: ns, labels: {{app: demo}}}}\nspec:\n  containers:\n  - {container_yaml}\n"
        );
        let pod: Pod = serde_yaml::from_str(&text).unwrap();
        let container = pod.spec.as_ref().unwrap().containers[0].clone();
        (pod, container)
    }

    fn env_of(container_yaml: &str) -> Result<EnvList> {
        let (pod, container) = pod_with(container_yaml);
        let node = NodeFacts {
            node_name: "n1".into(),
            pod_ips: vec!["127.0.1.2".into()],
            ..Default::default()
        };
        container_env(&pod, &container, &objects(), &node)
    }

    fn pairs(list: &[(&str, &str)]) -> EnvList {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// env A=xx, B=$(A)$(A), C=$(B)$(B), ...: a few hundred bytes of manifest that once
    /// expanded to gigabytes.
    fn doubling_env(levels: usize) -> String {
        let mut vars = vec!["{name: V0, value: xx}".to_string()];
        for level in 1..levels {
            let previous = level - 1;
            vars.push(format!(
                "{{name: V{level}, value: '$(V{previous})$(V{previous})'}}"
            ));
        }
        format!("{{name: c, image: i, env: [{}]}}", vars.join(", "))
    }

    #[test]
    fn doubling_references_are_refused_naming_the_variable() {
        let error = env_of(&doubling_env(60)).unwrap_err();
        // V20 would be 2 MiB, past the 1.5 MiB a value may have.
        match &error {
            EnvError::Expansion { variable, source } => {
                assert_eq!(variable, "V20");
                assert!(matches!(source, ExpansionError::ValueTooLarge { .. }));
            }
            other => panic!("unexpected {other:?}"),
        }
        let text = error.to_string();
        assert!(text.contains("env variable \"V20\""), "{text}");
        assert!(text.contains("larger than 1572864 bytes"), "{text}");
        let small = env_of(&doubling_env(8)).unwrap();
        assert_eq!(small[7].1.len(), 256);
    }

    #[test]
    fn builds_environments() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("{name: c, image: i}", &[]),
            (
                "{name: c, image: i, env: [{name: A, value: x}, {name: B}]}",
                &[("A", "x"), ("B", "")],
            ),
            (
                "{name: c, image: i, env: [{name: A, value: x}, {name: B, value: '$(A)-$(C)'}]}",
                &[("A", "x"), ("B", "x-$(C)")],
            ),
            (
                "{name: c, image: i, env: [{name: B, value: '$(A)'}, {name: A, value: x}]}",
                &[("B", "$(A)"), ("A", "x")],
            ),
            (
                "{name: c, image: i, env: [{name: A, value: '$$(A)'}]}",
                &[("A", "$(A)")],
            ),
            (
                "{name: c, image: i, env: [{name: A, value: x}, {name: A, value: y}]}",
                &[("A", "y")],
            ),
            (
                "{name: c, image: i, envFrom: [{configMapRef: {name: settings}}]}",
                &[("LEVEL", "3"), ("MODE", "fast")],
            ),
            (
                "{name: c, image: i, envFrom: [{prefix: CFG_, configMapRef: {name: settings}}]}",
                &[("CFG_LEVEL", "3"), ("CFG_MODE", "fast")],
            ),
            (
                "{name: c, image: i, envFrom: [{secretRef: {name: creds}}]}",
                &[("TOKEN", "s3cret")],
            ),
            (
                "{name: c, image: i, envFrom: [{configMapRef: {name: nope, optional: true}}]}",
                &[],
            ),
            (
                "{name: c, image: i, envFrom: [{secretRef: {name: nope, optional: true}}]}",
                &[],
            ),
            (
                "{name: c, image: i, envFrom: [{configMapRef: {name: settings}}], env: [{name: MODE, value: slow}]}",
                &[("LEVEL", "3"), ("MODE", "slow")],
            ),
            (
                "{name: c, image: i, envFrom: [{configMapRef: {name: settings}}], env: [{name: X, value: '$(MODE)'}]}",
                &[("LEVEL", "3"), ("MODE", "fast"), ("X", "fast")],
            ),
            (
                "{name: c, image: i, env: [{name: M, valueFrom: {configMapKeyRef: {name: settings, key: MODE}}}]}",
                &[("M", "fast")],
            ),
            (
                "{name: c, image: i, env: [{name: M, valueFrom: {configMapKeyRef: {name: settings, key: NOPE, optional: true}}}]}",
                &[],
            ),
            (
                "{name: c, image: i, env: [{name: M, valueFrom: {configMapKeyRef: {name: nope, key: K, optional: true}}}]}",
                &[],
            ),
            (
                "{name: c, image: i, env: [{name: T, valueFrom: {secretKeyRef: {name: creds, key: TOKEN}}}]}",
                &[("T", "s3cret")],
            ),
            (
                "{name: c, image: i, env: [{name: T, valueFrom: {secretKeyRef: {name: creds, key: NOPE, optional: true}}}]}",
                &[],
            ),
            (
                "{name: c, image: i, env: [{name: N, valueFrom: {fieldRef: {fieldPath: metadata.name}}}, {name: NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}]}",
                &[("N", "p"), ("NS", "ns")],
            ),
            (
                "{name: c, image: i, env: [{name: L, valueFrom: {fieldRef: {fieldPath: \"metadata.labels['app']\"}}}]}",
                &[("L", "demo")],
            ),
            (
                "{name: c, image: i, env: [{name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}, {name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}]}",
                &[("NODE", "n1"), ("IP", "127.0.1.2")],
            ),
            (
                "{name: c, image: i, env: [{name: V, value: '$(N)'}, {name: N, valueFrom: {fieldRef: {fieldPath: metadata.name}}}, {name: W, value: '$(N)'}]}",
                &[("V", "$(N)"), ("N", "p"), ("W", "p")],
            ),
            (
                "{name: c, image: i, resources: {limits: {memory: 64Mi}}, env: [{name: MEM, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}]}",
                &[("MEM", "64")],
            ),
            (
                "{name: c, image: i, resources: {limits: {cpu: 1500m}}, env: [{name: CPU, valueFrom: {resourceFieldRef: {containerName: c, resource: limits.cpu}}}]}",
                &[("CPU", "2")],
            ),
        ];
        for (container, expected) in cases {
            let env = env_of(container).unwrap_or_else(|e| panic!("{container}: {e}"));
            assert_eq!(env, pairs(expected), "{container}");
        }
    }

    #[test]
    fn reports_the_kubelets_errors() {
        let cases: &[(&str, &str)] = &[
            (
                "{name: c, image: i, envFrom: [{configMapRef: {name: nope}}]}",
                "configmap \"nope\" not found",
            ),
            (
                "{name: c, image: i, envFrom: [{secretRef: {name: nope}}]}",
                "secret \"nope\" not found",
            ),
            (
                "{name: c, image: i, env: [{name: M, valueFrom: {configMapKeyRef: {name: nope, key: K}}}]}",
                "configmap \"nope\" not found",
            ),
            (
                "{name: c, image: i, env: [{name: M, valueFrom: {configMapKeyRef: {name: settings, key: K}}}]}",
                "couldn't find key K in ConfigMap ns/settings",
            ),
            (
                "{name: c, image: i, env: [{name: T, valueFrom: {secretKeyRef: {name: nope, key: K}}}]}",
                "secret \"nope\" not found",
            ),
            (
                "{name: c, image: i, env: [{name: T, valueFrom: {secretKeyRef: {name: creds, key: K}}}]}",
                "couldn't find key K in Secret ns/creds",
            ),
            (
                "{name: c, image: i, env: [{name: F, valueFrom: {fieldRef: {fieldPath: status.phase}}}]}",
                "unsupported fieldPath: status.phase",
            ),
            (
                "{name: c, image: i, env: [{name: R, valueFrom: {resourceFieldRef: {containerName: other, resource: limits.cpu}}}]}",
                "container \"other\" not found in pod",
            ),
        ];
        for (container, expected) in cases {
            let error = env_of(container).unwrap_err();
            assert_eq!(error.to_string(), *expected, "{container}");
        }
    }

    #[test]
    fn set_env_replaces_in_place() {
        let mut env = pairs(&[("A", "1"), ("B", "2")]);
        set_env(&mut env, "A".into(), "3".into());
        set_env(&mut env, "C".into(), "4".into());
        assert_eq!(env, pairs(&[("A", "3"), ("B", "2"), ("C", "4")]));
    }
}
