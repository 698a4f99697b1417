//! Running one plugin: its environment, its configuration on stdin, its answer on stdout,
//! under a deadline and with a bounded answer.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The largest answer read from a plugin's stdout (results are a few KiB).
const MAX_ANSWER_BYTES: u64 = 1 << 20;
/// How much of a plugin's stderr is kept for an error.
const MAX_STDERR_BYTES: u64 = 16 << 10;

/// Why a plugin did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// No file of the plugin's name in any bin directory.
    #[error(
        "failed to find plugin {plugin:?} in path [{dirs}]; install the network add-on's plugins there, or pass --cni-bin-dir"
    )]
    NotFound {
        /// The plugin's type.
        plugin: String,
        /// The directories searched.
        dirs: String,
    },
    /// The plugin could not be started or talked to.
    #[error("plugin {plugin} could not be run: {source}")]
    Spawn {
        /// The plugin's path.
        plugin: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The plugin ran past its deadline and was killed.
    #[error("plugin {plugin} {command} did not finish within {after:?} and was killed")]
    Timeout {
        /// The plugin's type.
        plugin: String,
        /// `ADD` or `DEL`.
        command: &'static str,
        /// The deadline.
        after: Duration,
    },
    /// The plugin answered with a CNI error.
    #[error("plugin type={plugin:?} failed ({command}): {msg}{details} (CNI error code {code})")]
    Failed {
        /// The plugin's type.
        plugin: String,
        /// `ADD` or `DEL`.
        command: &'static str,
        /// The CNI error code.
        code: u64,
        /// Its message.
        msg: String,
        /// `: details`, when given.
        details: String,
    },
    /// The plugin failed without a CNI error on stdout.
    #[error("plugin type={plugin:?} failed ({command}): {status}: {stderr}")]
    Crashed {
        /// The plugin's type.
        plugin: String,
        /// `ADD` or `DEL`.
        command: &'static str,
        /// How it ended.
        status: ExitStatus,
        /// What it wrote on stderr (bounded).
        stderr: String,
    },
    /// The answer was over the size limit.
    #[error("plugin type={plugin:?} wrote more than {MAX_ANSWER_BYTES} bytes on stdout")]
    TooLarge {
        /// The plugin's type.
        plugin: String,
    },
}

/// One run of a plugin.
pub(crate) struct Invocation<'a> {
    /// The plugin's type (its file name).
    pub plugin: &'a str,
    /// `ADD` or `DEL`.
    pub command: &'static str,
    /// `CNI_*` variables other than `CNI_COMMAND`.
    pub env: Vec<(&'static str, String)>,
    /// The configuration written on stdin.
    pub stdin: Vec<u8>,
    /// The deadline for the whole run.
    pub timeout: Duration,
}

/// Finds `plugin` in `dirs`, as libcni's FindInPath does (the first regular file of that name).
pub(crate) fn find(plugin: &str, dirs: &[PathBuf]) -> Result<PathBuf, PluginError> {
    dirs.iter()
        .map(|d| d.join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| PluginError::NotFound {
            plugin: plugin.to_string(),
            dirs: dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(" "),
        })
}

/// Runs the plugin at `path`; its stdout on success.
pub(crate) fn run(path: &Path, call: &Invocation<'_>) -> Result<Vec<u8>, PluginError> {
    let spawn_err = |source| PluginError::Spawn {
        plugin: path.to_owned(),
        source,
    };
    let mut child = Command::new(path)
        .env("CNI_COMMAND", call.command)
        .envs(call.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let input = call.stdin.clone();
    // The plugin may leave its stdin unread, or fill a pipe before it reads: each stream has a
    // thread of its own so none of them can block the deadline.
    let writer = std::thread::spawn(move || stdin.map(|mut s| s.write_all(&input)));
    let out = std::thread::spawn(move || read_bounded(stdout, MAX_ANSWER_BYTES + 1));
    let err = std::thread::spawn(move || read_bounded(stderr, MAX_STDERR_BYTES));
    let status = wait_until(&mut child, call.timeout).map_err(spawn_err)?;
    let _ = writer.join();
    let answer = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let Some(status) = status else {
        return Err(PluginError::Timeout {
            plugin: call.plugin.to_string(),
            command: call.command,
            after: call.timeout,
        });
    };
    if answer.len() as u64 > MAX_ANSWER_BYTES {
        return Err(PluginError::TooLarge {
            plugin: call.plugin.to_string(),
        });
    }
    if status.success() {
        return Ok(answer);
    }
    Err(failure(call, status, &answer, &stderr))
}

/// Waits for the child until `timeout`; kills it and returns `None` past that.
fn wait_until(
    child: &mut std::process::Child,
    timeout: Duration,
) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn read_bounded(stream: Option<impl Read>, limit: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Some(s) = stream {
        let _ = s.take(limit).read_to_end(&mut bytes);
    }
    bytes
}

/// The plugin's CNI error from its stdout, else its exit status and stderr.
fn failure(call: &Invocation<'_>, status: ExitStatus, answer: &[u8], stderr: &[u8]) -> PluginError {
    #[derive(serde::Deserialize)]
    struct CniError {
        code: u64,
        #[serde(default)]
        msg: String,
        #[serde(default)]
        details: String,
    }
    match serde_json::from_slice::<CniError>(answer) {
        Ok(e) => PluginError::Failed {
            plugin: call.plugin.to_string(),
            command: call.command,
            code: e.code,
            msg: e.msg,
            details: match e.details.is_empty() {
                true => String::new(),
                false => format!(": {}", e.details),
            },
        },
        Err(_) => PluginError::Crashed {
            plugin: call.plugin.to_string(),
            command: call.command,
            status,
            stderr: String::from_utf8_lossy(stderr).trim().to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn call(timeout: Duration) -> Invocation<'static> {
        Invocation {
            plugin: "p",
            command: "ADD",
            env: vec![("CNI_IFNAME", "eth0".into())],
            stdin: b"{\"x\":1}".to_vec(),
            timeout,
        }
    }

    #[test]
    fn a_plugin_reads_its_config_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(dir.path(), "p", "cat; echo \" $CNI_COMMAND $CNI_IFNAME\"");
        let out = run(&p, &call(Duration::from_secs(30))).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "{\"x\":1} ADD eth0\n");
    }

    #[test]
    fn failures_carry_the_cni_error_or_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(
            dir.path(),
            "p",
            r#"echo '{"code":7,"msg":"no IPs left","details":"range full"}'; exit 1"#,
        );
        let err = run(&p, &call(Duration::from_secs(30))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "plugin type=\"p\" failed (ADD): no IPs left: range full (CNI error code 7)"
        );
        let p = script(dir.path(), "q", "echo oops >&2; exit 3");
        let err = run(&p, &call(Duration::from_secs(30))).unwrap_err();
        assert!(matches!(err, PluginError::Crashed { .. }), "{err}");
        assert!(err.to_string().contains("oops"), "{err}");
    }

    #[test]
    fn a_plugin_that_hangs_is_killed_at_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(dir.path(), "p", "exec sleep 600");
        let err = run(&p, &call(Duration::from_millis(300))).unwrap_err();
        assert!(matches!(err, PluginError::Timeout { .. }), "{err}");
    }

    #[test]
    fn answers_are_bounded_and_plugins_found_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(dir.path(), "p", "exec yes");
        let err = run(&p, &call(Duration::from_secs(60))).unwrap_err();
        // `yes` never ends: the deadline or the size bound stops it, never memory.
        assert!(
            matches!(
                err,
                PluginError::Timeout { .. } | PluginError::TooLarge { .. }
            ),
            "{err}"
        );
        let dirs = [dir.path().join("none"), dir.path().to_owned()];
        assert_eq!(find("p", &dirs).unwrap(), p);
        let err = find("bridge", &dirs).unwrap_err().to_string();
        assert!(err.contains("failed to find plugin \"bridge\""), "{err}");
    }
}
