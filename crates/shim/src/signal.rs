//! What a signal sent to a task means for a WebAssembly guest, which has no signals.

/// A signal the shim cannot honour.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// Stop/continue job-control signals: a guest cannot be paused.
    #[error("signal {0} is not supported for wasm containers (they cannot be paused)")]
    Unsupported(u32),
}

/// What to do with the task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Signal 0: only checks that the task exists.
    Probe,
    /// A signal whose default action is to be ignored (`SIGCHLD`, `SIGWINCH`, ...).
    Ignore,
    /// A terminating signal: stop the guest after a short grace, exit status `128 + signal`.
    Terminate,
    /// `SIGKILL`: kill the guest now, exit status 137.
    Kill,
}

/// Maps a signal number to an action.
pub fn action(signal: u32) -> Result<Action, Error> {
    const SIGKILL: u32 = libc::SIGKILL as u32;
    const SIGCHLD: u32 = libc::SIGCHLD as u32;
    const SIGCONT: u32 = libc::SIGCONT as u32;
    const SIGURG: u32 = libc::SIGURG as u32;
    const SIGWINCH: u32 = libc::SIGWINCH as u32;
    const SIGSTOP: u32 = libc::SIGSTOP as u32;
    const SIGTSTP: u32 = libc::SIGTSTP as u32;
    const SIGTTIN: u32 = libc::SIGTTIN as u32;
    const SIGTTOU: u32 = libc::SIGTTOU as u32;
    match signal {
        0 => Ok(Action::Probe),
        SIGKILL => Ok(Action::Kill),
        SIGCHLD | SIGCONT | SIGURG | SIGWINCH => Ok(Action::Ignore),
        SIGSTOP | SIGTSTP | SIGTTIN | SIGTTOU => Err(Error::Unsupported(signal)),
        _ => Ok(Action::Terminate),
    }
}

/// The exit status of a task ended by `signal`, as a shell shows a process killed by it.
pub fn exit_status(signal: u32) -> u32 {
    128 + signal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_signals() {
        let cases = [
            (0, Ok(Action::Probe)),
            (9, Ok(Action::Kill)),
            (15, Ok(Action::Terminate)),
            (2, Ok(Action::Terminate)),
            (1, Ok(Action::Terminate)),
            (3, Ok(Action::Terminate)),
            (10, Ok(Action::Terminate)),
            (17, Ok(Action::Ignore)),
            (28, Ok(Action::Ignore)),
            (19, Err(Error::Unsupported(19))),
        ];
        for (signal, want) in cases {
            assert_eq!(action(signal), want, "signal {signal}");
        }
        assert_eq!(exit_status(15), 143);
        assert_eq!(exit_status(9), 137);
    }
}
