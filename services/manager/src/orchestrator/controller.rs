//! The orchestrator wired: a controller that runs on the leader manager only.
//!
//! Shape (kube-rs): reflector caches of services, tasks, nodes and the cluster feed a
//! deduplicating queue of service ids; one worker loop takes an id, looks at
//! everything the caches hold for that service now, asks the pure reconcile functions
//! ([`super::reconcile`], [`super::orphans`], [`super::reap`]) for a plan, and applies it
//! as batched, fenced writes. Nothing here polls per task:
//!
//! - a service written or deleted enqueues it;
//! - a task that became terminal, whose desired state changed, or that was deleted
//!   enqueues its service;
//! - a node whose state or availability changed (or that was added or removed)
//!   enqueues the services with tasks on it, and any node change enqueues every global
//!   service (a joining node gets its task);
//! - a [`super::Plan::requeue_at`] (a restart waiting out its delay) becomes a timer;
//! - every service (and every service id that still has tasks: orphans of a removed
//!   service) is enqueued at the start of every leadership term and on a periodic
//!   resync, so a lost event only delays work.
//!
//! Writes go through `store.fenced(leadership)`: a manager that lost the leadership
//! cannot write, even before it notices. A write that loses a race (`Conflict`) just
//! requeues the service; the next pass sees the winner's write in the cache.
//!
//! The network allocator ([`crate::allocator::Allocator`]) lives here too, rebuilt from
//! the caches (networks, services, tasks) at the start of every term and whenever a
//! cache restarts or an event was missed. Each pass over a live service first makes
//! its `endpoint` right (VIPs, published ports; a CAS on the service, before any of
//! its tasks is written), then gives every new task its network attachments and the
//! endpoint, and attaches live tasks of the current spec in place to networks the
//! service newly joins (`--publish-add` brings the ingress network: no restart).
//! Addresses are freed when a task stops or is deleted, VIPs and ports when the
//! service is deleted or no longer needs them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use shoal_events::{Event, EventBus, SCHEDULE_WORK_SUBJECT};
use shoal_grpc_host::ShutdownToken;
use shoal_proto::TaskStateExt;
use shoal_proto::v1::{Cluster, Network, Node, Service, Task, TaskState, service_spec::Mode};
use shoal_store::{
    Cache, CacheEvent, CacheReader, Fence, Object, Store,
    cache::{TASKS_BY_NODE, TASKS_BY_SERVICE},
};
use tokio::sync::{broadcast, watch};
use tokio_util::time::{DelayQueue, delay_queue};
use tracing::Instrument;

use super::{DEFAULT_TASK_HISTORY_LIMIT, Plan, ReapPlan, orphans, reap, reconcile};
use crate::allocator::Allocator;

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// Every service is reconciled again this often, whatever the events said.
    pub resync_interval: Duration,
    /// At most this many service ids wait in the queue; beyond that ids are dropped
    /// and a full resync follows once the queue drains.
    pub queue_capacity: usize,
    /// Delay before a service whose writes failed (not a conflict) is tried again.
    pub retry_delay: Duration,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        Self {
            resync_interval: Duration::from_secs(30),
            queue_capacity: 65_536,
            retry_delay: Duration::from_secs(1),
        }
    }
}

/// The caches the controller reads. Started at the first leadership term and kept
/// across terms, so a manager that becomes leader again starts from a warm copy.
struct Caches {
    services: Cache<Service>,
    tasks: Cache<Task>,
    nodes: Cache<Node>,
    clusters: Cache<Cluster>,
    networks: Cache<Network>,
}

impl Caches {
    fn start(store: &Store) -> Self {
        Self {
            services: Cache::start(store),
            tasks: Cache::tasks(store),
            nodes: Cache::start(store),
            clusters: Cache::start(store),
            networks: Cache::start(store),
        }
    }
}

/// Runs the orchestrators whenever `leader` holds a fence (this manager holds the
/// `manager` leadership), until `shutdown`. Each term gets a store fenced on it, starts
/// with a full pass and ends as soon as the fence changes or goes.
pub async fn run_while_leading(
    store: Store,
    bus: EventBus,
    mut leader: watch::Receiver<Option<Fence>>,
    shutdown: ShutdownToken,
    opts: ControllerOptions,
) {
    let mut caches: Option<Caches> = None;
    loop {
        let fence = tokio::select! {
            _ = shutdown.cancelled() => return,
            held = async { leader.wait_for(Option::is_some).await.map(|f| f.clone()) } => match held {
                Ok(f) => f,
                Err(_) => return,
            },
        };
        let Some(fence) = fence else { continue };
        let caches = caches.get_or_insert_with(|| Caches::start(&store));
        let controller = Controller::new(store.fenced(fence.clone()), bus.clone(), caches, &opts);
        tracing::info!(
            fence = fence.revision(),
            "orchestrator starting: this manager leads"
        );
        let still = fence.clone();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = async { let _ = leader.wait_for(move |f| f.as_ref() != Some(&still)).await; } => {
                tracing::info!(fence = fence.revision(), "orchestrator stopped: leadership lost");
            }
            r = controller.run() => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "orchestrator stopped; restarting while still leading");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(opts.retry_delay) => {}
                    }
                }
            }
        }
    }
}

/// A bounded FIFO of service ids, each at most once.
struct WorkQueue {
    order: VecDeque<String>,
    queued: HashSet<String>,
    capacity: usize,
    overflowed: bool,
}

impl WorkQueue {
    fn new(capacity: usize) -> Self {
        Self {
            order: VecDeque::new(),
            queued: HashSet::new(),
            capacity: capacity.max(1),
            overflowed: false,
        }
    }

    fn push(&mut self, id: &str) {
        if id.is_empty() || self.queued.contains(id) {
            return;
        }
        if self.order.len() >= self.capacity {
            self.overflowed = true;
            return;
        }
        self.queued.insert(id.to_string());
        self.order.push_back(id.to_string());
    }

    fn pop(&mut self) -> Option<String> {
        let id = self.order.pop_front()?;
        self.queued.remove(&id);
        Some(id)
    }

    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// Whether a failed write may have landed (etcd did not answer) or surely did not.
fn outcome_unknown(e: &shoal_store::Error) -> bool {
    matches!(e, shoal_store::Error::Etcd(_))
}

/// What the endpoint step of a pass decided.
enum EndpointStep {
    /// The service as stored, its endpoint right: go on with it.
    Ready(Arc<Service>),
    /// The endpoint cannot be allocated now: the pass goes on without creating tasks.
    Blocked,
    /// The endpoint write failed; the service is queued again.
    Retry,
}

/// Why a write pass did not complete.
#[derive(Debug, Default)]
struct Applied {
    /// Some write lost a race: reconcile again once the cache caught up.
    conflict: bool,
    /// Some write failed otherwise (etcd unavailable, fence lost, ...).
    failed: bool,
    /// Highest revision written.
    revision: u64,
}

/// One leadership term's controller.
pub struct Controller {
    store: Store,
    bus: EventBus,
    services: CacheReader<Service>,
    tasks: CacheReader<Task>,
    nodes: CacheReader<Node>,
    clusters: CacheReader<Cluster>,
    networks: CacheReader<Network>,
    opts: ControllerOptions,
    queue: WorkQueue,
    timers: DelayQueue<String>,
    timer_keys: HashMap<String, (delay_queue::Key, Instant)>,
    /// Last seen (state, desired state) per task: only transitions that matter enqueue.
    task_seen: HashMap<String, (i32, i32)>,
    /// Last seen (state, availability) per node.
    node_seen: HashMap<String, (i32, i32)>,
    node_snapshot: Option<Arc<HashMap<String, Node>>>,
    /// The term's network allocator.
    alloc: Allocator,
    /// Some event was missed or a cache restarted: rebuild the allocator before the
    /// next pass.
    alloc_stale: bool,
    /// Services whose endpoint could not be allocated (a network not seen yet, a full
    /// subnet, a port taken): queued again when a network appears.
    alloc_blocked: HashSet<String>,
}

impl Controller {
    fn new(store: Store, bus: EventBus, caches: &Caches, opts: &ControllerOptions) -> Self {
        Self {
            store,
            bus,
            services: caches.services.reader(),
            tasks: caches.tasks.reader(),
            nodes: caches.nodes.reader(),
            clusters: caches.clusters.reader(),
            networks: caches.networks.reader(),
            opts: opts.clone(),
            queue: WorkQueue::new(opts.queue_capacity),
            timers: DelayQueue::new(),
            timer_keys: HashMap::new(),
            task_seen: HashMap::new(),
            node_seen: HashMap::new(),
            node_snapshot: None,
            alloc: Allocator::default(),
            alloc_stale: true,
            alloc_blocked: HashSet::new(),
        }
    }

    /// Rebuilds the allocator from the caches once they show everything written so far
    /// (our own writes included), so nothing held in the store is handed out again.
    async fn rebuild_allocator(&mut self) -> shoal_store::Result<()> {
        let revision = self.store.revision().await?;
        self.services.wait_for_revision(revision).await?;
        self.tasks.wait_for_revision(revision).await?;
        self.networks.wait_for_revision(revision).await?;
        let networks: Vec<Network> = self.networks.list().iter().map(|n| (**n).clone()).collect();
        let services: Vec<Service> = self.services.list().iter().map(|s| (**s).clone()).collect();
        let tasks: Vec<Task> = self.tasks.list().iter().map(|t| (**t).clone()).collect();
        self.alloc = Allocator::rebuild(&networks, &services, &tasks);
        self.alloc_stale = false;
        tracing::debug!(
            networks = networks.len(),
            services = services.len(),
            tasks = tasks.len(),
            "allocator rebuilt"
        );
        Ok(())
    }

    /// Runs the term: waits for the caches to show everything written before it began
    /// (a previous leader's tasks included), then a full pass, then events.
    async fn run(mut self) -> shoal_store::Result<()> {
        let mut service_events = self.services.subscribe();
        let mut task_events = self.tasks.subscribe();
        let mut node_events = self.nodes.subscribe();
        let mut network_events = self.networks.subscribe();
        self.services.wait_until_synced().await?;
        self.tasks.wait_until_synced().await?;
        self.nodes.wait_until_synced().await?;
        self.clusters.wait_until_synced().await?;
        self.networks.wait_until_synced().await?;
        let revision = self.store.revision().await?;
        self.services.wait_for_revision(revision).await?;
        self.tasks.wait_for_revision(revision).await?;
        self.nodes.wait_for_revision(revision).await?;
        self.rebuild_allocator().await?;

        for t in self.tasks.list() {
            self.task_seen.insert(t.id().to_string(), state_pair(&t));
        }
        for n in self.nodes.list() {
            self.node_seen.insert(n.id().to_string(), node_pair(&n));
        }
        self.enqueue_all();

        let mut resync = tokio::time::interval(self.opts.resync_interval);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.tick().await;
        loop {
            tokio::select! {
                biased;
                ev = service_events.recv() => match ev {
                    Ok(CacheEvent::Upserted(s)) => self.queue.push(s.id()),
                    Ok(CacheEvent::Deleted(s)) => {
                        self.alloc.release_service(s.id());
                        self.alloc_blocked.remove(s.id());
                        self.queue.push(s.id());
                    }
                    Ok(CacheEvent::Restarted { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.alloc_stale = true;
                        self.enqueue_all();
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(shoal_store::Error::CacheClosed),
                },
                ev = network_events.recv() => match ev {
                    Ok(CacheEvent::Upserted(n)) => {
                        self.alloc.add_network((*n).clone());
                        for id in std::mem::take(&mut self.alloc_blocked) {
                            self.queue.push(&id);
                        }
                    }
                    Ok(CacheEvent::Deleted(n)) => self.alloc.remove_network(n.id()),
                    Ok(CacheEvent::Restarted { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.alloc_stale = true;
                        self.enqueue_all();
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(shoal_store::Error::CacheClosed),
                },
                ev = task_events.recv() => match ev {
                    Ok(ev) => self.on_task(ev),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.alloc_stale = true;
                        self.enqueue_all();
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(shoal_store::Error::CacheClosed),
                },
                ev = node_events.recv() => match ev {
                    Ok(ev) => self.on_node(ev),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.node_snapshot = None;
                        self.enqueue_all();
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(shoal_store::Error::CacheClosed),
                },
                Some(expired) = self.timers.next(), if !self.timers.is_empty() => {
                    let id = expired.into_inner();
                    self.timer_keys.remove(&id);
                    self.queue.push(&id);
                }
                _ = resync.tick() => self.enqueue_all(),
                _ = std::future::ready(()), if !self.queue.is_empty() => {
                    if self.alloc_stale {
                        self.rebuild_allocator().await?;
                    }
                    if let Some(id) = self.queue.pop() {
                        self.process(&id).await;
                    }
                    if self.queue.is_empty() && self.queue.overflowed {
                        self.queue.overflowed = false;
                        self.enqueue_all();
                    }
                }
            }
        }
    }

    /// Every service, and every service id some task still points at (orphans).
    fn enqueue_all(&mut self) {
        for s in self.services.list() {
            self.queue.push(s.id());
        }
        for id in self.tasks.index_counts(TASKS_BY_SERVICE).into_keys() {
            self.queue.push(&id);
        }
    }

    fn on_task(&mut self, ev: CacheEvent<Task>) {
        match ev {
            CacheEvent::Upserted(t) => {
                self.alloc.observe_task(&t);
                let now = state_pair(&t);
                let before = self.task_seen.insert(t.id().to_string(), now);
                let terminal =
                    |state: i32| TaskState::try_from(state).is_ok_and(|s| s.is_terminal());
                let running = |state: i32| state == TaskState::Running as i32;
                let matters = match before {
                    None => terminal(now.0),
                    Some(b) => {
                        (terminal(now.0) && !terminal(b.0))
                            || b.1 != now.1
                            || (running(now.0) && !running(b.0) && self.updating(&t.service_id))
                    }
                } || self.placed_on_lost_node(&t);
                if matters {
                    self.queue.push(&t.service_id);
                }
            }
            CacheEvent::Deleted(t) => {
                self.alloc.release_task(t.id());
                self.task_seen.remove(t.id());
                self.queue.push(&t.service_id);
            }
            CacheEvent::Restarted { .. } => {
                self.alloc_stale = true;
                self.task_seen = self
                    .tasks
                    .list()
                    .iter()
                    .map(|t| (t.id().to_string(), state_pair(t)))
                    .collect();
                self.enqueue_all();
            }
        }
    }

    /// Whether the service has an update or rollback under way: its tasks reaching
    /// RUNNING move the update on (start-first replacements, lanes).
    fn updating(&self, service_id: &str) -> bool {
        use shoal_proto::v1::update_status::UpdateState;
        self.services
            .get(service_id)
            .and_then(|s| s.update_status.as_ref().map(|u| u.state))
            .is_some_and(|state| {
                state == UpdateState::Updating as i32
                    || state == UpdateState::RollbackStarted as i32
            })
    }

    /// A task still wanted on a node that is down, drained or gone (e.g. assigned just
    /// as its node went down): the node's own event came before it.
    fn placed_on_lost_node(&self, t: &Task) -> bool {
        if t.node_id.is_empty() || t.desired_state > TaskState::Running as i32 {
            return false;
        }
        match self.nodes.get(&t.node_id) {
            None => true,
            Some(n) => {
                super::node_state(&n) == shoal_proto::v1::node_status::State::Down
                    || super::availability(&n) == shoal_proto::v1::node_spec::Availability::Drain
            }
        }
    }

    fn on_node(&mut self, ev: CacheEvent<Node>) {
        self.node_snapshot = None;
        let changed = match &ev {
            CacheEvent::Upserted(n) => {
                let now = node_pair(n);
                let before = self.node_seen.insert(n.id().to_string(), now);
                (before != Some(now)).then(|| n.id().to_string())
            }
            CacheEvent::Deleted(n) => {
                self.node_seen.remove(n.id());
                Some(n.id().to_string())
            }
            CacheEvent::Restarted { .. } => {
                self.node_seen = self
                    .nodes
                    .list()
                    .iter()
                    .map(|n| (n.id().to_string(), node_pair(n)))
                    .collect();
                self.enqueue_all();
                return;
            }
        };
        if let Some(node_id) = changed {
            for t in self.tasks.by_index(TASKS_BY_NODE, &node_id) {
                self.queue.push(&t.service_id);
            }
        }
        for s in self.services.list() {
            if is_global(&s) {
                self.queue.push(s.id());
            }
        }
    }

    fn node_map(&mut self) -> Arc<HashMap<String, Node>> {
        if let Some(m) = &self.node_snapshot {
            return m.clone();
        }
        let map: HashMap<String, Node> = self
            .nodes
            .list()
            .into_iter()
            .map(|n| (n.id().to_string(), (*n).clone()))
            .collect();
        let map = Arc::new(map);
        self.node_snapshot = Some(map.clone());
        map
    }

    fn history_limit(&self) -> usize {
        let limit = self
            .clusters
            .list()
            .first()
            .and_then(|c| c.spec.as_ref())
            .and_then(|s| s.orchestration.as_ref())
            .map(|o| o.task_history_retention_limit)
            .unwrap_or(0);
        match limit {
            0 => DEFAULT_TASK_HISTORY_LIMIT,
            n if n < 0 => usize::MAX,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        }
    }

    fn requeue_at(&mut self, id: &str, at: Instant) {
        if let Some((key, when)) = self.timer_keys.get(id).copied() {
            if when <= at {
                return;
            }
            self.timers.remove(&key);
        }
        let key = self.timers.insert_at(id.to_string(), at.into());
        self.timer_keys.insert(id.to_string(), (key, at));
    }

    /// Reconciles one service id (a live service, or the leftovers of a removed one).
    async fn process(&mut self, id: &str) {
        let mut service = self.services.get(id);
        let mut can_create = true;
        match service.clone() {
            None => {
                self.alloc.release_service(id);
                self.alloc_blocked.remove(id);
            }
            Some(s) if !s.pending_delete => match self.ensure_endpoint(&s).await {
                EndpointStep::Ready(stored) => service = Some(stored),
                EndpointStep::Blocked => can_create = false,
                EndpointStep::Retry => return,
            },
            Some(_) => {}
        }
        let cached: Vec<Arc<Task>> = self.tasks.by_index(TASKS_BY_SERVICE, id);
        let tasks: Vec<Task> = cached.iter().map(|t| (**t).clone()).collect();
        let nodes = self.node_map();
        let now = SystemTime::now();
        let mut plan = match service.as_deref() {
            Some(s) => reconcile(s, &tasks, &nodes, now),
            None => orphans(&tasks),
        };
        if !can_create {
            // Without an endpoint no task may be created, and nothing may be replaced
            // by one; removals go on.
            plan = Plan {
                remove: plan.remove,
                requeue_at: plan.requeue_at,
                ..Plan::default()
            };
        }
        let mut reaped = reap(service.as_deref(), &tasks, &nodes, self.history_limit());
        // Tasks changing now are reaped on a later pass, at their new version.
        let changing: HashSet<&str> = plan
            .shutdown
            .iter()
            .chain(&plan.remove)
            .map(String::as_str)
            .collect();
        reaped
            .delete_tasks
            .retain(|id| !changing.contains(id.as_str()));
        // Live tasks of the current spec missing an attachment (or the endpoint) of the
        // service as it is now: attached in place, not replaced.
        let attach: Vec<String> = match service.as_deref() {
            Some(s) if can_create && !s.pending_delete => {
                let wanted = self.alloc.networks_of(s);
                cached
                    .iter()
                    .filter(|t| !changing.contains(t.id()) && needs_attach(t, s, &wanted))
                    .map(|t| t.id().to_string())
                    .collect()
            }
            _ => Vec::new(),
        };
        if let Some(at) = plan.requeue_at {
            let wait = at.duration_since(now).unwrap_or_default();
            self.requeue_at(id, Instant::now() + wait);
        }
        if plan.is_empty()
            && attach.is_empty()
            && reaped.delete_tasks.is_empty()
            && !reaped.delete_service
        {
            let span = tracing::debug_span!("reconcile", otel.name = %format!("reconcile {}", name_of(service.as_deref(), id)), service.id = %id);
            span.in_scope(|| tracing::trace!("nothing to do"));
            return;
        }

        let span = tracing::info_span!(
            "reconcile",
            otel.name = %format!("reconcile {}", name_of(service.as_deref(), id)),
            service.id = %id,
            tasks.create = plan.create.len(),
            tasks.shutdown = plan.shutdown.len(),
            tasks.remove = plan.remove.len(),
            tasks.delete = reaped.delete_tasks.len(),
            tasks.start = plan.start.len(),
            tasks.attach = attach.len(),
            update.status = plan.update_status.as_ref().map(|u| u.message.as_str()).unwrap_or(""),
            update.rollback = plan.rollback,
        );
        if let Some(tc) = service.as_ref().and_then(|s| s.trace_context.as_ref()) {
            shoal_telemetry::set_parent(&span, shoal_telemetry::context_from_stored(tc));
        }
        let by_id: HashMap<&str, &Arc<Task>> = cached.iter().map(|t| (t.id(), t)).collect();
        let applied = self
            .apply(id, service.as_deref(), plan, attach, reaped, &by_id)
            .instrument(span)
            .await;
        if applied.revision > 0 {
            let wait = self.tasks.wait_for_revision(applied.revision);
            if tokio::time::timeout(Duration::from_secs(10), wait)
                .await
                .is_err()
            {
                tracing::warn!(service.id = %id, "task cache slow to show our writes");
            }
        }
        if applied.conflict {
            self.after_conflict(id).await;
        } else if applied.failed {
            let at = Instant::now() + self.opts.retry_delay;
            self.requeue_at(id, at);
        }
    }

    /// Reconcile again once the cache shows the write that won a race.
    async fn after_conflict(&mut self, id: &str) {
        tracing::debug!(service.id = %id, "a write lost a race; reconciling again");
        let caught_up = async {
            let revision = self.store.revision().await?;
            self.tasks.wait_for_revision(revision).await?;
            self.services.wait_for_revision(revision).await
        };
        match tokio::time::timeout(Duration::from_secs(10), caught_up).await {
            Ok(Ok(())) => self.queue.push(id),
            _ => {
                let at = Instant::now() + self.opts.retry_delay;
                self.requeue_at(id, at);
            }
        }
    }

    /// Makes the service's endpoint what its spec asks for (VIPs, published ports),
    /// written with a CAS on the service before any of its tasks is created.
    async fn ensure_endpoint(&mut self, s: &Arc<Service>) -> EndpointStep {
        let id = s.id().to_string();
        let endpoint = match self.alloc.allocate_service(s) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(service.id = %id, error = %e, "cannot allocate the service's endpoint; its tasks wait");
                self.alloc_blocked.insert(id.clone());
                let at = Instant::now() + self.opts.retry_delay * 5;
                self.requeue_at(&id, at);
                return EndpointStep::Blocked;
            }
        };
        self.alloc_blocked.remove(&id);
        if s.endpoint.as_ref() == Some(&endpoint) {
            // Frees what an earlier pass took but the store does not hold.
            self.alloc.retain_service(&id, Some(&endpoint));
            return EndpointStep::Ready(s.clone());
        }
        let mut next = (**s).clone();
        next.endpoint = Some(endpoint);
        match self.store.update_from(s.as_ref(), next).await {
            Ok(stored) => {
                self.alloc.retain_service(&id, stored.endpoint.as_ref());
                let ep = stored.endpoint.clone().unwrap_or_default();
                tracing::info!(
                    service.id = %id,
                    vips = ?ep.virtual_ips.iter().map(|v| v.addr.as_str()).collect::<Vec<_>>(),
                    ports = ?ep.ports.iter().map(|p| (p.published_port, p.target_port)).collect::<Vec<_>>(),
                    "service endpoint allocated"
                );
                let mut e = event_of("update", &stored);
                e.attributes
                    .insert("name".into(), name_of(Some(&stored), &id));
                if let Err(e) = self.bus.publish_all(&[e]).await {
                    tracing::warn!(error = %e, "service event not published");
                }
                EndpointStep::Ready(Arc::new(stored))
            }
            Err(e) => {
                if !outcome_unknown(&e) {
                    self.alloc.retain_service(&id, s.endpoint.as_ref());
                }
                if e.is_conflict() || e.is_not_found() {
                    self.after_conflict(&id).await;
                } else {
                    tracing::warn!(service.id = %id, error = %e, "cannot write the service's endpoint");
                    let at = Instant::now() + self.opts.retry_delay;
                    self.requeue_at(&id, at);
                }
                EndpointStep::Retry
            }
        }
    }

    /// Writes a plan: desired-state changes (CAS against the cached tasks), new tasks,
    /// reaped tasks — each batched and fenced — then the task events and, when tasks
    /// were created, one hint to the schedulers.
    async fn apply(
        &mut self,
        service_id: &str,
        service: Option<&Service>,
        plan: Plan,
        attach: Vec<String>,
        reaped: ReapPlan,
        cached: &HashMap<&str, &Arc<Task>>,
    ) -> Applied {
        let started = Instant::now();
        let mut applied = Applied::default();
        let mut events: Vec<Event> = Vec::new();
        let note = |applied: &mut Applied, e: &shoal_store::Error, what: &str| {
            if e.is_conflict() || e.is_not_found() {
                applied.conflict = true;
            } else {
                applied.failed = true;
                tracing::warn!(error = %e, "cannot {what}");
            }
        };

        // The update status (and an automatic rollback) first: the task writes of this
        // pass were planned for this status and spec, so they wait for it.
        if (plan.update_status.is_some() || plan.rollback)
            && let Some(s) = service
        {
            let mut next = s.clone();
            if plan.rollback {
                std::mem::swap(&mut next.spec, &mut next.previous_spec);
                std::mem::swap(&mut next.spec_version, &mut next.previous_spec_version);
                next.spec_revision = s.version();
            }
            next.update_status = plan.update_status.clone();
            match self.store.update_from(s, next).await {
                Ok(stored) => {
                    applied.revision = stored.version();
                    let status = stored.update_status.as_ref();
                    tracing::info!(
                        service.id = %service_id,
                        state = status.map(|u| u.state).unwrap_or(0),
                        message = status.map(|u| u.message.as_str()).unwrap_or(""),
                        rollback = plan.rollback,
                        "update status"
                    );
                    let mut e = event_of("update", &stored);
                    e.attributes
                        .insert("name".into(), name_of(Some(&stored), service_id));
                    if let Some(u) = status {
                        e.attributes
                            .insert("update_message".into(), u.message.clone());
                    }
                    events.push(e);
                }
                Err(e) => {
                    note(&mut applied, &e, "write the service's update status");
                    return applied;
                }
            }
            if plan.rollback {
                // Everything else follows from the rolled-back spec, next pass.
                applied.conflict = true;
                if let Err(e) = self.bus.publish_all(&events).await {
                    tracing::warn!(error = %e, "service event not published");
                }
                return applied;
            }
        }

        // Desired state moves on (never back); live tasks get the attachments they
        // lack, in the same write.
        let mut changes: Vec<(&Task, Task)> = Vec::new();
        let mut position: HashMap<&str, usize> = HashMap::new();
        let targets = plan
            .start
            .iter()
            .map(|id| (id, TaskState::Running))
            .chain(plan.shutdown.iter().map(|id| (id, TaskState::Shutdown)))
            .chain(plan.remove.iter().map(|id| (id, TaskState::Remove)));
        for (id, target) in targets {
            let Some(prev) = cached.get(id.as_str()) else {
                continue;
            };
            if prev.desired_state >= target as i32 {
                continue;
            }
            let mut next = (***prev).clone();
            next.desired_state = target as i32;
            position.insert(prev.id(), changes.len());
            changes.push((prev.as_ref(), next));
        }
        let mut attached: HashSet<&str> = HashSet::new();
        if let Some(s) = service {
            for id in &attach {
                let Some(prev) = cached.get(id.as_str()) else {
                    continue;
                };
                let networks = match self.alloc.allocate_task(prev, s) {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(task.id = %id, error = %e, "cannot attach a task to its service's networks");
                        applied.failed = true;
                        continue;
                    }
                };
                attached.insert(prev.id());
                let i = match position.get(prev.id()) {
                    Some(i) => *i,
                    None => {
                        position.insert(prev.id(), changes.len());
                        changes.push((prev.as_ref(), (***prev).clone()));
                        changes.len() - 1
                    }
                };
                changes[i].1.networks = networks;
                changes[i].1.endpoint = s.endpoint.clone();
            }
        }
        if !changes.is_empty() {
            let previous: Vec<&Task> = changes.iter().map(|(p, _)| *p).collect();
            let results = self.store.update_many_from(changes).await;
            for (prev, r) in previous.into_iter().zip(results) {
                let attaching = attached.contains(prev.id());
                match r {
                    Ok(t) => {
                        applied.revision = applied.revision.max(t.version());
                        if attaching {
                            self.alloc.retain_task(t.id(), &t.networks);
                        }
                        events.push(task_event("update", &t));
                    }
                    Err(e) => {
                        if attaching && !outcome_unknown(&e) {
                            self.alloc.retain_task(prev.id(), &prev.networks);
                        }
                        note(&mut applied, &e, "update a task");
                    }
                }
            }
        }

        // New tasks join the trace of this pass, with their addresses and the service's
        // endpoint.
        let created = plan.create.len();
        let mut created_ok = 0usize;
        let mut created_revision = 0u64;
        if created > 0 {
            let tc = shoal_telemetry::current_trace_context();
            let trace = (!tc.traceparent.is_empty()).then_some(tc);
            let mut new: Vec<Task> = Vec::with_capacity(created);
            for mut t in plan.create {
                t.trace_context = trace.clone();
                if let Some(s) = service {
                    match self.alloc.allocate_task(&t, s) {
                        Ok(networks) => {
                            t.networks = networks;
                            t.endpoint = s.endpoint.clone();
                        }
                        Err(e) => {
                            tracing::warn!(service.id = %service_id, error = %e, "cannot allocate a new task's addresses; it waits");
                            applied.failed = true;
                            continue;
                        }
                    }
                }
                new.push(t);
            }
            let ids: Vec<String> = new.iter().map(|t| t.id().to_string()).collect();
            for (id, r) in ids.iter().zip(self.store.create_many(new).await) {
                match r {
                    Ok(t) => {
                        created_ok += 1;
                        created_revision = created_revision.max(t.version());
                        applied.revision = applied.revision.max(t.version());
                        events.push(task_event("create", &t));
                    }
                    Err(e) => {
                        if !outcome_unknown(&e) {
                            self.alloc.release_task(id);
                        }
                        note(&mut applied, &e, "create a task");
                    }
                }
            }
        }

        // The reaper.
        let doomed: Vec<Task> = reaped
            .delete_tasks
            .iter()
            .filter_map(|id| cached.get(id.as_str()).map(|t| (***t).clone()))
            .collect();
        let reaped_count = doomed.len();
        if !doomed.is_empty() {
            for r in self.store.delete_many(doomed).await {
                match r {
                    Ok(t) => {
                        applied.revision = applied.revision.max(t.version());
                        events.push(task_event("remove", &t));
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => note(&mut applied, &e, "delete a task"),
                }
            }
        }
        if reaped.delete_service
            && !applied.conflict
            && !applied.failed
            && let Some(s) = service
        {
            match self
                .store
                .delete::<Service>(s.id(), Some(s.version()))
                .await
            {
                Ok(gone) => {
                    applied.revision = applied.revision.max(gone.version());
                    let mut e = event_of("remove", &gone);
                    e.attributes
                        .insert("name".into(), name_of(Some(&gone), s.id()));
                    events.push(e);
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => note(&mut applied, &e, "delete a removed service"),
            }
        }

        tracing::info!(
            service.id = %service_id,
            created = created_ok,
            reaped = reaped_count,
            events = events.len(),
            took = ?started.elapsed(),
            "reconciled"
        );
        if !events.is_empty()
            && let Err(e) = self.bus.publish_all(&events).await
        {
            tracing::warn!(error = %e, "task events not published");
        }
        // The hint carries the revision of the new tasks: a scheduler waits (bounded)
        // for its cache to show them before its pass.
        if created_ok > 0
            && let Err(e) = self
                .bus
                .publish_raw(
                    SCHEDULE_WORK_SUBJECT,
                    bytes_of(&created_revision.to_string()),
                )
                .await
        {
            tracing::warn!(error = %e, "scheduling hint not published");
        }
        applied
    }
}

fn bytes_of(s: &str) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(s.as_bytes())
}

/// Whether a live task of the service's current spec lacks the attachments (or the
/// endpoint) the service has now: `wanted` is the service's networks, in order.
fn needs_attach(t: &Task, s: &Service, wanted: &[String]) -> bool {
    if t.service_id != s.id() || !super::is_live(t) || !shoal_proto::task_is_current(t, s) {
        return false;
    }
    let attached: Vec<&str> = t
        .networks
        .iter()
        .filter(|a| !a.addresses.is_empty())
        .filter_map(|a| a.network.as_ref().map(|n| n.id()))
        .collect();
    t.endpoint != s.endpoint || attached != wanted
}

fn state_pair(t: &Task) -> (i32, i32) {
    (
        t.status.as_ref().map(|s| s.state).unwrap_or(0),
        t.desired_state,
    )
}

fn node_pair(n: &Node) -> (i32, i32) {
    (
        n.status.as_ref().map(|s| s.state).unwrap_or(0),
        n.spec.as_ref().map(|s| s.availability).unwrap_or(0),
    )
}

fn is_global(s: &Service) -> bool {
    matches!(
        s.spec.as_ref().and_then(|s| s.mode.as_ref()),
        Some(Mode::Global(_)) | Some(Mode::GlobalJob(_))
    )
}

fn name_of(service: Option<&Service>, id: &str) -> String {
    service
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.annotations.as_ref())
        .map(|a| a.name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| id.to_string())
}

fn event_of<T: Object>(action: &str, obj: &T) -> Event {
    Event {
        kind: T::KIND.as_str().to_string(),
        action: action.to_string(),
        id: obj.id().to_string(),
        version: obj.version(),
        time: Some(prost_types::Timestamp::from(SystemTime::now())),
        attributes: HashMap::new(),
    }
}

/// A task event with the facts consumers filter on.
fn task_event(action: &str, t: &Task) -> Event {
    let mut e = event_of(action, t);
    let state = t
        .status
        .as_ref()
        .and_then(|s| TaskState::try_from(s.state).ok())
        .unwrap_or(TaskState::New);
    e.attributes
        .insert("service_id".into(), t.service_id.clone());
    e.attributes.insert("node_id".into(), t.node_id.clone());
    e.attributes
        .insert("state".into(), state.display_name().to_ascii_lowercase());
    if let Some(a) = &t.annotations {
        e.attributes.insert("name".into(), a.name.clone());
    }
    e
}

#[cfg(test)]
mod tests {
    use super::WorkQueue;

    #[test]
    fn the_queue_holds_each_id_once_and_is_bounded() {
        let mut q = WorkQueue::new(2);
        q.push("a");
        q.push("b");
        q.push("a");
        q.push("");
        assert!(!q.overflowed);
        q.push("c");
        assert!(q.overflowed, "a full queue drops and asks for a resync");
        assert_eq!(q.pop().as_deref(), Some("a"));
        q.push("a");
        assert_eq!(q.pop().as_deref(), Some("b"));
        assert_eq!(q.pop().as_deref(), Some("a"));
        assert_eq!(q.pop(), None);
        assert!(q.is_empty());
    }
}
