//! The typed store: reads, compare-and-swap writes, batched writes, index lookups.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use etcd_client::{
    Client, ConnectOptions, GetOptions, KeyValue, KvClient, Txn, TxnOp, TxnOpResponse, WatchClient,
};
use futures::StreamExt;
use shoal_proto::v1::Task;

use crate::error::{Error, Result};
use crate::keys::{DEFAULT_PREFIX, Keys, prefix_end};
use crate::object::{Index, Object, new_id};
use crate::txn::{self, Fence, Limits, PlannedOp, Verdict};

/// How a [`Store`] talks to etcd.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Key prefix, see [`crate::keys`]. Default `/shoal/v1`.
    pub prefix: String,
    /// etcd's `--max-txn-ops` (default 128): no transaction is built larger.
    pub max_txn_ops: usize,
    /// Objects per transaction in `*_many` calls. Default 64.
    pub max_objects_per_txn: usize,
    /// Transactions in flight at once in `*_many` calls. Default 8.
    pub max_txns_in_flight: usize,
    /// Keys per page when listing. Default 1000.
    pub page_size: usize,
    /// Default 5 s.
    pub connect_timeout: Duration,
    /// HTTP/2 keep-alive (interval, timeout), so a dead etcd connection is noticed even
    /// while a watch is idle. Default 10 s / 5 s.
    pub keep_alive: Option<(Duration, Duration)>,
    /// Largest response accepted (a page of big objects). Default 256 MiB.
    pub max_response_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_string(),
            max_txn_ops: 128,
            max_objects_per_txn: 64,
            max_txns_in_flight: 8,
            page_size: 1000,
            connect_timeout: Duration::from_secs(5),
            keep_alive: Some((Duration::from_secs(10), Duration::from_secs(5))),
            max_response_bytes: 256 << 20,
        }
    }
}

impl StoreOptions {
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            ..Self::default()
        }
    }
}

/// Objects read together, and the etcd revision they were read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed<T> {
    pub objects: Vec<T>,
    pub revision: u64,
}

/// The outcome of a committed [`crate::Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The transaction's revision: the new version of every object it created or updated.
    pub revision: u64,
    /// The ids of the batch's objects, in the order they were added.
    pub ids: Vec<String>,
}

pub(crate) struct Inner {
    pub client: Client,
    pub kv: KvClient,
    pub watch: WatchClient,
    pub keys: Keys,
    pub options: StoreOptions,
}

/// A handle on shoal's state in etcd. Cheap to clone; clones share one connection.
///
/// Every write is a compare-and-swap: creates require the id and the name to be free,
/// updates and deletes require the version the caller read. A store made with
/// [`Store::fenced`] additionally makes every write conditional on a leadership.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
    pub(crate) fence: Option<Fence>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.inner.keys.prefix())
            .field("fence", &self.fence)
            .finish()
    }
}

enum Outcome {
    Committed(u64),
    Failed(Vec<Verdict>),
}

fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

impl Store {
    /// Connects to etcd at `endpoints` (e.g. `http://127.0.0.1:2379`), keys under `prefix`.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self> {
        Self::connect_with(endpoints, StoreOptions::with_prefix(prefix)).await
    }

    pub async fn connect_with(endpoints: &[String], options: StoreOptions) -> Result<Self> {
        let mut connect = ConnectOptions::new().with_connect_timeout(options.connect_timeout);
        if let Some((interval, timeout)) = options.keep_alive {
            connect = connect.with_keep_alive(interval, timeout);
        }
        let client = Client::connect(endpoints, Some(connect)).await?;
        Ok(Self::from_client(client, options))
    }

    fn from_client(client: Client, options: StoreOptions) -> Self {
        let kv = client
            .kv_client()
            .max_decoding_message_size(options.max_response_bytes);
        let watch = client
            .watch_client()
            .max_decoding_message_size(options.max_response_bytes);
        Self {
            inner: Arc::new(Inner {
                client,
                kv,
                watch,
                keys: Keys::new(&options.prefix),
                options,
            }),
            fence: None,
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    /// The same store, with every write conditional on `fence` (normally a
    /// [`crate::Leadership`]): once that leadership is lost, writes fail with
    /// [`Error::Fenced`] and nothing is written.
    pub fn fenced(&self, fence: impl Into<Fence>) -> Store {
        Store {
            inner: self.inner.clone(),
            fence: Some(fence.into()),
        }
    }

    /// The same store without a fence.
    pub fn unfenced(&self) -> Store {
        Store {
            inner: self.inner.clone(),
            fence: None,
        }
    }

    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    pub(crate) fn kv(&self) -> KvClient {
        self.inner.kv.clone()
    }

    pub(crate) fn watch_client(&self) -> WatchClient {
        self.inner.watch.clone()
    }

    pub(crate) fn client(&self) -> Client {
        self.inner.client.clone()
    }

    fn limits(&self) -> Limits {
        Limits {
            max_ops: self.inner.options.max_txn_ops,
            max_objects: self.inner.options.max_objects_per_txn.max(1),
        }
    }

    /// etcd's current revision.
    pub async fn revision(&self) -> Result<u64> {
        let key = self.keys().election("");
        let resp = self
            .kv()
            .get(key, Some(GetOptions::new().with_count_only()))
            .await?;
        Ok(resp.header().map(|h| h.revision() as u64).unwrap_or(0))
    }

    // ---------------------------------------------------------------- reads

    pub(crate) fn decode_kv<T: Object>(&self, kv: &KeyValue) -> Result<T> {
        let mut obj = txn::decode::<T>(kv.key(), kv.value())?;
        if let Some(id) = self.keys().object_id(T::KIND, kv.key())
            && obj.id() != id
        {
            obj.meta_mut().id = id.to_string();
        }
        obj.set_version(kv.mod_revision() as u64);
        Ok(obj)
    }

    /// The object `id` of kind `T`, with `meta.version` set to its mod revision.
    pub async fn get<T: Object>(&self, id: &str) -> Result<T> {
        self.try_get(id).await?.ok_or_else(|| Error::NotFound {
            kind: T::KIND,
            id: id.to_string(),
        })
    }

    /// Like [`Store::get`], `None` when absent.
    pub async fn try_get<T: Object>(&self, id: &str) -> Result<Option<T>> {
        if id.is_empty() || id.contains('/') {
            return Ok(None);
        }
        let mut resp = self.kv().get(self.keys().object(T::KIND, id), None).await?;
        match resp.take_kvs().first() {
            Some(kv) => self.decode_kv(kv).map(Some),
            None => Ok(None),
        }
    }

    /// The object of kind `T` named `name` (kinds with unique names only).
    pub async fn get_by_name<T: Object>(&self, name: &str) -> Result<T> {
        let not_found = || Error::NotFound {
            kind: T::KIND,
            id: format!("name {name:?}"),
        };
        if !T::KIND.has_unique_names() {
            return Err(Error::Invalid(format!("{} names are not unique", T::KIND)));
        }
        let mut resp = self.kv().get(self.keys().name(T::KIND, name), None).await?;
        let kvs = resp.take_kvs();
        let kv = kvs.first().ok_or_else(not_found)?;
        let id = String::from_utf8_lossy(kv.value()).into_owned();
        self.try_get(&id).await?.ok_or_else(not_found)
    }

    /// Objects by id, fetched in read-only transactions of up to `max_txn_ops` reads, a few
    /// at a time. Ids that do not exist are skipped; order follows `ids`.
    pub async fn get_many<T: Object>(&self, ids: &[impl AsRef<str>]) -> Result<Vec<T>> {
        let per_txn = self.inner.options.max_txn_ops.max(1);
        let keys: Vec<String> = ids
            .iter()
            .map(AsRef::as_ref)
            .filter(|id| !id.is_empty() && !id.contains('/'))
            .map(|id| self.keys().object(T::KIND, id))
            .collect();
        // The futures own everything they use: a stream of closures borrowing `self`
        // would make this future not `Send` for every lifetime, which gRPC handlers need.
        let txns: Vec<_> = keys
            .chunks(per_txn)
            .map(|chunk| {
                let gets: Vec<TxnOp> = chunk
                    .iter()
                    .map(|k| TxnOp::get(k.as_bytes(), None))
                    .collect();
                let mut kv = self.kv();
                async move { kv.txn(Txn::new().and_then(gets)).await }
            })
            .collect();
        let batches = futures::stream::iter(txns)
            .buffered(self.inner.options.max_txns_in_flight.max(1))
            .collect::<Vec<_>>()
            .await;
        let mut out = Vec::with_capacity(keys.len());
        for resp in batches {
            for r in resp?.op_responses() {
                if let TxnOpResponse::Get(mut g) = r {
                    for kv in g.take_kvs() {
                        out.push(self.decode_kv(&kv)?);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every key (and value, unless `keys_only`) under `prefix`, read page by page at one
    /// revision, and that revision.
    pub(crate) async fn range_prefix(
        &self,
        prefix: &str,
        keys_only: bool,
    ) -> Result<(Vec<KeyValue>, u64)> {
        let end = prefix_end(prefix.as_bytes());
        let page = self.inner.options.page_size.max(1);
        let mut start = prefix.as_bytes().to_vec();
        let mut revision = 0i64;
        let mut out = Vec::new();
        let mut kv = self.kv();
        loop {
            let mut opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(page as i64)
                .with_revision(revision);
            if keys_only {
                opts = opts.with_keys_only();
            }
            let mut resp = kv.get(start.clone(), Some(opts)).await?;
            if revision == 0 {
                revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            match kvs.last() {
                Some(last) if more => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => {
                    out.extend(kvs);
                    return Ok((out, revision as u64));
                }
            }
            out.extend(kvs);
        }
    }

    /// Every object of kind `T`, read page by page at one revision.
    pub async fn list<T: Object>(&self) -> Result<Listed<T>> {
        let (kvs, revision) = self
            .range_prefix(&self.keys().objects(T::KIND), false)
            .await?;
        let objects = kvs
            .iter()
            .filter(|kv| self.keys().object_id(T::KIND, kv.key()).is_some())
            .map(|kv| self.decode_kv(kv))
            .collect::<Result<Vec<T>>>()?;
        Ok(Listed { objects, revision })
    }

    /// The objects whose value in `index` is `value`, through the index keys (no scan).
    pub async fn by_index<T: Object>(&self, index: Index, value: &str) -> Result<Listed<T>> {
        if !T::INDEXES.contains(&index) {
            return Err(Error::Invalid(format!("{} has no index {index}", T::KIND)));
        }
        if value.is_empty() || value.contains('/') {
            return Ok(Listed {
                objects: Vec::new(),
                revision: self.revision().await?,
            });
        }
        let prefix = self.keys().index_values(index, value);
        let (kvs, revision) = self.range_prefix(&prefix, true).await?;
        let ids: Vec<&str> = kvs
            .iter()
            .filter_map(|kv| {
                std::str::from_utf8(kv.key())
                    .ok()?
                    .strip_prefix(prefix.as_str())
            })
            .collect();
        let objects = self.get_many::<T>(&ids).await?;
        Ok(Listed { objects, revision })
    }

    /// The tasks of a service.
    pub async fn tasks_by_service(&self, service_id: &str) -> Result<Listed<Task>> {
        self.by_index(Index::TasksByService, service_id).await
    }

    /// The tasks assigned to a node.
    pub async fn tasks_by_node(&self, node_id: &str) -> Result<Listed<Task>> {
        self.by_index(Index::TasksByNode, node_id).await
    }

    // ---------------------------------------------------------------- writes

    /// Stamps a new object: id if empty, created/updated times, no version.
    pub(crate) fn prepare_create<T: Object>(obj: &mut T) {
        let ts = now();
        let meta = obj.meta_mut();
        if meta.id.is_empty() {
            meta.id = new_id();
        }
        meta.created_at = Some(ts);
        meta.updated_at = Some(ts);
        meta.version = None;
    }

    /// Stamps an updated object; returns the version it must still be at.
    pub(crate) fn prepare_update<T: Object>(obj: &mut T) -> Result<u64> {
        let version = obj.version();
        if version == 0 {
            return Err(Error::Invalid(format!(
                "update of {} {:?} without meta.version",
                T::KIND,
                obj.id()
            )));
        }
        let meta = obj.meta_mut();
        meta.updated_at = Some(now());
        meta.version = None;
        Ok(version)
    }

    /// Creates `obj`: assigns an id if it has none, sets `created_at`/`updated_at`, and
    /// writes it, its name key and its index keys in one transaction that requires the id
    /// and the name to be free. Returns the stored object with its version.
    pub async fn create<T: Object>(&self, obj: T) -> Result<T> {
        single(self.create_many(vec![obj]).await)
    }

    /// Replaces the object if it is still at `obj`'s `meta.version`; otherwise
    /// [`Error::Conflict`] (or [`Error::NotFound`]). A changed name moves the name key (the
    /// new name must be free); changed index values move the index keys; all in the same
    /// transaction.
    pub async fn update<T: Object>(&self, obj: T) -> Result<T> {
        single(self.update_many(vec![obj]).await)
    }

    /// [`Store::update`] for a caller that holds the object as it read it (`previous`,
    /// unmodified, same version); see [`Store::update_many_from`].
    pub async fn update_from<T: Object>(&self, previous: &T, obj: T) -> Result<T> {
        single(self.update_many_from([(previous, obj)]).await)
    }

    /// Deletes the object with its name and index keys, if it is at `expected_version`
    /// (any version when `None`). Returns the object as it was, its version set to the
    /// revision of the delete (as a watch reports a deletion).
    pub async fn delete<T: Object>(&self, id: &str, expected_version: Option<u64>) -> Result<T> {
        const ATTEMPTS: usize = 8;
        let mut attempt = 0;
        loop {
            attempt += 1;
            if id.is_empty() || id.contains('/') {
                return Err(Error::NotFound {
                    kind: T::KIND,
                    id: id.to_string(),
                });
            }
            let mut resp = self.kv().get(self.keys().object(T::KIND, id), None).await?;
            let kvs = resp.take_kvs();
            let kv = kvs.first().ok_or_else(|| Error::NotFound {
                kind: T::KIND,
                id: id.to_string(),
            })?;
            let actual = kv.mod_revision() as u64;
            if let Some(expected) = expected_version
                && expected != actual
            {
                return Err(Error::Conflict {
                    kind: T::KIND,
                    id: id.to_string(),
                    expected,
                    actual,
                });
            }
            let last = self.decode_kv::<T>(kv)?;
            let op = PlannedOp::delete_stored::<T>(self.keys(), 0, id, kv)?;
            match single(
                self.run_many(vec![op])
                    .await
                    .into_iter()
                    .map(|(_, r)| r)
                    .collect(),
            ) {
                Ok(revision) => {
                    // Like a watch's delete event: the last state, at the delete's revision.
                    let mut last = last;
                    last.set_version(revision);
                    return Ok(last);
                }
                Err(Error::Conflict { .. }) if expected_version.is_none() && attempt < ATTEMPTS => {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Creates many objects: packed into transactions of at most
    /// [`StoreOptions::max_objects_per_txn`] objects and `max_txn_ops` operations, several
    /// in flight at once. Not atomic as a whole (use a [`crate::Batch`] for that); each
    /// object gets its own result, in input order.
    pub async fn create_many<T: Object>(&self, objs: Vec<T>) -> Vec<Result<T>> {
        let mut objs = objs;
        let mut early = Vec::new();
        let mut ops = Vec::with_capacity(objs.len());
        for (slot, obj) in objs.iter_mut().enumerate() {
            Self::prepare_create(obj);
            match PlannedOp::create(self.keys(), slot, obj) {
                Ok(op) => ops.push(op),
                Err(e) => early.push((slot, e)),
            }
        }
        let mut results = self.run_many(ops).await;
        results.extend(early.into_iter().map(|(slot, e)| (slot, Err(e))));
        finish(objs, results)
    }

    /// Updates many objects, each with its own version compare, packed and committed as
    /// [`Store::create_many`] does. A transaction whose compare fails is not retried as a
    /// whole: its else-branch tells which objects were stale; those get
    /// [`Error::Conflict`], the others are retried. Results are in input order.
    ///
    /// Without the previous copies the store cannot know the old name and index keys: it
    /// assumes they stay and verifies that with compares; an object whose keys do move
    /// costs one more round trip. Hot paths use [`Store::update_many_from`].
    pub async fn update_many<T: Object>(&self, objs: Vec<T>) -> Vec<Result<T>> {
        self.update_many_inner(objs.into_iter().map(|o| (None, o)).collect())
            .await
    }

    /// [`Store::update_many`] with each object's `previous` copy: the object exactly as
    /// read at its version (e.g. the `Arc` from a [`crate::Cache`]), never modified. The
    /// hot-path form: the version compare proves the copy current, so its name and index
    /// keys need no compares of their own (64 status updates per transaction instead of
    /// 42), and keys that move (a task assigned to a node) move in the same single round
    /// trip. Keys that move are still verified; a wrong copy costs a re-plan, not the
    /// indexes.
    pub async fn update_many_from<'a, T: Object>(
        &self,
        changes: impl IntoIterator<Item = (&'a T, T)>,
    ) -> Vec<Result<T>> {
        self.update_many_inner(changes.into_iter().map(|(p, o)| (Some(p), o)).collect())
            .await
    }

    async fn update_many_inner<T: Object>(&self, changes: Vec<(Option<&T>, T)>) -> Vec<Result<T>> {
        let mut early = Vec::new();
        let mut ops = Vec::with_capacity(changes.len());
        let mut objs = Vec::with_capacity(changes.len());
        for (slot, (previous, mut obj)) in changes.into_iter().enumerate() {
            let planned = Self::prepare_update(&mut obj).and_then(|version| {
                if let Some(p) = previous
                    && (p.id() != obj.id() || p.version() != version)
                {
                    return Err(Error::Invalid(format!(
                        "previous copy of {} {} is not the one being updated",
                        T::KIND,
                        obj.id()
                    )));
                }
                PlannedOp::update(self.keys(), slot, &obj, version, previous)
            });
            match planned {
                Ok(op) => ops.push(op),
                Err(e) => early.push((slot, e)),
            }
            objs.push(obj);
        }
        let mut results = self.run_many(ops).await;
        results.extend(early.into_iter().map(|(slot, e)| (slot, Err(e))));
        finish(objs, results)
    }

    /// Deletes many objects, each at its `meta.version`, with their name and index keys.
    /// Batched like [`Store::update_many`]; returns each object as it was, its version set
    /// to the revision of its delete (as [`Store::delete`] does).
    pub async fn delete_many<T: Object>(&self, objs: Vec<T>) -> Vec<Result<T>> {
        let mut early = Vec::new();
        let mut ops = Vec::with_capacity(objs.len());
        for (slot, obj) in objs.iter().enumerate() {
            match PlannedOp::delete(self.keys(), slot, obj, obj.version()) {
                Ok(op) => ops.push(op),
                Err(e) => early.push((slot, e)),
            }
        }
        let mut results = self.run_many(ops).await;
        results.extend(early.into_iter().map(|(slot, e)| (slot, Err(e))));
        finish(objs, results)
    }

    /// A multi-object transaction; see [`crate::Batch`].
    pub fn batch(&self) -> crate::Batch {
        crate::Batch::new(self.clone())
    }

    // ---------------------------------------------------------------- execution

    async fn commit(&self, ops: &[PlannedOp]) -> Result<Outcome> {
        let txn = txn::build(self.fence.as_ref(), ops);
        let resp = match self.kv().txn(txn).await {
            Ok(resp) => resp,
            Err(e) => {
                return Err(match Error::from(e) {
                    Error::TooManyOps { .. } => Error::TooManyOps {
                        ops: ops.iter().map(|o| o.checks.len().max(o.writes())).sum(),
                        max: self.inner.options.max_txn_ops,
                    },
                    other => other,
                });
            }
        };
        if resp.succeeded() {
            let revision = resp
                .header()
                .map(|h| h.revision() as u64)
                .ok_or_else(|| Error::Invalid("etcd response without header".into()))?;
            return Ok(Outcome::Committed(revision));
        }
        let verdicts = txn::judge(self.fence.as_ref(), ops, resp.op_responses())?;
        Ok(Outcome::Failed(verdicts))
    }

    /// Commits independent ops in packed transactions, several in flight; per-op results
    /// (the revision that wrote it), keyed by slot.
    pub(crate) async fn run_many(&self, ops: Vec<PlannedOp>) -> Vec<(usize, Result<u64>)> {
        if ops.is_empty() {
            return Vec::new();
        }
        let fenced = self.fence.is_some();
        let (waves, rejected) = txn::pack(fenced, ops, self.limits());
        let mut results: Vec<(usize, Result<u64>)> =
            rejected.into_iter().map(|(s, e)| (s, Err(e))).collect();
        for chunks in waves {
            // Futures built up front, not by a closure inside the stream: keeps this
            // future `Send` for callers that spawn it (see `get_many`).
            let commits: Vec<_> = chunks.into_iter().map(|c| self.run_chunk(c)).collect();
            let done = futures::stream::iter(commits)
                .buffer_unordered(self.inner.options.max_txns_in_flight.max(1))
                .collect::<Vec<_>>()
                .await;
            results.extend(done.into_iter().flatten());
        }
        results
    }

    /// Commits one packed transaction; when it fails, settles the ops whose own compares
    /// failed and retries the rest (re-planned where an assumed key was wrong).
    async fn run_chunk(&self, ops: Vec<PlannedOp>) -> Vec<(usize, Result<u64>)> {
        let fenced = self.fence.is_some();
        let mut out = Vec::with_capacity(ops.len());
        let mut pending = vec![ops];
        while let Some(chunk) = pending.pop() {
            match self.commit(&chunk).await {
                Err(e) => out.extend(chunk.iter().map(|op| (op.slot, Err(e.clone())))),
                Ok(Outcome::Committed(rev)) => {
                    out.extend(chunk.iter().map(|op| (op.slot, Ok(rev))))
                }
                Ok(Outcome::Failed(verdicts)) => {
                    let mut retry = Vec::new();
                    let mut settled = 0;
                    for (op, verdict) in chunk.into_iter().zip(verdicts) {
                        let slot = op.slot;
                        if !matches!(verdict, Verdict::Retry) {
                            settled += 1;
                        }
                        match op.after(self.keys(), verdict) {
                            Ok(op) => retry.push(op),
                            Err(e) => out.push((slot, Err(e))),
                        }
                    }
                    if settled == 0 {
                        // etcd refused, yet every compare reads back as holding: do not spin.
                        let e = Error::Invalid("transaction failed with no failing compare".into());
                        out.extend(retry.iter().map(|op| (op.slot, Err(e.clone()))));
                        continue;
                    }
                    // Re-planned ops may have grown: pack again. Later waves go to the
                    // bottom of the stack so that earlier ones commit first.
                    let (waves, rejected) = txn::pack(fenced, retry, self.limits());
                    out.extend(rejected.into_iter().map(|(s, e)| (s, Err(e))));
                    pending.extend(waves.into_iter().rev().flatten());
                }
            }
        }
        out
    }

    /// Commits `ops` as one transaction: all or nothing.
    pub(crate) async fn run_atomic(&self, mut ops: Vec<PlannedOp>) -> Result<u64> {
        let fenced = self.fence.is_some();
        // Each op can be re-planned once; one more attempt commits or fails for good.
        for _ in 0..3 {
            txn::check_atomic(fenced, &ops, self.limits())?;
            match self.commit(&ops).await? {
                Outcome::Committed(rev) => return Ok(rev),
                Outcome::Failed(verdicts) => {
                    let mut next = Vec::with_capacity(ops.len());
                    let mut replanned = false;
                    for (op, verdict) in ops.into_iter().zip(verdicts) {
                        replanned |= matches!(verdict, Verdict::Replan(_));
                        next.push(op.after(self.keys(), verdict)?);
                    }
                    if !replanned {
                        return Err(Error::Invalid(
                            "transaction failed with no failing compare".into(),
                        ));
                    }
                    ops = next;
                }
            }
        }
        Err(Error::Invalid(
            "batch kept failing on moved index or name keys".into(),
        ))
    }
}

fn single<T>(results: Vec<Result<T>>) -> Result<T> {
    results
        .into_iter()
        .next()
        .unwrap_or_else(|| Err(Error::Invalid("no result".into())))
}

/// Turns per-slot revisions into the written objects, versions set, in input order.
fn finish<T: Object>(objs: Vec<T>, results: Vec<(usize, Result<u64>)>) -> Vec<Result<T>> {
    let mut by_slot: Vec<Option<Result<u64>>> = (0..objs.len()).map(|_| None).collect();
    for (slot, r) in results {
        if let Some(cell) = by_slot.get_mut(slot) {
            *cell = Some(r);
        }
    }
    objs.into_iter()
        .zip(by_slot)
        .map(|(mut obj, r)| match r {
            Some(Ok(rev)) => {
                obj.set_version(rev);
                Ok(obj)
            }
            Some(Err(e)) => Err(e),
            None => Err(Error::Invalid("missing result".into())),
        })
        .collect()
}
