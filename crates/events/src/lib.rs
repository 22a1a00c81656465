//! shoal's event bus: hints on NATS that something changed in etcd.
//!
//! After a write commits, its author publishes a [`shoal_proto::v1::Event`] on
//! `shoal.events.<kind>.<action>` with the writer's W3C trace context in the NATS
//! headers. Core NATS is at-most-once, so an event only says "look again": consumers
//! reconcile from their store cache on a timer and whenever the bus reports a
//! [`BusSignal::Reconnected`] or [`BusSignal::SlowConsumer`], never relying on having
//! seen every event.
//!
//! The same connection also carries work for queue groups (pending tasks to schedulers
//! on [`SCHEDULE_WORK_SUBJECT`]) through the `*_raw` calls, and task output
//! ([`logs`]: lines on `shoal.logs.<service>.<task>`, history requests answered by each
//! node's worker on `shoal.logs.history.<node>`).
//!
//! Boundaries: this crate encodes, routes and traces messages; it never reads etcd and
//! knows nothing about what an event means.

mod bus;
pub mod logs;
mod subject;

pub use bus::{BusOptions, BusSignal, EventBus, EventStream, RawMessage, RawStream, Received};
pub use logs::{
    HistoryRequest, HistoryRequests, LOG_HISTORY_PREFIX, LOGS_PREFIX, LogPublisher, LogStream,
    history_subject, log_subject,
};
pub use subject::{EVENTS_PREFIX, EventFilter, SCHEDULE_WORK_SUBJECT, subject};

pub use shoal_proto::v1::Event;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "invalid event {what} {value:?}: must be a non-empty token without '.', '*', '>' or whitespace"
    )]
    InvalidToken { what: &'static str, value: String },
    #[error("invalid subject {subject:?}: {reason}")]
    InvalidSubject {
        subject: String,
        reason: &'static str,
    },
    #[error("invalid queue group {0:?}: must be non-empty without whitespace")]
    InvalidQueueGroup(String),
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("publishing to NATS failed: {0}")]
    Publish(#[from] async_nats::PublishError),
    #[error("subscribing on NATS failed: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    #[error("flushing to NATS failed: {0}")]
    Flush(#[from] async_nats::client::FlushError),
    #[error("flushing to NATS did not finish within {0:?} (is the server reachable?)")]
    FlushTimeout(std::time::Duration),
    #[error("nobody answers requests on {0}")]
    NoResponders(String),
    #[error("no answer on {subject} within {timeout:?}")]
    RequestTimeout {
        subject: String,
        timeout: std::time::Duration,
    },
    #[error("NATS request failed: {0}")]
    Request(async_nats::RequestError),
    #[error("undecodable answer on {subject}: {source}")]
    Decode {
        subject: String,
        source: prost::DecodeError,
    },
}
