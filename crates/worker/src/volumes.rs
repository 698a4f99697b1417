//! Materialising a pod's volumes under its directory, and turning a container's mounts into
//! the runtime's preopened directories.
//!
//! - `emptyDir`: a directory under the pod directory, for the pod's lifetime. `medium: Memory`
//!   mounts a tmpfs on it, sized by `sizeLimit` or else the node's allocatable memory
//!   (`crate::tmpfs`; a plain directory when the worker may not mount). `sizeLimit` is also
//!   enforced by eviction (`crate::storage`).
//! - `hostPath`: the host directory itself, after the check (or creation) its `type` asks
//!   for. Only directories can be mounted: WASI preopens are directories.
//! - `configMap`, `secret`, `downwardAPI`, `projected`: files written atomically as the
//!   kubelet's atomic writer does: the files go to a fresh `..<stamp>` directory, the symlink
//!   `..data` is swapped to it in one rename, and each top-level entry is a symlink through
//!   `..data`. These volumes are always mounted read-only. Service account tokens of projected
//!   volumes are not written (there is no API server to ask for them).

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use wasmlet_pod::k8s_openapi::api::core::v1::Pod;
use wasmlet_pod::volume::{EmptyDirMedium, HostPathType, VolumeContent};
use wasmlet_pod::{
    ConfigObjects, FileToWrite, MountPlan, NodeFacts, VolumeError, VolumePlan, plan_volume,
};
use wasmlet_runtime::{PinnedDir, Preopen};

use crate::paths::PodDir;

/// Why a volume could not be set up or mounted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The volume's content could not be planned (e.g. a ConfigMap is missing).
    #[error("MountVolume.SetUp failed for volume {volume:?} : {source}")]
    Plan {
        /// The volume.
        volume: String,
        /// Why.
        source: VolumeError,
    },
    /// Writing or checking the volume failed.
    #[error("MountVolume.SetUp failed for volume {volume:?} : {message}")]
    SetUp {
        /// The volume.
        volume: String,
        /// Why.
        message: String,
    },
    /// A container mounts a volume the pod does not have.
    #[error("volume {0:?} not found in the pod's volumes")]
    UnknownVolume(String),
    /// A `subPath` cannot be used.
    #[error("failed to prepare subPath {sub_path:?} of volume {volume:?}: {message}")]
    SubPath {
        /// The volume.
        volume: String,
        /// The sub path.
        sub_path: String,
        /// Why.
        message: String,
    },
}

/// A set-up volume: the host directory containers mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mounted {
    host: PathBuf,
    always_read_only: bool,
}

/// The set-up volumes of a pod, by name.
pub(crate) type Volumes = BTreeMap<String, Mounted>;

/// Plans and materialises every volume of the pod. Idempotent: an emptyDir keeps its
/// content, file volumes are rewritten atomically.
pub(crate) fn set_up(
    pod: &Pod,
    objects: &ConfigObjects,
    node: &NodeFacts,
    dir: &PodDir,
) -> Result<Volumes, Error> {
    let volumes = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten());
    let mut mounted = Volumes::new();
    for volume in volumes {
        let plan = plan_volume(pod, volume, objects, node).map_err(|source| Error::Plan {
            volume: volume.name.clone(),
            source,
        })?;
        let setup_err = |message: String| Error::SetUp {
            volume: volume.name.clone(),
            message,
        };
        let m = materialise(&plan, dir, node).map_err(setup_err)?;
        mounted.insert(plan.name, m);
    }
    Ok(mounted)
}

fn materialise(plan: &VolumePlan, dir: &PodDir, node: &NodeFacts) -> Result<Mounted, String> {
    let path = dir.volume(&plan.name);
    match &plan.content {
        VolumeContent::EmptyDir {
            medium,
            size_limit_bytes,
        } => {
            std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if *medium == EmptyDirMedium::Memory {
                let node_memory = u64::try_from(node.allocatable.memory_bytes).unwrap_or(0);
                in_memory(&path, size_limit_bytes.unwrap_or(node_memory));
            }
            Ok(Mounted {
                host: path,
                always_read_only: false,
            })
        }
        VolumeContent::HostPath { path, kind } => Ok(Mounted {
            host: host_path(Path::new(path), *kind)?,
            always_read_only: false,
        }),
        VolumeContent::Files { files, tokens } => {
            if !tokens.is_empty() {
                tracing::warn!(volume = %plan.name, "service account tokens are not written");
            }
            write_atomically(&path, files).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(Mounted {
                host: path,
                always_read_only: true,
            })
        }
    }
}

/// Mounts a tmpfs of `size_bytes` on a memory-backed emptyDir; without the right to mount,
/// it stays a directory on disk.
fn in_memory(path: &Path, size_bytes: u64) {
    if let Err(err) = crate::tmpfs::mount(path, size_bytes.max(1)) {
        tracing::warn!(
            volume = %path.display(),
            %err,
            "emptyDir medium Memory is a directory on disk: mounting a tmpfs needs CAP_SYS_ADMIN"
        );
    }
}

/// Checks (or creates) a hostPath as its `type` asks; it must end up a directory.
fn host_path(path: &Path, kind: HostPathType) -> Result<PathBuf, String> {
    let display = path.display();
    if kind == HostPathType::DirectoryOrCreate && !path.exists() {
        std::fs::create_dir_all(path).map_err(|e| format!("{display}: {e}"))?;
    }
    if kind == HostPathType::FileOrCreate && !path.exists() {
        std::fs::write(path, b"").map_err(|e| format!("{display}: {e}"))?;
    }
    let meta = std::fs::metadata(path);
    let file_type = meta.as_ref().map(|m| m.file_type());
    let wanted = match kind {
        HostPathType::Unchecked | HostPathType::DirectoryOrCreate => None,
        HostPathType::Directory => Some(("directory", file_type.is_ok_and(|t| t.is_dir()))),
        HostPathType::File | HostPathType::FileOrCreate => {
            Some(("file", file_type.is_ok_and(|t| t.is_file())))
        }
        HostPathType::Socket => Some(("socket", file_type.is_ok_and(|t| t.is_socket()))),
        HostPathType::CharDevice => Some((
            "character device",
            file_type.is_ok_and(|t| t.is_char_device()),
        )),
        HostPathType::BlockDevice => {
            Some(("block device", file_type.is_ok_and(|t| t.is_block_device())))
        }
    };
    if let Some((what, false)) = wanted {
        return Err(format!(
            "hostPath type check failed: {display} is not a {what}"
        ));
    }
    match meta {
        Ok(m) if m.is_dir() => Ok(path.to_path_buf()),
        Ok(_) => Err(format!(
            "{display} is not a directory: wasmlet mounts directories only (WASI preopens)"
        )),
        Err(e) => Err(format!("{display}: {e}")),
    }
}

static STAMP: AtomicU64 = AtomicU64::new(0);

/// Writes `files` into `dir` as the kubelet's atomic writer does (see the module doc).
fn write_atomically(dir: &Path, files: &[FileToWrite]) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let stamp = format!("..{nanos}_{}", STAMP.fetch_add(1, Ordering::Relaxed));
    let data = dir.join(&stamp);
    std::fs::create_dir(&data)?;
    for file in files {
        write_file(&data.join(&file.path), file)?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, dir.join("..data"))?;
    let top: std::collections::BTreeSet<&str> = files
        .iter()
        .filter_map(|f| f.path.split('/').next())
        .collect();
    link_top_level(dir, &top)?;
    remove_stale(dir, &stamp, &top)
}

fn write_file(path: &Path, file: &FileToWrite) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, &file.bytes)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(file.mode))
}

fn link_top_level(dir: &Path, top: &std::collections::BTreeSet<&str>) -> io::Result<()> {
    for name in top {
        let link = dir.join(name);
        if link.symlink_metadata().is_err() {
            symlink(format!("..data/{name}"), &link)?;
        }
    }
    Ok(())
}

/// Removes old `..<stamp>` directories and top-level links no longer in the volume.
fn remove_stale(dir: &Path, stamp: &str, top: &std::collections::BTreeSet<&str>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let old_data = name.starts_with("..") && name != stamp && name != "..data";
        let old_link = !name.starts_with("..") && !top.contains(name);
        if old_data {
            std::fs::remove_dir_all(entry.path())?;
        } else if old_link {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// The preopens of a container's mounts, in order. A `subPath` that does not exist is
/// created as a directory (as the kubelet does), and it is opened and created without
/// following anything out of its volume (`crate::beneath`): the preopen is the directory
/// found then, pinned by a descriptor.
pub(crate) fn preopens(mounts: &[MountPlan], volumes: &Volumes) -> Result<Vec<Preopen>, Error> {
    mounts.iter().map(|m| preopen(m, volumes)).collect()
}

fn preopen(mount: &MountPlan, volumes: &Volumes) -> Result<Preopen, Error> {
    let volume = volumes
        .get(&mount.volume)
        .ok_or_else(|| Error::UnknownVolume(mount.volume.clone()))?;
    let read_only = mount.read_only || volume.always_read_only;
    let guest = mount.mount_path.clone();
    let Some(sub_path) = &mount.sub_path else {
        return Ok(Preopen {
            host: volume.host.clone(),
            guest,
            read_only,
            pinned: None,
        });
    };
    let dir = crate::beneath::open_sub_dir(&volume.host, sub_path).map_err(|e| Error::SubPath {
        volume: mount.volume.clone(),
        sub_path: sub_path.clone(),
        message: e.to_string(),
    })?;
    let pinned = PinnedDir::new(dir);
    Ok(Preopen {
        host: pinned.path(),
        guest,
        read_only,
        pinned: Some(pinned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, text: &str, mode: u32) -> FileToWrite {
        FileToWrite {
            path: path.into(),
            bytes: text.as_bytes().to_vec(),
            mode,
        }
    }

    #[test]
    fn writes_files_atomically_and_replaces_them() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("v");
        write_atomically(&dir, &[file("a", "1", 0o600), file("d/b", "2", 0o644)]).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(dir.join("d/b")).unwrap(), "2");
        let mode = std::fs::metadata(dir.join("a"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        write_atomically(&dir, &[file("c", "3", 0o644)]).unwrap();
        assert!(dir.join("a").symlink_metadata().is_err());
        assert_eq!(std::fs::read_to_string(dir.join("c")).unwrap(), "3");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(names.len(), 3, "c, ..data and one ..<stamp>: {names:?}");
    }

    #[test]
    fn checks_host_paths() {
        let root = tempfile::tempdir().unwrap();
        let made = root.path().join("made");
        assert!(host_path(&made, HostPathType::DirectoryOrCreate).is_ok());
        assert!(host_path(&made, HostPathType::Directory).is_ok());
        let missing = root.path().join("missing");
        let err = host_path(&missing, HostPathType::Directory).unwrap_err();
        assert!(err.contains("is not a directory"), "{err}");
        let file = root.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let err = host_path(&file, HostPathType::File).unwrap_err();
        assert!(err.contains("directories only"), "{err}");
    }
}
