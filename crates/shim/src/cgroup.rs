//! The pod's cgroup for the shim process: one shim process runs every container of a pod,
//! so it joins the cgroup the kubelet chose for the pod's sandbox (`linux.cgroupsPath` of the
//! sandbox's spec, under the pod's cgroup), and the kubelet's summary, eviction and
//! node-allocatable accounting count the pod's memory and CPU there, as they count a runc
//! pod's. Per-container limits stay with wasmlet's runtime (memory limits, the descriptor
//! budget), which applies them per guest.
//!
//! Both drivers are understood: a cgroupfs path (`/kubepods/burstable/pod<uid>/<id>`) and a
//! systemd one (`kubepods-burstable-pod<uid>.slice:cri-containerd:<id>`, which names
//! `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope`).
//! The process joins that path in every mounted hierarchy: each cgroup v1 controller, and the
//! v2 one (alone, or the `unified` one of a hybrid host). When the sandbox goes, the process
//! moves back to where it was and the directories it made are removed, so the kubelet can
//! remove the pod's cgroup.

use std::path::{Component, Path, PathBuf};

/// Errors joining the pod's cgroup.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec's cgroups path cannot be used.
    #[error("cgroups path {path:?}: {reason}")]
    Path {
        /// The path as the spec gives it.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A cgroup file or directory could not be written.
    #[error("cgroup {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Its `cpuset` controller (a v1 cpuset needs its CPUs and memory nodes set before a
    /// process may join).
    pub cpuset_v1: bool,
}

/// The cgroup hierarchies `/proc/self/mountinfo` lists (`cgroup` and `cgroup2` mounts).
pub fn hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    let mut found = Vec::new();
    for line in mountinfo.lines() {
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let mut fields = after.split_whitespace();
        let (fstype, _source, options) = (fields.next(), fields.next(), fields.next());
        let Some(mount_point) = before.split_whitespace().nth(4) else {
            continue;
        };
        let cpuset_v1 = match fstype {
            Some("cgroup") => options
                .unwrap_or_default()
                .split(',')
                .any(|o| o == "cpuset"),
            Some("cgroup2") => false,
            _ => continue,
        };
        found.push(Hierarchy {
            mount_point: mount_point.into(),
            cpuset_v1,
        });
    }
    found
}

/// The cgroup a `linux.cgroupsPath` names, as a path from a hierarchy's root.
pub fn cgroup_of(cgroups_path: &str) -> Result<PathBuf, Error> {
    let bad = |reason| Error::Path {
        path: cgroups_path.into(),
        reason,
    };
    let path = match cgroups_path.split(':').collect::<Vec<_>>()[..] {
        [slice, prefix, name] => systemd_path(slice, prefix, name)
            .ok_or_else(|| bad("not a systemd slice:prefix:name"))?,
        [_] => PathBuf::from(cgroups_path),
        _ => return Err(bad("neither a path nor slice:prefix:name")),
    };
    let plain = path
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !path.is_absolute() || !plain || path == Path::new("/") {
        return Err(bad(
            "must be an absolute path of plain names below the root",
        ));
    }
    Ok(path)
}

/// The CPUs a cgroup may use by its bandwidth limit, rounded up (at least one): v2's
/// `cpu.max` (`QUOTA PERIOD`, or `max`), v1's `cpu.cfs_quota_us` (`-1` for none) over
/// `cpu.cfs_period_us`, read in each hierarchy of `hierarchies` at `cgroup`. `None` when no
/// hierarchy limits it.
pub fn cpu_limit(hierarchies: &[Hierarchy], cgroup: &Path) -> Option<usize> {
    let relative = cgroup.strip_prefix("/").unwrap_or(cgroup);
    hierarchies.iter().find_map(|h| {
        let dir = h.mount_point.join(relative);
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
        let (quota, period) = match read("cpu.max") {
            Some(max) => {
                let mut fields = max.split_whitespace();
                (
                    fields.next()?.parse::<u64>().ok()?,
                    fields.next()?.parse::<u64>().ok()?,
                )
            }
            None => {
                let quota = read("cpu.cfs_quota_us")?.trim().parse::<i64>().ok()?;
                let period = read("cpu.cfs_period_us")?.trim().parse::<u64>().ok()?;
                (u64::try_from(quota).ok()?, period)
            }
        };
        (quota > 0 && period > 0).then(|| usize::try_from(quota.div_ceil(period)).unwrap_or(1))
    })
}

/// `a-b.slice`, `prefix`, `name` -> `/a.slice/a-b.slice/prefix-name.scope` (systemd's
/// expansion of a slice name into its parents).
fn systemd_path(slice: &str, prefix: &str, name: &str) -> Option<PathBuf> {
    let mut path = PathBuf::from("/");
    if !slice.is_empty() && slice != "-.slice" {
        let stem = slice.strip_suffix(".slice")?;
        let parts: Vec<&str> = stem.split('-').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return None;
        }
        for end in 1..=parts.len() {
            path.push(format!("{}.slice", parts[..end].join("-")));
        }
    }
    let unit = match (prefix, name.ends_with(".slice")) {
        (_, true) => name.to_owned(),
        ("", false) => format!("{name}.scope"),
        (prefix, false) => format!("{prefix}-{name}.scope"),
    };
    if unit.contains('/') || unit.starts_with('.') {
        return None;
    }
    path.push(unit);
    Some(path)
}

/// Where the process was, and what it made, so it can leave.
#[derive(Debug, Default)]
pub struct Joined {
    /// The process's previous cgroup directory in each hierarchy.
    previous: Vec<PathBuf>,
    /// The directories made for the pod, deepest last.
    made: Vec<PathBuf>,
}

/// Moves this process into `cgroup` (see [`cgroup_of`]) in every hierarchy.
pub fn join(cgroup: &Path) -> Result<Joined, Error> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io(Path::new("/proc/self/mountinfo")))?;
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut joined = Joined::default();
    for hierarchy in hierarchies(&mountinfo) {
        let relative = cgroup.strip_prefix("/").unwrap_or(cgroup);
        let dir = hierarchy.mount_point.join(relative);
        joined.made.extend(make_dirs(&hierarchy.mount_point, &dir)?);
        if hierarchy.cpuset_v1 {
            inherit_cpuset(&hierarchy.mount_point, &dir)?;
        }
        if let Some(previous) = current_dir(&hierarchy, &own) {
            joined.previous.push(previous);
        }
        let procs = dir.join("cgroup.procs");
        std::fs::write(&procs, std::process::id().to_string()).map_err(io(&procs))?;
    }
    Ok(joined)
}

impl Joined {
    /// Moves the process back to its previous cgroups and removes the directories it made
    /// (a directory still holding another process stays). Failures are logged.
    pub fn leave(self) {
        for previous in &self.previous {
            let procs = previous.join("cgroup.procs");
            if let Err(err) = std::fs::write(&procs, std::process::id().to_string()) {
                log::warn!("cannot move back to {}: {err}", previous.display());
            }
        }
        for dir in self.made.iter().rev() {
            if let Err(err) = std::fs::remove_dir(dir) {
                log::warn!("cannot remove cgroup {}: {err}", dir.display());
            }
        }
    }
}

/// Makes `dir` and its missing parents below `root`; returns those it made, outermost first.
fn make_dirs(root: &Path, dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut missing = Vec::new();
    let mut cursor = dir.to_path_buf();
    while cursor != root && !cursor.exists() {
        missing.push(cursor.clone());
        if !cursor.pop() {
            break;
        }
    }
    missing.reverse();
    for path in &missing {
        match std::fs::create_dir(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(Error::Io {
                    path: path.clone(),
                    source,
                });
            }
        }
    }
    Ok(missing)
}

/// A new v1 cpuset has no CPUs or memory nodes: each directory from the root down takes its
/// parent's, as runc sets them.
fn inherit_cpuset(root: &Path, dir: &Path) -> Result<(), Error> {
    let Ok(relative) = dir.strip_prefix(root) else {
        return Ok(());
    };
    let mut parent = root.to_path_buf();
    for part in relative.components() {
        let child = parent.join(part);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let mine = std::fs::read_to_string(child.join(file)).unwrap_or_default();
            if mine.trim().is_empty() {
                let theirs = std::fs::read_to_string(parent.join(file)).unwrap_or_default();
                let path = child.join(file);
                std::fs::write(&path, theirs.trim())
                    .map_err(|source| Error::Io { path, source })?;
            }
        }
        parent = child;
    }
    Ok(())
}

/// This process's cgroup directory in `hierarchy`, from `/proc/self/cgroup`.
fn current_dir(hierarchy: &Hierarchy, own: &str) -> Option<PathBuf> {
    let mount_name = hierarchy
        .mount_point
        .file_name()?
        .to_string_lossy()
        .into_owned();
    let line = own.lines().find(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers) = (fields.next(), fields.next().unwrap_or_default());
        match controllers {
            "" => mount_name == "unified" || hierarchy.mount_point == Path::new("/sys/fs/cgroup"),
            list => list
                .split(',')
                .any(|c| c.trim_start_matches("name=") == mount_name),
        }
    })?;
    let path = line.splitn(3, ':').nth(2)?;
    Some(hierarchy.mount_point.join(path.trim_start_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
22 1 0:20 / /proc rw - proc proc rw";

    #[test]
    fn a_cpu_limit_is_read_from_v2_and_v1_files_and_rounded_up() {
        let root = tempfile::tempdir().unwrap();
        let (v2, v1) = (root.path().join("v2"), root.path().join("v1"));
        let pod = Path::new("/kubepods/pod1");
        let at = |h: &Path| h.join("kubepods/pod1");
        std::fs::create_dir_all(at(&v2)).unwrap();
        std::fs::create_dir_all(at(&v1)).unwrap();
        let hierarchy = |p: &Path| Hierarchy {
            mount_point: p.to_path_buf(),
            cpuset_v1: false,
        };
        let (only_v2, only_v1) = ([hierarchy(&v2)], [hierarchy(&v1)]);
        assert_eq!(cpu_limit(&only_v2, pod), None, "no files, no limit");
        std::fs::write(at(&v2).join("cpu.max"), "max 100000\n").unwrap();
        assert_eq!(cpu_limit(&only_v2, pod), None);
        std::fs::write(at(&v2).join("cpu.max"), "150000 100000\n").unwrap();
        assert_eq!(cpu_limit(&only_v2, pod), Some(2));
        std::fs::write(at(&v2).join("cpu.max"), "20000 100000\n").unwrap();
        assert_eq!(cpu_limit(&only_v2, pod), Some(1));
        std::fs::write(at(&v1).join("cpu.cfs_quota_us"), "-1\n").unwrap();
        std::fs::write(at(&v1).join("cpu.cfs_period_us"), "100000\n").unwrap();
        assert_eq!(cpu_limit(&only_v1, pod), None);
        std::fs::write(at(&v1).join("cpu.cfs_quota_us"), "300000\n").unwrap();
        assert_eq!(cpu_limit(&only_v1, pod), Some(3));
        // The first hierarchy that limits the cgroup answers.
        assert_eq!(
            cpu_limit(&[hierarchy(root.path()), hierarchy(&v1)], pod),
            Some(3)
        );
    }

    #[test]
    fn hierarchies_are_the_cgroup_mounts() {
        let found = hierarchies(HYBRID);
        let points: Vec<_> = found
            .iter()
            .map(|h| h.mount_point.display().to_string())
            .collect();
        assert_eq!(
            points,
            [
                "/sys/fs/cgroup/cpu",
                "/sys/fs/cgroup/cpuset",
                "/sys/fs/cgroup/memory",
                "/sys/fs/cgroup/systemd",
                "/sys/fs/cgroup/unified"
            ]
        );
        assert!(found[1].cpuset_v1 && !found[0].cpuset_v1 && !found[4].cpuset_v1);
        let v2 = hierarchies("30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate");
        assert_eq!(v2[0].mount_point, Path::new("/sys/fs/cgroup"));
    }

    #[test]
    fn cgroupfs_and_systemd_paths() {
        let cases = [
            (
                "/kubepods/besteffort/podab12/c0ffee",
                "/kubepods/besteffort/podab12/c0ffee",
            ),
            (
                "kubepods-burstable-podab12.slice:cri-containerd:c0ffee",
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podab12.slice/cri-containerd-c0ffee.scope",
            ),
            ("system.slice:docker:abc", "/system.slice/docker-abc.scope"),
            (":cri-containerd:abc", "/cri-containerd-abc.scope"),
        ];
        for (given, want) in cases {
            assert_eq!(cgroup_of(given).unwrap(), Path::new(want), "{given}");
        }
        for bad in [
            "relative/path",
            "/a/../../etc",
            "/",
            "a:b",
            "x.slice:p:../n",
            "a--b.slice:p:n",
        ] {
            assert!(cgroup_of(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_current_cgroup_of_each_hierarchy() {
        let own = "9:name=systemd:/\n4:memory:/process_api/5c\n1:cpu:/\n0::/user.slice\n";
        let dir = |mount: &str| {
            let h = Hierarchy {
                mount_point: mount.into(),
                cpuset_v1: false,
            };
            current_dir(&h, own).map(|p| p.display().to_string())
        };
        assert_eq!(
            dir("/sys/fs/cgroup/memory").as_deref(),
            Some("/sys/fs/cgroup/memory/process_api/5c")
        );
        assert_eq!(
            dir("/sys/fs/cgroup/systemd").as_deref(),
            Some("/sys/fs/cgroup/systemd/")
        );
        assert_eq!(
            dir("/sys/fs/cgroup/unified").as_deref(),
            Some("/sys/fs/cgroup/unified/user.slice")
        );
        assert_eq!(dir("/sys/fs/cgroup/pids"), None);
    }
}
