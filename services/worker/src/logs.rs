//! Task output over NATS: with `nats_url` set, the worker publishes each output line
//! of its tasks as a `LogMessage` on `shoal.logs.<service id>.<task id>` (through a
//! bounded queue that drops lines rather than slow a task down) and answers
//! `LogHistoryRequest`s on `shoal.logs.history.<node id>` from the Docker Engine's log
//! or the process's log file.

use futures::StreamExt;
use shoal_events::EventBus;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::tasks::TaskManager;

/// Lines queued for NATS before new ones are dropped.
pub const PUBLISH_QUEUE: usize = 4096;

/// Connects to NATS when `url` is set; the worker runs without log shipping when it
/// cannot (logged).
pub async fn connect(url: &str) -> Option<EventBus> {
    if url.is_empty() {
        return None;
    }
    let opts = shoal_events::BusOptions {
        retry_initial_connect: true,
        ..Default::default()
    };
    match EventBus::connect_with(url, "shoal-worker", opts).await {
        Ok(bus) => Some(bus),
        Err(e) => {
            tracing::warn!(url, error = %e, "cannot connect to NATS: task output is not shipped");
            None
        }
    }
}

/// Answers history requests for `node_id` until `stop`.
pub async fn serve_history(
    bus: EventBus,
    node_id: String,
    manager: TaskManager,
    stop: CancellationToken,
) {
    let mut requests = match bus.serve_log_history(&node_id).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot serve log history requests");
            return;
        }
    };
    loop {
        let request = tokio::select! {
            _ = stop.cancelled() => return,
            next = requests.next() => match next {
                Some(r) => r,
                None => return,
            },
        };
        let manager = manager.clone();
        let span = tracing::info_span!("log history", tasks = request.request.task_ids.len());
        shoal_telemetry::set_parent(&span, request.trace.clone());
        tokio::spawn(
            async move {
                let response = manager.history(&request.request).await;
                if let Err(e) = request.respond(response).await {
                    tracing::debug!(error = %e, "cannot answer a log history request");
                }
            }
            .instrument(span),
        );
    }
}
