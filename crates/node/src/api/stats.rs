//! The kubelet's Summary API (`/stats/summary`, `stats/v1alpha1`): the node's CPU, memory,
//! file system and process figures from the machine, and each running pod's containers from
//! the runtime's usage counters. The resource metrics (`/metrics/resource`) are rendered
//! from the same summary, as the kubelet does.
//!
//! What a wasm container reports (see `wasmlet_runtime::Usage`): its CPU time is the thread
//! CPU time spent running its guest; its memory (working set and usage alike) is the linear
//! memories and tables of its live instances. `usageNanoCores` is the rate between the
//! previous summary and this one (at least [`MIN_RATE_WINDOW`] apart; a closer call repeats
//! the last rate); for a container seen for the first time it is the average since its start.
//! A pod's figures are its containers' sums.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use wasmlet_worker::ContainerUsage;

use crate::api::disk::{DirUsage, PodDisk};
use crate::node::machine::{CpuReading, MemoryReading, ProcessReading, Readings};
use crate::pods::running::RunningPod;

/// The shortest time between two samples a CPU rate is computed over.
pub const MIN_RATE_WINDOW: Duration = Duration::from_secs(1);
/// How long a rate's last sample is kept without being seen again.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// The Summary API's answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The node.
    pub node: NodeStats,
    /// The pods with running workers.
    pub pods: Vec<PodStats>,
}

/// The node's figures.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    /// The node's name.
    pub node_name: String,
    /// The node's own processes: `kubelet` (this agent) and `pods` (all pods together).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub system_containers: Vec<ContainerStats>,
    /// When the machine booted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// Memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    /// The file system of the data directory (pods' volumes, logs and images).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fs: Option<FsStats>,
    /// Process ids.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rlimit: Option<RlimitStats>,
}

/// CPU figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    /// When they were taken.
    pub time: Time,
    /// The rate of use in billionths of a core, over the last sampling window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    /// CPU time used so far, in core-nanoseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_core_nano_seconds: Option<u64>,
}

/// Memory figures, in bytes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    /// When they were taken.
    pub time: Time,
    /// Memory left before the working set reaches capacity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    /// All memory in use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_bytes: Option<u64>,
    /// The working set (what `kubectl top` shows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_set_bytes: Option<u64>,
    /// Anonymous resident memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    /// Page faults so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_faults: Option<u64>,
    /// Major page faults so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub major_page_faults: Option<u64>,
}

/// File system figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FsStats {
    /// When they were taken.
    pub time: Time,
    /// Bytes available to unprivileged users.
    pub available_bytes: u64,
    /// The file system's size.
    pub capacity_bytes: u64,
    /// Bytes not available (capacity less available).
    pub used_bytes: u64,
    /// Free inodes.
    pub inodes_free: u64,
    /// Inodes.
    pub inodes: u64,
    /// Inodes in use.
    pub inodes_used: u64,
}

/// Process id figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RlimitStats {
    /// When they were taken.
    pub time: Time,
    /// `kernel.pid_max`.
    pub maxpid: u64,
    /// Processes now.
    pub curproc: u64,
}

/// One pod's figures.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    /// Which pod.
    pub pod_ref: PodReference,
    /// When the pod was taken on by this node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// Its running containers.
    pub containers: Vec<ContainerStats>,
    /// The sum of its containers' CPU.
    pub cpu: CpuStats,
    /// The sum of its containers' memory.
    pub memory: MemoryStats,
    /// Its volumes' disk use (emptyDir, ConfigMap, Secret, downward API and projected).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volume: Vec<VolumeStats>,
    /// Its local ephemeral storage: volumes and logs together.
    #[serde(rename = "ephemeral-storage", skip_serializing_if = "Option::is_none")]
    pub ephemeral_storage: Option<UsageFs>,
}

/// Disk use of a volume, a pod's ephemeral storage or a container's logs, on the file system
/// of the data directory (whose free and total figures it repeats).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageFs {
    /// When it was measured.
    pub time: Time,
    /// Bytes available on the file system.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    /// The file system's size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
    /// Bytes used.
    pub used_bytes: u64,
    /// Free inodes of the file system.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inodes_free: Option<u64>,
    /// Inodes of the file system.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inodes: Option<u64>,
    /// Inodes used.
    pub inodes_used: u64,
}

/// One volume's disk use.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStats {
    /// The volume's name in the pod.
    pub name: String,
    /// Its use.
    #[serde(flatten)]
    pub fs: UsageFs,
}

/// Names a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodReference {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// UID.
    pub uid: String,
}

/// One container's (or system container's) figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    /// The container's name.
    pub name: String,
    /// When its current run started.
    pub start_time: Time,
    /// CPU.
    pub cpu: CpuStats,
    /// Memory.
    pub memory: MemoryStats,
    /// Its logs' disk use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<UsageFs>,
}

/// What a summary is made from: readings taken at `at`.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The node's name.
    pub node_name: String,
    /// When the readings were taken.
    pub at: Timestamp,
    /// The machine's CPU time.
    pub cpu: Option<CpuReading>,
    /// The machine's memory.
    pub memory: Option<MemoryReading>,
    /// The machine's resources (data file system, pids).
    pub machine: Option<Readings>,
    /// This agent's process.
    pub process: Option<ProcessReading>,
    /// The running pods and their containers' usage.
    pub pods: Vec<(RunningPod, Vec<ContainerUsage>)>,
    /// The pods' disk use, by UID (left out of the resource metrics, which need none).
    pub disks: BTreeMap<String, PodDisk>,
}

/// The previous CPU sample of each node, pod and container, for `usageNanoCores`.
#[derive(Debug, Default)]
pub struct CpuRates {
    samples: Mutex<HashMap<String, Sample>>,
}

/// One CPU sample (of the run that started at `started`) and the rate computed when it was
/// taken.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    started: Timestamp,
    at: Timestamp,
    used: Duration,
    rate: Option<u64>,
}

impl CpuRates {
    /// The rate of `key` whose CPU time was `used` at `at` (and which started at `started`),
    /// remembering this sample for the next call.
    pub fn rate(
        &self,
        key: &str,
        at: Timestamp,
        used: Duration,
        started: Timestamp,
    ) -> Option<u64> {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.retain(|_, s| elapsed(s.at, at) < FORGET_AFTER);
        let previous = samples.get(key).copied();
        let (kept, rate) = next_sample(previous, at, used, started);
        samples.insert(key.to_owned(), kept);
        rate
    }
}

/// The sample to keep and the rate to report, from the previous sample and a new reading.
fn next_sample(
    previous: Option<Sample>,
    at: Timestamp,
    used: Duration,
    started: Timestamp,
) -> (Sample, Option<u64>) {
    let same_run = |p: &Sample| p.started == started && used >= p.used && p.at <= at;
    let sample = |rate| Sample {
        started,
        at,
        used,
        rate,
    };
    if let Some(previous) = previous.filter(same_run) {
        if elapsed(previous.at, at) < MIN_RATE_WINDOW {
            return (previous, previous.rate);
        }
        let rate = nano_cores(used - previous.used, elapsed(previous.at, at));
        return (sample(rate), rate);
    }
    // First seen, or restarted: the average since the start.
    let rate = Some(elapsed(started, at))
        .filter(|window| *window >= MIN_RATE_WINDOW)
        .and_then(|window| nano_cores(used, window));
    (sample(rate), rate)
}

fn nano_cores(used: Duration, window: Duration) -> Option<u64> {
    let window = window.as_nanos();
    (window > 0)
        .then(|| u64::try_from(used.as_nanos() * 1_000_000_000 / window).unwrap_or(u64::MAX))
}

/// The time from `from` to `to` (zero if `to` is earlier).
fn elapsed(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or_default()
}

/// Builds the summary from one moment's readings, updating the CPU rates.
pub fn summary(inputs: &Inputs, rates: &CpuRates) -> Summary {
    let at = inputs.at;
    let pods: Vec<PodStats> = inputs
        .pods
        .iter()
        .map(|(pod, containers)| pod_stats(pod, containers, at, rates))
        .map(|stats| with_disk(stats, inputs))
        .collect();
    let mut system_containers = Vec::new();
    if let Some(process) = &inputs.process {
        system_containers.push(agent_stats(process, at, rates));
    }
    if let Some(cpu) = &inputs.cpu {
        system_containers.push(all_pods_stats(&pods, at, cpu.boot_time));
    }
    let node = NodeStats {
        node_name: inputs.node_name.clone(),
        system_containers,
        start_time: inputs.cpu.map(|c| Time(seconds(c.boot_time))),
        cpu: inputs.cpu.map(|cpu| node_cpu(&cpu, at, rates)),
        memory: inputs.memory.map(|m| node_memory(&m, at)),
        fs: inputs.machine.map(|m| node_fs(&m, at)),
        rlimit: inputs.machine.map(|m| RlimitStats {
            time: Time(at),
            maxpid: m.pid_max,
            curproc: m.pids_running,
        }),
    };
    Summary { node, pods }
}

fn node_cpu(cpu: &CpuReading, at: Timestamp, rates: &CpuRates) -> CpuStats {
    let rate = rates.rate("node", at, cpu.busy, seconds(cpu.boot_time));
    cpu_stats(at, cpu.busy, rate)
}

fn node_memory(memory: &MemoryReading, at: Timestamp) -> MemoryStats {
    let working_set = memory.working_set();
    MemoryStats {
        time: Time(at),
        available_bytes: Some(memory.total.saturating_sub(working_set)),
        usage_bytes: Some(memory.usage()),
        working_set_bytes: Some(working_set),
        rss_bytes: Some(memory.anon),
        page_faults: Some(memory.page_faults),
        major_page_faults: Some(memory.major_page_faults),
    }
}

fn node_fs(machine: &Readings, at: Timestamp) -> FsStats {
    FsStats {
        time: Time(at),
        available_bytes: machine.fs_available,
        capacity_bytes: machine.fs_total,
        used_bytes: machine.fs_total.saturating_sub(machine.fs_available),
        inodes_free: machine.fs_inodes_free,
        inodes: machine.fs_inodes,
        inodes_used: machine.fs_inodes.saturating_sub(machine.fs_inodes_free),
    }
}

/// The `kubelet` system container: this agent's process (the runtime's threads included).
fn agent_stats(process: &ProcessReading, at: Timestamp, rates: &CpuRates) -> ContainerStats {
    let whole = Duration::from_secs_f64(process.start_time.max(0.0));
    let started = seconds(whole.as_secs());
    let rate = rates.rate("kubelet", at, process.cpu, started);
    ContainerStats {
        name: "kubelet".into(),
        start_time: Time(started),
        cpu: cpu_stats(at, process.cpu, rate),
        memory: memory_stats(at, process.resident_bytes),
        logs: None,
    }
}

/// The `pods` system container: every pod together.
fn all_pods_stats(pods: &[PodStats], at: Timestamp, boot_time: u64) -> ContainerStats {
    let sum = |f: fn(&PodStats) -> Option<u64>| pods.iter().filter_map(f).sum::<u64>();
    let cpu = CpuStats {
        time: Time(at),
        usage_nano_cores: Some(sum(|p| p.cpu.usage_nano_cores)),
        usage_core_nano_seconds: Some(sum(|p| p.cpu.usage_core_nano_seconds)),
    };
    ContainerStats {
        name: "pods".into(),
        start_time: Time(seconds(boot_time)),
        cpu,
        memory: memory_stats(at, sum(|p| p.memory.working_set_bytes)),
        logs: None,
    }
}

fn pod_stats(
    pod: &RunningPod,
    containers: &[ContainerUsage],
    at: Timestamp,
    rates: &CpuRates,
) -> PodStats {
    let containers: Vec<ContainerStats> = containers
        .iter()
        .map(|c| container_stats(&pod.uid, c, at, rates))
        .collect();
    let used: Duration = containers
        .iter()
        .filter_map(|c| c.cpu.usage_core_nano_seconds)
        .map(Duration::from_nanos)
        .sum();
    let memory: u64 = containers
        .iter()
        .filter_map(|c| c.memory.working_set_bytes)
        .sum();
    let started = pod.start_time.unwrap_or(at);
    let rate = rates.rate(&format!("pod/{}", pod.uid), at, used, started);
    PodStats {
        pod_ref: PodReference {
            name: pod.name.clone(),
            namespace: pod.namespace.clone(),
            uid: pod.uid.clone(),
        },
        start_time: pod.start_time.map(Time),
        containers,
        cpu: cpu_stats(at, used, rate),
        memory: memory_stats(at, memory),
        volume: Vec::new(),
        ephemeral_storage: None,
    }
}

/// Adds the pod's disk use (volumes, ephemeral storage, each container's logs) when it was
/// read.
fn with_disk(mut stats: PodStats, inputs: &Inputs) -> PodStats {
    let Some(disk) = inputs.disks.get(&stats.pod_ref.uid) else {
        return stats;
    };
    let fs = |usage: DirUsage| usage_fs(usage, inputs);
    stats.volume = (disk.volumes.iter())
        .map(|(name, usage)| VolumeStats {
            name: name.clone(),
            fs: fs(*usage),
        })
        .collect();
    stats.ephemeral_storage = Some(fs(disk.total()));
    for container in &mut stats.containers {
        container.logs = disk.logs.get(&container.name).map(|usage| fs(*usage));
    }
    stats
}

/// `usage` with the data file system's free and total figures.
fn usage_fs(usage: DirUsage, inputs: &Inputs) -> UsageFs {
    let machine = inputs.machine.as_ref();
    UsageFs {
        time: Time(inputs.at),
        available_bytes: machine.map(|m| m.fs_available),
        capacity_bytes: machine.map(|m| m.fs_total),
        used_bytes: usage.bytes,
        inodes_free: machine.map(|m| m.fs_inodes_free),
        inodes: machine.map(|m| m.fs_inodes),
        inodes_used: usage.inodes,
    }
}

fn container_stats(
    uid: &str,
    container: &ContainerUsage,
    at: Timestamp,
    rates: &CpuRates,
) -> ContainerStats {
    let key = format!("container/{uid}/{}", container.name);
    let used = container.usage.cpu;
    let rate = rates.rate(&key, at, used, container.started_at);
    ContainerStats {
        name: container.name.clone(),
        start_time: Time(container.started_at),
        cpu: cpu_stats(at, used, rate),
        memory: memory_stats(at, container.usage.working_set_bytes()),
        logs: None,
    }
}

fn cpu_stats(at: Timestamp, used: Duration, rate: Option<u64>) -> CpuStats {
    CpuStats {
        time: Time(at),
        usage_nano_cores: rate,
        usage_core_nano_seconds: Some(u64::try_from(used.as_nanos()).unwrap_or(u64::MAX)),
    }
}

/// Memory of a process or container: its working set is all of its usage.
pub(crate) fn memory_stats(at: Timestamp, bytes: u64) -> MemoryStats {
    MemoryStats {
        time: Time(at),
        available_bytes: None,
        usage_bytes: Some(bytes),
        working_set_bytes: Some(bytes),
        rss_bytes: None,
        page_faults: None,
        major_page_faults: None,
    }
}

fn seconds(since_epoch: u64) -> Timestamp {
    let seconds = i64::try_from(since_epoch).unwrap_or(i64::MAX);
    Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::SignedDuration;

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn rates_from_two_samples() {
        // (previous sample, reading at, CPU used, started) -> rate in nano-cores
        let table = [
            // First sample: the average since the start (500 ms over 10 s = 0.05 core).
            (None, t(10), ms(500), t(0), Some(50_000_000)),
            // Too soon after the start for an average.
            (None, t(0), ms(5), t(0), None),
            // 1 s of CPU over 4 s: a quarter core.
            (
                Some((t(10), ms(500))),
                t(14),
                ms(1500),
                t(0),
                Some(250_000_000),
            ),
            // A restart (a new start time): the average since the new start.
            (
                Some((t(10), ms(900))),
                t(20),
                ms(1000),
                t(10),
                Some(100_000_000),
            ),
        ];
        for (previous, at, used, started, want) in table {
            let previous = previous.map(|(at, used)| Sample {
                started: t(0),
                at,
                used,
                rate: None,
            });
            let (kept, rate) = next_sample(previous, at, used, started);
            assert_eq!(rate, want, "{previous:?} -> {at} {used:?}");
            assert_eq!((kept.at, kept.used), (at, used));
        }
    }

    #[test]
    fn a_close_second_call_repeats_the_last_rate() {
        let previous = Sample {
            started: t(0),
            at: t(10),
            used: ms(500),
            rate: Some(42),
        };
        let at = t(10).checked_add(SignedDuration::from_millis(200)).unwrap();
        let (kept, rate) = next_sample(Some(previous), at, ms(600), t(0));
        assert_eq!((kept, rate), (previous, Some(42)));
    }

    #[test]
    fn rates_remember_each_key() {
        let rates = CpuRates::default();
        assert_eq!(rates.rate("a", t(10), ms(1000), t(0)), Some(100_000_000));
        assert_eq!(rates.rate("b", t(10), ms(0), t(0)), Some(0));
        assert_eq!(rates.rate("a", t(12), ms(3000), t(0)), Some(1_000_000_000));
        // Forgotten after ten minutes unseen: an average since the start again.
        assert_eq!(rates.rate("b", t(2000), ms(0), t(0)), Some(0));
        assert_eq!(
            rates.rate("a", t(2000), ms(200_000), t(0)),
            Some(100_000_000)
        );
    }

    fn running(name: &str, containers: &[(&str, u64, u64)]) -> (RunningPod, Vec<ContainerUsage>) {
        let pod = RunningPod {
            namespace: "default".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            start_time: Some(t(0)),
            usage: Default::default(),
        };
        let usage = containers
            .iter()
            .map(|(name, cpu_ms, memory)| ContainerUsage {
                name: (*name).into(),
                started_at: t(0),
                usage: wasmlet_runtime::Usage {
                    cpu: ms(*cpu_ms),
                    memory_bytes: *memory,
                    instances: 1,
                    ..Default::default()
                },
            })
            .collect();
        (pod, usage)
    }

    fn inputs() -> Inputs {
        Inputs {
            node_name: "n1".into(),
            at: t(10),
            cpu: Some(CpuReading {
                busy: Duration::from_secs(5),
                boot_time: 1_700_000_000,
            }),
            memory: Some(MemoryReading {
                total: 1000,
                free: 200,
                inactive_file: 300,
                anon: 250,
                page_faults: 1,
                major_page_faults: 0,
            }),
            machine: Some(Readings {
                fs_total: 100,
                fs_available: 40,
                fs_inodes: 10,
                fs_inodes_free: 4,
                pid_max: 4096,
                pids_running: 99,
                ..Readings::default()
            }),
            process: None,
            pods: vec![running("a", &[("x", 1000, 65536), ("y", 500, 131072)])],
            disks: BTreeMap::new(),
        }
    }

    #[test]
    fn a_pod_sums_its_containers() {
        let summary = summary(&inputs(), &CpuRates::default());
        let pod = &summary.pods[0];
        assert_eq!(pod.pod_ref.uid, "uid-a");
        assert_eq!(pod.containers.len(), 2);
        assert_eq!(pod.cpu.usage_core_nano_seconds, Some(1_500_000_000));
        assert_eq!(pod.cpu.usage_nano_cores, Some(150_000_000));
        assert_eq!(pod.memory.working_set_bytes, Some(196_608));
        assert_eq!(pod.containers[1].cpu.usage_nano_cores, Some(50_000_000));
        let node = &summary.node;
        assert_eq!(
            node.cpu.as_ref().unwrap().usage_nano_cores,
            Some(500_000_000)
        );
        let memory = node.memory.as_ref().unwrap();
        assert_eq!(memory.working_set_bytes, Some(500));
        assert_eq!(memory.available_bytes, Some(500));
        assert_eq!(node.fs.as_ref().unwrap().used_bytes, 60);
        let pods = &node.system_containers[0];
        assert_eq!(pods.name, "pods");
        assert_eq!(pods.memory.working_set_bytes, Some(196_608));
    }

    #[test]
    fn an_idle_server_reports_the_code_it_holds_never_zero() {
        // An idle wasi:http container: no instance in flight, its share of the code held.
        // metrics-server drops a pod with a 0-byte container, so this must not read 0.
        let mut inputs = inputs();
        let (_, usage) = &mut inputs.pods[0];
        usage[0].usage.memory_bytes = 0;
        usage[0].usage.code_bytes = 40_960;
        let summary = summary(&inputs, &CpuRates::default());
        let container = &summary.pods[0].containers[0];
        assert_eq!(container.memory.working_set_bytes, Some(40_960));
        assert_eq!(
            summary.pods[0].memory.working_set_bytes,
            Some(40_960 + 131_072)
        );
    }

    #[test]
    fn a_pods_disk_use_is_reported_by_volume_and_container_logs() {
        let mut inputs = inputs();
        let usage = |bytes, inodes| DirUsage { bytes, inodes };
        let disk = PodDisk {
            volumes: BTreeMap::from([("data".into(), usage(8192, 3))]),
            logs: BTreeMap::from([("x".into(), usage(4096, 2))]),
        };
        inputs.disks.insert("uid-a".into(), disk);
        let json = serde_json::to_value(summary(&inputs, &CpuRates::default())).unwrap();
        let pod = &json["pods"][0];
        assert_eq!(pod["volume"][0]["name"], "data");
        assert_eq!(pod["volume"][0]["usedBytes"], 8192);
        assert_eq!(pod["volume"][0]["inodesUsed"], 3);
        assert_eq!(pod["volume"][0]["capacityBytes"], 100);
        assert_eq!(pod["volume"][0]["availableBytes"], 40);
        assert_eq!(pod["ephemeral-storage"]["usedBytes"], 12288);
        assert_eq!(pod["ephemeral-storage"]["inodesUsed"], 5);
        assert_eq!(pod["containers"][0]["logs"]["usedBytes"], 4096);
        assert!(pod["containers"][1].get("logs").is_none(), "{pod:#}");
        // Without disk readings (the resource metrics) nothing of it appears.
        let json = serde_json::to_value(summary(&self::inputs(), &CpuRates::default())).unwrap();
        assert!(json["pods"][0].get("volume").is_none());
        assert!(json["pods"][0].get("ephemeral-storage").is_none());
    }

    #[test]
    fn summary_json_has_the_kubelet_field_names() {
        let json = serde_json::to_value(summary(&inputs(), &CpuRates::default())).unwrap();
        let node = &json["node"];
        assert_eq!(node["nodeName"], "n1");
        assert_eq!(node["startTime"], "2023-11-14T22:13:20Z");
        assert_eq!(node["cpu"]["usageCoreNanoSeconds"], 5_000_000_000u64);
        assert_eq!(node["cpu"]["time"], "2023-11-14T22:13:30Z");
        assert_eq!(node["memory"]["rssBytes"], 250);
        assert_eq!(node["fs"]["capacityBytes"], 100);
        assert_eq!(node["rlimit"]["maxpid"], 4096);
        let pod = &json["pods"][0];
        assert_eq!(pod["podRef"]["namespace"], "default");
        assert_eq!(pod["containers"][0]["name"], "x");
        assert_eq!(pod["containers"][0]["memory"]["workingSetBytes"], 65536);
        assert_eq!(pod["containers"][0]["startTime"], "2023-11-14T22:13:20Z");
        assert!(pod["containers"][0]["memory"].get("rssBytes").is_none());
    }
}
