//! Leader election on a leased key, with the key's create revision as fencing token.
//!
//! A candidate holds `<p>/election/<name>` while its lease lives. Winning is a transaction
//! "create the key if absent"; losing candidates watch the key and try again when it is
//! deleted. The leader keeps its lease alive every ttl/3 and watches its own key: the
//! leadership is declared lost as soon as the lease is reported gone, the key is deleted or
//! replaced, or no keep-alive succeeded for a whole ttl. Losing is never assumed away;
//! and since a deposed leader may not notice in time, every write it makes through
//! [`crate::Store::fenced`] is conditional on the key still having its create revision.

use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, EventType, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::backoff::{Backoff, TaskGuard};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::txn::Fence;

/// Who holds an election key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub candidate_id: String,
    /// The key's create revision: the leadership's fencing token.
    pub revision: u64,
    pub lease_id: i64,
}

/// A candidate in the election `name`.
#[derive(Debug, Clone)]
pub struct Election {
    store: Store,
    name: String,
    key: String,
    candidate_id: String,
    ttl: Duration,
}

impl Store {
    /// Who leads the election `name` now, if anyone.
    pub async fn leader(&self, name: &str) -> Result<Option<Leader>> {
        let mut resp = self.kv().get(self.keys().election(name), None).await?;
        Ok(resp.take_kvs().first().map(|kv| Leader {
            candidate_id: String::from_utf8_lossy(kv.value()).into_owned(),
            revision: kv.create_revision() as u64,
            lease_id: kv.lease(),
        }))
    }
}

impl Election {
    /// `ttl` is how long a silent leader keeps the key (rounded up to whole seconds; etcd
    /// may raise very small values to its minimum).
    pub fn new(store: &Store, name: &str, candidate_id: &str, ttl: Duration) -> Self {
        Self {
            store: store.unfenced(),
            name: name.to_string(),
            key: store.keys().election(name),
            candidate_id: candidate_id.to_string(),
            ttl,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Who leads now.
    pub async fn leader(&self) -> Result<Option<Leader>> {
        self.store.leader(&self.name).await
    }

    fn ttl_secs(&self) -> i64 {
        (self.ttl.as_millis().div_ceil(1000) as i64).max(1)
    }

    /// Waits until this candidate leads. etcd outages are retried, so this only returns
    /// once leading (cancel it by dropping the future).
    pub async fn campaign(&self) -> Result<Leadership> {
        let mut backoff = Backoff::default();
        loop {
            let lease = match self.grant().await {
                Ok(lease) => lease,
                Err(e) => {
                    tracing::warn!(election = %self.name, error = %e, "lease grant failed; retrying");
                    backoff.wait().await;
                    continue;
                }
            };
            match self.contend(&lease).await {
                Ok(revision) => {
                    tracing::info!(election = %self.name, candidate = %self.candidate_id, revision, "elected");
                    return Ok(Leadership::start(self, lease, revision));
                }
                Err(Error::LeaseLost(id)) => {
                    tracing::warn!(election = %self.name, lease = id, "lease lost while campaigning; new lease");
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn grant(&self) -> Result<KeptLease> {
        let resp = self
            .store
            .client()
            .lease_client()
            .grant(self.ttl_secs(), None)
            .await?;
        let ttl = Duration::from_secs(resp.ttl().max(1) as u64);
        Ok(KeptLease::start(self.store.clone(), resp.id(), ttl))
    }

    /// Tries to create the key under `lease`, waiting for it to be free; returns the key's
    /// create revision once held.
    async fn contend(&self, lease: &KeptLease) -> Result<u64> {
        let mut backoff = Backoff::default();
        loop {
            if lease.is_lost() {
                return Err(Error::LeaseLost(lease.id));
            }
            let txn = Txn::new()
                .when([Compare::create_revision(
                    self.key.as_bytes(),
                    CompareOp::Equal,
                    0,
                )])
                .and_then([TxnOp::put(
                    self.key.as_bytes(),
                    self.candidate_id.as_bytes(),
                    Some(PutOptions::new().with_lease(lease.id)),
                )])
                .or_else([TxnOp::get(self.key.as_bytes(), None)]);
            let resp = match self.store.kv().txn(txn).await {
                Ok(resp) => resp,
                Err(e) => {
                    tracing::warn!(election = %self.name, error = %e, "campaign txn failed; retrying");
                    backoff.wait().await;
                    continue;
                }
            };
            let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            if resp.succeeded() {
                return Ok(revision as u64);
            }
            let holder = resp.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Get(mut g) => g.take_kvs().into_iter().next(),
                _ => None,
            });
            if let Some(kv) = &holder
                && kv.lease() == lease.id
            {
                return Ok(kv.create_revision() as u64);
            }
            // Someone else leads: wait for the key to go, then try again.
            self.wait_for_deletion(revision, lease).await;
        }
    }

    /// Returns when the key is deleted after `revision`, the watch breaks, or the lease
    /// is lost; the caller re-checks.
    async fn wait_for_deletion(&self, revision: i64, lease: &KeptLease) {
        let opts = WatchOptions::new().with_start_revision(revision + 1);
        let mut stream = match self
            .store
            .watch_client()
            .watch(self.key.as_bytes(), Some(opts))
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(election = %self.name, error = %e, "watch failed");
                Backoff::default().wait().await;
                return;
            }
        };
        let mut lost = lease.lost.clone();
        loop {
            tokio::select! {
                msg = stream.message() => match msg {
                    Ok(Some(resp)) => {
                        if resp.canceled() || resp.compact_revision() > 0 {
                            return;
                        }
                        if resp.events().iter().any(|e| e.event_type() == EventType::Delete) {
                            return;
                        }
                    }
                    Ok(None) | Err(_) => {
                        Backoff::default().wait().await;
                        return;
                    }
                },
                _ = until_lost(&mut lost) => return,
            }
        }
    }
}

/// A lease kept alive by a background task until dropped (then revoked) or lost.
struct KeptLease {
    id: i64,
    lost: watch::Receiver<bool>,
    _stop: oneshot::Sender<()>,
}

impl KeptLease {
    fn start(store: Store, id: i64, ttl: Duration) -> Self {
        let (lost_tx, lost) = watch::channel(false);
        let (stop, stop_rx) = oneshot::channel();
        tokio::spawn(keep_alive(store, id, ttl, lost_tx, stop_rx));
        Self {
            id,
            lost,
            _stop: stop,
        }
    }

    fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }
}

async fn keep_alive(
    store: Store,
    id: i64,
    ttl: Duration,
    lost: watch::Sender<bool>,
    mut stop: oneshot::Receiver<()>,
) {
    let every = ttl / 3;
    let mut lease = store.client().lease_client();
    let mut keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
    // The lease is known to live until `alive_until`; past it, it may have expired.
    let mut alive_until = Instant::now() + ttl;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        if Instant::now() >= alive_until {
            tracing::warn!(
                lease = id,
                "no keep-alive succeeded for a whole ttl; lease presumed lost"
            );
            break;
        }
        let sent = Instant::now();
        let refreshed = tokio::time::timeout(every.max(Duration::from_millis(200)), async {
            if keeper.is_none() {
                keeper = Some(lease.keep_alive(id).await?);
                // keep_alive() already sent one request and checked its answer.
                return Ok::<i64, etcd_client::Error>(1);
            }
            let Some((k, s)) = keeper.as_mut() else {
                return Ok(0);
            };
            k.keep_alive().await?;
            match s.message().await? {
                Some(resp) => Ok(resp.ttl()),
                None => Err(etcd_client::Error::LeaseKeepAliveError(
                    "stream ended".into(),
                )),
            }
        })
        .await;
        match refreshed {
            Ok(Ok(left)) if left > 0 => alive_until = sent + ttl,
            Ok(Ok(_)) => {
                tracing::warn!(lease = id, "lease expired or revoked");
                break;
            }
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(msg))) if msg.contains("not found") => {
                tracing::warn!(lease = id, "lease expired or revoked");
                break;
            }
            Ok(Err(e)) => {
                tracing::warn!(lease = id, error = %e, "keep-alive failed; retrying");
                keeper = None;
            }
            Err(_) => {
                tracing::warn!(lease = id, "keep-alive timed out; retrying");
                keeper = None;
            }
        }
    }
    let _ = lost.send(true);
    // Best effort: frees the key now rather than at expiry (after a stop or a lost lease).
    let _ = tokio::time::timeout(Duration::from_secs(2), lease.revoke(id)).await;
}

/// This candidate's hold on an election key. Dropping it (or [`Leadership::resign`])
/// gives up the lease and with it the key.
pub struct Leadership {
    name: String,
    key: String,
    candidate_id: String,
    revision: u64,
    lease_id: i64,
    store: Store,
    lost: watch::Receiver<bool>,
    _guard: TaskGuard,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("key", &self.key)
            .field("candidate_id", &self.candidate_id)
            .field("revision", &self.revision)
            .field("lease_id", &self.lease_id)
            .field("lost", &*self.lost.borrow())
            .finish()
    }
}

impl Leadership {
    fn start(election: &Election, lease: KeptLease, revision: u64) -> Self {
        let (lost_tx, lost) = watch::channel(false);
        let lease_id = lease.id;
        let task = tokio::spawn(guard(
            election.store.clone(),
            election.key.clone(),
            revision,
            lease,
            lost_tx,
        ));
        Self {
            name: election.name.clone(),
            key: election.key.clone(),
            candidate_id: election.candidate_id.clone(),
            revision,
            lease_id,
            store: election.store.clone(),
            lost,
            _guard: TaskGuard(task),
        }
    }

    /// The leader key's create revision: the fencing token.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn lease_id(&self) -> i64 {
        self.lease_id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn candidate_id(&self) -> &str {
        &self.candidate_id
    }

    /// The fence for [`Store::fenced`].
    pub fn fence(&self) -> Fence {
        Fence::new(self.key.clone(), self.revision)
    }

    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves once the leadership is lost (lease gone, key deleted, or keep-alive silent
    /// for a ttl). Never resolves while it holds.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut lost = self.lost.clone();
        async move {
            // An error means the guard is gone, which only happens once lost or dropped.
            let _ = lost.wait_for(|l| *l).await;
        }
    }

    /// A watch channel that turns `true` when the leadership is lost.
    pub fn lost_signal(&self) -> watch::Receiver<bool> {
        self.lost.clone()
    }

    /// Gives the leadership up now: revokes the lease, which deletes the key.
    pub async fn resign(self) -> Result<()> {
        self.store
            .client()
            .lease_client()
            .revoke(self.lease_id)
            .await?;
        Ok(())
    }
}

impl From<&Leadership> for Fence {
    fn from(l: &Leadership) -> Fence {
        l.fence()
    }
}

/// Watches the leader key while the lease task keeps the lease; reports loss of either.
async fn guard(
    store: Store,
    key: String,
    revision: u64,
    lease: KeptLease,
    lost: watch::Sender<bool>,
) {
    let mut lease_lost = lease.lost.clone();
    let mut seen = revision;
    let mut backoff = Backoff::default();
    'watch: loop {
        // Re-check the key itself: a missed event must not hide its deletion.
        match store.leader_key_revision(&key).await {
            Ok(Some(r)) if r == revision => {}
            Ok(_) => {
                tracing::warn!(%key, revision, "leader key gone or replaced");
                break;
            }
            Err(e) => {
                tracing::warn!(%key, error = %e, "cannot read leader key");
                tokio::select! {
                    _ = backoff.wait() => continue 'watch,
                    _ = until_lost(&mut lease_lost) => break,
                }
            }
        }
        let opts = WatchOptions::new().with_start_revision(seen as i64 + 1);
        let mut stream = match store.watch_client().watch(key.as_bytes(), Some(opts)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%key, error = %e, "cannot watch leader key");
                tokio::select! {
                    _ = backoff.wait() => continue 'watch,
                    _ = until_lost(&mut lease_lost) => break,
                }
            }
        };
        loop {
            let broken = tokio::select! {
                _ = until_lost(&mut lease_lost) => break 'watch,
                msg = stream.message() => match msg {
                    Ok(Some(resp)) => {
                        if resp.created() {
                            backoff.reset();
                        }
                        if resp.canceled() || resp.compact_revision() > 0 {
                            continue 'watch;
                        }
                        for ev in resp.events() {
                            let Some(kv) = ev.kv() else { continue };
                            seen = seen.max(kv.mod_revision() as u64);
                            let replaced = kv.create_revision() as u64 != revision;
                            if ev.event_type() == EventType::Delete || replaced {
                                tracing::warn!(%key, revision, "leader key deleted");
                                break 'watch;
                            }
                        }
                        false
                    }
                    Ok(None) | Err(_) => true,
                },
            };
            if broken {
                tokio::select! {
                    _ = backoff.wait() => continue 'watch,
                    _ = until_lost(&mut lease_lost) => break 'watch,
                }
            }
        }
    }
    let _ = lost.send(true);
    // Dropping `lease` stops its keep-alive and revokes it.
    drop(lease);
}

/// Resolves when `lost` turns true (or its sender is gone, which only happens after).
async fn until_lost(lost: &mut watch::Receiver<bool>) {
    let _ = lost.wait_for(|l| *l).await;
}

impl Store {
    async fn leader_key_revision(&self, key: &str) -> Result<Option<u64>> {
        let mut resp = self.kv().get(key, None).await?;
        Ok(resp
            .take_kvs()
            .first()
            .map(|kv| kv.create_revision() as u64))
    }
}
