//! What the behaviour suites share: a runtime of the includer's engine and compilers
//! (`ENGINE`, `COMPILERS`, and `TIER`, the code its programs are loaded with), and running a
//! program to its end with its CRI log read back.

use std::path::Path;

use wasmlet_runtime::{ContainerSpec, LogConfig, Runtime, RuntimeConfig, Stdio};

pub fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig {
        max_instances: 200,
        compilers: super::COMPILERS,
        engine: super::ENGINE,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

pub struct Run {
    pub status: wasmlet_runtime::ExitStatus,
    pub log: Vec<(String, String, String)>,
    pub _dir: tempfile::TempDir,
}

impl Run {
    pub fn stdout(&self) -> Vec<&str> {
        self.log
            .iter()
            .filter(|(s, _, _)| s == "stdout")
            .map(|(_, _, t)| t.as_str())
            .collect()
    }
}

pub fn spec(args: &[&str], log: &Path) -> ContainerSpec {
    ContainerSpec {
        args: args.iter().map(|a| a.to_string()).collect(),
        stdio: Stdio {
            log: Some(LogConfig::new(log)),
            ..Stdio::default()
        },
        ..ContainerSpec::default()
    }
}

/// Parses CRI lines into (stream, tag, text), checking the timestamp.
pub fn entries(path: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let ts = parts.next().unwrap();
            chrono::DateTime::parse_from_rfc3339(ts).expect("RFC 3339 timestamp");
            let stream = parts.next().unwrap().to_owned();
            let tag = parts.next().unwrap().to_owned();
            (stream, tag, parts.next().unwrap_or("").to_owned())
        })
        .collect()
}

pub async fn run_with(
    wasm: &[u8],
    args: &[&str],
    edit: impl FnOnce(&mut ContainerSpec, &Path),
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("logs/0.log");
    let mut spec = spec(args, &log);
    edit(&mut spec, dir.path());
    let rt = runtime();
    let program = rt.load(wasm).unwrap();
    assert_eq!(
        program.loaded_tier(),
        super::TIER,
        "the code the suite runs on"
    );
    let status = rt.run(&program, spec).await.unwrap();
    Run {
        status,
        log: entries(&log),
        _dir: dir,
    }
}

pub async fn run(wasm: &[u8], args: &[&str]) -> Run {
    run_with(wasm, args, |_, _| {}).await
}

pub fn e(stream: &str, tag: &str, text: &str) -> (String, String, String) {
    (stream.into(), tag.into(), text.into())
}
