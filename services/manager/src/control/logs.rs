//! `ServiceLogs`: task output gathered from the workers over NATS.
//!
//! The selected tasks are grouped by node; each node's worker is asked for its history
//! (`tail` lines per task) concurrently, with a short timeout, so a dead node only
//! contributes nothing. The answers are merged by timestamp, oldest first. With
//! `follow`, the live subscriptions are made *before* the history is asked for, so no
//! line falls between the two; live lines the history already showed (same task and
//! timestamp, same text) are skipped. A followed stream ends when the client goes away
//! or the manager shuts down.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use shoal_events::EventBus;
use shoal_events::logs::{LogHistoryRequest, LogMessage};
use shoal_grpc_host::ShutdownToken;
use shoal_proto::v1::Task;
use shoal_store::Object;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::Instrument;

/// How long a node's worker has to answer a history request.
pub const HISTORY_TIMEOUT: Duration = Duration::from_secs(3);

/// History requests in flight at once.
const CONCURRENT_NODES: usize = 32;

/// Lines buffered towards the client.
const OUT_CAPACITY: usize = 256;

/// More selectors than this subscribe to every log line and filter here.
const MAX_SUBSCRIPTIONS: usize = 32;

pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogMessage, Status>> + Send + 'static>>;

/// What a `ServiceLogs` request resolved to.
#[derive(Debug, Default)]
pub struct Selection {
    /// Whole services: every task of theirs, present and future.
    pub services: HashSet<String>,
    /// Single tasks (by id) selected on their own.
    pub tasks: HashSet<String>,
    /// Every selected task in the store now (for the history).
    pub known: Vec<Task>,
}

impl Selection {
    pub fn add_service(&mut self, service_id: &str, tasks: Vec<Task>) {
        self.services.insert(service_id.to_string());
        self.known.extend(tasks);
    }

    pub fn add_task(&mut self, task: Task) {
        self.tasks.insert(task.id().to_string());
        self.known.push(task);
    }

    fn wants(&self, line: &LogMessage) -> bool {
        self.services.contains(&line.service_id) || self.tasks.contains(&line.task_id)
    }
}

type Stamp = (i64, i32);

fn stamp(line: &LogMessage) -> Option<Stamp> {
    line.timestamp.as_ref().map(|t| (t.seconds, t.nanos))
}

/// Opens the stream: subscriptions first (with follow), then history and live lines
/// from a task that ends with the client or the manager.
pub async fn stream(
    bus: EventBus,
    selection: Selection,
    follow: bool,
    tail: i64,
    shutdown: ShutdownToken,
) -> Result<LogStream, Status> {
    let live = if follow {
        Some(subscribe(&bus, &selection).await?)
    } else {
        None
    };
    let (tx, rx) = mpsc::channel(OUT_CAPACITY);
    let span = tracing::info_span!(
        "service logs",
        services = selection.services.len(),
        tasks = selection.known.len(),
        follow
    );
    tokio::spawn(
        async move {
            tokio::select! {
                () = pump(bus, selection, live, tail, &tx) => {}
                () = tx.closed() => tracing::debug!("log client went away"),
                () = shutdown.cancelled() => tracing::debug!("manager shutting down; log stream ends"),
            }
        }
        .instrument(span),
    );
    Ok(Box::pin(ReceiverStream::new(rx)))
}

async fn subscribe(
    bus: &EventBus,
    selection: &Selection,
) -> Result<futures::stream::SelectAll<shoal_events::LogStream>, Status> {
    let unavailable =
        |e: shoal_events::Error| Status::unavailable(format!("cannot follow logs: {e}"));
    let mut streams = Vec::new();
    if selection.services.len() + selection.tasks.len() > MAX_SUBSCRIPTIONS {
        streams.push(bus.subscribe_logs(None, None).await.map_err(unavailable)?);
    } else {
        for service in &selection.services {
            streams.push(
                bus.subscribe_logs(Some(service), None)
                    .await
                    .map_err(unavailable)?,
            );
        }
        for task in &selection.tasks {
            streams.push(
                bus.subscribe_logs(None, Some(task))
                    .await
                    .map_err(unavailable)?,
            );
        }
    }
    Ok(futures::stream::select_all(streams))
}

async fn pump(
    bus: EventBus,
    selection: Selection,
    live: Option<futures::stream::SelectAll<shoal_events::LogStream>>,
    tail: i64,
    tx: &mpsc::Sender<Result<LogMessage, Status>>,
) {
    let history = if tail == 0 {
        Vec::new()
    } else {
        history(&bus, &selection, tail).await
    };
    // What the history showed last per task, for skipping live duplicates.
    let mut shown: HashMap<String, (Stamp, HashSet<Vec<u8>>)> = HashMap::new();
    for line in history {
        if let Some(ts) = stamp(&line) {
            let entry = shown
                .entry(line.task_id.clone())
                .or_insert_with(|| (ts, HashSet::new()));
            if ts > entry.0 {
                *entry = (ts, HashSet::new());
            }
            if ts == entry.0 {
                entry.1.insert(line.data.clone());
            }
        }
        if tx.send(Ok(line)).await.is_err() {
            return;
        }
    }
    let Some(mut live) = live else { return };
    while let Some(line) = live.next().await {
        if !selection.wants(&line) {
            continue;
        }
        if let (Some(ts), Some((last, lines))) = (stamp(&line), shown.get(&line.task_id))
            && (ts < *last || (ts == *last && lines.contains(&line.data)))
        {
            continue;
        }
        if tx.send(Ok(line)).await.is_err() {
            return;
        }
    }
}

/// Every node's answer for its tasks, merged oldest first; at most `tail` lines per
/// task (all when negative).
async fn history(bus: &EventBus, selection: &Selection, tail: i64) -> Vec<LogMessage> {
    let mut by_node: HashMap<String, Vec<String>> = HashMap::new();
    let mut wanted = HashSet::new();
    for task in &selection.known {
        if task.node_id.is_empty() || !wanted.insert(task.id()) {
            continue;
        }
        by_node
            .entry(task.node_id.clone())
            .or_default()
            .push(task.id().to_string());
    }
    let requests: Vec<_> = by_node
        .into_iter()
        .map(|(node, task_ids)| {
            let bus = bus.clone();
            async move { node_history(bus, node, task_ids, tail).await }
        })
        .collect();
    let answers: Vec<Vec<LogMessage>> = futures::stream::iter(requests)
        .buffer_unordered(CONCURRENT_NODES)
        .collect()
        .await;
    let mut lines: Vec<LogMessage> = answers
        .into_iter()
        .flatten()
        .filter(|l| wanted.contains(l.task_id.as_str()))
        .collect();
    // Each node answers oldest first per task; a stable sort keeps that order for
    // lines with equal timestamps.
    lines.sort_by_key(|l| stamp(l).unwrap_or((i64::MIN, 0)));
    keep_tail(&mut lines, tail);
    lines
}

async fn node_history(
    bus: EventBus,
    node: String,
    task_ids: Vec<String>,
    tail: i64,
) -> Vec<LogMessage> {
    let request = LogHistoryRequest { task_ids, tail };
    match bus
        .request_log_history(&node, &request, HISTORY_TIMEOUT)
        .await
    {
        Ok(resp) => resp.messages,
        Err(shoal_events::Error::NoResponders(_)) => {
            tracing::debug!(%node, "no worker answers for the node; no history from it");
            Vec::new()
        }
        Err(e) => {
            tracing::warn!(%node, error = %e, "log history not available from node");
            Vec::new()
        }
    }
}

/// Keeps the newest `tail` lines of each task (all when negative).
fn keep_tail(lines: &mut Vec<LogMessage>, tail: i64) {
    if let Ok(tail) = usize::try_from(tail) {
        let mut per_task: HashMap<String, usize> = HashMap::new();
        for l in lines.iter() {
            *per_task.entry(l.task_id.clone()).or_default() += 1;
        }
        // Keep the newest `tail` of each task: skip its first (count - tail).
        let mut skip: HashMap<String, usize> = per_task
            .into_iter()
            .map(|(t, n)| (t, n.saturating_sub(tail)))
            .collect();
        lines.retain(|l| match skip.get_mut(&l.task_id) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        });
    }
}
