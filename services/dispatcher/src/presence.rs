//! Which dispatcher a session belongs to, and whether that dispatcher is alive.
//!
//! Every dispatcher process is an *instance* with a fresh random id. It announces itself
//! with a presence key on an etcd lease: an election of one, `dispatcher/<instance>`
//! (key `<p>/election/dispatcher/<instance>`, value the instance's advertise address).
//! The key lives as long as the lease is kept alive; a graceful shutdown revokes it at
//! once, a crashed instance loses it within the lease TTL.
//!
//! Session ids name their owner: `<instance>.<random id>`. So any dispatcher can tell,
//! from a node object alone, who holds the node's session and — with one point read of
//! that owner's presence key — whether anybody still does. Nothing is written per node to
//! prove liveness: a fleet of healthy nodes costs etcd nothing between registrations.

use std::collections::HashMap;
use std::time::Duration;

use shoal_grpc_host::ShutdownToken;
use shoal_store::{Election, Leadership, Store};

/// Presence elections are named `dispatcher/<instance>`.
pub const PRESENCE_PREFIX: &str = "dispatcher/";

/// The election name of `instance`'s presence.
pub fn presence_name(instance: &str) -> String {
    format!("{PRESENCE_PREFIX}{instance}")
}

/// A fresh session id owned by `instance`.
pub fn new_session_id(instance: &str) -> String {
    format!("{instance}.{}", shoal_store::new_id())
}

/// The instance that owns `session_id`, if the id has the `<instance>.<random>` form.
pub fn session_owner(session_id: &str) -> Option<&str> {
    let (owner, rest) = session_id.split_once('.')?;
    (!owner.is_empty() && !rest.is_empty()).then_some(owner)
}

/// Whether `instance` holds its presence key now.
pub async fn is_alive(store: &Store, instance: &str) -> shoal_store::Result<bool> {
    Ok(store.leader(&presence_name(instance)).await?.is_some())
}

/// Liveness of owners, each read at most once per pass. An owner whose presence cannot
/// be read counts as alive: when unsure, nobody is marked down.
#[derive(Debug, Default)]
pub(crate) struct Owners {
    seen: HashMap<String, bool>,
}

impl Owners {
    pub async fn alive(&mut self, store: &Store, me: &str, owner: &str) -> bool {
        if owner == me {
            return true;
        }
        if let Some(&alive) = self.seen.get(owner) {
            return alive;
        }
        let alive = match is_alive(store, owner).await {
            Ok(alive) => alive,
            Err(e) => {
                tracing::warn!(owner, error = %e, "cannot read a dispatcher's presence; assuming it is alive");
                true
            }
        };
        self.seen.insert(owner.to_string(), alive);
        alive
    }
}

/// Takes this instance's presence key (waits for etcd; the key is free since the
/// instance id is new).
pub(crate) async fn take(
    store: &Store,
    instance: &str,
    advertise: &str,
    ttl: Duration,
) -> shoal_store::Result<Leadership> {
    let value = if advertise.is_empty() {
        instance
    } else {
        advertise
    };
    Election::new(store, &presence_name(instance), value, ttl)
        .campaign()
        .await
}

/// Keeps the presence until shutdown, taking it again if the lease is lost (an etcd
/// outage longer than the TTL); resigns on shutdown so other dispatchers start the
/// failover grace of this instance's nodes at once.
pub(crate) async fn keep(
    store: Store,
    instance: String,
    advertise: String,
    ttl: Duration,
    mut held: Leadership,
    shutdown: ShutdownToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                if let Err(e) = held.resign().await {
                    tracing::warn!(error = %e, "could not revoke the dispatcher presence; it expires with its lease");
                }
                return;
            }
            _ = held.lost() => {
                tracing::warn!(%instance, "dispatcher presence lost; taking it again");
            }
        }
        held = loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                taken = take(&store, &instance, &advertise, ttl) => match taken {
                    Ok(l) => break l,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot take the dispatcher presence; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                },
            }
        };
        tracing::info!(%instance, "dispatcher presence held again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_name_their_owner() {
        let id = new_session_id("abc");
        assert_eq!(session_owner(&id), Some("abc"));
        assert_eq!(session_owner(""), None);
        assert_eq!(session_owner("nodots"), None);
        assert_eq!(session_owner(".x"), None);
        assert_eq!(session_owner("x."), None);
        assert_ne!(new_session_id("abc"), id);
    }
}
