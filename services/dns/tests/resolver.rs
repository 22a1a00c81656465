//! The Resolver gRPC API over mTLS: who may call it, Resolve by name and by VIP, Watch,
//! and WatchEndpoints (snapshot, then coalesced deltas).

mod common;

use std::time::{Duration, Instant};

use common::*;
use shoal_pki::Role;
use shoal_proto::v1::endpoint_spec::ResolutionMode;
use shoal_proto::v1::resolve_request::Target;
use shoal_proto::v1::{
    EndpointsUpdate, ResolveRequest, ResolveResponse, Service, TaskState, WatchEndpointsRequest,
};
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

fn by_name(name: &str, network: &str) -> ResolveRequest {
    ResolveRequest {
        target: Some(Target::Name(name.into())),
        network: network.into(),
    }
}

fn by_vip(vip: &str) -> ResolveRequest {
    ResolveRequest {
        target: Some(Target::Vip(vip.into())),
        network: String::new(),
    }
}

fn addrs(r: &ResolveResponse) -> Vec<String> {
    let mut a: Vec<String> = r.endpoints.iter().map(|e| e.addr.clone()).collect();
    a.sort();
    a
}

async fn next<T>(stream: &mut tonic::Streaming<T>, within: Duration) -> anyhow::Result<T> {
    tokio::time::timeout(within, stream.message())
        .await
        .map_err(|_| anyhow::anyhow!("no message within {within:?}"))??
        .ok_or_else(|| anyhow::anyhow!("the stream ended"))
}

#[tokio::test]
async fn any_certificate_of_the_swarm_may_resolve_and_nothing_else() -> anyhow::Result<()> {
    let swarm = Swarm::start().await?;
    let dns = swarm.start_dns(&[]).await?;
    let worker = swarm.credentials(Role::Worker, &swarm.cluster_id)?;
    swarm.resolver_ready(dns.grpc, &worker).await?;
    let front = swarm.network("front", 1, false).await?;
    let web = swarm
        .service("web", ResolutionMode::Vip, &[&front], 2)
        .await?;
    swarm
        .task(&web, 1, TaskState::Running, &[(&front, 10)])
        .await?;

    for role in [Role::Worker, Role::Manager, Role::Admin] {
        let creds = swarm.credentials(role, &swarm.cluster_id)?;
        let mut client = swarm.resolver(dns.grpc, &creds).await?;
        let r = shoal_testkit::wait_for("web to resolve", DEADLINE, || {
            let mut client = client.clone();
            async move { client.resolve(by_name("web", "")).await.ok() }
        })
        .await?
        .into_inner();
        assert_eq!(r.service_name, "web", "as {role}");
        let _ = client.resolve(by_vip("127.128.1.2")).await?;
    }

    // No client certificate: the handshake completes, the call does not.
    let channel = Endpoint::from_shared(format!("https://{}", dns.grpc))?
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(swarm.ca.cert_pem()))
                .domain_name(SERVER_NAME),
        )?
        .connect()
        .await?;
    let mut anonymous = shoal_proto::v1::resolver_client::ResolverClient::new(channel);
    let err = anonymous.resolve(by_name("web", "")).await.err();
    assert_eq!(err.map(|e| e.code()), Some(Code::Unauthenticated));
    let err = anonymous
        .watch_endpoints(WatchEndpointsRequest {})
        .await
        .err();
    assert_eq!(err.map(|e| e.code()), Some(Code::Unauthenticated));

    // Our CA, another swarm's id.
    let elsewhere = swarm.credentials(Role::Worker, &shoal_store::new_id())?;
    let mut client = swarm.resolver(dns.grpc, &elsewhere).await?;
    let err = client.resolve(by_name("web", "")).await.err();
    assert_eq!(err.map(|e| e.code()), Some(Code::PermissionDenied));
    dns.stop().await
}

#[tokio::test]
async fn resolve_and_watch_names_and_vips() -> anyhow::Result<()> {
    let swarm = Swarm::start().await?;
    let dns = swarm.start_dns(&[]).await?;
    let creds = swarm.credentials(Role::Worker, &swarm.cluster_id)?;
    let mut client = swarm.resolver_ready(dns.grpc, &creds).await?;
    let front = swarm.network("front", 1, false).await?;
    let back = swarm.network("back", 2, false).await?;
    let web = swarm
        .service("web", ResolutionMode::Vip, &[&front, &back], 2)
        .await?;
    let t1 = swarm
        .task(&web, 1, TaskState::Running, &[(&front, 10), (&back, 10)])
        .await?;
    swarm
        .task(&web, 2, TaskState::Running, &[(&front, 11), (&back, 11)])
        .await?;

    let r = shoal_testkit::wait_for("web's two tasks", DEADLINE, || {
        let mut client = client.clone();
        async move {
            let r = client.resolve(by_name("web", "")).await.ok()?.into_inner();
            (r.endpoints.len() == 2).then_some(r)
        }
    })
    .await?;
    assert_eq!(r.service_id, id_of(&web));
    assert_eq!(r.network_id, front.id);
    assert_eq!(r.vip, "127.128.1.2");
    assert_eq!(r.mode, ResolutionMode::Vip as i32);
    assert_eq!(r.ports.len(), 1);
    assert_eq!(addrs(&r), vec!["127.128.1.10", "127.128.1.11"]);
    assert!(
        r.endpoints
            .iter()
            .all(|e| e.healthy && e.network_id == front.id)
    );

    // By VIP: the service on that VIP's network.
    let r = client.resolve(by_vip("127.128.2.2")).await?.into_inner();
    assert_eq!(
        (r.service_name.as_str(), r.network_id.as_str()),
        ("web", back.id.as_str())
    );
    assert_eq!(addrs(&r), vec!["127.128.2.10", "127.128.2.11"]);
    // Scoped by network name or id, or by `<service>.<network>`.
    let r = client.resolve(by_name("web", "back")).await?.into_inner();
    assert_eq!(r.vip, "127.128.2.2");
    let r = client.resolve(by_name("web", &back.id)).await?.into_inner();
    assert_eq!(r.vip, "127.128.2.2");
    let r = client.resolve(by_name("web.back", "")).await?.into_inner();
    assert_eq!(r.vip, "127.128.2.2");
    // A task name: that task only.
    let r = client
        .resolve(by_name(&format!("web.1.{}", task_id(&t1)), "front"))
        .await?
        .into_inner();
    assert_eq!(addrs(&r), vec!["127.128.1.10"]);

    for (request, code) in [
        (by_name("nope", ""), Code::NotFound),
        (by_name("web", "nonet"), Code::NotFound),
        (by_vip("127.128.1.10"), Code::NotFound),
        (by_vip("not-an-ip"), Code::InvalidArgument),
        (ResolveRequest::default(), Code::InvalidArgument),
    ] {
        let err = client.resolve(request.clone()).await.err();
        assert_eq!(err.map(|e| e.code()), Some(code), "{request:?}");
    }

    // Watch: the full set, then a new full set on each change.
    let mut watch = client.watch(by_name("web", "front")).await?.into_inner();
    let first = next(&mut watch, DEADLINE).await?;
    assert_eq!(addrs(&first), vec!["127.128.1.10", "127.128.1.11"]);
    swarm
        .task(&web, 3, TaskState::Running, &[(&front, 12), (&back, 12)])
        .await?;
    let second = next(&mut watch, DEADLINE).await?;
    assert_eq!(
        addrs(&second),
        vec!["127.128.1.10", "127.128.1.11", "127.128.1.12"]
    );
    swarm.set_state(&t1, TaskState::Failed).await?;
    let started = Instant::now();
    let third = next(&mut watch, A_SECOND).await?;
    assert!(started.elapsed() < A_SECOND);
    assert_eq!(addrs(&third), vec!["127.128.1.11", "127.128.1.12"]);
    // The service goes: an empty answer.
    swarm.store.delete::<Service>(&id_of(&web), None).await?;
    let gone = next(&mut watch, DEADLINE).await?;
    assert_eq!(gone, ResolveResponse::default());
    dns.stop().await
}

fn service<'a>(
    u: &'a EndpointsUpdate,
    name: &str,
) -> Option<&'a shoal_proto::v1::ServiceEndpoints> {
    u.upserts.iter().find(|s| s.service_name == name)
}

#[tokio::test]
async fn watch_endpoints_sends_a_snapshot_then_deltas() -> anyhow::Result<()> {
    let swarm = Swarm::start().await?;
    let dns = swarm.start_dns(&[]).await?;
    let creds = swarm.credentials(Role::Worker, &swarm.cluster_id)?;
    let mut client = swarm.resolver_ready(dns.grpc, &creds).await?;
    let ingress = swarm.network("ingress", 3, true).await?;
    let front = swarm.network("front", 1, false).await?;
    let web = swarm
        .service("web", ResolutionMode::Vip, &[&front, &ingress], 2)
        .await?;
    let db = swarm
        .service("db", ResolutionMode::Dnsrr, &[&front], 0)
        .await?;
    let w1 = swarm
        .task(&web, 1, TaskState::Running, &[(&front, 10), (&ingress, 10)])
        .await?;
    swarm
        .task(&web, 2, TaskState::Running, &[(&front, 11), (&ingress, 11)])
        .await?;
    swarm
        .task(&web, 3, TaskState::Starting, &[(&front, 12)])
        .await?;
    swarm
        .task(&db, 1, TaskState::Running, &[(&front, 20)])
        .await?;

    // Wait until the table has everything, then watch.
    shoal_testkit::wait_for("the table to hold both services", DEADLINE, || {
        let mut client = client.clone();
        async move {
            let r = client.resolve(by_name("db", "")).await.ok()?.into_inner();
            let w = client.resolve(by_name("web", "")).await.ok()?.into_inner();
            (r.endpoints.len() == 1 && w.endpoints.len() == 2).then_some(())
        }
    })
    .await?;
    let mut stream = client
        .watch_endpoints(WatchEndpointsRequest {})
        .await?
        .into_inner();
    let snapshot = next(&mut stream, DEADLINE).await?;
    assert!(snapshot.snapshot);
    assert_eq!(snapshot.ingress_network_id, ingress.id);
    assert_eq!(snapshot.upserts.len(), 2);
    let w = service(&snapshot, "web").ok_or_else(|| anyhow::anyhow!("no web"))?;
    assert_eq!(w.service_id, id_of(&web));
    assert_eq!(w.virtual_ips.len(), 2);
    assert_eq!(w.ports.len(), 1);
    // One endpoint per RUNNING task per network; the STARTING task is left out.
    let mut eps: Vec<(String, String)> = w
        .endpoints
        .iter()
        .map(|e| (e.network_id.clone(), e.addr.clone()))
        .collect();
    eps.sort();
    let mut want = vec![
        (front.id.clone(), "127.128.1.10".to_string()),
        (front.id.clone(), "127.128.1.11".to_string()),
        (ingress.id.clone(), "127.128.3.10".to_string()),
        (ingress.id.clone(), "127.128.3.11".to_string()),
    ];
    want.sort();
    assert_eq!(eps, want);
    let d = service(&snapshot, "db").ok_or_else(|| anyhow::anyhow!("no db"))?;
    assert_eq!(d.mode, ResolutionMode::Dnsrr as i32);
    assert!(d.virtual_ips.is_empty());
    assert_eq!(d.endpoints.len(), 1);

    // A task leaves RUNNING: a delta with web only, within a second.
    swarm.set_state(&w1, TaskState::Failed).await?;
    let started = Instant::now();
    let delta = next(&mut stream, A_SECOND).await?;
    eprintln!("delta after {:?}", started.elapsed());
    assert!(!delta.snapshot);
    assert_eq!(delta.ingress_network_id, ingress.id);
    assert_eq!(delta.upserts.len(), 1);
    assert!(delta.removed_service_ids.is_empty());
    let w = service(&delta, "web").ok_or_else(|| anyhow::anyhow!("no web in {delta:?}"))?;
    assert!(w.endpoints.iter().all(|e| !e.addr.ends_with(".10")));
    assert_eq!(w.endpoints.len(), 2);

    // Several changes at once are coalesced into one delta.
    swarm
        .task(&db, 2, TaskState::Running, &[(&front, 21)])
        .await?;
    swarm
        .task(&db, 3, TaskState::Running, &[(&front, 22)])
        .await?;
    let mut seen = 0;
    let deadline = Instant::now() + DEADLINE;
    while seen < 3 && Instant::now() < deadline {
        let u = next(&mut stream, DEADLINE).await?;
        assert!(!u.snapshot);
        let d = service(&u, "db").ok_or_else(|| anyhow::anyhow!("no db in {u:?}"))?;
        seen = d.endpoints.len();
    }
    assert_eq!(seen, 3);

    // A service removed: its id in removed_service_ids.
    swarm.store.delete::<Service>(&id_of(&db), None).await?;
    let u = next(&mut stream, DEADLINE).await?;
    assert_eq!(u.removed_service_ids, vec![id_of(&db)]);
    assert!(u.upserts.is_empty());
    dns.stop().await
}
