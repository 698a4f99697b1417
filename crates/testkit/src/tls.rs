//! A CA and a server certificate for 127.0.0.1, for registries that serve HTTPS.

use std::path::Path;

/// The CA certificate's file name in a registry's directory.
pub const CA_FILE: &str = "ca.pem";

/// Writes a CA, a server certificate for 127.0.0.1/localhost and its key into `dir`; returns
/// the `tls:` lines of the registry's `http:` section.
pub fn write_server_pki(dir: &Path) -> String {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "wasmlet test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("server key");
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("server params");
    let cert = params.signed_by(&key, &issuer).expect("server cert");
    let write =
        |name: &str, pem: String| std::fs::write(dir.join(name), pem).expect("writing TLS files");
    write(CA_FILE, ca_cert.pem());
    write("server.pem", cert.pem());
    write("server-key.pem", key.serialize_pem());
    format!(
        "  tls:\n    certificate: {}\n    key: {}\n",
        dir.join("server.pem").display(),
        dir.join("server-key.pem").display()
    )
}
