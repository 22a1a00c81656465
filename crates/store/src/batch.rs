//! Multi-object transactions: all of a batch's writes apply, or none do.

use crate::error::{Error, Result};
use crate::object::Object;
use crate::store::{Committed, Store};
use crate::txn::PlannedOp;

/// Creates, updates and deletes of objects of any kinds, committed as one etcd
/// transaction. Every write keeps its own conditions (free id and name, expected version);
/// if any fails, nothing is written and the first failure is returned.
///
/// A batch must fit one transaction: etcd's `--max-txn-ops` (128 by default) bounds its
/// compares and its writes separately, and a task write takes up to three of each (object,
/// two index keys). A batch that is too big fails with [`Error::TooManyOps`] before anything
/// is sent; split work that need not be atomic with [`Store::create_many`] /
/// [`Store::update_many`] instead.
#[derive(Debug)]
#[must_use = "a batch does nothing until committed"]
pub struct Batch {
    store: Store,
    ops: Vec<PlannedOp>,
    ids: Vec<String>,
    error: Option<Error>,
}

impl Batch {
    pub(crate) fn new(store: Store) -> Self {
        Self {
            store,
            ops: Vec::new(),
            ids: Vec::new(),
            error: None,
        }
    }

    fn push(&mut self, id: String, op: Result<PlannedOp>) -> &mut Self {
        self.ids.push(id);
        match op {
            Ok(op) => self.ops.push(op),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        self
    }

    /// Adds the creation of `obj` (an id is assigned if it has none; see [`Batch::ids`]).
    pub fn create<T: Object>(&mut self, mut obj: T) -> &mut Self {
        Store::prepare_create(&mut obj);
        let op = PlannedOp::create(self.store.keys(), self.ops.len(), &obj);
        self.push(obj.id().to_string(), op)
    }

    /// Adds an update of `obj` at its `meta.version`.
    pub fn update<T: Object>(&mut self, mut obj: T) -> &mut Self {
        let op = Store::prepare_update(&mut obj).and_then(|version| {
            PlannedOp::update(self.store.keys(), self.ops.len(), &obj, version, None)
        });
        self.push(obj.id().to_string(), op)
    }

    /// Adds an update of `obj`, with the unmodified copy it was made from (fewer compares,
    /// and no re-plan when index or name keys move; see [`Store::update_many_from`]).
    pub fn update_from<T: Object>(&mut self, previous: &T, mut obj: T) -> &mut Self {
        let op = Store::prepare_update(&mut obj).and_then(|version| {
            if previous.id() != obj.id() || previous.version() != version {
                return Err(Error::Invalid(format!(
                    "previous copy of {} {} is not the one being updated",
                    T::KIND,
                    obj.id()
                )));
            }
            PlannedOp::update(
                self.store.keys(),
                self.ops.len(),
                &obj,
                version,
                Some(previous),
            )
        });
        self.push(obj.id().to_string(), op)
    }

    /// Adds the deletion of `obj` (with its name and index keys) at its `meta.version`.
    pub fn delete<T: Object>(&mut self, obj: &T) -> &mut Self {
        let op = PlannedOp::delete(self.store.keys(), self.ops.len(), obj, obj.version());
        self.push(obj.id().to_string(), op)
    }

    /// The ids of the objects added so far, in order.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Commits every write in one transaction. On success every created or updated object
    /// is at version `revision`.
    pub async fn commit(self) -> Result<Committed> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let revision = self.store.run_atomic(self.ops).await?;
        Ok(Committed {
            revision,
            ids: self.ids,
        })
    }
}
