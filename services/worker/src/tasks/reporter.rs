//! Task status reports: coalesced for ~50 ms, sent in batches with
//! `Dispatcher.UpdateTaskStatus` on the current session, kept and retried across
//! reconnects until a dispatcher took them, and never moving a task backwards.

use std::collections::HashMap;
use std::time::Duration;

use shoal_proto::v1::update_task_status_request::TaskStatusUpdate;
use shoal_proto::v1::{TaskStatus, UpdateTaskStatusRequest};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::Link;

/// How long reports are gathered before a batch goes out.
pub const COALESCE: Duration = Duration::from_millis(50);
/// The most updates in one request.
const MAX_BATCH: usize = 500;
/// How long one UpdateTaskStatus may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before retrying a failed batch on the same session.
const RETRY: Duration = Duration::from_millis(500);
/// Capacity of the queue from the task runners.
pub const QUEUE: usize = 1024;

/// What task runners send the reporter.
#[derive(Debug, Clone)]
pub enum Report {
    Status(String, TaskStatus),
    /// The task is forgotten: drop what is known of it.
    Forget(String),
}

/// Keeps the latest (highest) status of each task until a dispatcher has taken it.
#[derive(Debug, Default)]
pub struct Pending {
    pending: HashMap<String, TaskStatus>,
    /// The highest state each task was reported in.
    sent: HashMap<String, i32>,
}

impl Pending {
    /// Adds a report; one behind what is already pending or sent is dropped.
    pub fn add(&mut self, report: Report) {
        match report {
            Report::Status(id, status) => {
                if self.sent.get(&id).is_some_and(|s| status.state < *s) {
                    return;
                }
                if self
                    .pending
                    .get(&id)
                    .is_some_and(|p| status.state < p.state)
                {
                    return;
                }
                self.pending.insert(id, status);
            }
            Report::Forget(id) => {
                self.sent.remove(&id);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Takes up to a batch of updates.
    pub fn take(&mut self) -> Vec<TaskStatusUpdate> {
        let ids: Vec<String> = self.pending.keys().take(MAX_BATCH).cloned().collect();
        ids.into_iter()
            .filter_map(|id| {
                let status = self.pending.remove(&id)?;
                Some(TaskStatusUpdate {
                    task_id: id,
                    status: Some(status),
                })
            })
            .collect()
    }

    /// A batch was taken by a dispatcher.
    pub fn sent(&mut self, batch: &[TaskStatusUpdate]) {
        for u in batch {
            if let Some(s) = &u.status {
                let e = self.sent.entry(u.task_id.clone()).or_insert(s.state);
                *e = (*e).max(s.state);
            }
        }
    }

    /// A batch failed: put back what nothing newer replaced.
    pub fn put_back(&mut self, batch: Vec<TaskStatusUpdate>) {
        for u in batch {
            if let Some(s) = u.status
                && !self.pending.contains_key(&u.task_id)
            {
                self.pending.insert(u.task_id, s);
            }
        }
    }
}

/// Runs until the queue closes: batches reports and sends them on the current link.
pub async fn run(mut rx: mpsc::Receiver<Report>, mut link: watch::Receiver<Option<Link>>) {
    let mut pending = Pending::default();
    let mut due: Option<Instant> = None;
    loop {
        let current = link.borrow().clone();
        let ready = current.is_some() && !pending.is_empty();
        tokio::select! {
            report = rx.recv() => match report {
                Some(r) => {
                    pending.add(r);
                    while let Ok(r) = rx.try_recv() {
                        pending.add(r);
                    }
                    if due.is_none() && !pending.is_empty() {
                        due = Some(Instant::now() + COALESCE);
                    }
                }
                None => {
                    // Shutting down: a last attempt for what is pending.
                    if let Some(l) = current {
                        while !pending.is_empty() {
                            let batch = pending.take();
                            if send(&l, batch).await.is_err() {
                                break;
                            }
                        }
                    }
                    return;
                }
            },
            changed = link.changed() => {
                if changed.is_err() {
                    return;
                }
                if !pending.is_empty() {
                    due = Some(Instant::now());
                }
            }
            _ = sleep_until(due), if ready => {
                let Some(l) = current else { continue };
                let batch = pending.take();
                match send(&l, batch.clone()).await {
                    Ok(()) => {
                        pending.sent(&batch);
                        due = (!pending.is_empty()).then(Instant::now);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, updates = batch.len(), "task status report failed; will retry");
                        pending.put_back(batch);
                        due = Some(Instant::now() + RETRY);
                    }
                }
            }
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn send(link: &Link, batch: Vec<TaskStatusUpdate>) -> Result<(), String> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut client = link.client.clone();
    let request = UpdateTaskStatusRequest {
        session_id: link.session_id.clone(),
        updates: batch,
    };
    match tokio::time::timeout(CALL_TIMEOUT, client.update_task_status(request)).await {
        Ok(Ok(response)) => {
            for r in response.into_inner().rejected {
                tracing::warn!(task = %r.task_id, reason = %r.reason, "the dispatcher refused a task status");
            }
            Ok(())
        }
        Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
        Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(state: i32) -> TaskStatus {
        TaskStatus {
            state,
            ..Default::default()
        }
    }

    #[test]
    fn reports_coalesce_and_never_go_backwards() {
        let mut p = Pending::default();
        p.add(Report::Status("a".into(), st(256)));
        p.add(Report::Status("a".into(), st(512)));
        p.add(Report::Status("a".into(), st(320)));
        let batch = p.take();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].status.as_ref().map(|s| s.state), Some(512));
        p.sent(&batch);
        p.add(Report::Status("a".into(), st(448)));
        assert!(p.is_empty(), "behind what was sent");
        p.add(Report::Status("a".into(), st(576)));
        let failed = p.take();
        p.add(Report::Status("a".into(), st(704)));
        p.put_back(failed);
        let again = p.take();
        assert_eq!(again[0].status.as_ref().map(|s| s.state), Some(704));
        p.add(Report::Forget("a".into()));
        p.add(Report::Status("a".into(), st(256)));
        assert!(!p.is_empty(), "forgotten tasks start afresh");
    }
}
