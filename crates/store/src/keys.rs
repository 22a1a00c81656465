//! The etcd key layout: every key shoal writes is built here and nowhere else.
//!
//! All keys live under one prefix `<p>` (default `/shoal/v1`, configurable so that tests and
//! several clusters can share one etcd):
//!
//! | key | value | written by |
//! |---|---|---|
//! | `<p>/objects/<kind>/<id>` | the object, protobuf-encoded (`meta.version` left empty: the version *is* the key's mod revision) | every create / update / delete |
//! | `<p>/objects/<kind>/` (empty id) | empty: the kind's progress marker, never an object | caches waiting for a revision: a watch of the kind that sees it has delivered every change before it |
//! | `<p>/names/<kind>/<name>` | the owning object's id (UTF-8) | create, rename, delete of kinds with unique names: `service`, `network`, `secret`, `config`, `cluster` (not `node`, not `task`) |
//! | `<p>/index/tasks-by-service/<service_id>/<task_id>` | empty | every task create / delete / service change |
//! | `<p>/index/tasks-by-node/<node_id>/<task_id>` | empty | every task create / delete / node assignment (an unassigned task has no key here) |
//! | `<p>/election/<name>` | the leader's candidate id, attached to its lease | leader election; the key's create revision is the fencing token |
//!
//! Kind strings: `node`, `service`, `task`, `network`, `secret`, `config`, `cluster`.
//!
//! Invariants, kept because every write that touches an object touches its name and index
//! keys in the same etcd transaction:
//! - a name key exists iff an object of that kind has that name, and holds that object's id;
//! - an index key exists iff the stored object carries that (non-empty) value.
//!
//! An index value is set at most once: empty until set, then never changed or cleared
//! (Swarm's rule: a task never changes service and never moves to another node). The store
//! relies on it only where it cannot see the previous object: a plain `update` of an object
//! whose value is empty assumes it was empty before. Any other change is detected and its
//! index keys moved; [`crate::Store::update_from`] handles every change.
//!
//! Ids are 25 lowercase base36 characters and index values are ids, so neither contains `/`;
//! the store refuses ids and index values that do (a prefix range would otherwise match
//! another value's keys).

use crate::object::{Index, Kind};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/shoal/v1";

/// Builds and parses keys under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Self::new(DEFAULT_PREFIX)
    }
}

impl Keys {
    /// Keys under `prefix`; a trailing `/` is dropped, a missing leading `/` added.
    pub fn new(prefix: &str) -> Self {
        let trimmed = prefix.trim_end_matches('/');
        let prefix = if trimmed.starts_with('/') {
            trimmed.to_string()
        } else {
            format!("/{trimmed}")
        };
        Self { prefix }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<p>/objects/<kind>/`: the range holding every object of `kind`.
    pub fn objects(&self, kind: Kind) -> String {
        format!("{}/objects/{}/", self.prefix, kind.as_str())
    }

    /// `<p>/objects/<kind>/`, the kind's progress marker: inside the kind's range, so its
    /// watches see it in order, yet never an object (ids are not empty).
    pub fn progress_marker(&self, kind: Kind) -> String {
        self.objects(kind)
    }

    /// `<p>/objects/<kind>/<id>`
    pub fn object(&self, kind: Kind, id: &str) -> String {
        format!("{}/objects/{}/{}", self.prefix, kind.as_str(), id)
    }

    /// `<p>/names/<kind>/<name>`
    pub fn name(&self, kind: Kind, name: &str) -> String {
        format!("{}/names/{}/{}", self.prefix, kind.as_str(), name)
    }

    /// `<p>/index/<index>/<value>/`: the range holding the ids of every object with `value`.
    pub fn index_values(&self, index: Index, value: &str) -> String {
        format!("{}/index/{}/{}/", self.prefix, index.as_str(), value)
    }

    /// `<p>/index/<index>/<value>/<id>`
    pub fn index(&self, index: Index, value: &str, id: &str) -> String {
        format!("{}/index/{}/{}/{}", self.prefix, index.as_str(), value, id)
    }

    /// `<p>/election/<name>`
    pub fn election(&self, name: &str) -> String {
        format!("{}/election/{}", self.prefix, name)
    }

    /// The id in an object key of `kind`, if `key` is one.
    pub fn object_id<'k>(&self, kind: Kind, key: &'k [u8]) -> Option<&'k str> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(self.prefix.as_str())?;
        let rest = rest.strip_prefix("/objects/")?;
        let rest = rest.strip_prefix(kind.as_str())?;
        let id = rest.strip_prefix('/')?;
        (!id.is_empty() && !id.contains('/')).then_some(id)
    }
}

/// The first key after every key starting with `prefix` (etcd's `range_end` for a prefix).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: the range runs to the end of the keyspace.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_documented_one() {
        let keys = Keys::new("/shoal/v1/");
        assert_eq!(keys.object(Kind::Task, "abc"), "/shoal/v1/objects/task/abc");
        assert_eq!(keys.objects(Kind::Service), "/shoal/v1/objects/service/");
        assert_eq!(
            keys.name(Kind::Network, "web"),
            "/shoal/v1/names/network/web"
        );
        assert_eq!(
            keys.index(Index::TasksByService, "s1", "t1"),
            "/shoal/v1/index/tasks-by-service/s1/t1"
        );
        assert_eq!(
            keys.index(Index::TasksByNode, "n1", "t1"),
            "/shoal/v1/index/tasks-by-node/n1/t1"
        );
        assert_eq!(
            keys.election("orchestrator"),
            "/shoal/v1/election/orchestrator"
        );
        assert_eq!(Keys::new("x").prefix(), "/x");
    }

    #[test]
    fn object_ids_parse_back() {
        let keys = Keys::default();
        let key = keys.object(Kind::Node, "n1");
        assert_eq!(keys.object_id(Kind::Node, key.as_bytes()), Some("n1"));
        assert_eq!(keys.object_id(Kind::Task, key.as_bytes()), None);
        assert_eq!(keys.object_id(Kind::Node, b"/shoal/v1/objects/node/"), None);
        assert_eq!(keys.object_id(Kind::Node, b"/other/objects/node/n1"), None);
    }

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
