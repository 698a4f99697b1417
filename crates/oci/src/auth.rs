//! Registry credentials and the registry token protocol.
//!
//! One [`Credential`] type serves credentials from `~/.docker/config.json`, from the command
//! line, and from a Kubernetes `kubernetes.io/dockerconfigjson` secret (the same JSON).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// Problems with credentials or with a registry's authentication answers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A docker config file could not be read.
    #[error("cannot read registry credentials from {path}: {source}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A docker config (file or secret) is not valid JSON of the expected shape.
    #[error(
        "invalid docker config {origin}: {reason}; expected {{\"auths\": {{\"host\": {{\"auth\": \"base64(user:password)\"}}}}}}"
    )]
    InvalidConfig {
        /// Where it came from.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// A `WWW-Authenticate` header we cannot follow.
    #[error(
        "registry {registry} sent an authentication challenge wasmlet cannot follow: `{header}`"
    )]
    Challenge {
        /// The registry.
        registry: String,
        /// The header value.
        header: String,
    },
    /// A challenge's realm that is not an absolute `http` or `https` URL.
    #[error(
        "registry {registry} sent token realm `{realm}`, which is not an absolute http:// or https:// URL ({reason}); the registry's token auth is misconfigured (its realm must be the token server's full URL)"
    )]
    InvalidRealm {
        /// The registry.
        registry: String,
        /// The realm as sent.
        realm: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Credentials withheld from a token realm on plain HTTP.
    #[error(
        "credentials for registry {registry} were withheld from its token realm {realm}: the realm is plain HTTP on {authority}, which is neither loopback nor an allowed insecure registry, so the password would cross the network in clear; serve the token realm over HTTPS, or pass --insecure-registry {authority} to allow plain HTTP to it"
    )]
    CleartextRealm {
        /// The registry whose credentials they are.
        registry: String,
        /// The realm.
        realm: String,
        /// The realm's `host[:port]`.
        authority: String,
    },
    /// The token endpoint's answer has no usable token.
    #[error(
        "token server {realm} answered without a usable token (neither `token` nor `access_token` is set): {body}"
    )]
    NoToken {
        /// The token endpoint.
        realm: String,
        /// The start of the answer.
        body: String,
    },
    /// The token endpoint's answer is not JSON of the token spec's shape.
    #[error(
        "token server {realm} answered with something that is not a token response ({reason}): {body}"
    )]
    InvalidToken {
        /// The token endpoint.
        realm: String,
        /// The parse error.
        reason: String,
        /// The start of the answer.
        body: String,
    },
}

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Credential {
    /// No credentials: anonymous access (tokens may still be issued anonymously).
    #[default]
    Anonymous,
    /// A user name and password (or an access token used as a password).
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Anonymous => f.write_str("Anonymous"),
            Credential::Basic { username, .. } => write!(f, "Basic({username}, ****)"),
        }
    }
}

impl Credential {
    /// The `Authorization` header value for HTTP basic auth, if any.
    pub fn basic_header(&self) -> Option<String> {
        match self {
            Credential::Anonymous => None,
            Credential::Basic { username, password } => Some(format!(
                "Basic {}",
                BASE64.encode(format!("{username}:{password}"))
            )),
        }
    }
}

/// Credentials by registry host, as in a docker config's `auths`.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    by_registry: BTreeMap<String, Credential>,
}

#[derive(serde::Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
}

#[derive(serde::Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

impl Keyring {
    /// Reads `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`; empty when absent.
    pub fn from_default_docker_config() -> Result<Keyring, Error> {
        let dir = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")));
        match dir.map(|d| d.join("config.json")) {
            Some(path) if path.exists() => Keyring::from_docker_config_file(&path),
            _ => Ok(Keyring::default()),
        }
    }

    /// Reads a docker config file.
    pub fn from_docker_config_file(path: &Path) -> Result<Keyring, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::ReadConfig {
            path: path.to_owned(),
            source,
        })?;
        Keyring::from_docker_config_json(&bytes, &path.display().to_string())
    }

    /// Parses docker config JSON: a config file, or the `.dockerconfigjson` key of a
    /// Kubernetes secret. `origin` names the source in errors.
    pub fn from_docker_config_json(bytes: &[u8], origin: &str) -> Result<Keyring, Error> {
        let invalid = |reason: String| Error::InvalidConfig {
            origin: origin.to_string(),
            reason,
        };
        let config: DockerConfig =
            serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        let mut keyring = Keyring::default();
        for (host, entry) in config.auths {
            let cred = entry
                .credential()
                .map_err(|r| invalid(format!("auths[\"{host}\"]: {r}")))?;
            keyring.by_registry.insert(normalise_host(&host), cred);
        }
        Ok(keyring)
    }

    /// Sets the credential for `registry`.
    pub fn insert(&mut self, registry: &str, credential: Credential) {
        self.by_registry
            .insert(normalise_host(registry), credential);
    }

    /// Adds every entry of `other`, replacing ours for the same registry.
    pub fn extend(&mut self, other: Keyring) {
        self.by_registry.extend(other.by_registry);
    }

    /// The credential for `registry`, anonymous if none is known.
    pub fn get(&self, registry: &str) -> Credential {
        self.by_registry
            .get(&normalise_host(registry))
            .cloned()
            .unwrap_or_default()
    }
}

impl DockerAuth {
    fn credential(&self) -> Result<Credential, String> {
        if let Some(auth) = self.auth.as_deref().filter(|a| !a.is_empty()) {
            let decoded = BASE64
                .decode(auth.trim())
                .map_err(|e| format!("`auth` is not base64: {e}"))?;
            let text = String::from_utf8(decoded).map_err(|_| "`auth` is not UTF-8".to_string())?;
            let (u, p) = text
                .split_once(':')
                .ok_or("`auth` does not decode to `user:password`")?;
            return Ok(Credential::Basic {
                username: u.to_string(),
                password: p.to_string(),
            });
        }
        match (&self.username, &self.password) {
            (Some(u), Some(p)) => Ok(Credential::Basic {
                username: u.clone(),
                password: p.clone(),
            }),
            _ => Ok(Credential::Anonymous),
        }
    }
}

/// Reduces `https://index.docker.io/v1/`, `http://host:5000/` and `host:5000` to one key.
fn normalise_host(s: &str) -> String {
    let s = s
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        h => h.to_ascii_lowercase(),
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=...`
    Basic,
    /// `Bearer realm=...,service=...,scope=...`
    Bearer {
        /// The token endpoint.
        realm: String,
        /// The service name to ask the token for.
        service: Option<String>,
        /// The scope the registry asked for.
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses a `WWW-Authenticate` header value.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        let params = parse_params(rest);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => Some(Challenge::Basic),
            "bearer" => Some(Challenge::Bearer {
                realm: params.get("realm")?.clone(),
                service: params.get("service").cloned(),
                scope: params.get("scope").cloned(),
            }),
            _ => None,
        }
    }
}

/// Parses `k="v", k2=v2` auth-params; quoted values may contain commas.
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = &rest[eq + 1..];
        let (value, remaining) = match after.strip_prefix('"') {
            Some(q) => match q.find('"') {
                Some(end) => (q[..end].to_string(), &q[end + 1..]),
                None => (q.to_string(), ""),
            },
            None => match after.find(',') {
                Some(c) => (after[..c].trim().to_string(), &after[c..]),
                None => (after.trim().to_string(), ""),
            },
        };
        out.insert(key, value);
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// Parses a challenge's realm: it must be an absolute `http` or `https` URL with a host.
pub fn parse_realm(registry: &str, realm: &str) -> Result<reqwest::Url, Error> {
    let invalid = |reason: String| Error::InvalidRealm {
        registry: registry.to_string(),
        realm: realm.chars().take(200).collect(),
        reason,
    };
    let url = reqwest::Url::parse(realm).map_err(|e| invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!("scheme `{}`", url.scheme())));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host".to_string()));
    }
    Ok(url)
}

/// A URL's `host[:port]`, as `--insecure-registry` names it (the port only when explicit).
pub fn authority(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// Refuses to send `registry`'s basic credentials to a plain-HTTP realm unless
/// `plain_http_allowed` allows its `host[:port]` (as it does registries: loopback or listed).
pub fn check_realm_for_credentials(
    registry: &str,
    realm: &reqwest::Url,
    plain_http_allowed: impl Fn(&str) -> bool,
) -> Result<(), Error> {
    let authority = authority(realm);
    if realm.scheme() == "https" || plain_http_allowed(&authority) {
        return Ok(());
    }
    Err(Error::CleartextRealm {
        registry: registry.to_string(),
        realm: realm.to_string(),
        authority,
    })
}

/// A bearer token from a token endpoint, with its lifetime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// The token to send as `Authorization: Bearer <token>`.
    pub token: String,
    /// How long it is valid, from the moment it was received.
    pub expires_in: Duration,
}

/// The token spec's default lifetime when `expires_in` is absent.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

#[derive(serde::Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

impl Token {
    /// Parses a token endpoint's answer. Registries send `token`, `access_token`, or both (a
    /// Harbor answer carries both, with an empty `access_token`); a non-empty `token` wins.
    pub fn parse(body: &[u8], realm: &str) -> Result<Token, Error> {
        let snippet = || String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        let answer: TokenAnswer =
            serde_json::from_slice(body).map_err(|e| Error::InvalidToken {
                realm: realm.to_string(),
                reason: e.to_string(),
                body: snippet(),
            })?;
        let token = [answer.token, answer.access_token]
            .into_iter()
            .flatten()
            .find(|t| !t.is_empty())
            .ok_or_else(|| Error::NoToken {
                realm: realm.to_string(),
                body: snippet(),
            })?;
        let expires_in = answer
            .expires_in
            .filter(|s| *s > 0)
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
        Ok(Token { token, expires_in })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_answers_in_every_shape() {
        let cases: &[(&str, &str, u64)] = &[
            (r#"{"token":"t1"}"#, "t1", 60),
            (r#"{"access_token":"a1","expires_in":300}"#, "a1", 300),
            (
                r#"{"token":"h1","access_token":"","expires_in":1800,"issued_at":"2021-01-01T00:00:00Z"}"#,
                "h1",
                1800,
            ),
            (r#"{"token":"","access_token":"a2"}"#, "a2", 60),
            (
                r#"{"token":"t3","access_token":"a3","expires_in":0}"#,
                "t3",
                60,
            ),
            (
                r#"{"token":"t4","refresh_token":"r","scope":"x"}"#,
                "t4",
                60,
            ),
        ];
        for (body, want, secs) in cases {
            let t = Token::parse(body.as_bytes(), "realm").unwrap();
            assert_eq!(t.token, *want, "{body}");
            assert_eq!(t.expires_in, Duration::from_secs(*secs), "{body}");
        }
    }

    #[test]
    fn token_answers_without_a_token_are_errors() {
        for body in [r#"{}"#, r#"{"token":"","access_token":""}"#] {
            assert!(matches!(
                Token::parse(body.as_bytes(), "r"),
                Err(Error::NoToken { .. })
            ));
        }
        assert!(matches!(
            Token::parse(b"<html>", "r"),
            Err(Error::InvalidToken { .. })
        ));
    }

    #[test]
    fn challenges() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            Challenge::parse("bearer realm=http://127.0.0.1:1/t"),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: None,
                scope: None
            })
        );
        assert_eq!(Challenge::parse("Negotiate abc"), None);
        assert_eq!(Challenge::parse("Bearer service=x"), None);
    }

    #[test]
    fn realms_must_be_absolute_http_urls() {
        for realm in ["https://auth.example/token", "http://127.0.0.1:5001/t?x=1"] {
            assert!(parse_realm("r", realm).is_ok(), "{realm}");
        }
        for realm in [
            "/token",
            "token.example/token",
            "ftp://h/t",
            "file:///etc/passwd",
            "",
        ] {
            let err = parse_realm("reg.example", realm).unwrap_err();
            assert!(matches!(err, Error::InvalidRealm { .. }), "{realm}: {err}");
            let text = err.to_string();
            assert!(
                text.contains("reg.example") && text.contains("absolute http"),
                "{text}"
            );
        }
    }

    #[test]
    fn credentials_go_to_plain_http_realms_only_where_plain_http_is_allowed() {
        let allowed = |a: &str| a == "127.0.0.1:5001" || a == "auth.lan:8080";
        for (realm, ok) in [
            ("https://auth.example/token", true),
            ("http://127.0.0.1:5001/token", true),
            ("http://auth.lan:8080/token", true),
            ("http://auth.lan/token", false),
            ("http://auth.example/token", false),
        ] {
            let url = parse_realm("reg.example", realm).unwrap();
            let result = check_realm_for_credentials("reg.example", &url, allowed);
            assert_eq!(result.is_ok(), ok, "{realm}");
            if let Err(e) = result {
                let text = e.to_string();
                assert!(
                    text.contains(realm)
                        && text.contains("withheld")
                        && text.contains("--insecure-registry auth."),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn docker_config_auths() {
        let json = r#"{"auths":{
            "https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},
            "127.0.0.1:5000":{"username":"u","password":"p:w"},
            "http://reg.example:443/":{"auth":"YTpiOmM="},
            "empty.example":{}
        }}"#;
        let k = Keyring::from_docker_config_json(json.as_bytes(), "test").unwrap();
        let basic = |u: &str, p: &str| Credential::Basic {
            username: u.into(),
            password: p.into(),
        };
        assert_eq!(k.get("docker.io"), basic("user", "pass"));
        assert_eq!(k.get("127.0.0.1:5000"), basic("u", "p:w"));
        assert_eq!(k.get("reg.example:443"), basic("a", "b:c"));
        assert_eq!(k.get("empty.example"), Credential::Anonymous);
        assert_eq!(k.get("other.example"), Credential::Anonymous);
    }

    #[test]
    fn bad_docker_configs_name_the_entry() {
        let err =
            Keyring::from_docker_config_json(br#"{"auths":{"h":{"auth":"!!"}}}"#, "secret ns/x")
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("secret ns/x") && err.contains("auths[\"h\"]"),
            "{err}"
        );
        assert!(Keyring::from_docker_config_json(br#"{"auths":1}"#, "f").is_err());
    }

    #[test]
    fn basic_header() {
        let c = Credential::Basic {
            username: "user".into(),
            password: "pass".into(),
        };
        assert_eq!(c.basic_header().unwrap(), "Basic dXNlcjpwYXNz");
        assert_eq!(format!("{c:?}"), "Basic(user, ****)");
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn token_answer() -> impl Strategy<Value = Vec<u8>> {
        let field = prop_oneof![
            "\\PC{0,20}".prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
            any::<i64>().prop_map(serde_json::Value::from),
        ];
        let key = prop_oneof![
            Just("token"),
            Just("access_token"),
            Just("expires_in"),
            Just("issued_at"),
        ];
        prop::collection::btree_map(key, field, 0..4)
            .prop_map(|m| serde_json::to_vec(&m).unwrap_or_default())
    }

    /// A token answer parses to a non-empty token, or fails naming the realm.
    fn check_token(body: &[u8]) -> Result<(), TestCaseError> {
        match Token::parse(body, "https://realm.example/token") {
            Ok(t) => prop_assert!(!t.token.is_empty()),
            Err(e) => prop_assert!(e.to_string().contains("https://realm.example/token")),
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn token_answer_properties_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..300)) {
            check_token(&body)?;
        }

        #[test]
        fn token_answer_properties_on_structured_answers(body in token_answer()) {
            check_token(&body)?;
        }

        #[test]
        fn challenge_properties_on_arbitrary_text(header in "\\PC{0,120}") {
            if let Some(Challenge::Bearer { realm, .. }) = Challenge::parse(&header)
                && let Err(e) = parse_realm("reg.example", &realm)
            {
                prop_assert!(e.to_string().contains("reg.example"));
            }
        }

        #[test]
        fn challenge_properties_round_trip_their_parameters(
            realm in "https://[a-z]{1,10}\\.example(:[0-9]{1,4})?/[a-z/]{0,10}",
            service in proptest::option::of("[a-zA-Z0-9 .,:=-]{0,20}"),
            scope in proptest::option::of("repository:[a-z/]{1,10}:pull(,push)?"),
            quote_realm in any::<bool>(),
            scheme in prop_oneof![Just("Bearer"), Just("bearer"), Just("BEARER")],
        ) {
            let realm_param = if quote_realm { format!("\"{realm}\"") } else { realm.clone() };
            let mut header = format!("{scheme} realm={realm_param}");
            if let Some(s) = &service {
                header.push_str(&format!(",service=\"{s}\""));
            }
            if let Some(s) = &scope {
                header.push_str(&format!(", scope=\"{s}\""));
            }
            prop_assert_eq!(
                Challenge::parse(&header),
                Some(Challenge::Bearer { realm: realm.clone(), service, scope }),
                "{}", header
            );
            prop_assert!(parse_realm("r", &realm).is_ok());
        }

        #[test]
        fn docker_config_properties_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Err(e) = Keyring::from_docker_config_json(&bytes, "origin-x") {
                prop_assert!(e.to_string().contains("origin-x"));
            }
        }
    }
}
