//! Readings of the machine the agent runs on: CPUs, memory, the data disk, process ids, and
//! the identifiers the kubelet reports in `nodeInfo`; CPU time, memory use and the agent's own
//! process for the resource metrics. Parsing is pure; reading is thin.

use std::path::Path;
use std::time::Duration;

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
    /// A /proc file without the fields we read.
    #[error("{0} is not in the expected format")]
    Format(&'static str),
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

/// The machine's CPU time, from /proc/stat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuReading {
    /// CPU time used since boot, over all CPUs: user, nice, system, irq, softirq and steal
    /// time (everything but idle and iowait).
    pub busy: Duration,
    /// When the machine booted, in seconds since the epoch (`btime`).
    pub boot_time: u64,
}

/// The machine's memory use, from /proc/meminfo and /proc/vmstat; sizes in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryReading {
    /// MemTotal.
    pub total: u64,
    /// MemFree.
    pub free: u64,
    /// Inactive(file): page cache the kernel reclaims first.
    pub inactive_file: u64,
    /// AnonPages: anonymous memory mapped by processes.
    pub anon: u64,
    /// `pgfault` of /proc/vmstat.
    pub page_faults: u64,
    /// `pgmajfault` of /proc/vmstat.
    pub major_page_faults: u64,
}

impl MemoryReading {
    /// What the kubelet calls usage: all memory in use, page cache included.
    pub fn usage(&self) -> u64 {
        self.total.saturating_sub(self.free)
    }

    /// The working set, as the kubelet (cAdvisor) computes it: usage less inactive file pages.
    pub fn working_set(&self) -> u64 {
        self.usage().saturating_sub(self.inactive_file)
    }
}

/// The agent's own process, from /proc/self.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ProcessReading {
    /// User and system CPU time.
    pub cpu: Duration,
    /// Resident set size in bytes.
    pub resident_bytes: u64,
    /// Virtual memory size in bytes.
    pub virtual_bytes: u64,
    /// Start time in seconds since the epoch.
    pub start_time: f64,
    /// Threads.
    pub threads: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit of open file descriptors.
    pub max_fds: u64,
}

/// Reads the machine's CPU time now.
pub fn cpu() -> Result<CpuReading> {
    let text = read_file("/proc/stat")?;
    parse_proc_stat(&text, clock_ticks()).ok_or(Error::Format("/proc/stat"))
}

/// Reads the machine's memory use now.
pub fn memory() -> Result<MemoryReading> {
    let meminfo = read_file("/proc/meminfo")?;
    let vmstat = read_file("/proc/vmstat").unwrap_or_default();
    parse_memory(&meminfo, &vmstat).ok_or(Error::Meminfo)
}

/// Reads the agent's own process now.
pub fn process() -> Result<ProcessReading> {
    let stat = read_file("/proc/self/stat")?;
    let boot_time = cpu()?.boot_time;
    let mut reading = parse_process_stat(&stat, clock_ticks(), page_size(), boot_time)
        .ok_or(Error::Format("/proc/self/stat"))?;
    reading.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    reading.max_fds = max_fds();
    Ok(reading)
}

/// The machine's busy CPU time and boot time from the text of /proc/stat, whose times are
/// in clock ticks (`ticks_per_second`, USER_HZ).
pub fn parse_proc_stat(text: &str, ticks_per_second: u64) -> Option<CpuReading> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is counted in user).
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|i| ticks.get(*i))
        .sum();
    let boot_time = text
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(CpuReading {
        busy: ticks_duration(busy, ticks_per_second),
        boot_time,
    })
}

/// The memory use from the texts of /proc/meminfo and /proc/vmstat (page faults are 0 when
/// vmstat lacks them).
pub fn parse_memory(meminfo: &str, vmstat: &str) -> Option<MemoryReading> {
    let kib = |name: &str| {
        meminfo.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kib * 1024)
        })
    };
    let count = |name: &str| {
        vmstat.lines().find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok())?
        })
    };
    Some(MemoryReading {
        total: kib("MemTotal")?,
        free: kib("MemFree")?,
        inactive_file: kib("Inactive(file)").unwrap_or(0),
        anon: kib("AnonPages").unwrap_or(0),
        page_faults: count("pgfault").unwrap_or(0),
        major_page_faults: count("pgmajfault").unwrap_or(0),
    })
}

/// A process from the text of its /proc/PID/stat (fields as proc(5) numbers them; the
/// command name may hold spaces and parentheses, so fields count from the last `)`).
pub fn parse_process_stat(
    text: &str,
    ticks_per_second: u64,
    page_size: u64,
    boot_time: u64,
) -> Option<ProcessReading> {
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is field 3 (state): field N is fields[N - 3].
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let cpu_ticks = field(14)? + field(15)?;
    let started_ticks = field(22)?;
    let ticks = ticks_per_second.max(1) as f64;
    Some(ProcessReading {
        cpu: ticks_duration(cpu_ticks, ticks_per_second),
        resident_bytes: field(24)? * page_size,
        virtual_bytes: field(23)?,
        start_time: boot_time as f64 + started_ticks as f64 / ticks,
        threads: field(20)?,
        open_fds: 0,
        max_fds: 0,
    })
}

fn ticks_duration(ticks: u64, ticks_per_second: u64) -> Duration {
    let per_second = ticks_per_second.max(1);
    let nanos = u128::from(ticks) * 1_000_000_000 / u128::from(per_second);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// USER_HZ, the unit of /proc's CPU times.
fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a configuration value; it has no memory arguments.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

fn page_size() -> u64 {
    // SAFETY: as above, a configuration value without memory arguments.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
}

fn max_fds() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the call, which only writes it.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if rc != 0 {
        return 0;
    }
    limit.rlim_cur
}

/// Raises this process's soft limit of open files to its hard limit, as the Go runtime does for
/// the kubelet at start: the agent holds descriptors for every pod (its log files, a module's
/// preopened volumes, a wasi:http pod's listener), and the soft limit a service gets (1,024
/// under systemd) would stop it at a few hundred pods. Returns the soft limit before and after.
pub fn raise_open_files_limit() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the call, which only writes it.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid rlimit, only read by the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((before, limit.rlim_cur))
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
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in max_fds; then a valid rlimit, one below the hard limit (other tests
        // in this process keep far fewer files open).
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
            limit.rlim_cur = limit.rlim_max - 1;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
        let hard = limit.rlim_max;
        assert_eq!(raise_open_files_limit().unwrap(), (hard - 1, hard));
        assert_eq!(max_fds(), hard);
        assert_eq!(
            raise_open_files_limit().unwrap(),
            (hard, hard),
            "nothing left to raise"
        );
    }

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
    fn proc_stat_busy_time_and_boot_time() {
        let text = "cpu  100 20 30 5000 40 5 6 7 1 0\ncpu0 50 10 15 2500 20 2 3 3 0 0\n\
                    intr 1 2\nbtime 1700000000\nprocesses 10\n";
        let reading = parse_proc_stat(text, 100).unwrap();
        // user + nice + system + irq + softirq + steal = 168 ticks of 10 ms.
        assert_eq!(reading.busy, Duration::from_millis(1680));
        assert_eq!(reading.boot_time, 1_700_000_000);
        assert_eq!(parse_proc_stat("cpu  1 2 3\n", 100), None, "no btime");
        assert_eq!(parse_proc_stat("btime 1\n", 100), None, "no cpu line");
    }

    #[test]
    fn memory_use_and_working_set() {
        let meminfo = "MemTotal: 1000 kB\nMemFree: 200 kB\nMemAvailable: 600 kB\n\
                       Inactive(file): 300 kB\nAnonPages: 250 kB\n";
        let vmstat = "pgfault 42\npgmajfault 7\n";
        let memory = parse_memory(meminfo, vmstat).unwrap();
        assert_eq!(memory.usage(), 800 * 1024);
        assert_eq!(memory.working_set(), 500 * 1024);
        assert_eq!(memory.anon, 250 * 1024);
        assert_eq!((memory.page_faults, memory.major_page_faults), (42, 7));
        let bare = parse_memory("MemTotal: 1 kB\nMemFree: 2 kB\n", "").unwrap();
        assert_eq!((bare.usage(), bare.working_set()), (0, 0));
        assert_eq!(parse_memory("MemTotal: 1 kB\n", ""), None);
    }

    #[test]
    fn process_stat_fields_count_from_the_last_parenthesis() {
        let text = "4242 (wasm (node) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 0 0 20 0 12 0 1000 104857600 2560 18446744073709551615";
        let process = parse_process_stat(text, 100, 4096, 1_700_000_000).unwrap();
        assert_eq!(process.cpu, Duration::from_secs(3));
        assert_eq!(process.threads, 12);
        assert_eq!(process.start_time, 1_700_000_010.0);
        assert_eq!(process.virtual_bytes, 104_857_600);
        assert_eq!(process.resident_bytes, 2560 * 4096);
        assert_eq!(parse_process_stat("1 (x) S 1 2", 100, 4096, 0), None);
    }

    #[test]
    fn reads_this_machine_and_process() {
        let cpu = cpu().unwrap();
        assert!(cpu.busy > Duration::ZERO && cpu.boot_time > 0);
        let memory = memory().unwrap();
        assert!(memory.total > memory.working_set());
        let process = process().unwrap();
        assert!(process.resident_bytes > 0 && process.threads >= 1 && process.open_fds >= 3);
        assert!(process.start_time >= cpu.boot_time as f64);
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
