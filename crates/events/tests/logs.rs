//! Log lines and history requests against a real nats-server.

use std::time::Duration;

use futures::StreamExt;
use shoal_events::logs::{LogHistoryRequest, LogHistoryResponse, LogMessage};
use shoal_events::{Error, EventBus, LogStream};
use shoal_testkit::Nats;

const DEADLINE: Duration = Duration::from_secs(20);

fn line(service: &str, task: &str, n: i64, data: &str) -> LogMessage {
    LogMessage {
        service_id: service.to_owned(),
        service_name: format!("name-{service}"),
        task_id: task.to_owned(),
        slot: 1,
        node_id: "node1".to_owned(),
        stream: 0,
        timestamp: Some(prost_types::Timestamp {
            seconds: 1_700_000_000 + n,
            nanos: 0,
        }),
        data: data.as_bytes().to_vec(),
    }
}

async fn next(stream: &mut LogStream) -> anyhow::Result<LogMessage> {
    tokio::time::timeout(DEADLINE, stream.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("stream ended"))
}

#[tokio::test]
async fn log_lines_reach_matching_subscribers_only() -> anyhow::Result<()> {
    let nats = Nats::start().await?;
    let worker = EventBus::connect(&nats.url(), "worker").await?;
    let manager = EventBus::connect(&nats.url(), "manager").await?;

    let mut by_service = manager.subscribe_logs(Some("svcA"), None).await?;
    let mut by_task = manager.subscribe_logs(None, Some("taskB1")).await?;
    let mut all = manager.subscribe_logs(None, None).await?;
    // History requests share the prefix; a wildcard subscription must not see them.
    let mut history = worker.serve_log_history("node1").await?;
    let answering = tokio::spawn(async move {
        while let Some(req) = history.next().await {
            let _ = req.respond(LogHistoryResponse::default()).await;
        }
    });
    manager
        .request_log_history("node1", &LogHistoryRequest::default(), DEADLINE)
        .await?;

    worker.publish_log(&line("svcA", "taskA1", 1, "a1")).await?;
    worker.publish_log(&line("svcB", "taskB1", 2, "b1")).await?;
    worker.publish_log(&line("svcA", "taskA2", 3, "a2")).await?;
    worker.flush().await?;

    assert_eq!(next(&mut by_service).await?.data, b"a1");
    assert_eq!(next(&mut by_service).await?.data, b"a2");
    let got = next(&mut by_task).await?;
    assert_eq!(
        (got.task_id.as_str(), got.data.as_slice()),
        ("taskB1", &b"b1"[..])
    );
    let got: Vec<LogMessage> = vec![
        next(&mut all).await?,
        next(&mut all).await?,
        next(&mut all).await?,
    ];
    assert_eq!(
        got,
        vec![
            line("svcA", "taskA1", 1, "a1"),
            line("svcB", "taskB1", 2, "b1"),
            line("svcA", "taskA2", 3, "a2"),
        ]
    );
    // Nothing else arrived (the history request was skipped): a marker comes next.
    worker
        .publish_log(&line("svcZ", "taskZ", 9, "marker"))
        .await?;
    assert_eq!(next(&mut all).await?.data, b"marker");

    // Invalid ids are refused, not turned into odd subjects.
    assert!(matches!(
        manager.subscribe_logs(Some("a.b"), None).await,
        Err(Error::InvalidSubject { .. })
    ));
    assert!(worker.publish_log(&line("", "t", 1, "x")).await.is_err());
    answering.abort();
    Ok(())
}

#[tokio::test]
async fn history_request_is_answered_by_the_nodes_worker() -> anyhow::Result<()> {
    let nats = Nats::start().await?;
    let worker = EventBus::connect(&nats.url(), "worker").await?;
    let manager = EventBus::connect(&nats.url(), "manager").await?;

    let mut requests = worker.serve_log_history("node1").await?;
    let kept: Vec<LogMessage> = (1..=5)
        .map(|n| line("svcA", "taskA1", n, &format!("line {n}")))
        .collect();
    let answering = tokio::spawn(async move {
        while let Some(req) = requests.next().await {
            let tail = usize::try_from(req.request.tail).unwrap_or(usize::MAX);
            let messages: Vec<LogMessage> = kept
                .iter()
                .filter(|m| req.request.task_ids.contains(&m.task_id))
                .cloned()
                .collect();
            let skip = messages.len().saturating_sub(tail);
            let messages = messages.into_iter().skip(skip).collect();
            let _ = req.respond(LogHistoryResponse { messages }).await;
        }
    });

    let got = manager
        .request_log_history(
            "node1",
            &LogHistoryRequest {
                task_ids: vec!["taskA1".to_owned()],
                tail: 2,
            },
            DEADLINE,
        )
        .await?;
    let data: Vec<&[u8]> = got.messages.iter().map(|m| m.data.as_slice()).collect();
    assert_eq!(data, vec![&b"line 4"[..], &b"line 5"[..]]);

    let got = manager
        .request_log_history(
            "node1",
            &LogHistoryRequest {
                task_ids: vec!["other".to_owned()],
                tail: -1,
            },
            DEADLINE,
        )
        .await?;
    assert!(got.messages.is_empty());

    // A node nobody serves answers at once with NoResponders, not a timeout.
    let err = manager
        .request_log_history("node2", &LogHistoryRequest::default(), DEADLINE)
        .await
        .err();
    assert!(
        matches!(err, Some(Error::NoResponders(ref s)) if s == "shoal.logs.history.node2"),
        "{err:?}"
    );

    // A worker that stops answering: the request times out.
    answering.abort();
    let _ = answering.await;
    let mut silent = worker.serve_log_history("node3").await?;
    let err = manager
        .request_log_history(
            "node3",
            &LogHistoryRequest::default(),
            Duration::from_millis(300),
        )
        .await
        .err();
    assert!(matches!(err, Some(Error::RequestTimeout { .. })), "{err:?}");
    assert!(silent.next().await.is_some());
    Ok(())
}

#[tokio::test]
async fn oversized_history_keeps_the_newest_lines() -> anyhow::Result<()> {
    let nats = Nats::start().await?;
    let worker = EventBus::connect(&nats.url(), "worker").await?;
    let manager = EventBus::connect(&nats.url(), "manager").await?;
    let limit = worker.client().server_info().max_payload;
    anyhow::ensure!(limit > 0, "server info not known yet");

    let mut requests = worker.serve_log_history("node1").await?;
    let big = "x".repeat(64 * 1024);
    let count = i64::try_from(limit / big.len() + 10)?;
    let messages: Vec<LogMessage> = (1..=count)
        .map(|n| line("svcA", "taskA1", n, &format!("{n:06} {big}")))
        .collect();
    let answering = tokio::spawn(async move {
        if let Some(req) = requests.next().await {
            let _ = req.respond(LogHistoryResponse { messages }).await;
        }
    });
    let got = manager
        .request_log_history("node1", &LogHistoryRequest::default(), DEADLINE)
        .await?;
    answering.await?;
    assert!(!got.messages.is_empty());
    assert!(got.messages.len() < usize::try_from(count)?);
    let last = got.messages.last().map(|m| m.data[..6].to_vec());
    assert_eq!(last, Some(format!("{count:06}").into_bytes()));
    Ok(())
}

#[tokio::test]
async fn log_publisher_sends_and_drops_when_full() -> anyhow::Result<()> {
    let nats = Nats::start().await?;
    let worker = EventBus::connect(&nats.url(), "worker").await?;
    let manager = EventBus::connect(&nats.url(), "manager").await?;
    let mut stream = manager.subscribe_logs(Some("svcA"), None).await?;

    let publisher = worker.log_publisher(16);
    assert!(publisher.publish(line("svcA", "taskA1", 1, "queued")));
    assert_eq!(next(&mut stream).await?.data, b"queued");

    // Fill the queue faster than it drains: publish never waits, some are dropped
    // or all are sent; either way the count is consistent.
    let mut accepted = 0u64;
    for n in 0..2_000 {
        if publisher.publish(line("svcA", "taskA1", n, "burst")) {
            accepted += 1;
        }
    }
    assert_eq!(accepted + publisher.dropped(), 2_000);
    for _ in 0..accepted {
        assert_eq!(next(&mut stream).await?.data, b"burst");
    }
    Ok(())
}
