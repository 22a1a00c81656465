//! IPAM for overlay networks: which subnet a network gets.
//!
//! A network either asks for a subnet (`--subnet`, checked and refused when it overlaps
//! another network's) or is given the first `subnet_size` block of the cluster's default
//! address pools (`ClusterSpec.ipam`, Swarm's 10.0.0.0/8 in /24s) that overlaps no
//! network. The gateway is the subnet's first host address unless one is given.
//!
//! This module only computes: it sees the networks that exist and answers with the
//! allocated `IPAMOptions`. Making the answer stick is the caller's job — the Control
//! API allocates and stores under one cluster-wide lock, so two managers never hand out
//! the same subnet (see `control/networks.rs`). Addresses inside a subnet (VIPs, task
//! addresses) are the allocator's.
//!
//! Each network also gets a loopback subnet ([`loopback_subnet`]) for its process
//! tasks: a block of 127.128.0.0/9 with the overlay subnet's prefix length (never wider
//! than /16) that no other network has, stored in the network's driver state under
//! `com.shoal.loopback.subnet`.
//!
//! IPv4 only, as Swarm's default pools are.

use std::net::Ipv4Addr;

use shoal_proto::v1::{Driver, IpamConfig, IpamDefaults, IpamOptions, Network, ipam_config};
use shoal_store::Object;

pub use crate::allocator::Subnet;

/// Swarm's default address pool and subnet size.
pub const DEFAULT_POOL: &str = "10.0.0.0/8";
pub const DEFAULT_SUBNET_SIZE: u32 = 24;
/// Docker's largest subnet size: a /29 leaves 8 addresses, of which the overlay driver
/// needs 4 for itself.
pub const MAX_SUBNET_SIZE: u32 = 29;
/// The IPAM driver every shoal network uses (Docker's built-in one).
pub const DEFAULT_IPAM_DRIVER: &str = "default";

/// Why a subnet cannot be given. Messages follow Docker's where it has them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("invalid base pool {pool:?}: {reason}")]
    InvalidPool { pool: String, reason: String },
    #[error("subnet size is out of range: {0} (at most {MAX_SUBNET_SIZE})")]
    SubnetSizeOutOfRange(u32),
    #[error("invalid CIDR: {pool:?}. Subnet size is too small for pool: {size}")]
    SubnetSizeTooSmall { pool: String, size: u32 },
    #[error("ipam driver {0:?} is not supported: only the {DEFAULT_IPAM_DRIVER:?} driver is")]
    UnsupportedDriver(String),
    #[error("ipam configuration: only one subnet per network is supported, got {0}")]
    TooManyConfigs(usize),
    #[error("ipam configuration: invalid subnet {0}")]
    InvalidSubnet(String),
    #[error("ipam configuration: invalid subnet {given}: it must be {network}")]
    NotNetworkAddress { given: String, network: Subnet },
    #[error("ipam configuration: invalid range {0}")]
    InvalidRange(String),
    #[error("ipam configuration: subnet {subnet} does not contain range {range}")]
    RangeOutside { subnet: Subnet, range: String },
    #[error("ipam configuration: invalid gateway {0}")]
    InvalidGateway(String),
    #[error("ipam configuration: subnet {subnet} does not contain gateway {gateway}")]
    GatewayOutside { subnet: Subnet, gateway: String },
    #[error(
        "invalid pool request: subnet {subnet} overlaps with network {name} ({id}), subnet {other}"
    )]
    Overlap {
        subnet: Subnet,
        name: String,
        id: String,
        other: Subnet,
    },
    #[error(
        "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network"
    )]
    Exhausted,
    #[error("no free /{0} loopback subnet left in 127.128.0.0/9 for the network's process tasks")]
    LoopbackExhausted(u8),
}

/// A subnet a user asked for: valid, and the network address itself (`10.0.1.0/24`,
/// not `10.0.1.7/24`).
pub fn parse_exact(cidr: &str) -> Result<Subnet, IpamError> {
    let subnet = Subnet::parse(cidr).map_err(|_| IpamError::InvalidSubnet(cidr.into()))?;
    let given_addr = cidr.split('/').next().unwrap_or("");
    if given_addr != subnet.network().to_string() {
        return Err(IpamError::NotNetworkAddress {
            given: cidr.into(),
            network: subnet,
        });
    }
    Ok(subnet)
}

/// The subnet's first address, as a number.
fn start(s: &Subnet) -> u64 {
    u64::from(u32::from(s.network()))
}

/// The first address after the subnet, as a number (2^32 for the last one).
fn end(s: &Subnet) -> u64 {
    start(s) + (1u64 << (32 - u32::from(s.prefix_len())))
}

pub fn overlaps(a: &Subnet, b: &Subnet) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

/// The subnet `/len` at address `at` (aligned by the caller).
fn subnet_at(at: u64, len: u8) -> Option<Subnet> {
    let base = Ipv4Addr::from(u32::try_from(at).ok()?);
    Subnet::parse(&format!("{base}/{len}")).ok()
}

/// The cluster's default address pools, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pools {
    pools: Vec<Subnet>,
    subnet_size: u8,
}

impl Pools {
    /// The pools `ClusterSpec.ipam` describes, with Swarm's defaults for what is unset,
    /// checked as Docker checks `--default-addr-pool` / `--default-addr-pool-mask-length`:
    /// every pool a valid IPv4 CIDR, the size at most 29 and no larger a block than any
    /// pool.
    pub fn from_defaults(defaults: Option<&IpamDefaults>) -> Result<Pools, IpamError> {
        let size = defaults
            .map(|d| d.subnet_size)
            .filter(|s| *s != 0)
            .unwrap_or(DEFAULT_SUBNET_SIZE);
        if size > MAX_SUBNET_SIZE {
            return Err(IpamError::SubnetSizeOutOfRange(size));
        }
        let given: Vec<&str> = defaults
            .map(|d| d.default_address_pool.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let given = if given.is_empty() {
            vec![DEFAULT_POOL]
        } else {
            given
        };
        let mut pools = Vec::with_capacity(given.len());
        for pool in given {
            let subnet = Subnet::parse(pool.trim()).map_err(|reason| IpamError::InvalidPool {
                pool: pool.into(),
                reason,
            })?;
            if size < u32::from(subnet.prefix_len()) {
                return Err(IpamError::SubnetSizeTooSmall {
                    pool: pool.into(),
                    size,
                });
            }
            pools.push(subnet);
        }
        Ok(Pools {
            pools,
            subnet_size: size as u8,
        })
    }

    /// The first `subnet_size` block of the pools, in order, that overlaps none of
    /// `taken`.
    pub fn first_free(&self, taken: &[Subnet]) -> Option<Subnet> {
        self.pools
            .iter()
            .find_map(|pool| first_free_in(*pool, self.subnet_size, taken))
    }
}

/// Walks `pool` in blocks of `/len`, jumping past every taken subnet a block overlaps.
fn first_free_in(pool: Subnet, len: u8, taken: &[Subnet]) -> Option<Subnet> {
    let block = 1u64 << (32 - u32::from(len));
    let mut at = start(&pool);
    while at + block <= end(&pool) {
        let candidate = subnet_at(at, len)?;
        match taken
            .iter()
            .filter(|t| overlaps(t, &candidate))
            .map(end)
            .max()
        {
            None => return Some(candidate),
            // Blocks are aligned (the pool's prefix is no longer than the block's), so
            // the next candidate is the first aligned block past the overlap.
            Some(past) => at = past.div_ceil(block) * block,
        }
    }
    None
}

/// The loopback subnet a new network with overlay subnet `overlay` gets: the first
/// block of 127.128.0.0/9 with the overlay's prefix length (never wider than /16) that
/// overlaps no other network's loopback subnet. Process tasks and the VIPs of process
/// services take their addresses from it.
pub fn loopback_subnet(overlay: Subnet, existing: &[Network]) -> Result<Subnet, IpamError> {
    let len = overlay.prefix_len().max(crate::allocator::LOOPBACK_WIDEST);
    let pool = Subnet::parse(crate::allocator::LOOPBACK_POOL).map_err(|reason| {
        IpamError::InvalidPool {
            pool: crate::allocator::LOOPBACK_POOL.into(),
            reason,
        }
    })?;
    let taken: Vec<Subnet> = existing
        .iter()
        .filter_map(crate::allocator::loopback_subnet_of)
        .collect();
    first_free_in(pool, len, &taken).ok_or(IpamError::LoopbackExhausted(len))
}

/// A network's allocated subnet (`ipam.configs[0].subnet`), if it has one.
pub fn subnet_of(network: &Network) -> Option<Subnet> {
    network
        .ipam
        .as_ref()?
        .configs
        .first()
        .and_then(|c| Subnet::parse(&c.subnet).ok())
}

fn name_of(network: &Network) -> &str {
    network
        .spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map(|a| a.name.as_str())
        .unwrap_or("")
}

/// The IPAM a new network gets, given what it asked for (`NetworkSpec.ipam`), the
/// cluster's pools and the networks that exist.
pub fn allocate(
    requested: Option<&IpamOptions>,
    pools: &Pools,
    existing: &[Network],
) -> Result<IpamOptions, IpamError> {
    let driver = requested.and_then(|r| r.driver.as_ref());
    if let Some(name) = driver
        .map(|d| d.name.as_str())
        .filter(|n| !n.is_empty() && !n.eq_ignore_ascii_case(DEFAULT_IPAM_DRIVER))
    {
        return Err(IpamError::UnsupportedDriver(name.into()));
    }
    let configs = requested.map(|r| r.configs.as_slice()).unwrap_or_default();
    if configs.len() > 1 {
        return Err(IpamError::TooManyConfigs(configs.len()));
    }
    let taken: Vec<(Subnet, &Network)> = existing
        .iter()
        .filter_map(|n| subnet_of(n).map(|s| (s, n)))
        .collect();
    let config = match configs.first() {
        Some(asked) => {
            let subnet = parse_exact(&asked.subnet)?;
            check_range_and_gateway(subnet, asked)?;
            if let Some((other, network)) = taken.iter().find(|(t, _)| overlaps(t, &subnet)) {
                return Err(IpamError::Overlap {
                    subnet,
                    name: name_of(network).into(),
                    id: network.id().into(),
                    other: *other,
                });
            }
            allocated(subnet, asked.clone())
        }
        None => {
            let taken: Vec<Subnet> = taken.iter().map(|(s, _)| *s).collect();
            let subnet = pools.first_free(&taken).ok_or(IpamError::Exhausted)?;
            allocated(subnet, IpamConfig::default())
        }
    };
    Ok(IpamOptions {
        driver: Some(Driver {
            name: DEFAULT_IPAM_DRIVER.into(),
            options: driver.map(|d| d.options.clone()).unwrap_or_default(),
        }),
        configs: vec![config],
    })
}

/// swarmkit's checks of a requested config: a range and a gateway, when given, lie in
/// the subnet.
fn check_range_and_gateway(subnet: Subnet, asked: &IpamConfig) -> Result<(), IpamError> {
    if !asked.range.is_empty() {
        let range = Subnet::parse(&asked.range)
            .map_err(|_| IpamError::InvalidRange(asked.range.clone()))?;
        if !subnet.contains(range.network()) || range.prefix_len() < subnet.prefix_len() {
            return Err(IpamError::RangeOutside {
                subnet,
                range: asked.range.clone(),
            });
        }
    }
    if !asked.gateway.is_empty() {
        let gateway: Ipv4Addr = asked
            .gateway
            .parse()
            .map_err(|_| IpamError::InvalidGateway(asked.gateway.clone()))?;
        if !subnet.contains(gateway) {
            return Err(IpamError::GatewayOutside {
                subnet,
                gateway: asked.gateway.clone(),
            });
        }
    }
    Ok(())
}

/// The stored config: the subnet in canonical form, the gateway given or the first host.
fn allocated(subnet: Subnet, asked: IpamConfig) -> IpamConfig {
    let gateway = if asked.gateway.is_empty() {
        subnet
            .first_host()
            .map(|g| g.to_string())
            .unwrap_or_default()
    } else {
        asked.gateway
    };
    IpamConfig {
        family: ipam_config::AddressFamily::Ipv4 as i32,
        subnet: subnet.to_string(),
        range: asked.range,
        gateway,
        reserved: asked.reserved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::{Annotations, Meta, NetworkSpec};

    fn subnet(s: &str) -> Subnet {
        Subnet::parse(s).expect("a subnet")
    }

    fn pools(pools: &[&str], size: u32) -> Pools {
        Pools::from_defaults(Some(&IpamDefaults {
            default_address_pool: pools.iter().map(|p| p.to_string()).collect(),
            subnet_size: size,
        }))
        .expect("valid pools")
    }

    fn network(id: &str, name: &str, cidr: &str) -> Network {
        Network {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            spec: Some(NetworkSpec {
                annotations: Some(Annotations {
                    name: name.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ipam: Some(IpamOptions {
                driver: None,
                configs: vec![IpamConfig {
                    subnet: cidr.into(),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }
    }

    fn asking(cidr: &str, gateway: &str) -> IpamOptions {
        IpamOptions {
            driver: None,
            configs: vec![IpamConfig {
                subnet: cidr.into(),
                gateway: gateway.into(),
                ..Default::default()
            }],
        }
    }

    fn config(ipam: &IpamOptions) -> (&str, &str) {
        let c = &ipam.configs[0];
        (c.subnet.as_str(), c.gateway.as_str())
    }

    #[test]
    fn subnets_parse_mask_and_overlap() {
        let s = subnet("10.0.1.7/24");
        assert_eq!(s.to_string(), "10.0.1.0/24");
        assert_eq!(s.first_host(), Some(Ipv4Addr::new(10, 0, 1, 1)));
        assert!(overlaps(&subnet("10.0.0.0/16"), &subnet("10.0.3.0/24")));
        assert!(overlaps(&subnet("10.0.3.0/24"), &subnet("10.0.0.0/16")));
        assert!(!overlaps(&subnet("10.0.3.0/24"), &subnet("10.0.4.0/24")));
        assert_eq!(end(&subnet("0.0.0.0/0")), 1 << 32);
        assert_eq!(subnet_at(1 << 32, 24), None, "past the address space");
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "300.1.1.1/8",
            "fd00::/64",
            "x/8",
            "",
        ] {
            assert!(Subnet::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_exact("10.0.1.7/24"),
            Err(IpamError::NotNetworkAddress {
                given: "10.0.1.7/24".into(),
                network: subnet("10.0.1.0/24")
            })
        );
    }

    #[test]
    fn pools_default_to_swarms_and_are_checked_as_docker_does() {
        let default = Pools::from_defaults(None).expect("defaults");
        assert_eq!(default, pools(&["10.0.0.0/8"], 24));
        assert_eq!(
            default.first_free(&[]).map(|s| s.to_string()).as_deref(),
            Some("10.0.0.0/24")
        );
        let bad = |p: &[&str], size: u32| {
            Pools::from_defaults(Some(&IpamDefaults {
                default_address_pool: p.iter().map(|s| s.to_string()).collect(),
                subnet_size: size,
            }))
            .expect_err("refused")
        };
        assert_eq!(bad(&[], 30), IpamError::SubnetSizeOutOfRange(30));
        assert!(matches!(
            bad(&["10.0.0.0/33"], 24),
            IpamError::InvalidPool { .. }
        ));
        assert!(matches!(
            bad(&["fd00::/8"], 24),
            IpamError::InvalidPool { .. }
        ));
        assert_eq!(
            bad(&["10.20.0.0/16"], 12).to_string(),
            "invalid CIDR: \"10.20.0.0/16\". Subnet size is too small for pool: 12"
        );
        // Docker's bounds: the pool's own length up to 29.
        assert!(
            Pools::from_defaults(Some(&IpamDefaults {
                default_address_pool: vec!["10.20.0.0/16".into()],
                subnet_size: 16,
            }))
            .is_ok()
        );
        assert!(
            Pools::from_defaults(Some(&IpamDefaults {
                default_address_pool: vec!["10.20.0.0/16".into()],
                subnet_size: 29,
            }))
            .is_ok()
        );
    }

    #[test]
    fn pools_are_carved_in_order_skipping_whatever_overlaps() {
        let p = pools(&["10.0.0.0/22", "192.168.0.0/23"], 24);
        assert_eq!(p.first_free(&[]), Some(subnet("10.0.0.0/24")));
        // A taken /24, a smaller subnet inside the next block, and a larger one over
        // the rest of the first pool.
        let taken = [subnet("10.0.0.0/24"), subnet("10.0.1.128/25")];
        assert_eq!(p.first_free(&taken), Some(subnet("10.0.2.0/24")));
        let taken = [
            subnet("10.0.0.0/24"),
            subnet("10.0.1.128/25"),
            subnet("10.0.2.0/23"),
        ];
        assert_eq!(
            p.first_free(&taken),
            Some(subnet("192.168.0.0/24")),
            "the next pool once the first is used up"
        );
        // A taken supernet of the whole pool.
        assert_eq!(
            p.first_free(&[subnet("10.0.0.0/8"), subnet("192.168.0.0/24")]),
            Some(subnet("192.168.1.0/24"))
        );
        assert_eq!(
            p.first_free(&[subnet("0.0.0.0/0")]),
            None,
            "nothing left anywhere"
        );
        // The last block of the address space is reachable.
        let top = pools(&["255.255.255.0/24"], 25);
        assert_eq!(
            top.first_free(&[subnet("255.255.255.0/25")]),
            Some(subnet("255.255.255.128/25"))
        );
    }

    #[test]
    fn a_freed_subnet_is_handed_out_again() {
        let p = pools(&["10.0.0.0/8"], 24);
        let mut existing = vec![network("i", "ingress", "10.0.0.0/24")];
        for (i, want) in ["10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"]
            .iter()
            .enumerate()
        {
            let got = allocate(None, &p, &existing).expect("room");
            assert_eq!(config(&got), (*want, &want.replace(".0/24", ".1")[..]));
            existing.push(network(&format!("n{i}"), &format!("net{i}"), want));
        }
        existing.retain(|n| n.id() != "n1");
        let got = allocate(None, &p, &existing).expect("room");
        assert_eq!(config(&got).0, "10.0.2.0/24");
    }

    #[test]
    fn a_requested_subnet_is_checked_and_must_not_overlap() {
        let p = pools(&["10.0.0.0/8"], 24);
        let existing = vec![
            network("i", "ingress", "10.0.0.0/24"),
            network("m1", "mynet", "10.0.1.0/24"),
        ];
        let got = allocate(Some(&asking("172.28.0.0/16", "")), &p, &existing).expect("free");
        assert_eq!(config(&got), ("172.28.0.0/16", "172.28.0.1"));
        assert_eq!(
            got.driver.as_ref().map(|d| d.name.as_str()),
            Some("default")
        );
        assert_eq!(
            got.configs[0].family,
            ipam_config::AddressFamily::Ipv4 as i32
        );
        let got = allocate(
            Some(&asking("172.28.0.0/16", "172.28.5.254")),
            &p,
            &existing,
        )
        .expect("ok");
        assert_eq!(config(&got), ("172.28.0.0/16", "172.28.5.254"));

        let err = allocate(Some(&asking("10.0.0.0/16", "")), &p, &existing).expect_err("overlap");
        assert_eq!(
            err.to_string(),
            "invalid pool request: subnet 10.0.0.0/16 overlaps with network ingress (i), subnet 10.0.0.0/24"
        );
        let err = allocate(Some(&asking("10.0.1.64/26", "")), &p, &existing).expect_err("inside");
        assert!(err.to_string().contains("network mynet (m1)"), "{err}");

        let cases = [
            (asking("10.9.0.0", ""), "invalid subnet 10.9.0.0"),
            (asking("", "10.9.0.1"), "invalid subnet "),
            (asking("10.9.0.5/24", ""), "it must be 10.9.0.0/24"),
            (
                asking("10.9.0.0/24", "10.9.1.1"),
                "does not contain gateway 10.9.1.1",
            ),
            (asking("10.9.0.0/24", "nope"), "invalid gateway nope"),
        ];
        for (ask, want) in cases {
            let err = allocate(Some(&ask), &p, &existing).expect_err(want);
            assert!(err.to_string().contains(want), "{err} vs {want}");
        }
        let mut ranged = asking("10.9.0.0/24", "");
        ranged.configs[0].range = "10.9.1.0/25".into();
        assert!(matches!(
            allocate(Some(&ranged), &p, &existing),
            Err(IpamError::RangeOutside { .. })
        ));
        ranged.configs[0].range = "10.9.0.128/25".into();
        let got = allocate(Some(&ranged), &p, &existing).expect("range inside");
        assert_eq!(got.configs[0].range, "10.9.0.128/25");

        let mut two = asking("10.9.0.0/24", "");
        two.configs.push(two.configs[0].clone());
        assert_eq!(
            allocate(Some(&two), &p, &existing),
            Err(IpamError::TooManyConfigs(2))
        );
        let plugin = IpamOptions {
            driver: Some(Driver {
                name: "infoblox".into(),
                ..Default::default()
            }),
            configs: vec![],
        };
        assert_eq!(
            allocate(Some(&plugin), &p, &existing),
            Err(IpamError::UnsupportedDriver("infoblox".into()))
        );
    }

    #[test]
    fn loopback_subnets_mirror_the_overlay_size_and_never_repeat() {
        let with_loopback = |id: &str, cidr: &str| {
            let mut n = network(id, id, "10.0.0.0/24");
            n.driver_state = Some(Driver {
                name: "overlay".into(),
                options: [(
                    crate::allocator::LOOPBACK_SUBNET_OPTION.to_string(),
                    cidr.to_string(),
                )]
                .into(),
            });
            n
        };
        assert_eq!(
            loopback_subnet(subnet("10.0.0.0/24"), &[]),
            Ok(subnet("127.128.0.0/24"))
        );
        let existing = vec![
            with_loopback("a", "127.128.0.0/24"),
            with_loopback("b", "127.128.1.0/24"),
            network("legacy", "legacy", "10.0.9.0/24"),
        ];
        assert_eq!(
            loopback_subnet(subnet("10.0.2.0/24"), &existing),
            Ok(subnet("127.128.2.0/24"))
        );
        // Never wider than /16; a narrower overlay gets a narrower loopback subnet.
        assert_eq!(
            loopback_subnet(subnet("172.28.0.0/12"), &existing),
            Ok(subnet("127.129.0.0/16"))
        );
        assert_eq!(
            loopback_subnet(subnet("10.9.0.0/28"), &existing),
            Ok(subnet("127.128.2.0/28"))
        );
        let full: Vec<Network> = (0..128)
            .map(|i| with_loopback(&format!("n{i}"), &format!("127.{}.0.0/16", 128 + i)))
            .collect();
        assert_eq!(
            loopback_subnet(subnet("10.0.0.0/16"), &full),
            Err(IpamError::LoopbackExhausted(16))
        );
    }

    #[test]
    fn an_exhausted_pool_says_so() {
        let p = pools(&["10.0.0.0/23"], 24);
        let existing = vec![
            network("a", "a", "10.0.0.0/24"),
            network("b", "b", "10.0.1.0/24"),
        ];
        assert_eq!(allocate(None, &p, &existing), Err(IpamError::Exhausted));
    }
}
