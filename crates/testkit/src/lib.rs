//! Real peers for wasmlet's integration tests, started on loopback.
//!
//! - [`Registry`]: Debian's `docker-registry` (distribution 2.8), open, with htpasswd, or with
//!   token auth through [`TokenServer`].
//! - [`TokenServer`]: a registry token endpoint that signs real JWTs the registry verifies,
//!   answering in the shape a test chooses (Harbor's `token` + empty `access_token` included).
//! - [`FaultProxy`]: sits in front of a registry and breaks things on purpose.
//! - [`image`]: FROM-scratch style OCI image tars for `ctr images import`.
//!
//! A peer that cannot start panics with the reason and the fix: a test that needs it fails,
//! it is never skipped.
#![deny(missing_docs)]

pub mod image;
mod proxy;
mod registry;
mod tls;
mod token;

pub use proxy::{Fault, FaultProxy};
pub use registry::{Auth, Registry};
pub use token::{TokenServer, TokenShape};

use std::path::PathBuf;

/// A free TCP port on 127.0.0.1 (bound, then released for the peer to take).
pub fn free_port() -> u16 {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0 for a free port");
    listener
        .local_addr()
        .expect("local address of a bound socket")
        .port()
}

/// The path of a tool the tests use: `$PATH` first, then `$WASMLET_CACHE/bin` (where
/// `tests/setup` installs tools built from the Go module proxy). Panics naming the fix.
pub fn tool(name: &str) -> PathBuf {
    let cache = std::env::var_os("WASMLET_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/wasmlet"), PathBuf::from);
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push(cache.join("bin"));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not installed; run `bash tests/setup`, which installs every peer the tests use"))
}

/// Runs a command, panicking with its output when it fails; returns stdout.
pub fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}
