//! `wasmlet push / pull / inspect / images`: moving wasm through registries and the store.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use wasmlet_oci::auth::{Credential, Keyring};
use wasmlet_oci::client::{Client, ClientConfig};
use wasmlet_oci::format::Format;
use wasmlet_oci::store::{Image, Store};
use wasmlet_oci::{Reference, layout, pull, push};

use crate::progress::Reporter;

/// How to reach registries and where the store is; shared by the image commands.
#[derive(clap::Args, Clone, Debug)]
pub struct RegistryArgs {
    /// User name for the registry (with --password or --password-stdin).
    #[arg(long, short = 'u', global = true)]
    pub username: Option<String>,
    /// Password (prefer --password-stdin or WASMLET_PASSWORD: command lines are visible).
    #[arg(long, env = "WASMLET_PASSWORD", hide_env_values = true, global = true)]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long, global = true)]
    pub password_stdin: bool,
    /// Extra PEM CA certificate to trust for registries (repeatable).
    #[arg(long, global = true)]
    pub ca_file: Vec<PathBuf>,
    /// A registry (host:port) to reach over plain HTTP; loopback registries always may be.
    #[arg(long, global = true)]
    pub insecure_registry: Vec<String>,
    /// The local image store (default $WASMLET_STORE or ~/.local/share/wasmlet/store).
    #[arg(long, global = true)]
    pub store: Option<PathBuf>,
    /// No progress output.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// The largest blob an image may declare; a larger one is refused before downloading.
    #[arg(long, global = true, default_value_t = wasmlet_oci::client::MAX_BLOB_BYTES)]
    pub max_blob_bytes: u64,
    /// The largest module an image's layers may hold as its entrypoint.
    #[arg(long, global = true, default_value_t = wasmlet_oci::layers::MAX_FILE_BYTES)]
    pub max_wasm_bytes: u64,
    /// The most bytes one image layer may expand to (after gunzip) as it is read.
    #[arg(long, global = true, default_value_t = wasmlet_oci::layers::MAX_EXPANDED_BYTES)]
    pub max_layer_bytes: u64,
}

impl RegistryArgs {
    /// Opens the store.
    pub fn store(&self) -> anyhow::Result<Store> {
        let root = self.store.clone().unwrap_or_else(Store::default_root);
        let limits = wasmlet_oci::layers::LayerLimits {
            max_file_bytes: self.max_wasm_bytes,
            max_expanded_bytes: self.max_layer_bytes,
        };
        Ok(Store::open(root)?.with_limits(limits))
    }

    /// Builds a client with credentials for `reference`'s registry.
    pub fn client(&self, reference: &Reference) -> anyhow::Result<Client> {
        let mut keyring = Keyring::from_default_docker_config()?;
        if let Some(username) = &self.username {
            let password = self.password()?;
            keyring.insert(
                reference.registry(),
                Credential::Basic {
                    username: username.clone(),
                    password,
                },
            );
        } else if self.password.is_some() || self.password_stdin {
            bail!("a password was given without --username; pass both");
        }
        let config = ClientConfig {
            keyring,
            ca_files: self.ca_file.clone(),
            insecure: self.insecure_registry.clone(),
            max_blob_bytes: self.max_blob_bytes,
            ..ClientConfig::default()
        };
        Ok(Client::new(config)?)
    }

    fn password(&self) -> anyhow::Result<String> {
        match (&self.password, self.password_stdin) {
            (Some(_), true) => {
                bail!("give the password with --password or --password-stdin, not both")
            }
            (Some(p), false) => Ok(p.clone()),
            (None, true) => {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("reading the password from stdin")?;
                Ok(s.trim_end_matches(['\r', '\n']).to_string())
            }
            (None, false) => {
                bail!("--username needs --password-stdin, --password or WASMLET_PASSWORD")
            }
        }
    }
}

/// The formats `wasmlet push` writes.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum PushFormat {
    /// CNCF TAG-Runtime wasm artifact (config application/vnd.wasm.config.v0+json).
    Cncf,
    /// The layout wasm-to-oci writes (config application/vnd.wasm.config.v1+json).
    WasmToOci,
}

/// `wasmlet push FILE REF`.
#[derive(clap::Args)]
pub struct PushArgs {
    /// The .wasm module or component.
    pub file: PathBuf,
    /// Where to push, e.g. 127.0.0.1:5000/demo/hello:v1.
    pub reference: String,
    /// The packaging to write.
    #[arg(long, value_enum, default_value = "cncf")]
    pub format: PushFormat,
    /// A manifest annotation `key=value` (repeatable).
    #[arg(long = "annotation", short = 'a')]
    pub annotations: Vec<String>,
    /// The author recorded in the CNCF config.
    #[arg(long)]
    pub author: Option<String>,
}

/// `wasmlet pull REF`.
#[derive(clap::Args)]
pub struct PullArgs {
    /// The image, e.g. 127.0.0.1:5000/demo/hello:v1.
    pub reference: String,
}

/// Output formats for `inspect` and `images`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default)]
pub enum Output {
    /// Human-readable.
    #[default]
    Text,
    /// JSON.
    Json,
}

/// `wasmlet inspect REF`.
#[derive(clap::Args)]
pub struct InspectArgs {
    /// The image (from the store if present, else from its registry without storing it).
    pub reference: String,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: Output,
}

/// `wasmlet images [ACTION]`.
#[derive(clap::Args)]
pub struct ImagesArgs {
    /// What to do; lists the images when absent.
    #[command(subcommand)]
    pub action: Option<ImagesAction>,
    /// Output format of the list.
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: Output,
}

/// Store maintenance.
#[derive(clap::Subcommand)]
pub enum ImagesAction {
    /// Remove blobs no image uses (and, with --all, every image first).
    Prune {
        /// Remove every image too.
        #[arg(long)]
        all: bool,
    },
    /// Remove images from the store (their blobs go at the next prune).
    Rm {
        /// The images.
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Import the images of an OCI image layout (directory or .tar).
    Import {
        /// The layout.
        path: PathBuf,
        /// Name for images the layout does not name fully.
        #[arg(long)]
        name: Option<String>,
    },
    /// Export images as an OCI image layout (directory, or a .tar file).
    Export {
        /// The images.
        #[arg(required = true)]
        references: Vec<String>,
        /// The directory or .tar to write.
        #[arg(long, short = 'o')]
        output: PathBuf,
    },
}

fn parse_reference(s: &str) -> anyhow::Result<Reference> {
    s.parse::<Reference>()
        .with_context(|| format!("image reference `{s}`"))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Runs `wasmlet push`.
pub fn push(args: PushArgs, registry: &RegistryArgs) -> anyhow::Result<()> {
    let reference = parse_reference(&args.reference)?;
    let wasm =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let artifact = push::Artifact {
        wasm: wasm.into(),
        file_name: args
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        format: match args.format {
            PushFormat::Cncf => Format::CncfArtifact,
            PushFormat::WasmToOci => Format::WasmToOci,
        },
        annotations: parse_annotations(&args.annotations)?,
        author: args.author,
    };
    let client = registry.client(&reference)?;
    let progress = Reporter::for_stderr(registry.quiet);
    let pushed = runtime()?.block_on(push::push(&client, &reference, &artifact, &progress))?;
    println!(
        "pushed {reference}@{} ({}, {} bytes, {})",
        pushed.digest, pushed.kind, pushed.layer.size, artifact.format
    );
    Ok(())
}

fn parse_annotations(list: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    list.iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("annotation `{a}` is not key=value"),
        })
        .collect()
}

/// Runs `wasmlet pull`.
pub fn pull(args: PullArgs, registry: &RegistryArgs) -> anyhow::Result<()> {
    let reference = parse_reference(&args.reference)?;
    let store = registry.store()?;
    let client = registry.client(&reference)?;
    let progress = Reporter::for_stderr(registry.quiet);
    let image = runtime()?.block_on(pull::pull(&client, &store, &reference, &progress))?;
    println!(
        "pulled {} ({}, {}, {} bytes)",
        image.reference, image.format, image.kind, image.wasm_size
    );
    println!("digest: {}", image.digest);
    Ok(())
}

/// Runs `wasmlet inspect`.
pub fn inspect(args: InspectArgs, registry: &RegistryArgs) -> anyhow::Result<()> {
    let reference = parse_reference(&args.reference)?;
    let store = registry.store()?;
    let (image, source) = match store.image(&reference.to_string()) {
        Ok(image) => (image, "local store"),
        Err(_) => {
            let scratch = tempfile::tempdir().context("creating a scratch store")?;
            let scratch_store = Store::open(scratch.path())?;
            let client = registry.client(&reference)?;
            let progress = Reporter::for_stderr(true);
            let image =
                runtime()?.block_on(pull::pull(&client, &scratch_store, &reference, &progress))?;
            (image, "registry")
        }
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&image)?),
        Output::Text => print_image(&image, source),
    }
    Ok(())
}

fn print_image(image: &Image, source: &str) {
    let entry = image.argv.first().map_or("-", String::as_str);
    println!("Reference:   {}", image.reference);
    println!("Digest:      {}", image.digest);
    println!("Manifest:    {}", image.manifest);
    println!("Format:      {}", image.format);
    println!("Kind:        {} ({})", image.kind, image.kind.wasi_os());
    println!("Wasm:        {} ({} bytes)", image.wasm, image.wasm_size);
    println!("Entrypoint:  {entry}");
    if image.argv.len() > 1 {
        println!("Args:        {:?}", &image.argv[1..]);
    }
    println!("Source:      {source}");
}

/// Runs `wasmlet images`.
pub fn images(args: ImagesArgs, registry: &RegistryArgs) -> anyhow::Result<()> {
    let store = registry.store()?;
    match args.action {
        None => list(&store, args.output),
        Some(ImagesAction::Prune { all }) => {
            if all {
                for image in store.images()? {
                    store.remove_image(&image.reference)?;
                }
            }
            let (files, bytes) = store.prune()?;
            println!("removed {files} files, {bytes} bytes");
            Ok(())
        }
        Some(ImagesAction::Rm { references }) => {
            for r in references {
                store.remove_image(&parse_reference(&r)?.to_string())?;
                println!("removed {r}");
            }
            Ok(())
        }
        Some(ImagesAction::Import { path, name }) => {
            let progress = Reporter::for_stderr(registry.quiet);
            let imported =
                runtime()?.block_on(layout::import(&store, &path, name.as_deref(), &progress))?;
            for image in imported {
                println!(
                    "imported {} ({}, {})",
                    image.reference, image.format, image.kind
                );
            }
            Ok(())
        }
        Some(ImagesAction::Export { references, output }) => {
            let images = references
                .iter()
                .map(|r| Ok(store.image(&parse_reference(r)?.to_string())?))
                .collect::<anyhow::Result<Vec<_>>>()?;
            layout::export(&store, &images, &output)?;
            println!("exported {} image(s) to {}", images.len(), output.display());
            Ok(())
        }
    }
}

fn list(store: &Store, output: Output) -> anyhow::Result<()> {
    let images = store.images()?;
    if let Output::Json = output {
        println!("{}", serde_json::to_string_pretty(&images)?);
        return Ok(());
    }
    println!(
        "{:<50} {:<20} {:<10} {:>10}  DIGEST",
        "REFERENCE", "FORMAT", "KIND", "SIZE"
    );
    for i in images {
        let short = &i.digest.hex()[..12];
        println!(
            "{:<50} {:<20} {:<10} {:>10}  {short}",
            i.reference,
            i.format.to_string(),
            i.kind.to_string(),
            i.wasm_size
        );
    }
    Ok(())
}
