//! Several machines on this one, for the multi-node tests: each host is a network namespace
//! the test creates, with a veth to a Linux bridge in a "switch" namespace of its own and an
//! address of [`SUBNET`]. Nothing is added to the machine's own namespace, so no route leads
//! from it to any host, and no address outside the lab is ever dialled.
//!
//! Programs run in a host through `nsenter --net`: they get the host's network and keep the
//! machine's files and mounts, so the test sees what they leave behind (a pinned pod
//! namespace, an IPAM allocation). Dropping the lab kills every process whose network is one
//! of its namespaces (pods' namespaces pinned under its folder included), runs the teardown
//! steps registered with [`Lab::on_teardown`], unmounts what is left under its folder and
//! deletes its namespaces. A lab left by a test that was killed is removed by the next one.
#![allow(dead_code)]

pub mod cluster;
pub mod metrics;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The switch's network; host `n` gets `10.99.0.n`.
pub const SUBNET: &str = "10.99.0.0/24";
/// Where `ip netns` pins namespaces.
const NETNS_DIR: &str = "/run/netns";
/// The prefix of every namespace and folder a lab creates: `wlab<pid>-<lab>-<name>`.
const PREFIX: &str = "wlab";
/// The labs this process has made, numbering their names.
static LABS: AtomicUsize = AtomicUsize::new(0);

/// A host of the lab: a network namespace with an address on the switch.
#[derive(Clone, Debug)]
pub struct Host {
    /// The name the test gives it (also its Node's name, for nodes).
    pub name: String,
    /// The namespace's name under /run/netns.
    pub ns: String,
    /// Its address on the switch.
    pub ip: Ipv4Addr,
}

impl Host {
    /// The pinned namespace.
    pub fn netns(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.ns)
    }

    /// `program` to run in this host's network.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.netns().display()))
            .arg("--")
            .arg(program);
        command
    }

    /// `program` in this host's network, killed after `limit`.
    pub fn command_within(&self, limit: Duration, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("timeout");
        command
            .args(["-s", "KILL", &limit.as_secs().max(1).to_string(), "nsenter"])
            .arg(format!("--net={}", self.netns().display()))
            .arg("--")
            .arg(program);
        command
    }

    /// Runs `args` (a program and its arguments) here within 30 s; fails unless it succeeds.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let (program, rest) = args.split_first().context("no program")?;
        let output = self
            .command_within(Duration::from_secs(30), program)
            .args(rest)
            .output()
            .with_context(|| format!("running {args:?} in {}", self.name))?;
        ok(&output).with_context(|| format!("{args:?} in {}", self.name))
    }
}

/// A process the lab started in the background; killed with its process group when the lab
/// is dropped, or by [`Lab::kill`].
struct Background {
    name: String,
    child: Child,
}

/// The lab: its folder, switch, hosts and background processes.
pub struct Lab {
    id: String,
    dir: tempfile::TempDir,
    switch: Host,
    hosts: Vec<Host>,
    background: Vec<Background>,
    teardown: Vec<Box<dyn FnOnce()>>,
}

impl Lab {
    /// Creates the switch (a namespace holding bridge `br0`), after removing what a killed
    /// earlier lab left.
    pub fn new() -> Result<Lab> {
        remove_stale_labs();
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let id = format!("{PREFIX}{}-{n}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix(&format!("{id}-"))
            .tempdir()?;
        std::fs::create_dir_all(dir.path().join("logs"))?;
        let switch = Host {
            name: "switch".into(),
            ns: format!("{id}-switch"),
            ip: Ipv4Addr::UNSPECIFIED,
        };
        let mut lab = Lab {
            id,
            dir,
            switch: switch.clone(),
            hosts: Vec::new(),
            background: Vec::new(),
            teardown: Vec::new(),
        };
        ip(&["netns", "add", &switch.ns]).context("creating a network namespace (needs root)")?;
        ip(&["-n", &switch.ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &switch.ns, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch.ns, "link", "set", "br0", "up"])?;
        lab.hosts.push(switch);
        Ok(lab)
    }

    /// The lab's folder (removed with the lab).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A new host `name` at `10.99.0.<n>`: its namespace, loopback up, `eth0` plugged into
    /// the switch, forwarding on (a node routes its pods' traffic).
    pub fn host(&mut self, name: &str, n: u8) -> Result<Host> {
        let host = Host {
            name: name.into(),
            ns: format!("{}-{name}", self.id),
            ip: Ipv4Addr::new(10, 99, 0, n),
        };
        ip(&["netns", "add", &host.ns])?;
        self.hosts.push(host.clone());
        let port = format!("p{n}");
        let sw = &self.switch.ns;
        let mut veth = vec![
            "-n",
            sw.as_str(),
            "link",
            "add",
            port.as_str(),
            "type",
            "veth",
        ];
        veth.extend(["peer", "name", "eth0", "netns", host.ns.as_str()]);
        ip(&veth)?;
        ip(&["-n", sw, "link", "set", &port, "master", "br0", "up"])?;
        ip(&["-n", &host.ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &host.ns,
            "addr",
            "add",
            &format!("{}/24", host.ip),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &host.ns, "link", "set", "eth0", "up"])?;
        host.run(&["sh", "-c", "echo 1 >/proc/sys/net/ipv4/ip_forward"])?;
        Ok(host)
    }

    /// Starts `command` in the background as `name`, its output appended to
    /// `logs/<name>.log`.
    pub fn spawn(&mut self, name: &str, mut command: Command) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(name))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.background.push(Background {
            name: name.into(),
            child,
        });
        Ok(())
    }

    /// Sends SIGKILL to background process `name` and its process group, and waits for it
    /// to end.
    pub fn kill(&mut self, name: &str) -> Result<()> {
        let mut process = self.take(name)?;
        kill_group(&mut process.child);
        Ok(())
    }

    /// Sends SIGKILL to background process `name` alone, as `kill -9 PID` does (what it
    /// started lives on), and waits for it to end.
    pub fn kill_process(&mut self, name: &str) -> Result<()> {
        let mut process = self.take(name)?;
        process.child.kill()?;
        process.child.wait()?;
        Ok(())
    }

    fn take(&mut self, name: &str) -> Result<Background> {
        let index = self
            .background
            .iter()
            .position(|b| b.name == name)
            .with_context(|| format!("no background process {name}"))?;
        Ok(self.background.remove(index))
    }

    /// The process id of background process `name` (a program started through
    /// [`Host::command`] is that program: nsenter execs it).
    pub fn pid(&self, name: &str) -> Option<u32> {
        let found = self.background.iter().find(|b| b.name == name);
        found.map(|b| b.child.id())
    }

    /// Whether background process `name` is still running.
    pub fn running(&mut self, name: &str) -> bool {
        let found = self.background.iter_mut().find(|b| b.name == name);
        found.is_some_and(|b| matches!(b.child.try_wait(), Ok(None)))
    }

    /// The log file of background process `name`.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join("logs").join(format!("{name}.log"))
    }

    /// The last `lines` lines of background process `name`'s log.
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let start = all.len().saturating_sub(lines);
        format!("---- {name} ----\n{}", all[start..].join("\n"))
    }

    /// Registers a step for the teardown (a `down` script), run after every process of the
    /// lab is killed, the last registered first.
    pub fn on_teardown(&mut self, step: impl FnOnce() + 'static) {
        self.teardown.push(Box::new(step));
    }

    fn namespaces(&self) -> Vec<PathBuf> {
        self.hosts.iter().map(Host::netns).collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for mut process in self.background.drain(..) {
            kill_group(&mut process.child);
        }
        let mut namespaces = self.namespaces();
        namespaces.extend(nsfs_mounts_under(self.dir.path()));
        kill_inside(&namespaces);
        while let Some(step) = self.teardown.pop() {
            step();
        }
        // A process the steps started, or one that raced the first sweep.
        kill_inside(&namespaces);
        unmount_under(self.dir.path());
        for host in self.hosts.iter().rev() {
            let _ = ip(&["netns", "delete", &host.ns]);
        }
    }
}

/// Removes what labs whose test process is gone left: the processes in their namespaces,
/// the mounts in their folders, the folders and the namespaces.
fn remove_stale_labs() {
    let stale = |dir: &Path| -> Vec<PathBuf> {
        let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
        let paths = entries.map(|e| e.path());
        paths.filter(|p| stale_lab_pid(p).is_some()).collect()
    };
    let namespaces = stale(Path::new(NETNS_DIR));
    let folders = stale(&std::env::temp_dir());
    let mut inside = namespaces.clone();
    for folder in &folders {
        inside.extend(nsfs_mounts_under(folder));
    }
    kill_inside(&inside);
    for folder in &folders {
        unmount_under(folder);
        let _ = std::fs::remove_dir_all(folder);
    }
    for path in namespaces {
        if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
            let _ = ip(&["netns", "delete", name]);
        }
    }
}

/// The pid in the name of a lab's namespace or folder, when that process no longer exists.
fn stale_lab_pid(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    let pid: u32 = name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()?;
    let alive = Path::new(&format!("/proc/{pid}")).exists();
    (!alive).then_some(pid)
}

/// Kills (SIGKILL) every process whose network namespace is one of `namespaces` (pinned
/// files), and waits until they are gone (at most 10 s).
pub fn kill_inside(namespaces: &[PathBuf]) {
    let inodes: BTreeSet<u64> = namespaces
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.ino())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let inside = processes_in(&inodes);
        if inside.is_empty() || Instant::now() > deadline {
            return;
        }
        let pids = inside.iter().map(u32::to_string);
        let _ = Command::new("kill").arg("-KILL").args(pids).output();
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pids whose network namespace's inode is in `inodes`.
fn processes_in(inodes: &BTreeSet<u64>) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
            let inode = link.and_then(|l| net_inode(&l.to_string_lossy()));
            inode.is_some_and(|i| inodes.contains(&i))
        })
        .collect()
}

/// The inode in a `net:[4026531840]` link.
fn net_inode(link: &str) -> Option<u64> {
    link.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// The mount points under `dir` (deepest first) from /proc/self/mountinfo, with their type.
fn mounts_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.to_string_lossy().into_owned();
    let mut found: Vec<(PathBuf, String)> = text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let point = fields.get(4)?;
            let dash = fields.iter().position(|f| *f == "-")?;
            let kind = fields.get(dash + 1)?;
            point
                .starts_with(&prefix)
                .then(|| (PathBuf::from(point), kind.to_string()))
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0));
    found
}

/// The network namespaces pinned under `dir` (pods' namespaces of agents and containerd).
pub fn nsfs_mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mounts = mounts_under(dir).into_iter();
    mounts
        .filter(|(_, t)| t == "nsfs")
        .map(|(p, _)| p)
        .collect()
}

/// Lazily unmounts everything under `dir`, deepest first.
fn unmount_under(dir: &Path) {
    for (point, _) in mounts_under(dir) {
        let _ = Command::new("umount").arg("-l").arg(&point).output();
    }
}

/// Kills the process group `child` leads (it was spawned with `process_group(0)`).
fn kill_group(child: &mut Child) {
    let group = format!("-{}", child.id());
    let _ = Command::new("kill").args(["-KILL", "--", &group]).output();
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `ip ARGS`.
pub fn ip(args: &[&str]) -> Result<String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    ok(&output).with_context(|| format!("ip {}", args.join(" ")))
}

/// The stdout of a successful command, or an error with its stderr.
pub fn ok(output: &Output) -> Result<String> {
    if !output.status.success() {
        bail!(
            "{}: {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Polls `attempt` every 500 ms until it succeeds, failing after `limit` with the last error.
pub fn eventually_ok<T>(
    limit: Duration,
    what: &str,
    mut attempt: impl FnMut() -> Result<T>,
) -> Result<T> {
    let mut last = None;
    let found = eventually(limit, what, || attempt().map_err(|e| last = Some(e)).ok());
    found.map_err(|e| match last {
        Some(last) => last.context(e),
        None => e,
    })
}

/// Polls `check` every 500 ms until it returns Some, failing after `limit`.
pub fn eventually<T>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
