//! Certificates from the cluster through CertificateSigningRequests, as the kubelet gets them:
//! the serving certificate of the kubelet API (signer `kubernetes.io/kubelet-serving`, approved
//! by an admin with `kubectl certificate approve`) and, in TLS bootstrap, the client
//! certificate (signer `kubernetes.io/kube-apiserver-client-kubelet`, auto-approved). Key and
//! certificate are stored together as one PEM file and reused while valid.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use tokio_util::sync::CancellationToken;

/// Errors getting a certificate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key or the request could not be made.
    #[error("making the certificate request: {0}")]
    Request(#[from] rcgen::Error),
    /// The API server refused the request.
    #[error("kubernetes API: {0}")]
    Api(#[from] kube::Error),
    /// The request was denied or failed.
    #[error("certificate signing request {name} was {state}: {message}")]
    Refused {
        /// The CSR.
        name: String,
        /// Denied or Failed.
        state: String,
        /// The condition's message.
        message: String,
    },
    /// Cancelled while waiting for approval.
    #[error("cancelled while waiting for certificate signing request {0}")]
    Cancelled(String),
    /// The stored file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The signer of kubelet serving certificates.
pub const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// The signer of kubelet client certificates.
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

/// A certificate chain and its private key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedCert {
    /// The certificate (chain) PEM.
    pub cert_pem: String,
    /// The private key PEM.
    pub key_pem: String,
}

impl KeyedCert {
    /// Both in one PEM text (certificate first), as the kubelet's `*-current.pem`.
    pub fn to_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }

    /// Splits a stored PEM text back into certificate and key.
    pub fn from_pem(text: &str) -> Option<Self> {
        let start = text.find("-----BEGIN PRIVATE KEY-----")?;
        let (cert, key) = text.split_at(start);
        cert.contains("-----BEGIN CERTIFICATE-----").then(|| Self {
            cert_pem: cert.into(),
            key_pem: key.into(),
        })
    }

    /// Whether the first certificate is valid at `now` (Unix seconds) with at least a fifth of
    /// its lifetime left (the kubelet rotates at 70-90% of it).
    pub fn fresh(&self, now: i64) -> bool {
        self.info().is_some_and(|info| {
            let (from, to) = (info.not_before, info.not_after);
            from <= now && now < to - (to - from) / 5
        })
    }

    /// What the first certificate says, if it parses.
    pub fn info(&self) -> Option<CertInfo> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(self.cert_pem.as_bytes()).ok()?;
        let cert = pem.parse_x509().ok()?;
        let validity = cert.validity();
        let subject = cert.subject();
        let text = |attr: &x509_parser::x509::AttributeTypeAndValue<'_>| {
            attr.as_str().ok().map(str::to_string)
        };
        Some(CertInfo {
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            serial: cert.raw_serial_as_string(),
            common_name: subject.iter_common_name().next().and_then(text),
            organizations: subject.iter_organization().filter_map(text).collect(),
            alt_names: alt_names(&cert),
        })
    }
}

/// The facts of a certificate that rotation needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Valid from (Unix seconds).
    pub not_before: i64,
    /// Valid until (Unix seconds).
    pub not_after: i64,
    /// The serial number, hex bytes separated by colons.
    pub serial: String,
    /// The subject's CN.
    pub common_name: Option<String>,
    /// The subject's O values.
    pub organizations: Vec<String>,
    /// The subject alternative names: IP addresses and DNS names.
    pub alt_names: AltNames,
}

/// The IP addresses and DNS names a certificate is for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AltNames {
    /// IP SANs.
    pub ips: Vec<IpAddr>,
    /// DNS SANs.
    pub dns_names: Vec<String>,
}

/// The IP and DNS subject alternative names of `cert`.
fn alt_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> AltNames {
    use x509_parser::extensions::GeneralName;
    let mut names = AltNames::default();
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return names;
    };
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(dns) => names.dns_names.push((*dns).to_owned()),
            GeneralName::IPAddress(bytes) => names.ips.extend(ip_of(bytes)),
            _ => {}
        }
    }
    names
}

/// An IP address from its 4 or 16 bytes.
fn ip_of(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

impl CertInfo {
    /// Whether this names node `node_name` as the node authorizer knows it: CN
    /// `system:node:<name>`, O `system:nodes` (what a node may renew by itself).
    pub fn is_node(&self, node_name: &str) -> bool {
        self.common_name.as_deref() == Some(&format!("system:node:{node_name}"))
            && self.organizations == ["system:nodes"]
    }

    /// Whether it is valid at `now` (Unix seconds).
    pub fn valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now < self.not_after
    }
}

/// Where the node's client certificate and key live: `<data_dir>/pki/kubelet-client-current.pem`.
pub fn client_cert_path(data_dir: &Path) -> PathBuf {
    data_dir.join("pki").join("kubelet-client-current.pem")
}

/// What a certificate is for.
#[derive(Debug, Clone)]
pub struct Request {
    /// The node's name: CN `system:node:<name>`, O `system:nodes`.
    pub node_name: String,
    /// The signer.
    pub signer: &'static str,
    /// IP SANs (serving only).
    pub ips: Vec<IpAddr>,
    /// DNS SANs (serving only).
    pub dns_names: Vec<String>,
}

impl Request {
    /// Whether a certificate with `info` serves this request: each IP address and DNS name
    /// asked for is among its alternative names (a node whose addresses changed needs a new
    /// serving certificate, as the kubelet's certificate manager decides from its template).
    pub fn covered_by(&self, info: &CertInfo) -> bool {
        let names = &info.alt_names;
        self.ips.iter().all(|ip| names.ips.contains(ip))
            && (self.dns_names.iter()).all(|dns| names.dns_names.contains(dns))
    }

    /// The node's client certificate (signer `kubernetes.io/kube-apiserver-client-kubelet`).
    pub fn client(node_name: &str) -> Self {
        Self {
            node_name: node_name.to_string(),
            signer: CLIENT_SIGNER,
            ips: Vec::new(),
            dns_names: Vec::new(),
        }
    }

    /// The usages the signer's approver accepts for an ECDSA key.
    pub fn usages(&self) -> Vec<String> {
        let purpose = if self.signer == SERVING_SIGNER {
            "server auth"
        } else {
            "client auth"
        };
        vec!["digital signature".into(), purpose.into()]
    }

    /// A new key and its PKCS#10 request (PEM).
    pub fn make(&self) -> Result<(KeyPair, String)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "system:nodes");
        name.push(
            DnType::CommonName,
            format!("system:node:{}", self.node_name),
        );
        params.distinguished_name = name;
        for ip in &self.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        for dns in &self.dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName(dns.clone().try_into()?));
        }
        let csr = params.serialize_request(&key)?.pem()?;
        Ok((key, csr))
    }
}

/// The stored certificate at `path` when fresh, else a new one from the cluster (stored).
pub async fn load_or_request(
    client: &Client,
    request: &Request,
    path: &Path,
    cancel: &CancellationToken,
) -> Result<KeyedCert> {
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let stored = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| KeyedCert::from_pem(&t));
    let usable = |cert: &KeyedCert| {
        let covers = cert.info().is_some_and(|info| request.covered_by(&info));
        if !covers {
            tracing::info!(path = %path.display(), ips = ?request.ips, names = ?request.dns_names, "the stored certificate is not for this node's addresses; asking for a new one");
        }
        cert.fresh(now) && covers
    };
    if let Some(stored) = stored.filter(usable) {
        return Ok(stored);
    }
    let cert = obtain(client, request, cancel).await?;
    store(path, &cert)?;
    Ok(cert)
}

/// Creates a CSR and waits (until approved and signed, denied, or cancelled). The CSR is
/// watched by name, as the kubelet does, so a certificate is taken as soon as it is issued; a
/// failed watch is started again with back-off, never given up.
pub async fn obtain(
    client: &Client,
    request: &Request,
    cancel: &CancellationToken,
) -> Result<KeyedCert> {
    let (key, csr_pem) = request.make()?;
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let created = csrs
        .create(&PostParams::default(), &csr_object(request, &csr_pem))
        .await?;
    let name = created.metadata.name.unwrap_or_default();
    tracing::info!(csr = %name, signer = request.signer, "waiting for the certificate signing request to be approved and signed");
    let key_pem = key.serialize_pem();
    let signed_pem = tokio::select! {
        () = cancel.cancelled() => return Err(Error::Cancelled(name)),
        signed = wait_signed(csrs, &name) => signed?,
    };
    Ok(KeyedCert {
        cert_pem: signed_pem,
        key_pem,
    })
}

/// The certificate of CSR `name` once issued, from a watch of that one object.
async fn wait_signed(csrs: Api<CertificateSigningRequest>, name: &str) -> Result<String> {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher(csrs, config).default_backoff().applied_objects());
    while let Some(event) = events.next().await {
        match event {
            Ok(csr) => {
                if let Some(cert) = signed(&csr, name)? {
                    return Ok(cert);
                }
            }
            Err(err) => {
                tracing::warn!(csr = name, %err, "watching the certificate signing request; retrying")
            }
        }
    }
    Err(Error::Cancelled(name.into()))
}

fn csr_object(request: &Request, csr_pem: &str) -> CertificateSigningRequest {
    CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some(format!("csr-{}-", request.node_name)),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(csr_pem.as_bytes().to_vec()),
            signer_name: request.signer.into(),
            usages: Some(request.usages()),
            ..Default::default()
        },
        status: None,
    }
}

/// The certificate of `csr` if issued; an error if it was denied or failed.
fn signed(csr: &CertificateSigningRequest, name: &str) -> Result<Option<String>> {
    let status = csr.status.clone().unwrap_or_default();
    for condition in status.conditions.iter().flatten() {
        if matches!(condition.type_.as_str(), "Denied" | "Failed") && condition.status == "True" {
            return Err(Error::Refused {
                name: name.into(),
                state: condition.type_.clone(),
                message: condition.message.clone().unwrap_or_default(),
            });
        }
    }
    let cert = status.certificate.filter(|c| !c.0.is_empty());
    Ok(cert.map(|c| String::from_utf8_lossy(&c.0).into_owned()))
}

/// Writes `cert` (certificate then key) to `path` atomically, readable by the owner only.
pub fn store(path: &Path, cert: &KeyedCert) -> Result<()> {
    write_private(path, cert.to_pem().as_bytes()).map_err(|source| Error::Write {
        path: path.display().to_string(),
        source,
    })
}

/// Writes `bytes` to `path` atomically (temp file, then rename), readable by the owner only:
/// for keys and the credentials that point at them.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(signer: &'static str) -> Request {
        Request {
            node_name: "n1".into(),
            signer,
            ips: vec!["127.0.0.2".parse().unwrap()],
            dns_names: vec!["n1".into()],
        }
    }

    #[test]
    fn usages_follow_the_signer() {
        assert_eq!(
            request(SERVING_SIGNER).usages(),
            ["digital signature", "server auth"]
        );
        assert_eq!(
            request(CLIENT_SIGNER).usages(),
            ["digital signature", "client auth"]
        );
    }

    #[test]
    fn request_names_the_node() {
        let (_, pem) = request(SERVING_SIGNER).make().unwrap();
        let (_, der) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        use x509_parser::prelude::FromDer;
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&der.contents)
                .unwrap();
        let subject = csr.certification_request_info.subject.to_string();
        assert!(subject.contains("CN=system:node:n1"), "{subject}");
        assert!(subject.contains("O=system:nodes"), "{subject}");
    }

    #[test]
    fn stored_pem_round_trips_and_freshness() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["n1".to_string()]).unwrap();
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        let keyed = KeyedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        assert_eq!(KeyedCert::from_pem(&keyed.to_pem()), Some(keyed.clone()));
        assert!(keyed.fresh(now));
        assert!(!keyed.fresh(4_100_000_000), "near expiry");
        assert!(KeyedCert::from_pem("nothing").is_none());
    }

    #[test]
    fn a_serving_certificate_must_name_the_nodes_addresses() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["n1".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let cert = params.self_signed(&key).unwrap();
        let keyed = KeyedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        let info = keyed.info().unwrap();
        assert_eq!(info.alt_names.ips, ["127.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(info.alt_names.dns_names, ["n1"]);
        let serving = |ip: &str, name: &str| Request {
            node_name: name.into(),
            signer: SERVING_SIGNER,
            ips: vec![ip.parse().unwrap()],
            dns_names: vec![name.into()],
        };
        assert!(serving("127.0.0.1", "n1").covered_by(&info));
        assert!(
            !serving("10.0.0.2", "n1").covered_by(&info),
            "a new node IP"
        );
        assert!(!serving("127.0.0.1", "n2").covered_by(&info), "a new name");
        assert!(
            Request::client("n1").covered_by(&info),
            "client requests name no SANs"
        );
    }

    #[test]
    fn info_reads_validity_and_the_node_subject() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "system:node:n1");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "system:nodes");
        let cert = params.self_signed(&key).unwrap();
        let keyed = KeyedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        let info = keyed.info().unwrap();
        assert_eq!(
            (info.not_before, info.not_after),
            (1_577_836_800, 1_609_459_200)
        );
        assert!(info.valid_at(1_600_000_000));
        assert!(!info.valid_at(1_609_459_200), "not after is exclusive");
        assert!(info.is_node("n1"));
        assert!(!info.is_node("n2"));
        let admin = CertInfo {
            organizations: vec!["system:masters".into()],
            ..info
        };
        assert!(!admin.is_node("n1"));
    }
}
