//! A preopened directory for wasmer's WASI that never leaves it.
//!
//! wasmer's own host file system joins the guest's path to the directory and opens the
//! result, which follows a symbolic link the guest (or another container of the volume)
//! planted out of it. This one resolves every path from a descriptor of the directory with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`: the kernel follows links only while
//! they stay inside, and refuses `..` past the root and absolute links. Operations on a
//! name (create, remove, rename, read a link) open its parent that way and act on the last
//! component with the `*at` calls, which never follow it. A read-only preopen refuses every
//! change. Written by hand: no crate offers wasmer's `FileSystem` over `openat2`.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2, readlinkat, renameat};
use nix::sys::stat::{Mode, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};
use tokio::runtime::Handle;
use wasmer_wasix::virtual_fs::{
    self, DirEntry, FileOpener, FsError, Metadata, OpenOptions, OpenOptionsConfig, ReadDir,
    VirtualFile,
};

type FsResult<T> = std::result::Result<T, FsError>;

/// A host directory seen by the guest as a file system of its own.
#[derive(Debug)]
pub(crate) struct BeneathFs {
    root: OwnedFd,
    /// The host directory, for messages and the files' host paths only: never opened by name.
    host: PathBuf,
    read_only: bool,
    handle: Handle,
}

impl BeneathFs {
    /// Opens `host` (a directory) as the root.
    pub(crate) fn open(host: &Path, read_only: bool, handle: Handle) -> std::io::Result<BeneathFs> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let root = nix::fcntl::open(host, flags, Mode::empty())?;
        Ok(BeneathFs {
            root,
            host: host.to_owned(),
            read_only,
            handle,
        })
    }

    /// Opens `path` (the guest's, absolute inside this file system) beneath the root.
    fn open_beneath(&self, path: &Path, flags: OFlag, mode: Mode) -> FsResult<OwnedFd> {
        let relative = relative(path)?;
        // openat2 refuses O_PATH with any flag but these few.
        let extra = if flags.contains(OFlag::O_PATH) {
            OFlag::O_CLOEXEC
        } else {
            OFlag::O_CLOEXEC | OFlag::O_NOCTTY
        };
        // ... and a mode without O_CREAT.
        let mode = if flags.contains(OFlag::O_CREAT) {
            mode
        } else {
            Mode::empty()
        };
        let how = OpenHow::new()
            .flags(flags | extra)
            .mode(mode)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        openat2(self.root.as_fd(), &relative, how).map_err(errno)
    }

    /// The parent directory of `path`, opened beneath the root, and its last component.
    fn parent(&self, path: &Path) -> FsResult<(OwnedFd, PathBuf)> {
        let relative = relative(path)?;
        let name = match relative.components().next_back() {
            Some(Component::Normal(name)) => PathBuf::from(name),
            _ => return Err(FsError::InvalidInput),
        };
        let parent = relative.parent().unwrap_or(Path::new(""));
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        let dir = self.open_beneath(parent, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())?;
        Ok((dir, name))
    }

    fn writable(&self) -> FsResult<()> {
        if self.read_only {
            return Err(FsError::PermissionDenied);
        }
        Ok(())
    }

    fn metadata_of(&self, path: &Path, follow: bool) -> FsResult<Metadata> {
        let mut flags = OFlag::O_PATH;
        if !follow {
            flags |= OFlag::O_NOFOLLOW;
        }
        let fd = self.open_beneath(path, flags, Mode::empty())?;
        metadata(fd)
    }
}

/// The guest's path as one relative to the root (`.` for the root itself); `..` is left for
/// the kernel to refuse past the root.
fn relative(path: &Path) -> FsResult<PathBuf> {
    let mut relative = PathBuf::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => relative.push(".."),
            Component::Normal(name) => relative.push(name),
            Component::Prefix(_) => return Err(FsError::InvalidInput),
        }
    }
    if relative.as_os_str().is_empty() {
        relative.push(".");
    }
    Ok(relative)
}

/// What an `openat2` or `*at` failure is to the guest: a way out of the root is a refusal.
fn errno(errno: Errno) -> FsError {
    match errno {
        Errno::EXDEV | Errno::ELOOP => FsError::PermissionDenied,
        other => FsError::from(std::io::Error::from(other)),
    }
}

fn metadata(fd: OwnedFd) -> FsResult<Metadata> {
    let file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(FsError::from)?;
    meta.try_into().map_err(FsError::from)
}

impl virtual_fs::FileSystem for BeneathFs {
    fn readlink(&self, path: &Path) -> FsResult<PathBuf> {
        let (dir, name) = self.parent(path)?;
        let target = readlinkat(dir.as_fd(), &name).map_err(errno)?;
        Ok(PathBuf::from(target))
    }

    fn read_dir(&self, path: &Path) -> FsResult<ReadDir> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
        let fd = self.open_beneath(path, flags, Mode::empty())?;
        let mut dir = nix::dir::Dir::from_fd(fd).map_err(errno)?;
        let mut entries = Vec::new();
        let names: Vec<_> = dir
            .iter()
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_owned())
            .collect();
        for name in names {
            let name = name.to_string_lossy().into_owned();
            if name == "." || name == ".." {
                continue;
            }
            let child = path.join(&name);
            let metadata = self.metadata_of(&child, false);
            entries.push(DirEntry {
                path: child,
                metadata,
            });
        }
        Ok(ReadDir::new(entries))
    }

    fn create_dir(&self, path: &Path) -> FsResult<()> {
        self.writable()?;
        let (dir, name) = self.parent(path)?;
        mkdirat(dir.as_fd(), &name, Mode::from_bits_truncate(0o755)).map_err(errno)
    }

    fn remove_dir(&self, path: &Path) -> FsResult<()> {
        self.writable()?;
        let (dir, name) = self.parent(path)?;
        unlinkat(dir.as_fd(), &name, UnlinkatFlags::RemoveDir).map_err(errno)
    }

    fn rename<'a>(
        &'a self,
        from: &'a Path,
        to: &'a Path,
    ) -> Pin<Box<dyn std::future::Future<Output = FsResult<()>> + Send + 'a>> {
        Box::pin(async move {
            self.writable()?;
            let (from_dir, from_name) = self.parent(from)?;
            let (to_dir, to_name) = self.parent(to)?;
            renameat(from_dir.as_fd(), &from_name, to_dir.as_fd(), &to_name).map_err(errno)
        })
    }

    fn metadata(&self, path: &Path) -> FsResult<Metadata> {
        self.metadata_of(path, true)
    }

    fn symlink_metadata(&self, path: &Path) -> FsResult<Metadata> {
        self.metadata_of(path, false)
    }

    fn remove_file(&self, path: &Path) -> FsResult<()> {
        self.writable()?;
        let (dir, name) = self.parent(path)?;
        unlinkat(dir.as_fd(), &name, UnlinkatFlags::NoRemoveDir).map_err(errno)
    }

    fn new_open_options(&self) -> OpenOptions<'_> {
        OpenOptions::new(self)
    }
}

impl FileOpener for BeneathFs {
    fn open(
        &self,
        path: &Path,
        conf: &OpenOptionsConfig,
    ) -> FsResult<Box<dyn VirtualFile + Send + Sync + 'static>> {
        let changes = conf.write || conf.create || conf.create_new || conf.truncate || conf.append;
        if changes {
            self.writable()?;
        }
        let mut flags = match (conf.read, conf.write || conf.append) {
            (_, false) => OFlag::O_RDONLY,
            (false, true) => OFlag::O_WRONLY,
            (true, true) => OFlag::O_RDWR,
        };
        if conf.create_new {
            flags |= OFlag::O_CREAT | OFlag::O_EXCL;
        } else if conf.create {
            flags |= OFlag::O_CREAT;
        }
        // Truncating and appending together is refused by the standard library and means
        // truncate here, as wasmer's own host files do.
        let append = conf.append && !conf.truncate;
        if conf.truncate {
            flags |= OFlag::O_TRUNC;
        }
        if append {
            flags |= OFlag::O_APPEND;
        }
        let fd = self.open_beneath(path, flags, Mode::from_bits_truncate(0o644))?;
        let host_path = self.host.join(relative(path)?);
        let file = virtual_fs::host_fs::File::new(
            self.handle.clone(),
            std::fs::File::from(fd),
            host_path,
            conf.read,
            conf.write || append,
            append,
        );
        Ok(Box::new(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtual_fs::FileSystem as _;

    fn fs(dir: &Path, read_only: bool) -> BeneathFs {
        BeneathFs::open(dir, read_only, Handle::current()).unwrap()
    }

    #[tokio::test]
    async fn links_and_dot_dot_do_not_leave_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("inside"), "i").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("out")).unwrap();
        std::os::unix::fs::symlink("../../../../..", root.path().join("up")).unwrap();
        std::os::unix::fs::symlink("inside", root.path().join("alias")).unwrap();
        let fs = fs(root.path(), false);
        let read = OpenOptionsConfig {
            read: true,
            write: false,
            create_new: false,
            create: false,
            append: false,
            truncate: false,
        };
        assert!(fs.open(Path::new("/inside"), &read).is_ok());
        assert!(fs.open(Path::new("/alias"), &read).is_ok(), "a link inside");
        for escape in ["/out/secret", "/up/etc/passwd", "/../secret", "/out"] {
            assert!(fs.open(Path::new(escape), &read).is_err(), "{escape}");
            assert!(fs.metadata(Path::new(escape)).is_err(), "{escape}");
        }
        let create = OpenOptionsConfig {
            write: true,
            create: true,
            ..read.clone()
        };
        assert!(fs.open(Path::new("/out/new"), &create).is_err());
        assert!(!outside.path().join("new").exists());
        assert!(fs.create_dir(Path::new("/out/d")).is_err());
        assert!(!outside.path().join("d").exists());
        assert!(
            fs.rename(Path::new("/inside"), Path::new("/out/moved"))
                .await
                .is_err()
        );
        assert!(fs.remove_file(Path::new("/out/secret")).is_err());
        assert!(outside.path().join("secret").exists());
        assert_eq!(
            fs.readlink(Path::new("/alias")).unwrap(),
            Path::new("inside")
        );
        let names: Vec<_> = fs
            .read_dir(Path::new("/"))
            .unwrap()
            .map(|e| e.unwrap().path)
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
    }

    #[tokio::test]
    async fn files_are_created_written_and_listed_inside() {
        use tokio::io::AsyncWriteExt;
        let root = tempfile::tempdir().unwrap();
        let fs = fs(root.path(), false);
        let create = OpenOptionsConfig {
            read: false,
            write: true,
            create_new: false,
            create: true,
            append: false,
            truncate: true,
        };
        let mut file = fs.open(Path::new("/note.txt"), &create).unwrap();
        file.write_all(b"written").await.unwrap();
        file.flush().await.unwrap();
        drop(file);
        assert_eq!(
            std::fs::read(root.path().join("note.txt")).unwrap(),
            b"written"
        );
        fs.create_dir(Path::new("/d")).unwrap();
        fs.rename(Path::new("/note.txt"), Path::new("/d/n"))
            .await
            .unwrap();
        assert!(fs.metadata(Path::new("/d/n")).unwrap().is_file());
        fs.remove_file(Path::new("/d/n")).unwrap();
        fs.remove_dir(Path::new("/d")).unwrap();
        assert!(std::fs::read_dir(root.path()).unwrap().next().is_none());
    }

    #[tokio::test]
    async fn a_read_only_root_refuses_every_change() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("f"), "x").unwrap();
        let fs = fs(root.path(), true);
        let write = OpenOptionsConfig {
            read: false,
            write: true,
            create_new: false,
            create: true,
            append: false,
            truncate: false,
        };
        assert!(matches!(
            fs.open(Path::new("/g"), &write),
            Err(FsError::PermissionDenied)
        ));
        assert!(fs.create_dir(Path::new("/d")).is_err());
        assert!(fs.remove_file(Path::new("/f")).is_err());
        assert!(root.path().join("f").exists() && !root.path().join("g").exists());
    }
}
