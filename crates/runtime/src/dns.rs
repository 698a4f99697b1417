//! Name resolution for a pod's guests: the pod's own resolver configuration (what its
//! `/etc/resolv.conf` and `/etc/hosts` would say in a container), queried from inside the
//! pod's network namespace.
//!
//! A container's C library reads the files its runtime wrote for it; a wasm guest asks the
//! host (`wasi:sockets/ip-name-lookup`, the host name of an outgoing `wasi:http` request), and
//! the host answers as that container's library would:
//! 1. an IP literal is the answer itself;
//! 2. the hosts entries (`localhost`, the pod's own name, `hostAliases`) are looked up first,
//!    case-insensitively;
//! 3. then the nameservers, in order, with the search domains tried first for a name with
//!    fewer than `ndots` dots (`ndots:5` in a cluster: `web` is tried as
//!    `web.<namespace>.svc.cluster.local` first), each query given `timeout` and `attempts`.
//!
//! The queries' UDP and TCP sockets are made inside the pod's namespace
//! ([`wasmlet_netns::NetNs::within`]), so a cluster DNS Service is reached as the pod, through
//! its routes and the node's kube-proxy rules. A resolver is built at the first lookup, so an
//! idle pod costs nothing but its configuration.
//!
//! The resolver is [hickory](https://docs.rs/hickory-resolver): a stub resolver with search
//! lists, `ndots`, UDP with TCP fallback and a small answer cache.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hickory_resolver::Resolver;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ServerOrderingStrategy,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::iocompat::AsyncIoTokioAsStd;
use hickory_resolver::net::runtime::{RuntimeProvider, TokioHandle, TokioTime};
use hickory_resolver::proto::rr::Name;
use wasmlet_netns::NetNs;

/// Why a name could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// Not a host name (nor an IP address).
    #[error("{0:?} is not a valid host name")]
    InvalidName(String),
    /// The nameservers say the name has no address (NXDOMAIN or no records).
    #[error("{0} has no address")]
    NotFound(String),
    /// The nameservers did not answer (timeout, unreachable): it may work later.
    #[error("resolving {name}: the nameservers did not answer: {reason}")]
    Unavailable {
        /// The name asked for.
        name: String,
        /// What failed.
        reason: String,
    },
    /// The pod has no nameserver, or its configuration cannot work.
    #[error("resolving {name}: {reason}")]
    Failed {
        /// The name asked for.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// A resolver configuration: a `resolv.conf` and hosts entries, as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Nameservers, in the order they are asked (port 53, UDP then TCP).
    pub nameservers: Vec<IpAddr>,
    /// Search domains, in order; `.` stands for the root (no search).
    pub search: Vec<String>,
    /// A name with fewer dots than this is tried with the search domains first (1).
    pub ndots: usize,
    /// How long one query waits for an answer (5 s).
    pub timeout: Duration,
    /// How many times a query is sent to each nameserver (2).
    pub attempts: usize,
    /// Spread queries over the nameservers instead of asking them in order (`rotate`).
    pub rotate: bool,
    /// Names answered before any nameserver is asked: (name, address), names lowercase.
    pub hosts: Vec<(String, IpAddr)>,
}

impl Default for DnsConfig {
    /// No nameserver and no hosts entry; `ndots` 1, a 5 s timeout and 2 attempts, as the C
    /// library's defaults.
    fn default() -> DnsConfig {
        DnsConfig {
            nameservers: Vec::new(),
            search: Vec::new(),
            ndots: 1,
            timeout: Duration::from_secs(5),
            attempts: 2,
            rotate: false,
            hosts: Vec::new(),
        }
    }
}

/// The C library's bounds on `ndots`, `timeout` (seconds) and `attempts`.
const MAX_NDOTS: usize = 15;
const MAX_TIMEOUT_SECS: u64 = 30;
const MAX_ATTEMPTS: usize = 5;

impl DnsConfig {
    /// Applies `resolv.conf` options as the C library reads them: `ndots:N` (at most 15),
    /// `timeout:N` seconds (at most 30), `attempts:N` (at most 5), `rotate`; a later option
    /// wins, others (`edns0`, `single-request`, ...) and malformed values are ignored.
    pub fn apply_options<S: AsRef<str>>(&mut self, options: &[S]) {
        for option in options {
            let (name, value) = match option.as_ref().split_once(':') {
                Some((name, value)) => (name, value.parse::<u64>().ok()),
                None => (option.as_ref(), None),
            };
            match (name, value) {
                ("ndots", Some(n)) => self.ndots = (n as usize).min(MAX_NDOTS),
                ("timeout", Some(n)) => {
                    self.timeout = Duration::from_secs(n.clamp(1, MAX_TIMEOUT_SECS))
                }
                ("attempts", Some(n)) => self.attempts = (n as usize).clamp(1, MAX_ATTEMPTS),
                ("rotate", None) => self.rotate = true,
                _ => {}
            }
        }
    }

    /// The addresses the hosts entries give `name` (compared without case or a final dot).
    pub fn hosts_lookup(&self, name: &str) -> Vec<IpAddr> {
        let name = name.trim_end_matches('.');
        let mut found = Vec::new();
        for (host, ip) in &self.hosts {
            if host.eq_ignore_ascii_case(name) && !found.contains(ip) {
                found.push(*ip);
            }
        }
        found
    }
}

/// A pod's resolver: [`DnsConfig`] queried from inside the pod's network namespace (see the
/// [module docs](self)).
pub struct PodResolver {
    config: DnsConfig,
    namespace: Option<Arc<NetNs>>,
    resolver: OnceLock<Result<Resolver<PodSockets>, String>>,
}

impl std::fmt::Debug for PodResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodResolver")
            .field("config", &self.config)
            .field("namespace", &self.namespace.as_ref().map(|ns| ns.path()))
            .finish()
    }
}

impl PodResolver {
    /// A resolver of `config` whose queries leave from `namespace` (the host's network when
    /// `None`).
    pub fn new(config: DnsConfig, namespace: Option<Arc<NetNs>>) -> PodResolver {
        PodResolver {
            config,
            namespace,
            resolver: OnceLock::new(),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &DnsConfig {
        &self.config
    }

    /// The addresses of `name`: an IP literal as it is, else the hosts entries', else the
    /// nameservers' answer (IPv4 first, then IPv6).
    pub async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, LookupError> {
        let host = parse_host(name)?;
        let domain = match host {
            Host::Ip(ip) => return Ok(vec![ip]),
            Host::Domain(domain) => domain,
        };
        let from_hosts = self.config.hosts_lookup(&domain);
        if !from_hosts.is_empty() {
            return Ok(from_hosts);
        }
        let resolver = self.resolver(&domain)?;
        match resolver.lookup_ip(domain.as_str()).await {
            Ok(answer) => {
                let mut ips: Vec<IpAddr> = answer.iter().map(|ip| ip.to_canonical()).collect();
                ips.dedup();
                match ips.is_empty() {
                    true => Err(LookupError::NotFound(domain)),
                    false => Ok(ips),
                }
            }
            Err(err) => Err(lookup_error(domain, &err)),
        }
    }

    fn resolver(&self, name: &str) -> Result<&Resolver<PodSockets>, LookupError> {
        let built = self.resolver.get_or_init(|| self.build());
        built.as_ref().map_err(|reason| LookupError::Failed {
            name: name.to_owned(),
            reason: reason.clone(),
        })
    }

    fn build(&self) -> Result<Resolver<PodSockets>, String> {
        if self.config.nameservers.is_empty() {
            return Err("the pod has no nameserver (its dnsConfig gives none)".into());
        }
        let servers = self.config.nameservers.iter().copied();
        let servers = servers.map(NameServerConfig::udp_and_tcp).collect();
        let search = self.config.search.iter().filter_map(|s| search_name(s));
        let config = ResolverConfig::from_parts(None, search.collect(), servers);
        let provider = PodSockets {
            handle: TokioHandle::default(),
            namespace: self.namespace.clone(),
        };
        let mut builder = Resolver::builder_with_config(config, provider);
        let options = builder.options_mut();
        options.ndots = self.config.ndots;
        options.timeout = self.config.timeout;
        options.attempts = self.config.attempts;
        options.use_hosts_file = ResolveHosts::Never;
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        options.num_concurrent_reqs = 1;
        options.cache_size = 256;
        options.server_ordering_strategy = match self.config.rotate {
            true => ServerOrderingStrategy::RoundRobin,
            false => ServerOrderingStrategy::UserProvidedOrder,
        };
        builder
            .build()
            .map_err(|e| format!("cannot build the resolver: {e}"))
    }
}

/// A search domain as a DNS name (`.` is the root); one that is not a name is skipped.
fn search_name(domain: &str) -> Option<Name> {
    let fqdn = match domain.ends_with('.') {
        true => domain.to_owned(),
        false => format!("{domain}."),
    };
    match Name::from_ascii(&fqdn) {
        Ok(name) => Some(name),
        Err(err) => {
            tracing::warn!("search domain {domain:?} is skipped: {err}");
            None
        }
    }
}

enum Host {
    Ip(IpAddr),
    Domain(String),
}

/// What a guest asked for: an IP address (bare or bracketed IPv6 too), or a domain name,
/// IDNA-converted to ASCII and lowercase, as `wasi:sockets` asks of hosts.
fn parse_host(name: &str) -> Result<Host, LookupError> {
    let invalid = || LookupError::InvalidName(name.chars().take(300).collect());
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    match url::Host::parse(name) {
        Ok(url::Host::Ipv4(ip)) => Ok(Host::Ip(ip.into())),
        Ok(url::Host::Ipv6(ip)) => Ok(Host::Ip(ip.into())),
        Ok(url::Host::Domain(domain)) if domain.len() <= 254 && !domain.is_empty() => {
            Ok(Host::Domain(domain))
        }
        _ => Err(invalid()),
    }
}

fn lookup_error(name: String, err: &NetError) -> LookupError {
    if err.is_nx_domain() || err.is_no_records_found() {
        return LookupError::NotFound(name);
    }
    match err {
        NetError::Timeout | NetError::Io(_) | NetError::NoConnections | NetError::Busy => {
            LookupError::Unavailable {
                name,
                reason: err.to_string(),
            }
        }
        _ => LookupError::Failed {
            name,
            reason: err.to_string(),
        },
    }
}

/// The sockets of a pod's DNS queries: made inside its namespace, then driven by tokio.
#[derive(Clone)]
struct PodSockets {
    handle: TokioHandle,
    namespace: Option<Arc<NetNs>>,
}

impl PodSockets {
    /// Runs `make` inside the pod's namespace (where it has one).
    fn inside<T>(&self, make: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        match &self.namespace {
            None => make(),
            Some(ns) => ns.within(make).map_err(io::Error::other)?,
        }
    }
}

type Connecting<T> = Pin<Box<dyn Send + Future<Output = io::Result<T>>>>;

impl RuntimeProvider for PodSockets {
    type Handle = TokioHandle;
    type Timer = TokioTime;
    type Udp = tokio::net::UdpSocket;
    type Tcp = AsyncIoTokioAsStd<tokio::net::TcpStream>;

    fn create_handle(&self) -> TokioHandle {
        self.handle.clone()
    }

    fn connect_tcp(
        &self,
        server: SocketAddr,
        bind: Option<SocketAddr>,
        timeout: Option<Duration>,
    ) -> Connecting<Self::Tcp> {
        let socket = self.inside(|| {
            let socket = match server {
                SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            if let Some(bind) = bind {
                socket.bind(bind)?;
            }
            Ok(socket)
        });
        let timeout = timeout.unwrap_or(Duration::from_secs(5));
        Box::pin(async move {
            let socket = socket?;
            socket.set_nodelay(true)?;
            match tokio::time::timeout(timeout, socket.connect(server)).await {
                Ok(stream) => Ok(AsyncIoTokioAsStd(stream?)),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting to nameserver {server} timed out"),
                )),
            }
        })
    }

    fn bind_udp(&self, local: SocketAddr, _server: SocketAddr) -> Connecting<Self::Udp> {
        let socket = self.inside(|| {
            let socket = std::net::UdpSocket::bind(local)?;
            socket.set_nonblocking(true)?;
            Ok(socket)
        });
        Box::pin(async move { tokio::net::UdpSocket::from_std(socket?) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_read_as_the_c_library_reads_them() {
        let mut config = DnsConfig::default();
        config.apply_options(&[
            "ndots:5",
            "timeout:0",
            "attempts:9",
            "rotate",
            "edns0",
            "ndots:x",
            "ndots:99",
        ]);
        assert_eq!(config.ndots, MAX_NDOTS);
        assert_eq!(config.timeout, Duration::from_secs(1));
        assert_eq!(config.attempts, MAX_ATTEMPTS);
        assert!(config.rotate);
        let mut plain = DnsConfig::default();
        plain.apply_options(&["timeout:3", "attempts:1"]);
        assert_eq!(
            (plain.ndots, plain.timeout, plain.attempts),
            (1, Duration::from_secs(3), 1)
        );
    }

    #[test]
    fn hosts_entries_match_without_case_or_final_dot() {
        let config = DnsConfig {
            hosts: vec![
                ("localhost".into(), "127.0.0.1".parse().unwrap()),
                ("localhost".into(), "::1".parse().unwrap()),
                ("db".into(), "10.1.2.3".parse().unwrap()),
                ("db".into(), "10.1.2.3".parse().unwrap()),
            ],
            ..DnsConfig::default()
        };
        assert_eq!(config.hosts_lookup("LocalHost.").len(), 2);
        assert_eq!(
            config.hosts_lookup("db"),
            vec!["10.1.2.3".parse::<IpAddr>().unwrap()]
        );
        assert!(config.hosts_lookup("web").is_empty());
    }

    #[tokio::test]
    async fn literals_and_hosts_entries_need_no_nameserver() {
        let config = DnsConfig {
            hosts: vec![("web.example".into(), "10.0.0.7".parse().unwrap())],
            ..DnsConfig::default()
        };
        let resolver = PodResolver::new(config, None);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(resolver.lookup("10.1.1.1").await, Ok(vec![ip("10.1.1.1")]));
        assert_eq!(resolver.lookup("[::1]").await, Ok(vec![ip("::1")]));
        assert_eq!(resolver.lookup("::1").await, Ok(vec![ip("::1")]));
        assert_eq!(
            resolver.lookup("WEB.example").await,
            Ok(vec![ip("10.0.0.7")])
        );
        let missing = resolver.lookup("other.example").await.unwrap_err();
        assert!(
            missing.to_string().contains("has no nameserver"),
            "{missing}"
        );
        for bad in ["", "a b", "exa mple.com", "http://x", &"a".repeat(300)] {
            assert!(
                matches!(resolver.lookup(bad).await, Err(LookupError::InvalidName(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn search_domains_become_absolute_names() {
        assert_eq!(
            search_name("svc.cluster.local").unwrap().to_string(),
            "svc.cluster.local."
        );
        assert_eq!(search_name(".").unwrap().to_string(), ".");
        assert!(search_name("bad..domain").is_none());
    }
}
