//! Debian's `docker-registry` (distribution 2.8) as a child process on loopback.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, tool};

/// How the registry authenticates.
pub enum Auth {
    /// Anyone may pull and push.
    Open,
    /// HTTP basic auth with one user.
    Htpasswd {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// Bearer tokens from a token server: its realm URL and the PEM of its signing cert.
    Token {
        /// The token endpoint.
        realm: String,
        /// The certificate whose key signs tokens.
        cert_pem: String,
    },
}

/// The service name registry and token server agree on.
pub const SERVICE: &str = "wasmlet-test-registry";
/// The token issuer name.
pub const ISSUER: &str = "wasmlet-test-issuer";

/// A running registry; stopped when dropped.
pub struct Registry {
    child: Child,
    port: u16,
    tls: bool,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry with `auth` on a free loopback port and waits until it answers.
    pub fn start(auth: Auth) -> Registry {
        Registry::start_with(auth, false)
    }

    /// Starts a registry serving HTTPS with a certificate for 127.0.0.1 signed by a CA of its
    /// own; [`Registry::ca_file`] is that CA.
    pub fn start_tls(auth: Auth) -> Registry {
        Registry::start_with(auth, true)
    }

    fn start_with(auth: Auth, tls: bool) -> Registry {
        let dir = tempfile::tempdir().expect("temp dir for the registry");
        let port = free_port();
        let config = dir.path().join("config.yml");
        let mut yaml = config_yaml(dir.path(), port, &auth);
        if tls {
            yaml.push_str(&crate::tls::write_server_pki(dir.path()));
        }
        std::fs::write(&config, yaml).expect("writing registry config");
        let log =
            std::fs::File::create(dir.path().join("registry.log")).expect("registry log file");
        let child = Command::new(tool("docker-registry"))
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let mut registry = Registry {
            child,
            port,
            tls,
            _dir: dir,
        };
        registry.wait_ready();
        registry
    }

    /// `127.0.0.1:<port>`, the host part of references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:<port>` (`https` for a TLS registry).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    /// The PEM file of the CA that signed a TLS registry's certificate.
    pub fn ca_file(&self) -> std::path::PathBuf {
        self._dir.path().join(crate::tls::CA_FILE)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "docker-registry exited with {status} at start:\n{}",
                    self.log()
                );
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "docker-registry did not listen on {} within 20 s:\n{}",
            self.host(),
            self.log()
        );
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_yaml(dir: &Path, port: u16, auth: &Auth) -> String {
    let storage = dir.join("storage");
    let auth_yaml = match auth {
        Auth::Open => String::new(),
        Auth::Htpasswd { user, password } => {
            let hash = bcrypt::hash(password, 5).expect("bcrypt hash");
            let file = dir.join("htpasswd");
            std::fs::write(&file, format!("{user}:{hash}\n")).expect("writing htpasswd");
            format!(
                "auth:\n  htpasswd:\n    realm: wasmlet-test\n    path: {}\n",
                file.display()
            )
        }
        Auth::Token { realm, cert_pem } => {
            let file = dir.join("token-ca.pem");
            std::fs::write(&file, cert_pem).expect("writing token cert");
            format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                file.display()
            )
        }
    };
    format!(
        "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n{auth_yaml}http:\n  addr: 127.0.0.1:{port}\n",
        storage.display()
    )
}
