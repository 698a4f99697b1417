//! Pull throughput: wasmlet's registry client vs curl, on one 50 MiB blob from a local
//! registry (Debian's docker-registry on loopback), best and median of 5 runs each.
//!
//! `cargo run --release -p wasmlet-oci --example pull_bench [-- SIZE_MIB RUNS]`

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmlet_oci::client::{Client, ClientConfig, NoProgress};
use wasmlet_oci::format::Descriptor;
use wasmlet_oci::store::Store;
use wasmlet_oci::{Digest, Reference};
use wasmlet_testkit::{Auth, Registry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = args.get(1).map_or(Ok(50), |s| s.parse())?;
    let runs: usize = args.get(2).map_or(Ok(5), |s| s.parse())?;
    let registry = Registry::start(Auth::Open);
    let reference: Reference = format!("{}/bench/blob:v1", registry.host()).parse()?;
    let blob = Bytes::from(
        (0..mib << 20)
            .map(|i| (i * 31 % 253) as u8)
            .collect::<Vec<u8>>(),
    );
    let digest = Digest::of(&blob);
    let client = Client::new(ClientConfig::default())?;
    client
        .push_blob(&reference, blob.clone(), &digest, &NoProgress)
        .await?;
    let desc = Descriptor {
        media_type: "application/octet-stream".into(),
        digest: digest.clone(),
        size: blob.len() as u64,
        platform: None,
        annotations: Default::default(),
    };
    let mut ours = Vec::new();
    let mut curl = Vec::new();
    for _ in 0..runs {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let start = Instant::now();
        client
            .fetch_blob(&reference, &desc, &store, &NoProgress)
            .await?;
        ours.push(start.elapsed());
        let out = dir.path().join("curl.out");
        let url = format!("{}/v2/bench/blob/blobs/{digest}", registry.url());
        let start = Instant::now();
        let status = Command::new("curl")
            .args(["-sfL", "-o"])
            .arg(&out)
            .arg(&url)
            .status()?;
        curl.push(start.elapsed());
        anyhow::ensure!(status.success(), "curl failed on {url}");
    }
    report(mib, &ours, &curl);
    Ok(())
}

fn report(mib: usize, ours: &[Duration], curl: &[Duration]) {
    let rate = |d: Duration| mib as f64 / d.as_secs_f64();
    let stats = |v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort();
        (rate(v[0]), rate(v[v.len() / 2]))
    };
    let (ob, om) = stats(ours);
    let (cb, cm) = stats(curl);
    println!(
        "pull of one {mib} MiB blob from a loopback registry, {} runs",
        ours.len()
    );
    println!("{:<28} {:>12} {:>12}", "", "best MiB/s", "median MiB/s");
    println!("{:<28} {ob:>12.0} {om:>12.0}", "wasmlet (hash + store)");
    println!("{:<28} {cb:>12.0} {cm:>12.0}", "curl -o file");
    println!("ratio wasmlet/curl (median): {:.2}", om / cm);
}
