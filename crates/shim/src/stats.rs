//! CPU and memory numbers of the shim process, as cgroups v2 metrics (the type containerd's
//! CRI plugin reads for the kubelet's summary API and `kubectl top`).

use containerd_shim_protos::cgroups_v2::metrics::{CPUStat, MemoryStat, Metrics, PidsStat};

/// Errors of reading the process's statistics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `/proc` file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A `/proc` file had an unexpected shape.
    #[error("cannot parse {0}")]
    Parse(String),
}

/// CPU time and resident memory of one process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// User CPU time, microseconds.
    pub user_usec: u64,
    /// System CPU time, microseconds.
    pub system_usec: u64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
}

/// The shim process's usage now.
pub fn current() -> Result<Usage, Error> {
    of_process(std::process::id())
}

/// The usage of process `pid` now (the shim's own for a wasm task, a native container's init
/// process for a sidecar).
pub fn of_process(pid: u32) -> Result<Usage, Error> {
    let read = |path: String| {
        std::fs::read_to_string(&path).map_err(|source| Error::Read { path, source })
    };
    // SAFETY: sysconf has no preconditions; it only reads system configuration.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let stat = format!("/proc/{pid}/stat");
    let statm = format!("/proc/{pid}/statm");
    let (user, system) = parse_stat(&read(stat.clone())?).ok_or(Error::Parse(stat))?;
    let pages = parse_statm(&read(statm.clone())?).ok_or(Error::Parse(statm))?;
    let usec_per_tick = 1_000_000 / u64::try_from(ticks).unwrap_or(100).max(1);
    Ok(Usage {
        user_usec: user * usec_per_tick,
        system_usec: system * usec_per_tick,
        rss_bytes: pages * u64::try_from(page).unwrap_or(4096),
    })
}

/// `utime` and `stime` (clock ticks) from `/proc/PID/stat`; the command name may hold spaces
/// and parentheses, so fields are counted after its last `)`.
pub fn parse_stat(text: &str) -> Option<(u64, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

/// The resident pages (second field) of `/proc/PID/statm`.
pub fn parse_statm(text: &str) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse().ok()
}

/// `usage` as cgroups v2 metrics, with `limit` (bytes, 0 for none) as the memory limit.
pub fn metrics(usage: Usage, limit: u64) -> Metrics {
    let mut m = Metrics::new();
    let mut cpu = CPUStat::new();
    cpu.usage_usec = usage.user_usec + usage.system_usec;
    cpu.user_usec = usage.user_usec;
    cpu.system_usec = usage.system_usec;
    m.cpu = Some(cpu).into();
    let mut memory = MemoryStat::new();
    memory.usage = usage.rss_bytes;
    memory.anon = usage.rss_bytes;
    memory.usage_limit = if limit == 0 { u64::MAX } else { limit };
    m.memory = Some(memory).into();
    let mut pids = PidsStat::new();
    pids.current = 1;
    m.pids = Some(pids).into();
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "1234 (a (weird) name) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 5 0 100 0 0";
        assert_eq!(parse_stat(stat), Some((250, 75)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_statm("5000 1200 300 1 0 900 0\n"), Some(1200));
        let now = current().unwrap();
        assert!(now.rss_bytes > 0);
    }

    #[test]
    fn builds_metrics() {
        let m = metrics(
            Usage {
                user_usec: 3,
                system_usec: 4,
                rss_bytes: 10,
            },
            0,
        );
        assert_eq!(m.cpu.usage_usec, 7);
        assert_eq!(m.memory.usage, 10);
        assert_eq!(m.memory.usage_limit, u64::MAX);
    }
}
