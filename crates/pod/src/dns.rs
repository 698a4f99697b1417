//! A pod's name resolution, as the kubelet sets it up for a container: the resolver
//! configuration that would be its `/etc/resolv.conf` (nameservers, search domains, options)
//! from `dnsPolicy`, `dnsConfig` and the node's settings (`--cluster-dns`,
//! `--cluster-domain`, `--resolv-conf`), and the entries that would be its `/etc/hosts`
//! (`localhost`, the pod's own name on its IPs, `hostAliases`).
//!
//! The rules are the kubelet's (`pkg/kubelet/network/dns`):
//! - `ClusterFirst` (the default): the cluster DNS servers only, search
//!   `<namespace>.svc.<domain> svc.<domain> <domain>` then the node's search domains, and
//!   `ndots:5`. Without `--cluster-dns` the pod falls back to `Default` and a
//!   `MissingClusterDNS` warning is raised. A `hostNetwork` pod under `ClusterFirst` gets
//!   `Default`; `ClusterFirstWithHostNet` gets the cluster's.
//! - `Default`: the node's resolver configuration (`--resolv-conf`); when that flag is empty,
//!   `127.0.0.1` and the search domain `.`, which resolves nothing by search.
//! - `None`: nothing but `dnsConfig`.
//! - `dnsConfig` is then merged in: nameservers and searches appended without duplicates,
//!   options overriding those of the same name. At most 3 nameservers, 32 search domains of
//!   at most 253 characters and 2048 characters in all are kept; what is cut raises a
//!   `DNSConfigForming` warning that names what was applied.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

/// Errors reading a resolver configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// A `nameserver` line without an address.
    #[error("{source_name}: line {line}: `nameserver` without an address")]
    EmptyNameserver {
        /// The file (or flag) the text came from.
        source_name: String,
        /// The 1-based line number.
        line: usize,
    },
    /// The text is longer than a resolver configuration may be.
    #[error(
        "{source_name}: {len} bytes, more than the {MAX_RESOLV_CONF_BYTES} a resolv.conf may have"
    )]
    TooLong {
        /// The file (or flag) the text came from.
        source_name: String,
        /// Its length.
        len: usize,
    },
}

/// The longest resolver configuration read (the kubelet's limit).
pub const MAX_RESOLV_CONF_BYTES: usize = 10 << 20;
/// The most nameservers a pod gets (the API server's and glibc's limit).
pub const MAX_NAMESERVERS: usize = 3;
/// The most search domains a pod gets.
pub const MAX_SEARCH_DOMAINS: usize = 32;
/// The longest search line, its domains joined by spaces.
pub const MAX_SEARCH_LINE_CHARS: usize = 2048;
/// The longest search domain (a DNS subdomain).
const MAX_SEARCH_DOMAIN_CHARS: usize = 253;

/// What a `resolv.conf` says: nameservers, search domains and options, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines, in order (addresses as written).
    pub nameservers: Vec<String>,
    /// The last `search` line's domains, without trailing dots.
    pub searches: Vec<String>,
    /// The last `options` line's options (`ndots:5`, `edns0`, ...).
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Reads a `resolv.conf` as the kubelet does: nameservers accumulate, the last `search`
    /// and the last `options` line win, `#` comments and other keywords are ignored.
    /// `source_name` names the text in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<ResolvConf, DnsError> {
        if text.len() > MAX_RESOLV_CONF_BYTES {
            return Err(DnsError::TooLong {
                source_name: source_name.into(),
                len: text.len(),
            });
        }
        let mut conf = ResolvConf::default();
        for (index, line) in text.lines().enumerate() {
            let mut fields = line.split_whitespace();
            match fields.next() {
                Some("nameserver") => match fields.next() {
                    Some(server) => conf.nameservers.push(server.into()),
                    None => {
                        return Err(DnsError::EmptyNameserver {
                            source_name: source_name.into(),
                            line: index + 1,
                        });
                    }
                },
                Some("search") => {
                    conf.searches = fields.map(|s| s.trim_end_matches('.').to_owned()).collect()
                }
                Some("options") => conf.options = fields.map(str::to_owned).collect(),
                _ => {}
            }
        }
        Ok(conf)
    }

    /// The value of option `name` (`ndots` of `ndots:5`), if given with a value.
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find_map(|o| o.strip_prefix(name)?.strip_prefix(':'))
    }

    /// Whether the flag option `name` (`rotate`, `edns0`) is given.
    pub fn has_flag(&self, name: &str) -> bool {
        self.options.iter().any(|o| o == name)
    }

    /// The nameservers that are IP addresses (a name or garbage is not a nameserver).
    pub fn nameserver_ips(&self) -> Vec<IpAddr> {
        let ip = |s: &String| s.parse::<IpAddr>().ok();
        self.nameservers.iter().filter_map(ip).collect()
    }

    /// The text of this configuration as a `resolv.conf`.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for server in &self.nameservers {
            text.push_str(&format!("nameserver {server}\n"));
        }
        if !self.searches.is_empty() {
            text.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        if !self.options.is_empty() {
            text.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        text
    }
}

/// The node's name resolution settings (the kubelet's flags of the same names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeDns {
    /// `--cluster-dns`: the cluster DNS service's IPs; empty when not configured.
    pub cluster_dns: Vec<IpAddr>,
    /// `--cluster-domain` (`cluster.local` in most clusters); empty when not configured.
    pub cluster_domain: String,
    /// What `--resolv-conf` names, read; `None` when the flag is empty.
    pub host: Option<ResolvConf>,
    /// The node's own hosts file (`/etc/hosts`), which `hostNetwork` pods use.
    pub hosts: Vec<HostEntry>,
}

/// Something about a pod's DNS that the kubelet reports as a Warning event of the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsWarning {
    /// `ClusterFirst` without `--cluster-dns`: the pod fell back to `Default`.
    MissingClusterDns,
    /// Nameservers or search domains were cut to the limits; the message names what stayed.
    LimitsExceeded(String),
}

impl DnsWarning {
    /// The event's reason, as the kubelet gives it.
    pub fn reason(&self) -> &'static str {
        match self {
            DnsWarning::MissingClusterDns => "MissingClusterDNS",
            DnsWarning::LimitsExceeded(_) => "DNSConfigForming",
        }
    }

    /// The event's message.
    pub fn message(&self) -> String {
        match self {
            DnsWarning::MissingClusterDns => "the node has no cluster DNS IP configured \
                 (--cluster-dns) and cannot give the pod the \"ClusterFirst\" policy; falling \
                 back to \"Default\" policy"
                .into(),
            DnsWarning::LimitsExceeded(message) => message.clone(),
        }
    }
}

/// A pod's resolver configuration and the warnings forming it raised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodDns {
    /// What the pod's `/etc/resolv.conf` would say.
    pub conf: ResolvConf,
    /// Warnings to report as events of the pod.
    pub warnings: Vec<DnsWarning>,
}

enum Policy {
    Cluster,
    Host,
    None,
}

fn policy_of(pod: &Pod) -> Policy {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    match spec.and_then(|s| s.dns_policy.as_deref()) {
        Some("None") => Policy::None,
        Some("Default") => Policy::Host,
        Some("ClusterFirstWithHostNet") => Policy::Cluster,
        _ if host_network => Policy::Host,
        _ => Policy::Cluster,
    }
}

/// The resolver configuration the kubelet would give `pod` on a node with `node`'s settings
/// (see the [module docs](self) for the rules).
pub fn pod_dns(pod: &Pod, node: &NodeDns) -> PodDns {
    let mut warnings = Vec::new();
    let mut conf = match policy_of(pod) {
        Policy::None => ResolvConf::default(),
        Policy::Cluster if !node.cluster_dns.is_empty() => cluster_conf(pod, node),
        Policy::Cluster => {
            warnings.push(DnsWarning::MissingClusterDns);
            host_conf(node)
        }
        Policy::Host => host_conf(node),
    };
    if let Some(extra) = pod.spec.as_ref().and_then(|s| s.dns_config.as_ref()) {
        append_unique(&mut conf.nameservers, extra.nameservers.iter().flatten());
        append_unique(&mut conf.searches, extra.searches.iter().flatten());
        for option in extra.options.iter().flatten() {
            let Some(name) = option.name.as_deref() else {
                continue;
            };
            merge_option(&mut conf.options, name, option.value.as_deref());
        }
    }
    fit_limits(&mut conf, &mut warnings);
    PodDns { conf, warnings }
}

fn cluster_conf(pod: &Pod, node: &NodeDns) -> ResolvConf {
    let host_searches = node.host.as_ref().map(|h| h.searches.clone());
    let mut searches = Vec::new();
    if !node.cluster_domain.is_empty() {
        let domain = &node.cluster_domain;
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        searches = vec![
            format!("{namespace}.svc.{domain}"),
            format!("svc.{domain}"),
            domain.clone(),
        ];
    }
    append_unique(&mut searches, host_searches.iter().flatten());
    ResolvConf {
        nameservers: node.cluster_dns.iter().map(IpAddr::to_string).collect(),
        searches,
        options: vec!["ndots:5".into()],
    }
}

fn host_conf(node: &NodeDns) -> ResolvConf {
    match &node.host {
        Some(host) => host.clone(),
        None => ResolvConf {
            nameservers: vec!["127.0.0.1".into()],
            searches: vec![".".into()],
            options: Vec::new(),
        },
    }
}

fn append_unique<'a>(list: &mut Vec<String>, extra: impl IntoIterator<Item = &'a String>) {
    for item in extra {
        if !list.contains(item) {
            list.push(item.clone());
        }
    }
}

/// Sets option `name` (to `name:value`, or the flag `name`), replacing one of that name.
fn merge_option(options: &mut Vec<String>, name: &str, value: Option<&str>) {
    let text = match value {
        Some(value) if !value.is_empty() => format!("{name}:{value}"),
        _ => name.to_owned(),
    };
    let named = |o: &String| o.split(':').next() == Some(name);
    match options.iter_mut().find(|o| named(o)) {
        Some(existing) => *existing = text,
        None => options.push(text),
    }
}

fn fit_limits(conf: &mut ResolvConf, warnings: &mut Vec<DnsWarning>) {
    if conf.nameservers.len() > MAX_NAMESERVERS {
        conf.nameservers.truncate(MAX_NAMESERVERS);
        warnings.push(DnsWarning::LimitsExceeded(format!(
            "Nameserver limits were exceeded, some nameservers have been omitted, the applied \
             nameserver line is: {}",
            conf.nameservers.join(" ")
        )));
    }
    let before = conf.searches.clone();
    conf.searches.truncate(MAX_SEARCH_DOMAINS);
    conf.searches.retain(|s| s.len() <= MAX_SEARCH_DOMAIN_CHARS);
    while conf.searches.join(" ").len() > MAX_SEARCH_LINE_CHARS {
        conf.searches.pop();
    }
    if conf.searches != before {
        warnings.push(DnsWarning::LimitsExceeded(format!(
            "Search Line limits were exceeded, some search paths have been omitted, the \
             applied search line is: {}",
            conf.searches.join(" ")
        )));
    }
}

/// One line of a hosts file: an address and the names it answers for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    /// The address.
    pub ip: IpAddr,
    /// Its names, the canonical one first.
    pub names: Vec<String>,
}

/// The pod's host name and, with `spec.subdomain`, its domain, as the kubelet forms them:
/// `spec.hostname` or the pod's name cut to 63 characters (without a trailing `-` or `.`);
/// the domain is `<subdomain>.<namespace>.svc.<cluster domain>`.
pub fn pod_hostname(pod: &Pod, cluster_domain: &str) -> (String, Option<String>) {
    let spec = pod.spec.as_ref();
    let hostname = match spec.and_then(|s| s.hostname.clone()) {
        Some(name) if !name.is_empty() => name,
        _ => {
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            let cut = &name[..name.len().min(63)];
            cut.trim_end_matches(['-', '.']).to_owned()
        }
    };
    let domain = spec
        .and_then(|s| s.subdomain.as_deref())
        .filter(|s| !s.is_empty() && !cluster_domain.is_empty())
        .map(|sub| {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
            format!("{sub}.{namespace}.svc.{cluster_domain}")
        });
    (hostname, domain)
}

/// The entries of the pod's `/etc/hosts` as the kubelet writes it: `localhost` and the IPv6
/// loopback names, the pod's name on each of its IPs (with its FQDN first when it has a
/// subdomain), then `hostAliases`. A `hostNetwork` pod gets `node_hosts` (the node's own
/// hosts file, [`NodeDns::hosts`]) followed by its aliases.
pub fn pod_hosts(
    pod: &Pod,
    pod_ips: &[IpAddr],
    cluster_domain: &str,
    node_hosts: &[HostEntry],
) -> Vec<HostEntry> {
    let spec = pod.spec.as_ref();
    let mut entries = if spec.and_then(|s| s.host_network).unwrap_or(false) {
        node_hosts.to_vec()
    } else {
        managed_hosts(pod, pod_ips, cluster_domain)
    };
    for alias in spec
        .and_then(|s| s.host_aliases.as_ref())
        .into_iter()
        .flatten()
    {
        let Some(ip) = alias.ip.parse::<IpAddr>().ok() else {
            continue;
        };
        let names = alias.hostnames.clone().unwrap_or_default();
        if !names.is_empty() {
            entries.push(HostEntry { ip, names });
        }
    }
    entries
}

fn managed_hosts(pod: &Pod, pod_ips: &[IpAddr], cluster_domain: &str) -> Vec<HostEntry> {
    let entry = |ip: &str, names: &[&str]| HostEntry {
        ip: ip.parse().expect("a literal address"),
        names: names.iter().map(|n| n.to_string()).collect(),
    };
    let mut entries = vec![
        entry("127.0.0.1", &["localhost"]),
        entry("::1", &["localhost", "ip6-localhost", "ip6-loopback"]),
    ];
    let (hostname, domain) = pod_hostname(pod, cluster_domain);
    let names = match domain {
        Some(domain) => vec![format!("{hostname}.{domain}"), hostname],
        None => vec![hostname],
    };
    for ip in pod_ips {
        entries.push(HostEntry {
            ip: *ip,
            names: names.clone(),
        });
    }
    entries
}

/// Reads a hosts file (`ADDRESS NAME...` lines, `#` comments); lines whose address does not
/// parse are skipped, as the C library skips them.
pub fn parse_hosts(text: &str) -> Vec<HostEntry> {
    let mut entries = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let Some(ip) = fields.next().and_then(|a| a.parse::<IpAddr>().ok()) else {
            continue;
        };
        let names: Vec<String> = fields.map(str::to_owned).collect();
        if !names.is_empty() {
            entries.push(HostEntry { ip, names });
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{HostAlias, PodDNSConfig, PodDNSConfigOption, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(namespace: &str, edit: impl FnOnce(&mut PodSpec)) -> Pod {
        let mut spec = PodSpec::default();
        edit(&mut spec);
        Pod {
            metadata: ObjectMeta {
                name: Some("web-7d9c".into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            spec: Some(spec),
            ..Default::default()
        }
    }

    fn node() -> NodeDns {
        NodeDns {
            cluster_dns: vec!["10.96.0.10".parse().unwrap()],
            cluster_domain: "cluster.local".into(),
            host: Some(
                ResolvConf::parse(
                    "# the node's\nnameserver 10.0.0.2\nnameserver 10.0.0.3\nsearch corp.example.\noptions edns0\n",
                    "/etc/resolv.conf",
                )
                .unwrap(),
            ),
            hosts: vec![],
        }
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cluster_first_uses_the_cluster_dns_and_the_namespace_search_path() {
        let dns = pod_dns(&pod("shop", |_| {}), &node());
        assert_eq!(dns.conf.nameservers, strings(&["10.96.0.10"]));
        assert_eq!(
            dns.conf.searches,
            strings(&[
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example"
            ])
        );
        assert_eq!(dns.conf.options, strings(&["ndots:5"]));
        assert!(dns.warnings.is_empty());
        assert_eq!(
            dns.conf.to_text(),
            "nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local \
             cluster.local corp.example\noptions ndots:5\n"
        );
    }

    #[test]
    fn policies_choose_the_base_configuration() {
        let node = node();
        let host = node.host.clone().unwrap();
        let cases: Vec<(Option<&str>, Option<bool>, &[&str])> = vec![
            (Some("Default"), None, &["10.0.0.2", "10.0.0.3"]),
            (None, Some(true), &["10.0.0.2", "10.0.0.3"]),
            (Some("ClusterFirst"), Some(true), &["10.0.0.2", "10.0.0.3"]),
            (Some("ClusterFirstWithHostNet"), Some(true), &["10.96.0.10"]),
            (Some("ClusterFirstWithHostNet"), None, &["10.96.0.10"]),
            (Some("Nonsense"), None, &["10.96.0.10"]),
            (Some("None"), None, &[]),
        ];
        for (policy, host_network, servers) in cases {
            let pod = pod("ns", |s| {
                s.dns_policy = policy.map(Into::into);
                s.host_network = host_network;
            });
            let dns = pod_dns(&pod, &node);
            assert_eq!(dns.conf.nameservers, strings(servers), "{policy:?}");
            if servers.first() == Some(&"10.0.0.2") {
                assert_eq!(
                    dns.conf, host,
                    "{policy:?}: the node's configuration as it is"
                );
            }
        }
    }

    #[test]
    fn cluster_first_without_cluster_dns_falls_back_with_a_warning() {
        let node = NodeDns {
            cluster_dns: vec![],
            ..node()
        };
        let dns = pod_dns(&pod("ns", |_| {}), &node);
        assert_eq!(dns.conf, node.host.clone().unwrap());
        assert_eq!(dns.warnings, vec![DnsWarning::MissingClusterDns]);
        assert_eq!(dns.warnings[0].reason(), "MissingClusterDNS");
        assert!(dns.warnings[0].message().contains("--cluster-dns"));
    }

    #[test]
    fn an_empty_resolv_conf_flag_means_the_local_resolver_and_no_search() {
        let node = NodeDns {
            host: None,
            ..node()
        };
        let dns = pod_dns(&pod("ns", |s| s.dns_policy = Some("Default".into())), &node);
        assert_eq!(dns.conf.nameservers, strings(&["127.0.0.1"]));
        assert_eq!(dns.conf.searches, strings(&["."]));
    }

    #[test]
    fn dns_config_is_merged_without_duplicates_and_options_override() {
        let pod = pod("ns", |s| {
            s.dns_config = Some(PodDNSConfig {
                nameservers: Some(strings(&["10.96.0.10", "1.1.1.1"])),
                searches: Some(strings(&["svc.cluster.local", "extra.example"])),
                options: Some(vec![
                    PodDNSConfigOption {
                        name: Some("ndots".into()),
                        value: Some("2".into()),
                    },
                    PodDNSConfigOption {
                        name: Some("edns0".into()),
                        value: None,
                    },
                ]),
            });
        });
        let dns = pod_dns(&pod, &node());
        assert_eq!(dns.conf.nameservers, strings(&["10.96.0.10", "1.1.1.1"]));
        assert_eq!(dns.conf.searches.last().unwrap(), "extra.example");
        assert_eq!(dns.conf.searches.len(), 5);
        assert_eq!(dns.conf.options, strings(&["ndots:2", "edns0"]));
        assert_eq!(dns.conf.option("ndots"), Some("2"));
        assert!(dns.conf.has_flag("edns0"));
    }

    #[test]
    fn none_takes_only_dns_config() {
        let pod = pod("ns", |s| {
            s.dns_policy = Some("None".into());
            s.dns_config = Some(PodDNSConfig {
                nameservers: Some(strings(&["192.0.2.53"])),
                searches: Some(strings(&["a.example"])),
                options: None,
            });
        });
        let dns = pod_dns(&pod, &node());
        assert_eq!(
            dns.conf,
            ResolvConf {
                nameservers: strings(&["192.0.2.53"]),
                searches: strings(&["a.example"]),
                options: vec![],
            }
        );
    }

    #[test]
    fn limits_cut_nameservers_and_search_paths_with_a_warning() {
        let long = "x".repeat(254);
        let many: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
        let pod = pod("ns", |s| {
            s.dns_policy = Some("None".into());
            let mut searches = vec![long.clone()];
            searches.extend(many.clone());
            s.dns_config = Some(PodDNSConfig {
                nameservers: Some(strings(&["1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"])),
                searches: Some(searches),
                options: None,
            });
        });
        let dns = pod_dns(&pod, &node());
        assert_eq!(dns.conf.nameservers.len(), MAX_NAMESERVERS);
        assert_eq!(
            dns.conf.searches,
            many[..31].to_vec(),
            "first 32, then the long one out"
        );
        let reasons: Vec<_> = dns.warnings.iter().map(DnsWarning::reason).collect();
        assert_eq!(reasons, ["DNSConfigForming", "DNSConfigForming"]);
        assert!(
            dns.warnings[0]
                .message()
                .ends_with("1.1.1.1 2.2.2.2 3.3.3.3")
        );
    }

    #[test]
    fn a_search_line_over_2048_characters_loses_its_last_domains() {
        let domains: Vec<String> = (0..10).map(|i| format!("{i}{}", "y".repeat(249))).collect();
        let pod = pod("ns", |s| {
            s.dns_policy = Some("None".into());
            s.dns_config = Some(PodDNSConfig {
                searches: Some(domains.clone()),
                ..Default::default()
            });
        });
        let dns = pod_dns(&pod, &node());
        assert_eq!(dns.conf.searches, domains[..8].to_vec());
        assert!(dns.conf.searches.join(" ").len() <= MAX_SEARCH_LINE_CHARS);
    }

    #[test]
    fn resolv_conf_parsing_follows_the_kubelet() {
        let text = "nameserver 1.1.1.1\nsearch a.example b.example.\nsearch c.example\n\
                    options ndots:3 timeout:2\n# nameserver 9.9.9.9\ndomain ignored\n\
                    nameserver ::1\noptions attempts:4\n";
        let conf = ResolvConf::parse(text, "r").unwrap();
        assert_eq!(conf.nameservers, strings(&["1.1.1.1", "::1"]));
        assert_eq!(conf.searches, strings(&["c.example"]));
        assert_eq!(conf.options, strings(&["attempts:4"]));
        assert_eq!(conf.option("ndots"), None);
        assert_eq!(
            ResolvConf::parse("nameserver\n", "/x/resolv.conf"),
            Err(DnsError::EmptyNameserver {
                source_name: "/x/resolv.conf".into(),
                line: 1
            })
        );
        let huge = "#".repeat(MAX_RESOLV_CONF_BYTES + 1);
        assert!(matches!(
            ResolvConf::parse(&huge, "big"),
            Err(DnsError::TooLong { .. })
        ));
        assert_eq!(
            ResolvConf::parse("nameserver name.example\nnameserver 10.0.0.1\n", "r")
                .unwrap()
                .nameserver_ips(),
            vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn hosts_name_the_pod_on_its_ips_and_add_aliases() {
        let pod = pod("shop", |s| {
            s.subdomain = Some("backends".into());
            s.host_aliases = Some(vec![
                HostAlias {
                    ip: "10.1.2.3".into(),
                    hostnames: Some(strings(&["db", "db.internal"])),
                },
                HostAlias {
                    ip: "not-an-ip".into(),
                    hostnames: Some(strings(&["bad"])),
                },
            ]);
        });
        let ip: IpAddr = "10.244.1.5".parse().unwrap();
        let hosts = pod_hosts(&pod, &[ip], "cluster.local", &[]);
        let names_of = |ip: &str| -> Vec<Vec<String>> {
            let ip: IpAddr = ip.parse().unwrap();
            hosts
                .iter()
                .filter(|e| e.ip == ip)
                .map(|e| e.names.clone())
                .collect()
        };
        assert_eq!(names_of("127.0.0.1"), vec![strings(&["localhost"])]);
        assert_eq!(
            names_of("10.244.1.5"),
            vec![strings(&[
                "web-7d9c.backends.shop.svc.cluster.local",
                "web-7d9c"
            ])]
        );
        assert_eq!(names_of("10.1.2.3"), vec![strings(&["db", "db.internal"])]);
        assert_eq!(hosts.len(), 4);
    }

    #[test]
    fn host_network_pods_get_the_node_hosts_file_and_their_aliases() {
        let node_hosts = parse_hosts("127.0.0.1 localhost # loop\n10.0.0.5 node-a\nbogus x\n\n");
        assert_eq!(node_hosts.len(), 2);
        let pod = pod("ns", |s| {
            s.host_network = Some(true);
            s.host_aliases = Some(vec![HostAlias {
                ip: "10.9.9.9".into(),
                hostnames: Some(strings(&["alias"])),
            }]);
        });
        let hosts = pod_hosts(
            &pod,
            &["10.0.0.5".parse().unwrap()],
            "cluster.local",
            &node_hosts,
        );
        assert_eq!(hosts[..2], node_hosts[..]);
        assert_eq!(hosts[2].names, strings(&["alias"]));
    }

    #[test]
    fn hostnames_are_cut_to_63_characters_without_a_trailing_dash() {
        let mut long = pod("ns", |_| {});
        long.metadata.name = Some(format!("{}-abc", "a".repeat(62)));
        assert_eq!(pod_hostname(&long, "cluster.local").0, "a".repeat(62));
        let named = pod("ns", |s| s.hostname = Some("given".into()));
        assert_eq!(pod_hostname(&named, "").0, "given");
        let sub = pod("ns", |s| s.subdomain = Some("s".into()));
        assert_eq!(
            pod_hostname(&sub, "").1,
            None,
            "no domain without a cluster domain"
        );
    }
}
