//! What to run: one container's argv, environment, directories, stdio and limits.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::log::LogConfig;
use crate::sockets::Network;

/// One container to run: the caller has already expanded argv and env (Kubernetes
/// `$(VAR)` references, ConfigMaps, Secrets); the runtime passes them through as given.
#[derive(Default)]
pub struct ContainerSpec {
    /// argv, program name first (e.g. `["hello.wasm", "a"]`).
    pub args: Vec<String>,
    /// Environment variables, in order.
    pub env: Vec<(String, String)>,
    /// The working directory the guest sees (`wasi:cli/environment.initial-cwd` for
    /// components; preview 1 has no such notion).
    pub working_dir: Option<String>,
    /// Host directories the guest may reach; nothing else on the host is reachable.
    pub preopens: Vec<Preopen>,
    /// Where stdout and stderr go.
    pub stdio: Stdio,
    /// Memory, time and fuel bounds.
    pub limits: Limits,
    /// `wasi:sockets` for a component, with binds held to the pod IP (see
    /// [`crate::sockets`]); `None` gives it no sockets. Only a program that
    /// [reaches a network](crate::Program::reaches_network) is given it.
    pub network: Option<Network>,
}

/// A host directory made visible to the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preopen {
    /// Directory on the host; must exist.
    pub host: PathBuf,
    /// Path under which the guest sees it (e.g. `/data` or `.`).
    pub guest: String,
    /// Refuse every write (files and directories) through this preopen.
    pub read_only: bool,
    /// An open handle on the directory, when it was resolved safely beforehand (a volume's
    /// `subPath`); `host` is then its `/proc/self/fd/N` path, which opens that very directory
    /// whatever has been renamed or linked on the way to it since.
    pub pinned: Option<PinnedDir>,
}

/// An open directory a [`Preopen`] refers to by `/proc/self/fd/N`: it stays open as long as
/// a clone of it is alive.
#[derive(Clone, Debug)]
pub struct PinnedDir(std::sync::Arc<std::os::fd::OwnedFd>);

impl PinnedDir {
    /// Pins `dir`: a descriptor of a directory (`O_PATH` is enough).
    pub fn new(dir: std::os::fd::OwnedFd) -> PinnedDir {
        PinnedDir(std::sync::Arc::new(dir))
    }

    /// The path through which the process opens the pinned directory.
    pub fn path(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}", self.0.as_raw_fd()))
    }
}

impl PartialEq for PinnedDir {
    fn eq(&self, other: &PinnedDir) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for PinnedDir {}

/// Destinations of the guest's stdout and stderr. Both may be set: the log gets CRI lines,
/// the tee gets the raw bytes as the guest writes them.
#[derive(Default)]
pub struct Stdio {
    /// A CRI-format log file with rotation (what `kubectl logs` reads).
    pub log: Option<LogConfig>,
    /// Raw copy of stdout (e.g. the terminal for `wasmlet run`).
    pub stdout_tee: Option<Box<dyn Write + Send + Sync>>,
    /// Raw copy of stderr.
    pub stderr_tee: Option<Box<dyn Write + Send + Sync>>,
    /// When the guest traps or passes a limit (`Trap`, `OOMKilled`, `DeadlineExceeded`; not
    /// `Killed`, which the caller asked for), write why as the last line of its stderr
    /// (`wasmlet: Trap (exit code 134): ...`), so its log and terminal say it as `wasmlet run
    /// FILE` does. Off by default: a caller that reports the status itself would say it twice.
    pub report_end: bool,
}

/// Bounds on one container. `Default` has none but the descriptor budget's default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of linear memory plus table elements (8 bytes each) the guest may hold;
    /// growing past it ends the container as `OOMKilled`.
    pub memory_bytes: Option<u64>,
    /// Wall-clock time the guest may run; past it the container ends as `DeadlineExceeded`.
    pub timeout: Option<Duration>,
    /// CPU in millicores (1000 = one core): past its share of each 100 ms period the guest
    /// is parked until the next (see [`crate::cpu`]).
    pub cpu_millis: Option<u64>,
    /// Fuel (roughly, wasm instructions) the guest may burn; needs
    /// [`RuntimeConfig::fuel`](crate::RuntimeConfig::fuel). Running out is a trap.
    pub fuel: Option<u64>,
    /// WASI handles the guest may hold at once (open files and directories, sockets and
    /// their streams); opening past it is a trap naming the budget. `None` is
    /// [`DEFAULT_DESCRIPTORS`](crate::budget::DEFAULT_DESCRIPTORS). See [`crate::budget`].
    pub descriptors: Option<u32>,
}

impl Preopen {
    /// Parses the `wasmlet run --dir` syntax: `host[:guest[:ro]]` (guest defaults to host).
    pub fn parse(text: &str) -> Preopen {
        let mut parts = text.splitn(3, ':');
        let host = parts.next().unwrap_or_default();
        let guest = parts.next().filter(|g| !g.is_empty()).unwrap_or(host);
        let read_only = parts.next() == Some("ro");
        Preopen {
            host: PathBuf::from(host),
            guest: guest.to_owned(),
            read_only,
            pinned: None,
        }
    }

    /// The error of this preopen for `reason`.
    pub(crate) fn error(&self, reason: String) -> crate::Error {
        crate::Error::Preopen {
            host: self.host.clone(),
            guest: self.guest.clone(),
            reason,
        }
    }

    /// Refuses a host path that is not a directory.
    pub(crate) fn check(&self) -> Result<(), crate::Error> {
        if !self.host.is_dir() {
            return Err(self.error("it does not exist or is not a directory".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dir_flags() {
        let cases = [
            ("data", "data", "data", false),
            ("/tmp/x:/x", "/tmp/x", "/x", false),
            ("/tmp/x:/x:ro", "/tmp/x", "/x", true),
            ("/tmp/x::ro", "/tmp/x", "/tmp/x", true),
        ];
        for (text, host, guest, ro) in cases {
            let p = Preopen::parse(text);
            assert_eq!(
                (p.host.to_str().unwrap(), p.guest.as_str(), p.read_only),
                (host, guest, ro),
                "{text}"
            );
        }
    }
}
