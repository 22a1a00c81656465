//! Placement constraints (`--constraint`): `KEY==VALUE` / `KEY!=VALUE`.
//!
//! Semantics follow Swarm's: keys are matched case-insensitively, values are compared
//! case-insensitively, label *names* after `node.labels.` / `engine.labels.` are case
//! sensitive, a missing field or label compares as the empty string (so `!=` matches
//! it and `==` does not), and `node.ip` takes an address or a CIDR subnet.
//!
//! Stricter than swarmkit: an unknown key and a `node.ip` value that is neither an
//! address nor a subnet are parse errors, instead of constraints that never match.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use shoal_proto::v1::{Node, NodeRole};

/// The comparison a constraint makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `==`
    Eq,
    /// `!=`
    NotEq,
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operator::Eq => "==",
            Operator::NotEq => "!=",
        })
    }
}

/// What a constraint looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConstraintKey {
    /// `node.id`
    NodeId,
    /// `node.hostname`
    NodeHostname,
    /// `node.role` (`manager` / `worker`)
    NodeRole,
    /// `node.ip`: an address or a CIDR subnet
    NodeIp,
    /// `node.platform.os`
    NodePlatformOs,
    /// `node.platform.arch`
    NodePlatformArch,
    /// `node.labels.<name>`: the node's spec labels (name case-sensitive)
    NodeLabel(String),
    /// `engine.labels.<name>`: the engine's labels (name case-sensitive)
    EngineLabel(String),
}

impl fmt::Display for ConstraintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConstraintKey::NodeId => f.write_str("node.id"),
            ConstraintKey::NodeHostname => f.write_str("node.hostname"),
            ConstraintKey::NodeRole => f.write_str("node.role"),
            ConstraintKey::NodeIp => f.write_str("node.ip"),
            ConstraintKey::NodePlatformOs => f.write_str("node.platform.os"),
            ConstraintKey::NodePlatformArch => f.write_str("node.platform.arch"),
            ConstraintKey::NodeLabel(l) => write!(f, "{NODE_LABEL_PREFIX}{l}"),
            ConstraintKey::EngineLabel(l) => write!(f, "{ENGINE_LABEL_PREFIX}{l}"),
        }
    }
}

/// The key prefix for node labels.
pub const NODE_LABEL_PREFIX: &str = "node.labels.";
/// The key prefix for engine labels.
pub const ENGINE_LABEL_PREFIX: &str = "engine.labels.";

/// One parsed constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    pub key: ConstraintKey,
    pub op: Operator,
    /// The value as written (trimmed); compared case-insensitively.
    pub value: String,
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.key, self.op, self.value)
    }
}

/// Why a constraint expression was refused. Every message names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    /// Neither `==` nor `!=` appears.
    #[error("constraint '{expr}' expected one operator from ==, !=")]
    MissingOperator { expr: String },
    /// The key is not a syntactically valid key.
    #[error("key '{key}' is invalid")]
    InvalidKey { key: String },
    /// The key is well-formed but not one the scheduler knows.
    #[error(
        "constraint key '{key}' is not supported (expected node.id, node.hostname, \
         node.role, node.ip, node.platform.os, node.platform.arch, node.labels.<name> \
         or engine.labels.<name>)"
    )]
    UnknownKey { key: String },
    /// The value holds characters Swarm does not accept (e.g. an operator).
    #[error("value '{value}' is invalid")]
    InvalidValue { value: String },
    /// `node.ip` compared against something that is neither an address nor a subnet.
    #[error("value '{value}' is invalid for node.ip: expected an IP address or a CIDR subnet")]
    InvalidIp { value: String },
}

/// Parses one constraint expression, e.g. `node.labels.zone==east`.
pub fn parse(expr: &str) -> Result<Constraint, ConstraintError> {
    // Swarm tries the operators in this order and splits at the first occurrence.
    let (op, pos, len) = if let Some(p) = expr.find("==") {
        (Operator::Eq, p, 2)
    } else if let Some(p) = expr.find("!=") {
        (Operator::NotEq, p, 2)
    } else {
        return Err(ConstraintError::MissingOperator {
            expr: expr.to_string(),
        });
    };
    let raw_key = expr[..pos].trim();
    let value = expr[pos + len..].trim();
    if !valid_key(raw_key) {
        return Err(ConstraintError::InvalidKey {
            key: raw_key.to_string(),
        });
    }
    if !valid_value(value) {
        return Err(ConstraintError::InvalidValue {
            value: value.to_string(),
        });
    }
    let key = typed_key(raw_key).ok_or_else(|| ConstraintError::UnknownKey {
        key: raw_key.to_string(),
    })?;
    if key == ConstraintKey::NodeIp && IpMatcher::parse(value).is_none() {
        return Err(ConstraintError::InvalidIp {
            value: value.to_string(),
        });
    }
    Ok(Constraint {
        key,
        op,
        value: value.to_string(),
    })
}

/// Parses every expression; the first bad one is the error.
pub fn parse_all<S: AsRef<str>>(exprs: &[S]) -> Result<Vec<Constraint>, ConstraintError> {
    exprs.iter().map(|e| parse(e.as_ref())).collect()
}

/// Swarm's key syntax: `^[a-z_][a-z0-9\-_.]+$`, case-insensitive.
fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    if !(first.is_ascii_alphabetic() || first == '_') {
        return false;
    }
    let rest = chars.as_str();
    !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Swarm's value syntax: alphanumerics, whitespace and `:-_.*()?+[]\^$|/`; never empty.
fn valid_value(value: &str) -> bool {
    !value.is_empty()
        && value.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || c.is_whitespace()
                || matches!(
                    c,
                    ':' | '-'
                        | '_'
                        | '.'
                        | '*'
                        | '('
                        | ')'
                        | '?'
                        | '+'
                        | '['
                        | ']'
                        | '\\'
                        | '^'
                        | '$'
                        | '|'
                        | '/'
                )
        })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() > prefix.len()
        && s.is_char_boundary(prefix.len())
        && s[..prefix.len()].eq_ignore_ascii_case(prefix)
    {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

fn typed_key(key: &str) -> Option<ConstraintKey> {
    let fixed = [
        ("node.id", ConstraintKey::NodeId),
        ("node.hostname", ConstraintKey::NodeHostname),
        ("node.role", ConstraintKey::NodeRole),
        ("node.ip", ConstraintKey::NodeIp),
        ("node.platform.os", ConstraintKey::NodePlatformOs),
        ("node.platform.arch", ConstraintKey::NodePlatformArch),
    ];
    for (name, k) in fixed {
        if key.eq_ignore_ascii_case(name) {
            return Some(k);
        }
    }
    if let Some(label) = strip_prefix_ignore_case(key, NODE_LABEL_PREFIX) {
        return Some(ConstraintKey::NodeLabel(label.to_string()));
    }
    if let Some(label) = strip_prefix_ignore_case(key, ENGINE_LABEL_PREFIX) {
        return Some(ConstraintKey::EngineLabel(label.to_string()));
    }
    None
}

/// An address or a subnet, for `node.ip`.
#[derive(Debug, Clone, Copy)]
enum IpMatcher {
    Addr(IpAddr),
    Net(IpAddr, u8),
}

impl IpMatcher {
    fn parse(value: &str) -> Option<IpMatcher> {
        if let Ok(ip) = value.parse::<IpAddr>() {
            return Some(IpMatcher::Addr(ip));
        }
        let (addr, prefix) = value.split_once('/')?;
        let addr: IpAddr = addr.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(IpMatcher::Net(addr, prefix))
    }

    fn contains(self, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip else { return false };
        match self {
            IpMatcher::Addr(a) => canonical(a) == canonical(ip),
            IpMatcher::Net(net, prefix) => match (net, canonical(ip)) {
                (IpAddr::V4(n), IpAddr::V4(i)) => {
                    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                    (u32::from(n) & mask) == (u32::from(i) & mask)
                }
                (IpAddr::V6(n), IpAddr::V6(i)) => {
                    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                    (u128::from(n) & mask) == (u128::from(i) & mask)
                }
                _ => false,
            },
        }
    }
}

/// IPv4-mapped IPv6 addresses compare as their IPv4 form.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The node's address: `status.addr`, a bare address or `address:port`.
fn node_ip(node: &Node) -> Option<IpAddr> {
    let addr = node.status.as_ref()?.addr.trim();
    addr.parse::<IpAddr>()
        .ok()
        .or_else(|| addr.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

fn role_name(node: &Node) -> &'static str {
    match node.role() {
        NodeRole::Manager => "manager",
        NodeRole::Worker => "worker",
        NodeRole::Admin => "admin",
    }
}

/// Does `node` satisfy `c`?
pub fn matches(c: &Constraint, node: &Node) -> bool {
    let desc = node.description.as_ref();
    let platform = desc.and_then(|d| d.platform.as_ref());
    let value: &str = match &c.key {
        ConstraintKey::NodeIp => {
            // Parse validated it; a hand-built constraint with a bad value never matches.
            let Some(m) = IpMatcher::parse(&c.value) else {
                return false;
            };
            let within = m.contains(node_ip(node));
            return within == (c.op == Operator::Eq);
        }
        ConstraintKey::NodeId => node.meta.as_ref().map_or("", |m| m.id.as_str()),
        ConstraintKey::NodeHostname => desc.map_or("", |d| d.hostname.as_str()),
        ConstraintKey::NodeRole => role_name(node),
        ConstraintKey::NodePlatformOs => platform.map_or("", |p| p.os.as_str()),
        ConstraintKey::NodePlatformArch => platform.map_or("", |p| p.architecture.as_str()),
        ConstraintKey::NodeLabel(l) => node
            .spec
            .as_ref()
            .and_then(|s| s.annotations.as_ref())
            .and_then(|a| a.labels.get(l))
            .map_or("", String::as_str),
        ConstraintKey::EngineLabel(l) => desc
            .and_then(|d| d.engine.as_ref())
            .and_then(|e| e.labels.get(l))
            .map_or("", String::as_str),
    };
    // Swarm uses Unicode case folding; ASCII first, lowercase for the rest.
    let equal =
        c.value.eq_ignore_ascii_case(value) || c.value.to_lowercase() == value.to_lowercase();
    equal == (c.op == Operator::Eq)
}

/// Does `node` satisfy every constraint?
pub fn matches_all(constraints: &[Constraint], node: &Node) -> bool {
    constraints.iter().all(|c| matches(c, node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::test_support::node;

    #[test]
    fn parses_every_key() {
        let cases = [
            ("node.id==abc", ConstraintKey::NodeId),
            ("node.hostname != h1", ConstraintKey::NodeHostname),
            ("NODE.ROLE==manager", ConstraintKey::NodeRole),
            ("node.ip==10.0.0.0/8", ConstraintKey::NodeIp),
            ("node.platform.os==linux", ConstraintKey::NodePlatformOs),
            ("node.platform.arch==amd64", ConstraintKey::NodePlatformArch),
            (
                "node.labels.Zone==east",
                ConstraintKey::NodeLabel("Zone".into()),
            ),
            (
                "Engine.Labels.disk==ssd",
                ConstraintKey::EngineLabel("disk".into()),
            ),
        ];
        for (expr, key) in cases {
            let c = parse(expr).expect(expr);
            assert_eq!(c.key, key, "{expr}");
        }
        let c = parse(" node.hostname != h1 ").expect("parse");
        assert_eq!(c.op, Operator::NotEq);
        assert_eq!(c.value, "h1");
        assert_eq!(c.to_string(), "node.hostname!=h1");
    }

    #[test]
    fn parse_errors_name_the_culprit() {
        let e = parse("node.role=manager").expect_err("must fail");
        assert!(matches!(e, ConstraintError::MissingOperator { .. }));
        assert!(e.to_string().contains("node.role=manager"), "{e}");

        let e = parse("node.colour==red").expect_err("must fail");
        assert_eq!(
            e,
            ConstraintError::UnknownKey {
                key: "node.colour".into()
            }
        );
        assert!(e.to_string().contains("'node.colour'"), "{e}");

        let e = parse("node.labels.==x").expect_err("must fail");
        assert!(matches!(e, ConstraintError::UnknownKey { .. }), "{e}");

        let e = parse("9node==x").expect_err("must fail");
        assert_eq!(e.to_string(), "key '9node' is invalid");
        assert!(matches!(
            parse("==x").expect_err("must fail"),
            ConstraintError::InvalidKey { .. }
        ));

        let e = parse("node.role==>manager").expect_err("must fail");
        assert_eq!(e.to_string(), "value '>manager' is invalid");
        assert!(matches!(
            parse("node.role==").expect_err("must fail"),
            ConstraintError::InvalidValue { .. }
        ));
        assert!(matches!(
            parse("node.role==!=x").expect_err("must fail"),
            ConstraintError::InvalidValue { .. }
        ));

        let e = parse("node.ip==not-an-ip").expect_err("must fail");
        assert!(matches!(e, ConstraintError::InvalidIp { .. }));
        assert!(e.to_string().contains("not-an-ip"));
        assert!(parse("node.ip==10.0.0.0/33").is_err());

        assert!(parse_all(&["node.role==manager", "bogus"]).is_err());
        assert_eq!(
            parse_all(&["node.role==manager", "node.id!=x"]).map(|v| v.len()),
            Ok(2)
        );
    }

    #[test]
    fn matching_follows_swarm() {
        let mut n = node("n1");
        n.role = NodeRole::Manager as i32;
        if let Some(s) = n.spec.as_mut() {
            s.annotations
                .get_or_insert_with(Default::default)
                .labels
                .insert("zone".into(), "East".into());
        }
        if let Some(d) = n.description.as_mut() {
            d.hostname = "Host-1".into();
            d.engine
                .get_or_insert_with(Default::default)
                .labels
                .insert("disk".into(), "ssd".into());
        }
        let m = |e: &str| matches(&parse(e).expect(e), &n);
        assert!(m("node.id==n1"));
        assert!(m("node.id==N1"));
        assert!(!m("node.id!=n1"));
        assert!(m("node.hostname==host-1"));
        assert!(m("node.role==manager"));
        assert!(m("node.role==MANAGER"));
        assert!(!m("node.role==worker"));
        assert!(m("node.platform.os==linux"));
        assert!(m("node.platform.arch!=arm64"));
        // values are case-insensitive, label names are not
        assert!(m("node.labels.zone==east"));
        assert!(!m("node.labels.Zone==east"));
        assert!(m("node.labels.Zone!=east"));
        // a missing label compares as "": != matches, == does not
        assert!(m("node.labels.rack!=r1"));
        assert!(!m("node.labels.rack==r1"));
        assert!(m("engine.labels.disk==SSD"));
        assert!(!m("engine.labels.disk!=ssd"));
        // node.ip: address and subnet
        assert!(m("node.ip==10.0.0.5"));
        assert!(m("node.ip==10.0.0.0/24"));
        assert!(!m("node.ip!=10.0.0.0/24"));
        assert!(m("node.ip!=10.0.1.0/24"));
        assert!(m("node.ip!=10.0.0.6"));
        assert!(matches_all(
            &parse_all(&["node.role==manager", "node.labels.zone==east"]).expect("parse"),
            &n
        ));
        assert!(!matches_all(
            &parse_all(&["node.role==manager", "node.labels.zone==west"]).expect("parse"),
            &n
        ));
    }

    #[test]
    fn node_ip_with_port_and_ipv6() {
        let mut n = node("n1");
        if let Some(s) = n.status.as_mut() {
            s.addr = "[2001:db8::2]:4242".into();
        }
        assert!(matches(&parse("node.ip==2001:db8::2").expect("p"), &n));
        assert!(matches(&parse("node.ip==2001:db8::/32").expect("p"), &n));
        assert!(!matches(&parse("node.ip==10.0.0.0/8").expect("p"), &n));
        if let Some(s) = n.status.as_mut() {
            s.addr = String::new();
        }
        assert!(!matches(&parse("node.ip==10.0.0.5").expect("p"), &n));
        assert!(matches(&parse("node.ip!=10.0.0.5").expect("p"), &n));
    }
}
