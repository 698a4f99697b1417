//! The worker's events: what happened to the pod and its containers, in the kubelet's words,
//! for the caller to turn into Kubernetes Events (`kubectl describe pod`).
//!
//! Each event has a sequence number, strictly increasing per worker from 1, so a consumer
//! emits the events with a `seq` above the last one it saw; the worker keeps the most recent
//! [`KEPT_EVENTS`]. The functions below build each event the kubelet records, with its reason,
//! type and message (`pkg/kubelet/events` and the places that record them).

use std::collections::VecDeque;
use std::time::Duration;

use crate::image::{ImageError, PullInfo};

/// How many of the most recent events [`WorkerFacts::events`](crate::WorkerFacts) keeps.
pub const KEPT_EVENTS: usize = 64;

/// Something that happened to the pod or one of its containers, as a Kubernetes Event
/// would say it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerEvent {
    /// Strictly increasing per worker, starting at 1.
    pub seq: u64,
    /// `type: Warning` (else `Normal`).
    pub warning: bool,
    /// The event's reason, e.g. `Pulled`, `Started`, `BackOff`, `Unhealthy`.
    pub reason: String,
    /// The event's message, e.g. `Started container web`.
    pub message: String,
    /// The container it is about (`involvedObject.fieldPath: spec.containers{NAME}`, or
    /// `spec.initContainers{NAME}` for an init container); `None` for the pod itself.
    pub container: Option<String>,
}

/// An event before it is numbered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Event {
    warning: bool,
    reason: &'static str,
    message: String,
}

fn normal(reason: &'static str, message: String) -> Event {
    Event {
        warning: false,
        reason,
        message,
    }
}

fn warning(reason: &'static str, message: String) -> Event {
    Event {
        warning: true,
        reason,
        message,
    }
}

/// The recent events of one worker.
#[derive(Debug, Default)]
pub(crate) struct EventLog {
    last_seq: u64,
    recent: VecDeque<WorkerEvent>,
}

impl EventLog {
    /// Records an event about `container` (`None`: the pod).
    pub(crate) fn push(&mut self, container: Option<&str>, event: Event) {
        self.last_seq += 1;
        if self.recent.len() == KEPT_EVENTS {
            self.recent.pop_front();
        }
        tracing::debug!(container, reason = event.reason, "{}", event.message);
        self.recent.push_back(WorkerEvent {
            seq: self.last_seq,
            warning: event.warning,
            reason: event.reason.to_owned(),
            message: event.message,
            container: container.map(str::to_owned),
        });
    }

    /// The recent events, oldest first.
    pub(crate) fn recent(&self) -> Vec<WorkerEvent> {
        self.recent.iter().cloned().collect()
    }
}

/// `Pulling`: about to pull (or check) an image.
pub(crate) fn pulling(image: &str) -> Event {
    normal("Pulling", format!("Pulling image \"{image}\""))
}

/// `Pulled`: the image was pulled (`pulled` is `Some`) in `waited` in all, or was there.
pub(crate) fn pulled(image: &str, pulled: Option<&PullInfo>, waited: Duration) -> Event {
    let Some(info) = pulled else {
        return normal(
            "Pulled",
            format!("Container image \"{image}\" already present on machine"),
        );
    };
    normal(
        "Pulled",
        format!(
            "Successfully pulled image \"{image}\" in {} ({} including waiting). Image size: {} bytes.",
            go_duration(info.duration),
            go_duration(waited.max(info.duration)),
            info.size
        ),
    )
}

/// The event of an image that could not be resolved (pull failed, absent under `Never`,
/// invalid name), before the container's `Error: ...` event.
pub(crate) fn image_failed(image: &str, error: &ImageError) -> Event {
    match error {
        ImageError::Pull(text) => warning(
            "Failed",
            format!("Failed to pull image \"{image}\": {text}"),
        ),
        ImageError::NeverPull(_) => warning("ErrImageNeverPull", error.to_string()),
        ImageError::InvalidName { .. } => warning("InspectFailed", error.to_string()),
    }
}

/// `BackOff` while an image pull is in back-off (`ImagePullBackOff`).
pub(crate) fn pull_back_off(image: &str) -> Event {
    normal("BackOff", format!("Back-off pulling image \"{image}\""))
}

/// `Failed`: a container could not be created or started; `detail` is the waiting reason for
/// image problems (`Error: ErrImagePull`), else the error's text, as the kubelet says it.
pub(crate) fn failed(detail: &str) -> Event {
    warning("Failed", format!("Error: {detail}"))
}

/// `Created`.
pub(crate) fn created(container: &str) -> Event {
    normal("Created", format!("Created container: {container}"))
}

/// `Started`.
pub(crate) fn started(container: &str) -> Event {
    normal("Started", format!("Started container {container}"))
}

/// `Killing`: a running container is being stopped; `because` replaces the usual message
/// (e.g. `Container web failed liveness probe, will be restarted`).
pub(crate) fn killing(container: &str, because: Option<String>) -> Event {
    let message = because.unwrap_or_else(|| format!("Stopping container {container}"));
    normal("Killing", message)
}

/// `BackOff` (a warning) while a container waits in CrashLoopBackOff; `pod_label` is the
/// kubelet's `name_namespace(uid)`.
pub(crate) fn crash_loop_back_off(container: &str, pod_label: &str) -> Event {
    warning(
        "BackOff",
        format!("Back-off restarting failed container {container} in pod {pod_label}"),
    )
}

/// `FailedMount`: a volume could not be set up.
/// The kubelet's `MissingClusterDNS` or `DNSConfigForming` warning about the pod's DNS.
pub(crate) fn dns_warning(dns: &wasmlet_pod::DnsWarning) -> Event {
    warning(dns.reason(), dns.message())
}

pub(crate) fn failed_mount(error: &str) -> Event {
    warning("FailedMount", error.to_owned())
}

/// `DeadlineExceeded` (on the pod): `activeDeadlineSeconds` passed.
pub(crate) fn deadline_exceeded(message: &str) -> Event {
    normal("DeadlineExceeded", message.to_owned())
}

/// `Evicted`: the pod outgrew a local storage limit.
pub(crate) fn evicted(message: &str) -> Event {
    warning("Evicted", message.to_owned())
}

/// `Unhealthy`: one probe attempt failed (`kind` is `Readiness`, `Liveness` or `Startup`).
pub(crate) fn probe_failed(kind: &str, output: &str) -> Event {
    warning("Unhealthy", format!("{kind} probe failed: {output}"))
}

/// `Unhealthy`: a probe cannot be run at all (e.g. an `exec` probe).
pub(crate) fn probe_errored(kind: &str, error: &str) -> Event {
    warning("Unhealthy", format!("{kind} probe errored: {error}"))
}

/// A duration as Go prints a `time.Duration` truncated to milliseconds, as the kubelet's
/// pull messages show it: `0s`, `250ms`, `1.5s`, `2m3.04s`, `1h0m0s`.
pub(crate) fn go_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        return "0s".into();
    }
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let (hours, minutes) = (millis / 3_600_000, millis / 60_000 % 60);
    let seconds = match millis % 1000 {
        0 => format!("{}s", millis / 1000 % 60),
        fraction => {
            let digits = format!("{fraction:03}");
            format!("{}.{}s", millis / 1000 % 60, digits.trim_end_matches('0'))
        }
    };
    match (hours, minutes) {
        (0, 0) => seconds,
        (0, _) => format!("{minutes}m{seconds}"),
        _ => format!("{hours}h{minutes}m{seconds}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_durations_as_go_does() {
        let cases = [
            (0, "0s"),
            (1, "1ms"),
            (250, "250ms"),
            (1000, "1s"),
            (1500, "1.5s"),
            (1234, "1.234s"),
            (1050, "1.05s"),
            (123_040, "2m3.04s"),
            (60_000, "1m0s"),
            (3_600_000, "1h0m0s"),
            (3_723_500, "1h2m3.5s"),
        ];
        for (millis, text) in cases {
            assert_eq!(go_duration(Duration::from_millis(millis)), text, "{millis}");
        }
        assert_eq!(go_duration(Duration::from_micros(1999)), "1ms", "truncated");
    }

    #[test]
    fn words_events_as_the_kubelet() {
        let info = PullInfo {
            duration: Duration::from_millis(1234),
            size: 4096,
        };
        let cases = [
            (
                pulling("web:v1"),
                false,
                "Pulling",
                "Pulling image \"web:v1\"",
            ),
            (
                pulled("web:v1", Some(&info), Duration::from_secs(2)),
                false,
                "Pulled",
                "Successfully pulled image \"web:v1\" in 1.234s (2s including waiting). Image size: 4096 bytes.",
            ),
            (
                pulled("web:v1", Some(&info), Duration::ZERO),
                false,
                "Pulled",
                "Successfully pulled image \"web:v1\" in 1.234s (1.234s including waiting). Image size: 4096 bytes.",
            ),
            (
                pulled("web:v1", None, Duration::ZERO),
                false,
                "Pulled",
                "Container image \"web:v1\" already present on machine",
            ),
            (
                image_failed("web:v1", &ImageError::Pull("denied".into())),
                true,
                "Failed",
                "Failed to pull image \"web:v1\": denied",
            ),
            (
                image_failed("web:v1", &ImageError::NeverPull("web:v1".into())),
                true,
                "ErrImageNeverPull",
                "Container image \"web:v1\" is not present with pull policy of Never",
            ),
            (
                failed("ErrImagePull"),
                true,
                "Failed",
                "Error: ErrImagePull",
            ),
            (
                pull_back_off("web:v1"),
                false,
                "BackOff",
                "Back-off pulling image \"web:v1\"",
            ),
            (created("web"), false, "Created", "Created container: web"),
            (started("web"), false, "Started", "Started container web"),
            (
                killing("web", None),
                false,
                "Killing",
                "Stopping container web",
            ),
            (
                crash_loop_back_off("web", "p_default(u1)"),
                true,
                "BackOff",
                "Back-off restarting failed container web in pod p_default(u1)",
            ),
            (
                probe_failed(
                    "Liveness",
                    "dial tcp 10.0.0.1:80: connect: connection refused",
                ),
                true,
                "Unhealthy",
                "Liveness probe failed: dial tcp 10.0.0.1:80: connect: connection refused",
            ),
        ];
        for (event, warning, reason, message) in cases {
            assert_eq!(
                (event.warning, event.reason, event.message.as_str()),
                (warning, reason, message)
            );
        }
    }

    #[test]
    fn keeps_the_last_events_numbered_from_one() {
        let mut log = EventLog::default();
        for n in 0..KEPT_EVENTS + 6 {
            log.push(Some("c"), started(&n.to_string()));
        }
        let recent = log.recent();
        assert_eq!(recent.len(), KEPT_EVENTS);
        assert_eq!(recent[0].seq, 7);
        assert_eq!(recent[0].message, "Started container 6");
        assert!(recent.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        assert_eq!(recent.last().map(|e| e.seq), Some(KEPT_EVENTS as u64 + 6));
    }
}
