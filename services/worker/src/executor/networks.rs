//! A task's network attachments as the executors use them.
//!
//! The manager writes one `NetworkAttachment` per network of the task's service (a
//! copy of the network, with its allocated subnet and gateway in `ipam.configs[0]`,
//! and the task's address on it, `a.b.c.d/len`); the first one is the task's main
//! network. Process tasks get loopback addresses (127.128.0.0/9, bindable as they
//! are), container tasks addresses in the network's subnet.
//!
//! For containers, each shoal network is a Docker network of the host:
//! `shoal-<network name>-<first 12 chars of the network id>`, labelled
//! `com.shoal.network.id=<id>`, driver bridge, the network's subnet and gateway,
//! `internal` when the network is. [`ensure`] creates it when it is missing; several
//! workers on one host share it, so a creation that races another one (a name conflict,
//! or the engine's "Pool overlaps" for the subnet the other one took a moment before)
//! looks again and uses the other's. A network is not removed when its last container
//! goes: another worker of the host may use it at any time, and an empty bridge costs
//! nothing. It is removed only when it stands in the way: empty, of another shoal
//! network, its subnet overlapping the one being created (the manager gives a removed
//! network's subnet to later ones, never two live networks overlapping subnets). A
//! subnet held by anything else (a Docker network of someone else's) fails the task
//! with an error naming the subnet.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use shoal_proto::v1::{Network, NetworkAttachment, Task};

use super::TaskError;

/// The label naming the shoal network of a Docker network.
pub const LABEL_NETWORK_ID: &str = "com.shoal.network.id";
/// How long a Docker network another worker is creating may take to show up.
const RACE_DEADLINE: Duration = Duration::from_secs(3);
/// How often it is looked for meanwhile.
const RACE_POLL: Duration = Duration::from_millis(50);

/// An address without its prefix length: `10.0.1.5/24` → `10.0.1.5`.
pub fn strip_prefix(cidr: &str) -> &str {
    cidr.split_once('/').map(|(a, _)| a).unwrap_or(cidr)
}

/// The network's id.
pub fn network_id(network: &Network) -> &str {
    network.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

/// The network's name (its id if it carries none).
pub fn network_name(network: &Network) -> &str {
    network
        .spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map(|a| a.name.as_str())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| network_id(network))
}

/// The task's address (no prefix) on its first network; None without networks.
pub fn task_addr(task: &Task) -> Option<&str> {
    task.networks
        .first()
        .and_then(|a| a.addresses.first())
        .map(|a| strip_prefix(a))
        .filter(|a| !a.is_empty())
}

/// `net_name=addr,...` for every attachment with an address, in the task's order.
pub fn task_addrs(task: &Task) -> String {
    task.networks
        .iter()
        .filter_map(|a| {
            let network = a.network.as_ref()?;
            let addr = strip_prefix(a.addresses.first()?);
            Some(format!("{}={addr}", network_name(network)))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The ids of the networks a task is attached to.
pub fn attachment_ids(task: &Task) -> Vec<String> {
    task.networks
        .iter()
        .filter_map(|a| a.network.as_ref())
        .map(|n| network_id(n).to_string())
        .collect()
}

/// The Docker network of a shoal network: `shoal-<name>-<first 12 of the id>`.
pub fn docker_network_name(network: &Network) -> String {
    let id: String = network_id(network).chars().take(12).collect();
    format!("shoal-{}-{id}", network_name(network))
}

/// What a container needs to join one of its task's networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    /// The Docker network's name.
    pub docker_name: String,
    /// The task's IPv4 address on it, without prefix.
    pub address: String,
    /// The network's gateway (where the worker relays DNS).
    pub gateway: String,
    /// The subnet (for error messages).
    pub subnet: String,
}

/// The joins of a container task, in the task's order (the first is its main network).
pub fn joins(task: &Task) -> Result<Vec<Join>, TaskError> {
    task.networks.iter().map(join).collect()
}

fn join(attachment: &NetworkAttachment) -> Result<Join, TaskError> {
    let Some(network) = attachment.network.as_ref() else {
        return Err(TaskError::failed("network attachment without its network"));
    };
    let name = network_name(network);
    let Some(config) = network.ipam.as_ref().and_then(|i| i.configs.first()) else {
        return Err(TaskError::failed(format!(
            "network {name} has no allocated subnet"
        )));
    };
    let Some(address) = attachment.addresses.first() else {
        return Err(TaskError::failed(format!(
            "the task has no address on network {name}"
        )));
    };
    let address = strip_prefix(address);
    if address.parse::<Ipv4Addr>().is_err() {
        return Err(TaskError::failed(format!(
            "the task's address {address:?} on network {name} is not an IPv4 address"
        )));
    }
    Ok(Join {
        docker_name: docker_network_name(network),
        address: address.to_string(),
        gateway: config.gateway.clone(),
        subnet: config.subnet.clone(),
    })
}

use super::docker::{docker_err, status_code};

/// Whether the Docker network `name` exists, and is this shoal network's. Err: it
/// exists but is another's, or the engine failed.
async fn find(docker: &Docker, name: &str, id: &str) -> Result<bool, TaskError> {
    match docker.inspect_network(name, None).await {
        Ok(info) => {
            let owner = info
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_NETWORK_ID))
                .map(String::as_str);
            if owner == Some(id) {
                Ok(true)
            } else {
                Err(TaskError::failed(format!(
                    "docker network {name} exists but is not shoal network {id} (label {LABEL_NETWORK_ID}={})",
                    owner.unwrap_or("")
                )))
            }
        }
        Err(e) if status_code(&e) == Some(404) => Ok(false),
        Err(e) => Err(TaskError::failed(format!(
            "inspecting docker network {name}: {}",
            docker_err(&e)
        ))),
    }
}

/// `a.b.c.d/len` as (address, prefix length).
fn parse_cidr(cidr: &str) -> Option<(u32, u32)> {
    let (addr, len) = cidr.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    (len <= 32).then_some((u32::from(addr), len))
}

/// Whether two IPv4 subnets share an address.
fn overlaps(a: &str, b: &str) -> bool {
    let (Some((a, la)), Some((b, lb))) = (parse_cidr(a), parse_cidr(b)) else {
        return false;
    };
    let len = la.min(lb);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    a & mask == b & mask
}

/// Removes the empty Docker networks of OTHER shoal networks whose subnet overlaps
/// `subnet`: what is left on this host of shoal networks since removed (the manager
/// never gives two live networks overlapping subnets, and frees a removed network's
/// subnet for the next one). How many went.
async fn reap_stale(docker: &Docker, id: &str, subnet: &str) -> usize {
    let opts = bollard::query_parameters::ListNetworksOptions {
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![LABEL_NETWORK_ID.to_string()],
        )])),
    };
    let Ok(list) = docker.list_networks(Some(opts)).await else {
        return 0;
    };
    let mut removed = 0;
    for n in list {
        let owner = n.labels.as_ref().and_then(|l| l.get(LABEL_NETWORK_ID));
        let (Some(owner), Some(docker_id)) = (owner, n.id.as_deref()) else {
            continue;
        };
        let clash = n
            .ipam
            .as_ref()
            .and_then(|i| i.config.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .filter_map(|c| c.subnet.as_deref())
                    .any(|s| overlaps(s, subnet))
            });
        if owner == id || !clash {
            continue;
        }
        // The list does not say who is on it: the network's own inspect does.
        let empty = docker
            .inspect_network(docker_id, None)
            .await
            .is_ok_and(|i| i.containers.is_none_or(|c| c.is_empty()));
        if !empty {
            continue;
        }
        match docker.remove_network(docker_id).await {
            Ok(()) => {
                tracing::info!(network = ?n.name, %subnet, "removed the empty docker network of a removed shoal network: its subnet is reused");
                removed += 1;
            }
            // Another worker removed it first.
            Err(e) if status_code(&e) == Some(404) => removed += 1,
            Err(e) => {
                tracing::warn!(network = ?n.name, error = %docker_err(&e), "cannot remove a stale docker network")
            }
        }
    }
    removed
}

/// Makes sure the Docker network of a shoal network exists on this host, creating it
/// if needed (safe against other workers doing the same at the same time); its name.
pub async fn ensure(docker: &Docker, network: &Network) -> Result<String, TaskError> {
    let name = docker_network_name(network);
    let id = network_id(network);
    if id.is_empty() {
        return Err(TaskError::failed("network attachment without a network id"));
    }
    if find(docker, &name, id).await? {
        return Ok(name);
    }
    let Some(config) = network.ipam.as_ref().and_then(|i| i.configs.first()) else {
        return Err(TaskError::failed(format!(
            "network {} has no allocated subnet",
            network_name(network)
        )));
    };
    let internal = network.spec.as_ref().is_some_and(|s| s.internal);
    let request = NetworkCreateRequest {
        name: name.clone(),
        driver: Some("bridge".into()),
        internal: Some(internal),
        labels: Some(HashMap::from([(
            LABEL_NETWORK_ID.to_string(),
            id.to_string(),
        )])),
        ipam: Some(Ipam {
            driver: Some("default".into()),
            config: Some(vec![IpamConfig {
                subnet: Some(config.subnet.clone()),
                gateway: (!config.gateway.is_empty()).then(|| config.gateway.clone()),
                ..Default::default()
            }]),
            options: None,
        }),
        ..Default::default()
    };
    let mut reaped = false;
    let err = loop {
        match docker.create_network(request.clone()).await {
            Ok(_) => {
                tracing::info!(network = %name, subnet = %config.subnet, internal, "created docker network");
                return Ok(name);
            }
            Err(e)
                if !reaped
                    && docker_err(&e).contains("Pool overlaps")
                    && reap_stale(docker, id, &config.subnet).await > 0 =>
            {
                reaped = true;
            }
            Err(e) => break e,
        }
    };
    let message = docker_err(&err);
    let overlap = message.contains("Pool overlaps");
    let conflict = status_code(&err) == Some(409) || message.contains("already exists");
    if !overlap && !conflict {
        return Err(TaskError::failed(format!(
            "creating docker network {name} ({}): {message}",
            config.subnet
        )));
    }
    // Another worker is creating it (its pool is taken, or its name): wait for it.
    let deadline = tokio::time::Instant::now() + RACE_DEADLINE;
    let mut tick = tokio::time::interval(RACE_POLL);
    loop {
        tick.tick().await;
        if find(docker, &name, id).await? {
            tracing::debug!(network = %name, "docker network created by another worker");
            return Ok(name);
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    Err(TaskError::failed(if overlap {
        format!(
            "network {}: subnet {} overlaps a Docker network already on this host ({message})",
            network_name(network),
            config.subnet
        )
    } else {
        format!("creating docker network {name}: {message}")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::{Annotations, IpamConfig, IpamOptions, Meta, NetworkSpec};

    fn attachment(id: &str, name: &str, addr: &str) -> NetworkAttachment {
        NetworkAttachment {
            network: Some(Network {
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
                    configs: vec![IpamConfig {
                        subnet: "10.0.1.0/24".into(),
                        gateway: "10.0.1.1".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            addresses: vec![addr.into()],
            aliases: Vec::new(),
        }
    }

    #[test]
    fn subnets_overlap_when_they_share_an_address() {
        assert!(overlaps("10.0.1.0/24", "10.0.1.0/24"));
        assert!(overlaps("10.0.0.0/16", "10.0.1.0/24"));
        assert!(overlaps("10.0.1.128/25", "10.0.1.0/24"));
        assert!(!overlaps("10.0.1.0/24", "10.0.2.0/24"));
        assert!(overlaps("0.0.0.0/0", "10.0.2.0/24"));
        assert!(!overlaps("nonsense", "10.0.2.0/24"));
    }

    #[test]
    fn addresses_come_from_the_attachments() {
        let mut task = Task::default();
        assert_eq!(task_addr(&task), None);
        assert_eq!(task_addrs(&task), "");
        task.networks = vec![
            attachment("n1aaaaaaaaaaaaaaaa", "mynet", "127.128.0.5/24"),
            attachment("n2bbbbbbbbbbbbbbbb", "ingress", "127.129.0.9/24"),
        ];
        assert_eq!(task_addr(&task), Some("127.128.0.5"));
        assert_eq!(task_addrs(&task), "mynet=127.128.0.5,ingress=127.129.0.9");
        assert_eq!(
            attachment_ids(&task),
            ["n1aaaaaaaaaaaaaaaa", "n2bbbbbbbbbbbbbbbb"]
        );
    }

    #[test]
    fn docker_networks_are_named_after_name_and_id() {
        let a = attachment("0123456789abcdefghij", "mynet", "10.0.1.5/24");
        let net = a.network.as_ref().unwrap_or_else(|| unreachable!());
        assert_eq!(docker_network_name(net), "shoal-mynet-0123456789ab");
        let mut task = Task {
            networks: vec![a],
            ..Default::default()
        };
        assert_eq!(
            joins(&task),
            Ok(vec![Join {
                docker_name: "shoal-mynet-0123456789ab".into(),
                address: "10.0.1.5".into(),
                gateway: "10.0.1.1".into(),
                subnet: "10.0.1.0/24".into(),
            }])
        );
        task.networks[0].addresses.clear();
        assert!(joins(&task).is_err());
        task.networks[0].addresses = vec!["fe80::1/64".into()];
        assert!(joins(&task).is_err());
    }
}
