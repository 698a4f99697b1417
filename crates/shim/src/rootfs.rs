//! The container's root filesystem: mounting containerd's rootfs mounts into the bundle,
//! unmounting them, and resolving guest paths inside it with chroot semantics.

use std::path::{Component, Path, PathBuf};

use containerd_shim_protos::api::Mount;

/// Errors of the rootfs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Mounting one of containerd's rootfs mounts failed.
    #[error(
        "cannot mount the container's rootfs ({kind} from {source_path}) on {target}: {reason}"
    )]
    Mount {
        /// The mount type (e.g. `overlay`).
        kind: String,
        /// The mount source.
        source_path: String,
        /// The mount point.
        target: PathBuf,
        /// Why.
        reason: String,
    },
    /// Creating the mount point failed.
    #[error("cannot create the rootfs mount point {path}: {source}")]
    MountPoint {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A guest path runs through too many symbolic links.
    #[error("too many levels of symbolic links resolving {0} in the container's rootfs")]
    SymlinkLoop(String),
}

/// The most symbolic links followed while resolving one path (Linux's `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// Mounts containerd's rootfs `mounts` on `target` (created if missing), in order.
pub async fn mount(mounts: &[Mount], target: &Path) -> Result<(), Error> {
    if mounts.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(target).map_err(|source| Error::MountPoint {
        path: target.into(),
        source,
    })?;
    for m in mounts {
        containerd_shim::asynchronous::util::mount_rootfs(m, target)
            .await
            .map_err(|e| Error::Mount {
                kind: m.type_.clone(),
                source_path: m.source.clone(),
                target: target.into(),
                reason: e.to_string(),
            })?;
    }
    Ok(())
}

/// Detaches whatever is mounted on `target`; a target with nothing mounted is fine.
pub fn unmount(target: &Path) {
    let Ok(c_path) = std::ffi::CString::new(target.as_os_str().as_encoded_bytes()) else {
        return;
    };
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call; umount2 only
    // reads it.
    let rc = unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) && err.raw_os_error() != Some(libc::ENOENT) {
            log::warn!("cannot unmount {}: {err}", target.display());
        }
    }
}

/// The host path of guest path `guest` inside `rootfs`, as if `rootfs` were `/`: `..` never
/// climbs above it and symbolic links (absolute or relative) are resolved inside it. The last
/// component need not exist.
pub fn resolve(rootfs: &Path, guest: &str) -> Result<PathBuf, Error> {
    let mut resolved: Vec<std::ffi::OsString> = Vec::new();
    let mut pending: Vec<std::ffi::OsString> = components(Path::new(guest));
    pending.reverse();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let host = join(rootfs, &resolved).join(&part);
        match std::fs::read_link(&host) {
            Ok(target) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Error::SymlinkLoop(guest.into()));
                }
                if target.is_absolute() {
                    resolved.clear();
                }
                pending.extend(components(&target).into_iter().rev());
            }
            Err(_) => resolved.push(part),
        }
    }
    Ok(join(rootfs, &resolved))
}

fn components(path: &Path) -> Vec<std::ffi::OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

fn join(rootfs: &Path, parts: &[std::ffi::OsString]) -> PathBuf {
    parts.iter().fold(rootfs.to_path_buf(), |p, c| p.join(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_with_chroot_semantics() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("app/bin")).unwrap();
        std::fs::write(r.join("app/bin/m.wasm"), b"x").unwrap();
        std::os::unix::fs::symlink("/app/bin/m.wasm", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("bin/m.wasm", r.join("app/rel")).unwrap();
        std::os::unix::fs::symlink("../../../../etc/passwd", r.join("escape")).unwrap();
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        let want = r.join("app/bin/m.wasm");
        assert_eq!(resolve(r, "/app/bin/m.wasm").unwrap(), want);
        assert_eq!(resolve(r, "/abs").unwrap(), want);
        assert_eq!(resolve(r, "/app/rel").unwrap(), want);
        assert_eq!(resolve(r, "/../../app/./bin/m.wasm").unwrap(), want);
        assert_eq!(resolve(r, "/escape").unwrap(), r.join("etc/passwd"));
        assert!(matches!(resolve(r, "/loop"), Err(Error::SymlinkLoop(_))));
    }
}
