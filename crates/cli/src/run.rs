//! `wasmlet run`: run WebAssembly on this machine without a cluster.

use std::path::PathBuf;

/// Arguments of `wasmlet run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// A .wasm or .wat file, an image reference, or a Pod manifest (.yaml).
    pub target: PathBuf,
    /// Arguments passed to the module after `--`.
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// Runs the target and returns the process exit code.
pub fn main(args: RunArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("running {} is not available yet", args.target.display())
}
