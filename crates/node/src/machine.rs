//! Readings of the machine the agent runs on: CPUs, memory, the data disk, process ids, and
//! the identifiers the kubelet reports in `nodeInfo`. Parsing is pure; reading is thin.

use std::path::Path;

/// Errors reading the machine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file under /proc or /sys could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// /proc/meminfo without MemTotal or MemAvailable.
    #[error("/proc/meminfo has no MemTotal/MemAvailable")]
    Meminfo,
    /// statvfs(2) on the data directory failed.
    #[error("statvfs {path}: {source}")]
    Statvfs {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One reading of the machine's resources; sizes in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Readings {
    /// CPUs this process may run on.
    pub cpus: u64,
    /// MemTotal.
    pub memory_total: u64,
    /// MemAvailable.
    pub memory_available: u64,
    /// Size of the file system holding the data directory.
    pub fs_total: u64,
    /// Bytes available to unprivileged users there.
    pub fs_available: u64,
    /// Inodes there.
    pub fs_inodes: u64,
    /// Free inodes there.
    pub fs_inodes_free: u64,
    /// `kernel.pid_max`.
    pub pid_max: u64,
    /// Processes running now.
    pub pids_running: u64,
}

/// What the kubelet reports in `nodeInfo` about the machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemInfo {
    /// /etc/machine-id.
    pub machine_id: String,
    /// /sys/class/dmi/id/product_uuid when readable.
    pub system_uuid: String,
    /// /proc/sys/kernel/random/boot_id.
    pub boot_id: String,
    /// /proc/sys/kernel/osrelease.
    pub kernel_version: String,
    /// PRETTY_NAME from /etc/os-release.
    pub os_image: String,
}

/// Reads the resources now, with the data directory's file system.
pub fn read(data_dir: &Path) -> Result<Readings> {
    let meminfo = read_file("/proc/meminfo")?;
    let (memory_total, memory_available) = parse_meminfo(&meminfo).ok_or(Error::Meminfo)?;
    let fs = statvfs(data_dir)?;
    Ok(Readings {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
        memory_total,
        memory_available,
        fs_total: fs.total,
        fs_available: fs.available,
        fs_inodes: fs.inodes,
        fs_inodes_free: fs.inodes_free,
        pid_max: read_file("/proc/sys/kernel/pid_max")?
            .trim()
            .parse()
            .unwrap_or(32768),
        pids_running: count_pids(),
    })
}

/// Reads the identifiers; a missing file leaves its field empty, as the kubelet does.
pub fn system_info() -> SystemInfo {
    let first_line = |path: &str| {
        read_file(path)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    SystemInfo {
        machine_id: first_line("/etc/machine-id"),
        system_uuid: first_line("/sys/class/dmi/id/product_uuid"),
        boot_id: first_line("/proc/sys/kernel/random/boot_id"),
        kernel_version: first_line("/proc/sys/kernel/osrelease"),
        os_image: parse_os_release(&read_file("/etc/os-release").unwrap_or_default()),
    }
}

/// MemTotal and MemAvailable in bytes from the text of /proc/meminfo.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kib * 1024)
        })
    };
    Some((field("MemTotal")?, field("MemAvailable")?))
}

/// PRETTY_NAME from the text of /etc/os-release, or "Linux".
pub fn parse_os_release(text: &str) -> String {
    text.lines()
        .find_map(|line| line.strip_prefix("PRETTY_NAME="))
        .map(|value| value.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

fn read_file(path: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.into(),
        source,
    })
}

fn count_pids() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count() as u64
}

struct FsStats {
    total: u64,
    available: u64,
    inodes: u64,
    inodes_free: u64,
}

// Linux on 64-bit targets only: the statvfs fields are u64 there.
fn statvfs(path: &Path) -> Result<FsStats> {
    use std::os::unix::ffi::OsStrExt;
    let err = |source| Error::Statvfs {
        path: path.display().to_string(),
        source,
    };
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call, and `stats` points to
    // writable memory of the size statvfs(2) fills; it is read only after a 0 return.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stats.as_mut_ptr()) };
    if rc != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    // SAFETY: statvfs returned 0, so it initialised the whole struct.
    let stats = unsafe { stats.assume_init() };
    let block = stats.f_frsize;
    Ok(FsStats {
        total: stats.f_blocks * block,
        available: stats.f_bavail * block,
        inodes: stats.f_files,
        inodes_free: stats.f_ffree,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_in_bytes() {
        let text = "MemTotal:       16302464 kB\nMemFree:  100 kB\nMemAvailable:    8000000 kB\n";
        assert_eq!(parse_meminfo(text), Some((16302464 * 1024, 8000000 * 1024)));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
        assert_eq!(parse_meminfo("MemTotalX: 1 kB\nMemAvailable: 1 kB\n"), None);
    }

    #[test]
    fn os_release_pretty_name() {
        let text = "NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(parse_os_release(text), "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(parse_os_release(""), "Linux");
    }

    #[test]
    fn reads_this_machine() {
        let readings = read(Path::new("/")).unwrap();
        assert!(readings.cpus >= 1);
        assert!(readings.memory_total >= readings.memory_available);
        assert!(readings.fs_total >= readings.fs_available);
        assert!(readings.pids_running >= 1);
    }
}
