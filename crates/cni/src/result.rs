//! A plugin's result: interfaces and IPs, in every result version in use (1.0, 0.4, 0.3, and
//! the `ip4`/`ip6` results of 0.1 and 0.2).

use std::net::IpAddr;

use serde_json::Value;

/// Why a result could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    /// Not a JSON object, or fields of the wrong shape.
    #[error("invalid CNI result: {0}")]
    Invalid(String),
}

/// One address the network gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpConfig {
    /// The address.
    pub address: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// The gateway, if any.
    pub gateway: Option<IpAddr>,
    /// The index of its interface in the result's `interfaces`, if given.
    pub interface: Option<usize>,
}

/// A network's answer to ADD.
#[derive(Clone, Debug, PartialEq)]
pub struct CniResult {
    /// The result's `cniVersion`.
    pub cni_version: String,
    /// The interfaces' `sandbox` fields, in order (empty for an interface on the node).
    pub interface_sandboxes: Vec<String>,
    /// The addresses.
    pub ips: Vec<IpConfig>,
    /// The result as the plugin wrote it, given to the next plugin as `prevResult` and kept
    /// for DEL.
    pub raw: Value,
}

impl CniResult {
    /// Reads a result.
    pub fn from_value(raw: Value) -> Result<CniResult, ResultError> {
        let Value::Object(object) = &raw else {
            return Err(ResultError::Invalid("not a JSON object".into()));
        };
        let cni_version = match object.get("cniVersion") {
            Some(Value::String(v)) => v.clone(),
            _ => String::new(),
        };
        let interface_sandboxes = match object.get("interfaces") {
            Some(Value::Array(items)) => items.iter().map(sandbox_of).collect(),
            _ => Vec::new(),
        };
        let mut ips = match object.get("ips") {
            Some(Value::Array(items)) => items.iter().map(ip_config).collect::<Result<_, _>>()?,
            _ => Vec::new(),
        };
        for legacy in ["ip4", "ip6"] {
            if let Some(Value::Object(o)) = object.get(legacy) {
                ips.push(legacy_ip(o)?);
            }
        }
        Ok(CniResult {
            cni_version,
            interface_sandboxes,
            ips,
            raw,
        })
    }

    /// The pod's IPs, IPv4 first, as the CRI runtimes order `status.podIPs`: the addresses on
    /// interfaces inside the sandbox (or with no interface named, as older plugins write).
    pub fn pod_ips(&self) -> Vec<IpAddr> {
        let in_sandbox = |ip: &&IpConfig| match ip.interface {
            Some(i) => self
                .interface_sandboxes
                .get(i)
                .is_some_and(|s| !s.is_empty()),
            None => true,
        };
        let mut ips: Vec<IpAddr> = self
            .ips
            .iter()
            .filter(in_sandbox)
            .map(|i| i.address)
            .collect();
        ips.sort_by_key(|ip| ip.is_ipv6());
        ips.dedup();
        ips
    }
}

fn sandbox_of(interface: &Value) -> String {
    interface
        .get("sandbox")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn ip_config(item: &Value) -> Result<IpConfig, ResultError> {
    let address = item
        .get("address")
        .and_then(Value::as_str)
        .ok_or_else(|| ResultError::Invalid("an entry of \"ips\" has no \"address\"".into()))?;
    let (address, prefix_len) = parse_cidr(address)?;
    let interface = match item.get("interface") {
        Some(Value::Number(n)) => n.as_u64().and_then(|n| usize::try_from(n).ok()),
        _ => None,
    };
    Ok(IpConfig {
        address,
        prefix_len,
        gateway: gateway(item)?,
        interface,
    })
}

/// `{"ip": "10.1.0.5/24", "gateway": "10.1.0.1"}` of 0.1 and 0.2 results.
fn legacy_ip(object: &serde_json::Map<String, Value>) -> Result<IpConfig, ResultError> {
    let ip = object
        .get("ip")
        .and_then(Value::as_str)
        .ok_or_else(|| ResultError::Invalid("an ip4/ip6 entry has no \"ip\"".into()))?;
    let (address, prefix_len) = parse_cidr(ip)?;
    Ok(IpConfig {
        address,
        prefix_len,
        gateway: gateway(&Value::Object(object.clone()))?,
        interface: None,
    })
}

fn gateway(item: &Value) -> Result<Option<IpAddr>, ResultError> {
    match item.get("gateway").and_then(Value::as_str) {
        None | Some("") => Ok(None),
        Some(g) => g
            .parse()
            .map(Some)
            .map_err(|_| ResultError::Invalid(format!("gateway {g:?} is not an IP address"))),
    }
}

/// `10.1.0.5/24` -> (10.1.0.5, 24).
fn parse_cidr(text: &str) -> Result<(IpAddr, u8), ResultError> {
    let bad = || ResultError::Invalid(format!("address {text:?} is not IP/prefix"));
    let (ip, prefix) = text.split_once('/').ok_or_else(bad)?;
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(bad());
    }
    Ok((ip, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn results_of_every_version_give_the_pod_ips_ipv4_first() {
        let v1 = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/run/netns/p"}],
            "ips": [
                {"address": "fd00::5/64", "interface": 2},
                {"address": "10.88.0.5/16", "gateway": "10.88.0.1", "interface": 2},
                {"address": "10.88.0.1/16", "interface": 0}
            ]
        });
        let r = CniResult::from_value(v1).unwrap();
        let want: Vec<IpAddr> = vec!["10.88.0.5".parse().unwrap(), "fd00::5".parse().unwrap()];
        assert_eq!(r.pod_ips(), want);
        assert_eq!(r.ips[1].gateway, Some("10.88.0.1".parse().unwrap()));
        let v03 =
            json!({"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "10.1.0.2/24"}]});
        assert_eq!(
            CniResult::from_value(v03).unwrap().pod_ips(),
            vec!["10.1.0.2".parse::<IpAddr>().unwrap()]
        );
        let v02 =
            json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.2.0.3/16", "gateway": "10.2.0.1"}});
        assert_eq!(
            CniResult::from_value(v02).unwrap().pod_ips(),
            vec!["10.2.0.3".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn malformed_results_are_errors() {
        for bad in [
            json!([]),
            json!({"ips": [{"interface": 0}]}),
            json!({"ips": [{"address": "10.0.0.1"}]}),
            json!({"ips": [{"address": "10.0.0.1/33"}]}),
            json!({"ips": [{"address": "x/8"}]}),
            json!({"ips": [{"address": "10.0.0.1/8", "gateway": "nope"}]}),
        ] {
            assert!(CniResult::from_value(bad.clone()).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn properties_any_json_text_reads_or_fails_cleanly(text in ".{0,200}") {
            if let Ok(value) = serde_json::from_str::<Value>(&text) {
                let _ = CniResult::from_value(value).map(|r| r.pod_ips());
            }
        }

        #[test]
        fn properties_any_address_text_parses_or_fails_cleanly(text in "[0-9a-f.:/]{0,50}") {
            let _ = parse_cidr(&text);
        }
    }
}
