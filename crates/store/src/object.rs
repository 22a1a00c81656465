//! What the store needs to know about each stored type: its kind, its meta, its unique
//! name and its index values.

use std::fmt;

use shoal_proto::v1::{Cluster, Config, Meta, Network, Node, Secret, Service, Task, Version};

/// The kinds of objects shoal stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Node,
    Service,
    Task,
    Network,
    Secret,
    Config,
    Cluster,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Node,
        Kind::Service,
        Kind::Task,
        Kind::Network,
        Kind::Secret,
        Kind::Config,
        Kind::Cluster,
    ];

    /// The kind's string in keys and events.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Node => "node",
            Kind::Service => "service",
            Kind::Task => "task",
            Kind::Network => "network",
            Kind::Secret => "secret",
            Kind::Config => "config",
            Kind::Cluster => "cluster",
        }
    }

    /// Whether two objects of this kind may not share a name.
    pub const fn has_unique_names(self) -> bool {
        !matches!(self, Kind::Node | Kind::Task)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Secondary indexes kept in etcd, in the same transaction as the objects they index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Index {
    /// `Task.service_id`
    TasksByService,
    /// `Task.node_id` (empty until the task is assigned)
    TasksByNode,
}

impl Index {
    /// The index's string in keys.
    pub const fn as_str(self) -> &'static str {
        match self {
            Index::TasksByService => "tasks-by-service",
            Index::TasksByNode => "tasks-by-node",
        }
    }
}

impl fmt::Display for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored object type. Implemented for the seven `shoal.v1` object messages.
pub trait Object: prost::Message + Default + Clone + Send + Sync + 'static {
    const KIND: Kind;
    /// The indexes objects of this kind appear in, see [`Object::index_value`].
    const INDEXES: &'static [Index] = &[];

    fn meta(&self) -> Option<&Meta>;
    fn meta_mut(&mut self) -> &mut Meta;

    /// The object's unique name, for kinds with unique names; `None` for other kinds and
    /// for objects whose name is empty.
    fn name(&self) -> Option<&str>;

    /// The object's value in `index`, one of [`Object::INDEXES`]; empty means not indexed.
    /// Set at most once: empty until set, then never changed or cleared (see
    /// [`crate::keys`]).
    fn index_value(&self, _index: Index) -> &str {
        ""
    }

    /// The object's id; empty before it is created.
    fn id(&self) -> &str {
        self.meta().map(|m| m.id.as_str()).unwrap_or("")
    }

    /// The object's version (its etcd mod revision); 0 for an object never stored.
    fn version(&self) -> u64 {
        self.meta()
            .and_then(|m| m.version.as_ref())
            .map(|v| v.index)
            .unwrap_or(0)
    }

    fn set_version(&mut self, version: u64) {
        self.meta_mut().version = Some(Version { index: version });
    }
}

fn named(annotations: Option<&shoal_proto::v1::Annotations>) -> Option<&str> {
    annotations
        .map(|a| a.name.as_str())
        .filter(|name| !name.is_empty())
}

macro_rules! object_meta {
    () => {
        fn meta(&self) -> Option<&Meta> {
            self.meta.as_ref()
        }

        fn meta_mut(&mut self) -> &mut Meta {
            self.meta.get_or_insert_with(Meta::default)
        }
    };
}

macro_rules! named_object {
    ($ty:ty, $kind:expr) => {
        impl Object for $ty {
            const KIND: Kind = $kind;

            object_meta!();

            fn name(&self) -> Option<&str> {
                named(self.spec.as_ref().and_then(|s| s.annotations.as_ref()))
            }
        }
    };
}

named_object!(Service, Kind::Service);
named_object!(Network, Kind::Network);
named_object!(Secret, Kind::Secret);
named_object!(Config, Kind::Config);
named_object!(Cluster, Kind::Cluster);

impl Object for Node {
    const KIND: Kind = Kind::Node;

    object_meta!();

    // Node names (hostnames) repeat across a cluster, as in Swarm.
    fn name(&self) -> Option<&str> {
        None
    }
}

impl Object for Task {
    const KIND: Kind = Kind::Task;
    const INDEXES: &'static [Index] = &[Index::TasksByService, Index::TasksByNode];

    object_meta!();

    fn name(&self) -> Option<&str> {
        None
    }

    fn index_value(&self, index: Index) -> &str {
        match index {
            Index::TasksByService => &self.service_id,
            Index::TasksByNode => &self.node_id,
        }
    }
}

/// A new object id: 128 random bits as 25 lowercase base36 characters, like Swarm's.
pub fn new_id() -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    const LEN: usize = 25;
    let mut n: u128 = rand::random();
    let mut out = [b'0'; LEN];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(n % 36) as usize];
        n /= 36;
    }
    out.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::{Annotations, ServiceSpec};

    #[test]
    fn ids_are_25_base36_chars_and_differ() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), 25);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        );
        assert_ne!(a, b);
        // 36^25 > 2^128, so the largest value still fits.
        assert!(36f64.powi(25) > 2f64.powi(128));
    }

    #[test]
    fn names_and_indexes_follow_the_kind() {
        let svc = Service {
            spec: Some(ServiceSpec {
                annotations: Some(Annotations {
                    name: "web".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(svc.name(), Some("web"));
        assert_eq!(Service::default().name(), None);
        let task = Task {
            service_id: "s".into(),
            annotations: Some(Annotations {
                name: "web.1".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(task.name(), None);
        assert_eq!(task.index_value(Index::TasksByService), "s");
        assert_eq!(task.index_value(Index::TasksByNode), "");
        let mut node = Node::default();
        assert_eq!(node.version(), 0);
        node.set_version(7);
        assert_eq!(node.version(), 7);
        assert!(!Kind::Node.has_unique_names());
        assert!(Kind::Cluster.has_unique_names());
    }
}
