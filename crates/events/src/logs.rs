//! Task output over NATS.
//!
//! Workers publish each line a task writes as a [`LogMessage`] on
//! `shoal.logs.<service id>.<task id>` ([`log_subject`]) and answer history requests
//! on `shoal.logs.history.<node id>` ([`history_subject`]): a [`LogHistoryRequest`]
//! answered with one [`LogHistoryResponse`] (NATS request/reply, protobuf payloads).
//! The manager's `ServiceLogs` subscribes to the live lines first, then asks each
//! node for its history.
//!
//! Log lines are best effort like everything on core NATS: a slow subscriber loses
//! lines, a worker whose queue is full drops them ([`LogPublisher`]); the history on
//! the node is what is kept.
//!
//! Service and task ids are 25 base36 characters, so `history` is never a service id
//! and the two subject families cannot collide; a wildcard log subscription still
//! skips `shoal.logs.history.*` explicitly.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use prost::Message as _;
use tokio::sync::mpsc;

use crate::subject::check_subject;
use crate::{Error, EventBus};

pub use shoal_proto::v1::{LogHistoryRequest, LogHistoryResponse, LogMessage};

/// Every log subject starts with this.
pub const LOGS_PREFIX: &str = "shoal.logs";

/// History requests for a node go to `shoal.logs.history.<node id>`.
pub const LOG_HISTORY_PREFIX: &str = "shoal.logs.history";

/// The subject the lines of task `task_id` of service `service_id` are published on.
pub fn log_subject(service_id: &str, task_id: &str) -> String {
    format!("{LOGS_PREFIX}.{service_id}.{task_id}")
}

/// The subject a node's worker answers history requests on.
pub fn history_subject(node_id: &str) -> String {
    format!("{LOG_HISTORY_PREFIX}.{node_id}")
}

/// The subscription subject for an optional service and task (`*` for any).
fn log_filter_subject(service_id: Option<&str>, task_id: Option<&str>) -> Result<String, Error> {
    let subject = log_subject(service_id.unwrap_or("*"), task_id.unwrap_or("*"));
    check_subject(&subject, true)?;
    if subject.split('.').count() != 4 {
        return Err(Error::InvalidSubject {
            subject,
            reason: "service and task ids must be single tokens",
        });
    }
    Ok(subject)
}

fn is_history_subject(subject: &str) -> bool {
    subject
        .strip_prefix(LOG_HISTORY_PREFIX)
        .is_some_and(|rest| rest.starts_with('.'))
}

impl EventBus {
    /// Publishes one line on its task's subject. Log lines carry no trace context (one
    /// header block per line would cost more than the line). Waits only for room in
    /// the client's outgoing buffer; for a caller that must never wait, use
    /// [`EventBus::log_publisher`].
    pub async fn publish_log(&self, msg: &LogMessage) -> Result<(), Error> {
        let subject = log_subject(&msg.service_id, &msg.task_id);
        check_subject(&subject, false)?;
        self.client()
            .publish(subject, Bytes::from(msg.encode_to_vec()))
            .await?;
        Ok(())
    }

    /// A fire-and-forget publisher with a queue of `capacity` lines: a background task
    /// drains it into NATS; when it is full (NATS down or too slow) new lines are
    /// dropped and counted. The task ends when every clone of the publisher is dropped.
    /// Needs a tokio runtime.
    pub fn log_publisher(&self, capacity: usize) -> LogPublisher {
        let (tx, mut rx) = mpsc::channel::<LogMessage>(capacity.max(1));
        let bus = self.clone();
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                if let Err(e) = bus.publish_log(&msg).await {
                    tracing::debug!(task = %msg.task_id, error = %e, "log line not published");
                }
            }
        });
        LogPublisher {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Live log lines of one service and/or task (`None` = any), from the moment this
    /// returns (the server has registered the subscription). Undecodable messages are
    /// skipped. Dropping the stream unsubscribes.
    pub async fn subscribe_logs(
        &self,
        service_id: Option<&str>,
        task_id: Option<&str>,
    ) -> Result<LogStream, Error> {
        let subject = log_filter_subject(service_id, task_id)?;
        let inner = self.subscribe_raw(&subject).await?;
        Ok(LogStream { inner })
    }

    /// Asks `node_id`'s worker for its history of some tasks and waits at most
    /// `timeout`. [`Error::NoResponders`] means no worker of that node is listening
    /// (the node is down): callers treat that as "no lines".
    pub async fn request_log_history(
        &self,
        node_id: &str,
        request: &LogHistoryRequest,
        timeout: Duration,
    ) -> Result<LogHistoryResponse, Error> {
        let subject = history_subject(node_id);
        check_subject(&subject, false)?;
        let mut headers = async_nats::HeaderMap::new();
        shoal_telemetry::inject_nats(&mut headers);
        let req = async_nats::Request::new()
            .payload(Bytes::from(request.encode_to_vec()))
            .headers(headers)
            .timeout(Some(timeout));
        let reply = self
            .client()
            .send_request(subject.clone(), req)
            .await
            .map_err(|e| match e.kind() {
                async_nats::RequestErrorKind::NoResponders => Error::NoResponders(subject.clone()),
                async_nats::RequestErrorKind::TimedOut => Error::RequestTimeout {
                    subject: subject.clone(),
                    timeout,
                },
                _ => Error::Request(e),
            })?;
        LogHistoryResponse::decode(reply.payload.as_ref())
            .map_err(|source| Error::Decode { subject, source })
    }

    /// History requests for `node_id`, for its worker to answer with
    /// [`HistoryRequest::respond`]. Undecodable requests are skipped. Dropping the
    /// stream stops answering.
    pub async fn serve_log_history(&self, node_id: &str) -> Result<HistoryRequests, Error> {
        let subject = history_subject(node_id);
        check_subject(&subject, false)?;
        let inner = self.client().subscribe(subject).await?;
        self.server_round_trip().await;
        Ok(HistoryRequests {
            inner,
            bus: self.clone(),
        })
    }

    /// Returns once the server has processed what this connection sent before (the
    /// SUB above), like `subscribe_raw` does: a request nobody answers comes back
    /// "no responders" only after the server handled our earlier commands.
    async fn server_round_trip(&self) {
        let client = self.client();
        let probe = client.request(client.new_inbox(), Bytes::new());
        match tokio::time::timeout(Duration::from_secs(5), probe).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "NATS round trip after subscribe failed"),
            Err(_) => tracing::debug!("NATS round trip after subscribe timed out"),
        }
    }
}

/// A fire-and-forget, bounded log line queue (see [`EventBus::log_publisher`]).
/// Cheap to clone; clones share the queue.
#[derive(Debug, Clone)]
pub struct LogPublisher {
    tx: mpsc::Sender<LogMessage>,
    dropped: Arc<AtomicU64>,
}

impl LogPublisher {
    /// Queues `msg`; returns false (and counts it) when the queue is full.
    pub fn publish(&self, msg: LogMessage) -> bool {
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Lines dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Decoded live log lines of one subscription. Dropping it unsubscribes.
#[derive(Debug)]
pub struct LogStream {
    inner: crate::RawStream,
}

impl Stream for LogStream {
    type Item = LogMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<LogMessage>> {
        loop {
            let msg = match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(msg)) => msg,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            if is_history_subject(&msg.subject) {
                continue;
            }
            match LogMessage::decode(msg.payload.as_ref()) {
                Ok(line) => return Poll::Ready(Some(line)),
                Err(e) => {
                    tracing::debug!(subject = %msg.subject, error = %e, "skipping undecodable log line");
                }
            }
        }
    }
}

/// History requests addressed to one node.
#[derive(Debug)]
pub struct HistoryRequests {
    inner: async_nats::Subscriber,
    bus: EventBus,
}

/// One history request and where to send the answer.
#[derive(Debug)]
pub struct HistoryRequest {
    pub request: LogHistoryRequest,
    /// The requester's trace context.
    pub trace: opentelemetry::Context,
    reply: Option<async_nats::Subject>,
    bus: EventBus,
}

impl HistoryRequest {
    /// Sends `response`. If it is larger than the server's payload limit, the oldest
    /// lines (by their order in `response`, so put them oldest first) are left out
    /// until it fits. A request without a reply subject is ignored.
    pub async fn respond(self, mut response: LogHistoryResponse) -> Result<(), Error> {
        let Some(reply) = self.reply else {
            return Ok(());
        };
        let limit = self.bus.client().server_info().max_payload;
        if limit > 0 {
            let mut size = response.encoded_len();
            if size > limit {
                // Drop from the front until it fits: each message costs its encoded
                // length plus the tag and length prefix (at most 1 + 10 bytes).
                let mut cut = 0;
                while size > limit && cut < response.messages.len() {
                    size = size.saturating_sub(response.messages[cut].encoded_len() + 11);
                    cut += 1;
                }
                response.messages.drain(..cut);
                while response.encoded_len() > limit && !response.messages.is_empty() {
                    response.messages.remove(0);
                }
            }
        }
        self.bus
            .client()
            .publish(reply, Bytes::from(response.encode_to_vec()))
            .await?;
        Ok(())
    }
}

impl Stream for HistoryRequests {
    type Item = HistoryRequest;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<HistoryRequest>> {
        loop {
            let msg = match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(msg)) => msg,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            match LogHistoryRequest::decode(msg.payload.as_ref()) {
                Ok(request) => {
                    return Poll::Ready(Some(HistoryRequest {
                        request,
                        trace: shoal_telemetry::extract_nats(msg.headers.as_ref()),
                        reply: msg.reply,
                        bus: self.bus.clone(),
                    }));
                }
                Err(e) => {
                    tracing::debug!(subject = %msg.subject, error = %e, "skipping undecodable history request");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() -> Result<(), Error> {
        assert_eq!(log_subject("s1", "t1"), "shoal.logs.s1.t1");
        assert_eq!(history_subject("n1"), "shoal.logs.history.n1");
        assert_eq!(log_filter_subject(None, None)?, "shoal.logs.*.*");
        assert_eq!(log_filter_subject(Some("s1"), None)?, "shoal.logs.s1.*");
        assert_eq!(log_filter_subject(None, Some("t1"))?, "shoal.logs.*.t1");
        assert!(log_filter_subject(Some("a.b"), None).is_err());
        assert!(log_filter_subject(Some(""), None).is_err());
        assert!(log_filter_subject(Some("a b"), None).is_err());
        assert!(is_history_subject("shoal.logs.history.n1"));
        assert!(!is_history_subject("shoal.logs.historyx.n1"));
        assert!(!is_history_subject("shoal.logs.s1.t1"));
        Ok(())
    }
}
