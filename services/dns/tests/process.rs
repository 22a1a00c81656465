//! The shipped binary: `shoal-dns --config` answers DNS for the cluster and forwards the
//! rest upstream, serves the Resolver API once the swarm exists, and exits cleanly on
//! SIGTERM.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use shoal_pki::Role;
use shoal_proto::v1::TaskState;
use shoal_proto::v1::endpoint_spec::ResolutionMode;
use shoal_testkit::{Process, binary, free_port, wait_for};

#[tokio::test]
async fn the_binary_answers_dns_and_the_resolver_api() -> anyhow::Result<()> {
    let swarm = Swarm::start().await?;
    let upstream = Upstream::start().await?;
    let front = swarm.network("front", 1, false).await?;
    let web = swarm
        .service("web", ResolutionMode::Vip, &[&front], 2)
        .await?;
    swarm
        .task(&web, 1, TaskState::Running, &[(&front, 10)])
        .await?;

    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let grpc = SocketAddr::new(localhost, free_port(localhost)?);
    let dns = SocketAddr::new(localhost, free_port(localhost)?);
    let dir = swarm.infra.dir.path();
    let config = dir.join("dns.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{grpc}\"\netcd_endpoints = [\"{}\"]\nstore_prefix = \"{STORE_PREFIX}\"\n\
             nats_url = \"{}\"\nkek_file = \"{}\"\ndns_listen = \"{dns}\"\n\
             upstream = [\"{}\"]\nlog_filter = \"info\"\n",
            swarm.infra.etcd.endpoint(),
            swarm.infra.nats.url(),
            swarm.kek_file.display(),
            upstream.addr,
        ),
    )?;
    let log = dir.join("dns.log");
    let mut process = Process::spawn(
        &binary("shoal-dns")?,
        &["--config".to_string(), config.display().to_string()],
        &[],
        &log,
    )?;

    wait_answer(dns, "web", Ask::default(), &[front.addr(2)], DEADLINE)
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nshoal-dns log:\n{}", process.log_tail(40)))?;
    let a = query(dns, OUTSIDE_NAME, RecordType::A, Ask::default()).await?;
    assert_eq!(a.code, ResponseCode::NoError);
    let a = query(
        dns,
        "nope",
        RecordType::A,
        Ask {
            tcp: true,
            ..Ask::default()
        },
    )
    .await?;
    assert_eq!(a.code, ResponseCode::NXDomain);

    let creds = swarm.credentials(Role::Worker, &swarm.cluster_id)?;
    let client = swarm.resolver_ready(grpc, &creds).await?;
    let r = wait_for("web over the Resolver API", DEADLINE, || {
        let mut client = client.clone();
        async move {
            client
                .resolve(shoal_proto::v1::ResolveRequest {
                    target: Some(shoal_proto::v1::resolve_request::Target::Name("web".into())),
                    network: String::new(),
                })
                .await
                .ok()
        }
    })
    .await?
    .into_inner();
    assert_eq!(r.vip, "127.128.1.2");

    process.signal_term()?;
    let status = process.wait_exit(Duration::from_secs(10)).await?;
    assert!(status.success(), "{status:?}\n{}", process.log_tail(40));
    // hickory-server's own line per query stays out of the log (shoal-dns's span per
    // query is at debug).
    let text = std::fs::read_to_string(&log)?;
    assert!(text.contains("serving DNS"), "{text}");
    assert!(!text.contains("request:"), "{text}");
    Ok(())
}

#[test]
fn print_config_shows_the_dns_keys() -> anyhow::Result<()> {
    let out = std::process::Command::new(binary("shoal-dns")?)
        .args(["--print-config", "--upstream", "10.0.0.53,10.0.0.54:5353"])
        .env("SHOAL_DNS_LISTEN", "127.0.0.1:5399")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("dns_listen = \"127.0.0.1:5399\""), "{text}");
    assert!(text.contains("10.0.0.54:5353"), "{text}");
    let bad = std::process::Command::new(binary("shoal-dns")?)
        .args(["--print-config", "--upstream", "not-an-address"])
        .output()?;
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("upstream"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    Ok(())
}
