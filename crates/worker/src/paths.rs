//! Where a pod's files live on this machine: `<root>/pods/<uid>/`.
//!
//! ```text
//! <root>/pods/<uid>/volumes/<volume>/           emptyDir, configMap, secret, ... contents
//! <root>/pods/<uid>/logs/<container>/<n>.log    CRI log of run n (n = restart count)
//! ```
//! Everything of a pod is under one directory, so removing the pod removes it all; hostPath
//! volumes are the host's own directories and are never under it. The kubelet keeps logs
//! apart, under `/var/log/pods/<ns>_<name>_<uid>/<container>/<n>.log`; the file names and the
//! CRI format inside are the same. The current run's log and the previous one (what
//! `kubectl logs --previous` reads) are kept; older ones are removed.

use std::path::{Path, PathBuf};

/// Why a pod directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The UID would not make a single, plain directory name.
    #[error("pod UID {0:?} cannot name a directory: use letters, digits, '-', '_' and '.' only")]
    BadUid(String),
}

/// The directory of one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodDir {
    path: PathBuf,
}

impl PodDir {
    /// The directory of the pod with `uid` under `root` (`<root>/pods/<uid>`).
    pub fn new(root: &Path, uid: &str) -> Result<PodDir, Error> {
        let plain = uid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !plain || uid.is_empty() || uid.starts_with('.') {
            return Err(Error::BadUid(uid.to_owned()));
        }
        Ok(PodDir {
            path: root.join("pods").join(uid),
        })
    }

    /// The pod's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory of a pod volume (for emptyDir and file volumes).
    pub fn volume(&self, name: &str) -> PathBuf {
        self.path.join("volumes").join(name)
    }

    /// The directory of a container's logs.
    pub fn logs(&self, container: &str) -> PathBuf {
        self.path.join("logs").join(container)
    }

    /// The CRI log of a container's run number `restart_count` (0 for the first run).
    pub fn log(&self, container: &str, restart_count: i32) -> PathBuf {
        self.logs(container).join(format!("{restart_count}.log"))
    }

    /// Removes the logs of runs older than `keep_from` (and their rotated files).
    pub fn prune_logs(&self, container: &str, keep_from: i32) {
        let Ok(entries) = std::fs::read_dir(self.logs(container)) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let run = name
                .to_str()
                .and_then(|n| n.split('.').next())
                .and_then(|n| n.parse::<i32>().ok());
            if run.is_some_and(|n| n < keep_from) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Removes the pod's directory and everything in it (hostPath volumes are not in it),
    /// its memory-backed volumes unmounted first.
    pub fn remove(&self) -> std::io::Result<()> {
        if self.path.exists() {
            crate::tmpfs::unmount_under(&self.path)?;
        }
        match std::fs::remove_dir_all(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lays_out_a_pod() {
        let dir = PodDir::new(Path::new("/r"), "u-1").unwrap();
        assert_eq!(dir.volume("v"), Path::new("/r/pods/u-1/volumes/v"));
        assert_eq!(dir.log("c", 2), Path::new("/r/pods/u-1/logs/c/2.log"));
        for bad in ["", "..", "a/b", ".x", "a b"] {
            assert!(PodDir::new(Path::new("/r"), bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prunes_old_logs() {
        let root = tempfile::tempdir().unwrap();
        let dir = PodDir::new(root.path(), "u").unwrap();
        std::fs::create_dir_all(dir.logs("c")).unwrap();
        for name in ["0.log", "0.log.1", "1.log", "2.log"] {
            std::fs::write(dir.logs("c").join(name), "x").unwrap();
        }
        dir.prune_logs("c", 1);
        let mut left: Vec<_> = std::fs::read_dir(dir.logs("c"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["1.log", "2.log"]);
    }
}
