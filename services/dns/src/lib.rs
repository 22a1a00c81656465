//! shoal-dns: the embedded DNS server (`<service>` → VIP, `tasks.<service>` → task
//! addresses, everything else forwarded upstream) and the VIP resolver API the
//! workers' proxies follow. Stateless: N replicas, each with its own list+watch
//! caches of services, tasks and networks.
//!
//! Module map:
//! - [`table`]: the record table — every service's names, VIPs and RUNNING task
//!   addresses, the visibility rules, PTR — as pure data, built one service at a time;
//! - [`records`]: the controller that keeps the table current from the caches and
//!   announces changes;
//! - [`dns`]: the hickory-server request handler (UDP + TCP on `dns_listen`);
//! - [`upstream`]: forwarding of names outside the cluster;
//! - [`resolver`]: the `shoal.v1.Resolver` gRPC API (Resolve, Watch, WatchEndpoints).
//!
//! The DNS server starts once etcd and NATS answer and the caches hold their first
//! lists; the Resolver API is served over TLS once the swarm exists (like every
//! control-plane API).

pub mod config;
pub mod dns;
pub mod records;
pub mod resolver;
pub mod table;
pub mod upstream;

use std::sync::Arc;

pub use config::DnsConfig;
pub use records::Records;
pub use resolver::ResolverService;
use shoal_grpc_host::{BoundHost, RunError};
use shoal_proto::v1::resolver_server::ResolverServer;
use tokio::sync::OnceCell;

/// gRPC services this process serves besides health and reflection.
const SERVICES: &[&str] = &["shoal.v1.Resolver"];

/// Runs the DNS service until SIGTERM/SIGINT.
pub async fn run(cfg: DnsConfig, host: BoundHost) -> Result<(), RunError> {
    let cell: Arc<OnceCell<Arc<Records>>> = Arc::new(OnceCell::new());
    let shutdown = host.shutdown_token();
    let routes = tonic::service::Routes::new(ResolverServer::new(ResolverService::starting(
        cell.clone(),
        shutdown.clone(),
    )));
    let dns_listen = cfg.dns_listen;
    let upstream = upstream::Upstream::new(&cfg.upstream, dns_listen);
    shoal_grpc_host::serve_with_cluster_state(&cfg, host, routes, SERVICES, |state| async move {
        let records = match Records::start(&state.store, shutdown.clone()).await {
            Ok(records) => records,
            Err(records::RecordsError::Shutdown) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        tracing::info!(upstream = ?upstream.servers(), "forwarding other names upstream");
        dns::serve(
            dns_listen,
            dns::DnsHandler::new(records.clone(), upstream),
            shutdown,
        )
        .await?;
        let _ = cell.set(records);
        Ok(())
    })
    .await
}
