//! The NATS connection: publishing, subscribing, connection-state signals.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream;
use prost::Message as _;
use shoal_proto::v1::Event;
use tokio::sync::broadcast;

use crate::Error;
use crate::subject::{check_subject, subject};

/// What a consumer must know about the connection: after `Reconnected` or
/// `SlowConsumer` it may have missed events and resyncs from its store cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BusSignal {
    /// The connection came back after a loss; subscriptions are live again.
    Reconnected,
    /// A subscription could not keep up and the client dropped messages for it.
    SlowConsumer,
    /// The connection was lost; the client keeps reconnecting.
    Disconnected,
}

/// Connection settings beyond the URL.
#[derive(Debug, Clone)]
pub struct BusOptions {
    /// Messages buffered per subscription before newer ones are dropped (and
    /// [`BusSignal::SlowConsumer`] is sent).
    pub subscription_capacity: usize,
    /// Connect in the background instead of failing when NATS is not up yet.
    pub retry_initial_connect: bool,
    /// Upper bound for [`EventBus::flush`] and the wait in `subscribe`.
    pub flush_timeout: Duration,
}

impl Default for BusOptions {
    fn default() -> Self {
        Self {
            subscription_capacity: 8 * 1024,
            retry_initial_connect: false,
            flush_timeout: Duration::from_secs(5),
        }
    }
}

/// Signals are rare; a receiver that lags this far behind has to resync anyway.
const SIGNAL_CAPACITY: usize = 64;

/// A NATS connection carrying shoal events. Cheap to clone; clones share the
/// connection.
#[derive(Debug, Clone)]
pub struct EventBus {
    client: async_nats::Client,
    signals: broadcast::Sender<BusSignal>,
    flush_timeout: Duration,
}

impl EventBus {
    /// Connects to `url` (`nats://host:4222`, several comma-separated) as client `name`
    /// with default [`BusOptions`]. Once connected, the client reconnects forever.
    pub async fn connect(url: &str, name: &str) -> Result<EventBus, Error> {
        Self::connect_with(url, name, BusOptions::default()).await
    }

    pub async fn connect_with(url: &str, name: &str, opts: BusOptions) -> Result<EventBus, Error> {
        let (signals, _) = broadcast::channel(SIGNAL_CAPACITY);
        let tx = signals.clone();
        let state = Arc::new(SignalState::default());
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .max_reconnects(None)
            .subscription_capacity(opts.subscription_capacity.max(1))
            .event_callback(move |event| {
                if let Some(signal) = state.signal_for(&event) {
                    // No receivers is fine: nobody needs to resync.
                    let _ = tx.send(signal);
                }
                std::future::ready(())
            });
        if opts.retry_initial_connect {
            options = options.retry_on_initial_connect();
        }
        let client = options
            .connect(url)
            .await
            .map_err(|source| Error::Connect {
                url: url.to_owned(),
                source,
            })?;
        Ok(EventBus {
            client,
            signals,
            flush_timeout: opts.flush_timeout,
        })
    }

    /// Connection signals from now on. A `Lagged` receive error means signals were
    /// missed: treat it like [`BusSignal::Reconnected`].
    pub fn signals(&self) -> broadcast::Receiver<BusSignal> {
        self.signals.subscribe()
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// The underlying client, for what this crate does not wrap (request/reply).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Publishes `event` on `shoal.events.<kind>.<action>` with the current span's
    /// trace context in the headers.
    ///
    /// Returns once the client has the message; it goes out right away. During a
    /// NATS outage messages are buffered up to the client's capacity — events are hints,
    /// and consumers resync after reconnecting.
    pub async fn publish(&self, event: &Event) -> Result<(), Error> {
        let subject = subject(&event.kind, &event.action)?;
        self.send(subject, Bytes::from(event.encode_to_vec())).await
    }

    /// Publishes every event (all subjects are checked first, so either all are sent or
    /// none), then flushes once.
    pub async fn publish_all(&self, events: &[Event]) -> Result<(), Error> {
        let subjects = events
            .iter()
            .map(|e| subject(&e.kind, &e.action))
            .collect::<Result<Vec<_>, _>>()?;
        for (subject, event) in subjects.into_iter().zip(events) {
            self.send(subject, Bytes::from(event.encode_to_vec()))
                .await?;
        }
        self.flush().await
    }

    /// Publishes an arbitrary payload (work items, log lines) with the current span's
    /// trace context. `subject` must not contain wildcards.
    pub async fn publish_raw(&self, subject: &str, payload: Bytes) -> Result<(), Error> {
        check_subject(subject, false)?;
        self.send(subject.to_owned(), payload).await
    }

    /// Waits until everything published so far has been written to the server, for at
    /// most the configured flush timeout.
    pub async fn flush(&self) -> Result<(), Error> {
        tokio::time::timeout(self.flush_timeout, self.client.flush())
            .await
            .map_err(|_| Error::FlushTimeout(self.flush_timeout))??;
        Ok(())
    }

    /// Events matching `filter`. Every subscriber gets every matching event.
    pub async fn subscribe(&self, filter: &crate::EventFilter) -> Result<EventStream, Error> {
        let subject = filter.subject()?;
        let inner = self.client.subscribe(subject).await?;
        self.await_server().await;
        Ok(EventStream { inner })
    }

    /// Events matching `filter`, shared out among the members of queue `group`: each
    /// event goes to exactly one of them.
    pub async fn queue_subscribe(
        &self,
        filter: &crate::EventFilter,
        group: &str,
    ) -> Result<EventStream, Error> {
        let subject = filter.subject()?;
        check_group(group)?;
        let inner = self
            .client
            .queue_subscribe(subject, group.to_owned())
            .await?;
        self.await_server().await;
        Ok(EventStream { inner })
    }

    /// Raw messages on `subject` (wildcards allowed).
    pub async fn subscribe_raw(&self, subject: &str) -> Result<RawStream, Error> {
        check_subject(subject, true)?;
        let inner = self.client.subscribe(subject.to_owned()).await?;
        self.await_server().await;
        Ok(RawStream { inner })
    }

    /// Raw messages on `subject`, each to exactly one member of queue `group`.
    pub async fn queue_subscribe_raw(
        &self,
        subject: &str,
        group: &str,
    ) -> Result<RawStream, Error> {
        check_subject(subject, true)?;
        check_group(group)?;
        let inner = self
            .client
            .queue_subscribe(subject.to_owned(), group.to_owned())
            .await?;
        self.await_server().await;
        Ok(RawStream { inner })
    }

    async fn send(&self, subject: String, payload: Bytes) -> Result<(), Error> {
        let mut headers = async_nats::HeaderMap::new();
        shoal_telemetry::inject_nats(&mut headers);
        if headers.is_empty() {
            self.client.publish(subject, payload).await?;
        } else {
            self.client
                .publish_with_headers(subject, headers, payload)
                .await?;
        }
        Ok(())
    }

    /// Returns once the server has processed everything this connection sent before,
    /// so a new subscription already receives what any client publishes next. A request
    /// nobody answers makes the round trip: the server's "no responders" reply comes
    /// after it handled our earlier commands. Best effort: while disconnected it gives
    /// up after the flush timeout; the subscription is then made on reconnect.
    async fn await_server(&self) {
        let inbox = self.client.new_inbox();
        let probe = self.client.request(inbox, Bytes::new());
        match tokio::time::timeout(self.flush_timeout, probe).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "NATS round trip after subscribe failed"),
            Err(_) => tracing::debug!("NATS round trip after subscribe timed out"),
        }
    }
}

fn check_group(group: &str) -> Result<(), Error> {
    if group.is_empty() || group.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::InvalidQueueGroup(group.to_owned()));
    }
    Ok(())
}

/// Turns client events into signals.
#[derive(Debug)]
struct SignalState {
    /// A disconnect happened, so the next `Connected` (which the client also reports
    /// for the first connection) means "reconnected".
    lost: AtomicBool,
    /// The client reports every dropped message; consumers need one nudge to resync,
    /// not thousands. Milliseconds since `epoch` of the last signal sent.
    epoch: Instant,
    last_slow_ms: AtomicU64,
    dropped: AtomicU64,
}

impl Default for SignalState {
    fn default() -> Self {
        Self {
            lost: AtomicBool::new(false),
            epoch: Instant::now(),
            last_slow_ms: AtomicU64::new(NEVER),
            dropped: AtomicU64::new(0),
        }
    }
}

const NEVER: u64 = u64::MAX;

/// At most one `SlowConsumer` signal (and warning) per this interval.
const SLOW_CONSUMER_INTERVAL: Duration = Duration::from_secs(1);

impl SignalState {
    fn signal_for(&self, event: &async_nats::Event) -> Option<BusSignal> {
        match event {
            async_nats::Event::Connected => {
                if self.lost.swap(false, Ordering::SeqCst) {
                    tracing::info!("reconnected to NATS");
                    Some(BusSignal::Reconnected)
                } else {
                    tracing::debug!("connected to NATS");
                    None
                }
            }
            async_nats::Event::Disconnected => {
                self.lost.store(true, Ordering::SeqCst);
                tracing::warn!("lost the NATS connection; reconnecting");
                Some(BusSignal::Disconnected)
            }
            async_nats::Event::SlowConsumer(sid) => {
                self.dropped.fetch_add(1, Ordering::SeqCst);
                let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(NEVER - 1);
                let last = self.last_slow_ms.load(Ordering::SeqCst);
                let interval = u64::try_from(SLOW_CONSUMER_INTERVAL.as_millis()).unwrap_or(0);
                let due = last == NEVER || now.saturating_sub(last) >= interval;
                if !due
                    || self
                        .last_slow_ms
                        .compare_exchange(last, now, Ordering::SeqCst, Ordering::SeqCst)
                        .is_err()
                {
                    return None;
                }
                let dropped = self.dropped.swap(0, Ordering::SeqCst);
                tracing::warn!(
                    sid,
                    dropped,
                    "NATS subscription fell behind; messages were dropped"
                );
                Some(BusSignal::SlowConsumer)
            }
            other => {
                tracing::warn!(event = %other, "NATS client event");
                None
            }
        }
    }
}

/// An event as received, with the publisher's trace context (empty if it sent none).
#[derive(Debug, Clone)]
pub struct Received {
    pub event: Event,
    pub trace: opentelemetry::Context,
}

/// Decoded events of one subscription; undecodable messages are logged and skipped.
/// Dropping it unsubscribes.
#[derive(Debug)]
pub struct EventStream {
    inner: async_nats::Subscriber,
}

impl Stream for EventStream {
    type Item = Received;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Received>> {
        loop {
            let msg = match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(msg)) => msg,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            match Event::decode(msg.payload.as_ref()) {
                Ok(event) => {
                    let trace = shoal_telemetry::extract_nats(msg.headers.as_ref());
                    return Poll::Ready(Some(Received { event, trace }));
                }
                Err(e) => {
                    tracing::warn!(subject = %msg.subject, error = %e, "skipping undecodable event");
                }
            }
        }
    }
}

/// A message on a non-event subject, with the publisher's trace context.
#[derive(Debug, Clone)]
pub struct RawMessage {
    pub subject: String,
    pub payload: Bytes,
    pub trace: opentelemetry::Context,
}

/// Messages of one raw subscription. Dropping it unsubscribes.
#[derive(Debug)]
pub struct RawStream {
    inner: async_nats::Subscriber,
}

impl Stream for RawStream {
    type Item = RawMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<RawMessage>> {
        Pin::new(&mut self.inner).poll_next(cx).map(|msg| {
            msg.map(|msg| RawMessage {
                trace: shoal_telemetry::extract_nats(msg.headers.as_ref()),
                subject: msg.subject.to_string(),
                payload: msg.payload,
            })
        })
    }
}
