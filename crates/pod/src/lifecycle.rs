//! Pod lifetime limits: `activeDeadlineSeconds` and the termination grace period.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The pod status reason when the active deadline passed.
pub const DEADLINE_EXCEEDED_REASON: &str = "DeadlineExceeded";
/// The pod status message when the active deadline passed.
pub const DEADLINE_EXCEEDED_MESSAGE: &str =
    "Pod was active on the node longer than the specified deadline";
/// The grace period when neither the pod nor its deletion gives one (the API default).
pub const DEFAULT_GRACE_PERIOD: SignedDuration = SignedDuration::from_secs(30);
/// The shortest grace period the kubelet gives a container, unless overridden.
pub const MINIMUM_GRACE_PERIOD: SignedDuration = SignedDuration::from_secs(2);

/// Why the pod is made to fail from the node's side (reason and message of its status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFailure {
    /// The status reason, e.g. `DeadlineExceeded`.
    pub reason: String,
    /// The status message.
    pub message: String,
}

/// `Some` when the pod, started at `start_time`, has been active for at least
/// `spec.activeDeadlineSeconds` at `now`.
pub fn active_deadline_exceeded(
    pod: &Pod,
    start_time: Option<Timestamp>,
    now: Timestamp,
) -> Option<PodFailure> {
    let deadline = pod.spec.as_ref()?.active_deadline_seconds?;
    let active_for = now.duration_since(start_time?);
    (active_for >= SignedDuration::from_secs(deadline)).then(|| PodFailure {
        reason: DEADLINE_EXCEEDED_REASON.to_string(),
        message: DEADLINE_EXCEEDED_MESSAGE.to_string(),
    })
}

/// How long containers get between the stop signal and the kill: the deletion's grace period,
/// else `spec.terminationGracePeriodSeconds`, else 30 s; at least 2 s; an explicit `override_`
/// (a forced or eviction kill) wins over all of that.
pub fn termination_grace_period(pod: &Pod, override_: Option<i64>) -> SignedDuration {
    if let Some(seconds) = override_ {
        return SignedDuration::from_secs(seconds.max(0));
    }
    let from_spec = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds);
    pod.metadata
        .deletion_grace_period_seconds
        .or(from_spec)
        .map_or(DEFAULT_GRACE_PERIOD, SignedDuration::from_secs)
        .max(MINIMUM_GRACE_PERIOD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    fn pod(deadline: Option<i64>, grace: Option<i64>, deletion_grace: Option<i64>) -> Pod {
        let mut pod = Pod {
            spec: Some(PodSpec {
                active_deadline_seconds: deadline,
                termination_grace_period_seconds: grace,
                ..Default::default()
            }),
            ..Default::default()
        };
        pod.metadata.deletion_grace_period_seconds = deletion_grace;
        pod
    }

    #[test]
    fn checks_the_active_deadline() {
        let cases = [
            (None, Some(at(0)), at(1000), false),
            (Some(60), None, at(1000), false),
            (Some(60), Some(at(0)), at(59), false),
            (Some(60), Some(at(0)), at(60), true),
            (Some(60), Some(at(0)), at(61), true),
        ];
        for (deadline, start, now, exceeded) in cases {
            let failure = active_deadline_exceeded(&pod(deadline, None, None), start, now);
            assert_eq!(
                failure.is_some(),
                exceeded,
                "{deadline:?} {start:?} {now:?}"
            );
            if let Some(failure) = failure {
                assert_eq!(failure.reason, "DeadlineExceeded");
                assert_eq!(
                    failure.message,
                    "Pod was active on the node longer than the specified deadline"
                );
            }
        }
    }

    #[test]
    fn resolves_grace_periods() {
        let cases = [
            (None, None, None, 30),
            (Some(10), None, None, 10),
            (Some(10), Some(5), None, 5),
            (Some(10), Some(0), None, 2),
            (Some(1), None, None, 2),
            (Some(10), Some(5), Some(0), 0),
            (Some(10), None, Some(1), 1),
            (None, None, Some(-3), 0),
        ];
        for (spec, deletion, override_, expected) in cases {
            let period = termination_grace_period(&pod(None, spec, deletion), override_);
            assert_eq!(
                period,
                SignedDuration::from_secs(expected),
                "{spec:?} {deletion:?} {override_:?}"
            );
        }
    }
}
