//! The `wasmlet` command line: one binary, one subcommand per way in.

mod images;
mod node;
mod node_config;
mod prefixed;
mod progress;
mod run;
mod run_pod;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Run WebAssembly (WASI) workloads as Kubernetes pods, shipped through OCI registries.
#[derive(Parser)]
#[command(name = "wasmlet", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    registry: images::RegistryArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run a .wasm/.wat file, an image reference or a Pod manifest on this machine.
    Run(run::RunArgs),
    /// Package a .wasm as an OCI artifact and push it to a registry.
    Push(images::PushArgs),
    /// Pull an image into the local store.
    Pull(images::PullArgs),
    /// Show an image's format, digest, size, wasm kind and entrypoint.
    Inspect(images::InspectArgs),
    /// List the local store's images, or prune, remove, import and export them.
    Images(images::ImagesArgs),
    /// Join a Kubernetes cluster as a Node and run the wasm pods scheduled to it.
    Node(Box<node::NodeArgs>),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("WASMLET_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Node(args) => {
            let node = matches
                .subcommand_matches("node")
                .expect("the node subcommand");
            node::main(*args, node)
        }
        Command::Run(args) => run::main(args, &cli.registry),
        Command::Push(args) => {
            images::push(args, &cli.registry).map(|_| std::process::ExitCode::SUCCESS)
        }
        Command::Pull(args) => {
            images::pull(args, &cli.registry).map(|_| std::process::ExitCode::SUCCESS)
        }
        Command::Inspect(args) => {
            images::inspect(args, &cli.registry).map(|_| std::process::ExitCode::SUCCESS)
        }
        Command::Images(args) => {
            images::images(args, &cli.registry).map(|_| std::process::ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::from(1)
        }
    }
}
