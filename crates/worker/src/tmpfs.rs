//! Memory-backed `emptyDir` volumes (`medium: Memory`): a tmpfs mounted on the volume's
//! directory, sized by the volume's `sizeLimit` (else the node's allocatable memory), as the
//! kubelet mounts them; a write past the size fails with "No space left on device".
//!
//! Mounting needs `CAP_SYS_ADMIN`. Without it the volume is a directory on disk (a warning
//! says so) whose `sizeLimit` is enforced by eviction only. A volume already mounted (the
//! agent restarted while its pod ran) is kept as it is, with its content. Removing a pod's
//! directory first unmounts every mount under it ([`unmount_under`]).

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

/// Mounts a tmpfs of `size_bytes` on `path` (an existing directory), unless one is already
/// mounted there.
pub(crate) fn mount(path: &Path, size_bytes: u64) -> io::Result<()> {
    if mount_points()?.iter().any(|m| m == path) {
        return Ok(());
    }
    let options = format!("size={size_bytes},mode=0777");
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    nix::mount::mount(
        Some("tmpfs"),
        path,
        Some("tmpfs"),
        flags,
        Some(options.as_str()),
    )
    .map_err(io::Error::from)
}

/// Unmounts every mount point under `dir` (deepest first), so the directory can be removed.
pub fn unmount_under(dir: &Path) -> io::Result<()> {
    let mut under: Vec<PathBuf> = mount_points()?
        .into_iter()
        .filter(|m| m.starts_with(dir) && m != dir)
        .collect();
    under.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for point in under {
        nix::mount::umount2(&point, MntFlags::MNT_DETACH)
            .map_err(|err| io::Error::other(format!("unmounting {}: {err}", point.display())))?;
    }
    Ok(())
}

/// The mount points of this process's mount namespace.
fn mount_points() -> io::Result<Vec<PathBuf>> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(table.lines().filter_map(mount_point).collect())
}

/// The mount point (fifth field) of a `/proc/self/mountinfo` line, its octal escapes
/// (`\040` for a space) decoded.
fn mount_point(line: &str) -> Option<PathBuf> {
    let field = line.split(' ').nth(4)?;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    use std::os::unix::ffi::OsStringExt;
    Some(PathBuf::from(std::ffi::OsString::from_vec(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mount_points_with_escapes() {
        let line = "36 35 98:0 /mnt1 /mnt/my\\040dir rw,noatime master:1 - tmpfs tmpfs rw";
        assert_eq!(mount_point(line), Some(PathBuf::from("/mnt/my dir")));
        assert_eq!(mount_point("short line"), None);
        assert!(mount_points().unwrap().contains(&PathBuf::from("/")));
    }
}
