//! The network allocator through real shoal processes: every network gets a loopback
//! subnet of its own next to its overlay subnet; a service's endpoint (VIPs, published
//! ports, auto-assigned from 30000–32767) is written by the leader; a published port
//! another service holds is refused with Swarm's words and changes nothing; process
//! tasks run with 127.128+ addresses; `--publish-add` on a live service attaches its
//! running tasks to the ingress network without restarting them.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::time::Duration;

use shoal_proto::v1::control_client::ControlClient;
use shoal_proto::v1::{
    Annotations, CreateNetworkRequest, CreateServiceRequest, EndpointSpec, GetServiceRequest,
    ListFilters, ListNetworksRequest, Network, NetworkSpec, PortConfig, ProcessSpec,
    ReplicatedService, Service, ServiceSpec, TaskState, UpdateServiceRequest, Version, port_config,
    service_spec, task_spec,
};
use shoal_scenarios::{
    Stack, StackOptions, Swarm, container_service as spec, service_names, task_id, task_state,
};
use shoal_store::Object;
use shoal_testkit::{Infra, wait_for};
use tonic::Code;
use tonic::transport::Channel;

type Control = ControlClient<Channel>;

const DEADLINE: Duration = Duration::from_secs(30);
const LOOPBACK_OPTION: &str = "com.shoal.loopback.subnet";

fn port(target: u32, published: u32, mode: port_config::PublishMode) -> PortConfig {
    PortConfig {
        target_port: target,
        published_port: published,
        publish_mode: mode as i32,
        ..Default::default()
    }
}

fn ingress(target: u32, published: u32) -> PortConfig {
    port(target, published, port_config::PublishMode::Ingress)
}

async fn create_network(control: &mut Control, name: &str) -> anyhow::Result<Network> {
    control
        .create_network(CreateNetworkRequest {
            spec: Some(NetworkSpec {
                annotations: Some(Annotations {
                    name: name.into(),
                    labels: HashMap::new(),
                }),
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .network
        .ok_or_else(|| anyhow::anyhow!("no network in the answer"))
}

async fn networks(control: &mut Control) -> anyhow::Result<Vec<Network>> {
    Ok(control
        .list_networks(ListNetworksRequest {
            filters: Some(ListFilters::default()),
        })
        .await?
        .into_inner()
        .networks)
}

async fn create(control: &mut Control, spec: ServiceSpec) -> Result<Service, tonic::Status> {
    control
        .create_service(CreateServiceRequest { spec: Some(spec) })
        .await?
        .into_inner()
        .service
        .ok_or_else(|| tonic::Status::internal("no service in the answer"))
}

async fn get(control: &mut Control, id: &str) -> anyhow::Result<Service> {
    control
        .get_service(GetServiceRequest {
            service_id: id.into(),
            insert_defaults: false,
        })
        .await?
        .into_inner()
        .service
        .ok_or_else(|| anyhow::anyhow!("no service in the answer"))
}

async fn update(
    control: &mut Control,
    current: &Service,
    spec: ServiceSpec,
) -> Result<Service, tonic::Status> {
    control
        .update_service(UpdateServiceRequest {
            service_id: current.id().into(),
            service_version: Some(Version {
                index: current.version(),
            }),
            spec: Some(spec),
            rollback: 0,
        })
        .await?
        .into_inner()
        .service
        .ok_or_else(|| tonic::Status::internal("no service in the answer"))
}

/// The service once the leader wrote its endpoint.
async fn allocated(control: &Control, id: &str) -> anyhow::Result<Service> {
    wait_for(&format!("the endpoint of {id}"), DEADLINE, || async {
        let s = get(&mut control.clone(), id).await.ok()?;
        s.endpoint.is_some().then_some(s)
    })
    .await
}

fn loopback(n: &Network) -> String {
    n.driver_state
        .as_ref()
        .and_then(|d| d.options.get(LOOPBACK_OPTION).cloned())
        .unwrap_or_default()
}

fn name(n: &Network) -> &str {
    n.spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map(|a| a.name.as_str())
        .unwrap_or("")
}

/// `a.b.c.d/len` → (address, len)
fn cidr(s: &str) -> (Ipv4Addr, u8) {
    let (a, l) = s.split_once('/').unwrap_or((s, "32"));
    (
        a.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
        l.parse().unwrap_or(32),
    )
}

fn contains(subnet: &str, addr: &str) -> bool {
    let (base, len) = cidr(subnet);
    let (ip, _) = cidr(addr);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(ip) & mask == u32::from(base) & mask
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_allocated_and_taken_ports_refused_with_swarms_words() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let swarm = Swarm::start(&infra, "").await?;
    let mut control = swarm.manager.control(&swarm.admin).await?;

    // Loopback subnets: the ingress network's from `swarm init`, then one per network,
    // the overlay's size, never shared.
    let mynet = create_network(&mut control, "mynet").await?;
    let other = create_network(&mut control, "other").await?;
    let all = networks(&mut control).await?;
    let by_name: BTreeMap<&str, String> = all.iter().map(|n| (name(n), loopback(n))).collect();
    assert_eq!(
        by_name.get("ingress").map(String::as_str),
        Some("127.128.0.0/24")
    );
    assert_eq!(loopback(&mynet), "127.128.1.0/24");
    assert_eq!(loopback(&other), "127.128.2.0/24");

    // web publishes 8080 (ingress) and 443 without a number.
    let web = create(
        &mut control,
        spec("web", &["mynet"], vec![ingress(80, 8080), ingress(443, 0)]),
    )
    .await?;
    let web = allocated(&control, web.id()).await?;
    let endpoint = web.endpoint.clone().unwrap_or_default();
    assert_eq!(endpoint.ports[0].published_port, 8080);
    let auto = endpoint.ports[1].published_port;
    assert!((30000..=32767).contains(&auto), "auto-assigned: {auto}");
    let vips: Vec<(&str, &str)> = endpoint
        .virtual_ips
        .iter()
        .map(|v| (v.network_id.as_str(), v.addr.as_str()))
        .collect();
    let ingress_net = all
        .iter()
        .find(|n| name(n) == "ingress")
        .ok_or_else(|| anyhow::anyhow!("no ingress network"))?;
    assert_eq!(vips.len(), 2, "{vips:?}");
    assert_eq!(vips[0].0, mynet.id());
    assert_eq!(vips[1].0, ingress_net.id());
    let mynet_subnet = mynet
        .ipam
        .as_ref()
        .and_then(|i| i.configs.first())
        .map(|c| c.subnet.clone())
        .unwrap_or_default();
    assert!(
        contains(&mynet_subnet, vips[0].1),
        "{vips:?} in {mynet_subnet}"
    );

    // Another service asking for 8080 is refused, and nothing is stored.
    let want = format!(
        "port '8080' is already in use by service 'web' ({}) as an ingress port",
        web.id()
    );
    let err = create(
        &mut control,
        spec("api", &["other"], vec![ingress(81, 8080)]),
    )
    .await
    .expect_err("8080 is web's");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), want);
    assert_eq!(service_names(&mut control).await?, vec!["web"]);
    // The port web got automatically is web's too.
    let err = create(&mut control, spec("api", &[], vec![ingress(81, auto)]))
        .await
        .expect_err("the auto port is web's");
    assert_eq!(
        err.message(),
        format!(
            "port '{auto}' is already in use by service 'web' ({}) as an ingress port",
            web.id()
        )
    );

    // An update asking for it is refused the same way, and the service is unchanged.
    let api = create(&mut control, spec("api", &["other"], vec![])).await?;
    let api = allocated(&control, api.id()).await?;
    let err = update(
        &mut control,
        &api,
        spec("api", &["other"], vec![ingress(81, 8080)]),
    )
    .await
    .expect_err("8080 is web's");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), want);
    let api_now = get(&mut control, api.id()).await?;
    assert_eq!(api_now.version(), api.version(), "nothing changed");
    assert_eq!(api_now.spec, api.spec);

    // Host-mode ports are not the cluster's: two services may both publish 9090.
    let host = port_config::PublishMode::Host;
    create(&mut control, spec("h1", &[], vec![port(80, 9090, host)])).await?;
    create(&mut control, spec("h2", &[], vec![port(80, 9090, host)])).await?;

    // Once web publishes something else, 8080 is free for api.
    let web = get(&mut control, web.id()).await?;
    update(
        &mut control,
        &web,
        spec("web", &["mynet"], vec![ingress(80, 8081)]),
    )
    .await?;
    wait_for("web to publish 8081 instead", DEADLINE, || async {
        let s = get(&mut control.clone(), web.id()).await.ok()?;
        s.endpoint
            .as_ref()
            .is_some_and(|e| e.ports.first().is_some_and(|p| p.published_port == 8081))
            .then_some(())
    })
    .await?;
    let api = get(&mut control, api.id()).await?;
    update(
        &mut control,
        &api,
        spec("api", &["other"], vec![ingress(81, 8080)]),
    )
    .await?;
    let api = wait_for("api to hold 8080", DEADLINE, || async {
        let s = get(&mut control.clone(), api.id()).await.ok()?;
        s.endpoint
            .as_ref()
            .is_some_and(|e| e.ports.first().is_some_and(|p| p.published_port == 8080))
            .then_some(s)
    })
    .await?;
    assert_eq!(
        api.endpoint.map(|e| e.virtual_ips.len()),
        Some(2),
        "other + ingress"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_tasks_get_loopback_addresses_and_publish_add_keeps_them_running()
-> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let stack = Stack::start(
        &infra,
        StackOptions {
            workers: 2,
            worker_subnet: 61,
            ..StackOptions::default()
        },
    )
    .await?;
    let mut control = stack.control().await?;
    let mynet = create_network(&mut control, "mynet").await?;
    let lo = loopback(&mynet);
    assert!(lo.starts_with("127.128."), "{lo}");

    let mut web_spec = spec("web", &["mynet"], vec![]);
    if let Some(t) = web_spec.task.as_mut() {
        t.runtime = Some(task_spec::Runtime::Process(ProcessSpec {
            command: vec!["sleep".into(), "3600".into()],
            ..Default::default()
        }));
    }
    web_spec.mode = Some(service_spec::Mode::Replicated(ReplicatedService {
        replicas: 2,
    }));
    let web = create(&mut control, web_spec.clone()).await?;
    let running = wait_for("2 running tasks", DEADLINE, || async {
        let tasks = stack.tasks_of("web").await.ok()?;
        let running: Vec<_> = tasks
            .into_iter()
            .filter(|t| task_state(t) == TaskState::Running)
            .collect();
        (running.len() == 2).then_some(running)
    })
    .await?;
    let web = get(&mut control, web.id()).await?;
    let vip = web
        .endpoint
        .as_ref()
        .and_then(|e| e.virtual_ips.first())
        .map(|v| v.addr.clone())
        .unwrap_or_default();
    assert!(contains(&lo, &vip), "VIP {vip} in {lo}");
    let mut before: BTreeMap<String, (String, Option<prost_types::Timestamp>)> = BTreeMap::new();
    for t in &running {
        assert_eq!(t.networks.len(), 1);
        let addr = t.networks[0].addresses[0].clone();
        assert!(contains(&lo, &addr), "task address {addr} in {lo}");
        assert_ne!(addr, vip);
        before.insert(
            task_id(t),
            (addr, t.status.as_ref().and_then(|s| s.started_at)),
        );
    }
    assert_ne!(
        running[0].networks[0].addresses,
        running[1].networks[0].addresses
    );

    // `service update --publish-add 8080:80`: the running tasks join ingress in place.
    web_spec.endpoint = Some(EndpointSpec {
        ports: vec![ingress(80, 8080)],
        ..Default::default()
    });
    update(&mut control, &web, web_spec).await?;
    let ingress_net = networks(&mut control)
        .await?
        .into_iter()
        .find(|n| name(n) == "ingress")
        .ok_or_else(|| anyhow::anyhow!("no ingress network"))?;
    let ingress_lo = loopback(&ingress_net);
    let tasks = wait_for("the tasks attached to ingress", DEADLINE, || async {
        let tasks = stack.tasks_of("web").await.ok()?;
        tasks.iter().all(|t| t.networks.len() == 2).then_some(tasks)
    })
    .await?;
    assert_eq!(tasks.len(), 2, "no task was replaced");
    for t in &tasks {
        let (addr, started) = before.get(&task_id(t)).cloned().unwrap_or_default();
        assert_eq!(t.networks[0].addresses[0], addr, "kept its address");
        assert_eq!(task_state(t), TaskState::Running);
        assert_eq!(
            t.status.as_ref().and_then(|s| s.started_at),
            started,
            "not restarted"
        );
        let on_ingress = &t.networks[1].addresses[0];
        assert!(
            contains(&ingress_lo, on_ingress),
            "{on_ingress} in {ingress_lo}"
        );
    }
    let web = allocated(&control, web.id()).await?;
    let endpoint = web.endpoint.unwrap_or_default();
    assert_eq!(endpoint.ports[0].published_port, 8080);
    assert_eq!(endpoint.virtual_ips.len(), 2);
    assert!(contains(&ingress_lo, &endpoint.virtual_ips[1].addr));
    Ok(())
}
