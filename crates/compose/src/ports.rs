//! The short port syntax (`[ip:][host:]container[/proto]`, ranges allowed), parsed the
//! way docker's go-connections `nat.ParsePortSpec` does and expanded into one port
//! per published/target pair as the compose loader does.

use std::net::IpAddr;

use crate::model::ServicePortConfig;

/// One parsed mapping: a container port with its (optional) host binding.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PortMapping {
    pub(crate) ip: String,
    /// A port, a range `a-b`, or empty.
    pub(crate) host: String,
    pub(crate) container: u32,
    pub(crate) proto: String,
}

fn parse_range(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u32 = a.parse().ok()?;
    let b: u32 = b.parse().ok()?;
    (a <= 65535 && b <= 65535 && a <= b).then_some((a, b))
}

/// `nat.ParsePortSpec`: the mappings a short-syntax port stands for.
pub(crate) fn parse_port_spec(raw: &str) -> Result<Vec<PortMapping>, String> {
    let (rest, proto) = match raw.rsplit_once('/') {
        Some((r, p)) => (r, if p.is_empty() { "tcp" } else { p }),
        None => (raw, "tcp"),
    };
    if rest.is_empty() {
        return Err(format!("no port specified: {raw}<empty>"));
    }
    if !matches!(proto.to_ascii_lowercase().as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let (ip, host, container) = split_parts(rest);
    if !ip.is_empty() && ip.parse::<IpAddr>().is_err() {
        return Err(format!("invalid IP address: {ip}"));
    }
    let (cs, ce) =
        parse_range(&container).ok_or_else(|| format!("invalid containerPort: {container}"))?;
    let (hs, he) = if host.is_empty() {
        (0, 0)
    } else {
        parse_range(&host).ok_or_else(|| format!("invalid hostPort: {host}"))?
    };
    if !host.is_empty() && (ce - cs) != (he - hs) && ce != cs {
        return Err(format!(
            "invalid ranges specified for container and host Ports: {container} and {host}"
        ));
    }
    let mut out = Vec::new();
    for i in 0..=(ce - cs) {
        let mut h = if host.is_empty() {
            String::new()
        } else {
            (hs + i).to_string()
        };
        if cs == ce && hs != he {
            h = format!("{h}-{he}");
        }
        out.push(PortMapping {
            ip: ip.clone(),
            host: h,
            container: cs + i,
            proto: proto.to_ascii_lowercase(),
        });
    }
    Ok(out)
}

fn split_parts(raw: &str) -> (String, String, String) {
    if let Some(inner) = raw.strip_prefix('[')
        && let Some((ip, rest)) = inner.split_once(']')
    {
        let rest = rest.strip_prefix(':').unwrap_or(rest);
        let (h, c) = rest.split_once(':').unwrap_or(("", rest));
        return (ip.to_string(), h.to_string(), c.to_string());
    }
    let parts: Vec<&str> = raw.split(':').collect();
    match parts.len() {
        1 => (String::new(), String::new(), parts[0].to_string()),
        2 => (String::new(), parts[0].to_string(), parts[1].to_string()),
        3 => (
            parts[0].to_string(),
            parts[1].to_string(),
            parts[2].to_string(),
        ),
        n => (
            parts[..n - 2].join(":"),
            parts[n - 2].to_string(),
            parts[n - 1].to_string(),
        ),
    }
}

/// Expands one short-syntax entry into ports, sorted as docker sorts them (by the
/// `port/proto` key as a string), and the warnings for dropped host IPs.
pub(crate) fn expand_short_port(
    raw: &str,
) -> Result<(Vec<ServicePortConfig>, Vec<String>), String> {
    let mut mappings = parse_port_spec(raw)?;
    mappings.sort_by_key(|m| format!("{}/{}", m.container, m.proto));
    let mut ports = Vec::new();
    let mut warnings = Vec::new();
    for m in mappings {
        let port_proto = format!("{}/{}", m.container, m.proto);
        if let Ok(ip) = m.ip.parse::<IpAddr>()
            && !ip.is_unspecified()
        {
            warnings.push(format!(
                "ignoring IP-address ({}:{}:{port_proto}) service will listen on '0.0.0.0'",
                m.ip, m.host
            ));
        }
        let (start, end) = if m.host.is_empty() {
            (0, 0)
        } else {
            parse_range(&m.host).ok_or_else(|| {
                format!(
                    "invalid hostport binding ({}) for port ({})",
                    m.host, m.container
                )
            })?
        };
        for published in start..=end {
            ports.push(ServicePortConfig {
                mode: "ingress".into(),
                target: m.container,
                published,
                protocol: m.proto.clone(),
            });
        }
    }
    Ok((ports, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(target: u32, published: u32, protocol: &str) -> ServicePortConfig {
        ServicePortConfig {
            mode: "ingress".into(),
            target,
            published,
            protocol: protocol.into(),
        }
    }

    #[test]
    fn short_syntax() {
        assert_eq!(
            expand_short_port("8080:80").expect("ok").0,
            vec![p(80, 8080, "tcp")]
        );
        assert_eq!(
            expand_short_port("9000").expect("ok").0,
            vec![p(9000, 0, "tcp")]
        );
        assert_eq!(
            expand_short_port("53:53/udp").expect("ok").0,
            vec![p(53, 53, "udp")]
        );
        assert_eq!(
            expand_short_port("9000-9001:9000-9001").expect("ok").0,
            vec![p(9000, 9000, "tcp"), p(9001, 9001, "tcp")]
        );
    }

    #[test]
    fn host_ip_is_dropped_with_dockers_warning() {
        let (ports, warnings) = expand_short_port("127.0.0.1:8001:8001").expect("ok");
        assert_eq!(ports, vec![p(8001, 8001, "tcp")]);
        assert_eq!(
            warnings,
            vec![
                "ignoring IP-address (127.0.0.1:8001:8001/tcp) service will listen on '0.0.0.0'"
                    .to_string()
            ]
        );
        assert!(expand_short_port("0.0.0.0:80:80").expect("ok").1.is_empty());
    }

    #[test]
    fn bad_specs() {
        assert!(parse_port_spec("abc").is_err());
        assert!(parse_port_spec("80/xyz").is_err());
        assert!(parse_port_spec("1-3:1-2").is_err());
    }
}
