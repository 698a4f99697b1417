//! The `wasmlet` command line: one binary, one subcommand per way in.

mod run;

use clap::{Parser, Subcommand};

/// Run WebAssembly (WASI) workloads as Kubernetes pods, shipped through OCI registries.
#[derive(Parser)]
#[command(name = "wasmlet", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a .wasm/.wat file, an image reference or a Pod manifest on this machine.
    Run(run::RunArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("WASMLET_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::main(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::from(1)
        }
    }
}
