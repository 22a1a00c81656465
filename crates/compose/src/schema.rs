//! The v3 compose schema (3.0–3.13) as Rust tables, and a validator that reports
//! errors the way docker's gojsonschema-based check does (only the most specific
//! error; `<path> Additional property <k> is not allowed`, `<path> must be a string`,
//! …). The tables are ours: each section lists its keys with the type and the minor
//! version that introduced the key, from the reference's "What each version added"
//! (stacks-secrets.md §1) and the schema diff it summarises:
//! 3.1 secrets; 3.2 endpoint_mode, network attachable, long-syntax ports and volumes,
//! build cache_from; 3.3 configs, credential_spec, placement.preferences, build labels;
//! 3.4 top-level `x-*`, update_config.order, build network/target, healthcheck
//! start_period (and duration formats), volume name; 3.5 `name:` on networks, secrets
//! and configs, isolation, generic_resources, build shm_size; 3.6 tmpfs mount size;
//! 3.7 init, rollback_config, `x-*` inside services/networks/volumes/secrets/configs;
//! 3.8 secret driver/driver_opts/template_driver, config template_driver,
//! max_replicas_per_node, credential_spec.config; 3.9 cgroupns_mode, limits.pids,
//! build extra_hosts; 3.10 volume x-cluster-spec; 3.11 build accepts any extra key;
//! 3.12 healthcheck start_interval; 3.13 oom_score_adj, network driver_opts on a
//! service's network.

use std::collections::BTreeMap;

use crate::tree::Node;

/// The versions that have a schema: "3.0" … "3.13".
pub(crate) const LATEST_MINOR: u32 = 13;

/// Maps a version string to its minor number, None when no schema exists for it.
pub(crate) fn schema_minor(version: &str) -> Option<u32> {
    let minor = version.strip_prefix("3.")?;
    if minor.is_empty()
        || !minor.bytes().all(|b| b.is_ascii_digit())
        || (minor.len() > 1 && minor.starts_with('0'))
    {
        return None;
    }
    let m: u32 = minor.parse().ok()?;
    (m <= LATEST_MINOR).then_some(m)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum T {
    Str,
    Int,
    Num,
    Bool,
    Null,
    Obj,
    Arr,
}

impl T {
    fn name(self) -> &'static str {
        match self {
            T::Str => "string",
            T::Int => "integer",
            T::Num => "number",
            T::Bool => "boolean",
            T::Null => "null",
            T::Obj => "mapping",
            T::Arr => "list",
        }
    }

    fn accepts(self, n: &Node) -> bool {
        match (self, n) {
            (T::Str, Node::Str(_)) | (T::Bool, Node::Bool(_)) | (T::Null, Node::Null) => true,
            (T::Obj, Node::Map(_)) | (T::Arr, Node::Seq(_)) => true,
            (T::Int, Node::Int(_)) | (T::Num, Node::Int(_) | Node::Float(_)) => true,
            (T::Int, Node::Float(f)) => f.fract() == 0.0,
            _ => false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyPat {
    /// `^[a-zA-Z0-9._-]+$`
    Name,
    /// `.+`
    NonEmpty,
    /// `^[a-z]+$`
    Lower,
}

impl KeyPat {
    fn matches(self, k: &str) -> bool {
        match self {
            KeyPat::Name => {
                !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            }
            KeyPat::NonEmpty => !k.is_empty(),
            KeyPat::Lower => !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fmt {
    Ports,
    Duration,
}

/// One schema node.
#[derive(Clone, Debug, Default)]
struct S {
    types: Vec<T>,
    props: Vec<(&'static str, S)>,
    pattern: Option<(KeyPat, Box<S>)>,
    /// `^x-` keys allowed (any value).
    x_ext: bool,
    /// additionalProperties: false.
    closed: bool,
    required: Vec<&'static str>,
    items: Option<Box<S>>,
    unique: bool,
    one_of: Vec<S>,
    format: Option<Fmt>,
    allowed: Vec<&'static str>,
    minimum: Option<f64>,
}

fn ty(types: &[T]) -> S {
    S {
        types: types.to_vec(),
        ..S::default()
    }
}
fn string() -> S {
    ty(&[T::Str])
}
fn integer() -> S {
    ty(&[T::Int])
}
fn number() -> S {
    ty(&[T::Num])
}
fn boolean() -> S {
    ty(&[T::Bool])
}
fn duration() -> S {
    S {
        format: Some(Fmt::Duration),
        ..string()
    }
}
fn one_of(alts: Vec<S>) -> S {
    S {
        one_of: alts,
        ..S::default()
    }
}
fn array(items: S, unique: bool) -> S {
    S {
        types: vec![T::Arr],
        items: Some(Box::new(items)),
        unique,
        ..S::default()
    }
}
fn list_of_strings() -> S {
    array(string(), true)
}
fn string_or_list() -> S {
    one_of(vec![string(), list_of_strings()])
}
fn list_or_dict() -> S {
    one_of(vec![
        S {
            types: vec![T::Obj],
            closed: true,
            pattern: Some((KeyPat::NonEmpty, Box::new(ty(&[T::Str, T::Num, T::Null])))),
            ..S::default()
        },
        array(string(), true),
    ])
}
fn open_map(values: S) -> S {
    S {
        types: vec![T::Obj],
        pattern: Some((KeyPat::NonEmpty, Box::new(values))),
        ..S::default()
    }
}

/// A closed object of the keys whose version is <= `v`.
fn obj(v: u32, keys: Vec<(&'static str, u32, S)>) -> S {
    S {
        types: vec![T::Obj],
        props: keys
            .into_iter()
            .filter(|(_, since, _)| *since <= v)
            .map(|(k, _, s)| (k, s))
            .collect(),
        closed: true,
        ..S::default()
    }
}

fn with_types(mut s: S, types: &[T]) -> S {
    s.types = types.to_vec();
    s
}

fn file_ref() -> S {
    one_of(vec![
        string(),
        S {
            types: vec![T::Obj],
            props: vec![
                ("source", string()),
                ("target", string()),
                ("uid", string()),
                ("gid", string()),
                ("mode", number()),
            ],
            ..S::default()
        },
    ])
}

fn update_config(v: u32) -> S {
    obj(
        v,
        vec![
            ("parallelism", 0, integer()),
            ("delay", 0, duration()),
            ("failure_action", 0, string()),
            ("monitor", 0, duration()),
            ("max_failure_ratio", 0, number()),
            (
                "order",
                4,
                S {
                    allowed: vec!["start-first", "stop-first"],
                    ..string()
                },
            ),
        ],
    )
}

fn deploy(v: u32) -> S {
    let limits = obj(
        v,
        vec![
            ("cpus", 0, string()),
            ("memory", 0, string()),
            ("pids", 9, integer()),
        ],
    );
    let generic = array(
        obj(
            v,
            vec![(
                "discrete_resource_spec",
                0,
                obj(v, vec![("kind", 0, string()), ("value", 0, number())]),
            )],
        ),
        false,
    );
    let reservations = obj(
        v,
        vec![
            ("cpus", 0, string()),
            ("memory", 0, string()),
            ("generic_resources", 5, generic),
        ],
    );
    let placement = obj(
        v,
        vec![
            ("constraints", 0, array(string(), false)),
            (
                "preferences",
                3,
                array(obj(v, vec![("spread", 0, string())]), false),
            ),
            ("max_replicas_per_node", 8, integer()),
        ],
    );
    let d = obj(
        v,
        vec![
            ("mode", 0, string()),
            ("endpoint_mode", 2, string()),
            ("replicas", 0, integer()),
            ("labels", 0, list_or_dict()),
            ("rollback_config", 7, update_config(v)),
            ("update_config", 0, update_config(v)),
            (
                "resources",
                0,
                obj(
                    v,
                    vec![("limits", 0, limits), ("reservations", 0, reservations)],
                ),
            ),
            (
                "restart_policy",
                0,
                obj(
                    v,
                    vec![
                        ("condition", 0, string()),
                        ("delay", 0, duration()),
                        ("max_attempts", 0, integer()),
                        ("window", 0, duration()),
                    ],
                ),
            ),
            ("placement", 0, placement),
        ],
    );
    with_types(d, &[T::Obj, T::Null])
}

fn healthcheck(v: u32) -> S {
    // Before 3.4 interval/timeout had no duration format.
    let dur = || if v >= 4 { duration() } else { string() };
    obj(
        v,
        vec![
            ("disable", 0, boolean()),
            ("interval", 0, dur()),
            ("retries", 0, number()),
            ("test", 0, one_of(vec![string(), array(string(), false)])),
            ("timeout", 0, dur()),
            ("start_period", 4, duration()),
            ("start_interval", 12, duration()),
        ],
    )
}

fn build(v: u32) -> S {
    let mut o = obj(
        v,
        vec![
            ("context", 0, string()),
            ("dockerfile", 0, string()),
            ("args", 0, list_or_dict()),
            ("labels", 3, list_or_dict()),
            ("cache_from", 2, list_of_strings()),
            ("network", 4, string()),
            ("target", 4, string()),
            ("shm_size", 5, ty(&[T::Int, T::Str])),
            ("extra_hosts", 9, list_or_dict()),
        ],
    );
    o.closed = v < 11;
    one_of(vec![string(), o])
}

fn service_networks(v: u32) -> S {
    let mut attach = vec![
        ("aliases", 0, list_of_strings()),
        ("ipv4_address", 0, string()),
        ("ipv6_address", 0, string()),
    ];
    attach.push(("driver_opts", 13, open_map(ty(&[T::Str, T::Num]))));
    one_of(vec![
        list_of_strings(),
        S {
            types: vec![T::Obj],
            closed: true,
            pattern: Some((
                KeyPat::Name,
                Box::new(one_of(vec![obj(v, attach), ty(&[T::Null])])),
            )),
            ..S::default()
        },
    ])
}

fn ports(v: u32) -> S {
    let item = if v >= 2 {
        one_of(vec![
            S {
                format: Some(Fmt::Ports),
                ..number()
            },
            S {
                format: Some(Fmt::Ports),
                ..string()
            },
            obj(
                v,
                vec![
                    ("mode", 0, string()),
                    ("target", 0, integer()),
                    ("published", 0, integer()),
                    ("protocol", 0, string()),
                ],
            ),
        ])
    } else {
        S {
            format: Some(Fmt::Ports),
            ..ty(&[T::Str, T::Num])
        }
    };
    array(item, true)
}

fn service_volumes(v: u32) -> S {
    if v < 2 {
        return array(string(), true);
    }
    let mut long = obj(
        v,
        vec![
            ("type", 0, string()),
            ("source", 0, string()),
            ("target", 0, string()),
            ("read_only", 0, boolean()),
            ("consistency", 0, string()),
            (
                "bind",
                0,
                S {
                    types: vec![T::Obj],
                    props: vec![("propagation", string())],
                    ..S::default()
                },
            ),
            (
                "volume",
                0,
                S {
                    types: vec![T::Obj],
                    props: vec![("nocopy", boolean())],
                    ..S::default()
                },
            ),
            (
                "tmpfs",
                6,
                S {
                    types: vec![T::Obj],
                    props: vec![(
                        "size",
                        S {
                            minimum: Some(0.0),
                            ..integer()
                        },
                    )],
                    ..S::default()
                },
            ),
        ],
    );
    long.required = vec!["type"];
    let mut item = one_of(vec![string(), long]);
    item.unique = true;
    array(item, false)
}

fn service(v: u32) -> S {
    let ulimit = one_of(vec![
        integer(),
        S {
            required: vec!["soft", "hard"],
            ..obj(v, vec![("hard", 0, integer()), ("soft", 0, integer())])
        },
    ]);
    let mut s = obj(
        v,
        vec![
            ("deploy", 0, deploy(v)),
            ("build", 0, build(v)),
            ("cap_add", 0, list_of_strings()),
            ("cap_drop", 0, list_of_strings()),
            ("cgroupns_mode", 9, string()),
            ("cgroup_parent", 0, string()),
            ("command", 0, one_of(vec![string(), array(string(), false)])),
            ("configs", 3, array(file_ref(), false)),
            ("container_name", 0, string()),
            (
                "credential_spec",
                3,
                obj(
                    v,
                    vec![
                        ("config", 8, string()),
                        ("file", 0, string()),
                        ("registry", 0, string()),
                    ],
                ),
            ),
            ("depends_on", 0, list_of_strings()),
            ("devices", 0, list_of_strings()),
            ("dns", 0, string_or_list()),
            ("dns_search", 0, string_or_list()),
            ("domainname", 0, string()),
            (
                "entrypoint",
                0,
                one_of(vec![string(), array(string(), false)]),
            ),
            ("env_file", 0, string_or_list()),
            ("environment", 0, list_or_dict()),
            // gojsonschema knows no "expose" format, so only the type is checked.
            ("expose", 0, array(ty(&[T::Str, T::Num]), true)),
            ("external_links", 0, list_of_strings()),
            ("extra_hosts", 0, list_or_dict()),
            ("healthcheck", 0, healthcheck(v)),
            ("hostname", 0, string()),
            ("image", 0, string()),
            ("init", 7, boolean()),
            ("ipc", 0, string()),
            ("isolation", 5, string()),
            ("labels", 0, list_or_dict()),
            ("links", 0, list_of_strings()),
            (
                "logging",
                0,
                obj(
                    v,
                    vec![
                        ("driver", 0, string()),
                        ("options", 0, open_map(ty(&[T::Str, T::Num, T::Null]))),
                    ],
                ),
            ),
            ("mac_address", 0, string()),
            ("network_mode", 0, string()),
            ("networks", 0, service_networks(v)),
            ("pid", 0, ty(&[T::Str, T::Null])),
            ("ports", 0, ports(v)),
            ("privileged", 0, boolean()),
            ("read_only", 0, boolean()),
            ("restart", 0, string()),
            ("security_opt", 0, list_of_strings()),
            ("shm_size", 0, ty(&[T::Num, T::Str])),
            ("secrets", 1, array(file_ref(), false)),
            ("sysctls", 0, list_or_dict()),
            ("stdin_open", 0, boolean()),
            ("stop_grace_period", 0, duration()),
            ("stop_signal", 0, string()),
            ("tmpfs", 0, string_or_list()),
            ("tty", 0, boolean()),
            (
                "ulimits",
                0,
                S {
                    types: vec![T::Obj],
                    pattern: Some((KeyPat::Lower, Box::new(ulimit))),
                    ..S::default()
                },
            ),
            ("oom_score_adj", 13, integer()),
            ("user", 0, string()),
            ("userns_mode", 0, string()),
            ("volumes", 0, service_volumes(v)),
            ("working_dir", 0, string()),
        ],
    );
    s.x_ext = v >= 7;
    s
}

fn external(closed: bool) -> S {
    S {
        types: vec![T::Bool, T::Obj],
        props: vec![("name", string())],
        closed,
        ..S::default()
    }
}

fn network(v: u32) -> S {
    let ipam = obj(
        v,
        vec![
            ("driver", 0, string()),
            (
                "config",
                0,
                array(obj(v, vec![("subnet", 0, string())]), false),
            ),
        ],
    );
    let mut n = obj(
        v,
        vec![
            ("name", 5, string()),
            ("driver", 0, string()),
            ("driver_opts", 0, open_map(ty(&[T::Str, T::Num]))),
            ("ipam", 0, ipam),
            ("external", 0, external(true)),
            ("internal", 0, boolean()),
            ("attachable", 2, boolean()),
            ("labels", 0, list_or_dict()),
        ],
    );
    n.x_ext = v >= 7;
    with_types(n, &[T::Obj, T::Null])
}

fn volume(v: u32) -> S {
    let mut n = obj(
        v,
        vec![
            ("name", 4, string()),
            ("driver", 0, string()),
            ("driver_opts", 0, open_map(ty(&[T::Str, T::Num]))),
            ("external", 0, external(true)),
            ("labels", 0, list_or_dict()),
            // CSI cluster volumes: docker checks little inside, and neither do we.
            (
                "x-cluster-spec",
                10,
                S {
                    types: vec![T::Obj],
                    ..S::default()
                },
            ),
        ],
    );
    n.x_ext = v >= 7;
    with_types(n, &[T::Obj, T::Null])
}

fn file_object(v: u32, secret: bool) -> S {
    let mut keys = vec![
        ("name", 5, string()),
        ("file", 0, string()),
        ("external", 0, external(false)),
        ("labels", 0, list_or_dict()),
    ];
    if secret {
        keys.push(("driver", 8, string()));
        keys.push(("driver_opts", 8, open_map(ty(&[T::Str, T::Num]))));
    }
    keys.push(("template_driver", 8, string()));
    let mut n = obj(v, keys);
    n.x_ext = v >= 7;
    n
}

fn section(entry: S) -> S {
    S {
        types: vec![T::Obj],
        closed: true,
        pattern: Some((KeyPat::Name, Box::new(entry))),
        ..S::default()
    }
}

fn root(v: u32) -> S {
    let mut networks = section(network(v));
    // The top-level networks mapping is not closed in any v3 schema.
    networks.closed = false;
    let mut r = obj(
        v,
        vec![
            ("version", 0, string()),
            ("services", 0, section(service(v))),
            ("networks", 0, networks),
            ("volumes", 0, section(volume(v))),
            ("secrets", 1, section(file_object(v, true))),
            ("configs", 3, section(file_object(v, false))),
        ],
    );
    r.x_ext = v >= 4;
    r
}

/// One validation failure, as gojsonschema would record it.
#[derive(Debug, Clone)]
struct Failure {
    field: String,
    kind: Kind,
    description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    InvalidType,
    OneOf,
    Other,
}

struct Ctx {
    failures: Vec<Failure>,
    score: u32,
}

fn field_of(path: &[String]) -> String {
    if path.is_empty() {
        "(root)".to_string()
    } else {
        path.join(".")
    }
}

fn validate_node(s: &S, n: &Node, path: &mut Vec<String>, cx: &mut Ctx) {
    if !s.types.is_empty() && !s.types.iter().any(|t| t.accepts(n)) {
        let expected = if s.types.len() == 1 {
            s.types[0].name().to_string()
        } else {
            let names: Vec<&str> = s.types.iter().map(|t| t.name()).collect();
            format!(
                "{} or {}",
                names[..names.len() - 1].join(", "),
                names[names.len() - 1]
            )
        };
        cx.failures.push(Failure {
            field: field_of(path),
            kind: Kind::InvalidType,
            description: format!("must be a {expected}"),
        });
        return;
    }
    cx.score += 1;
    if !s.one_of.is_empty() {
        let mut valid = 0;
        let mut best: Option<Ctx> = None;
        for alt in &s.one_of {
            let mut sub = Ctx {
                failures: Vec::new(),
                score: 0,
            };
            validate_node(alt, n, path, &mut sub);
            if sub.failures.is_empty() {
                valid += 1;
            } else if valid == 0 && best.as_ref().is_none_or(|b| sub.score > b.score) {
                best = Some(sub);
            }
        }
        if valid != 1 {
            cx.failures.push(Failure {
                field: field_of(path),
                kind: Kind::OneOf,
                description: "Must validate one and only one schema (oneOf)".into(),
            });
            if valid == 0
                && let Some(b) = best
            {
                cx.failures.extend(b.failures);
            }
        } else {
            cx.score += 1;
        }
    }
    if let Node::Str(text) = n
        && !s.allowed.is_empty()
        && !s.allowed.contains(&text.as_str())
    {
        let allowed: Vec<String> = s.allowed.iter().map(|a| format!("\"{a}\"")).collect();
        let f = field_of(path);
        cx.failures.push(Failure {
            description: format!("{f} must be one of the following: {}", allowed.join(", ")),
            field: f,
            kind: Kind::Other,
        });
    }
    if let Some(fmt) = s.format {
        let text = match n {
            Node::Str(t) => Some(t.clone()),
            Node::Int(i) => Some(i.to_string()),
            Node::Float(f) => Some(crate::tree::go_float(*f)),
            _ => None,
        };
        if let Some(text) = text {
            let ok = match fmt {
                Fmt::Ports => crate::ports::parse_port_spec(&text).is_ok(),
                Fmt::Duration => {
                    matches!(n, Node::Str(_)) && crate::duration::parse_go_duration(&text).is_some()
                }
            };
            if !ok {
                let name = match fmt {
                    Fmt::Ports => "ports",
                    Fmt::Duration => "duration",
                };
                cx.failures.push(Failure {
                    field: field_of(path),
                    kind: Kind::Other,
                    description: format!("Does not match format '{name}'"),
                });
            }
        }
    }
    if let Some(min) = s.minimum {
        let value = match n {
            Node::Int(i) => Some(*i as f64),
            Node::Float(f) => Some(*f),
            _ => None,
        };
        if value.is_some_and(|x| x < min) {
            cx.failures.push(Failure {
                field: field_of(path),
                kind: Kind::Other,
                description: format!(
                    "Must be greater than or equal to {}",
                    crate::tree::go_float(min)
                ),
            });
        }
    }
    match n {
        Node::Map(m) => validate_map(s, m, path, cx),
        Node::Seq(items) => {
            if s.unique {
                'outer: for i in 0..items.len() {
                    for j in i + 1..items.len() {
                        if items[i] == items[j] {
                            cx.failures.push(Failure {
                                field: field_of(path),
                                kind: Kind::Other,
                                description: format!("array items[{i},{j}] must be unique"),
                            });
                            break 'outer;
                        }
                    }
                }
            }
            if let Some(item) = &s.items {
                for (i, v) in items.iter().enumerate() {
                    path.push(i.to_string());
                    validate_node(item, v, path, cx);
                    path.pop();
                }
            }
        }
        _ => {}
    }
}

fn validate_map(s: &S, m: &BTreeMap<String, Node>, path: &mut Vec<String>, cx: &mut Ctx) {
    for r in &s.required {
        if !m.contains_key(*r) {
            cx.failures.push(Failure {
                field: field_of(path),
                kind: Kind::Other,
                description: format!("{r} is required"),
            });
        }
    }
    if s.closed {
        for k in m.keys() {
            let known = s.props.iter().any(|(p, _)| p == k)
                || s.pattern.as_ref().is_some_and(|(pat, _)| pat.matches(k))
                || (s.x_ext && k.starts_with("x-"));
            if !known {
                cx.failures.push(Failure {
                    field: field_of(path),
                    kind: Kind::Other,
                    description: format!("Additional property {k} is not allowed"),
                });
            }
        }
    }
    for (k, v) in m {
        path.push(k.clone());
        if let Some((_, ps)) = s.props.iter().find(|(p, _)| p == k) {
            validate_node(ps, v, path, cx);
        }
        if let Some((pat, ps)) = &s.pattern
            && pat.matches(k)
        {
            validate_node(ps, v, path, cx);
        }
        path.pop();
    }
}

/// Validates an (interpolated) document against the schema of `minor`, returning
/// docker's message for the most specific error.
pub(crate) fn validate(doc: &BTreeMap<String, Node>, minor: u32) -> Result<(), String> {
    let schema = root(minor);
    let mut cx = Ctx {
        failures: Vec::new(),
        score: 0,
    };
    validate_map(&schema, doc, &mut Vec::new(), &mut cx);
    let errs = cx.failures;
    if errs.is_empty() {
        return Ok(());
    }
    let specificity = |f: &Failure| f.field.split('.').count();
    let mut best = 0;
    for (i, e) in errs.iter().enumerate() {
        let (se, sb) = (specificity(e), specificity(&errs[best]));
        if se > sb
            || (se == sb && e.kind == Kind::InvalidType && errs[best].kind != Kind::InvalidType)
        {
            best = i;
        }
    }
    let parent = &errs[best];
    let description = if parent.kind == Kind::OneOf && best + 1 < errs.len() {
        &errs[best + 1].description
    } else {
        &parent.description
    };
    Err(format!("{} {}", parent.field, description))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<(), String> {
        let doc = crate::tree::parse_document(yaml.as_bytes()).expect("parse");
        validate(&doc, 13)
    }

    fn check_v(yaml: &str, minor: u32) -> Result<(), String> {
        let doc = crate::tree::parse_document(yaml.as_bytes()).expect("parse");
        validate(&doc, minor)
    }

    #[test]
    fn versions() {
        assert_eq!(schema_minor("3.13"), Some(13));
        assert_eq!(schema_minor("3.0"), Some(0));
        assert_eq!(schema_minor("3.14"), None);
        assert_eq!(schema_minor("2"), None);
        assert_eq!(schema_minor("3.01"), None);
    }

    #[test]
    fn the_reference_errors() {
        assert_eq!(
            check("services:\n  web:\n    image: x\n    foo: 1\n"),
            Err("services.web Additional property foo is not allowed".into())
        );
        assert_eq!(
            check_v("version: '3.1'\nconfigs: {}\n", 1),
            Err("(root) Additional property configs is not allowed".into())
        );
        assert_eq!(
            check_v("x-foo: 1\n", 3),
            Err("(root) Additional property x-foo is not allowed".into())
        );
        assert_eq!(check_v("x-foo: 1\n", 4), Ok(()));
        assert_eq!(
            check("secrets:\n  s:\n    environment: X\n"),
            Err("secrets.s Additional property environment is not allowed".into())
        );
        assert_eq!(
            check(
                "services:\n  web:\n    deploy:\n      resources:\n        limits:\n          cpus: 0.5\n"
            ),
            Err("services.web.deploy.resources.limits.cpus must be a string".into())
        );
        assert_eq!(
            check(
                "services:\n  backend:\n    depends_on:\n      db:\n        condition: service_healthy\n"
            ),
            Err("services.backend.depends_on must be a list".into())
        );
        assert_eq!(
            check("version: 3.8\n"),
            Err("version must be a string".into())
        );
    }

    #[test]
    fn the_oracle_errors() {
        // Each message below was printed by `docker stack config` (CLI 28.2.2).
        assert_eq!(
            check("services:\n  web:\n    ports:\n      - abc\n"),
            Err("services.web.ports.0 Does not match format 'ports'".into())
        );
        assert_eq!(
            check("services:\n  web:\n    volumes:\n      - type: bind\n        foo: 1\n"),
            Err("services.web.volumes.0 Additional property foo is not allowed".into())
        );
        assert_eq!(
            check("services:\n  web:\n    environment:\n      G: true\n"),
            Err("services.web.environment.G must be a string, number or null".into())
        );
        assert_eq!(
            check("services:\n  web:\n    deploy:\n      update_config:\n        order: bad\n"),
            Err("services.web.deploy.update_config.order services.web.deploy.update_config.order must be one of the following: \"start-first\", \"stop-first\"".into())
        );
        assert_eq!(
            check("services:\n  web:\n    stop_grace_period: 10x\n"),
            Err("services.web.stop_grace_period Does not match format 'duration'".into())
        );
        assert_eq!(
            check("services:\n  web:\n    ulimits:\n      nofile:\n        soft: 1\n"),
            Err("services.web.ulimits.nofile hard is required".into())
        );
        assert_eq!(
            check("services:\n  web:\n    deploy:\n      replicas: x\n"),
            Err("services.web.deploy.replicas must be a integer".into())
        );
        assert_eq!(
            check("services:\n  web:\n    cap_add: [a, a]\n"),
            Err("services.web.cap_add array items[0,1] must be unique".into())
        );
        assert_eq!(
            check("services:\n  \"we b\":\n    image: x\n"),
            Err("services Additional property we b is not allowed".into())
        );
        assert_eq!(
            check("services:\n  web:\n    labels: [1]\n"),
            Err("services.web.labels.0 must be a string".into())
        );
    }

    #[test]
    fn version_gates() {
        assert_eq!(
            check_v("services:\n  web:\n    init: true\n", 6),
            Err("services.web Additional property init is not allowed".into())
        );
        assert_eq!(check_v("services:\n  web:\n    init: true\n", 7), Ok(()));
        assert_eq!(
            check_v("services:\n  web:\n    x-a: 1\n", 6),
            Err("services.web Additional property x-a is not allowed".into())
        );
        assert_eq!(
            check_v("secrets:\n  s:\n    name: n\n", 4),
            Err("secrets.s Additional property name is not allowed".into())
        );
        assert_eq!(
            check_v("services:\n  web:\n    oom_score_adj: 1\n", 12),
            Err("services.web Additional property oom_score_adj is not allowed".into())
        );
    }
}
