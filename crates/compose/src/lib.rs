//! The compose loader of `shoal stack deploy` / `stack config`: docker/cli's v3 loader
//! rebuilt (reference: /work/shared/reference/stacks-secrets.md §1–3). It reads one or
//! more compose files, checks forbidden keys, interpolates the process environment,
//! casts typed values, validates against the version-gated v3 schema, applies the
//! section transforms (env_file, absolute paths, short syntaxes) and merges the files
//! into one typed [`Project`]. It knows nothing of Swarm objects: turning a project into
//! specs is `convert`'s job.
//!
//! Known difference from docker: yaml.v3 reads a plain `0440` as the octal 288
//! anywhere, yaml_serde (YAML 1.2) reads it as the string "0440". We turn such strings
//! into octal integers at the integer paths (secret/config `mode`, ports, replicas, …),
//! which is what matters; in untyped places (an environment value) it stays "0440"
//! where docker would say "288" (likewise `08` and `1_000`, numbers to yaml.v3 only).
//! A non-string top-level key (`123: x`) fails with `top-level object must be a
//! mapping`, as the CLI 28 oracle prints (newer docker says `non-string key at top
//! level: 123`).

pub mod convert;
mod duration;
mod error;
mod interpolate;
mod merge;
pub mod model;
mod output;
mod ports;
mod schema;
mod sections;
mod tree;
mod units;

pub use error::LoadError;
pub use model::*;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use tree::Node;

/// What to load.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Compose file paths in order; "-" reads stdin.
    pub files: Vec<String>,
    /// The process environment, the only source of variables (no `.env` file).
    pub env: BTreeMap<String, String>,
    /// Leave `$VAR` untouched (`stack config --skip-interpolation`).
    pub skip_interpolation: bool,
}

/// One compose file already in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComposeSource {
    /// The name used in messages (the path as given, or "-").
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The service keys stack deploy ignores with "Ignoring unsupported options".
pub const UNSUPPORTED_PROPERTIES: &[&str] = &[
    "build",
    "cgroupns_mode",
    "cgroup_parent",
    "devices",
    "domainname",
    "external_links",
    "ipc",
    "links",
    "mac_address",
    "network_mode",
    "pid",
    "privileged",
    "restart",
    "security_opt",
    "shm_size",
    "userns_mode",
];

/// The service keys stack deploy ignores with "Ignoring deprecated options", and why.
pub const DEPRECATED_PROPERTIES: &[(&str, &str)] = &[
    (
        "container_name",
        "Setting the container name is not supported.",
    ),
    (
        "expose",
        "Exposing ports is unnecessary - services on the same network can access each other's containers on any port.",
    ),
];

/// The service keys that fail the load, and docker's explanation.
const FORBIDDEN_PROPERTIES: &[(&str, &str)] = &[
    ("extends", "Support for `extends` is not implemented yet."),
    (
        "volume_driver",
        "Instead of setting the volume driver on the service, define a volume using the top-level `volumes` option and specify the driver there.",
    ),
    (
        "volumes_from",
        "To share a volume between services, define it using the top-level `volumes` option and reference it from each service that shares it using the service-level `volumes` option.",
    ),
    ("cpu_quota", "Set resource limits using deploy.resources"),
    ("cpu_shares", "Set resource limits using deploy.resources"),
    ("cpuset", "Set resource limits using deploy.resources"),
    ("mem_limit", "Set resource limits using deploy.resources"),
    (
        "memswap_limit",
        "Set resource limits using deploy.resources",
    ),
];

/// Loads and merges the files of `opts` (stdin is read for "-").
pub fn load(opts: &LoadOptions) -> Result<Project, LoadError> {
    if opts.files.is_empty() {
        return Err(LoadError::NoFiles);
    }
    let cwd = std::env::current_dir().map_err(|e| LoadError::io("getwd", Path::new("."), &e))?;
    let working_dir = if opts.files[0] == "-" {
        cwd.clone()
    } else {
        parent_dir(&cwd.join(&opts.files[0]))
    };
    let mut sources = Vec::with_capacity(opts.files.len());
    for f in &opts.files {
        let bytes = if f == "-" {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| LoadError::io("read", Path::new("/dev/stdin"), &e))?;
            buf
        } else {
            std::fs::read(f).map_err(|e| {
                // Go's os.ReadFile opens a directory fine and fails reading it.
                let op = if e.kind() == std::io::ErrorKind::IsADirectory {
                    "read"
                } else {
                    "open"
                };
                LoadError::io(op, Path::new(f), &e)
            })?
        };
        sources.push(ComposeSource {
            name: f.clone(),
            bytes,
        });
    }
    load_sources(&sources, &working_dir, &opts.env, opts.skip_interpolation)
}

/// Loads one document given as text, with `working_dir` for relative paths (tests,
/// and callers that already hold the file).
pub fn load_from_bytes(
    bytes: &[u8],
    working_dir: &Path,
    env: &BTreeMap<String, String>,
) -> Result<Project, LoadError> {
    let src = ComposeSource {
        name: "-".into(),
        bytes: bytes.to_vec(),
    };
    load_sources(std::slice::from_ref(&src), working_dir, env, false)
}

/// The loader's pipeline over files already read (reference §2, steps 2–4).
pub fn load_sources(
    sources: &[ComposeSource],
    working_dir: &Path,
    env: &BTreeMap<String, String>,
    skip_interpolation: bool,
) -> Result<Project, LoadError> {
    if sources.is_empty() {
        return Err(LoadError::NoFiles);
    }
    // Every file is parsed before anything else is checked, as docker does.
    let mut docs = Vec::with_capacity(sources.len());
    for s in sources {
        let mut doc = tree::parse_document(&s.bytes)?;
        interpolate::resolve_yaml11_octals(&mut doc);
        docs.push(doc);
    }
    let first_version = version_of(&docs[0]);
    let mut merged: Option<Project> = None;
    for doc in docs {
        let version = version_of(&doc);
        if version != first_version {
            return Err(LoadError::VersionMismatch {
                first: first_version,
                other: version,
            });
        }
        check_forbidden(&doc)?;
        let doc = if skip_interpolation {
            doc
        } else {
            interpolate::interpolate_document(&doc, env)?
        };
        let minor = schema::schema_minor(&first_version)
            .ok_or_else(|| LoadError::UnsupportedVersion(first_version.clone()))?;
        schema::validate(&doc, minor).map_err(LoadError::Schema)?;
        let project = load_sections(&doc, working_dir, env, &first_version)?;
        match merged.as_mut() {
            None => merged = Some(project),
            Some(base) => merge::merge_projects(base, project),
        }
    }
    merged.ok_or(LoadError::NoFiles)
}

fn parent_dir(p: &Path) -> PathBuf {
    p.parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// schema.Version: `fmt.Sprint` of the key, "" and "3" meaning the latest.
fn version_of(doc: &BTreeMap<String, Node>) -> String {
    match doc.get("version") {
        None => "3.13".into(),
        Some(n) => match n.go_sprint().as_str() {
            "" | "3" => "3.13".into(),
            v => v.to_string(),
        },
    }
}

fn services_of(doc: &BTreeMap<String, Node>) -> impl Iterator<Item = &BTreeMap<String, Node>> {
    doc.get("services")
        .and_then(Node::as_map)
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(Node::as_map)
}

fn check_forbidden(doc: &BTreeMap<String, Node>) -> Result<(), LoadError> {
    let mut properties = BTreeMap::new();
    for svc in services_of(doc) {
        for (k, why) in FORBIDDEN_PROPERTIES {
            if svc.contains_key(*k) {
                properties.insert(k.to_string(), why.to_string());
            }
        }
    }
    if properties.is_empty() {
        Ok(())
    } else {
        Err(LoadError::Forbidden { properties })
    }
}

fn load_sections(
    doc: &BTreeMap<String, Node>,
    working_dir: &Path,
    env: &BTreeMap<String, String>,
    version: &str,
) -> Result<Project, LoadError> {
    let empty = BTreeMap::new();
    let section = |k: &str| doc.get(k).and_then(Node::as_map).unwrap_or(&empty);
    let mut warnings = Vec::new();
    let mut cx = sections::Context {
        working_dir,
        env,
        version,
        warnings: &mut warnings,
    };
    let services = sections::load_services(section("services"), &mut cx)?;
    let networks = sections::load_networks(section("networks"), &mut cx)?;
    let volumes = sections::load_volumes(section("volumes"), &mut cx)?;
    let secrets = sections::load_file_objects(section("secrets"), "secret", &mut cx)?;
    let configs = sections::load_file_objects(section("configs"), "config", &mut cx)?;
    let extras = doc
        .iter()
        .filter(|(k, _)| k.starts_with("x-"))
        .map(|(k, v)| (k.clone(), sections::to_value(v)))
        .collect();
    Ok(Project {
        version: version.to_string(),
        working_dir: working_dir.to_path_buf(),
        services,
        networks,
        volumes,
        secrets,
        configs,
        extras,
        load_warnings: warnings,
    })
}

/// The warnings `docker stack deploy` prints for a project (all to stderr).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Warnings {
    /// Unsupported keys present on any service, sorted (`build`, `restart`, …).
    pub unsupported: Vec<String>,
    /// Deprecated keys present on any service with docker's explanation, sorted by key.
    pub deprecated: Vec<(String, String)>,
    /// The loader's logged warnings (host-IP ports, `external.name` deprecations), the
    /// bare messages in load order (docker logs them as `level=warning msg="…"`).
    pub loader: Vec<String>,
}

impl Warnings {
    /// The two blocks stack deploy writes to stderr after loading:
    /// `Ignoring unsupported options: build, restart\n\n` and
    /// `Ignoring deprecated options:\n\n<key>: <why>\n\n…\n\n`.
    pub fn deploy_text(&self) -> String {
        let mut out = String::new();
        if !self.unsupported.is_empty() {
            out.push_str(&format!(
                "Ignoring unsupported options: {}\n\n",
                self.unsupported.join(", ")
            ));
        }
        if !self.deprecated.is_empty() {
            let lines: Vec<String> = self
                .deprecated
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            out.push_str(&format!(
                "Ignoring deprecated options:\n\n{}\n\n",
                lines.join("\n\n")
            ));
        }
        out
    }
}

impl Project {
    /// The warnings of a deploy: the loader's plus the unsupported/deprecated keys.
    ///
    /// A key counts as present when the model holds a value for it; unlike docker, a
    /// key written with an empty value (`privileged: false`, `devices: []`) is not
    /// reported.
    pub fn warnings(&self) -> Warnings {
        let mut present = BTreeSet::new();
        for s in self.services.values() {
            let keys = [
                ("build", s.build.is_some()),
                ("cgroupns_mode", s.cgroupns_mode.is_some()),
                ("cgroup_parent", s.cgroup_parent.is_some()),
                ("devices", !s.devices.is_empty()),
                ("domainname", s.domainname.is_some()),
                ("external_links", !s.external_links.is_empty()),
                ("ipc", s.ipc.is_some()),
                ("links", !s.links.is_empty()),
                ("mac_address", s.mac_address.is_some()),
                ("network_mode", s.network_mode.is_some()),
                ("pid", s.pid.is_some()),
                ("privileged", s.privileged),
                ("restart", s.restart.is_some()),
                ("security_opt", !s.security_opt.is_empty()),
                ("shm_size", s.shm_size.is_some()),
                ("userns_mode", s.userns_mode.is_some()),
                ("container_name", s.container_name.is_some()),
                ("expose", !s.expose.is_empty()),
            ];
            present.extend(keys.into_iter().filter(|(_, set)| *set).map(|(k, _)| k));
        }
        let unsupported = UNSUPPORTED_PROPERTIES
            .iter()
            .filter(|k| present.contains(**k))
            .map(|k| k.to_string())
            .collect();
        let deprecated = DEPRECATED_PROPERTIES
            .iter()
            .filter(|(k, _)| present.contains(*k))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Warnings {
            unsupported,
            deprecated,
            loader: self.load_warnings.clone(),
        }
    }

    /// The project as `docker stack config` prints it.
    pub fn to_yaml(&self) -> String {
        output::to_yaml(self)
    }
}
