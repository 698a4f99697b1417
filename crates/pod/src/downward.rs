//! The downward API: values of a pod's own fields (`fieldRef`) and of a container's resources
//! (`resourceFieldRef`), as environment variables and downwardAPI volume files see them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity::{ParsedQuantity, QuantityError, divide_rounded_up};

/// Why a downward API value could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownwardError {
    /// The field path is not one the kubelet supports (here).
    #[error("unsupported fieldPath: {0}")]
    UnsupportedFieldPath(String),
    /// The resource name is not one the kubelet supports.
    #[error("unsupported container resource : {0}")]
    UnsupportedResource(String),
    /// `resourceFieldRef.containerName` names no container of the pod.
    #[error("container {0:?} not found in pod")]
    ContainerNotFound(String),
    /// A quantity (a resource value or a divisor) is malformed or out of range.
    #[error(transparent)]
    Quantity(#[from] QuantityError),
    /// The divisor is zero or negative.
    #[error("invalid divisor {0:?}: it must be positive")]
    InvalidDivisor(String),
}

/// Result type of this module.
pub type Result<T, E = DownwardError> = std::result::Result<T, E>;

/// What the node knows about where the pod runs, which the pod spec does not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// The node's name (`spec.nodeName` when the pod does not carry one).
    pub node_name: String,
    /// The node's IPs, primary first.
    pub host_ips: Vec<String>,
    /// The pod's IPs, primary first.
    pub pod_ips: Vec<String>,
    /// The pod's UID (`metadata.uid` when the pod does not carry one).
    pub pod_uid: String,
    /// What the node can give a container whose limits are unset.
    pub allocatable: NodeAllocatable,
}

/// The node's allocatable resources: the defaults for unset container limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeAllocatable {
    /// CPU in millicores.
    pub cpu_millis: i64,
    /// Memory in bytes.
    pub memory_bytes: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage_bytes: i64,
}

/// The value of a `fieldRef.fieldPath` as an environment variable sees it.
pub fn field_value(pod: &Pod, node: &NodeFacts, field_path: &str) -> Result<String> {
    if let Some(value) = metadata_map_entry(pod, field_path)? {
        return Ok(value);
    }
    let spec = pod.spec.as_ref();
    let value = match field_path {
        "metadata.name" => pod.metadata.name.clone().unwrap_or_default(),
        "metadata.namespace" => pod_namespace(pod).to_string(),
        "metadata.uid" => pod_uid(pod, node),
        "spec.nodeName" => spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| node.node_name.clone()),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" => node.host_ips.first().cloned().unwrap_or_default(),
        "status.hostIPs" => node.host_ips.join(","),
        "status.podIP" => node.pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => node.pod_ips.join(","),
        _ => return Err(DownwardError::UnsupportedFieldPath(field_path.to_string())),
    };
    Ok(value)
}

/// The value of a `fieldRef.fieldPath` as a downwardAPI volume file holds it: like
/// [`field_value`], plus whole `metadata.labels` and `metadata.annotations` as sorted
/// `key="value"` lines.
pub fn field_file_value(pod: &Pod, node: &NodeFacts, field_path: &str) -> Result<String> {
    match field_path {
        "metadata.labels" => Ok(format_map(pod.metadata.labels.as_ref())),
        "metadata.annotations" => Ok(format_map(pod.metadata.annotations.as_ref())),
        _ => field_value(pod, node, field_path),
    }
}

/// The pod's namespace, `default` when unset.
pub fn pod_namespace(pod: &Pod) -> &str {
    pod.metadata
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or("default")
}

/// The pod's UID: `metadata.uid`, or the one the node gave it.
pub fn pod_uid(pod: &Pod, node: &NodeFacts) -> String {
    pod.metadata
        .uid
        .clone()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| node.pod_uid.clone())
}

/// `metadata.labels['key']` and `metadata.annotations['key']`; `None` for other paths.
fn metadata_map_entry(pod: &Pod, field_path: &str) -> Result<Option<String>> {
    let (map, rest) = if let Some(rest) = field_path.strip_prefix("metadata.labels[") {
        (pod.metadata.labels.as_ref(), rest)
    } else if let Some(rest) = field_path.strip_prefix("metadata.annotations[") {
        (pod.metadata.annotations.as_ref(), rest)
    } else {
        return Ok(None);
    };
    let key = rest
        .strip_suffix("']")
        .and_then(|r| r.strip_prefix('\''))
        .ok_or_else(|| DownwardError::UnsupportedFieldPath(field_path.to_string()))?;
    Ok(Some(
        map.and_then(|m| m.get(key)).cloned().unwrap_or_default(),
    ))
}

/// Sorted `key="value"` lines, values quoted as Go's `%q` does.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(key, value)| format!("{key}={}", go_quote(value)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A double-quoted string with Go's escapes for quotes, backslashes and control characters.
pub(crate) fn go_quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            '\r' => quoted.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                quoted.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// The value of a `resourceFieldRef` for `container`: limits default to the node's
/// allocatable, requests to the limits (as the API server defaults them), and the result is
/// divided by `divisor` (default 1) rounding up.
pub fn resource_value(
    container: &Container,
    resource: &str,
    divisor: Option<&Quantity>,
    allocatable: &NodeAllocatable,
) -> Result<String> {
    let divisor_text = divisor.map_or("1", |d| d.0.as_str());
    let divisor_quantity = ParsedQuantity::parse(divisor_text)?;
    if !divisor_quantity.is_positive() {
        return Err(DownwardError::InvalidDivisor(divisor_text.to_string()));
    }
    let (kind, name) = resource
        .split_once('.')
        .ok_or_else(|| DownwardError::UnsupportedResource(resource.to_string()))?;
    let fallback = match name {
        "cpu" => allocatable.cpu_millis,
        "memory" => allocatable.memory_bytes,
        "ephemeral-storage" => allocatable.ephemeral_storage_bytes,
        _ => return Err(DownwardError::UnsupportedResource(resource.to_string())),
    };
    let quantity = match kind {
        "limits" => container_limit(container, name)?,
        "requests" => container_request(container, name)?,
        _ => return Err(DownwardError::UnsupportedResource(resource.to_string())),
    };
    let out_of_range = || QuantityError::OutOfRange(resource.to_string());
    let (amount, unit) = if name == "cpu" {
        let amount = match quantity {
            Some(q) => q.milli_value_rounded_up().ok_or_else(out_of_range)?,
            None if kind == "limits" => fallback,
            None => 0,
        };
        (amount, divisor_quantity.milli_value_rounded_up())
    } else {
        let amount = match quantity {
            Some(q) => q.value_rounded_up().ok_or_else(out_of_range)?,
            None if kind == "limits" => fallback,
            None => 0,
        };
        (amount, divisor_quantity.value_rounded_up())
    };
    let unit = unit.ok_or_else(out_of_range)?;
    let value = divide_rounded_up(amount, unit)
        .ok_or_else(|| DownwardError::InvalidDivisor(divisor_text.to_string()))?;
    Ok(value.to_string())
}

/// A container's limit for `name`, parsed; `None` when unset.
pub fn container_limit(container: &Container, name: &str) -> Result<Option<ParsedQuantity>> {
    let resources = container.resources.as_ref();
    let limit = resources
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get(name));
    Ok(limit.map(|q| ParsedQuantity::parse(&q.0)).transpose()?)
}

/// A container's request for `name`, parsed, defaulting to its limit; `None` when neither is set.
pub fn container_request(container: &Container, name: &str) -> Result<Option<ParsedQuantity>> {
    let resources = container.resources.as_ref();
    let request = resources
        .and_then(|r| r.requests.as_ref())
        .and_then(|l| l.get(name));
    match request {
        Some(q) => Ok(Some(ParsedQuantity::parse(&q.0)?)),
        None => container_limit(container, name),
    }
}

/// Finds the container (init or regular) named `name` in the pod.
pub fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                uid: Some("uid-1".into()),
                labels: Some(BTreeMap::from([
                    ("app".into(), "web".into()),
                    ("tier".into(), "front \"end\"".into()),
                ])),
                annotations: Some(BTreeMap::from([("note".into(), "a\nb".into())])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                service_account_name: Some("robot".into()),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn node() -> NodeFacts {
        NodeFacts {
            node_name: "node-1".into(),
            host_ips: vec!["127.0.0.2".into(), "::1".into()],
            pod_ips: vec!["127.0.1.5".into()],
            pod_uid: "node-given".into(),
            allocatable: NodeAllocatable {
                cpu_millis: 2000,
                memory_bytes: 1 << 30,
                ephemeral_storage_bytes: 10 << 30,
            },
        }
    }

    #[test]
    fn resolves_field_paths() {
        let cases: &[(&str, &str)] = &[
            ("metadata.name", "web"),
            ("metadata.namespace", "shop"),
            ("metadata.uid", "uid-1"),
            ("metadata.labels['app']", "web"),
            ("metadata.labels['missing']", ""),
            ("metadata.annotations['note']", "a\nb"),
            ("spec.nodeName", "node-1"),
            ("spec.serviceAccountName", "robot"),
            ("status.hostIP", "127.0.0.2"),
            ("status.hostIPs", "127.0.0.2,::1"),
            ("status.podIP", "127.0.1.5"),
            ("status.podIPs", "127.0.1.5"),
        ];
        for (path, expected) in cases {
            assert_eq!(
                field_value(&pod(), &node(), path).unwrap(),
                *expected,
                "{path}"
            );
        }
    }

    #[test]
    fn rejects_unsupported_field_paths() {
        for path in [
            "metadata.labels",
            "status.phase",
            "metadata.labels[app]",
            "spec.containers",
        ] {
            let error = field_value(&pod(), &node(), path).unwrap_err();
            assert_eq!(error.to_string(), format!("unsupported fieldPath: {path}"));
        }
    }

    #[test]
    fn defaults_namespace_and_uid() {
        let mut bare = Pod::default();
        assert_eq!(
            field_value(&bare, &node(), "metadata.namespace").unwrap(),
            "default"
        );
        assert_eq!(
            field_value(&bare, &node(), "metadata.uid").unwrap(),
            "node-given"
        );
        bare.spec = Some(PodSpec {
            node_name: Some("scheduled".into()),
            ..Default::default()
        });
        assert_eq!(
            field_value(&bare, &node(), "spec.nodeName").unwrap(),
            "scheduled"
        );
    }

    #[test]
    fn formats_whole_maps_for_files() {
        assert_eq!(
            field_file_value(&pod(), &node(), "metadata.labels").unwrap(),
            "app=\"web\"\ntier=\"front \\\"end\\\"\""
        );
        assert_eq!(
            field_file_value(&pod(), &node(), "metadata.annotations").unwrap(),
            "note=\"a\\nb\""
        );
        assert_eq!(
            field_file_value(&Pod::default(), &node(), "metadata.labels").unwrap(),
            ""
        );
    }

    fn container(limits: &[(&str, &str)], requests: &[(&str, &str)]) -> Container {
        let map = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect(),
            )
        };
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                limits: map(limits),
                requests: map(requests),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn resolves_resource_fields_with_divisors() {
        let c = container(&[("cpu", "500m"), ("memory", "128Mi")], &[("cpu", "250m")]);
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("limits.cpu", None, "1"),
            ("limits.cpu", Some("1m"), "500"),
            ("requests.cpu", Some("1m"), "250"),
            ("requests.cpu", None, "1"),
            ("limits.memory", None, "134217728"),
            ("limits.memory", Some("1Mi"), "128"),
            ("limits.memory", Some("1Gi"), "1"),
            ("requests.memory", Some("1Mi"), "128"),
            ("limits.ephemeral-storage", Some("1Gi"), "10"),
            ("requests.ephemeral-storage", None, "0"),
        ];
        let allocatable = node().allocatable;
        for (resource, divisor, expected) in cases {
            let divisor = divisor.map(|d| Quantity(d.to_string()));
            let value = resource_value(&c, resource, divisor.as_ref(), &allocatable).unwrap();
            assert_eq!(value, *expected, "{resource} / {divisor:?}");
        }
        let unlimited = container(&[], &[]);
        assert_eq!(
            resource_value(&unlimited, "limits.cpu", None, &allocatable).unwrap(),
            "2"
        );
        assert_eq!(
            resource_value(
                &unlimited,
                "limits.memory",
                Some(&Quantity("1Mi".into())),
                &allocatable
            )
            .unwrap(),
            "1024"
        );
    }

    #[test]
    fn rejects_bad_resource_fields() {
        let c = container(&[("cpu", "bogus")], &[]);
        let allocatable = node().allocatable;
        let zero = Quantity("0".into());
        assert!(matches!(
            resource_value(&c, "limits.gpu", None, &allocatable),
            Err(DownwardError::UnsupportedResource(_))
        ));
        assert!(matches!(
            resource_value(&c, "cpu", None, &allocatable),
            Err(DownwardError::UnsupportedResource(_))
        ));
        assert!(matches!(
            resource_value(&c, "limits.cpu", None, &allocatable),
            Err(DownwardError::Quantity(_))
        ));
        assert!(matches!(
            resource_value(&c, "limits.memory", Some(&zero), &allocatable),
            Err(DownwardError::InvalidDivisor(_))
        ));
    }
}
