//! The Node object as this agent registers and reports it: labels, taints, capacity and
//! allocatable, addresses, nodeInfo, and the four conditions the kubelet computes from the
//! machine's readings. Pure: the caller passes the readings and the time.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use crate::config::{EvictionHard, NodeConfig};
use crate::node::machine::{Readings, SystemInfo};
use wasmlet_pod::NodeAllocatable;

/// The kubelet version reported in nodeInfo: the Kubernetes API level the agent implements
/// (so version-skew checks parse it as 1.37.2), with wasmlet and its version as semver build
/// metadata, the way k3s marks its builds (`v1.37.2+k3s1`).
pub const KUBELET_VERSION: &str = concat!("v1.37.2+wasmlet-", env!("CARGO_PKG_VERSION"));

/// The container runtime reported in nodeInfo, `<runtime>://<version>` as CRI runtimes do:
/// the node's engine (`--engine`), with the version its crates report.
pub fn container_runtime_version(config: &NodeConfig) -> String {
    config
        .engine
        .runtime_version()
        .unwrap_or_else(wasmlet_runtime::engine_version)
}

/// The Node this agent creates on registration.
pub fn node(config: &NodeConfig, readings: &Readings, info: &SystemInfo, now: Timestamp) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(config.node_name.clone()),
            labels: Some(config.labels.clone()),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: (!config.taints.is_empty()).then(|| config.taints.clone()),
            ..Default::default()
        }),
        status: Some(node_status(config, readings, info, &[], now)),
    }
}

/// The status to report now, keeping each condition's lastTransitionTime from `previous`
/// when its status has not changed.
pub fn node_status(
    config: &NodeConfig,
    readings: &Readings,
    info: &SystemInfo,
    previous: &[NodeCondition],
    now: Timestamp,
) -> NodeStatus {
    NodeStatus {
        capacity: Some(capacity(config, readings)),
        allocatable: Some(allocatable(config, readings)),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: config.node_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: config.node_name.clone(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(config.port),
            }),
        }),
        node_info: Some(node_info(config, info)),
        conditions: Some(conditions(readings, &config.eviction_hard, previous, now)),
        ..Default::default()
    }
}

fn node_info(config: &NodeConfig, info: &SystemInfo) -> NodeSystemInfo {
    NodeSystemInfo {
        architecture: config.architecture().into(),
        operating_system: config.operating_system().into(),
        kubelet_version: KUBELET_VERSION.into(),
        container_runtime_version: container_runtime_version(config),
        kernel_version: info.kernel_version.clone(),
        os_image: info.os_image.clone(),
        machine_id: info.machine_id.clone(),
        system_uuid: info.system_uuid.clone(),
        boot_id: info.boot_id.clone(),
        ..Default::default()
    }
}

/// cpu, memory (Ki, as the kubelet writes it), ephemeral-storage and pods.
pub fn capacity(config: &NodeConfig, readings: &Readings) -> BTreeMap<String, Quantity> {
    resources(
        readings.cpus,
        readings.memory_total,
        readings.fs_total,
        config.max_pods,
    )
}

/// Capacity less the kubelet's default hard eviction thresholds (no kube/system reserved).
pub fn allocatable(config: &NodeConfig, readings: &Readings) -> BTreeMap<String, Quantity> {
    let (memory, storage) = allocatable_bytes(config, readings);
    resources(readings.cpus, memory, storage, config.max_pods)
}

/// The allocatable resources in the numbers pods' downward API reads (the defaults of unset
/// limits).
pub fn node_allocatable(config: &NodeConfig, readings: &Readings) -> NodeAllocatable {
    let (memory, storage) = allocatable_bytes(config, readings);
    let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    NodeAllocatable {
        cpu_millis: signed(readings.cpus.saturating_mul(1000)),
        memory_bytes: signed(memory),
        ephemeral_storage_bytes: signed(storage),
    }
}

/// Allocatable memory and ephemeral storage in bytes.
fn allocatable_bytes(config: &NodeConfig, readings: &Readings) -> (u64, u64) {
    let eviction = &config.eviction_hard;
    let memory = readings
        .memory_total
        .saturating_sub(eviction.memory_available);
    let storage = readings.fs_total - readings.fs_total * eviction.nodefs_available_percent / 100;
    (memory, storage)
}

fn resources(cpus: u64, memory: u64, storage: u64, pods: u32) -> BTreeMap<String, Quantity> {
    BTreeMap::from([
        ("cpu".into(), Quantity(cpus.to_string())),
        ("memory".into(), Quantity(format!("{}Ki", memory / 1024))),
        (
            "ephemeral-storage".into(),
            Quantity(format!("{}Ki", storage / 1024)),
        ),
        ("pods".into(), Quantity(pods.to_string())),
    ])
}

/// Pressure found in one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pressure {
    /// memory.available under its threshold.
    pub memory: bool,
    /// nodefs.available or nodefs.inodesFree under its threshold.
    pub disk: bool,
    /// pid.available (process ids left of `pid_max`) under its threshold.
    pub pid: bool,
}

impl Pressure {
    /// The pressure in `readings`, with the kubelet's default thresholds.
    pub fn of(readings: &Readings, eviction: &EvictionHard) -> Self {
        let below = |free: u64, total: u64, percent: u64| free * 100 < total * percent;
        let pids_left = readings.pid_max.saturating_sub(readings.pids_running);
        let inodes_low = below(
            readings.fs_inodes_free,
            readings.fs_inodes,
            eviction.nodefs_inodes_free_percent,
        );
        Self {
            memory: readings.memory_available < eviction.memory_available,
            disk: inodes_low
                || below(
                    readings.fs_available,
                    readings.fs_total,
                    eviction.nodefs_available_percent,
                ),
            pid: below(pids_left, readings.pid_max, eviction.pid_available_percent),
        }
    }
}

/// Ready, MemoryPressure, DiskPressure and PIDPressure, with the kubelet's reasons and messages.
pub fn conditions(
    readings: &Readings,
    eviction: &EvictionHard,
    previous: &[NodeCondition],
    now: Timestamp,
) -> Vec<NodeCondition> {
    let pressure = Pressure::of(readings, eviction);
    let wanted = [
        (
            "Ready",
            true,
            "KubeletReady",
            "kubelet is posting ready status",
        ),
        memory_condition(pressure.memory),
        disk_condition(pressure.disk),
        pid_condition(pressure.pid),
    ];
    wanted
        .into_iter()
        .map(|(type_, status, reason, message)| {
            condition(type_, status, reason, message, previous, now)
        })
        .collect()
}

/// Marks the Ready condition of `conditions` False (the agent is stopping or unhealthy).
pub fn not_ready(conditions: &mut [NodeCondition], message: &str, now: Timestamp) {
    for condition in conditions.iter_mut().filter(|c| c.type_ == "Ready") {
        if condition.status != "False" {
            condition.last_transition_time = Some(Time(now));
        }
        condition.status = "False".into();
        condition.reason = Some("KubeletNotReady".into());
        condition.message = Some(message.into());
        condition.last_heartbeat_time = Some(Time(now));
    }
}

type Wanted = (&'static str, bool, &'static str, &'static str);

fn memory_condition(under: bool) -> Wanted {
    if under {
        (
            "MemoryPressure",
            true,
            "KubeletHasInsufficientMemory",
            "kubelet has insufficient memory available",
        )
    } else {
        (
            "MemoryPressure",
            false,
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        )
    }
}

fn pid_condition(under: bool) -> Wanted {
    if under {
        (
            "PIDPressure",
            true,
            "KubeletHasInsufficientPID",
            "kubelet has insufficient PID available",
        )
    } else {
        (
            "PIDPressure",
            false,
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        )
    }
}

fn disk_condition(under: bool) -> Wanted {
    if under {
        (
            "DiskPressure",
            true,
            "KubeletHasDiskPressure",
            "kubelet has disk pressure",
        )
    } else {
        (
            "DiskPressure",
            false,
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        )
    }
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    previous: &[NodeCondition],
    now: Timestamp,
) -> NodeCondition {
    let status = if status { "True" } else { "False" };
    let transition = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(transition),
    }
}

/// Whether two statuses differ in anything but heartbeat times (the kubelet patches on change).
pub fn changed(old: &NodeStatus, new: &NodeStatus) -> bool {
    strip_heartbeats(old) != strip_heartbeats(new)
}

fn strip_heartbeats(status: &NodeStatus) -> NodeStatus {
    let mut status = status.clone();
    for condition in status.conditions.iter_mut().flatten() {
        condition.last_heartbeat_time = None;
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    const GI: u64 = 1024 * 1024 * 1024;

    #[test]
    fn the_runtime_version_is_the_nodes_engine() {
        let lock = include_str!("../../../../Cargo.lock");
        let built = lock
            .split("[[package]]")
            .find(|p| p.contains("\nname = \"wasmtime\"\n"))
            .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
            .map(|v| v.trim_matches('"'))
            .expect("wasmtime in Cargo.lock");
        let config = NodeConfig::new("n", "127.0.0.1".parse().unwrap(), "/tmp".into());
        assert_eq!(
            container_runtime_version(&config),
            format!("wasmtime://{built}")
        );
    }

    fn readings() -> Readings {
        Readings {
            cpus: 2,
            memory_total: 24 * GI,
            memory_available: 20 * GI,
            fs_total: 100 * GI,
            fs_available: 50 * GI,
            fs_inodes: 1000,
            fs_inodes_free: 900,
            pid_max: 4_194_304,
            pids_running: 300,
        }
    }

    fn config() -> NodeConfig {
        NodeConfig::new("n1", "127.0.0.2".parse().unwrap(), "/tmp".into())
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn find<'a>(conditions: &'a [NodeCondition], type_: &str) -> &'a NodeCondition {
        conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn node_carries_labels_taints_and_endpoints() {
        let node = node(&config(), &readings(), &SystemInfo::default(), at(0));
        assert_eq!(node.metadata.labels.as_ref().unwrap()["type"], "wasmlet");
        assert_eq!(node.spec.unwrap().taints.unwrap().len(), 2);
        let status = node.status.unwrap();
        assert_eq!(
            status
                .daemon_endpoints
                .unwrap()
                .kubelet_endpoint
                .unwrap()
                .port,
            10250
        );
        let addresses = status.addresses.unwrap();
        assert_eq!(addresses[0].type_, "InternalIP");
        assert_eq!(addresses[0].address, "127.0.0.2");
        let info = status.node_info.unwrap();
        assert_eq!(info.architecture, "wasm32-wasi");
        assert_eq!(info.operating_system, "wasm32-wasi");
        assert!(info.kubelet_version.starts_with("v1.37.2+wasmlet-"));
    }

    #[test]
    fn capacity_and_allocatable_follow_the_readings() {
        let capacity = capacity(&config(), &readings());
        assert_eq!(capacity["cpu"].0, "2");
        assert_eq!(capacity["memory"].0, format!("{}Ki", 24 * 1024 * 1024));
        assert_eq!(capacity["pods"].0, "1000");
        let allocatable = allocatable(&config(), &readings());
        assert_eq!(
            allocatable["memory"].0,
            format!("{}Ki", 24 * 1024 * 1024 - 100 * 1024)
        );
        assert_eq!(
            allocatable["ephemeral-storage"].0,
            format!("{}Ki", 90 * 1024 * 1024)
        );
    }

    #[test]
    fn conditions_use_the_kubelet_reasons() {
        let conditions = conditions(&readings(), &EvictionHard::default(), &[], at(0));
        let ready = find(&conditions, "Ready");
        assert_eq!(ready.status, "True");
        assert_eq!(ready.reason.as_deref(), Some("KubeletReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some("kubelet is posting ready status")
        );
        let memory = find(&conditions, "MemoryPressure");
        assert_eq!(
            (memory.status.as_str(), memory.reason.as_deref()),
            ("False", Some("KubeletHasSufficientMemory"))
        );
        let disk = find(&conditions, "DiskPressure");
        assert_eq!(disk.reason.as_deref(), Some("KubeletHasNoDiskPressure"));
        let pid = find(&conditions, "PIDPressure");
        assert_eq!(pid.reason.as_deref(), Some("KubeletHasSufficientPID"));
    }

    #[test]
    fn pressure_table() {
        let base = readings();
        let cases = [
            (
                Readings {
                    memory_available: 99 * 1024 * 1024,
                    ..base
                },
                Pressure {
                    memory: true,
                    ..Default::default()
                },
            ),
            (
                Readings {
                    fs_available: 9 * GI,
                    ..base
                },
                Pressure {
                    disk: true,
                    ..Default::default()
                },
            ),
            (
                Readings {
                    fs_inodes_free: 49,
                    ..base
                },
                Pressure {
                    disk: true,
                    ..Default::default()
                },
            ),
            (
                Readings {
                    pid_max: 1000,
                    pids_running: 960,
                    ..base
                },
                Pressure {
                    pid: true,
                    ..Default::default()
                },
            ),
            (base, Pressure::default()),
        ];
        let lenient = EvictionHard {
            nodefs_available_percent: 1,
            ..Default::default()
        };
        let low_disk = Readings {
            fs_available: 9 * GI,
            ..base
        };
        assert_eq!(Pressure::of(&low_disk, &lenient), Pressure::default());
        for (readings, want) in cases {
            assert_eq!(
                Pressure::of(&readings, &EvictionHard::default()),
                want,
                "{readings:?}"
            );
        }
    }

    #[test]
    fn transition_time_kept_until_status_changes() {
        let first = conditions(&readings(), &EvictionHard::default(), &[], at(10));
        let second = conditions(&readings(), &EvictionHard::default(), &first, at(20));
        let ready = find(&second, "Ready");
        assert_eq!(ready.last_transition_time, Some(Time(at(10))));
        assert_eq!(ready.last_heartbeat_time, Some(Time(at(20))));
        let pressed = Readings {
            memory_available: 0,
            ..readings()
        };
        let third = conditions(&pressed, &EvictionHard::default(), &second, at(30));
        let memory = find(&third, "MemoryPressure");
        assert_eq!(memory.status, "True");
        assert_eq!(memory.last_transition_time, Some(Time(at(30))));
    }

    #[test]
    fn heartbeat_alone_is_no_change() {
        let a = node_status(&config(), &readings(), &SystemInfo::default(), &[], at(10));
        let b = node_status(
            &config(),
            &readings(),
            &SystemInfo::default(),
            &a.conditions.clone().unwrap(),
            at(20),
        );
        assert!(!changed(&a, &b));
        let c = node_status(
            &config(),
            &Readings {
                cpus: 4,
                ..readings()
            },
            &SystemInfo::default(),
            &[],
            at(20),
        );
        assert!(changed(&a, &c));
    }

    #[test]
    fn not_ready_flips_ready_only() {
        let mut conditions = conditions(&readings(), &EvictionHard::default(), &[], at(10));
        not_ready(&mut conditions, "stopping", at(20));
        let ready = find(&conditions, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("KubeletNotReady"))
        );
        assert_eq!(ready.last_transition_time, Some(Time(at(20))));
        assert_eq!(find(&conditions, "MemoryPressure").status, "False");
    }
}
