//! List + watch of one kind, in the shape of kube-rs's watcher: a full list first, then
//! every change after it, resumed across connection loss and relisted after compaction.
//!
//! The stream never ends and never yields errors: etcd outages are retried with backoff
//! (logged at `warn`). A watch that breaks resumes from the revision after the last one it
//! delivered, so no change is missed or repeated; a watch whose next revision has been
//! compacted away lists again and yields [`WatchEvent::Restarted`].

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use etcd_client::{EventType, KeyValue, WatchOptions};
use futures::Stream;
use tokio::sync::mpsc;

use crate::backoff::{Backoff, TaskGuard};
use crate::object::Object;
use crate::store::Store;

/// A change to objects of one kind.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent<T> {
    /// A new object; its version is its create revision.
    Added(T),
    /// A changed object, at its new version.
    Modified(T),
    /// A deleted object as it was last stored; its version is the revision of the delete.
    Deleted(T),
    /// The complete current set of objects at `revision`: replace everything known.
    /// Always the first event of a watch started without a revision, and sent again after
    /// the watch fell behind compaction.
    Restarted { objects: Vec<T>, revision: u64 },
    /// No change, but every change up to `revision` has been delivered.
    Progress { revision: u64 },
}

impl<T> WatchEvent<T> {
    /// The revision after which the consumer has seen everything, if the event tells.
    pub fn revision(&self) -> Option<u64>
    where
        T: Object,
    {
        match self {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => {
                Some(o.version())
            }
            WatchEvent::Restarted { revision, .. } | WatchEvent::Progress { revision } => {
                Some(*revision)
            }
        }
    }
}

/// One object change inside a [`WatchBatch`].
#[derive(Debug, Clone)]
pub(crate) enum Change<T> {
    Put { object: T, created: bool },
    Deleted(T),
}

/// What one etcd watch response carries: all changes of whole revisions.
#[derive(Debug, Clone)]
pub(crate) enum WatchBatch<T> {
    Restarted {
        objects: Vec<T>,
        revision: u64,
    },
    Changes {
        changes: Vec<Change<T>>,
        revision: u64,
    },
    Progress {
        revision: u64,
    },
}

/// The batches of a kind watch, one per etcd response, so that a consumer (the cache) can
/// apply a multi-object transaction at once.
pub(crate) struct BatchWatch<T> {
    rx: mpsc::Receiver<WatchBatch<T>>,
    _driver: TaskGuard,
}

impl<T> BatchWatch<T> {
    pub async fn next(&mut self) -> Option<WatchBatch<T>> {
        self.rx.recv().await
    }
}

/// The stream returned by [`Store::watch_kind`].
pub struct ObjectWatch<T> {
    inner: BatchWatch<T>,
    buffered: VecDeque<WatchEvent<T>>,
}

// Nothing in an `ObjectWatch` is pinned: events are moved out of a queue.
impl<T> Unpin for ObjectWatch<T> {}

impl<T: Object> Stream for ObjectWatch<T> {
    type Item = WatchEvent<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(ev) = this.buffered.pop_front() {
                return Poll::Ready(Some(ev));
            }
            match this.inner.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(batch)) => match batch {
                    WatchBatch::Restarted { objects, revision } => {
                        this.buffered
                            .push_back(WatchEvent::Restarted { objects, revision });
                    }
                    WatchBatch::Progress { revision } => {
                        this.buffered.push_back(WatchEvent::Progress { revision });
                    }
                    WatchBatch::Changes { changes, .. } => {
                        this.buffered.extend(changes.into_iter().map(|c| match c {
                            Change::Put {
                                object,
                                created: true,
                            } => WatchEvent::Added(object),
                            Change::Put { object, .. } => WatchEvent::Modified(object),
                            Change::Deleted(object) => WatchEvent::Deleted(object),
                        }));
                    }
                },
            }
        }
    }
}

impl Store {
    /// Watches every object of kind `T`.
    ///
    /// With `resume_after: None` the stream starts with [`WatchEvent::Restarted`] (a list at
    /// some revision R) and continues with every change after R. With `Some(r)` it yields
    /// every change after revision `r` (relisting if `r` has been compacted).
    pub fn watch_kind<T: Object>(&self, resume_after: Option<u64>) -> ObjectWatch<T> {
        ObjectWatch {
            inner: self.watch_batches(resume_after),
            buffered: VecDeque::new(),
        }
    }

    pub(crate) fn watch_batches<T: Object>(&self, resume_after: Option<u64>) -> BatchWatch<T> {
        let (tx, rx) = mpsc::channel(16);
        let driver = tokio::spawn(drive::<T>(self.clone(), resume_after, tx));
        BatchWatch {
            rx,
            _driver: TaskGuard(driver),
        }
    }

    /// Writes the progress marker of kind `T` (see [`crate::keys`]) and returns its
    /// revision: every watch of the kind reports [`WatchEvent::Progress`] at that revision
    /// once it has delivered every change before it, even if the kind is idle.
    ///
    /// (etcd's own progress requests cannot serve here: etcd 3.4 before 3.4.25 answers them
    /// ahead of events still queued for the watch.)
    pub async fn mark_progress<T: Object>(&self) -> crate::Result<u64> {
        let resp = self
            .kv()
            .put(self.keys().progress_marker(T::KIND), Vec::new(), None)
            .await?;
        Ok(resp.header().map(|h| h.revision() as u64).unwrap_or(0))
    }
}

enum WatchEnd {
    /// The consumer went away.
    Closed,
    /// The next revision is compacted: list again.
    Compacted,
    Broken(String),
}

async fn drive<T: Object>(
    store: Store,
    resume_after: Option<u64>,
    tx: mpsc::Sender<WatchBatch<T>>,
) {
    let prefix = store.keys().objects(T::KIND);
    let mut last = resume_after;
    let mut backoff = Backoff::default();
    loop {
        let after = match last {
            Some(r) => r,
            None => match store.range_prefix(&prefix, false).await {
                Ok((kvs, revision)) => {
                    let objects = kvs
                        .iter()
                        .filter(|kv| store.keys().object_id(T::KIND, kv.key()).is_some())
                        .filter_map(|kv| decode_logged::<T>(&store, kv))
                        .collect();
                    if tx
                        .send(WatchBatch::Restarted { objects, revision })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    revision
                }
                Err(e) => {
                    tracing::warn!(kind = %T::KIND, error = %e, "list failed; retrying");
                    backoff.wait().await;
                    continue;
                }
            },
        };
        let mut seen = after;
        let end = watch_from(&store, &prefix, &mut seen, &tx, &mut backoff).await;
        last = Some(seen);
        match end {
            WatchEnd::Closed => return,
            WatchEnd::Compacted => {
                tracing::info!(kind = %T::KIND, after = seen, "watch fell behind compaction; relisting");
                last = None;
            }
            WatchEnd::Broken(reason) => {
                tracing::warn!(kind = %T::KIND, after = seen, %reason, "watch broken; resuming");
                backoff.wait().await;
            }
        }
    }
}

/// Watches `prefix` for changes after `*seen`, advancing `*seen` past each delivered batch.
async fn watch_from<T: Object>(
    store: &Store,
    prefix: &str,
    seen: &mut u64,
    tx: &mpsc::Sender<WatchBatch<T>>,
    backoff: &mut Backoff,
) -> WatchEnd {
    let opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(*seen as i64 + 1)
        .with_prev_key()
        .with_progress_notify();
    let stream = match store.watch_client().watch(prefix, Some(opts)).await {
        Ok(s) => s,
        Err(e) => return WatchEnd::Broken(e.to_string()),
    };
    let mut stream = stream;
    loop {
        let resp = tokio::select! {
            msg = stream.message() => match msg {
                Ok(Some(resp)) => resp,
                Ok(None) => return WatchEnd::Broken("stream ended".into()),
                Err(e) => return WatchEnd::Broken(e.to_string()),
            },
            _ = tx.closed() => return WatchEnd::Closed,
        };
        if resp.compact_revision() > 0 {
            return WatchEnd::Compacted;
        }
        if resp.canceled() {
            return WatchEnd::Broken(format!("canceled: {}", resp.cancel_reason()));
        }
        if resp.created() {
            backoff.reset();
            continue;
        }
        let events = resp.events();
        if events.is_empty() {
            // Answers to progress *requests* (watch id -1) may overtake queued events on
            // etcd < 3.4.25; this store never sends such requests, and ignores answers.
            if resp.watch_id() == -1 {
                continue;
            }
            // A periodic progress notification, sent in order with the events: every
            // change up to its revision has been sent.
            let revision = resp.header().map(|h| h.revision() as u64).unwrap_or(0);
            if revision > *seen {
                *seen = revision;
                if tx.send(WatchBatch::Progress { revision }).await.is_err() {
                    return WatchEnd::Closed;
                }
            }
            continue;
        }
        let mut changes = Vec::with_capacity(events.len());
        let mut revision = *seen;
        for ev in events {
            let Some(kv) = ev.kv() else { continue };
            let rev = kv.mod_revision() as u64;
            if rev <= *seen {
                continue;
            }
            revision = revision.max(rev);
            if store.keys().object_id(T::KIND, kv.key()).is_none() {
                // The progress marker (or a stray key): no change, but a revision reached.
                continue;
            }
            match ev.event_type() {
                EventType::Put => {
                    if let Some(object) = decode_logged::<T>(store, kv) {
                        changes.push(Change::Put {
                            object,
                            created: kv.create_revision() == kv.mod_revision(),
                        });
                    }
                }
                EventType::Delete => {
                    let mut object = ev
                        .prev_kv()
                        .and_then(|prev| decode_logged::<T>(store, prev))
                        .unwrap_or_default();
                    if let Some(id) = store.keys().object_id(T::KIND, kv.key()) {
                        object.meta_mut().id = id.to_string();
                    }
                    object.set_version(rev);
                    changes.push(Change::Deleted(object));
                }
            }
        }
        if revision > *seen {
            *seen = revision;
            let batch = if changes.is_empty() {
                WatchBatch::Progress { revision }
            } else {
                WatchBatch::Changes { changes, revision }
            };
            if tx.send(batch).await.is_err() {
                return WatchEnd::Closed;
            }
        }
    }
}

fn decode_logged<T: Object>(store: &Store, kv: &KeyValue) -> Option<T> {
    match store.decode_kv::<T>(kv) {
        Ok(obj) => Some(obj),
        Err(e) => {
            tracing::error!(kind = %T::KIND, error = %e, "skipping undecodable object");
            None
        }
    }
}
