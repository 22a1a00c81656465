//! The scenario harness: a real etcd and nats-server (from `shoal-testkit`) plus shoal's
//! own binaries as processes, configured the way `deploy/local/up.sh` configures them.
//! The scenarios themselves are the files in `tests/`, each one walk-through.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use shoal_proto::v1::control_client::ControlClient;
use shoal_testkit::{Infra, Process, binary, free_port, wait_for};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The five service binaries.
pub const SERVICES: [&str; 5] = [
    "shoal-manager",
    "shoal-scheduler",
    "shoal-dispatcher",
    "shoal-dns",
    "shoal-worker",
];

/// A shoal service running as a process.
pub struct Service {
    pub name: String,
    /// Its gRPC address, `127.0.0.1:PORT`.
    pub addr: String,
    pub config: PathBuf,
    pub process: Process,
}

/// The TOML config that points `service` at `infra` and makes it listen on a free
/// port, plus `extra` lines.
pub fn service_config(
    infra: &Infra,
    service: &str,
    extra: &str,
) -> anyhow::Result<(String, String)> {
    let listen = format!("127.0.0.1:{}", free_port(LOCALHOST)?);
    let mut text = format!("listen = \"{listen}\"\nlog_filter = \"info\"\n");
    if service == "shoal-worker" {
        let state = infra
            .dir
            .path()
            .join(format!("worker-state-{}", listen.replace([':', '.'], "-")));
        text.push_str(&format!(
            "state_dir = \"{}\"\ndispatcher_addrs = [\"127.0.0.1:4240\"]\nhostname = \"w1\"\n",
            state.display()
        ));
    } else {
        text.push_str(&format!(
            "etcd_endpoints = [\"{}\"]\nnats_url = \"{}\"\n",
            infra.etcd.endpoint(),
            infra.nats.url()
        ));
    }
    if service == "shoal-dns" {
        text.push_str(&format!(
            "dns_listen = \"127.0.0.1:{}\"\n",
            free_port(LOCALHOST)?
        ));
    }
    text.push_str(extra);
    Ok((text, listen))
}

/// Starts `service` against `infra` (config written to the scratch dir) without
/// waiting for it.
pub fn spawn_service(infra: &Infra, service: &str, extra: &str) -> anyhow::Result<Service> {
    let (text, addr) = service_config(infra, service, extra)?;
    let tag = addr.replace([':', '.'], "-");
    let config = infra.dir.path().join(format!("{service}-{tag}.toml"));
    std::fs::write(&config, text)?;
    let log = infra.dir.path().join(format!("{service}-{tag}.log"));
    let process = Process::spawn(
        &binary(service)?,
        &["--config".into(), config.display().to_string()],
        &[],
        &log,
    )?;
    Ok(Service {
        name: service.to_string(),
        addr,
        config,
        process,
    })
}

/// Starts `service` and waits until it reports SERVING.
pub async fn start_service(infra: &Infra, service: &str, extra: &str) -> anyhow::Result<Service> {
    let s = spawn_service(infra, service, extra)?;
    s.wait_serving().await?;
    Ok(s)
}

impl Service {
    pub async fn wait_serving(&self) -> anyhow::Result<()> {
        wait_for(
            &format!("{} on {} to report SERVING", self.name, self.addr),
            Duration::from_secs(30),
            || health(&self.addr),
        )
        .await
        .with_context(|| self.process.log_tail(30))
    }

    pub async fn channel(&self) -> anyhow::Result<Channel> {
        Ok(
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))?
                .connect()
                .await?,
        )
    }

    pub async fn control(&self) -> anyhow::Result<ControlClient<Channel>> {
        Ok(ControlClient::new(self.channel().await?))
    }
}

/// `Some(())` when the process at `addr` reports SERVING.
pub async fn health(addr: &str) -> Option<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?
        .into_inner()
        .status();
    (status == ServingStatus::Serving).then_some(())
}
