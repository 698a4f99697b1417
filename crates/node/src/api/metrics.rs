//! Prometheus text for the kubelet API: `/metrics/resource`, the kubelet's resource metrics
//! rendered from the [`Summary`] as the kubelet renders them (what metrics-server scrapes),
//! and `/metrics`, the agent's own process and its pod and container counts.
//!
//! Names, help texts, labels and timestamps are the kubelet's: families sorted by name, labels
//! by name, cumulative and gauge samples stamped with the time of their reading in
//! milliseconds, `container_start_time_seconds` unstamped, families without samples left out.

use std::fmt::Write;

use k8s_openapi::jiff::Timestamp;

use crate::api::stats::{ContainerStats, CpuStats, MemoryStats, PodStats, Summary};
use crate::node::machine::ProcessReading;

/// A Prometheus metric type.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// One sample: labels (sorted by name), value, timestamp in milliseconds.
struct Sample {
    labels: Vec<(&'static str, String)>,
    value: f64,
    at_ms: Option<i64>,
}

/// The text of the families, in the order written.
#[derive(Default)]
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: Kind, help: &str, samples: &[Sample]) {
        if samples.is_empty() {
            return;
        }
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
        for sample in samples {
            self.sample(name, sample);
        }
    }

    fn sample(&mut self, name: &str, sample: &Sample) {
        self.0.push_str(name);
        if !sample.labels.is_empty() {
            let labels: Vec<String> = sample
                .labels
                .iter()
                .map(|(key, value)| format!("{key}=\"{}\"", escape(value)))
                .collect();
            let _ = write!(self.0, "{{{}}}", labels.join(","));
        }
        let _ = write!(self.0, " {}", sample.value);
        if let Some(at) = sample.at_ms {
            let _ = write!(self.0, " {at}");
        }
        self.0.push('\n');
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn millis(at: Timestamp) -> i64 {
    at.as_millisecond()
}

/// `/metrics/resource`: node, pod and container CPU and memory, container start times, and
/// the scrape error gauges (1 when the node's CPU or memory could not be read).
pub fn resource_metrics(summary: &Summary) -> String {
    let mut text = Exposition::default();
    let containers: Vec<(&PodStats, &ContainerStats)> = summary
        .pods
        .iter()
        .flat_map(|pod| pod.containers.iter().map(move |c| (pod, c)))
        .collect();
    let container_labels = |pod: &PodStats, c: &ContainerStats| {
        vec![
            ("container", c.name.clone()),
            ("namespace", pod.pod_ref.namespace.clone()),
            ("pod", pod.pod_ref.name.clone()),
        ]
    };
    let pod_labels = |pod: &PodStats| {
        vec![
            ("namespace", pod.pod_ref.namespace.clone()),
            ("pod", pod.pod_ref.name.clone()),
        ]
    };
    let cpu: Vec<Sample> = containers
        .iter()
        .filter_map(|(p, c)| cpu_sample(&c.cpu, container_labels(p, c)))
        .collect();
    text.family(
        "container_cpu_usage_seconds_total",
        Kind::Counter,
        "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
        &cpu,
    );
    let memory: Vec<Sample> = containers
        .iter()
        .filter_map(|(p, c)| memory_sample(&c.memory, container_labels(p, c)))
        .collect();
    text.family(
        "container_memory_working_set_bytes",
        Kind::Gauge,
        "[STABLE] Current working set of the container in bytes",
        &memory,
    );
    let started: Vec<Sample> = containers
        .iter()
        .map(|(p, c)| Sample {
            labels: container_labels(p, c),
            value: c.start_time.0.as_millisecond() as f64 / 1000.0,
            at_ms: None,
        })
        .collect();
    text.family(
        "container_start_time_seconds",
        Kind::Gauge,
        "[STABLE] Start time of the container since unix epoch in seconds",
        &started,
    );
    let node = &summary.node;
    let node_cpu: Vec<Sample> = node
        .cpu
        .iter()
        .filter_map(|c| cpu_sample(c, vec![]))
        .collect();
    text.family(
        "node_cpu_usage_seconds_total",
        Kind::Counter,
        "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
        &node_cpu,
    );
    let node_memory: Vec<Sample> = node
        .memory
        .iter()
        .filter_map(|m| memory_sample(m, vec![]))
        .collect();
    text.family(
        "node_memory_working_set_bytes",
        Kind::Gauge,
        "[STABLE] Current working set of the node in bytes",
        &node_memory,
    );
    let pod_cpu: Vec<Sample> = summary
        .pods
        .iter()
        .filter_map(|p| cpu_sample(&p.cpu, pod_labels(p)))
        .collect();
    text.family(
        "pod_cpu_usage_seconds_total",
        Kind::Counter,
        "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
        &pod_cpu,
    );
    let pod_memory: Vec<Sample> = summary
        .pods
        .iter()
        .filter_map(|p| memory_sample(&p.memory, pod_labels(p)))
        .collect();
    text.family(
        "pod_memory_working_set_bytes",
        Kind::Gauge,
        "[STABLE] Current working set of the pod in bytes",
        &pod_memory,
    );
    let failed = node.cpu.is_none() || node.memory.is_none();
    let error = [Sample {
        labels: vec![],
        value: if failed { 1.0 } else { 0.0 },
        at_ms: None,
    }];
    let help = "1 if there was an error while getting container metrics, 0 otherwise";
    text.family(
        "resource_scrape_error",
        Kind::Gauge,
        &format!("[STABLE] {help}"),
        &error,
    );
    text.family(
        "scrape_error",
        Kind::Gauge,
        &format!("[ALPHA] (Deprecated since 1.29.0) {help}"),
        &error,
    );
    text.0
}

fn cpu_sample(cpu: &CpuStats, labels: Vec<(&'static str, String)>) -> Option<Sample> {
    let nanos = cpu.usage_core_nano_seconds?;
    Some(Sample {
        labels,
        value: nanos as f64 / 1e9,
        at_ms: Some(millis(cpu.time.0)),
    })
}

fn memory_sample(memory: &MemoryStats, labels: Vec<(&'static str, String)>) -> Option<Sample> {
    let bytes = memory.working_set_bytes?;
    Some(Sample {
        labels,
        value: bytes as f64,
        at_ms: Some(millis(memory.time.0)),
    })
}

/// What `/metrics` tells besides the process.
#[derive(Debug, Clone, Default)]
pub struct AgentCounts {
    /// This node's name.
    pub node_name: String,
    /// Pods with a running worker.
    pub running_pods: usize,
    /// Containers running now.
    pub running_containers: usize,
}

/// `/metrics`: the kubelet's node name, running pod and container gauges, and the standard
/// process metrics of the agent (when /proc could be read).
pub fn agent_metrics(counts: &AgentCounts, process: Option<&ProcessReading>) -> String {
    let mut text = Exposition::default();
    let gauge = |labels: Vec<(&'static str, String)>, value: f64| {
        [Sample {
            labels,
            value,
            at_ms: None,
        }]
    };
    text.family(
        "kubelet_node_name",
        Kind::Gauge,
        "[ALPHA] The node's name. The count is always 1.",
        &gauge(vec![("node", counts.node_name.clone())], 1.0),
    );
    text.family(
        "kubelet_running_containers",
        Kind::Gauge,
        "[ALPHA] Number of containers currently running",
        &gauge(
            vec![("container_state", "running".into())],
            counts.running_containers as f64,
        ),
    );
    text.family(
        "kubelet_running_pods",
        Kind::Gauge,
        "[ALPHA] Number of pods that have a running pod sandbox",
        &gauge(vec![], counts.running_pods as f64),
    );
    if let Some(process) = process {
        process_families(&mut text, process);
    }
    text.0
}

fn process_families(text: &mut Exposition, process: &ProcessReading) {
    let families: [(&str, Kind, &str, f64); 7] = [
        (
            "process_cpu_seconds_total",
            Kind::Counter,
            "Total user and system CPU time spent in seconds.",
            process.cpu.as_secs_f64(),
        ),
        (
            "process_max_fds",
            Kind::Gauge,
            "Maximum number of open file descriptors.",
            process.max_fds as f64,
        ),
        (
            "process_open_fds",
            Kind::Gauge,
            "Number of open file descriptors.",
            process.open_fds as f64,
        ),
        (
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory size in bytes.",
            process.resident_bytes as f64,
        ),
        (
            "process_start_time_seconds",
            Kind::Gauge,
            "Start time of the process since unix epoch in seconds.",
            process.start_time,
        ),
        (
            "process_threads",
            Kind::Gauge,
            "Number of OS threads in the process.",
            process.threads as f64,
        ),
        (
            "process_virtual_memory_bytes",
            Kind::Gauge,
            "Virtual memory size in bytes.",
            process.virtual_bytes as f64,
        ),
    ];
    for (name, kind, help, value) in families {
        let sample = [Sample {
            labels: vec![],
            value,
            at_ms: None,
        }];
        text.family(name, kind, help, &sample);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::stats::PodReference;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at() -> Timestamp {
        Timestamp::from_millisecond(1_700_000_010_250).unwrap()
    }

    fn cpu(nanos: u64) -> CpuStats {
        CpuStats {
            time: Time(at()),
            usage_nano_cores: None,
            usage_core_nano_seconds: Some(nanos),
        }
    }

    fn memory(bytes: u64) -> MemoryStats {
        crate::api::stats::memory_stats(at(), bytes)
    }

    fn summary() -> Summary {
        let container = ContainerStats {
            name: "web".into(),
            start_time: Time(Timestamp::from_millisecond(1_700_000_000_500).unwrap()),
            cpu: cpu(1_500_000_000),
            memory: memory(65536),
            logs: None,
        };
        Summary {
            node: crate::api::stats::NodeStats {
                node_name: "n1".into(),
                cpu: Some(cpu(2_000_000_000_000)),
                memory: Some(memory(1 << 30)),
                ..Default::default()
            },
            pods: vec![PodStats {
                pod_ref: PodReference {
                    name: "p".into(),
                    namespace: "ns".into(),
                    uid: "u".into(),
                },
                start_time: None,
                containers: vec![container],
                cpu: cpu(1_500_000_000),
                memory: memory(65536),
                volume: Vec::new(),
                ephemeral_storage: None,
            }],
        }
    }

    #[test]
    fn resource_metrics_as_the_kubelet_writes_them() {
        let text = resource_metrics(&summary());
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "container_cpu_usage_seconds_total{container=\"web\",namespace=\"ns\",pod=\"p\"} 1.5 1700000010250",
                "container_memory_working_set_bytes{container=\"web\",namespace=\"ns\",pod=\"p\"} 65536 1700000010250",
                "container_start_time_seconds{container=\"web\",namespace=\"ns\",pod=\"p\"} 1700000000.5",
                "node_cpu_usage_seconds_total 2000 1700000010250",
                "node_memory_working_set_bytes 1073741824 1700000010250",
                "pod_cpu_usage_seconds_total{namespace=\"ns\",pod=\"p\"} 1.5 1700000010250",
                "pod_memory_working_set_bytes{namespace=\"ns\",pod=\"p\"} 65536 1700000010250",
                "resource_scrape_error 0",
                "scrape_error 0",
            ]
        );
        assert!(text.starts_with(
            "# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by \
             the container in core-seconds\n# TYPE container_cpu_usage_seconds_total counter\n"
        ));
        assert!(text.contains("# TYPE node_memory_working_set_bytes gauge\n"));
    }

    #[test]
    fn an_empty_node_leaves_out_the_container_families() {
        let mut empty = summary();
        empty.pods.clear();
        let text = resource_metrics(&empty);
        assert!(!text.contains("container_"), "{text}");
        assert!(text.contains("node_cpu_usage_seconds_total 2000"), "{text}");
        empty.node.memory = None;
        let text = resource_metrics(&empty);
        assert!(
            text.lines().any(|l| l == "resource_scrape_error 1"),
            "{text}"
        );
    }

    #[test]
    fn agent_metrics_count_pods_and_containers() {
        let counts = AgentCounts {
            node_name: "n\"1".into(),
            running_pods: 2,
            running_containers: 3,
        };
        let process = ProcessReading {
            resident_bytes: 4096,
            ..ProcessReading::default()
        };
        let text = agent_metrics(&counts, Some(&process));
        for line in [
            "kubelet_node_name{node=\"n\\\"1\"} 1",
            "kubelet_running_containers{container_state=\"running\"} 3",
            "kubelet_running_pods 2",
            "process_resident_memory_bytes 4096",
            "# TYPE process_cpu_seconds_total counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert!(!agent_metrics(&counts, None).contains("process_"));
    }
}
