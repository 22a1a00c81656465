//! Shared set-up for the store's integration tests: a real etcd per test, objects to store.
#![allow(dead_code)]

use std::time::Duration;

use shoal_proto::v1::{Annotations, Service, ServiceSpec, Task, TaskState};
use shoal_store::{Store, StoreOptions};
use shoal_testkit::Etcd;

/// How long any awaited condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub async fn etcd_and_store() -> anyhow::Result<(Etcd, Store)> {
    let etcd = Etcd::start().await?;
    let store = connect(&etcd).await?;
    Ok((etcd, store))
}

pub async fn connect(etcd: &Etcd) -> anyhow::Result<Store> {
    Ok(Store::connect_with(&[etcd.endpoint()], StoreOptions::with_prefix("/shoal/test")).await?)
}

pub async fn raw_client(etcd: &Etcd) -> anyhow::Result<etcd_client::Client> {
    Ok(etcd_client::Client::connect([etcd.endpoint()], None).await?)
}

pub fn service(name: &str) -> Service {
    Service {
        spec: Some(ServiceSpec {
            annotations: Some(Annotations {
                name: name.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn task(service_id: &str, slot: u64) -> Task {
    Task {
        service_id: service_id.to_string(),
        slot,
        desired_state: TaskState::Running as i32,
        ..Default::default()
    }
}

pub fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// Fails the test if `fut` takes longer than [`DEADLINE`].
pub async fn within<F: std::future::Future>(what: &str, fut: F) -> anyhow::Result<F::Output> {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .map_err(|_| anyhow::anyhow!("{what}: not done within {DEADLINE:?}"))
}
