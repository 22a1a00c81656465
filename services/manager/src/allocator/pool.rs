//! Address and port pools: the bookkeeping the allocator keeps per network (VIPs and
//! task addresses) and per cluster (published ports), rebuilt from the store at each
//! leadership term.
//!
//! Addresses are handed out serially, as libnetwork's bitmask allocator does: the next
//! free address after the last one given, wrapping around at the end of the subnet.
//! A freed address therefore comes back only after every other free address was used
//! once, so a name that still resolves to a stale address for a moment (a DNS cache, a
//! proxy's endpoint list) does not reach a new task straight away.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

/// An IPv4 subnet, `a.b.c.d/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subnet {
    base: u32,
    len: u8,
}

impl Subnet {
    /// Parses `a.b.c.d/len` (the base is masked to the prefix).
    pub fn parse(cidr: &str) -> Result<Subnet, String> {
        let (addr, len) = cidr
            .split_once('/')
            .ok_or_else(|| format!("invalid CIDR address: {cidr}"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("invalid CIDR address: {cidr}"))?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("invalid CIDR address: {cidr}"))?;
        Ok(Subnet {
            base: u32::from(addr) & mask(len),
            len,
        })
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base)
    }

    /// The number of addresses in the subnet.
    fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.len))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.len) == self.base
    }

    /// The subnet's first host address (Docker's default gateway).
    pub fn first_host(&self) -> Option<Ipv4Addr> {
        (self.size() > 2).then(|| Ipv4Addr::from(self.base + 1))
    }

    /// `ip` with this subnet's prefix length, as stored (`10.0.1.5/24`).
    pub fn with_prefix(&self, ip: Ipv4Addr) -> String {
        format!("{ip}/{}", self.len)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.len)
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

/// Parses `10.0.1.5/24` or `10.0.1.5` to the address alone.
pub fn address_of(stored: &str) -> Option<Ipv4Addr> {
    stored.split('/').next().and_then(|a| a.parse().ok())
}

/// The host addresses of one network: every address of the subnet but the network
/// address, the broadcast address and the gateway.
#[derive(Debug, Clone)]
pub struct AddressPool {
    subnet: Subnet,
    gateway: Option<Ipv4Addr>,
    used: BTreeSet<u32>,
    /// The last address handed out (serial allocation starts after it).
    last: u32,
}

impl AddressPool {
    pub fn new(subnet: Subnet, gateway: Option<Ipv4Addr>) -> Self {
        let gateway = gateway.or_else(|| subnet.first_host());
        AddressPool {
            subnet,
            gateway,
            used: BTreeSet::new(),
            last: subnet.base,
        }
    }

    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    fn first(&self) -> u32 {
        self.subnet.base + 1
    }

    fn last_host(&self) -> u32 {
        // The broadcast address is no host (a /31 or /32 has no room at all).
        (self.subnet.base as u64 + self.subnet.size() - 2) as u32
    }

    fn usable(&self, ip: u32) -> bool {
        ip >= self.first() && ip <= self.last_host() && Some(Ipv4Addr::from(ip)) != self.gateway
    }

    /// Marks an address as taken (one found in the store). Returns false when it lies
    /// outside the pool or was already taken.
    pub fn reserve(&mut self, ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        if !self.usable(n) {
            return false;
        }
        self.used.insert(n)
    }

    /// Hands out the next free address after the last one given, or None when the
    /// subnet is full.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        if self.subnet.size() <= 2 {
            return None;
        }
        let (first, last) = (self.first(), self.last_host());
        let start = if self.last >= first && self.last < last {
            self.last + 1
        } else {
            first
        };
        let candidates = (start..=last).chain(first..start);
        for ip in candidates {
            if self.usable(ip) && !self.used.contains(&ip) {
                self.used.insert(ip);
                self.last = ip;
                return Some(Ipv4Addr::from(ip));
            }
        }
        None
    }

    /// Gives an address back.
    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&u32::from(ip));
    }

    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

/// A published port: protocol and number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortKey {
    /// `port_config::Protocol` as its number.
    pub protocol: i32,
    pub port: u32,
}

/// Swarm's dynamic range for published ports given without a number.
pub const DYNAMIC_PORTS: std::ops::RangeInclusive<u32> = 30000..=32767;

/// The cluster's published (ingress) ports: which service holds each.
#[derive(Debug, Clone, Default)]
pub struct PortPool {
    owners: BTreeMap<PortKey, String>,
}

impl PortPool {
    /// Who holds `key`, if anyone.
    pub fn owner(&self, key: PortKey) -> Option<&str> {
        self.owners.get(&key).map(String::as_str)
    }

    /// Takes `key` for `service`; Err(owner) when another service holds it.
    pub fn claim(&mut self, key: PortKey, service: &str) -> Result<(), String> {
        match self.owners.get(&key) {
            Some(owner) if owner != service => Err(owner.clone()),
            _ => {
                self.owners.insert(key, service.to_string());
                Ok(())
            }
        }
    }

    /// A free port of the dynamic range for `protocol`, taken for `service`.
    pub fn claim_dynamic(&mut self, protocol: i32, service: &str) -> Option<u32> {
        let port = DYNAMIC_PORTS
            .into_iter()
            .find(|p| !self.owners.contains_key(&PortKey { protocol, port: *p }))?;
        self.owners
            .insert(PortKey { protocol, port }, service.to_string());
        Some(port)
    }

    /// Frees every port `service` holds.
    pub fn release_service(&mut self, service: &str) {
        self.owners.retain(|_, owner| owner != service);
    }

    /// Frees every port `service` holds but those in `keep`.
    pub fn retain_service(&mut self, service: &str, keep: &[PortKey]) {
        self.owners
            .retain(|key, owner| owner != service || keep.contains(key));
    }

    /// Frees one port if `service` holds it.
    pub fn release(&mut self, key: PortKey, service: &str) {
        if self.owners.get(&key).is_some_and(|o| o == service) {
            self.owners.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("an address")
    }

    #[test]
    fn subnets_parse_and_mask() {
        let s = Subnet::parse("10.0.1.7/24").expect("valid");
        assert_eq!(s.to_string(), "10.0.1.0/24");
        assert!(s.contains(ip("10.0.1.255")) && !s.contains(ip("10.0.2.1")));
        assert_eq!(s.first_host(), Some(ip("10.0.1.1")));
        for bad in ["10.0.1.0", "10.0.1.0/33", "300.0.0.0/8", "x/24"] {
            assert!(Subnet::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(address_of("10.0.1.5/24"), Some(ip("10.0.1.5")));
    }

    #[test]
    fn addresses_skip_network_gateway_and_broadcast_and_go_serially() {
        let mut pool = AddressPool::new(Subnet::parse("10.0.1.0/29").expect("valid"), None);
        // /29: .0 network, .1 gateway, .7 broadcast → .2 ..= .6
        let got: Vec<Ipv4Addr> = std::iter::from_fn(|| pool.allocate()).collect();
        let want: Vec<Ipv4Addr> = (2..=6).map(|n| Ipv4Addr::new(10, 0, 1, n)).collect();
        assert_eq!(got, want);
        assert_eq!(pool.allocate(), None, "full");
        // A freed address comes back only after the others were used once.
        pool.release(ip("10.0.1.3"));
        pool.release(ip("10.0.1.5"));
        assert_eq!(
            pool.allocate(),
            Some(ip("10.0.1.3")),
            "wraps to the lowest free"
        );
        assert_eq!(pool.allocate(), Some(ip("10.0.1.5")));
        pool.release(ip("10.0.1.2"));
        pool.release(ip("10.0.1.6"));
        assert_eq!(
            pool.allocate(),
            Some(ip("10.0.1.6")),
            "after the last one given"
        );
    }

    #[test]
    fn reserved_addresses_are_never_handed_out() {
        let subnet = Subnet::parse("10.0.9.0/24").expect("valid");
        let mut pool = AddressPool::new(subnet, Some(ip("10.0.9.254")));
        assert!(pool.reserve(ip("10.0.9.1")));
        assert!(!pool.reserve(ip("10.0.9.1")), "twice");
        assert!(!pool.reserve(ip("10.0.9.254")), "the gateway");
        assert!(!pool.reserve(ip("10.0.8.1")), "outside");
        let all: BTreeSet<Ipv4Addr> = std::iter::from_fn(|| pool.allocate()).collect();
        assert_eq!(
            all.len(),
            252,
            "254 hosts less the gateway and the reserved one"
        );
        assert!(!all.contains(&ip("10.0.9.1")) && !all.contains(&ip("10.0.9.254")));
        assert_eq!(pool.in_use(), 253);
    }

    #[test]
    fn ports_are_held_by_one_service_and_dynamic_ones_come_from_the_range() {
        let mut ports = PortPool::default();
        let p80 = PortKey {
            protocol: 0,
            port: 80,
        };
        assert!(ports.claim(p80, "web").is_ok());
        assert!(ports.claim(p80, "web").is_ok(), "idempotent for its owner");
        assert_eq!(ports.claim(p80, "api"), Err("web".to_string()));
        let udp80 = PortKey {
            protocol: 1,
            port: 80,
        };
        assert!(ports.claim(udp80, "api").is_ok(), "udp is another port");
        assert_eq!(ports.claim_dynamic(0, "api"), Some(30000));
        assert_eq!(ports.claim_dynamic(0, "db"), Some(30001));
        ports.release_service("web");
        assert_eq!(ports.owner(p80), None);
        assert!(ports.claim(p80, "api").is_ok());
    }
}
