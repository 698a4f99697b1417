//! Restart decisions and the CrashLoopBackOff back-off, as the kubelet makes them. Pure
//! functions over time values passed in: nothing here reads a clock.
//!
//! The back-off follows the kubelet's per-container record: the first restart after an exit is
//! immediate; each later exit waits the current delay (10 s, then doubling up to 5 min)
//! counted from the exit; a container that ran for more than 10 minutes since its last
//! restart starts again from the beginning.

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The waiting reason of a container that waits for its back-off to end.
pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";
/// The first back-off delay.
pub const INITIAL_BACK_OFF: SignedDuration = SignedDuration::from_secs(10);
/// The longest back-off delay.
pub const MAX_BACK_OFF: SignedDuration = SignedDuration::from_secs(300);
/// A run longer than this since the last restart resets the back-off (twice the maximum).
pub const STABLE_RUN: SignedDuration = SignedDuration::from_secs(600);

/// Why a restart policy could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestartError {
    /// The value is not Always, OnFailure or Never.
    #[error(
        "unsupported restartPolicy {0:?}: supported values: \"Always\", \"OnFailure\", \"Never\""
    )]
    UnknownPolicy(String),
}

/// The pod's `restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// Restart whatever the exit (the default).
    #[default]
    Always,
    /// Restart after a non-zero exit.
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// Parses a policy; an empty or absent value is `Always`.
    pub fn parse(value: Option<&str>) -> Result<Self, RestartError> {
        match value.unwrap_or("") {
            "" | "Always" => Ok(Self::Always),
            "OnFailure" => Ok(Self::OnFailure),
            "Never" => Ok(Self::Never),
            other => Err(RestartError::UnknownPolicy(other.to_string())),
        }
    }

    /// The pod's policy (an unknown value, which validation rejects, counts as `Always`).
    pub fn of_pod(pod: &Pod) -> Self {
        let value = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref());
        Self::parse(value).unwrap_or_default()
    }

    /// Whether a regular container that exited with `exit_code` is started again.
    pub fn restarts_container(self, exit_code: i32) -> bool {
        match self {
            Self::Always => true,
            Self::OnFailure => exit_code != 0,
            Self::Never => false,
        }
    }

    /// Whether an init container that exited with `exit_code` is run again: only after a
    /// failure, and not under `Never` (where a failed init container fails the pod).
    pub fn restarts_init_container(self, exit_code: i32) -> bool {
        exit_code != 0 && self != Self::Never
    }
}

/// The back-off record of one container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackOff {
    delay: Option<SignedDuration>,
    last_restart: Option<Timestamp>,
}

impl BackOff {
    /// The current delay, once a restart has been recorded.
    pub fn delay(&self) -> Option<SignedDuration> {
        self.delay
    }

    /// Whether the container ran long enough since its last restart to forget the back-off.
    fn expired(&self, finished_at: Timestamp) -> bool {
        self.last_restart
            .is_none_or(|restart| finished_at.duration_since(restart) > STABLE_RUN)
    }

    /// When the container that exited at `finished_at` may start again, if that is after `now`.
    pub fn waiting_until(&self, finished_at: Timestamp, now: Timestamp) -> Option<Timestamp> {
        let delay = self.delay?;
        if self.expired(finished_at) || now.duration_since(finished_at) >= delay {
            return None;
        }
        finished_at.checked_add(delay).ok()
    }

    /// The record after restarting, at `now`, a container that exited at `finished_at`.
    pub fn after_restart(&self, finished_at: Timestamp, now: Timestamp) -> Self {
        let delay = match self.delay {
            Some(delay) if !self.expired(finished_at) => (delay * 2).min(MAX_BACK_OFF),
            _ => INITIAL_BACK_OFF,
        };
        Self {
            delay: Some(delay),
            last_restart: Some(now),
        }
    }
}

/// How a container exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitFacts {
    /// Its exit code.
    pub exit_code: i32,
    /// When it exited.
    pub finished_at: Timestamp,
}

/// What to do with a container that exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartDecision {
    /// Leave it terminated.
    Stay,
    /// Start it now; keep the new back-off record.
    RestartNow {
        /// The record to keep from now on.
        back_off: BackOff,
    },
    /// Wait: report it as waiting with [`CRASH_LOOP_BACK_OFF`] and this message.
    Wait {
        /// When it may start again.
        until: Timestamp,
        /// The kubelet's message, e.g.
        /// `back-off 20s restarting failed container=app pod=web_default(uid)`.
        message: String,
    },
}

/// Decides about a container that exited, under `restart_wanted` (from
/// [`RestartPolicy::restarts_container`] or [`RestartPolicy::restarts_init_container`]).
/// `pod_label` names the pod in messages (see [`pod_label`]).
pub fn decide_restart(
    restart_wanted: bool,
    exit: ExitFacts,
    back_off: &BackOff,
    now: Timestamp,
    container: &str,
    pod_label: &str,
) -> RestartDecision {
    if !restart_wanted {
        return RestartDecision::Stay;
    }
    match (
        back_off.waiting_until(exit.finished_at, now),
        back_off.delay,
    ) {
        (Some(until), Some(delay)) => RestartDecision::Wait {
            until,
            message: format!(
                "back-off {} restarting failed container={container} pod={pod_label}",
                go_duration(delay)
            ),
        },
        _ => RestartDecision::RestartNow {
            back_off: back_off.after_restart(exit.finished_at, now),
        },
    }
}

/// The kubelet's way of naming a pod in messages: `name_namespace(uid)`.
pub fn pod_label(name: &str, namespace: &str, uid: &str) -> String {
    format!("{name}_{namespace}({uid})")
}

/// A whole-second duration written as Go prints it: `10s`, `1m20s`, `5m0s`, `1h0m0s`.
pub fn go_duration(duration: SignedDuration) -> String {
    let total = duration.as_secs();
    let (hours, minutes, seconds) = (total / 3600, total % 3600 / 60, total % 60);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, _) => format!("{minutes}m{seconds}s"),
        _ => format!("{hours}h{minutes}m{seconds}s"),
    }
}

/// What is known of an init container's latest run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitRun {
    /// Never started.
    NotStarted,
    /// Running now (for a sidecar: started).
    Running,
    /// Running, but not started yet: a sidecar whose `startupProbe` has not succeeded. The
    /// next init container waits for it.
    Starting,
    /// Exited with this code.
    Exited(i32),
}

/// The next thing to do about init containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitStep {
    /// Start the init container at this index (first run).
    Start(usize),
    /// Wait for the init container at this index, which is running.
    WaitFor(usize),
    /// Restart (subject to back-off) the init container at this index, which failed.
    Retry(usize),
    /// The init container at this index failed under `restartPolicy: Never`: the pod fails.
    PodFailed(usize),
    /// Every init container has completed (sidecars: started); start the regular containers.
    Done,
}

/// Walks the init containers in order: each must succeed (a sidecar: be running) before the
/// next one starts. `run_of` tells what is known of each by name.
pub fn next_init_step(pod: &Pod, run_of: impl Fn(&str) -> InitRun) -> InitStep {
    let policy = RestartPolicy::of_pod(pod);
    let init_containers = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten());
    for (index, container) in init_containers.enumerate() {
        match (is_sidecar(container), run_of(&container.name)) {
            (_, InitRun::NotStarted) => return InitStep::Start(index),
            (_, InitRun::Starting) => return InitStep::WaitFor(index),
            (true, InitRun::Running) => {}
            (true, InitRun::Exited(_)) => return InitStep::Retry(index),
            (false, InitRun::Running) => return InitStep::WaitFor(index),
            (false, InitRun::Exited(0)) => {}
            (false, InitRun::Exited(code)) if policy.restarts_init_container(code) => {
                return InitStep::Retry(index);
            }
            (false, InitRun::Exited(_)) => return InitStep::PodFailed(index),
        }
    }
    InitStep::Done
}

/// Whether an init container is a sidecar (`restartPolicy: Always`).
pub fn is_sidecar(container: &Container) -> bool {
    container.restart_policy.as_deref() == Some("Always")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    #[test]
    fn parses_policies() {
        let cases = [
            (None, Ok(RestartPolicy::Always)),
            (Some(""), Ok(RestartPolicy::Always)),
            (Some("Always"), Ok(RestartPolicy::Always)),
            (Some("OnFailure"), Ok(RestartPolicy::OnFailure)),
            (Some("Never"), Ok(RestartPolicy::Never)),
            (
                Some("always"),
                Err(RestartError::UnknownPolicy("always".into())),
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(RestartPolicy::parse(value), expected, "{value:?}");
        }
    }

    #[test]
    fn decides_whether_to_restart() {
        use RestartPolicy::*;
        // (policy, exit code, regular container restarts, init container restarts)
        let cases = [
            (Always, 0, true, false),
            (Always, 1, true, true),
            (OnFailure, 0, false, false),
            (OnFailure, 137, true, true),
            (Never, 0, false, false),
            (Never, 1, false, false),
        ];
        for (policy, code, regular, init) in cases {
            assert_eq!(
                policy.restarts_container(code),
                regular,
                "{policy:?} {code}"
            );
            assert_eq!(
                policy.restarts_init_container(code),
                init,
                "{policy:?} {code} init"
            );
        }
    }

    #[test]
    fn formats_go_durations() {
        let cases = [
            (0, "0s"),
            (10, "10s"),
            (59, "59s"),
            (60, "1m0s"),
            (80, "1m20s"),
            (160, "2m40s"),
            (300, "5m0s"),
            (3600, "1h0m0s"),
            (3725, "1h2m5s"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(go_duration(SignedDuration::from_secs(seconds)), expected);
        }
    }

    /// A container that crashes `run` seconds after each start; the restarter acts as soon as
    /// it is allowed. Returns the delays reported while waiting, in order.
    fn crash_loop(runs: &[i64]) -> Vec<Option<String>> {
        let mut back_off = BackOff::default();
        let mut now = at(0);
        let mut reported = Vec::new();
        for run in runs {
            let exit = ExitFacts {
                exit_code: 1,
                finished_at: now.checked_add(SignedDuration::from_secs(*run)).unwrap(),
            };
            now = exit.finished_at;
            let mut waited = None;
            loop {
                match decide_restart(true, exit, &back_off, now, "app", "web_default(u1)") {
                    RestartDecision::RestartNow { back_off: next } => {
                        back_off = next;
                        break;
                    }
                    RestartDecision::Wait { until, message } => {
                        waited = Some(message);
                        now = until;
                    }
                    RestartDecision::Stay => unreachable!(),
                }
            }
            reported.push(waited.map(|m| m.split(' ').nth(1).unwrap_or_default().to_string()));
        }
        reported
    }

    #[test]
    fn backs_off_doubling_to_five_minutes() {
        let delays = crash_loop(&[1; 9]);
        let expected = [
            None,
            Some("10s"),
            Some("20s"),
            Some("40s"),
            Some("1m20s"),
            Some("2m40s"),
            Some("5m0s"),
            Some("5m0s"),
            Some("5m0s"),
        ];
        assert_eq!(delays, expected.map(|d| d.map(String::from)).to_vec());
    }

    #[test]
    fn a_long_run_resets_the_back_off() {
        let delays = crash_loop(&[1, 1, 1, 601, 1, 1]);
        let expected = [
            None,
            Some("10s"),
            Some("20s"),
            None,
            Some("10s"),
            Some("20s"),
        ];
        assert_eq!(delays, expected.map(|d| d.map(String::from)).to_vec());
        // Exactly ten minutes is not yet "longer than" ten minutes.
        let kept = crash_loop(&[1, 1, 600]);
        assert_eq!(kept[2].as_deref(), Some("20s"));
    }

    #[test]
    fn reports_the_kubelets_message() {
        let back_off = BackOff::default().after_restart(at(0), at(0));
        let exit = ExitFacts {
            exit_code: 2,
            finished_at: at(5),
        };
        let decision = decide_restart(
            true,
            exit,
            &back_off,
            at(6),
            "app",
            &pod_label("web", "default", "u1"),
        );
        assert_eq!(
            decision,
            RestartDecision::Wait {
                until: at(15),
                message: "back-off 10s restarting failed container=app pod=web_default(u1)".into()
            }
        );
        assert_eq!(
            decide_restart(false, exit, &back_off, at(6), "app", "p"),
            RestartDecision::Stay
        );
        assert!(matches!(
            decide_restart(true, exit, &back_off, at(15), "app", "p"),
            RestartDecision::RestartNow { .. }
        ));
    }

    fn pod(spec_yaml: &str) -> Pod {
        serde_yaml::from_str(&format!("metadata: {{name: p}}\nspec:\n{spec_yaml}")).unwrap()
    }

    #[test]
    fn walks_init_containers_in_order() {
        use InitRun::*;
        let always = "  initContainers:\n  - {name: a, image: i}\n  - {name: b, image: i}\n  containers:\n  - {name: c, image: i}\n";
        let never = "  restartPolicy: Never\n  initContainers:\n  - {name: a, image: i}\n  - {name: b, image: i}\n  containers:\n  - {name: c, image: i}\n";
        let sidecar = "  initContainers:\n  - {name: a, image: i, restartPolicy: Always}\n  - {name: b, image: i}\n  containers:\n  - {name: c, image: i}\n";
        let none = "  containers:\n  - {name: c, image: i}\n";
        let cases: &[(&str, [InitRun; 2], InitStep)] = &[
            (always, [NotStarted, NotStarted], InitStep::Start(0)),
            (always, [Running, NotStarted], InitStep::WaitFor(0)),
            (always, [Exited(0), NotStarted], InitStep::Start(1)),
            (always, [Exited(1), NotStarted], InitStep::Retry(0)),
            (always, [Exited(0), Running], InitStep::WaitFor(1)),
            (always, [Exited(0), Exited(3)], InitStep::Retry(1)),
            (always, [Exited(0), Exited(0)], InitStep::Done),
            (never, [Exited(1), NotStarted], InitStep::PodFailed(0)),
            (never, [Exited(0), Exited(2)], InitStep::PodFailed(1)),
            (never, [Exited(0), Exited(0)], InitStep::Done),
            (sidecar, [NotStarted, NotStarted], InitStep::Start(0)),
            (sidecar, [Running, NotStarted], InitStep::Start(1)),
            (sidecar, [Starting, NotStarted], InitStep::WaitFor(0)),
            (sidecar, [Exited(0), NotStarted], InitStep::Retry(0)),
            (sidecar, [Running, Exited(0)], InitStep::Done),
            (none, [NotStarted, NotStarted], InitStep::Done),
        ];
        for (spec, runs, expected) in cases {
            let pod = pod(spec);
            let run_of = |name: &str| if name == "a" { runs[0] } else { runs[1] };
            assert_eq!(next_init_step(&pod, run_of), *expected, "{spec} {runs:?}");
        }
    }
}
