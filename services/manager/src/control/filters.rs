//! `ListFilters` applied to objects, and Docker's lookup of an object by id, name or
//! unique id prefix.

use std::collections::HashMap;

use shoal_proto::v1::{
    Annotations, Cluster, Config, ListFilters, Network, Node, Secret, Service, Task,
};
use shoal_store::Object;

/// What a filter can ask of any object.
pub trait Filterable: Object {
    /// The name `ls` shows and filters match (hostname for nodes, `<service>.<slot>` for
    /// tasks is not stored, so tasks match on their annotations only).
    fn display_name(&self) -> &str;
    fn labels(&self) -> Option<&HashMap<String, String>>;
    /// Kind-specific filters (service, node, desired state, role, availability).
    fn matches_specific(&self, _f: &ListFilters) -> bool {
        true
    }
}

fn annotations_name(a: Option<&Annotations>) -> &str {
    a.map(|a| a.name.as_str()).unwrap_or("")
}

macro_rules! spec_filterable {
    ($ty:ty) => {
        impl Filterable for $ty {
            fn display_name(&self) -> &str {
                annotations_name(self.spec.as_ref().and_then(|s| s.annotations.as_ref()))
            }
            fn labels(&self) -> Option<&HashMap<String, String>> {
                self.spec
                    .as_ref()
                    .and_then(|s| s.annotations.as_ref())
                    .map(|a| &a.labels)
            }
        }
    };
}

spec_filterable!(Service);
spec_filterable!(Network);
spec_filterable!(Secret);
spec_filterable!(Config);
spec_filterable!(Cluster);

impl Filterable for Node {
    fn display_name(&self) -> &str {
        let name = annotations_name(self.spec.as_ref().and_then(|s| s.annotations.as_ref()));
        if name.is_empty() {
            self.description
                .as_ref()
                .map(|d| d.hostname.as_str())
                .unwrap_or("")
        } else {
            name
        }
    }
    fn labels(&self) -> Option<&HashMap<String, String>> {
        self.spec
            .as_ref()
            .and_then(|s| s.annotations.as_ref())
            .map(|a| &a.labels)
    }
    fn matches_specific(&self, f: &ListFilters) -> bool {
        let spec = self.spec.clone().unwrap_or_default();
        (f.roles.is_empty() || f.roles.contains(&self.role))
            && (f.availabilities.is_empty() || f.availabilities.contains(&spec.availability))
    }
}

impl Filterable for Task {
    fn display_name(&self) -> &str {
        annotations_name(self.annotations.as_ref())
    }
    fn labels(&self) -> Option<&HashMap<String, String>> {
        self.annotations.as_ref().map(|a| &a.labels)
    }
    fn matches_specific(&self, f: &ListFilters) -> bool {
        (f.service_ids.is_empty() || f.service_ids.contains(&self.service_id))
            && (f.node_ids.is_empty() || f.node_ids.contains(&self.node_id))
            && (f.desired_states.is_empty() || f.desired_states.contains(&self.desired_state))
    }
}

/// Whether `obj` passes every filter that is set.
pub fn matches<T: Filterable>(obj: &T, f: &ListFilters) -> bool {
    let name = obj.display_name();
    let id = obj.id();
    (f.names.is_empty() || f.names.iter().any(|n| n == name))
        && (f.name_prefixes.is_empty()
            || f.name_prefixes.iter().any(|p| name.starts_with(p.as_str())))
        && (f.id_prefixes.is_empty() || f.id_prefixes.iter().any(|p| id.starts_with(p.as_str())))
        && labels_match(obj.labels(), &f.labels)
        && obj.matches_specific(f)
}

fn labels_match(labels: Option<&HashMap<String, String>>, want: &HashMap<String, String>) -> bool {
    want.iter().all(|(k, v)| {
        labels
            .and_then(|l| l.get(k))
            .is_some_and(|have| v.is_empty() || have == v)
    })
}

/// How a reference to one object resolved.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a, T> {
    Found(&'a T),
    NotFound,
    /// The reference is a prefix of several ids.
    Ambiguous(usize),
}

/// Docker's rule: a full id wins, then an exact name, then a unique id prefix.
pub fn lookup<'a, T: Filterable>(objects: &'a [T], reference: &str) -> Lookup<'a, T> {
    if reference.is_empty() {
        return Lookup::NotFound;
    }
    if let Some(o) = objects.iter().find(|o| o.id() == reference) {
        return Lookup::Found(o);
    }
    if let Some(o) = objects.iter().find(|o| o.display_name() == reference) {
        return Lookup::Found(o);
    }
    let mut by_prefix = objects.iter().filter(|o| o.id().starts_with(reference));
    match (by_prefix.next(), by_prefix.count()) {
        (Some(o), 0) => Lookup::Found(o),
        (Some(_), more) => Lookup::Ambiguous(more + 1),
        (None, _) => Lookup::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::{ConfigSpec, Meta, TaskState};

    fn config(id: &str, name: &str, labels: &[(&str, &str)]) -> Config {
        Config {
            meta: Some(Meta {
                id: id.into(),
                ..Default::default()
            }),
            spec: Some(ConfigSpec {
                annotations: Some(Annotations {
                    name: name.into(),
                    labels: labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                }),
                data: vec![],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn filters_combine() {
        let c = config("abc123", "web-conf", &[("env", "prod")]);
        let mut f = ListFilters::default();
        assert!(matches(&c, &f));
        f.name_prefixes = vec!["web".into()];
        assert!(matches(&c, &f));
        f.labels.insert("env".into(), "".into());
        assert!(matches(&c, &f));
        f.labels.insert("env".into(), "dev".into());
        assert!(!matches(&c, &f));
        f.labels.clear();
        f.id_prefixes = vec!["zz".into()];
        assert!(!matches(&c, &f));
    }

    #[test]
    fn task_filters() {
        let t = Task {
            service_id: "s1".into(),
            node_id: "n1".into(),
            desired_state: TaskState::Running as i32,
            ..Default::default()
        };
        let mut f = ListFilters {
            service_ids: vec!["s1".into()],
            ..Default::default()
        };
        assert!(matches(&t, &f));
        f.desired_states = vec![TaskState::Shutdown as i32];
        assert!(!matches(&t, &f));
    }

    #[test]
    fn lookup_prefers_id_then_name_then_unique_prefix() {
        let all = vec![
            config("abc111", "one", &[]),
            config("abc222", "abc111x", &[]),
            config("def333", "abc", &[]),
        ];
        assert_eq!(lookup(&all, "abc111"), Lookup::Found(&all[0]));
        assert_eq!(lookup(&all, "abc"), Lookup::Found(&all[2]));
        assert_eq!(lookup(&all, "abc2"), Lookup::Found(&all[1]));
        assert_eq!(lookup(&all, "ab"), Lookup::Ambiguous(2));
        assert_eq!(lookup(&all, "zzz"), Lookup::NotFound);
    }
}
