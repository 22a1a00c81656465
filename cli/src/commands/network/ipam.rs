//! Addresses as docker's flags take them: Go's `net.ParseCIDR` / `net.ParseIP` /
//! `netip.ParsePrefix` with their error texts, and `network create`'s consolidation
//! of `--subnet`, `--ip-range`, `--gateway` and `--aux-address` into IPAM configs
//! (docker's `createIPAMConfig`, same checks and wording).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use shoal_proto::v1::{Driver, IpamConfig, IpamOptions, ipam_config};

use crate::commands::service::opts::invalid;

/// An address and a prefix length, as written (`10.0.0.1/24` keeps its host bits;
/// [`Cidr::network`] drops them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub bits: u8,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.bits)
    }
}

fn max_bits(addr: &IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn decimal(s: &str) -> Option<u8> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl Cidr {
    /// Go's `net.ParseCIDR`: `invalid CIDR address: X` for anything else.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid CIDR address: {s}");
        let (addr, bits) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let bits = decimal(bits)
            .filter(|b| *b <= max_bits(&addr))
            .ok_or_else(bad)?;
        Ok(Self { addr, bits })
    }

    /// Go's `netip.ParsePrefix`, with its error texts.
    pub fn parse_prefix(s: &str) -> Result<Self, String> {
        let Some((addr, bits)) = s.split_once('/') else {
            return Err(format!("netip.ParsePrefix({s:?}): no '/'"));
        };
        let addr: IpAddr = addr.parse().map_err(|_| {
            format!("netip.ParsePrefix({s:?}): ParseAddr({addr:?}): unable to parse IP")
        })?;
        let Some(bits) = decimal(bits) else {
            return Err(format!(
                "netip.ParsePrefix({s:?}): bad bits after slash: {bits:?}"
            ));
        };
        if bits > max_bits(&addr) {
            return Err(format!(
                "netip.ParsePrefix({s:?}): prefix length out of range"
            ));
        }
        Ok(Self { addr, bits })
    }

    /// The network: host bits cleared (`10.0.0.5/24` → `10.0.0.0/24`).
    pub fn network(&self) -> Self {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Self {
            addr,
            bits: self.bits,
        }
    }

    /// Whether `ip` is inside this network (Go's `IPNet.Contains`).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let net = self.network();
        let inside = Self {
            addr: ip,
            bits: self.bits,
        };
        match (net.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                inside.network().addr == net.addr
            }
            _ => false,
        }
    }

    pub fn is_v6(&self) -> bool {
        self.addr.is_ipv6()
    }
}

/// pflag's slice flags: every value may hold several, comma-separated.
pub fn comma_values(values: &[String]) -> impl Iterator<Item = &str> {
    values.iter().flat_map(|v| v.split(',')).map(str::trim)
}

/// `--gateway` values (pflag's `IPSlice`).
pub fn parse_ips(values: &[String], flag: &str) -> anyhow::Result<Vec<IpAddr>> {
    comma_values(values)
        .map(|v| {
            v.parse::<IpAddr>().map_err(|_| {
                invalid(
                    v,
                    flag,
                    format!("invalid string being converted to IP address: {v}"),
                )
            })
        })
        .collect()
}

/// `--ip-range`, `--default-addr-pool` values (pflag's `IPNetSlice`: the network of
/// each CIDR).
pub fn parse_nets(values: &[String], flag: &str) -> anyhow::Result<Vec<Cidr>> {
    comma_values(values)
        .map(|v| {
            Cidr::parse(v)
                .map(|c| c.network())
                .map_err(|e| invalid(v, flag, e))
        })
        .collect()
}

/// docker's `opts.MapOpts`: `KEY=VALUE`, a bare `KEY` maps to "".
pub fn map_opts(values: &[String]) -> HashMap<String, String> {
    values
        .iter()
        .map(|v| match v.split_once('=') {
            Some((k, val)) => (k.to_string(), val.to_string()),
            None => (v.clone(), String::new()),
        })
        .collect()
}

/// docker's `subnetMatches`: is `data`'s address (a CIDR or a bare IP) in `subnet`?
fn subnet_matches(subnet: &str, data: &str) -> Result<bool, String> {
    let s = Cidr::parse(subnet).map_err(|e| format!("invalid subnet: {e}"))?;
    let ip = if data.contains('/') {
        Cidr::parse(data)?.addr
    } else {
        match data.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => return Ok(false),
        }
    };
    Ok(s.contains(ip))
}

/// The IPAM flags of `network create`.
#[derive(Debug, Default, Clone)]
pub struct IpamFlags<'a> {
    pub driver: &'a str,
    pub subnets: &'a [String],
    pub ip_ranges: &'a [String],
    pub gateways: &'a [String],
    pub aux_addresses: &'a [String],
    pub options: &'a [String],
}

/// docker's `createIPAMConfig`: one config per subnet, each range, gateway and
/// auxiliary address on the subnet that holds it.
pub fn ipam_options(flags: &IpamFlags<'_>) -> anyhow::Result<IpamOptions> {
    // pflag parses typed flags before the command runs.
    let ranges = parse_nets(flags.ip_ranges, "--ip-range")?;
    let gateways = parse_ips(flags.gateways, "--gateway")?;
    let subnets: Vec<String> = comma_values(flags.subnets).map(str::to_string).collect();

    if subnets.len() < ranges.len() || subnets.len() < gateways.len() {
        anyhow::bail!("every ip-range or gateway must have a corresponding subnet");
    }
    let mut configs: Vec<(String, IpamConfig)> = Vec::new();
    for s in &subnets {
        for (k, _) in &configs {
            let overlap = subnet_matches(s, k).map_err(anyhow::Error::msg)?
                || subnet_matches(k, s).map_err(anyhow::Error::msg)?;
            if overlap {
                anyhow::bail!("multiple overlapping subnet configuration is not supported");
            }
        }
        let prefix = Cidr::parse_prefix(s).map_err(anyhow::Error::msg)?;
        let family = if prefix.is_v6() {
            ipam_config::AddressFamily::Ipv6
        } else {
            ipam_config::AddressFamily::Ipv4
        };
        configs.push((
            s.clone(),
            IpamConfig {
                family: family as i32,
                subnet: prefix.to_string(),
                ..Default::default()
            },
        ));
    }

    for r in &ranges {
        let r = r.to_string();
        let mut matched = false;
        for (s, config) in configs.iter_mut() {
            if !subnet_matches(s, &r).map_err(anyhow::Error::msg)? {
                continue;
            }
            if !config.range.is_empty() {
                anyhow::bail!(
                    "cannot configure multiple ranges ({r}, {}) on the same subnet ({s})",
                    config.range
                );
            }
            config.range = r.clone();
            matched = true;
        }
        if !matched {
            anyhow::bail!("no matching subnet for range {r}");
        }
    }

    for g in &gateways {
        let g = g.to_string();
        let mut matched = false;
        for (s, config) in configs.iter_mut() {
            if !subnet_matches(s, &g).map_err(anyhow::Error::msg)? {
                continue;
            }
            if !config.gateway.is_empty() {
                anyhow::bail!(
                    "cannot configure multiple gateways ({g}, {}) for the same subnet ({s})",
                    config.gateway
                );
            }
            config.gateway = g.clone();
            matched = true;
        }
        if !matched {
            anyhow::bail!("no matching subnet for gateway {g}");
        }
    }

    let mut aux: Vec<(String, String)> = map_opts(flags.aux_addresses).into_iter().collect();
    aux.sort();
    for (name, address) in aux {
        if address.is_empty() {
            continue;
        }
        let ip: IpAddr = address
            .parse()
            .map_err(|_| anyhow::anyhow!("ParseAddr({address:?}): unable to parse IP"))?;
        let mut matched = false;
        for (s, config) in configs.iter_mut() {
            if !subnet_matches(s, &ip.to_string()).map_err(anyhow::Error::msg)? {
                continue;
            }
            config.reserved.insert(name.clone(), ip.to_string());
            matched = true;
        }
        if !matched {
            anyhow::bail!("no matching subnet for aux-address {address}");
        }
    }

    Ok(IpamOptions {
        driver: Some(Driver {
            name: flags.driver.to_string(),
            options: map_opts(flags.options),
        }),
        configs: configs.into_iter().map(|(_, c)| c).collect(),
    })
}
