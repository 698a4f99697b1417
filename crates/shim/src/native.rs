//! Native containers in a wasm pod (a mesh proxy, a log shipper, any sidecar): a container
//! whose entrypoint is a native executable runs through the machine's OCI runtime, `runc`,
//! from its own bundle, with the same task API as a wasm container (its output on
//! containerd's FIFOs, its exit code, kill, stats).
//!
//! A pod's containers name the sandbox's namespaces through the sandbox task's pid, which is
//! this shim's own (its sandbox runs no process): before `runc create` the bundle's spec is
//! rewritten so that the network namespace is the one the sandbox's spec named (where the
//! CNI plugins put the pod's interface, so the sidecar shares the pod IP and `localhost`
//! with the wasm containers; a host-network pod's stays the shim's, the host's), and the
//! other namespaces naming this process (IPC, UTS, PID) become the container's own rather
//! than the host's that the shim lives in.
//!
//! The container's init process outlives `runc create`; the shim becomes a child subreaper
//! so that it is reparented to the shim, which waits for it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tokio::sync::watch;

/// Errors of running a native container.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bundle's spec could not be read or written.
    #[error("the native container's spec {path}: {reason}")]
    Spec {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `runc` failed.
    #[error("runc {action} {id}: {reason}")]
    Runc {
        /// The subcommand.
        action: &'static str,
        /// The container.
        id: String,
        /// Its output or the error starting it.
        reason: String,
    },
    /// The shim cannot adopt the container's process.
    #[error("cannot become the child subreaper of native containers: {0}")]
    Subreaper(std::io::Error),
}

/// The OCI runtime the shim runs native containers with: `$WASMLET_SHIM_RUNC`, else `runc`
/// on the PATH.
pub fn runc_binary() -> PathBuf {
    std::env::var_os("WASMLET_SHIM_RUNC")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("runc"))
}

/// A native container created by `runc`, until deleted.
pub struct Native {
    id: String,
    runc: PathBuf,
    /// runc's state folder for this shim's containers.
    root: PathBuf,
    pid: u32,
    exit: watch::Sender<Option<i32>>,
}

impl Native {
    /// Creates container `id` from `bundle` (its spec rewritten for the pod, see the
    /// [module docs](self)), its stdout and stderr going to `stdout` and `stderr`; `runc`'s
    /// state lives in `root`.
    pub fn create(
        id: &str,
        bundle: &Path,
        root: &Path,
        sandbox_netns: Option<&Path>,
        (stdout, stderr): (Stdio, Stdio),
    ) -> Result<Native, Error> {
        rewrite_spec(&bundle.join("config.json"), sandbox_netns)?;
        become_subreaper()?;
        let runc = runc_binary();
        let pid_file = bundle.join("native.pid");
        let output = Command::new(&runc)
            .arg("--root")
            .arg(root)
            .args(["create", "--bundle"])
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .output();
        check("create", id, output)?;
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| Error::Runc {
                action: "create",
                id: id.into(),
                reason: format!("no pid in {}", pid_file.display()),
            })?;
        Ok(Native {
            id: id.into(),
            runc,
            root: root.into(),
            pid,
            exit: watch::channel(None).0,
        })
    }

    /// The container's init process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Starts the container's process; its exit code comes on [`Native::exited`].
    pub fn start(&self) -> Result<(), Error> {
        let waiter = self.exit.clone();
        let pid = self.pid;
        std::thread::Builder::new()
            .name(format!("wait-{pid}"))
            .spawn(move || waiter.send_replace(Some(wait_for(pid))))
            .map_err(|e| self.runc_err("start", e.to_string()))?;
        self.runc(&["start", &self.id], "start")
    }

    /// The exit code once the process has ended (`128 + signal` for a signal).
    pub fn exited(&self) -> watch::Receiver<Option<i32>> {
        self.exit.subscribe()
    }

    /// Sends `signal` to the container's init process.
    pub fn kill(&self, signal: u32) -> Result<(), Error> {
        self.runc(&["kill", &self.id, &signal.to_string()], "kill")
    }

    /// Removes the container (its process killed if it still runs).
    pub fn delete(&self) -> Result<(), Error> {
        self.runc(&["delete", "--force", &self.id], "delete")
    }

    fn runc(&self, args: &[&str], action: &'static str) -> Result<(), Error> {
        let output = Command::new(&self.runc)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .output();
        check(action, &self.id, output)
    }

    fn runc_err(&self, action: &'static str, reason: String) -> Error {
        Error::Runc {
            action,
            id: self.id.clone(),
            reason,
        }
    }
}

fn check(
    action: &'static str,
    id: &str,
    output: std::io::Result<std::process::Output>,
) -> Result<(), Error> {
    let err = |reason: String| Error::Runc {
        action,
        id: id.into(),
        reason,
    };
    let output = output.map_err(|e| err(format!("cannot run {}: {e}", runc_binary().display())))?;
    match output.status.success() {
        true => Ok(()),
        false => Err(err(String::from_utf8_lossy(&output.stderr)
            .trim()
            .to_owned())),
    }
}

/// Waits for process `pid` (a child of this process once reparented) and returns its exit
/// code, `128 + signal` when a signal ended it.
fn wait_for(pid: u32) -> i32 {
    let Ok(pid) = i32::try_from(pid) else {
        return 255;
    };
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes only into `status`, a local it is given a valid pointer to.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        if waited == pid {
            break;
        }
        if waited < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return 255;
        }
    }
    if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }
}

/// Makes this process the subreaper of its descendants (once): the containers' init
/// processes, orphaned when `runc create` exits, become its children.
pub(crate) fn become_subreaper() -> Result<(), Error> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes one integer argument and changes only this
    // process's attribute.
    let done = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    match done {
        0 => Ok(()),
        _ => Err(Error::Subreaper(std::io::Error::last_os_error())),
    }
}

/// Rewrites the namespaces of the spec at `path` that name this process (see the
/// [module docs](self)).
fn rewrite_spec(path: &Path, sandbox_netns: Option<&Path>) -> Result<(), Error> {
    let bad = |reason: String| Error::Spec {
        path: path.into(),
        reason,
    };
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut spec: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    if let Some(namespaces) = spec
        .pointer_mut("/linux/namespaces")
        .and_then(|n| n.as_array_mut())
    {
        for ns in namespaces.iter_mut() {
            rewrite_namespace(ns, sandbox_netns);
        }
    }
    let text = serde_json::to_vec(&spec).map_err(|e| bad(e.to_string()))?;
    let temporary = path.with_extension("json.native");
    std::fs::write(&temporary, text).map_err(|e| bad(e.to_string()))?;
    std::fs::rename(&temporary, path).map_err(|e| bad(e.to_string()))
}

fn rewrite_namespace(ns: &mut serde_json::Value, sandbox_netns: Option<&Path>) {
    let own = format!("/proc/{}/", std::process::id());
    let names_us = ns["path"]
        .as_str()
        .is_some_and(|p| p.starts_with(&own) || p.starts_with("/proc/self/"));
    if !names_us {
        return;
    }
    let Some(object) = ns.as_object_mut() else {
        return;
    };
    match (object.get("type").and_then(|t| t.as_str()), sandbox_netns) {
        (Some("network"), Some(pod)) => {
            object.insert("path".into(), pod.to_string_lossy().into_owned().into());
        }
        // A host-network pod's sandbox is in the shim's own network namespace: keep it.
        (Some("network"), None) => {}
        _ => {
            object.remove("path");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_naming_the_shim_become_the_pods_or_the_containers_own() {
        let own = std::process::id();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let spec = serde_json::json!({
            "ociVersion": "1.1.0",
            "process": {"args": ["/bin/sh"]},
            "linux": {"namespaces": [
                {"type": "pid", "path": format!("/proc/{own}/ns/pid")},
                {"type": "ipc", "path": format!("/proc/{own}/ns/ipc")},
                {"type": "uts", "path": format!("/proc/{own}/ns/uts")},
                {"type": "network", "path": format!("/proc/{own}/ns/net")},
                {"type": "mount"},
                {"type": "cgroup", "path": "/proc/1/ns/cgroup"}
            ]}
        });
        std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
        rewrite_spec(&path, Some(Path::new("/var/run/netns/cni-42"))).unwrap();
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let ns = written["linux"]["namespaces"].as_array().unwrap();
        assert_eq!(ns[0], serde_json::json!({"type": "pid"}));
        assert_eq!(ns[1], serde_json::json!({"type": "ipc"}));
        assert_eq!(ns[2], serde_json::json!({"type": "uts"}));
        assert_eq!(ns[3]["path"], "/var/run/netns/cni-42");
        assert_eq!(ns[4], serde_json::json!({"type": "mount"}));
        assert_eq!(
            ns[5]["path"], "/proc/1/ns/cgroup",
            "others are left as they are"
        );
        assert_eq!(written["process"]["args"][0], "/bin/sh", "the rest is kept");
    }
}
