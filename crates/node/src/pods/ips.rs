//! Pod IPs: each pod gets its own address from the node's pod CIDR (by default a loopback
//! range: on Linux all of 127.0.0.0/8 reaches the loopback device, so a pod's wasi:http
//! server can listen on its own address without any interface set-up).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::Mutex;

/// Errors of this module.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The CIDR cannot be parsed.
    #[error("pod CIDR {0:?} is not an IPv4 CIDR such as 127.64.0.0/16")]
    Cidr(String),
    /// Every address of the range is in use.
    #[error("pod CIDR {0} has no free address left; give a larger --pod-cidr")]
    Exhausted(Cidr),
}

/// An IPv4 network: a base address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    base: u32,
    prefix: u8,
}

impl Cidr {
    /// The number of addresses pods may get: all but the network and broadcast addresses.
    fn hosts(&self) -> u32 {
        let size = 1u64 << (32 - u32::from(self.prefix));
        size.saturating_sub(2).min(u64::from(u32::MAX)) as u32
    }

    fn host(&self, index: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1 + index)
    }

    /// Whether `ip` lies in the network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from(ip) & mask == self.base
    }
}

impl FromStr for Cidr {
    type Err = Error;

    fn from_str(text: &str) -> Result<Cidr, Error> {
        let bad = || Error::Cidr(text.to_owned());
        let (ip, prefix) = text.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) {
            return Err(bad());
        }
        let mask = u32::MAX << (32 - u32::from(prefix));
        Ok(Cidr {
            base: u32::from(ip) & mask,
            prefix,
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

/// The addresses handed to pods, by pod UID.
#[derive(Debug)]
pub struct IpPool {
    cidr: Cidr,
    by_pod: Mutex<HashMap<String, Ipv4Addr>>,
}

impl IpPool {
    /// The range the pool hands out.
    pub fn cidr(&self) -> &Cidr {
        &self.cidr
    }

    /// An empty pool over `cidr`.
    pub fn new(cidr: Cidr) -> IpPool {
        IpPool {
            cidr,
            by_pod: Mutex::new(HashMap::new()),
        }
    }

    /// The address of pod `uid`: the one it has, else `preferred` (the podIP it reported
    /// before a restart of the agent) when in range and free, else the lowest free one.
    pub fn allocate(&self, uid: &str, preferred: Option<Ipv4Addr>) -> Result<Ipv4Addr, Error> {
        let mut by_pod = self.by_pod.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ip) = by_pod.get(uid) {
            return Ok(*ip);
        }
        let used: std::collections::HashSet<Ipv4Addr> = by_pod.values().copied().collect();
        let wanted = preferred.filter(|ip| self.cidr.contains(*ip) && !used.contains(ip));
        let ip = wanted
            .or_else(|| {
                (0..self.cidr.hosts())
                    .map(|i| self.cidr.host(i))
                    .find(|ip| !used.contains(ip))
            })
            .ok_or(Error::Exhausted(self.cidr))?;
        by_pod.insert(uid.to_owned(), ip);
        Ok(ip)
    }

    /// Returns pod `uid`'s address to the pool.
    pub fn release(&self, uid: &str) {
        let mut by_pod = self.by_pod.lock().unwrap_or_else(|e| e.into_inner());
        by_pod.remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_distinct_addresses_and_reuses_released_ones() {
        let pool = IpPool::new("127.64.0.0/30".parse().unwrap());
        let a = pool.allocate("a", None).unwrap();
        let b = pool.allocate("b", None).unwrap();
        assert_eq!(
            (a, b),
            ("127.64.0.1".parse().unwrap(), "127.64.0.2".parse().unwrap())
        );
        assert_eq!(pool.allocate("a", None).unwrap(), a, "stable per pod");
        let err = pool.allocate("c", None).unwrap_err();
        assert!(err.to_string().contains("--pod-cidr"), "{err}");
        pool.release("a");
        assert_eq!(pool.allocate("c", None).unwrap(), a);
    }

    #[test]
    fn keeps_a_pods_previous_address_when_free() {
        let pool = IpPool::new("127.64.0.0/16".parse().unwrap());
        let before = "127.64.3.7".parse().unwrap();
        assert_eq!(pool.allocate("a", Some(before)).unwrap(), before);
        assert_ne!(pool.allocate("b", Some(before)).unwrap(), before);
        let outside = "10.0.0.5".parse().unwrap();
        assert_ne!(pool.allocate("c", Some(outside)).unwrap(), outside);
    }

    #[test]
    fn rejects_what_is_not_a_cidr() {
        for text in [
            "127.64.0.0",
            "127.64.0.0/33",
            "::1/64",
            "x/16",
            "10.0.0.0/4",
        ] {
            assert!(text.parse::<Cidr>().is_err(), "{text}");
        }
        assert_eq!(
            "127.64.9.9/16".parse::<Cidr>().unwrap().to_string(),
            "127.64.0.0/16"
        );
    }
}
