//! The node's two TLS identities, replaceable while the agent runs so that a rotated
//! certificate is used without restarting anything:
//!
//! - [`NodeClient`]: the one `kube::Client` every task clones. kube-rs cannot change the TLS
//!   identity of a client, so this client is built over a service that hands each request to
//!   whichever inner client holds the current certificate; [`NodeClient::reload`] builds the
//!   next inner client from the same configuration, re-reading its certificate file. Requests
//!   already under way (an open watch) finish on the client they started on.
//! - [`ServingCert`]: the kubelet API's certificate as rustls resolves it for each new
//!   connection; [`ServingCert::replace`] swaps it.
//!
//! This module knows nothing of CSRs or of when to rotate: that is [`crate::tls::rotation`].

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use hyper::{Request, Response};
use kube::Client;
use kube::client::Body;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::tls::certs::KeyedCert;

/// Errors building an identity.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client could not be built from the configuration (its certificate file unreadable
    /// or not a certificate and key).
    #[error("kubernetes client: {0}")]
    Client(#[from] kube::Error),
    /// The serving certificate or key is not PEM.
    #[error("serving certificate: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    /// The serving key cannot be used, or does not match the certificate.
    #[error("serving certificate: {0}")]
    Tls(#[from] rustls::Error),
}

/// The result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The node's API client, whose certificate can be replaced while the client is in use.
pub struct NodeClient {
    config: kube::Config,
    current: Arc<RwLock<Client>>,
    client: Client,
}

impl NodeClient {
    /// A client from `config` (which may name certificate files; they are read now and again
    /// on each [`NodeClient::reload`]).
    pub fn new(config: kube::Config) -> Result<Self> {
        let inner = Client::try_from(config.clone())?;
        let current = Arc::new(RwLock::new(inner));
        let client = Client::new(Current(current.clone()), config.default_namespace.clone());
        Ok(Self {
            config,
            current,
            client,
        })
    }

    /// The client to clone into every task: each request goes to the current inner client.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The one file the client certificate and its key are read from, when they come from a
    /// file (a kubeconfig's `client-certificate` and `client-key` naming the same file, as
    /// TLS bootstrap writes it) rather than from data embedded in the kubeconfig.
    pub fn certificate_file(&self) -> Option<&Path> {
        let auth = &self.config.auth_info;
        if auth.client_certificate_data.is_some() || auth.client_key_data.is_some() {
            return None;
        }
        let cert = auth.client_certificate.as_deref()?;
        (auth.client_key.as_deref() == Some(cert)).then_some(Path::new(cert))
    }

    /// Builds a new inner client from the configuration (re-reading the certificate file) and
    /// sends every later request through it.
    pub fn reload(&self) -> Result<()> {
        let next = Client::try_from(self.config.clone())?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = next;
        Ok(())
    }
}

/// The service under [`NodeClient::client`]: forwards to the current inner client.
#[derive(Clone)]
struct Current(Arc<RwLock<Client>>);

impl tower_service::Service<Request<Body>> for Current {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let client = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        // The outer client unwraps a boxed kube::Error, so callers see the inner error as is.
        Box::pin(async move { client.send(request).await.map_err(BoxError::from) })
    }
}

/// The kubelet API's serving certificate, replaceable; new TLS connections get the current
/// one, open connections keep theirs.
#[derive(Debug)]
pub struct ServingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServingCert {
    /// Serves `cert`.
    pub fn new(cert: &KeyedCert) -> Result<Self> {
        Ok(Self {
            current: RwLock::new(certified(cert)?),
        })
    }

    /// Serves `cert` from the next connection on.
    pub fn replace(&self, cert: &KeyedCert) -> Result<()> {
        let next = certified(cert)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = next;
        Ok(())
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The chain and key of `cert` for rustls, checked to belong together.
fn certified(cert: &KeyedCert) -> Result<Arc<CertifiedKey>> {
    let chain =
        CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())?;
    let provider = rustls::crypto::ring::default_provider();
    Ok(Arc::new(CertifiedKey::from_der(chain, key, &provider)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(name: &str) -> KeyedCert {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        KeyedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    #[test]
    fn the_serving_cert_is_replaced_for_the_next_resolve() {
        let (first, second) = (keyed("one"), keyed("two"));
        let serving = ServingCert::new(&first).unwrap();
        let before = serving.current();
        serving.replace(&second).unwrap();
        let after = serving.current();
        assert_ne!(before.cert, after.cert);
        let der = CertificateDer::from_pem_slice(second.cert_pem.as_bytes()).unwrap();
        assert_eq!(after.cert[0], der);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (first, second) = (keyed("one"), keyed("two"));
        let mixed = KeyedCert {
            cert_pem: first.cert_pem.clone(),
            key_pem: second.key_pem,
        };
        let serving = ServingCert::new(&first).unwrap();
        assert!(serving.replace(&mixed).is_err());
        assert!(ServingCert::new(&mixed).is_err());
    }
}
