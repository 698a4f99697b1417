//! `wasmlet run`: run WebAssembly on this machine without a cluster.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use wasmlet_runtime::{
    CancellationToken, ContainerSpec, EngineKind, ExitReason, ExitStatus, Limits, Preopen, Program,
    ProgramKind, Runtime, RuntimeConfig, Stdio, Tier,
};

use crate::images::RegistryArgs;

/// Arguments of `wasmlet run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// A .wasm or .wat file, an image reference, or a Pod manifest (.yaml).
    pub target: PathBuf,
    /// Arguments passed to the module after `--`.
    #[arg(last = true)]
    pub args: Vec<String>,
    /// An environment variable for the guest (repeatable).
    #[arg(long = "env", short = 'e', value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// A host directory the guest may use: `host[:guest[:ro]]` (repeatable).
    #[arg(long = "dir", value_name = "HOST[:GUEST[:ro]]")]
    pub dirs: Vec<String>,
    /// Memory limit: bytes, or with a suffix (`64Mi`, `1Gi`, `500M`).
    #[arg(long, value_parser = parse_memory)]
    pub memory: Option<u64>,
    /// Wall-clock limit: seconds, or with a unit (`500ms`, `10s`, `2m`).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// WASI handles the guest may hold at once (open files and directories, sockets and their
    /// streams; default 4096); opening past it ends the guest with a trap naming it. A Pod's
    /// containers take the pod annotation `wasmlet.dev/max-descriptors` instead.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_descriptors: Option<u32>,
    /// The engine to run it on: `wasmtime` (modules and components) or `wasmer` (WASI
    /// preview 1 modules; a build with the `wasmer` feature). A Pod's containers take the pod
    /// annotation `wasmlet.dev/engine` instead.
    #[arg(long, default_value = "wasmtime", value_name = "ENGINE")]
    pub engine: EngineKind,
    /// Compile without reading or writing the compile cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Where a wasi:http component serves requests (one instance per request) until Ctrl-C.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
}

/// What `wasmlet run` was asked to run, told from the argument.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// A `.wasm` or `.wat` file on this machine.
    WasmFile(PathBuf),
    /// A Pod manifest (`.yaml`/`.yml`).
    PodManifest(PathBuf),
    /// An image reference in a registry or the local store.
    Image(String),
}

impl Target {
    /// Detects the kind of target: by extension, then an existing file is taken as wasm (its
    /// bytes decide), anything else as an image reference.
    pub fn detect(arg: &Path) -> Target {
        match arg.extension().and_then(|e| e.to_str()) {
            Some("wasm" | "wat") => Target::WasmFile(arg.into()),
            Some("yaml" | "yml") => Target::PodManifest(arg.into()),
            _ if arg.is_file() => Target::WasmFile(arg.into()),
            _ => Target::Image(arg.to_string_lossy().into_owned()),
        }
    }
}

/// Runs the target and returns the process exit code.
pub fn main(args: RunArgs, registry: &RegistryArgs) -> anyhow::Result<ExitCode> {
    match Target::detect(&args.target) {
        Target::WasmFile(path) => run_wasm_file(&path, &args),
        Target::PodManifest(path) => crate::run_pod::run_pod(&path, &args, registry),
        Target::Image(reference) => crate::run_pod::run_image(&reference, &args, registry),
    }
}

/// The instances a file's program may have at once: the requests `--listen` serves together
/// (one instance each; more wait for one to end), as many as the shim gives a pod.
const SERVED_AT_ONCE: u32 = 64;

fn run_wasm_file(path: &Path, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let tokio = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let config = RuntimeConfig {
        cache_dir: cache_dir(args.no_cache),
        max_instances: SERVED_AT_ONCE,
        engine: args.engine,
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(config)?;
    let program = runtime.load_file(path)?;
    let spec = container_spec(path, args);
    if program.kind() == ProgramKind::HttpComponent {
        tokio.block_on(serve(&runtime, &program, spec, args.listen))?;
        return Ok(ExitCode::SUCCESS);
    }
    let status = tokio.block_on(runtime.run(&program, spec))?;
    report(&status);
    finish_optimizing(&runtime, &program);
    Ok(exit_code(status.code))
}

/// A command that ran on baseline code (its first run: see `Runtime::load`) waits for
/// Cranelift's code to reach the compile cache before the process ends, so that its next run
/// starts on it.
pub(crate) fn finish_optimizing(runtime: &Runtime, program: &Program) {
    const OPTIMIZE_WITHIN: Duration = Duration::from_secs(600);
    if runtime.cache().is_none() || program.tier() == Tier::Optimized {
        return;
    }
    eprintln!("wasmlet: storing the optimised code in the compile cache for the next run");
    if program.wait_optimized(OPTIMIZE_WITHIN) != Tier::Optimized {
        eprintln!(
            "wasmlet: the optimised code is not ready; the next run starts on baseline code again"
        );
    }
}

/// Serves a wasi:http component on `addr` until SIGINT or SIGTERM; requests in flight then
/// get `HTTP_DRAIN` to finish while no new connection is accepted.
async fn serve(
    runtime: &Runtime,
    program: &Program,
    spec: ContainerSpec,
    addr: std::net::SocketAddr,
) -> anyhow::Result<()> {
    const HTTP_DRAIN: Duration = Duration::from_secs(2);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr} (pick another with --listen ADDR:PORT)"))?;
    eprintln!("wasmlet: serving wasi:http on http://{addr}/ (Ctrl-C stops)");
    let shutdown = CancellationToken::new();
    let server = runtime.serve_http(program, spec, listener, shutdown.clone());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return Ok(result?),
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    shutdown.cancel();
    server.await?;
    tokio::time::sleep(HTTP_DRAIN).await;
    Ok(())
}

fn container_spec(path: &Path, args: &RunArgs) -> ContainerSpec {
    let name = path
        .file_name()
        .map_or_else(|| path.to_string_lossy(), |n| n.to_string_lossy());
    let mut argv = vec![name.into_owned()];
    argv.extend(args.args.iter().cloned());
    terminal_spec(argv, args.env.clone(), None, args)
}

/// A container on this terminal: `argv`, `env` and `working_dir` as given, preopens and
/// limits from the command line, stdout and stderr printed as the guest writes them.
pub(crate) fn terminal_spec(
    argv: Vec<String>,
    env: Vec<(String, String)>,
    working_dir: Option<String>,
    args: &RunArgs,
) -> ContainerSpec {
    ContainerSpec {
        args: argv,
        env,
        working_dir,
        preopens: args.dirs.iter().map(|d| Preopen::parse(d)).collect(),
        stdio: Stdio {
            log: None,
            stdout_tee: Some(Box::new(std::io::stdout())),
            stderr_tee: Some(Box::new(std::io::stderr())),
            report_end: false,
        },
        limits: Limits {
            memory_bytes: args.memory,
            timeout: args.timeout,
            cpu_millis: None,
            fuel: None,
            descriptors: args.max_descriptors,
        },
        network: None,
    }
}

/// The compile cache: `$WASMLET_CACHE_DIR`, else `$XDG_CACHE_HOME/wasmlet/compile`, else
/// `~/.cache/wasmlet/compile`.
pub(crate) fn cache_dir(disabled: bool) -> Option<PathBuf> {
    if disabled {
        return None;
    }
    let env = |k| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("WASMLET_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("wasmlet/compile")))
        .or_else(|| env("HOME").map(|d| d.join(".cache/wasmlet/compile")))
}

/// Says why the guest ended when it did not simply exit.
pub(crate) fn report(status: &ExitStatus) {
    if !matches!(status.reason, ExitReason::Completed | ExitReason::Error) {
        eprintln!(
            "wasmlet: {} (exit code {}): {}",
            status.reason, status.code, status.message
        );
    }
}

/// The process exit code for a guest's code: 0..=255 as is, anything else 1.
pub(crate) fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{text}` is not K=V")),
    }
}

/// A size as a Kubernetes quantity (`67108864`, `64Mi`, `1Gi`, `500M`), rounded up to bytes.
fn parse_memory(text: &str) -> Result<u64, String> {
    let bad = |why: String| format!("`{text}` is not a size (e.g. 67108864, 64Mi, 1Gi): {why}");
    let quantity = wasmlet_pod::parse_quantity(text).map_err(|e| bad(e.to_string()))?;
    quantity
        .value_rounded_up()
        .and_then(|bytes| u64::try_from(bytes).ok())
        .ok_or_else(|| bad("out of range".into()))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a duration (e.g. 10, 500ms, 10s, 2m)");
    let (number, unit) = [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("", 1.0)]
        .iter()
        .find_map(|(s, m)| text.strip_suffix(s).map(|n| (n, *m)))
        .ok_or_else(bad)?;
    let value: f64 = number.parse().map_err(|_| bad())?;
    Duration::try_from_secs_f64(value * unit).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_targets() {
        assert_eq!(
            Target::detect(Path::new("x.wasm")),
            Target::WasmFile("x.wasm".into())
        );
        assert_eq!(
            Target::detect(Path::new("a/x.wat")),
            Target::WasmFile("a/x.wat".into())
        );
        assert_eq!(
            Target::detect(Path::new("pod.yaml")),
            Target::PodManifest("pod.yaml".into())
        );
        assert_eq!(
            Target::detect(Path::new("ghcr.io/a/b:v1")),
            Target::Image("ghcr.io/a/b:v1".into())
        );
    }

    #[test]
    fn parses_flags() {
        assert_eq!(parse_memory("64Mi"), Ok(64 << 20));
        assert_eq!(parse_memory("1000"), Ok(1000));
        assert_eq!(parse_memory("2G"), Ok(2_000_000_000));
        assert!(parse_memory("lots").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(parse_env("=x").is_err());
    }

    #[test]
    fn exit_codes_fit_a_byte() {
        assert_eq!(exit_code(3), ExitCode::from(3));
        assert_eq!(exit_code(137), ExitCode::from(137));
        assert_eq!(exit_code(300), ExitCode::from(1));
    }
}
