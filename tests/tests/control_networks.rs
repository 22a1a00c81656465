//! `docker network create/ls/inspect/rm` semantics through the Control API of real
//! manager processes on real etcd and NATS: IPAM from the swarm's default pools, a
//! requested subnet refused when it overlaps, Swarm's refusals for networks in use, the
//! ingress network `swarm init` creates, services naming networks, and concurrent
//! creates on two managers never sharing a subnet.

use std::collections::HashMap;

use shoal_proto::v1::control_client::ControlClient;
use shoal_proto::v1::{
    Annotations, ClusterSpec, CreateNetworkRequest, CreateServiceRequest, Driver,
    GetNetworkRequest, InitClusterRequest, IpamConfig, IpamDefaults, IpamOptions, ListFilters,
    ListNetworksRequest, Network, NetworkSpec, PortConfig, RemoveNetworkRequest,
    RemoveServiceRequest, Service, ServiceSpec, UpdateNetworkRequest, UpdateServiceRequest,
    Version, port_config,
};
use shoal_scenarios::{MANAGER_NAME, Swarm, init_swarm, service_names, start_manager};
use shoal_store::Object;
use shoal_testkit::Infra;
use tonic::transport::Channel;
use tonic::{Code, Status};

type Control = ControlClient<Channel>;

fn net_spec(name: &str) -> NetworkSpec {
    NetworkSpec {
        annotations: Some(Annotations {
            name: name.into(),
            labels: HashMap::new(),
        }),
        ..Default::default()
    }
}

fn with_subnet(name: &str, subnet: &str, gateway: &str) -> NetworkSpec {
    NetworkSpec {
        ipam: Some(IpamOptions {
            driver: None,
            configs: vec![IpamConfig {
                subnet: subnet.into(),
                gateway: gateway.into(),
                ..Default::default()
            }],
        }),
        ..net_spec(name)
    }
}

async fn create_net(control: &mut Control, spec: NetworkSpec) -> Result<Network, Status> {
    control
        .create_network(CreateNetworkRequest { spec: Some(spec) })
        .await?
        .into_inner()
        .network
        .ok_or_else(|| Status::internal("no network in the answer"))
}

async fn get_net(control: &mut Control, reference: &str) -> Result<Network, Status> {
    control
        .get_network(GetNetworkRequest {
            network_id: reference.into(),
        })
        .await?
        .into_inner()
        .network
        .ok_or_else(|| Status::internal("no network in the answer"))
}

async fn remove_net(control: &mut Control, reference: &str) -> Result<(), Status> {
    control
        .remove_network(RemoveNetworkRequest {
            network_id: reference.into(),
        })
        .await?;
    Ok(())
}

async fn list_nets(control: &mut Control, filters: ListFilters) -> anyhow::Result<Vec<Network>> {
    Ok(control
        .list_networks(ListNetworksRequest {
            filters: Some(filters),
        })
        .await?
        .into_inner()
        .networks)
}

fn name(n: &Network) -> &str {
    n.spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map(|a| a.name.as_str())
        .unwrap_or("")
}

/// (subnet, gateway) as allocated.
fn ipam(n: &Network) -> (String, String) {
    n.ipam
        .as_ref()
        .and_then(|i| i.configs.first())
        .map(|c| (c.subnet.clone(), c.gateway.clone()))
        .unwrap_or_default()
}

fn service_spec(name: &str, networks: &[&str], ingress_port: Option<u32>) -> ServiceSpec {
    let ports = ingress_port
        .map(|published| PortConfig {
            target_port: 80,
            published_port: published,
            publish_mode: port_config::PublishMode::Ingress as i32,
            ..Default::default()
        })
        .into_iter()
        .collect();
    shoal_scenarios::container_service(name, networks, ports)
}

async fn create_service(control: &mut Control, spec: ServiceSpec) -> Result<Service, Status> {
    control
        .create_service(CreateServiceRequest { spec: Some(spec) })
        .await?
        .into_inner()
        .service
        .ok_or_else(|| Status::internal("no service in the answer"))
}

async fn remove_service(control: &mut Control, id: &str) -> anyhow::Result<()> {
    control
        .remove_service(RemoveServiceRequest {
            service_id: id.into(),
        })
        .await?;
    Ok(())
}

fn targets(service: &Service) -> Vec<String> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.task.as_ref())
        .map(|t| t.networks.iter().map(|n| n.target.clone()).collect())
        .unwrap_or_default()
}

fn overlap(a: &str, b: &str) -> bool {
    let parse = |s: &str| -> (u32, u32) {
        let (ip, len) = s.split_once('/').expect("a CIDR");
        let ip: std::net::Ipv4Addr = ip.parse().expect("an address");
        let len: u32 = len.parse().expect("a length");
        (u32::from(ip), len)
    };
    let ((a, alen), (b, blen)) = (parse(a), parse(b));
    let len = alen.min(blen);
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    a & mask == b & mask
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networks_get_subnets_from_the_pool_and_swarms_rules() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let swarm = Swarm::start(&infra, "").await?;
    let mut control = swarm.manager.control(&swarm.admin).await?;

    // `swarm init` made the routing mesh's network: the pool's first subnet.
    let all = list_nets(&mut control, ListFilters::default()).await?;
    assert_eq!(all.len(), 1, "{all:?}");
    let ingress = &all[0];
    assert_eq!(name(ingress), "ingress");
    assert!(ingress.spec.as_ref().is_some_and(|s| s.ingress));
    assert_eq!(
        ipam(ingress),
        ("10.0.0.0/24".to_string(), "10.0.0.1".to_string())
    );

    // Without --subnet: the next free /24, the overlay driver, what was asked kept.
    let mut spec = net_spec("mynet");
    spec.attachable = true;
    spec.internal = true;
    if let Some(a) = spec.annotations.as_mut() {
        a.labels.insert("env".into(), "prod".into());
    }
    let mynet = create_net(&mut control, spec).await?;
    assert_eq!(mynet.id().len(), 25);
    assert_eq!(
        ipam(&mynet),
        ("10.0.1.0/24".to_string(), "10.0.1.1".to_string())
    );
    let stored_spec = mynet.spec.clone().unwrap_or_default();
    assert_eq!(
        stored_spec.driver_config.map(|d| d.name).as_deref(),
        Some("overlay")
    );
    assert!(stored_spec.attachable && stored_spec.internal && !stored_spec.ingress);
    assert_eq!(
        stored_spec
            .annotations
            .and_then(|a| a.labels.get("env").cloned())
            .as_deref(),
        Some("prod")
    );

    // With --subnet and --gateway: as asked.
    let backend = create_net(
        &mut control,
        with_subnet("backend", "172.28.0.0/16", "172.28.5.254"),
    )
    .await?;
    assert_eq!(
        ipam(&backend),
        ("172.28.0.0/16".to_string(), "172.28.5.254".to_string())
    );

    // Refusals, and nothing stored for any of them.
    let err = create_net(&mut control, with_subnet("clash", "10.0.1.128/25", ""))
        .await
        .expect_err("overlaps mynet");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("mynet") && err.message().contains(mynet.id()),
        "{}",
        err.message()
    );
    let err = create_net(&mut control, with_subnet("wide", "10.0.0.0/8", ""))
        .await
        .expect_err("overlaps everything");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = create_net(&mut control, with_subnet("gw", "10.50.0.0/24", "10.51.0.1"))
        .await
        .expect_err("gateway outside");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("does not contain gateway 10.51.0.1"));
    let err = create_net(&mut control, with_subnet("bad", "10.50.0.0/33", ""))
        .await
        .expect_err("no CIDR");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = create_net(&mut control, net_spec("mynet"))
        .await
        .expect_err("taken name");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(err.message(), "network with name mynet already exists");
    let mut bridge = net_spec("br");
    bridge.driver_config = Some(Driver {
        name: "bridge".into(),
        ..Default::default()
    });
    let err = create_net(&mut control, bridge).await.expect_err("bridge");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("bridge"), "{}", err.message());
    let err = create_net(&mut control, net_spec("-x"))
        .await
        .expect_err("name");
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut second_ingress = net_spec("ingress2");
    second_ingress.ingress = true;
    let err = create_net(&mut control, second_ingress)
        .await
        .expect_err("one ingress");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(
        err.message(),
        format!("ingress network ({}) is already present", ingress.id())
    );
    let names: Vec<String> = list_nets(&mut control, ListFilters::default())
        .await?
        .iter()
        .map(|n| name(n).to_string())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");

    // inspect by id, name and unique id prefix; ls by name and label.
    for reference in [mynet.id(), "mynet", &mynet.id()[..8]] {
        assert_eq!(get_net(&mut control, reference).await?.id(), mynet.id());
    }
    let err = get_net(&mut control, "nope").await.expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound);
    let by_name = list_nets(
        &mut control,
        ListFilters {
            names: vec!["backend".into()],
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(by_name.len(), 1);
    assert_eq!(by_name[0].id(), backend.id());
    let by_label = list_nets(
        &mut control,
        ListFilters {
            labels: [("env".to_string(), String::new())].into(),
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(by_label.len(), 1);
    assert_eq!(by_label[0].id(), mynet.id());

    // Update: labels only.
    let mut relabelled = mynet.spec.clone().unwrap_or_default();
    if let Some(a) = relabelled.annotations.as_mut() {
        a.labels.insert("tier".into(), "front".into());
    }
    let updated = control
        .update_network(UpdateNetworkRequest {
            network_id: "mynet".into(),
            network_version: Some(Version {
                index: mynet.version(),
            }),
            spec: Some(relabelled.clone()),
        })
        .await?
        .into_inner()
        .network
        .expect("updated network");
    assert!(updated.version() > mynet.version());
    assert_eq!(ipam(&updated), ipam(&mynet), "IPAM untouched");
    relabelled.internal = false;
    let err = control
        .update_network(UpdateNetworkRequest {
            network_id: "mynet".into(),
            network_version: Some(Version {
                index: updated.version(),
            }),
            spec: Some(relabelled),
        })
        .await
        .expect_err("not a label");
    assert_eq!(err.code(), Code::Unimplemented);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networks_in_use_stay_and_removal_frees_the_subnet() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let swarm = Swarm::start(&infra, "").await?;
    let mut control = swarm.manager.control(&swarm.admin).await?;
    let mynet = create_net(&mut control, net_spec("mynet")).await?;
    let ingress = get_net(&mut control, "ingress").await?;

    // A service names the network; the manager stores its id.
    let web = create_service(&mut control, service_spec("web", &["mynet"], Some(8080))).await?;
    assert_eq!(targets(&web), vec![mynet.id().to_string()]);
    let api = create_service(&mut control, service_spec("api", &[&mynet.id()[..6]], None)).await?;
    assert_eq!(targets(&api), vec![mynet.id().to_string()], "by id prefix");

    // Unknown and ingress networks are refused and nothing is stored.
    let err = create_service(&mut control, service_spec("lost", &["nope"], None))
        .await
        .expect_err("unknown network");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "network nope not found");
    let err = create_service(&mut control, service_spec("mesh", &["ingress"], None))
        .await
        .expect_err("ingress attached explicitly");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "Service cannot be explicitly attached to the ingress network \"ingress\""
    );
    let stored = service_names(&mut control).await?;
    assert_eq!(stored.len(), 2, "only web and api: {stored:?}");

    // An update naming an unknown network is refused too; naming it by name stores the id.
    let mut spec = api.spec.clone().unwrap_or_default();
    if let Some(t) = spec.task.as_mut() {
        t.networks[0].target = "nope".into();
    }
    let err = control
        .update_service(UpdateServiceRequest {
            service_id: api.id().into(),
            service_version: Some(Version {
                index: api.version(),
            }),
            spec: Some(spec.clone()),
            rollback: 0,
        })
        .await
        .expect_err("unknown network");
    assert_eq!(err.message(), "network nope not found");

    // In use: Swarm's refusals.
    let err = remove_net(&mut control, "mynet").await.expect_err("in use");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message() == format!("network {} is in use by service {}", mynet.id(), web.id())
            || err.message() == format!("network {} is in use by service {}", mynet.id(), api.id()),
        "{}",
        err.message()
    );
    let err = remove_net(&mut control, "ingress")
        .await
        .expect_err("web publishes a port");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        format!(
            "ingress network cannot be removed because service {} depends on it",
            web.id()
        )
    );

    // Free once the services are gone; its subnet is handed out again.
    remove_service(&mut control, web.id()).await?;
    remove_service(&mut control, api.id()).await?;
    remove_net(&mut control, "mynet").await?;
    let err = get_net(&mut control, mynet.id()).await.expect_err("gone");
    assert_eq!(err.code(), Code::NotFound);
    let again = create_net(&mut control, net_spec("again")).await?;
    assert_eq!(ipam(&again), ipam(&mynet), "the freed subnet is reused");
    assert_ne!(again.id(), mynet.id());

    // Without ingress ports in use the ingress network may go; then a service that
    // publishes one is refused until an ingress network exists again.
    remove_net(&mut control, ingress.id()).await?;
    let err = create_service(&mut control, service_spec("web2", &[], Some(8080)))
        .await
        .expect_err("no routing mesh");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        "service needs ingress network, but no ingress network is present"
    );
    let mut mesh = net_spec("mesh");
    mesh.ingress = true;
    let mesh = create_net(&mut control, mesh).await?;
    assert_eq!(
        ipam(&mesh).0,
        "10.0.0.0/24",
        "the old ingress subnet is free again"
    );
    create_service(&mut control, service_spec("web2", &[], Some(8080))).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_on_two_managers_never_share_a_subnet() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let swarm = Swarm::start(&infra, "").await?;
    let second = start_manager(&infra, "").await?;
    second.wait_serving(&swarm.admin, MANAGER_NAME).await?;
    let a = swarm.manager.control(&swarm.admin).await?;
    let b = second.control(&swarm.admin).await?;

    // 16 creates at once, half through each manager; some ask for a subnet that
    // overlaps what the pool hands out.
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..16 {
        let mut control = if i % 2 == 0 { a.clone() } else { b.clone() };
        let spec = match i {
            3 => with_subnet("net-3", "10.0.2.0/23", ""),
            7 => with_subnet("net-7", "10.0.3.0/24", ""),
            _ => net_spec(&format!("net-{i}")),
        };
        creates.spawn(async move { create_net(&mut control, spec).await });
    }
    let mut created = Vec::new();
    let mut refused = Vec::new();
    while let Some(result) = creates.join_next().await {
        match result? {
            Ok(n) => created.push(n),
            Err(e) => refused.push(e),
        }
    }
    // At most one of the two overlapping requests can win, and only if the pool has
    // not handed their space out first; every refusal is an overlap.
    for e in &refused {
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("overlaps"), "{}", e.message());
    }
    assert!(created.len() >= 14, "{} created", created.len());

    let mut control = a.clone();
    let all = list_nets(&mut control, ListFilters::default()).await?;
    assert_eq!(all.len(), created.len() + 1, "the created ones and ingress");
    for (i, x) in all.iter().enumerate() {
        for y in &all[i + 1..] {
            let (sx, sy) = (ipam(x).0, ipam(y).0);
            assert!(
                !overlap(&sx, &sy),
                "{} {sx} and {} {sy} overlap",
                name(x),
                name(y)
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_takes_the_default_address_pool_and_checks_it() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let manager = start_manager(&infra, "").await?;
    let init_with = |pools: &[&str], size: u32| InitClusterRequest {
        spec: Some(ClusterSpec {
            ipam: Some(IpamDefaults {
                default_address_pool: pools.iter().map(|p| p.to_string()).collect(),
                subnet_size: size,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };

    // Docker's bounds: a valid CIDR, a mask length from the pool's own up to 29.
    for (pools, size, want) in [
        (&["10.20.0.0/33"][..], 24, "invalid base pool"),
        (&["10.20.0.0/16"][..], 30, "subnet size is out of range: 30"),
        (
            &["10.20.0.0/16"][..],
            12,
            "Subnet size is too small for pool: 12",
        ),
    ] {
        let err = init_swarm(&manager, init_with(pools, size))
            .await
            .expect_err(want);
        let status = err
            .downcast_ref::<Status>()
            .ok_or_else(|| anyhow::anyhow!("not a status: {err:#}"))?;
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(want), "{}", status.message());
    }

    let (_, admin) = init_swarm(&manager, init_with(&["10.20.0.0/16"], 26)).await?;
    manager.wait_serving(&admin, MANAGER_NAME).await?;
    let mut control = manager.control(&admin).await?;
    let ingress = get_net(&mut control, "ingress").await?;
    assert_eq!(
        ipam(&ingress),
        ("10.20.0.0/26".to_string(), "10.20.0.1".to_string())
    );
    let next = create_net(&mut control, net_spec("next")).await?;
    assert_eq!(
        ipam(&next),
        ("10.20.0.64/26".to_string(), "10.20.0.65".to_string())
    );
    Ok(())
}
