use std::sync::Arc;

use crate::object::Kind;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a store call can fail with. Cheap to clone: per-object results of a batch
/// each carry their own copy.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("{kind} {id} not found")]
    NotFound { kind: Kind, id: String },

    /// The name is held by another object of the same kind.
    #[error("{kind} name {name:?} is already taken")]
    AlreadyExists { kind: Kind, name: String },

    /// An object with this id exists already.
    #[error("{kind} {id} already exists")]
    IdExists { kind: Kind, id: String },

    /// The object changed since the caller read it: re-read and try again.
    #[error("{kind} {id} was changed concurrently: expected version {expected}, found {actual}")]
    Conflict {
        kind: Kind,
        id: String,
        expected: u64,
        actual: u64,
    },

    /// The write was made on behalf of a leadership that no longer holds; nothing was
    /// written.
    #[error("leadership {key} (revision {revision}) is no longer held; write refused")]
    Fenced { key: String, revision: u64 },

    /// A stored value that is not a valid object of its kind.
    #[error("cannot decode {key}: {source}")]
    Decode {
        key: String,
        #[source]
        source: prost::DecodeError,
    },

    /// The caller asked for something the store cannot do (empty id on update, a `/` in an
    /// id, the same key written twice in one transaction, ...).
    #[error("invalid request: {0}")]
    Invalid(String),

    /// One transaction would exceed etcd's `--max-txn-ops`.
    #[error("transaction needs {ops} operations; etcd allows {max} (--max-txn-ops)")]
    TooManyOps { ops: usize, max: usize },

    /// The revision asked for has been compacted away.
    #[error("revision {revision} has been compacted")]
    Compacted { revision: u64 },

    /// The lease behind an election is gone (expired or revoked).
    #[error("lease {0:#x} is gone")]
    LeaseLost(i64),

    /// The cache's driver has stopped (the `Cache` was dropped).
    #[error("cache closed")]
    CacheClosed,

    /// etcd refused or could not be reached. A write that fails this way may or may not
    /// have been applied; re-read to find out.
    #[error("etcd: {0}")]
    Etcd(#[source] Arc<etcd_client::Error>),
}

impl Error {
    /// Whether re-reading and retrying may succeed (a conflict or a transient etcd error).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Conflict { .. } | Error::Etcd(_))
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}

impl From<etcd_client::Error> for Error {
    fn from(e: etcd_client::Error) -> Self {
        if let etcd_client::Error::GRpcStatus(status) = &e {
            let msg = status.message();
            if msg.contains("too many operations in txn request") {
                return Error::TooManyOps { ops: 0, max: 0 };
            }
            if msg.contains("required revision has been compacted") {
                return Error::Compacted { revision: 0 };
            }
        }
        Error::Etcd(Arc::new(e))
    }
}
