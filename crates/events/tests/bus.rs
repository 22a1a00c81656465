//! The event bus against a real nats-server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use shoal_events::{BusSignal, Event, EventBus, EventFilter, EventStream, SCHEDULE_WORK_SUBJECT};
use shoal_testkit::{Nats, wait_for};
use tokio::sync::broadcast;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

const DEADLINE: Duration = Duration::from_secs(20);

fn event(kind: &str, action: &str, id: &str) -> Event {
    Event {
        kind: kind.to_owned(),
        action: action.to_owned(),
        id: id.to_owned(),
        version: 7,
        time: None,
        attributes: HashMap::from([("name".to_owned(), format!("{kind}-{id}"))]),
    }
}

async fn next(stream: &mut EventStream) -> anyhow::Result<shoal_events::Received> {
    tokio::time::timeout(DEADLINE, stream.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("stream ended"))
}

fn trace_id(cx: &opentelemetry::Context) -> Option<String> {
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

#[tokio::test]
async fn event_carries_the_publishers_trace() -> anyhow::Result<()> {
    // A tracer provider without an exporter: spans get real ids, nothing leaves.
    shoal_telemetry::install_propagator();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _default = tracing::subscriber::set_default(subscriber);

    let nats = Nats::start().await?;
    let publisher = EventBus::connect(&nats.url(), "publisher").await?;
    let consumer = EventBus::connect(&nats.url(), "consumer").await?;
    let mut stream = consumer.subscribe(&EventFilter::all()).await?;

    let sent = event("service", "create", "svc-1");
    let sent_trace = async {
        publisher.publish(&sent).await?;
        shoal_telemetry::current_trace_id().ok_or_else(|| anyhow::anyhow!("no trace id"))
    }
    .instrument(tracing::info_span!("create_service"))
    .await?;

    let received = next(&mut stream).await?;
    assert_eq!(received.event, sent);
    assert_eq!(trace_id(&received.trace), Some(sent_trace));
    assert!(received.trace.span().span_context().is_remote());

    // Outside any span nothing is attached.
    publisher
        .publish(&event("service", "remove", "svc-1"))
        .await?;
    let received = next(&mut stream).await?;
    assert_eq!(received.event.action, "remove");
    assert_eq!(trace_id(&received.trace), None);
    Ok(())
}

#[tokio::test]
async fn queue_group_delivers_each_event_once() -> anyhow::Result<()> {
    const N: usize = 300;
    let nats = Nats::start().await?;
    let seen: Arc<Mutex<HashMap<String, Vec<usize>>>> = Arc::default();

    let mut members = Vec::new();
    for member in 0..3 {
        let bus = EventBus::connect(&nats.url(), &format!("scheduler-{member}")).await?;
        let mut stream = bus
            .queue_subscribe(
                &EventFilter::kind("task").with_action("create"),
                "schedulers",
            )
            .await?;
        let seen = seen.clone();
        members.push(tokio::spawn(async move {
            let _bus = bus;
            while let Some(received) = stream.next().await {
                let mut seen = seen.lock().expect("seen lock");
                seen.entry(received.event.id).or_default().push(member);
            }
        }));
    }

    let publisher = EventBus::connect(&nats.url(), "orchestrator").await?;
    let events: Vec<Event> = (0..N)
        .map(|i| event("task", "create", &format!("task-{i}")))
        .collect();
    publisher.publish_all(&events).await?;

    let total = || {
        seen.lock()
            .expect("seen lock")
            .values()
            .map(Vec::len)
            .sum::<usize>()
    };
    wait_for("all events delivered", DEADLINE, || async {
        (total() >= N).then_some(())
    })
    .await?;
    // Give duplicates, if any, the chance to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let seen = seen.lock().expect("seen lock").clone();
    assert_eq!(seen.len(), N, "distinct ids");
    let duplicated: Vec<_> = seen.iter().filter(|(_, m)| m.len() != 1).collect();
    assert!(
        duplicated.is_empty(),
        "delivered more than once: {duplicated:?}"
    );
    assert_eq!(total_of(&seen), N);
    for member in members {
        member.abort();
    }
    Ok(())
}

fn total_of(seen: &HashMap<String, Vec<usize>>) -> usize {
    seen.values().map(Vec::len).sum()
}

#[tokio::test]
async fn kind_filter_sees_only_that_kind() -> anyhow::Result<()> {
    let nats = Nats::start().await?;
    let bus = EventBus::connect(&nats.url(), "filter-test").await?;
    let mut services = bus.subscribe(&EventFilter::kind("service")).await?;

    bus.publish_all(&[
        event("task", "create", "t1"),
        event("service", "create", "s1"),
        event("node", "update", "n1"),
        event("service", "remove", "s2"),
        event("task", "state", "t2"),
        event("service", "update", "end"),
    ])
    .await?;

    let mut got = Vec::new();
    loop {
        let received = next(&mut services).await?;
        assert_eq!(received.event.kind, "service", "{:?}", received.event);
        let done = received.event.id == "end";
        got.push(received.event.id);
        if done {
            break;
        }
    }
    assert_eq!(got, ["s1", "s2", "end"]);
    Ok(())
}

#[tokio::test]
async fn subscription_survives_a_nats_restart() -> anyhow::Result<()> {
    let mut nats = Nats::start().await?;
    let consumer = EventBus::connect(&nats.url(), "consumer").await?;
    let mut signals = consumer.signals();
    let mut stream = consumer.subscribe(&EventFilter::kind("node")).await?;
    let publisher = EventBus::connect(&nats.url(), "publisher").await?;

    publisher
        .publish(&event("node", "update", "before"))
        .await?;
    assert_eq!(next(&mut stream).await?.event.id, "before");

    nats.restart().await?;

    // Disconnected first, then Reconnected.
    let mut got = Vec::new();
    while !got.contains(&BusSignal::Reconnected) {
        let signal = tokio::time::timeout(Duration::from_secs(30), signals.recv()).await??;
        got.push(signal);
    }
    assert_eq!(got.first(), Some(&BusSignal::Disconnected), "{got:?}");
    assert!(consumer.is_connected());

    // The publisher reconnects on its own schedule: keep publishing until one arrives.
    let stream = Arc::new(tokio::sync::Mutex::new(stream));
    let received = wait_for(
        "an event after the restart",
        Duration::from_secs(30),
        || {
            let publisher = publisher.clone();
            let stream = stream.clone();
            async move {
                publisher
                    .publish(&event("node", "update", "after"))
                    .await
                    .ok()?;
                let mut stream = stream.lock().await;
                tokio::time::timeout(Duration::from_millis(200), stream.next())
                    .await
                    .ok()
                    .flatten()
            }
        },
    )
    .await?;
    assert_eq!(received.event.id, "after");
    Ok(())
}

#[tokio::test]
async fn raw_work_goes_to_one_scheduler_with_its_trace() -> anyhow::Result<()> {
    shoal_telemetry::install_propagator();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _default = tracing::subscriber::set_default(subscriber);

    let nats = Nats::start().await?;
    let a = EventBus::connect(&nats.url(), "scheduler-a").await?;
    let b = EventBus::connect(&nats.url(), "scheduler-b").await?;
    let mut work_a = a
        .queue_subscribe_raw(SCHEDULE_WORK_SUBJECT, "schedulers")
        .await?;
    let mut work_b = b
        .queue_subscribe_raw(SCHEDULE_WORK_SUBJECT, "schedulers")
        .await?;

    let sent_trace = async {
        a.publish_raw(SCHEDULE_WORK_SUBJECT, Bytes::from_static(b"task-1"))
            .await?;
        a.flush().await?;
        shoal_telemetry::current_trace_id().ok_or_else(|| anyhow::anyhow!("no trace id"))
    }
    .instrument(tracing::info_span!("orchestrate"))
    .await?;

    let received = tokio::time::timeout(DEADLINE, async {
        tokio::select! {
            m = work_a.next() => m,
            m = work_b.next() => m,
        }
    })
    .await?
    .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
    assert_eq!(received.subject, SCHEDULE_WORK_SUBJECT);
    assert_eq!(received.payload, Bytes::from_static(b"task-1"));
    assert_eq!(trace_id(&received.trace), Some(sent_trace));

    // Nobody else got it.
    for other in [&mut work_a, &mut work_b] {
        let more = tokio::time::timeout(Duration::from_millis(200), other.next()).await;
        assert!(more.is_err(), "delivered twice");
    }
    assert!(a.publish_raw("shoal.work.*", Bytes::new()).await.is_err());
    Ok(())
}

#[tokio::test]
async fn bad_input_is_a_typed_error() -> anyhow::Result<()> {
    let nats = Nats::start().await?;
    let bus = EventBus::connect(&nats.url(), "errors").await?;
    let err = bus.publish(&event("task.x", "create", "t")).await;
    assert!(matches!(
        err,
        Err(shoal_events::Error::InvalidToken { what: "kind", .. })
    ));
    let err = bus
        .publish_all(&[event("task", "create", "t"), event("task", "", "t")])
        .await;
    assert!(matches!(
        err,
        Err(shoal_events::Error::InvalidToken { what: "action", .. })
    ));
    let err = bus.queue_subscribe(&EventFilter::all(), "two words").await;
    assert!(matches!(
        err,
        Err(shoal_events::Error::InvalidQueueGroup(_))
    ));

    // An undecodable payload on an event subject is skipped, not fatal.
    let mut stream = bus.subscribe(&EventFilter::kind("task")).await?;
    bus.client()
        .publish(
            "shoal.events.task.create",
            Bytes::from_static(&[0xff, 0xff, 0xff]),
        )
        .await?;
    bus.publish(&event("task", "create", "good")).await?;
    assert_eq!(next(&mut stream).await?.event.id, "good");
    Ok(())
}

#[tokio::test]
async fn a_consumer_that_falls_behind_is_told() -> anyhow::Result<()> {
    let nats = Nats::start().await?;
    let opts = shoal_events::BusOptions {
        subscription_capacity: 4,
        ..Default::default()
    };
    let slow = EventBus::connect_with(&nats.url(), "slow", opts).await?;
    let mut signals = slow.signals();
    let _unread = slow.subscribe(&EventFilter::kind("task")).await?;

    let publisher = EventBus::connect(&nats.url(), "publisher").await?;
    let events: Vec<Event> = (0..200)
        .map(|i| event("task", "create", &format!("t{i}")))
        .collect();
    publisher.publish_all(&events).await?;

    let signal = tokio::time::timeout(DEADLINE, signals.recv()).await??;
    assert_eq!(signal, BusSignal::SlowConsumer);
    // ~196 dropped messages make one signal, not one each.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        matches!(
            signals.try_recv(),
            Err(broadcast::error::TryRecvError::Empty)
        ),
        "signals are coalesced"
    );
    Ok(())
}
