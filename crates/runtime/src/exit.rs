//! How a container ended: the exit code, a Kubernetes-style reason and a message.

use std::fmt;

/// Exit code reported for a trap, as a shell reports SIGABRT (128 + 6), like `wasmtime run`.
pub const TRAP_EXIT_CODE: i32 = 134;
/// Exit code reported when the container was killed (OOM, deadline, stop): 128 + SIGKILL,
/// as the kubelet shows for a killed process.
pub const KILLED_EXIT_CODE: i32 = 137;

/// Exit code of a WASI command or module ended by a stop request: 128 + SIGTERM, as a
/// process reports when SIGTERM's default action ends it (a WASI guest cannot catch it).
pub const TERMINATED_EXIT_CODE: i32 = 143;

/// Why a container ended, named as the kubelet names container termination reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitReason {
    /// Exit code 0.
    Completed,
    /// The guest exited with a non-zero code.
    Error,
    /// The guest trapped (e.g. `unreachable`, out of bounds, out of fuel) or a host call failed.
    Trap,
    /// The guest grew memory past its limit.
    OomKilled,
    /// The guest ran past its timeout.
    DeadlineExceeded,
    /// A stop or kill request ended the guest.
    Killed,
}

/// The final status of a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit code: the guest's own (`proc_exit(3)` is 3), or [`TRAP_EXIT_CODE`] or
    /// [`KILLED_EXIT_CODE`].
    pub code: i32,
    /// Why it ended.
    pub reason: ExitReason,
    /// The termination message (the trap text for traps).
    pub message: String,
}

impl ExitReason {
    /// The reason as Kubernetes shows it in `containerStatuses[].state.terminated.reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Completed => "Completed",
            ExitReason::Error => "Error",
            ExitReason::Trap => "Trap",
            ExitReason::OomKilled => "OOMKilled",
            ExitReason::DeadlineExceeded => "DeadlineExceeded",
            ExitReason::Killed => "Killed",
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ExitStatus {
    /// The status for a guest that exited by itself with `code`.
    pub fn exited(code: i32) -> ExitStatus {
        if code == 0 {
            let message = "Module run completed".to_owned();
            return ExitStatus {
                code,
                reason: ExitReason::Completed,
                message,
            };
        }
        let message = format!("exited with code {code}");
        ExitStatus {
            code,
            reason: ExitReason::Error,
            message,
        }
    }

    /// The status for a guest that trapped.
    pub fn trapped(message: String) -> ExitStatus {
        ExitStatus {
            code: TRAP_EXIT_CODE,
            reason: ExitReason::Trap,
            message,
        }
    }

    /// The status for a guest ended from outside (`OomKilled`, `DeadlineExceeded`, `Killed`).
    pub fn killed(reason: ExitReason, message: String) -> ExitStatus {
        ExitStatus {
            code: KILLED_EXIT_CODE,
            reason,
            message,
        }
    }

    /// The status for a command ended by a stop request ([`TERMINATED_EXIT_CODE`], reason
    /// `Error`, as the kubelet shows a process ended by SIGTERM).
    pub fn terminated(message: String) -> ExitStatus {
        ExitStatus {
            code: TERMINATED_EXIT_CODE,
            reason: ExitReason::Error,
            message,
        }
    }

    /// Whether the guest completed with code 0.
    pub fn success(&self) -> bool {
        self.reason == ExitReason::Completed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_reasons() {
        assert_eq!(ExitStatus::exited(0).reason, ExitReason::Completed);
        assert_eq!(
            ExitStatus::exited(3),
            ExitStatus {
                code: 3,
                reason: ExitReason::Error,
                message: "exited with code 3".into()
            }
        );
        assert_eq!(ExitStatus::trapped("x".into()).code, 134);
        assert_eq!(
            ExitStatus::killed(ExitReason::OomKilled, String::new()).code,
            137
        );
        assert_eq!(ExitReason::OomKilled.to_string(), "OOMKilled");
    }
}
