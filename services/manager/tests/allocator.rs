//! The network allocator wired into the leader's orchestrator, against real etcd and
//! NATS: services get their endpoint (VIPs, published ports) before their tasks, tasks
//! get one address per network, `--publish-add` attaches live tasks in place, a new
//! leader rebuilds the allocations from the store, and create/scale/rm churn never
//! hands out an address twice. The test plays the Control API (writing services and
//! networks as it would) and, where needed, the worker (task states).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use shoal_manager::allocator::{LOOPBACK_SUBNET_OPTION, Subnet, address_of};
use shoal_manager::ipam::{self, Pools};
use shoal_manager::leadership;
use shoal_proto::v1::endpoint_spec::ResolutionMode;
use shoal_proto::v1::port_config::{Protocol, PublishMode};
use shoal_proto::v1::service_spec::Mode;
use shoal_proto::v1::{
    Annotations, ContainerSpec, Driver, EndpointSpec, IpamConfig, IpamOptions, Meta, Network,
    NetworkAttachmentConfig, NetworkSpec, PortConfig, ProcessSpec, ReplicatedService, Service,
    ServiceSpec, Task, TaskSpec, TaskState, Version, task_spec,
};
use shoal_store::{Object, Store};
use shoal_testkit::wait_for;

mod common;

use common::{Cluster, DEADLINE};

impl Cluster {
    /// A network as the Control API stores it: its subnet from the default pools (or
    /// the one asked for) and a loopback subnet of its own.
    async fn network(
        &self,
        name: &str,
        subnet: Option<&str>,
        ingress: bool,
    ) -> anyhow::Result<Network> {
        let existing = self.store.list::<Network>().await?.objects;
        let asked = subnet.map(|s| IpamOptions {
            driver: None,
            configs: vec![IpamConfig {
                subnet: s.into(),
                ..Default::default()
            }],
        });
        let pools = Pools::from_defaults(None)?;
        let allocated = ipam::allocate(asked.as_ref(), &pools, &existing)?;
        let overlay = ipam::subnet_of(&Network {
            ipam: Some(allocated.clone()),
            ..Default::default()
        })
        .ok_or_else(|| anyhow::anyhow!("no subnet allocated"))?;
        let loopback = ipam::loopback_subnet(overlay, &existing)?;
        let network = Network {
            meta: Some(Meta::default()),
            spec: Some(NetworkSpec {
                annotations: Some(Annotations {
                    name: name.into(),
                    labels: HashMap::new(),
                }),
                driver_config: Some(Driver {
                    name: "overlay".into(),
                    options: HashMap::new(),
                }),
                ingress,
                ..Default::default()
            }),
            driver_state: Some(Driver {
                name: "overlay".into(),
                options: [(LOOPBACK_SUBNET_OPTION.to_string(), loopback.to_string())].into(),
            }),
            ipam: Some(allocated),
            pending_delete: false,
        };
        Ok(self.store.create(network).await?)
    }
}

fn ingress_port(target: u32, published: u32) -> PortConfig {
    PortConfig {
        protocol: Protocol::Tcp as i32,
        target_port: target,
        published_port: published,
        publish_mode: PublishMode::Ingress as i32,
        ..Default::default()
    }
}

fn service(name: &str, replicas: u64, networks: &[&Network], ports: Vec<PortConfig>) -> Service {
    Service {
        meta: Some(Meta::default()),
        spec: Some(ServiceSpec {
            annotations: Some(Annotations {
                name: name.into(),
                labels: HashMap::new(),
            }),
            task: Some(TaskSpec {
                runtime: Some(task_spec::Runtime::Container(ContainerSpec {
                    image: "nginx:latest".into(),
                    ..Default::default()
                })),
                networks: networks
                    .iter()
                    .map(|n| NetworkAttachmentConfig {
                        target: n.id().to_string(),
                        aliases: vec![format!("{name}-alias")],
                        addresses: vec![],
                    })
                    .collect(),
                ..Default::default()
            }),
            mode: Some(Mode::Replicated(ReplicatedService { replicas })),
            endpoint: (!ports.is_empty()).then_some(EndpointSpec {
                mode: ResolutionMode::Vip as i32,
                ports,
            }),
            ..Default::default()
        }),
        spec_version: Some(Version { index: 1 }),
        ..Default::default()
    }
}

fn live(t: &Task) -> bool {
    t.status
        .as_ref()
        .and_then(|s| TaskState::try_from(s.state).ok())
        .is_none_or(|s| s <= TaskState::Running)
}

fn wanted(t: &Task) -> bool {
    t.desired_state <= TaskState::Running as i32
}

fn subnet(n: &Network) -> Subnet {
    ipam::subnet_of(n).unwrap_or_else(|| panic!("network {} has a subnet", n.id()))
}

fn loopback(n: &Network) -> Subnet {
    shoal_manager::allocator::loopback_subnet_of(n)
        .unwrap_or_else(|| panic!("network {} has a loopback subnet", n.id()))
}

/// (network id, address) of every VIP and every live task's attachment in the store,
/// with the holder, so a duplicate names both.
async fn held_addresses(store: &Store) -> anyhow::Result<Vec<((String, Ipv4Addr), String)>> {
    let mut held = Vec::new();
    for s in store.list::<Service>().await?.objects {
        for v in s.endpoint.iter().flat_map(|e| &e.virtual_ips) {
            if let Some(ip) = address_of(&v.addr) {
                held.push(((v.network_id.clone(), ip), format!("vip of {}", s.id())));
            }
        }
    }
    for t in store
        .list::<Task>()
        .await?
        .objects
        .iter()
        .filter(|t| live(t))
    {
        for a in &t.networks {
            let net = a
                .network
                .as_ref()
                .map(|n| n.id().to_string())
                .unwrap_or_default();
            for ip in a.addresses.iter().filter_map(|s| address_of(s)) {
                held.push(((net.clone(), ip), format!("task {}", t.id())));
            }
        }
    }
    Ok(held)
}

fn assert_unique(held: &[((String, Ipv4Addr), String)], step: &str) {
    let mut seen: BTreeMap<&(String, Ipv4Addr), &str> = BTreeMap::new();
    for (addr, who) in held {
        if let Some(other) = seen.insert(addr, who) {
            panic!("{step}: {addr:?} held by {other} and {who}");
        }
    }
}

#[tokio::test]
async fn services_get_their_endpoint_before_their_tasks_and_tasks_an_address_per_network()
-> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let ingress = c.network("ingress", None, true).await?;
    let mynet = c.network("mynet", None, false).await?;
    let _m = c.manager("m1").await?;

    let web = c
        .store
        .create(service(
            "web",
            3,
            &[&mynet],
            vec![ingress_port(80, 8080), ingress_port(443, 0)],
        ))
        .await?;
    let tasks = c
        .wait_tasks("3 tasks", web.id(), |ts| ts.len() == 3)
        .await?;
    let web = c.store.get::<Service>(web.id()).await?;
    let endpoint = web.endpoint.clone().unwrap_or_default();
    assert_eq!(
        endpoint.spec,
        web.spec.as_ref().and_then(|s| s.endpoint.clone()),
        "the spec is copied"
    );
    let published: Vec<u32> = endpoint.ports.iter().map(|p| p.published_port).collect();
    assert_eq!(published[0], 8080);
    assert!(
        (30000..=32767).contains(&published[1]),
        "auto-assigned from the dynamic range: {published:?}"
    );
    let vips: Vec<(&str, Ipv4Addr)> = endpoint
        .virtual_ips
        .iter()
        .filter_map(|v| address_of(&v.addr).map(|ip| (v.network_id.as_str(), ip)))
        .collect();
    assert_eq!(vips.len(), 2, "{vips:?}");
    assert_eq!(vips[0].0, mynet.id());
    assert!(subnet(&mynet).contains(vips[0].1));
    assert_eq!(vips[1].0, ingress.id(), "ingress last");
    assert!(subnet(&ingress).contains(vips[1].1));
    assert!(
        endpoint.virtual_ips[0].addr.ends_with("/24"),
        "CIDR form: {}",
        endpoint.virtual_ips[0].addr
    );

    let mut seen = BTreeSet::new();
    for t in &tasks {
        assert!(
            t.version() > web.version(),
            "the endpoint (revision {}) was written before task {} (revision {})",
            web.version(),
            t.id(),
            t.version()
        );
        assert_eq!(t.endpoint.as_ref(), Some(&endpoint), "task {}", t.id());
        let nets: Vec<&str> = t
            .networks
            .iter()
            .filter_map(|a| a.network.as_ref().map(|n| n.id()))
            .collect();
        assert_eq!(nets, vec![mynet.id(), ingress.id()]);
        assert_eq!(t.networks[0].aliases, vec!["web-alias".to_string()]);
        assert_eq!(
            t.networks[0].network.as_ref().and_then(|n| n.ipam.clone()),
            mynet.ipam,
            "a copy of the network"
        );
        for (a, n) in t.networks.iter().zip([&mynet, &ingress]) {
            assert_eq!(a.addresses.len(), 1);
            let ip = address_of(&a.addresses[0]).unwrap_or(Ipv4Addr::UNSPECIFIED);
            assert!(
                subnet(n).contains(ip),
                "{} in {}",
                a.addresses[0],
                subnet(n)
            );
            assert!(seen.insert(ip), "{ip} handed out twice");
        }
    }
    assert!(
        vips.iter().all(|(_, ip)| !seen.contains(ip)),
        "VIPs are not task addresses"
    );

    // A second service gets other VIPs and another dynamic port.
    let api = c
        .store
        .create(service("api", 1, &[&mynet], vec![ingress_port(9000, 0)]))
        .await?;
    let api = c
        .wait_service("api's endpoint", api.id(), |s| s.endpoint.is_some())
        .await?;
    let api_ep = api.endpoint.clone().unwrap_or_default();
    assert_ne!(api_ep.ports[0].published_port, published[1]);
    assert!((30000..=32767).contains(&api_ep.ports[0].published_port));
    c.wait_tasks("api's task", api.id(), |ts| ts.len() == 1)
        .await?;
    assert_unique(&held_addresses(&c.store).await?, "two services");
    Ok(())
}

#[tokio::test]
async fn the_leader_refuses_a_taken_port_and_frees_what_a_removed_service_held()
-> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let _ingress = c.network("ingress", None, true).await?;
    let _m = c.manager("m1").await?;
    let web = c
        .store
        .create(service("web", 1, &[], vec![ingress_port(80, 8080)]))
        .await?;
    c.wait_tasks("web's task", web.id(), |ts| ts.len() == 1)
        .await?;
    // Written behind the Control API's back: the allocator is the final word.
    let other = c
        .store
        .create(service("other", 2, &[], vec![ingress_port(81, 8080)]))
        .await?;
    let marker = c.store.create(service("marker", 1, &[], vec![])).await?;
    c.wait_tasks("marker's task", marker.id(), |ts| ts.len() == 1)
        .await?;
    c.wait_service("marker's endpoint", marker.id(), |s| s.endpoint.is_some())
        .await?;
    let other_now = c.store.get::<Service>(other.id()).await?;
    assert!(
        other_now.endpoint.is_none(),
        "no endpoint with a taken port"
    );
    assert!(c.tasks(other.id()).await?.is_empty(), "and no tasks");

    // Once web is gone its port is free: other gets it and its tasks.
    c.store.delete::<Service>(web.id(), None).await?;
    c.wait_tasks("web's task removed", web.id(), |ts| ts.is_empty())
        .await?;
    let other_now = c
        .wait_service("other's endpoint", other.id(), |s| s.endpoint.is_some())
        .await?;
    assert_eq!(
        other_now.endpoint.map(|e| e.ports[0].published_port),
        Some(8080)
    );
    c.wait_tasks("other's tasks", other.id(), |ts| ts.len() == 2)
        .await?;
    Ok(())
}

#[tokio::test]
async fn publish_add_attaches_live_tasks_in_place() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let ingress = c.network("ingress", None, true).await?;
    let mynet = c.network("mynet", None, false).await?;
    let node = c.add_node("n1").await?;
    let _m = c.manager("m1").await?;
    let web = c.store.create(service("web", 2, &[&mynet], vec![])).await?;
    let tasks = c
        .wait_tasks("2 tasks", web.id(), |ts| ts.len() == 2)
        .await?;
    for t in &tasks {
        assert_eq!(t.networks.len(), 1, "mynet only");
        c.set_task(t.id(), Some(node.id()), TaskState::Running)
            .await?;
    }
    let before: BTreeMap<String, String> = tasks
        .iter()
        .map(|t| (t.id().to_string(), t.networks[0].addresses[0].clone()))
        .collect();
    let web_before = c.store.get::<Service>(web.id()).await?;
    assert_eq!(
        web_before.endpoint.as_ref().map(|e| e.virtual_ips.len()),
        Some(1)
    );

    // `service update --publish-add 8080:80`: the endpoint spec changes, the task spec
    // does not.
    c.update_service(web.id(), |s| {
        if let Some(spec) = s.spec.as_mut() {
            spec.endpoint = Some(EndpointSpec {
                mode: ResolutionMode::Vip as i32,
                ports: vec![ingress_port(80, 8080)],
            });
        }
    })
    .await?;
    let web_now = c
        .wait_service("the ingress VIP", web.id(), |s| {
            s.endpoint
                .as_ref()
                .is_some_and(|e| e.virtual_ips.len() == 2)
        })
        .await?;
    let endpoint = web_now.endpoint.clone().unwrap_or_default();
    assert_eq!(
        endpoint.virtual_ips[0],
        web_before.endpoint.clone().unwrap_or_default().virtual_ips[0],
        "the mynet VIP is kept"
    );
    let tasks = c
        .wait_tasks("tasks attached to ingress", web.id(), |ts| {
            ts.iter().all(|t| t.networks.len() == 2)
        })
        .await?;
    let after: BTreeMap<String, String> = tasks
        .iter()
        .map(|t| (t.id().to_string(), t.networks[0].addresses[0].clone()))
        .collect();
    assert_eq!(before, after, "the same tasks, with their mynet addresses");
    for t in &tasks {
        assert!(wanted(t), "task {} is not replaced", t.id());
        assert_eq!(
            t.status.as_ref().map(|s| s.state),
            Some(TaskState::Running as i32)
        );
        assert_eq!(
            t.networks[1].network.as_ref().map(|n| n.id()),
            Some(ingress.id())
        );
        let ip = address_of(&t.networks[1].addresses[0]).unwrap_or(Ipv4Addr::UNSPECIFIED);
        assert!(subnet(&ingress).contains(ip));
        assert_eq!(t.endpoint.as_ref(), Some(&endpoint));
    }
    assert_unique(&held_addresses(&c.store).await?, "after publish-add");

    // --publish-rm: the ingress VIP goes, the tasks stay and leave ingress.
    c.update_service(web.id(), |s| {
        if let Some(spec) = s.spec.as_mut() {
            spec.endpoint = None;
        }
    })
    .await?;
    c.wait_tasks("tasks off ingress", web.id(), |ts| {
        ts.iter().all(|t| t.networks.len() == 1 && wanted(t))
    })
    .await?;
    let web_now = c.store.get::<Service>(web.id()).await?;
    assert_eq!(
        web_now.endpoint.map(|e| e.virtual_ips.len()),
        Some(1),
        "mynet only"
    );
    Ok(())
}

#[tokio::test]
async fn a_new_leader_keeps_every_allocation() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let _ingress = c.network("ingress", None, true).await?;
    let mynet = c.network("mynet", Some("10.60.0.0/28"), false).await?;
    let m1 = c.manager("m1").await?;
    let web = c
        .store
        .create(service("web", 4, &[&mynet], vec![ingress_port(80, 0)]))
        .await?;
    let tasks = c
        .wait_tasks("4 tasks", web.id(), |ts| ts.len() == 4)
        .await?;
    let web_before = c
        .wait_service("web's endpoint", web.id(), |s| s.endpoint.is_some())
        .await?;

    // m1 steps down; m2 leads from what the store holds.
    let _m2 = c.manager("m2").await?;
    m1.candidacy.cancel();
    wait_for("m2 to lead", DEADLINE, || async {
        let leader = c.store.leader(leadership::ELECTION).await.ok()??;
        (leader.candidate_id == "m2").then_some(())
    })
    .await?;
    c.scale(web.id(), 8).await?;
    let api = c
        .store
        .create(service("api", 2, &[&mynet], vec![ingress_port(81, 0)]))
        .await?;
    let all = c
        .wait_tasks("8 web tasks", web.id(), |ts| ts.len() == 8)
        .await?;
    c.wait_tasks("2 api tasks", api.id(), |ts| ts.len() == 2)
        .await?;
    let web_after = c.store.get::<Service>(web.id()).await?;
    assert_eq!(
        web_after.endpoint, web_before.endpoint,
        "the endpoint is kept"
    );
    for t in &tasks {
        let same = all.iter().find(|a| a.id() == t.id());
        assert_eq!(same.map(|a| &a.networks), Some(&t.networks), "kept");
    }
    let api = c
        .wait_service("api's endpoint", api.id(), |s| s.endpoint.is_some())
        .await?;
    assert_ne!(
        api.endpoint.map(|e| e.ports[0].published_port),
        web_after.endpoint.map(|e| e.ports[0].published_port),
        "dynamic ports are not handed out twice"
    );
    // 10.60.0.0/28: 13 addresses; 2 VIPs + 10 tasks fit, none twice.
    assert_unique(&held_addresses(&c.store).await?, "after the leader change");
    Ok(())
}

#[tokio::test]
async fn process_services_live_on_the_loopback_subnet() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let _ingress = c.network("ingress", None, true).await?;
    let mynet = c.network("mynet", None, false).await?;
    let _m = c.manager("m1").await?;
    let mut svc = service("proc", 2, &[&mynet], vec![]);
    if let Some(t) = svc.spec.as_mut().and_then(|s| s.task.as_mut()) {
        t.runtime = Some(task_spec::Runtime::Process(ProcessSpec {
            command: vec!["sleep".into(), "3600".into()],
            ..Default::default()
        }));
    }
    let proc_ = c.store.create(svc).await?;
    let tasks = c
        .wait_tasks("2 tasks", proc_.id(), |ts| ts.len() == 2)
        .await?;
    let lo = loopback(&mynet);
    assert!(
        lo.to_string().starts_with("127.128."),
        "loopback subnet {lo}"
    );
    let proc_ = c.store.get::<Service>(proc_.id()).await?;
    let vip = proc_
        .endpoint
        .as_ref()
        .and_then(|e| e.virtual_ips.first())
        .and_then(|v| address_of(&v.addr))
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    assert!(lo.contains(vip), "VIP {vip} in {lo}");
    for t in &tasks {
        let ip = address_of(&t.networks[0].addresses[0]).unwrap_or(Ipv4Addr::UNSPECIFIED);
        assert!(lo.contains(ip), "task address {ip} in {lo}");
        assert_ne!(ip, vip);
    }
    Ok(())
}

#[tokio::test]
async fn create_scale_rm_churn_never_hands_out_an_address_twice() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    let _ingress = c.network("ingress", None, true).await?;
    // 29 usable addresses: churn has to reuse them.
    let small = c.network("small", Some("10.70.0.0/27"), false).await?;
    let _m = c.manager("m1").await?;

    let mut rng: u64 = 0x5eed;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // name -> (id, replicas)
    let mut services: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut serial = 0u32;
    let mut distinct_seen: BTreeSet<Ipv4Addr> = BTreeSet::new();
    for step in 0..200 {
        let roll = next() % 10;
        let what = if services.len() < 2 && (services.is_empty() || roll < 4) {
            serial += 1;
            let name = format!("s{serial}");
            let replicas = 1 + next() % 8;
            let s = c
                .store
                .create(service(&name, replicas, &[&small], vec![]))
                .await?;
            services.insert(name.clone(), (s.id().to_string(), replicas));
            format!("create {name} x{replicas}")
        } else if roll < 7 {
            let keys: Vec<String> = services.keys().cloned().collect();
            let name = keys[(next() % keys.len() as u64) as usize].clone();
            let replicas = next() % 9;
            if let Some(entry) = services.get_mut(&name) {
                c.scale(&entry.0, replicas).await?;
                entry.1 = replicas;
            }
            format!("scale {name} x{replicas}")
        } else {
            let keys: Vec<String> = services.keys().cloned().collect();
            let name = keys[(next() % keys.len() as u64) as usize].clone();
            if let Some((id, _)) = services.remove(&name) {
                c.store.delete::<Service>(&id, None).await?;
            }
            format!("rm {name}")
        };
        // Converged: every service has its replicas, removed ones no task left.
        let expected: Vec<(String, u64)> = services.values().cloned().collect();
        wait_for(
            &format!("step {step} ({what}) to converge"),
            DEADLINE,
            || async {
                let tasks = c.store.list::<Task>().await.ok()?.objects;
                let mut count: HashMap<&str, u64> = HashMap::new();
                for t in &tasks {
                    *count.entry(t.service_id.as_str()).or_default() += 1;
                }
                let ok = expected
                    .iter()
                    .all(|(id, n)| count.get(id.as_str()).copied().unwrap_or(0) == *n)
                    && count.len() == expected.iter().filter(|(_, n)| *n > 0).count();
                ok.then_some(())
            },
        )
        .await?;
        let held = held_addresses(&c.store).await?;
        assert_unique(&held, &format!("step {step} ({what})"));
        for ((net, ip), who) in &held {
            if net == small.id() {
                assert!(subnet(&small).contains(*ip), "{who}: {ip}");
                distinct_seen.insert(*ip);
            }
        }
    }
    assert!(
        distinct_seen.len() >= 20,
        "the churn went round the subnet: {} distinct addresses",
        distinct_seen.len()
    );
    Ok(())
}
