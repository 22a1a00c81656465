//! shoal-dns: the embedded DNS server (`<service>` → VIP, `tasks.<service>` → task
//! addresses, everything else forwarded upstream) and the VIP resolver API the
//! workers' proxies follow. Stateless: N replicas, each with its own list+watch
//! caches of services, tasks and networks.
//!
//! Today the process connects to cluster state and serves the `Resolver` API, whose
//! RPCs answer UNIMPLEMENTED until the networking work fills them in.

pub mod config;

pub use config::DnsConfig;
use shoal_grpc_host::{BoundHost, RunError};
use shoal_proto::v1::resolver_server::{Resolver, ResolverServer};

/// gRPC services this process serves besides health and reflection.
const SERVICES: &[&str] = &["shoal.v1.Resolver"];

/// The Resolver API. Every RPC keeps its UNIMPLEMENTED default for now.
#[derive(Debug, Default)]
pub struct ResolverService;

impl Resolver for ResolverService {}

/// Runs the DNS service until SIGTERM/SIGINT.
pub async fn run(cfg: DnsConfig, host: BoundHost) -> Result<(), RunError> {
    let routes = tonic::service::Routes::new(ResolverServer::new(ResolverService));
    shoal_grpc_host::serve_with_cluster_state(&cfg, host, routes, SERVICES, |_state| async {
        Ok(())
    })
    .await
}
