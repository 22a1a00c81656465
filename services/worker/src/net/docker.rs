//! The Docker side of the data plane: which shoal networks exist as Docker networks on
//! this host (label `com.shoal.network.id`, created by the executor when a container
//! of the network starts here), their bridges and gateways, and the VIPs the worker
//! puts on those bridges (`ip addr add <vip>/32 dev <bridge>`).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use super::table::Proto;

use bollard::Docker;
use bollard::query_parameters::ListNetworksOptionsBuilder;

/// The label naming the shoal network a Docker network stands for.
pub const NETWORK_LABEL: &str = "com.shoal.network.id";
/// Docker's option naming a bridge network's Linux bridge.
const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

/// A shoal network present on this host as a Docker network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNetwork {
    pub network_id: String,
    pub bridge: String,
    pub gateway: Option<IpAddr>,
    pub subnet: Option<super::table::Subnet>,
}

/// The Docker Engine, if one answers.
pub struct Engine {
    docker: Docker,
}

impl Engine {
    pub async fn connect() -> Option<Self> {
        let docker = Docker::connect_with_local_defaults().ok()?;
        docker.ping().await.ok()?;
        Some(Self { docker })
    }

    /// The shoal networks on this host, by shoal network id.
    pub async fn networks(&self) -> Result<HashMap<String, HostNetwork>, String> {
        let mut filters = HashMap::new();
        filters.insert("label", vec![NETWORK_LABEL]);
        let opts = ListNetworksOptionsBuilder::new().filters(&filters).build();
        let list = self
            .docker
            .list_networks(Some(opts))
            .await
            .map_err(|e| e.to_string())?;
        let mut out = HashMap::new();
        for n in list {
            let Some(network_id) = n
                .labels
                .as_ref()
                .and_then(|l| l.get(NETWORK_LABEL))
                .cloned()
            else {
                continue;
            };
            let Some(docker_id) = n.id.as_deref() else {
                continue;
            };
            let bridge = n
                .options
                .as_ref()
                .and_then(|o| o.get(BRIDGE_NAME_OPTION))
                .filter(|b| !b.is_empty())
                .cloned()
                .unwrap_or_else(|| format!("br-{}", docker_id.get(..12).unwrap_or(docker_id)));
            let configs = n
                .ipam
                .as_ref()
                .and_then(|i| i.config.as_deref())
                .unwrap_or_default();
            let gateway = configs
                .iter()
                .filter_map(|c| c.gateway.as_deref())
                .find_map(|g| super::table::parse_ip(g).filter(IpAddr::is_ipv4));
            let subnet = configs
                .iter()
                .filter_map(|c| c.subnet.as_deref())
                .find_map(|s| super::table::parse_subnet(s).filter(|(ip, _)| ip.is_ipv4()));
            out.insert(
                network_id.clone(),
                HostNetwork {
                    network_id,
                    bridge,
                    gateway,
                    subnet,
                },
            );
        }
        Ok(out)
    }
}

impl Engine {
    /// The ports `image` EXPOSEs (`80/tcp`, `53/udp`), when the engine has the image;
    /// None when it does not (yet).
    pub async fn exposed_ports(&self, image: &str) -> Option<BTreeSet<(u16, Proto)>> {
        let inspect = self.docker.inspect_image(image).await.ok()?;
        let exposed = inspect
            .config
            .and_then(|c| c.exposed_ports)
            .unwrap_or_default();
        Some(exposed.iter().filter_map(|p| parse_exposed(p)).collect())
    }
}

/// `80/tcp` (or `80`, TCP) → (80, TCP); other protocols are not proxied.
pub fn parse_exposed(spec: &str) -> Option<(u16, Proto)> {
    let (port, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let proto = match proto.to_ascii_lowercase().as_str() {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        _ => return None,
    };
    let port: u16 = port.trim().parse().ok().filter(|p| *p != 0)?;
    Some((port, proto))
}

/// `ip addr add <ip>/32 dev <bridge>`; an address already there is fine.
pub async fn add_address(ip: IpAddr, bridge: &str) -> Result<(), String> {
    ip_addr("add", ip, bridge, "File exists").await
}

/// `ip addr del <ip>/32 dev <bridge>`; an address already gone is fine.
pub async fn del_address(ip: IpAddr, bridge: &str) -> Result<(), String> {
    ip_addr("del", ip, bridge, "Cannot assign requested address").await
}

async fn ip_addr(verb: &str, ip: IpAddr, bridge: &str, fine: &str) -> Result<(), String> {
    let prefix = if ip.is_ipv4() { 32 } else { 128 };
    let out = tokio::process::Command::new("ip")
        .args(["addr", verb, &format!("{ip}/{prefix}"), "dev", bridge])
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("ip addr {verb}: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || stderr.contains(fine) {
        Ok(())
    } else {
        Err(format!(
            "ip addr {verb} {ip}/{prefix} dev {bridge}: {}",
            stderr.trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposed_ports_as_the_engine_lists_them() {
        assert_eq!(parse_exposed("80/tcp"), Some((80, Proto::Tcp)));
        assert_eq!(parse_exposed("53/UDP"), Some((53, Proto::Udp)));
        assert_eq!(parse_exposed("3306"), Some((3306, Proto::Tcp)));
        assert_eq!(parse_exposed("132/sctp"), None);
        assert_eq!(parse_exposed("0/tcp"), None);
        assert_eq!(parse_exposed("http/tcp"), None);
    }
}
