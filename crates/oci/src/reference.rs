//! Image references: `[registry/]repository[:tag][@digest]`, with Docker Hub's defaults.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// The registry assumed when a reference names none.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag assumed when a reference names neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";

/// Why a string is not an image reference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The string was empty.
    #[error("empty image reference: give one like `127.0.0.1:5000/demo/hello:v1`")]
    Empty,
    /// The registry part is not `host[:port]`.
    #[error(
        "invalid registry `{0}` in image reference: give a host name or IP (IPv6 in brackets) with an optional numeric port, like `registry.example:5000`"
    )]
    Registry(String),
    /// The repository path has characters the distribution spec does not allow.
    #[error(
        "invalid repository `{0}` in image reference: use lowercase letters, digits and `._-/` separators"
    )]
    Repository(String),
    /// The tag is not `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
    #[error("invalid tag `{0}`: tags are up to 128 letters, digits, `_`, `.` or `-`")]
    Tag(String),
    /// The digest part is not a digest.
    #[error(transparent)]
    Digest(#[from] crate::digest::Error),
}

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Builds a reference to `digest` in the same repository as `self`.
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The registry host (and port), e.g. `127.0.0.1:5000` or `docker.io`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host to connect to: Docker Hub's API lives at `registry-1.docker.io`.
    pub fn api_host(&self) -> &str {
        match self.registry.as_str() {
            "docker.io" | "index.docker.io" => "registry-1.docker.io",
            other => other,
        }
    }

    /// The repository path, e.g. `library/alpine`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if one was given.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if one was given.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry for: the digest if given, else the tag (default `latest`).
    pub fn manifest_key(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// Whether the registry lives on this machine (loopback), where plain HTTP is allowed.
    pub fn is_loopback(&self) -> bool {
        is_loopback_authority(&self.registry)
    }
}

/// Whether `host[:port]` names this machine: `localhost` or a loopback IP literal.
pub fn is_loopback_authority(authority: &str) -> bool {
    let host = host_of(authority);
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The host part of `host[:port]` (IPv6 literals keep their brackets).
pub fn host_of(registry: &str) -> &str {
    if registry.starts_with('[') {
        return registry.split_inclusive(']').next().unwrap_or(registry);
    }
    registry.split(':').next().unwrap_or(registry)
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let s = s.trim();
        if s.is_empty() {
            return Err(Error::Empty);
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>()?)),
            None => (s, None),
        };
        let (name, tag) = split_tag(rest);
        let (registry, repository) = split_registry(name);
        validate_registry(&registry)?;
        let repository = match (registry.as_str(), repository.contains('/')) {
            (DEFAULT_REGISTRY, false) => format!("library/{repository}"),
            _ => repository.to_string(),
        };
        validate_repository(&repository)?;
        if let Some(t) = tag {
            validate_tag(t)?;
        }
        Ok(Reference {
            registry,
            repository,
            tag: tag.map(str::to_string),
            digest,
        })
    }
}

/// Splits `name:tag`, taking care that `host:port/repo` has no tag.
fn split_tag(s: &str) -> (&str, Option<&str>) {
    match s.rfind(':') {
        Some(i) if !s[i + 1..].contains('/') => (&s[..i], Some(&s[i + 1..])),
        _ => (s, None),
    }
}

/// Splits the registry off the name: the first component is a registry when it has a `.` or
/// `:` or is `localhost` (Docker's rule).
fn split_registry(name: &str) -> (String, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            let registry = if first == "index.docker.io" {
                DEFAULT_REGISTRY
            } else {
                first
            };
            (registry.to_string(), rest)
        }
        _ => (DEFAULT_REGISTRY.to_string(), name),
    }
}

/// A registry is `host[:port]`: a DNS name or IPv4 literal of letters, digits, `.` and `-`,
/// or an IPv6 literal in brackets, then an optional port of up to 5 digits.
fn validate_registry(registry: &str) -> Result<(), Error> {
    let bad = || Error::Registry(registry.chars().take(300).collect());
    let (host, port) = match registry.strip_prefix('[') {
        Some(rest) => {
            let (ip, after) = rest.split_once(']').ok_or_else(bad)?;
            ip.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
            let port = match after {
                "" => None,
                a => Some(a.strip_prefix(':').unwrap_or("not a port")),
            };
            (None, port)
        }
        None => match registry.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(registry), None),
        },
    };
    let host_ok = host.is_none_or(|h| {
        !h.is_empty()
            && h.len() <= 253
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            && !h.starts_with(['.', '-'])
    });
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

fn validate_repository(repo: &str) -> Result<(), Error> {
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && c.as_bytes()[0].is_ascii_alphanumeric()
            && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
    };
    if repo.len() > 255 || !repo.split('/').all(component_ok) {
        return Err(Error::Repository(repo.to_string()));
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), Error> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.as_bytes()[0] != b'.'
        && tag.as_bytes()[0] != b'-'
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Tag(tag.to_string()))
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_the_forms_in_use() {
        let cases: &[(&str, &str, &str, Option<&str>, bool)] = &[
            ("alpine", "docker.io", "library/alpine", None, false),
            ("alpine:3", "docker.io", "library/alpine", Some("3"), false),
            ("user/app", "docker.io", "user/app", None, false),
            (
                "docker.io/alpine",
                "docker.io",
                "library/alpine",
                None,
                false,
            ),
            (
                "index.docker.io/x/y:1",
                "docker.io",
                "x/y",
                Some("1"),
                false,
            ),
            (
                "127.0.0.1:5000/demo/hello:v1",
                "127.0.0.1:5000",
                "demo/hello",
                Some("v1"),
                false,
            ),
            ("localhost/hello", "localhost", "hello", None, false),
            (
                "localhost:5000/a/b/c",
                "localhost:5000",
                "a/b/c",
                None,
                false,
            ),
            (
                "ghcr.io/o/r:1.0-rc_1",
                "ghcr.io",
                "o/r",
                Some("1.0-rc_1"),
                false,
            ),
            ("[::1]:5000/x:y", "[::1]:5000", "x", Some("y"), false),
        ];
        for (input, registry, repo, tag, digest) in cases {
            let r: Reference = input.parse().unwrap();
            assert_eq!(r.registry(), *registry, "{input}");
            assert_eq!(r.repository(), *repo, "{input}");
            assert_eq!(r.tag(), *tag, "{input}");
            assert_eq!(r.digest().is_some(), *digest, "{input}");
        }
    }

    #[test]
    fn digests_with_and_without_tags() {
        let r: Reference = format!("127.0.0.1:5000/x:v1@{D}").parse().unwrap();
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.manifest_key(), D);
        let r: Reference = format!("reg.example:443/x@{D}").parse().unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.registry(), "reg.example:443");
        assert_eq!(r.to_string(), format!("reg.example:443/x@{D}"));
    }

    #[test]
    fn defaults_and_display() {
        let r: Reference = "alpine".parse().unwrap();
        assert_eq!(r.manifest_key(), "latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.to_string(), "docker.io/library/alpine");
    }

    #[test]
    fn loopback_detection() {
        for (s, want) in [
            ("127.0.0.1:5000/a", true),
            ("127.3.4.5/a", true),
            ("localhost:1/a", true),
            ("[::1]:5000/a", true),
            ("10.0.0.1:5000/a", false),
            ("registry.example/a", false),
        ] {
            assert_eq!(s.parse::<Reference>().unwrap().is_loopback(), want, "{s}");
        }
    }

    #[test]
    fn rejects_bad_references() {
        assert_eq!("".parse::<Reference>(), Err(Error::Empty));
        assert!(matches!(
            "Upper/Case".parse::<Reference>(),
            Err(Error::Repository(_))
        ));
        assert!(matches!(
            "a//b".parse::<Reference>(),
            Err(Error::Repository(_))
        ));
        assert!(matches!("a:-bad".parse::<Reference>(), Err(Error::Tag(_))));
        for bad in [
            "a b.example/x",
            "localhost:80.evil.example/x",
            "reg.example?q=/x",
            "reg.example:/x",
            "[::1/x",
            "[::1]:/x",
            "[::1]x:5000/x",
            "[nothex]:5000/x",
            ".example/x",
        ] {
            let err = bad.parse::<Reference>().unwrap_err();
            assert!(matches!(err, Error::Registry(_)), "{bad}: {err}");
            assert!(err.to_string().contains("host name or IP"), "{err}");
        }
        assert!(matches!(
            "a@sha256:zz".parse::<Reference>(),
            Err(Error::Digest(_))
        ));
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// A reference that parses, from its parts; some parts are then mutated by the tests.
    fn reference_text() -> impl Strategy<Value = String> {
        let registry = prop_oneof![
            Just(String::new()),
            "[a-z0-9]{1,8}\\.[a-z]{2,4}(:[0-9]{1,5})?/",
            Just("localhost:5000/".to_string()),
            Just("[::1]:5000/".to_string()),
        ];
        let repo = "[a-z0-9]{1,6}([._-][a-z0-9]{1,4})?(/[a-z0-9]{1,6}){0,3}";
        let tag = proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}");
        let digest = proptest::option::of("[0-9a-f]{64}");
        (registry, repo, tag, digest).prop_map(|(reg, repo, tag, digest)| {
            let mut s = format!("{reg}{repo}");
            if let Some(t) = tag {
                s.push(':');
                s.push_str(&t);
            }
            if let Some(d) = digest {
                s.push_str("@sha256:");
                s.push_str(&d);
            }
            s
        })
    }

    /// Parses `s`: an error must say what is wrong; a reference must round-trip through
    /// Display to itself.
    fn check(s: &str) -> Result<(), TestCaseError> {
        match s.parse::<Reference>() {
            Ok(r) => {
                let again: Reference = r
                    .to_string()
                    .parse()
                    .map_err(|e| TestCaseError::fail(format!("{s:?} -> {r} -> {e}")))?;
                prop_assert_eq!(&again, &r, "{:?}", s);
                prop_assert_eq!(again.to_string(), r.to_string());
            }
            Err(e) => {
                let text = e.to_string();
                prop_assert!(!text.is_empty());
                if let Error::Registry(part) | Error::Repository(part) | Error::Tag(part) = &e {
                    prop_assert!(text.contains(part.as_str()), "{}", text);
                }
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn reference_parse_properties_on_arbitrary_text(s in "\\PC{0,80}") {
            check(&s)?;
        }

        #[test]
        fn reference_parse_properties_on_valid_references(s in reference_text()) {
            prop_assert!(s.parse::<Reference>().is_ok(), "{}", s);
            check(&s)?;
        }

        #[test]
        fn reference_parse_properties_on_mutated_references(
            s in reference_text(),
            at in any::<prop::sample::Index>(),
            c in prop_oneof![Just(':'), Just('/'), Just('@'), Just('.'), Just('A'), Just(' '), any::<char>()],
            remove in any::<bool>(),
        ) {
            let mut chars: Vec<char> = s.chars().collect();
            let i = at.index(chars.len() + 1);
            if remove && i < chars.len() {
                chars.remove(i);
            } else {
                chars.insert(i.min(chars.len()), c);
            }
            check(&chars.into_iter().collect::<String>())?;
        }
    }
}
