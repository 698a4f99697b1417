//! Opening (and creating) a directory inside a volume without ever leaving it, for `subPath`.
//!
//! A guest writes its volumes, so it can plant a symbolic link that leads out of one
//! (`escape -> ../../../../etc`) and have a later container mount `escape/x`. Joining the
//! path and checking it afterwards is too late: creating `escape/x` has already happened on
//! the host. Instead, as the kubelet's safe `subPath` code does, the sub path is walked one
//! component at a time from a descriptor of the volume's root: each existing prefix is opened
//! with `openat2(RESOLVE_BENEATH)` (links are followed only while they stay inside the root;
//! `..` past it and absolute links fail), each missing component is made with `mkdirat` in
//! the directory already opened, and the result is a descriptor of the directory, which the
//! runtime opens through `/proc/self/fd/N`: a link swapped in afterwards changes nothing.
//!
//! On a kernel without `openat2` (before Linux 5.6) every component is opened with
//! `O_NOFOLLOW`, so a sub path through any symbolic link is refused.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat, openat2};
use nix::sys::stat::{Mode, mkdirat};

/// Why a sub path cannot be opened inside its volume.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The volume's own directory cannot be opened.
    #[error("cannot open the volume directory {path}: {errno}")]
    Root {
        /// The volume directory.
        path: PathBuf,
        /// Why.
        errno: Errno,
    },
    /// The sub path leads out of the volume.
    #[error(
        "{path:?} resolves outside the volume (an absolute path, `..`, or a symbolic link \
         leading out of it): use a path that stays inside the volume"
    )]
    Outside {
        /// The prefix of the sub path that leads out.
        path: String,
    },
    /// A component exists but is not a directory.
    #[error("{path:?} is not a directory: wasmlet mounts directories only (WASI preopens)")]
    NotDirectory {
        /// The prefix of the sub path that is not a directory.
        path: String,
    },
    /// A symbolic link on a kernel that cannot resolve it safely.
    #[error(
        "{path:?} is a symbolic link, and this kernel has no openat2 (Linux 5.6) to follow it \
         without leaving the volume: use a sub path without links"
    )]
    Link {
        /// The prefix of the sub path that is a link.
        path: String,
    },
    /// Any other failure to open or create a component.
    #[error("cannot {action} {path:?}: {errno}")]
    Io {
        /// `open` or `create`.
        action: &'static str,
        /// The prefix of the sub path.
        path: String,
        /// Why.
        errno: Errno,
    },
}

/// How existing components are opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resolve {
    /// `openat2` from the root with `RESOLVE_BENEATH`: links inside the root are followed.
    Beneath,
    /// `openat` of one component at a time with `O_NOFOLLOW`: links are refused.
    NoFollow,
}

/// Opens `sub_path` inside the directory `root` as a directory, creating what is missing
/// (mode 0755), without following anything out of `root`. The descriptor is `O_PATH`.
pub(crate) fn open_sub_dir(root: &Path, sub_path: &str) -> Result<OwnedFd, Error> {
    open_with(root, sub_path, Resolve::Beneath)
}

fn open_with(root: &Path, sub_path: &str, mut resolve: Resolve) -> Result<OwnedFd, Error> {
    if sub_path.starts_with('/') {
        return Err(Error::Outside {
            path: sub_path.to_owned(),
        });
    }
    let root_fd = open(root, dir_flags(), Mode::empty()).map_err(|errno| Error::Root {
        path: root.to_path_buf(),
        errno,
    })?;
    let mut dir = root_fd.try_clone().map_err(|e| Error::Root {
        path: root.to_path_buf(),
        errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
    })?;
    let mut prefix = PathBuf::new();
    for name in sub_path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if name == ".." {
            return Err(Error::Outside {
                path: join(&prefix, name),
            });
        }
        prefix.push(name);
        dir = match step(&root_fd, &dir, &prefix, name, resolve) {
            Err(Errno::ENOSYS) if resolve == Resolve::Beneath => {
                resolve = Resolve::NoFollow;
                step(&root_fd, &dir, &prefix, name, resolve)
            }
            other => other,
        }
        .map_err(|errno| classify(errno, &prefix, "open"))?;
    }
    Ok(dir)
}

/// Opens the component `name` (the last of `prefix`), making it first if it is missing.
fn step(
    root: &OwnedFd,
    parent: &OwnedFd,
    prefix: &Path,
    name: &str,
    resolve: Resolve,
) -> Result<OwnedFd, Errno> {
    match open_existing(root, parent, prefix, name, resolve) {
        Err(Errno::ENOENT) => {}
        other => return other,
    }
    match mkdirat(parent, name, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(errno) => return Err(errno),
    }
    open_existing(root, parent, prefix, name, resolve)
}

fn open_existing(
    root: &OwnedFd,
    parent: &OwnedFd,
    prefix: &Path,
    name: &str,
    resolve: Resolve,
) -> Result<OwnedFd, Errno> {
    match resolve {
        Resolve::Beneath => {
            let how = OpenHow::new()
                .flags(dir_flags())
                .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
            openat2(root, prefix, how)
        }
        Resolve::NoFollow => {
            let fd = openat(parent, name, dir_flags() | OFlag::O_NOFOLLOW, Mode::empty());
            match fd {
                Err(Errno::ENOTDIR) if is_link(parent, name) => Err(Errno::ELOOP),
                other => other,
            }
        }
    }
}

fn is_link(parent: &OwnedFd, name: &str) -> bool {
    use nix::fcntl::AtFlags;
    use nix::sys::stat::SFlag;
    nix::sys::stat::fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|st| st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFLNK.bits())
}

fn dir_flags() -> OFlag {
    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC
}

fn classify(errno: Errno, prefix: &Path, action: &'static str) -> Error {
    let path = prefix.to_string_lossy().into_owned();
    match errno {
        Errno::EXDEV => Error::Outside { path },
        Errno::ENOTDIR => Error::NotDirectory { path },
        Errno::ELOOP => Error::Link { path },
        errno => Error::Io {
            action,
            path,
            errno,
        },
    }
}

fn join(prefix: &Path, name: &str) -> String {
    prefix.join(name).to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn real(fd: &OwnedFd) -> PathBuf {
        use std::os::fd::AsRawFd;
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap()
    }

    #[test]
    fn creates_and_opens_inside() {
        let root = tempfile::tempdir().unwrap();
        for resolve in [Resolve::Beneath, Resolve::NoFollow] {
            let fd = open_with(root.path(), "a/./b//c", resolve).unwrap();
            assert_eq!(real(&fd), root.path().canonicalize().unwrap().join("a/b/c"));
        }
    }

    #[test]
    fn follows_links_that_stay_inside() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("x/y")).unwrap();
        symlink("x/y", root.path().join("in")).unwrap();
        symlink("../x", root.path().join("x/up")).unwrap();
        let fd = open_sub_dir(root.path(), "in/made").unwrap();
        let base = root.path().canonicalize().unwrap();
        assert_eq!(real(&fd), base.join("x/y/made"));
        let fd = open_sub_dir(root.path(), "x/up/y").unwrap();
        assert_eq!(real(&fd), base.join("x/y"));
    }

    #[test]
    fn never_creates_anything_outside() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let up = "../".repeat(40);
        let target = format!("{up}{}", outside.path().display()).replace("//", "/");
        symlink(&target, root.path().join("relative")).unwrap();
        symlink(outside.path(), root.path().join("absolute")).unwrap();
        std::fs::create_dir(root.path().join("d")).unwrap();
        symlink("../../", root.path().join("d/parent")).unwrap();
        for resolve in [Resolve::Beneath, Resolve::NoFollow] {
            for sub in [
                "relative/made",
                "absolute/made",
                "d/parent/made",
                "../made",
                "/made",
            ] {
                let err = open_with(root.path(), sub, resolve).unwrap_err();
                assert!(
                    matches!(err, Error::Outside { .. } | Error::Link { .. }),
                    "{sub}: {err}"
                );
            }
        }
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        let err = open_sub_dir(root.path(), "relative/made").unwrap_err();
        assert!(
            err.to_string().contains("resolves outside the volume"),
            "{err}"
        );
    }

    #[test]
    fn refuses_files_and_dangling_links() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("f"), "x").unwrap();
        let err = open_sub_dir(root.path(), "f/sub").unwrap_err();
        assert!(matches!(err, Error::NotDirectory { .. }), "{err}");
        symlink("missing/deeper", root.path().join("dangling")).unwrap();
        assert!(open_sub_dir(root.path(), "dangling").is_err());
        assert!(!root.path().join("missing").exists());
    }
}
