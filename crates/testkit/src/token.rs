//! A registry token server that signs real ES256 JWTs, which distribution verifies through
//! the certificate in its `rootcertbundle` and the token's `x5c` header.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::DecodePrivateKey;

use crate::registry::{ISSUER, SERVICE};
use crate::{Auth, free_port};

/// Which fields the token answer carries.
#[derive(Clone, Copy, Debug)]
pub enum TokenShape {
    /// `{"token": T}`.
    Token,
    /// `{"access_token": T}`.
    AccessToken,
    /// `{"token": T, "access_token": T}`.
    Both,
    /// Harbor's: `{"token": T, "access_token": "", "expires_in", "issued_at"}`.
    Harbor,
}

struct Shared {
    key: SigningKey,
    cert_der: Vec<u8>,
    shape: TokenShape,
    user: Option<(String, String)>,
    expires_in: u64,
    requests: AtomicUsize,
}

/// A running token server; stopped when dropped.
pub struct TokenServer {
    port: u16,
    cert_pem: String,
    shared: Arc<Shared>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl TokenServer {
    /// Starts a token server answering in `shape`; when `user` is set, token requests must
    /// carry that user's basic credentials. Tokens last `expires_in` seconds.
    pub fn start(shape: TokenShape, user: Option<(&str, &str)>, expires_in: u64) -> TokenServer {
        let key_pair = rcgen::KeyPair::generate().expect("generating a P-256 key");
        let params = rcgen::CertificateParams::new(vec!["wasmlet-token-signer".to_string()])
            .expect("cert params");
        let cert = params
            .self_signed(&key_pair)
            .expect("self-signing the token cert");
        let key =
            SigningKey::from_pkcs8_der(&key_pair.serialize_der()).expect("loading the signing key");
        let shared = Arc::new(Shared {
            key,
            cert_der: cert.der().to_vec(),
            shape,
            user: user.map(|(u, p)| (u.to_string(), p.to_string())),
            expires_in,
            requests: AtomicUsize::new(0),
        });
        let port = free_port();
        let app = axum::Router::new()
            .route("/token", axum::routing::get(token))
            .with_state(shared.clone());
        let stop = crate::proxy::serve(port, app);
        TokenServer {
            port,
            cert_pem: cert.pem(),
            shared,
            _stop: stop,
        }
    }

    /// `http://127.0.0.1:<port>`, the server's base URL (for a proxy in front of it).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The realm URL.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The registry auth settings that trust this server.
    pub fn registry_auth(&self) -> Auth {
        Auth::Token {
            realm: self.realm(),
            cert_pem: self.cert_pem.clone(),
        }
    }

    /// Registry auth settings that trust this server's tokens but send clients to `realm`
    /// (a realm elsewhere, to test what a client sends there).
    pub fn registry_auth_at(&self, realm: &str) -> Auth {
        Auth::Token {
            realm: realm.to_string(),
            cert_pem: self.cert_pem.clone(),
        }
    }

    /// How many token requests were answered with a token.
    pub fn issued(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }
}

async fn token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let subject = match authorise(&shared, &headers) {
        Ok(s) => s,
        Err(()) => return (StatusCode::UNAUTHORIZED, "bad credentials").into_response(),
    };
    let url = reqwest::Url::parse(&format!("http://x/?{}", query.unwrap_or_default()))
        .expect("query url");
    let access: Vec<serde_json::Value> = url
        .query_pairs()
        .filter(|(k, _)| k == "scope")
        .filter_map(|(_, v)| scope_access(&v))
        .collect();
    let jwt = sign(&shared, &subject, access);
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let issued_at = "2021-06-01T00:00:00Z";
    let body = match shared.shape {
        TokenShape::Token => serde_json::json!({"token": jwt, "expires_in": shared.expires_in}),
        TokenShape::AccessToken => {
            serde_json::json!({"access_token": jwt, "expires_in": shared.expires_in})
        }
        TokenShape::Both => {
            serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": shared.expires_in})
        }
        TokenShape::Harbor => {
            serde_json::json!({"token": jwt, "access_token": "", "expires_in": shared.expires_in, "issued_at": issued_at})
        }
    };
    axum::Json(body).into_response()
}

fn authorise(shared: &Shared, headers: &HeaderMap) -> Result<String, ()> {
    let Some((user, password)) = &shared.user else {
        return Ok(String::new());
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    match given {
        Some(g) if g == format!("{user}:{password}") => Ok(user.clone()),
        _ => Err(()),
    }
}

/// `repository:name:pull,push` -> the access claim granting it.
fn scope_access(scope: &str) -> Option<serde_json::Value> {
    let mut parts = scope.splitn(3, ':');
    let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
    let actions: Vec<&str> = actions.split(',').collect();
    Some(serde_json::json!({"type": kind, "name": name, "actions": actions}))
}

fn sign(shared: &Shared, subject: &str, access: Vec<serde_json::Value>) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [STANDARD.encode(&shared.cert_der)]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": subject, "aud": SERVICE,
        "exp": now + shared.expires_in, "nbf": now - 5, "iat": now,
        "jti": format!("{now}-{}", shared.requests.load(Ordering::SeqCst)),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature: Signature = shared.key.sign(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    )
}
