//! Node changes through the Control API, with Swarm's refusals, and the manager status
//! `node ls` shows (Leader / Reachable / Unreachable), read from the elections.

use shoal_grpc_host::ClusterState;
use shoal_proto::v1::manager_status::Reachability;
use shoal_proto::v1::{ManagerStatus, Node, NodeRole, NodeSpec, node_spec, node_status};
use shoal_store::{Object, Store};
use tonic::Status;

use super::store_status;
use crate::announce::announce;
use crate::leadership::ELECTION;
use crate::swarm::{candidate_node, presence_election};

/// Fills in each manager node's live manager status.
pub async fn decorate(store: &Store, nodes: &mut [Node]) -> Result<(), Status> {
    if !nodes.iter().any(|n| n.role == NodeRole::Manager as i32) {
        return Ok(());
    }
    let leader = store
        .leader(ELECTION)
        .await
        .map_err(store_status)?
        .map(|l| candidate_node(&l.candidate_id).to_string());
    for node in nodes
        .iter_mut()
        .filter(|n| n.role == NodeRole::Manager as i32)
    {
        let id = node.id().to_string();
        let presence = store
            .leader(&presence_election(&id))
            .await
            .map_err(store_status)?;
        let status = node
            .manager_status
            .get_or_insert_with(ManagerStatus::default);
        status.leader = leader.as_deref() == Some(id.as_str());
        status.reachability = if presence.is_some() {
            Reachability::Reachable
        } else {
            Reachability::Unreachable
        } as i32;
        if let Some((_, addr)) = presence
            .as_ref()
            .and_then(|p| p.candidate_id.split_once('@'))
        {
            status.addr = addr.to_string();
        }
    }
    Ok(())
}

fn check_spec(spec: &NodeSpec) -> Result<(), Status> {
    if node_spec::Availability::try_from(spec.availability).is_err() {
        return Err(Status::invalid_argument(format!(
            "spec.availability: unknown availability {}",
            spec.availability
        )));
    }
    if spec.desired_role != NodeRole::Worker as i32 && spec.desired_role != NodeRole::Manager as i32
    {
        return Err(Status::invalid_argument(
            "spec.desired_role: must be worker or manager",
        ));
    }
    Ok(())
}

pub async fn update(
    state: &ClusterState,
    current: Node,
    version: u64,
    spec: NodeSpec,
) -> Result<Node, Status> {
    check_spec(&spec)?;
    let demoting =
        current.role == NodeRole::Manager as i32 && spec.desired_role == NodeRole::Worker as i32;
    if demoting {
        let managers = state
            .store
            .list::<Node>()
            .await
            .map_err(store_status)?
            .objects
            .iter()
            .filter(|n| n.role == NodeRole::Manager as i32)
            .count();
        if managers <= 1 {
            return Err(Status::failed_precondition(
                "attempting to demote the last manager of the swarm",
            ));
        }
    }
    let mut next = current;
    next.set_version(version);
    // The role follows the desired role at once; the node's certificate follows at its
    // next renewal.
    next.role = spec.desired_role;
    if next.role == NodeRole::Worker as i32 {
        next.manager_status = None;
    }
    next.spec = Some(spec);
    let stored = state.store.update(next).await.map_err(store_status)?;
    announce(&state.bus, "update", &stored, "").await;
    Ok(stored)
}

pub async fn remove(state: &ClusterState, node: Node, force: bool) -> Result<(), Status> {
    let id = node.id().to_string();
    if node.role == NodeRole::Manager as i32 {
        return Err(Status::failed_precondition(format!(
            "node {id} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal"
        )));
    }
    let down = node
        .status
        .as_ref()
        .is_some_and(|s| s.state == node_status::State::Down as i32);
    if !down && !force {
        return Err(Status::failed_precondition(format!(
            "node {id} is not down and can't be removed"
        )));
    }
    let removed = state
        .store
        .delete::<Node>(&id, Some(node.version()))
        .await
        .map_err(store_status)?;
    announce(&state.bus, "remove", &removed, "").await;
    tracing::info!(node = %id, force, "node removed");
    Ok(())
}
