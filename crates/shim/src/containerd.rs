//! containerd's gRPC API as the shim uses it: the image a container was made from, that
//! image's target descriptor, and blobs of the content store. Each call has a deadline, and a
//! blob is never read past the size the caller expects: what containerd's store holds came
//! from a registry and is not trusted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{GetContainerRequest, GetImageRequest, ReadContentRequest};
use containerd_client::tonic::metadata::MetadataValue;
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status};
use containerd_client::types::Descriptor;
use wasmlet_oci::Digest;

/// The longest a connection to containerd's socket may take.
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(5);
/// The longest a call for a container or an image record may take.
pub const CALL_DEADLINE: Duration = Duration::from_secs(10);
/// The longest reading one blob may take: the content store is a local disk, so even the
/// largest module wasmlet takes (1 GiB) is read well within it.
pub const BLOB_DEADLINE: Duration = Duration::from_secs(60);

/// The gRPC metadata key naming the containerd namespace of a call.
const NAMESPACE_HEADER: &str = "containerd-namespace";

/// Errors of talking to containerd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket could not be reached.
    #[error("cannot connect to containerd at {address}: {reason}")]
    Connect {
        /// The socket.
        address: PathBuf,
        /// Why.
        reason: String,
    },
    /// The namespace cannot be sent as gRPC metadata.
    #[error("invalid containerd namespace {0:?}")]
    Namespace(String),
    /// containerd answered with an error.
    #[error("{what}: containerd answered {code:?}: {message}")]
    Call {
        /// What was asked for.
        what: String,
        /// The gRPC status code.
        code: Code,
        /// containerd's message.
        message: String,
    },
    /// containerd's answer lacked a field it always sends.
    #[error("{what}: containerd's answer has no {field}")]
    Incomplete {
        /// What was asked for.
        what: String,
        /// The missing field.
        field: &'static str,
    },
    /// A call outlived its deadline.
    #[error("{what}: no answer from containerd within {}s", deadline.as_secs())]
    Deadline {
        /// What was asked for.
        what: String,
        /// The deadline.
        deadline: Duration,
    },
    /// A blob had more bytes than expected.
    #[error(
        "{what}: the content store holds more than the {expected} bytes its descriptor declares"
    )]
    Oversized {
        /// What was read.
        what: String,
        /// The size expected.
        expected: u64,
    },
}

impl Error {
    /// Whether containerd said the thing asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::Call {
                code: Code::NotFound,
                ..
            }
        )
    }
}

/// `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where containerd's gRPC API listens and the namespace of the shim's containers: the
/// `-address` and `-namespace` containerd starts the shim with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// The gRPC socket (`/run/containerd/containerd.sock`).
    pub address: PathBuf,
    /// The namespace (`k8s.io` for CRI's containers).
    pub namespace: String,
}

impl Endpoint {
    /// The endpoint of containerd's `-address` flag (a socket path, `unix://` optional).
    pub fn new(address: &str, namespace: &str) -> Endpoint {
        let path = address.strip_prefix("unix://").unwrap_or(address);
        Endpoint {
            address: PathBuf::from(path),
            namespace: namespace.to_owned(),
        }
    }
}

/// A connection to containerd's gRPC API in one namespace.
pub struct Containerd {
    channel: Channel,
    namespace: MetadataValue<containerd_client::tonic::metadata::Ascii>,
}

impl Containerd {
    /// Connects to `endpoint` within [`CONNECT_DEADLINE`].
    pub async fn connect(endpoint: &Endpoint) -> Result<Containerd> {
        let namespace = MetadataValue::try_from(endpoint.namespace.as_str())
            .map_err(|_| Error::Namespace(endpoint.namespace.clone()))?;
        let connect = containerd_client::connect(&endpoint.address);
        let channel = tokio::time::timeout(CONNECT_DEADLINE, connect)
            .await
            .map_err(|_| connect_error(&endpoint.address, "timed out"))?
            .map_err(|e| connect_error(&endpoint.address, &source_chain(&e)))?;
        Ok(Containerd { channel, namespace })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert(NAMESPACE_HEADER, self.namespace.clone());
        request
    }

    /// The image container `id` was made from; `None` when it has none (made from a rootfs
    /// directory rather than an image).
    pub async fn container_image(&self, id: &str) -> Result<Option<String>> {
        let what = format!("getting container {id}");
        let request = self.request(GetContainerRequest { id: id.to_owned() });
        let mut client = ContainersClient::new(self.channel.clone());
        let answer = bounded(&what, CALL_DEADLINE, client.get(request)).await?;
        let container = answer.into_inner().container.ok_or(Error::Incomplete {
            what,
            field: "container",
        })?;
        Ok(Some(container.image).filter(|i| !i.is_empty()))
    }

    /// The descriptor image `name` points at (a manifest or an index).
    pub async fn image_target(&self, name: &str) -> Result<Descriptor> {
        let what = format!("getting image {name}");
        let request = self.request(GetImageRequest {
            name: name.to_owned(),
        });
        let mut client = ImagesClient::new(self.channel.clone());
        let answer = bounded(&what, CALL_DEADLINE, client.get(request)).await?;
        let image = answer.into_inner().image.ok_or(Error::Incomplete {
            what: what.clone(),
            field: "image",
        })?;
        image.target.ok_or(Error::Incomplete {
            what,
            field: "target",
        })
    }

    /// The blob `digest` of the content store, which must hold at most `size` bytes: a
    /// larger blob is refused as soon as its bytes pass `size`. The caller checks the digest.
    pub async fn read_blob(&self, digest: &Digest, size: u64) -> Result<Vec<u8>> {
        let what = format!("reading {digest} from the content store");
        let request = self.request(ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        });
        let read = read_stream(
            ContentClient::new(self.channel.clone()),
            request,
            &what,
            size,
        );
        tokio::time::timeout(BLOB_DEADLINE, read)
            .await
            .map_err(|_| Error::Deadline {
                what: what.clone(),
                deadline: BLOB_DEADLINE,
            })?
    }
}

async fn read_stream(
    mut client: ContentClient<Channel>,
    request: Request<ReadContentRequest>,
    what: &str,
    size: u64,
) -> Result<Vec<u8>> {
    let call_error = |status: Status| call(what, status);
    let mut stream = client.read(request).await.map_err(call_error)?.into_inner();
    // Capacity from the descriptor, bounded: the caller's limit already bounds `size`.
    let mut out = Vec::with_capacity(usize::try_from(size.min(64 << 20)).unwrap_or(0));
    while let Some(chunk) = stream.message().await.map_err(call_error)? {
        if out.len() as u64 + chunk.data.len() as u64 > size {
            return Err(Error::Oversized {
                what: what.to_owned(),
                expected: size,
            });
        }
        out.extend_from_slice(&chunk.data);
    }
    Ok(out)
}

async fn bounded<T>(
    what: &str,
    deadline: Duration,
    call_future: impl Future<Output = std::result::Result<T, Status>>,
) -> Result<T> {
    tokio::time::timeout(deadline, call_future)
        .await
        .map_err(|_| Error::Deadline {
            what: what.to_owned(),
            deadline,
        })?
        .map_err(|status| call(what, status))
}

fn call(what: &str, status: Status) -> Error {
    Error::Call {
        what: what.to_owned(),
        code: status.code(),
        message: status.message().to_owned(),
    }
}

fn connect_error(address: &Path, reason: &str) -> Error {
    Error::Connect {
        address: address.to_path_buf(),
        reason: reason.to_owned(),
    }
}

/// An error and its sources, `: `-joined (tonic's transport error says little on its own).
fn source_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_from_the_address_flag() {
        let e = Endpoint::new("unix:///run/containerd/containerd.sock", "k8s.io");
        assert_eq!(e.address, Path::new("/run/containerd/containerd.sock"));
        assert_eq!(e.namespace, "k8s.io");
        let e = Endpoint::new("/s/containerd.sock", "default");
        assert_eq!(e.address, Path::new("/s/containerd.sock"));
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_connect_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = Endpoint {
            address: dir.path().join("nothing.sock"),
            namespace: "default".into(),
        };
        let err = Containerd::connect(&endpoint).await.err().unwrap();
        assert!(
            err.to_string().starts_with(&format!(
                "cannot connect to containerd at {}",
                endpoint.address.display()
            )),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_namespace_that_is_not_metadata_is_refused() {
        let endpoint = Endpoint {
            address: "/nonexistent".into(),
            namespace: "bad\nns".into(),
        };
        let err = Containerd::connect(&endpoint).await.err().unwrap();
        assert!(matches!(err, Error::Namespace(_)), "{err}");
    }
}
