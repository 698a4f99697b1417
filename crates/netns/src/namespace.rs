//! Creating, pinning, opening, entering and removing one network namespace.

use std::fs::{File, OpenOptions};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::mount::UnmountFlags;
use rustix::thread::{LinkNameSpaceType, UnshareFlags};

/// The `f_type` of files on nsfs, the filesystem of namespace links (`NSFS_MAGIC`).
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Why a namespace could not be made, found, entered or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pin's file could not be made (its directory, or the file exists already).
    #[error(
        "cannot pin a network namespace at {path}: {source}; remove a stale pin with wasmlet_netns::remove or pick another path"
    )]
    Pin {
        /// The pin's path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// `unshare(CLONE_NEWNET)` or the bind mount failed.
    #[error(
        "cannot create a network namespace at {path} ({step}: {source}); creating namespaces needs root (CAP_SYS_ADMIN)"
    )]
    Create {
        /// The pin's path.
        path: PathBuf,
        /// `unshare` or `mount`.
        step: &'static str,
        /// Why.
        source: io::Error,
    },
    /// The path could not be opened.
    #[error("cannot open network namespace {path}: {source}")]
    Open {
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The path is a file, but not a pinned namespace.
    #[error(
        "{path} is not a network namespace (not a file of nsfs); give the path of a pinned namespace such as /var/run/netns/NAME or /proc/PID/ns/net"
    )]
    NotANamespace {
        /// The path.
        path: PathBuf,
    },
    /// `setns` on the helper thread failed.
    #[error(
        "cannot enter network namespace {path}: {source}; entering a namespace needs root (CAP_SYS_ADMIN)"
    )]
    Enter {
        /// The namespace's path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The helper thread could not be started.
    #[error("cannot start a thread to enter network namespace {path}: {source}")]
    Thread {
        /// The namespace's path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A socket could not be made inside the namespace.
    #[error("{op} {addr} in network namespace {path}: {source}")]
    Socket {
        /// `listen tcp`, `listen udp`, `dial tcp`.
        op: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The namespace's path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The loopback interface could not be brought up.
    #[error("cannot bring up the loopback interface of network namespace {path}: {source}")]
    Loopback {
        /// The namespace's path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The pin could not be removed.
    #[error("cannot remove the network namespace pin {path}: {source}")]
    Remove {
        /// The pin's path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Shorthand for this module's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An open handle on a network namespace. Holding it keeps the namespace alive; dropping it
/// does not remove the pin (see [`remove`]).
#[derive(Debug)]
pub struct NetNs {
    path: PathBuf,
    file: File,
}

impl NetNs {
    /// Makes a new network namespace and pins it at `path` (created, with its parent
    /// directories; it must not exist). The namespace starts with only a loopback interface,
    /// down, as every new namespace does: CNI's `loopback` plugin, or
    /// [`NetNs::set_loopback_up`], brings it up.
    pub fn create(path: &Path) -> Result<NetNs> {
        let pin_err = |source| Error::Pin {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(pin_err)?;
        }
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(path)
            .map_err(pin_err)?;
        if let Err(e) = pin_new_namespace(path) {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        NetNs::open(path)
    }

    /// Opens the network namespace pinned at `path` (a bind mount such as
    /// `/var/run/netns/NAME`, or `/proc/PID/ns/net`).
    pub fn open(path: &Path) -> Result<NetNs> {
        let file = File::open(path).map_err(|source| Error::Open {
            path: path.to_owned(),
            source,
        })?;
        if !on_nsfs(&file) {
            return Err(Error::NotANamespace {
                path: path.to_owned(),
            });
        }
        Ok(NetNs {
            path: path.to_owned(),
            file,
        })
    }

    /// The path it was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace's identity: the inode `/proc/PID/ns/net` shows as `net:[INODE]` for every
    /// thread inside it.
    pub fn inode(&self) -> u64 {
        self.file.metadata().map(|m| m.ino()).unwrap_or(0)
    }

    /// Runs `f` on a new thread that has entered this namespace and returns what it returns.
    /// The caller's thread stays where it is; a panic in `f` is passed on to the caller.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name("netns".into())
                .spawn_scoped(scope, || {
                    rustix::thread::move_into_link_name_space(
                        self.file.as_fd(),
                        Some(LinkNameSpaceType::Network),
                    )
                    .map_err(|e| Error::Enter {
                        path: self.path.clone(),
                        source: e.into(),
                    })?;
                    Ok(f())
                })
                .map_err(|source| Error::Thread {
                    path: self.path.clone(),
                    source,
                })?;
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Moves the calling thread into this namespace for good: the threads and processes it
    /// starts afterwards are born there. For a process (or a test) that lives in one
    /// namespace; an agent serving many pods' namespaces uses [`NetNs::run`] instead.
    pub fn enter(&self) -> Result<()> {
        rustix::thread::move_into_link_name_space(
            self.file.as_fd(),
            Some(LinkNameSpaceType::Network),
        )
        .map_err(|e| Error::Enter {
            path: self.path.clone(),
            source: e.into(),
        })
    }

    /// A TCP listener on `addr` inside the namespace (blocking; set it non-blocking before
    /// handing it to an async runtime).
    pub fn bind_tcp(&self, addr: SocketAddr) -> Result<TcpListener> {
        self.run(|| TcpListener::bind(addr))?
            .map_err(|source| self.socket_err("listen tcp", addr, source))
    }

    /// A UDP socket bound to `addr` inside the namespace.
    pub fn bind_udp(&self, addr: SocketAddr) -> Result<UdpSocket> {
        self.run(|| UdpSocket::bind(addr))?
            .map_err(|source| self.socket_err("listen udp", addr, source))
    }

    /// A TCP connection to `addr` made from inside the namespace, giving up after `timeout`.
    pub fn connect_tcp(&self, addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
        self.run(|| TcpStream::connect_timeout(&addr, timeout))?
            .map_err(|source| self.socket_err("dial tcp", addr, source))
    }

    /// Brings the namespace's loopback interface (`lo`) up, which also gives it `127.0.0.1`
    /// and `::1`. Idempotent.
    pub fn set_loopback_up(&self) -> Result<()> {
        self.run(crate::link::set_loopback_up)?
            .map_err(|source| Error::Loopback {
                path: self.path.clone(),
                source,
            })
    }

    fn socket_err(&self, op: &'static str, addr: SocketAddr, source: io::Error) -> Error {
        Error::Socket {
            op,
            addr,
            path: self.path.clone(),
            source,
        }
    }
}

/// Whether `path` is a pinned namespace (a file of nsfs). False for a missing path, a plain
/// file, or a pin whose mount is gone.
pub fn is_pinned(path: &Path) -> bool {
    File::open(path).is_ok_and(|f| on_nsfs(&f))
}

/// Unpins the namespace at `path`: detaches the bind mount and deletes the file. The namespace
/// itself ends once no socket, thread or handle holds it. A missing path is not an error, so
/// removal can be repeated after a crash.
pub fn remove(path: &Path) -> Result<()> {
    let err = |source| Error::Remove {
        path: path.to_owned(),
        source,
    };
    match rustix::mount::unmount(path, UnmountFlags::DETACH) {
        // EINVAL: not a mount point (a pin whose mount was already undone).
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(err(e.into())),
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(err(e)),
        _ => Ok(()),
    }
}

/// On a short-lived thread: a new network namespace, bind-mounted on the file at `path`.
fn pin_new_namespace(path: &Path) -> Result<()> {
    let create_err = |step, e: rustix::io::Errno| Error::Create {
        path: path.to_owned(),
        step,
        source: e.into(),
    };
    let thread = std::thread::Builder::new().name("netns-create".into());
    std::thread::scope(|scope| {
        let made = thread.spawn_scoped(scope, || {
            // SAFETY: `unshare_unsafe` is unsafe because of `CLONE_FILES`, which would give this
            // thread a descriptor table of its own; only `CLONE_NEWNET` is passed, which moves
            // this thread alone into a new network namespace and shares everything else.
            unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) }
                .map_err(|e| create_err("unshare", e))?;
            rustix::mount::mount_bind("/proc/thread-self/ns/net", path)
                .map_err(|e| create_err("mount", e))
        });
        made.map_err(|source| Error::Thread {
            path: path.to_owned(),
            source,
        })?
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn on_nsfs(file: &File) -> bool {
    rustix::fs::fstatfs(file).is_ok_and(|s| s.f_type == NSFS_MAGIC)
}
