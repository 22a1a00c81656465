//! How object writes become etcd transactions.
//!
//! Every write of one object is planned as a [`PlannedOp`]: the conditions it depends on
//! ([`Check`]s, each an etcd compare), the keys it puts and deletes (the object key plus its
//! name and index keys), and how to re-plan it if an assumption turns out wrong. Planned ops
//! are packed into transactions; each transaction's else-branch reads back exactly the keys
//! its compares looked at, so when a transaction fails the store can tell, without another
//! round trip, which op failed and why (stale version, taken name, lost leadership) and which
//! ops merely shared the transaction and can be retried.
//!
//! Name and index keys of an update are derived from the *previous* object, which the store
//! does not have. An update therefore either trusts derived keys it read from etcd (guarded
//! by the object's mod-revision compare) or *assumes* them (from the new object, or from a
//! previous copy the caller supplies) and verifies the assumption with compares. A failed
//! assumption is not an error: the else-branch returned the stored object, from which the op
//! is re-planned exactly and retried.

use std::collections::HashSet;

use etcd_client::{Compare, CompareOp, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse};

use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::object::{Kind, Object};

/// What must hold of one key for a write to apply.
#[derive(Debug, Clone)]
pub(crate) enum Cond {
    ModRevision(i64),
    CreateRevision(i64),
    Absent,
    Present,
    ValueEq(Vec<u8>),
}

/// Why a check is there, which decides what its failure means.
#[derive(Debug, Clone)]
pub(crate) enum Role {
    /// The writer's leadership still holds.
    Fence,
    /// The object is at the version the caller read.
    Version,
    /// No object with this id exists yet.
    IdFree,
    /// No object of the kind has this name yet.
    NameFree(String),
    /// A derived key the plan assumed; failing means "re-plan", not "error".
    Assumed,
}

#[derive(Debug, Clone)]
pub(crate) struct Check {
    pub key: String,
    pub cond: Cond,
    pub role: Role,
}

impl Check {
    fn compare(&self) -> Compare {
        let key = self.key.as_bytes();
        match &self.cond {
            Cond::ModRevision(r) => Compare::mod_revision(key, CompareOp::Equal, *r),
            Cond::CreateRevision(r) => Compare::create_revision(key, CompareOp::Equal, *r),
            Cond::Absent => Compare::create_revision(key, CompareOp::Equal, 0),
            Cond::Present => Compare::create_revision(key, CompareOp::Greater, 0),
            Cond::ValueEq(v) => Compare::value(key, CompareOp::Equal, v.clone()),
        }
    }

    /// The read in the else-branch that shows whether this check held.
    fn read_back(&self) -> TxnOp {
        let opts = match (&self.cond, &self.role) {
            // The stored object is needed to re-plan or report the actual version.
            (_, Role::Version) | (Cond::ValueEq(_), _) => None,
            _ => Some(GetOptions::new().with_keys_only()),
        };
        TxnOp::get(self.key.as_bytes(), opts)
    }

    fn holds(&self, kv: Option<&KeyValue>) -> bool {
        match (&self.cond, kv) {
            (Cond::ModRevision(r), Some(kv)) => kv.mod_revision() == *r,
            (Cond::ModRevision(r), None) => *r == 0,
            (Cond::CreateRevision(r), Some(kv)) => kv.create_revision() == *r,
            (Cond::CreateRevision(r), None) => *r == 0,
            (Cond::Absent, kv) => kv.is_none(),
            (Cond::Present, kv) => kv.is_some(),
            (Cond::ValueEq(v), Some(kv)) => kv.value() == v.as_slice(),
            (Cond::ValueEq(_), None) => false,
        }
    }
}

/// The keys derived from an object besides its own: its name key and its index keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Derived {
    pub name: Option<String>,
    pub name_key: Option<String>,
    pub index_keys: Vec<String>,
}

impl Derived {
    pub fn of<T: Object>(keys: &Keys, obj: &T) -> Result<Self> {
        let id = obj.id();
        let name = obj.name().map(str::to_string);
        let name_key = name.as_deref().map(|n| keys.name(T::KIND, n));
        let mut index_keys = Vec::with_capacity(T::INDEXES.len());
        for &index in T::INDEXES {
            let value = obj.index_value(index);
            if value.contains('/') {
                return Err(Error::Invalid(format!(
                    "{} {id}: {index} value {value:?} contains '/'",
                    T::KIND
                )));
            }
            if !value.is_empty() {
                index_keys.push(keys.index(index, value, id));
            }
        }
        Ok(Self {
            name,
            name_key,
            index_keys,
        })
    }

    /// The derived keys of a stored object, from its bytes.
    pub fn of_stored<T: Object>(keys: &Keys, key: &[u8], value: &[u8]) -> Result<Self> {
        let id = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.rsplit('/').next())
            .unwrap_or_default()
            .to_string();
        let mut obj = decode::<T>(key, value)?;
        obj.meta_mut().id = id;
        Self::of(keys, &obj)
    }
}

/// Decodes a stored object; the caller fills in id and version from the key.
pub(crate) fn decode<T: Object>(key: &[u8], value: &[u8]) -> Result<T> {
    T::decode(value).map_err(|source| Error::Decode {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

/// What happens to the object key itself.
#[derive(Debug, Clone)]
pub(crate) enum ObjectWrite {
    Put(Vec<u8>),
    Delete,
}

/// What the caller expects of the object key.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Expect {
    Absent,
    Version(u64),
}

/// Where the old derived keys of a plan came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OldKeys {
    /// Read from etcd at the expected version: trusted as long as the version holds.
    Stored,
    /// Guessed: each one is verified by a compare.
    Assumed,
    /// From the caller's copy of the object at the expected version: the keys the write
    /// keeps are trusted like stored ones (the version compare proves the copy current),
    /// the keys it moves or removes are verified.
    Supplied,
}

type DeriveStored = fn(&Keys, &[u8], &[u8]) -> Result<Derived>;

/// One object's write, ready to be put into a transaction.
#[derive(Debug, Clone)]
pub(crate) struct PlannedOp {
    /// Position in the caller's input, for per-object results.
    pub slot: usize,
    pub kind: Kind,
    pub id: String,
    pub expect: Expect,
    pub checks: Vec<Check>,
    pub puts: Vec<(String, Vec<u8>)>,
    pub deletes: Vec<String>,
    // Kept to re-plan from the stored object when an assumed key was wrong.
    write: ObjectWrite,
    new: Derived,
    old_keys: OldKeys,
    derive_stored: DeriveStored,
}

impl PlannedOp {
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        keys: &Keys,
        slot: usize,
        kind: Kind,
        id: String,
        expect: Expect,
        write: ObjectWrite,
        old: &Derived,
        old_keys: OldKeys,
        new: Derived,
        derive_stored: DeriveStored,
    ) -> Self {
        let object_key = keys.object(kind, &id);
        let mut checks = Vec::with_capacity(2 + old.index_keys.len());
        let mut puts = Vec::with_capacity(1 + new.index_keys.len());
        let mut deletes = Vec::new();
        checks.push(match expect {
            Expect::Absent => Check {
                key: object_key.clone(),
                cond: Cond::Absent,
                role: Role::IdFree,
            },
            Expect::Version(v) => Check {
                key: object_key.clone(),
                cond: Cond::ModRevision(v as i64),
                role: Role::Version,
            },
        });
        if old_keys != OldKeys::Stored {
            let verify = |kept: bool| old_keys == OldKeys::Assumed || !kept;
            if let Some(k) = &old.name_key
                && verify(new.name_key.as_ref() == Some(k))
            {
                checks.push(Check {
                    key: k.clone(),
                    cond: Cond::ValueEq(id.as_bytes().to_vec()),
                    role: Role::Assumed,
                });
            }
            for k in &old.index_keys {
                if verify(new.index_keys.contains(k)) {
                    checks.push(Check {
                        key: k.clone(),
                        cond: Cond::Present,
                        role: Role::Assumed,
                    });
                }
            }
        }
        match &write {
            ObjectWrite::Put(value) => puts.push((object_key, value.clone())),
            ObjectWrite::Delete => deletes.push(object_key),
        }
        if old.name_key != new.name_key {
            if let (Some(name), Some(k)) = (&new.name, &new.name_key) {
                checks.push(Check {
                    key: k.clone(),
                    cond: Cond::Absent,
                    role: Role::NameFree(name.clone()),
                });
                puts.push((k.clone(), id.as_bytes().to_vec()));
            }
            if let Some(k) = &old.name_key {
                deletes.push(k.clone());
            }
        }
        for k in &old.index_keys {
            if !new.index_keys.contains(k) {
                deletes.push(k.clone());
            }
        }
        for k in &new.index_keys {
            if !old.index_keys.contains(k) {
                puts.push((k.clone(), Vec::new()));
            }
        }
        Self {
            slot,
            kind,
            id,
            expect,
            checks,
            puts,
            deletes,
            write,
            new,
            old_keys,
            derive_stored,
        }
    }

    /// Creating `obj` (whose id, timestamps and cleared version are already set).
    pub fn create<T: Object>(keys: &Keys, slot: usize, obj: &T) -> Result<Self> {
        let id = checked_id::<T>(obj)?;
        let new = Derived::of(keys, obj)?;
        Ok(Self::assemble(
            keys,
            slot,
            T::KIND,
            id,
            Expect::Absent,
            ObjectWrite::Put(obj.encode_to_vec()),
            &Derived::default(),
            OldKeys::Stored,
            new,
            Derived::of_stored::<T>,
        ))
    }

    /// Replacing the stored object at `version` with `obj` (version already cleared).
    /// `previous`: the caller's copy of the stored object at `version`, whose derived keys
    /// are trusted where the write keeps them; `None` assumes the derived keys are `obj`'s
    /// own (no rename, no index change) and verifies each.
    pub fn update<T: Object>(
        keys: &Keys,
        slot: usize,
        obj: &T,
        version: u64,
        previous: Option<&T>,
    ) -> Result<Self> {
        let id = checked_id::<T>(obj)?;
        let new = Derived::of(keys, obj)?;
        let (old, old_keys) = match previous {
            Some(p) => (Derived::of(keys, p)?, OldKeys::Supplied),
            None => (new.clone(), OldKeys::Assumed),
        };
        Ok(Self::assemble(
            keys,
            slot,
            T::KIND,
            id,
            Expect::Version(version),
            ObjectWrite::Put(obj.encode_to_vec()),
            &old,
            old_keys,
            new,
            Derived::of_stored::<T>,
        ))
    }

    /// Deleting `obj` at `version`; its derived keys are assumed from `obj` and verified.
    pub fn delete<T: Object>(keys: &Keys, slot: usize, obj: &T, version: u64) -> Result<Self> {
        let id = checked_id::<T>(obj)?;
        let old = Derived::of(keys, obj)?;
        Ok(Self::assemble(
            keys,
            slot,
            T::KIND,
            id,
            Expect::Version(version),
            ObjectWrite::Delete,
            &old,
            OldKeys::Assumed,
            Derived::default(),
            Derived::of_stored::<T>,
        ))
    }

    /// Deleting the stored object read as `kv`: its derived keys are trusted.
    pub fn delete_stored<T: Object>(
        keys: &Keys,
        slot: usize,
        id: &str,
        kv: &KeyValue,
    ) -> Result<Self> {
        let old = Derived::of_stored::<T>(keys, kv.key(), kv.value())?;
        Ok(Self::assemble(
            keys,
            slot,
            T::KIND,
            id.to_string(),
            Expect::Version(kv.mod_revision() as u64),
            ObjectWrite::Delete,
            &old,
            OldKeys::Stored,
            Derived::default(),
            Derived::of_stored::<T>,
        ))
    }

    /// The same write, with old derived keys taken from the stored object `kv`.
    fn replan(&self, keys: &Keys, kv: &KeyValue) -> Result<Self> {
        let old = (self.derive_stored)(keys, kv.key(), kv.value())?;
        Ok(Self::assemble(
            keys,
            self.slot,
            self.kind,
            self.id.clone(),
            self.expect,
            self.write.clone(),
            &old,
            OldKeys::Stored,
            self.new.clone(),
            self.derive_stored,
        ))
    }

    pub fn writes(&self) -> usize {
        self.puts.len() + self.deletes.len()
    }

    fn written_keys(&self) -> impl Iterator<Item = &str> {
        self.puts
            .iter()
            .map(|(k, _)| k.as_str())
            .chain(self.deletes.iter().map(String::as_str))
    }
}

fn checked_id<T: Object>(obj: &T) -> Result<String> {
    let id = obj.id();
    if id.is_empty() || id.contains('/') {
        return Err(Error::Invalid(format!(
            "{} id {id:?} is not valid",
            T::KIND
        )));
    }
    Ok(id.to_string())
}

/// The leadership a write depends on: the leader key must still have this create revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub(crate) key: String,
    pub(crate) revision: u64,
}

impl Fence {
    /// A fence on the election key `key` created at `revision`. Normally obtained from a
    /// [`crate::Leadership`].
    pub fn new(key: impl Into<String>, revision: u64) -> Self {
        Self {
            key: key.into(),
            revision,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    fn check(&self) -> Check {
        Check {
            key: self.key.clone(),
            cond: Cond::CreateRevision(self.revision as i64),
            role: Role::Fence,
        }
    }
}

/// Limits on one transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_ops: usize,
    pub max_objects: usize,
}

/// Operation counts of a transaction: etcd checks compares, then-ops and else-ops
/// separately against `--max-txn-ops`; the else-branch has one read per compare.
fn ops_needed(fence: bool, ops: &[PlannedOp]) -> usize {
    let compares = usize::from(fence) + ops.iter().map(|o| o.checks.len()).sum::<usize>();
    let writes = ops.iter().map(PlannedOp::writes).sum::<usize>();
    compares.max(writes)
}

/// Checks that `ops` fit one transaction and write no key twice.
pub(crate) fn check_atomic(fence: bool, ops: &[PlannedOp], limits: Limits) -> Result<()> {
    let needed = ops_needed(fence, ops);
    if needed > limits.max_ops {
        return Err(Error::TooManyOps {
            ops: needed,
            max: limits.max_ops,
        });
    }
    let mut seen = HashSet::new();
    for op in ops {
        for k in op.written_keys() {
            if !seen.insert(k) {
                return Err(Error::Invalid(format!(
                    "key {k} is written twice in one transaction"
                )));
            }
        }
    }
    Ok(())
}

/// Transactions that may commit concurrently: none writes a key another one writes.
pub(crate) type Wave = Vec<Vec<PlannedOp>>;

/// Packs ops into transactions within `limits`, in waves: no key is written twice in one
/// wave, a later write of the same key goes to a later wave, so waves must commit one after
/// the other (transactions within a wave may run concurrently) and the first write of a key
/// in input order goes first. Ops that cannot fit even alone come back as errors.
pub(crate) fn pack(
    fence: bool,
    ops: Vec<PlannedOp>,
    limits: Limits,
) -> (Vec<Wave>, Vec<(usize, Error)>) {
    let mut waves = Vec::new();
    let mut rejected = Vec::new();
    let mut todo = ops;
    while !todo.is_empty() {
        let mut chunks = Vec::new();
        let mut wave_keys: HashSet<String> = HashSet::new();
        let mut deferred = Vec::new();
        let mut chunk: Vec<PlannedOp> = Vec::new();
        let mut compares = usize::from(fence);
        let mut writes = 0;
        for op in todo {
            let (c, w) = (op.checks.len(), op.writes());
            if usize::from(fence) + c > limits.max_ops || w > limits.max_ops {
                rejected.push((
                    op.slot,
                    Error::TooManyOps {
                        ops: (usize::from(fence) + c).max(w),
                        max: limits.max_ops,
                    },
                ));
                continue;
            }
            if op.written_keys().any(|k| wave_keys.contains(k)) {
                deferred.push(op);
                continue;
            }
            if chunk.len() >= limits.max_objects
                || compares + c > limits.max_ops
                || writes + w > limits.max_ops
            {
                chunks.push(std::mem::take(&mut chunk));
                compares = usize::from(fence);
                writes = 0;
            }
            compares += c;
            writes += w;
            wave_keys.extend(op.written_keys().map(str::to_string));
            chunk.push(op);
        }
        if !chunk.is_empty() {
            chunks.push(chunk);
        }
        waves.push(chunks);
        todo = deferred;
    }
    (waves, rejected)
}

/// Builds the transaction for `ops`.
pub(crate) fn build(fence: Option<&Fence>, ops: &[PlannedOp]) -> Txn {
    let fence_check = fence.map(Fence::check);
    let checks = || {
        fence_check
            .iter()
            .chain(ops.iter().flat_map(|o| o.checks.iter()))
    };
    let compares: Vec<Compare> = checks().map(Check::compare).collect();
    let reads: Vec<TxnOp> = checks().map(Check::read_back).collect();
    let mut writes = Vec::with_capacity(ops.iter().map(PlannedOp::writes).sum());
    for op in ops {
        for (k, v) in &op.puts {
            writes.push(TxnOp::put(k.as_bytes(), v.clone(), None));
        }
        for k in &op.deletes {
            writes.push(TxnOp::delete(k.as_bytes(), None));
        }
    }
    Txn::new().when(compares).and_then(writes).or_else(reads)
}

/// What a failed transaction means for one of its ops.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// The op's own conditions held; it failed only because another op's did not.
    Retry,
    /// An assumed derived key was wrong; the stored object is attached.
    Replan(KeyValue),
    Failed(Error),
}

/// Reads the else-branch of a failed transaction: one verdict per op.
pub(crate) fn judge(
    fence: Option<&Fence>,
    ops: &[PlannedOp],
    responses: Vec<TxnOpResponse>,
) -> Result<Vec<Verdict>> {
    let mut reads = responses.into_iter().map(|r| match r {
        TxnOpResponse::Get(mut g) => Ok(g.take_kvs().into_iter().next()),
        other => Err(Error::Invalid(format!(
            "unexpected response in a failed transaction: {other:?}"
        ))),
    });
    let mut next = || {
        reads.next().unwrap_or_else(|| {
            Err(Error::Invalid(
                "failed transaction returned too few reads".into(),
            ))
        })
    };
    if let Some(f) = fence {
        let kv = next()?;
        if !f.check().holds(kv.as_ref()) {
            let err = Error::Fenced {
                key: f.key.clone(),
                revision: f.revision,
            };
            return Ok(ops.iter().map(|_| Verdict::Failed(err.clone())).collect());
        }
    }
    let mut verdicts = Vec::with_capacity(ops.len());
    for op in ops {
        let mut stored: Option<KeyValue> = None;
        let mut version_failed = false;
        let mut id_taken = false;
        let mut name_taken: Option<String> = None;
        let mut assumption_failed = false;
        for check in &op.checks {
            let kv = next()?;
            let held = check.holds(kv.as_ref());
            match &check.role {
                Role::Version => {
                    version_failed = !held;
                    stored = kv;
                }
                Role::IdFree => id_taken = !held,
                Role::NameFree(name) if !held => name_taken = Some(name.clone()),
                Role::Assumed if !held => assumption_failed = true,
                _ => {}
            }
        }
        let verdict = if version_failed {
            match stored {
                None => Verdict::Failed(Error::NotFound {
                    kind: op.kind,
                    id: op.id.clone(),
                }),
                Some(kv) => Verdict::Failed(Error::Conflict {
                    kind: op.kind,
                    id: op.id.clone(),
                    expected: match op.expect {
                        Expect::Version(v) => v,
                        Expect::Absent => 0,
                    },
                    actual: kv.mod_revision() as u64,
                }),
            }
        } else if id_taken {
            Verdict::Failed(Error::IdExists {
                kind: op.kind,
                id: op.id.clone(),
            })
        } else if let Some(name) = name_taken {
            Verdict::Failed(Error::AlreadyExists {
                kind: op.kind,
                name,
            })
        } else if assumption_failed {
            match stored {
                Some(kv) => Verdict::Replan(kv),
                None => Verdict::Failed(Error::NotFound {
                    kind: op.kind,
                    id: op.id.clone(),
                }),
            }
        } else {
            Verdict::Retry
        };
        verdicts.push(verdict);
    }
    Ok(verdicts)
}

impl PlannedOp {
    /// Applies a verdict: the op to retry (re-planned if an assumption failed), or its final
    /// error.
    pub(crate) fn after(self, keys: &Keys, verdict: Verdict) -> Result<PlannedOp> {
        match verdict {
            Verdict::Retry => Ok(self),
            Verdict::Failed(e) => Err(e),
            Verdict::Replan(kv) => {
                if self.old_keys == OldKeys::Stored {
                    // Cannot happen: stored plans carry no assumptions.
                    return Err(Error::Invalid(format!(
                        "{} {}: re-plan of an exact plan",
                        self.kind, self.id
                    )));
                }
                self.replan(keys, &kv)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::{Annotations, Meta, Service, ServiceSpec, Task};

    fn task(id: &str, service: &str, node: &str) -> Task {
        Task {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            service_id: service.into(),
            node_id: node.into(),
            ..Default::default()
        }
    }

    fn service(id: &str, name: &str) -> Service {
        Service {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            spec: Some(ServiceSpec {
                annotations: Some(Annotations {
                    name: name.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn create_writes_object_name_and_indexes() -> Result<()> {
        let keys = Keys::new("/p");
        let op = PlannedOp::create(&keys, 0, &task("t1", "s1", ""))?;
        let put: Vec<_> = op.puts.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            put,
            ["/p/objects/task/t1", "/p/index/tasks-by-service/s1/t1"]
        );
        let op = PlannedOp::create(&keys, 0, &task("t2", "s1", "n1"))?;
        assert_eq!(op.puts[2].0, "/p/index/tasks-by-node/n1/t2");
        assert_eq!(op.checks.len(), 1);
        let op = PlannedOp::create(&keys, 0, &service("s1", "web"))?;
        assert_eq!(op.checks.len(), 2);
        assert!(matches!(&op.checks[1].role, Role::NameFree(n) if n == "web"));
        assert_eq!(op.puts[1], ("/p/names/service/web".into(), b"s1".to_vec()));
        Ok(())
    }

    #[test]
    fn plain_update_assumes_unchanged_keys_and_only_puts_the_object() -> Result<()> {
        let keys = Keys::new("/p");
        let op = PlannedOp::update(&keys, 0, &task("t1", "s1", "n1"), 5, None)?;
        assert_eq!(op.puts.len(), 1);
        assert!(op.deletes.is_empty());
        assert_eq!(op.checks.len(), 3);
        assert!(matches!(op.checks[0].cond, Cond::ModRevision(5)));
        Ok(())
    }

    #[test]
    fn update_from_previous_moves_the_changed_index_key() -> Result<()> {
        let keys = Keys::new("/p");
        // Assignment: the node key appears; the kept service key is trusted.
        let prev = task("t1", "s1", "");
        let op = PlannedOp::update(&keys, 0, &task("t1", "s1", "n1"), 5, Some(&prev))?;
        assert!(op.deletes.is_empty());
        assert_eq!(op.puts[1].0, "/p/index/tasks-by-node/n1/t1");
        assert_eq!(op.checks.len(), 1);

        // A move (not Swarm's, but handled): the old key goes, and is verified first.
        let prev = task("t1", "s1", "n1");
        let op = PlannedOp::update(&keys, 0, &task("t1", "s1", "n2"), 6, Some(&prev))?;
        assert_eq!(op.deletes, ["/p/index/tasks-by-node/n1/t1"]);
        let checked: Vec<_> = op.checks.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(
            checked,
            ["/p/objects/task/t1", "/p/index/tasks-by-node/n1/t1"]
        );

        // A status-only change from a copy: the version compare alone.
        let running = PlannedOp::update(
            &keys,
            0,
            &task("t1", "s1", "n1"),
            6,
            Some(&task("t1", "s1", "n1")),
        )?;
        assert_eq!(running.checks.len(), 1);
        assert_eq!(running.puts.len(), 1);
        Ok(())
    }

    #[test]
    fn ids_and_index_values_with_slashes_are_refused() -> Result<()> {
        let keys = Keys::new("/p");
        assert!(PlannedOp::create(&keys, 0, &task("a/b", "s", "")).is_err());
        assert!(PlannedOp::create(&keys, 0, &task("a", "s/x", "")).is_err());
        assert!(PlannedOp::create(&keys, 0, &task("", "s", "")).is_err());
        Ok(())
    }

    #[test]
    fn packing_respects_ops_objects_and_duplicate_keys() -> Result<()> {
        let keys = Keys::new("/p");
        let limits = Limits {
            max_ops: 128,
            max_objects: 64,
        };
        let ops: Vec<_> = (0..100)
            .map(|i| PlannedOp::create(&keys, i, &task(&format!("t{i}"), "s", "")))
            .collect::<Result<_>>()?;
        let (waves, rejected) = pack(true, ops, limits);
        assert!(rejected.is_empty());
        assert_eq!(waves.len(), 1);
        let chunks = &waves[0];
        // 2 writes per unassigned task: 64 objects per transaction.
        assert!(chunks.iter().all(|c| ops_needed(true, c) <= 128));
        assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), 100);
        assert_eq!(chunks[0].len(), 64);

        let dup = vec![
            PlannedOp::create(&keys, 0, &service("a", "web"))?,
            PlannedOp::create(&keys, 1, &service("b", "web"))?,
        ];
        let (waves, _) = pack(false, dup.clone(), limits);
        assert_eq!(waves.len(), 2);
        assert_eq!(waves[0][0][0].slot, 0);
        assert!(check_atomic(false, &dup, limits).is_err());
        Ok(())
    }
}
