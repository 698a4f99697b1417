//! The pod's QoS class (Guaranteed, Burstable, BestEffort) by the Kubernetes rules: only CPU
//! and memory count; a request left unset takes the limit's value, as the API server defaults
//! it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::quantity::{ParsedQuantity, QuantityError};

/// Every container has CPU and memory limits equal to its requests.
pub const GUARANTEED: &str = "Guaranteed";
/// Some requests or limits, but not Guaranteed.
pub const BURSTABLE: &str = "Burstable";
/// No CPU or memory request or limit anywhere.
pub const BEST_EFFORT: &str = "BestEffort";

/// Why the QoS class could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QosError {
    /// A request or limit is malformed.
    #[error("container {container:?}: {source}")]
    Quantity {
        /// The container.
        container: String,
        /// The quantity problem.
        source: QuantityError,
    },
}

const QOS_RESOURCES: [&str; 2] = ["cpu", "memory"];

type Sums = BTreeMap<&'static str, ParsedQuantity>;

/// The pod's QoS class: [`GUARANTEED`], [`BURSTABLE`] or [`BEST_EFFORT`].
///
/// When the pod sets pod-level CPU or memory resources (`spec.resources`), those alone decide.
pub fn qos_class(pod: &Pod) -> Result<&'static str, QosError> {
    if let Some(pod_level) = pod_level_resources(pod) {
        return classify([&pod_level].into_iter());
    }
    let spec = pod.spec.iter();
    let containers = spec.flat_map(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
    });
    classify(containers)
}

/// Pod-level resources as a pseudo-container, when they name CPU or memory.
fn pod_level_resources(pod: &Pod) -> Option<Container> {
    let resources = pod.spec.as_ref()?.resources.clone()?;
    let names_qos_resource = |map: Option<&BTreeMap<String, _>>| {
        map.is_some_and(|m| QOS_RESOURCES.iter().any(|r| m.contains_key(*r)))
    };
    let set = names_qos_resource(resources.requests.as_ref())
        || names_qos_resource(resources.limits.as_ref());
    set.then(|| Container {
        name: "(pod)".to_string(),
        resources: Some(resources),
        ..Default::default()
    })
}

fn classify<'a>(containers: impl Iterator<Item = &'a Container>) -> Result<&'static str, QosError> {
    let mut requests = Sums::new();
    let mut limits = Sums::new();
    let mut every_container_limited = true;
    for container in containers {
        let (container_requests, container_limits) = container_resources(container)?;
        every_container_limited &= QOS_RESOURCES
            .iter()
            .all(|r| container_limits.contains_key(r));
        add_into(&mut requests, container_requests);
        add_into(&mut limits, container_limits);
    }
    if requests.is_empty() && limits.is_empty() {
        return Ok(BEST_EFFORT);
    }
    let equal = requests.len() == limits.len()
        && requests
            .iter()
            .all(|(name, request)| limits.get(name) == Some(request));
    Ok(if every_container_limited && equal {
        GUARANTEED
    } else {
        BURSTABLE
    })
}

/// A container's positive CPU and memory requests and limits (requests defaulted to limits).
fn container_resources(container: &Container) -> Result<(Sums, Sums), QosError> {
    let resources = container.resources.as_ref();
    let parse = |map: Option<
        &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >|
     -> Result<Sums, QosError> {
        let mut sums = Sums::new();
        for name in QOS_RESOURCES {
            if let Some(text) = map.and_then(|m| m.get(name)) {
                let quantity =
                    ParsedQuantity::parse(&text.0).map_err(|source| QosError::Quantity {
                        container: container.name.clone(),
                        source,
                    })?;
                if quantity.is_positive() {
                    sums.insert(name, quantity);
                }
            }
        }
        Ok(sums)
    };
    let limits = parse(resources.and_then(|r| r.limits.as_ref()))?;
    let mut requests = parse(resources.and_then(|r| r.requests.as_ref()))?;
    let explicit = resources.and_then(|r| r.requests.as_ref());
    for (name, limit) in &limits {
        if explicit.is_none_or(|m| !m.contains_key(*name)) {
            requests.insert(name, *limit);
        }
    }
    Ok((requests, limits))
}

fn add_into(total: &mut Sums, more: Sums) {
    for (name, quantity) in more {
        let sum = match total.get(name) {
            Some(existing) => existing.checked_add(&quantity).unwrap_or(quantity),
            None => quantity,
        };
        total.insert(name, sum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec_yaml: &str) -> Pod {
        serde_yaml::from_str(&format!("metadata: {{name: p}}\nspec:\n{spec_yaml}")).unwrap()
    }

    #[test]
    fn classifies_pods() {
        let c = |resources: &str| {
            format!(
                "  - {{name: c{}, image: i, resources: {resources}}}\n",
                resources.len()
            )
        };
        let cases: Vec<(String, &str)> = vec![
            (format!("  containers:\n{}", c("{}")), BEST_EFFORT),
            (
                format!("  containers:\n{}", c("{limits: {nvidia.com/gpu: 1}}")),
                BEST_EFFORT,
            ),
            (
                format!("  containers:\n{}", c("{requests: {cpu: '0'}}")),
                BEST_EFFORT,
            ),
            (
                format!("  containers:\n{}", c("{limits: {cpu: '1', memory: 1Gi}}")),
                GUARANTEED,
            ),
            (
                format!(
                    "  containers:\n{}",
                    c("{limits: {cpu: '1', memory: 1Gi}, requests: {cpu: 1000m, memory: 1024Mi}}")
                ),
                GUARANTEED,
            ),
            (
                format!(
                    "  containers:\n{}",
                    c("{limits: {cpu: '1', memory: 1Gi}, requests: {cpu: 500m}}")
                ),
                BURSTABLE,
            ),
            (
                format!("  containers:\n{}", c("{limits: {cpu: '1'}}")),
                BURSTABLE,
            ),
            (
                format!("  containers:\n{}", c("{requests: {memory: 1Gi}}")),
                BURSTABLE,
            ),
            (
                format!(
                    "  containers:\n{}{}",
                    c("{limits: {cpu: '1', memory: 1Gi}}"),
                    c("{}")
                ),
                BURSTABLE,
            ),
            (
                format!(
                    "  containers:\n{}{}",
                    c("{limits: {cpu: '1', memory: 1Gi}}"),
                    c("{limits: {cpu: 2, memory: 2Gi}}")
                ),
                GUARANTEED,
            ),
            (
                format!(
                    "  initContainers:\n{}  containers:\n{}",
                    c("{}"),
                    c("{limits: {cpu: '1', memory: 1Gi}}")
                ),
                BURSTABLE,
            ),
            (
                format!(
                    "  initContainers:\n{}  containers:\n{}",
                    c("{requests: {cpu: 1}}"),
                    c("{}")
                ),
                BURSTABLE,
            ),
        ];
        for (spec, expected) in cases {
            assert_eq!(qos_class(&pod(&spec)).unwrap(), expected, "{spec}");
        }
    }

    #[test]
    fn pod_level_resources_decide_when_set() {
        let cases: &[(&str, &str)] = &[
            (
                "  resources: {limits: {cpu: '1', memory: 1Gi}}\n  containers:\n  - {name: a, image: i}\n",
                GUARANTEED,
            ),
            (
                "  resources: {requests: {cpu: '1'}}\n  containers:\n  - {name: a, image: i, resources: {limits: {cpu: '1', memory: 1Gi}}}\n",
                BURSTABLE,
            ),
            (
                "  resources: {limits: {nvidia.com/gpu: 1}}\n  containers:\n  - {name: a, image: i, resources: {limits: {cpu: '1', memory: 1Gi}}}\n",
                GUARANTEED,
            ),
            (
                "  resources: {}\n  containers:\n  - {name: a, image: i}\n",
                BEST_EFFORT,
            ),
        ];
        for (spec, expected) in cases {
            assert_eq!(qos_class(&pod(spec)).unwrap(), *expected, "{spec}");
        }
    }

    #[test]
    fn rejects_malformed_quantities() {
        let bad = pod("  containers:\n  - {name: c, image: i, resources: {limits: {cpu: lots}}}\n");
        assert!(matches!(qos_class(&bad), Err(QosError::Quantity { .. })));
    }
}
