//! The public shoal API, package `shoal.v1`, generated from `proto/shoal/v1/*.proto`.
//!
//! The `.proto` files are the source of truth; nothing generated is edited by hand. This
//! crate only adds small conveniences on top (state ordering, kind names) that every
//! service needs to agree on.

pub mod v1 {
    #![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]
    tonic::include_proto!("shoal.v1");
}

/// The encoded file descriptor set of `shoal.v1`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("shoal_v1_descriptor");

mod state;
pub use state::TaskStateExt;

/// Whether `task` runs the service's current task spec (Swarm's "not dirty"): the
/// update supervisor replaces the tasks for which this is false, and `service
/// update`'s progress counts only the tasks for which it is true. Scale changes,
/// update/rollback configs and ingress ports leave tasks current; `--force` (the task
/// spec's `force_update` counter) does not.
pub fn task_is_current(task: &v1::Task, service: &v1::Service) -> bool {
    let wanted = service.spec.as_ref().and_then(|s| s.task.as_ref());
    task.spec.as_ref() == wanted
}
