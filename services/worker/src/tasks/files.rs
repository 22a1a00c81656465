//! Secrets and configs inside tasks, and Swarm's templates.
//!
//! - **In memory only.** The secrets and configs of the assignments are kept in
//!   [`Deps`], a map by id (a secret's payload is zeroed when it is dropped); they never
//!   reach the state file or a log. The dispatcher sends them before the tasks that use
//!   them, and the task manager applies a message in order, so a task's dependencies
//!   are there when its runner starts.
//! - **Files on a tmpfs.** Before a task is prepared, its references are written under
//!   `<root>/<task id>/` ([`TaskFiles`]), the root a tmpfs (`statfs` says TMPFS_MAGIC;
//!   anything else is refused: a payload never lands on a disk). Directories are 0700,
//!   each file gets its reference's mode (0444 when unset) and owner (numeric uid:gid;
//!   "" is 0 for a container, the worker's own user for a process task). The layout mirrors the paths inside the task: a secret with a relative
//!   target at `run/secrets/<target>`, a config's at `<target>`, absolute targets as
//!   they are (without the leading `/`). A container gets each file bind-mounted
//!   read-only at its target; a process task gets the directory as `SHOAL_TASK_FILES`
//!   (and `SHOAL_SECRETS_DIR` = `$SHOAL_TASK_FILES/run/secrets`). The directory is
//!   removed with the task's runtime, and those of tasks the state file no longer knows
//!   are removed when the worker starts.
//! - **Service templates** (swarmkit's `template/`), expanded per task on the worker
//!   ([`expand`]): env values, hostname, mount sources and targets, with `.Service.ID
//!   .Service.Name .Service.Labels`, `.Node.ID .Node.Hostname .Node.Platform.OS
//!   .Node.Platform.Architecture`, `.Task.ID .Task.Name .Task.Slot` (the node id for a
//!   global task; the name is the full `<service>.<slot>.<task id>`).
//! - **Payload templates**: a secret or config whose `templating` driver is `golang` is
//!   expanded per task with the same data and the functions `secret "<target>"`,
//!   `config "<target>"` (among the task's own references, by target) and `env "VAR"`
//!   (the task's expanded environment; "" when unset).

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use shoal_gotemplate::{Template, TemplateError};
use shoal_proto::v1::task_spec::Runtime;
use shoal_proto::v1::{Config, Driver, Mount, Secret, Task, mount};

use crate::executor::{service_name, task_id};

/// Mode of a file whose reference does not set one.
pub const DEFAULT_MODE: u32 = 0o444;
/// Where a secret with a relative target appears inside a container.
pub const SECRETS_PATH: &str = "/run/secrets";
/// The process tasks' variables naming their files' directory.
pub const ENV_TASK_FILES: &str = "SHOAL_TASK_FILES";
pub const ENV_SECRETS_DIR: &str = "SHOAL_SECRETS_DIR";
/// The only payload template driver.
const GOLANG: &str = "golang";

/// A secret as received; its payload is zeroed on drop.
pub struct HeldSecret(pub Secret);

impl Drop for HeldSecret {
    fn drop(&mut self) {
        if let Some(spec) = self.0.spec.as_mut() {
            spec.data.fill(0);
        }
    }
}

impl std::fmt::Debug for HeldSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("HeldSecret")
            .field(&self.0.meta.as_ref().map(|m| m.id.as_str()))
            .finish()
    }
}

/// The secrets and configs the dispatcher sent, by id.
#[derive(Default, Debug)]
pub struct Deps {
    pub secrets: HashMap<String, Arc<HeldSecret>>,
    pub configs: HashMap<String, Arc<Config>>,
}

/// What the templates know about this node.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub id: String,
    pub hostname: String,
    pub os: String,
    pub architecture: String,
}

impl NodeInfo {
    /// This host, as `shoal_node_description` reports it.
    pub fn local(id: &str, hostname: &str) -> NodeInfo {
        NodeInfo {
            id: id.to_string(),
            hostname: hostname.to_string(),
            os: std::env::consts::OS.to_string(),
            architecture: std::env::consts::ARCH.to_string(),
        }
    }
}

/// Why a task's files could not be made.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("secret {0} not found")]
    SecretNotFound(String),
    #[error("config {0} not found")]
    ConfigNotFound(String),
    #[error("secrets_dir {0} is not a tmpfs: secret payloads are never written to a disk")]
    NotTmpfs(String),
    #[error("{kind} {name}: invalid target {target:?}")]
    Target {
        kind: &'static str,
        name: String,
        target: String,
    },
    #[error("{kind} {name}: {what} {value:?} is not a numeric id")]
    Owner {
        kind: &'static str,
        name: String,
        what: &'static str,
        value: String,
    },
    #[error("{kind} {name}: unrecognized template type {driver:?}")]
    Driver {
        kind: &'static str,
        name: String,
        driver: String,
    },
    #[error("{kind} {name}: expanding the template failed: {source}")]
    Template {
        kind: &'static str,
        name: String,
        source: TemplateError,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FilesError + '_ {
    move |source| FilesError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The per-task directories under one tmpfs root.
#[derive(Debug, Clone)]
pub struct TaskFiles {
    root: PathBuf,
}

/// One file of a task: where it is on the host and where the task sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    pub kind: &'static str,
    /// The secret's or config's id and name.
    pub id: String,
    pub name: String,
    /// Absolute, inside the task.
    pub target: String,
    pub uid: String,
    pub gid: String,
    pub mode: u32,
    /// For a container an empty uid/gid is root's (Swarm's "0"); a process task runs
    /// as the worker's user, which then keeps the file.
    pub container: bool,
}

impl TaskFiles {
    pub fn new(root: impl Into<PathBuf>) -> TaskFiles {
        TaskFiles { root: root.into() }
    }

    /// The default root for a worker: `/dev/shm/shoal-<tag>`.
    pub fn default_root(tag: &str) -> PathBuf {
        PathBuf::from(format!("/dev/shm/shoal-{tag}"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of a task's files.
    pub fn dir(&self, task_id: &str) -> PathBuf {
        self.root.join(task_id)
    }

    /// Where `target` (absolute, inside the task) is under the task's directory.
    pub fn host_path(&self, task_id: &str, target: &str) -> PathBuf {
        self.dir(task_id).join(target.trim_start_matches('/'))
    }

    /// Writes every file of `task` (expanded by [`expand`]) from `deps`.
    pub fn write(&self, task: &Task, deps: &Deps, node: &NodeInfo) -> Result<(), FilesError> {
        let refs = file_refs(task)?;
        if refs.is_empty() {
            return Ok(());
        }
        let id = task_id(task);
        // Everything the task needs is looked up first: a missing one fails it before
        // anything is written.
        let mut secrets = HashMap::new();
        let mut configs = HashMap::new();
        for r in &refs {
            if r.kind == "secret" {
                let s = deps
                    .secrets
                    .get(&r.id)
                    .ok_or_else(|| FilesError::SecretNotFound(r.id.clone()))?;
                secrets.insert(r.id.clone(), s.clone());
            } else {
                let c = deps
                    .configs
                    .get(&r.id)
                    .ok_or_else(|| FilesError::ConfigNotFound(r.id.clone()))?;
                configs.insert(r.id.clone(), c.clone());
            }
        }
        self.ensure_root()?;
        let dir = self.dir(id);
        // A dir left by an earlier attempt is rewritten whole.
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        mkdir(&dir)?;
        let ctx = TemplateCtx::new(task, node, &refs, &secrets, &configs);
        for r in &refs {
            let (data, templating): (&[u8], Option<&Driver>) = if r.kind == "secret" {
                let spec = secrets.get(&r.id).and_then(|s| s.0.spec.as_ref());
                (
                    spec.map(|s| s.data.as_slice()).unwrap_or_default(),
                    spec.and_then(|s| s.templating.as_ref()),
                )
            } else {
                let spec = configs.get(&r.id).and_then(|c| c.spec.as_ref());
                (
                    spec.map(|s| s.data.as_slice()).unwrap_or_default(),
                    spec.and_then(|s| s.templating.as_ref()),
                )
            };
            let expanded;
            let payload = match templating
                .map(|d| d.name.as_str())
                .filter(|n| !n.is_empty())
            {
                None => data,
                Some(GOLANG) => {
                    expanded = ctx.payload(r, data)?;
                    expanded.as_bytes()
                }
                Some(other) => {
                    return Err(FilesError::Driver {
                        kind: r.kind,
                        name: r.name.clone(),
                        driver: other.to_string(),
                    });
                }
            };
            let path = self.host_path(id, &r.target);
            if let Some(parent) = path.parent() {
                mkdir(parent)?;
            }
            write_file(&path, payload, r)?;
        }
        Ok(())
    }

    /// Removes a task's files (nothing there is fine).
    pub fn remove(&self, task_id: &str) {
        if task_id.is_empty() {
            return;
        }
        let dir = self.dir(task_id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a task's files")
            }
        }
    }

    /// Removes the directories of tasks not in `keep` (a worker that died left them).
    pub fn clean_stale(&self, keep: &HashSet<String>) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                tracing::info!(task = %name, "removing the files of a task this worker no longer runs");
                self.remove(&name);
            }
        }
    }

    fn ensure_root(&self) -> Result<(), FilesError> {
        mkdir(&self.root)?;
        let fs = nix::sys::statfs::statfs(&self.root).map_err(|e| FilesError::Io {
            path: self.root.display().to_string(),
            source: std::io::Error::from(e),
        })?;
        if fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
            return Err(FilesError::NotTmpfs(self.root.display().to_string()));
        }
        Ok(())
    }
}

fn mkdir(dir: &Path) -> Result<(), FilesError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))
}

fn numeric(value: &str, what: &'static str, r: &FileRef) -> Result<Option<u32>, FilesError> {
    if value.is_empty() {
        return Ok(r.container.then_some(0));
    }
    value.parse().map(Some).map_err(|_| FilesError::Owner {
        kind: r.kind,
        name: r.name.clone(),
        what,
        value: value.to_string(),
    })
}

fn write_file(path: &Path, data: &[u8], r: &FileRef) -> Result<(), FilesError> {
    use std::io::Write;
    let uid = numeric(&r.uid, "uid", r)?;
    let gid = numeric(&r.gid, "gid", r)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(data).map_err(io(path))?;
    let meta = f.metadata().map_err(io(path))?;
    // Only when it differs: a worker that is not root can still serve its own uid.
    let uid = uid.filter(|u| *u != meta.uid());
    let gid = gid.filter(|g| *g != meta.gid());
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::fchown(&f, uid, gid).map_err(io(path))?;
    }
    f.set_permissions(std::fs::Permissions::from_mode(r.mode & 0o7777))
        .map_err(io(path))?;
    Ok(())
}

/// A target inside the task, absolute: `base/<target>` for a relative one.
fn absolute_target(
    kind: &'static str,
    name: &str,
    target: &str,
    base: &str,
) -> Result<String, FilesError> {
    let bad = || FilesError::Target {
        kind,
        name: name.to_string(),
        target: target.to_string(),
    };
    if target.is_empty() || target.ends_with('/') {
        return Err(bad());
    }
    let path = Path::new(target);
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(bad());
    }
    let full = if path.is_absolute() {
        target.to_string()
    } else {
        format!("{}/{target}", base.trim_end_matches('/'))
    };
    if full == "/" {
        return Err(bad());
    }
    Ok(full)
}

/// The files `task` asks for, with their targets made absolute.
pub fn file_refs(task: &Task) -> Result<Vec<FileRef>, FilesError> {
    let (secrets, configs, container) = match task.spec.as_ref().and_then(|s| s.runtime.as_ref()) {
        Some(Runtime::Container(c)) => (&c.secrets, &c.configs, true),
        Some(Runtime::Process(p)) => (&p.secrets, &p.configs, false),
        None => return Ok(Vec::new()),
    };
    let mut refs = Vec::with_capacity(secrets.len() + configs.len());
    for s in secrets {
        let name = if s.secret_name.is_empty() {
            &s.secret_id
        } else {
            &s.secret_name
        };
        refs.push(FileRef {
            kind: "secret",
            id: s.secret_id.clone(),
            name: name.clone(),
            target: absolute_target("secret", name, &s.target, SECRETS_PATH)?,
            uid: s.uid.clone(),
            gid: s.gid.clone(),
            mode: s.mode.unwrap_or(DEFAULT_MODE),
            container,
        });
    }
    for c in configs {
        let name = if c.config_name.is_empty() {
            &c.config_id
        } else {
            &c.config_name
        };
        refs.push(FileRef {
            kind: "config",
            id: c.config_id.clone(),
            name: name.clone(),
            target: absolute_target("config", name, &c.target, "/")?,
            uid: c.uid.clone(),
            gid: c.gid.clone(),
            mode: c.mode.unwrap_or(DEFAULT_MODE),
            container,
        });
    }
    Ok(refs)
}

/// The data of Swarm's templates for `task` on `node`.
pub fn template_data(task: &Task, node: &NodeInfo) -> Value {
    let id = task_id(task);
    let slot = if task.slot == 0 {
        task.node_id.clone()
    } else {
        task.slot.to_string()
    };
    let service = service_name(task);
    let labels = task
        .service_annotations
        .as_ref()
        .map(|a| a.labels.clone())
        .unwrap_or_default();
    json!({
        "Service": {"ID": task.service_id, "Name": service, "Labels": labels},
        "Node": {
            "ID": node.id,
            "Hostname": node.hostname,
            "Platform": {"OS": node.os, "Architecture": node.architecture},
        },
        "Task": {"ID": id, "Name": format!("{service}.{slot}.{id}"), "Slot": slot},
    })
}

fn expand_str(s: &str, data: &Value) -> Result<String, TemplateError> {
    if !s.contains("{{") {
        return Ok(s.to_string());
    }
    Template::parse(s)?.execute(data)
}

fn expand_env(env: &mut [String], data: &Value) -> Result<(), String> {
    for kv in env.iter_mut() {
        // Only the value is a template, as swarmkit's expandEnv.
        if let Some((k, v)) = kv.split_once('=') {
            let v = expand_str(v, data).map_err(|e| format!("expanding env failed: {e}"))?;
            *kv = format!("{k}={v}");
        }
    }
    Ok(())
}

/// `task` as it runs on this node: its templates expanded (env values, hostname, mount
/// source and target), and its files added — bind mounts (read-only, at their targets)
/// for a container, `SHOAL_TASK_FILES` / `SHOAL_SECRETS_DIR` for a process. The error
/// is the task's (`expanding env failed: …`).
pub fn expand(task: &Task, node: &NodeInfo, files: &TaskFiles) -> Result<Task, String> {
    let data = template_data(task, node);
    let refs = file_refs(task).map_err(|e| e.to_string())?;
    let id = task_id(task).to_string();
    let mut out = task.clone();
    match out.spec.as_mut().and_then(|s| s.runtime.as_mut()) {
        Some(Runtime::Container(c)) => {
            expand_env(&mut c.env, &data)?;
            c.hostname = expand_str(&c.hostname, &data)
                .map_err(|e| format!("expanding hostname failed: {e}"))?;
            for m in c.mounts.iter_mut() {
                m.source = expand_str(&m.source, &data)
                    .map_err(|e| format!("expanding mounts failed: {e}"))?;
                m.target = expand_str(&m.target, &data)
                    .map_err(|e| format!("expanding mounts failed: {e}"))?;
                // And a volume's labels and driver options, as swarmkit's expandMounts.
                if let Some(v) = m.volume_options.as_mut() {
                    let driver = v.driver_config.as_mut().map(|d| &mut d.options);
                    for value in v
                        .labels
                        .values_mut()
                        .chain(driver.into_iter().flat_map(|o| o.values_mut()))
                    {
                        *value = expand_str(value, &data)
                            .map_err(|e| format!("expanding mounts failed: {e}"))?;
                    }
                }
            }
            for r in &refs {
                c.mounts.push(Mount {
                    r#type: mount::Type::Bind as i32,
                    source: files.host_path(&id, &r.target).display().to_string(),
                    target: r.target.clone(),
                    read_only: true,
                    ..Default::default()
                });
            }
        }
        Some(Runtime::Process(p)) => {
            expand_env(&mut p.env, &data)?;
            if !refs.is_empty() {
                let dir = files.dir(&id);
                p.env.push(format!("{ENV_TASK_FILES}={}", dir.display()));
                p.env.push(format!(
                    "{ENV_SECRETS_DIR}={}",
                    files.host_path(&id, SECRETS_PATH).display()
                ));
            }
        }
        None => {}
    }
    Ok(out)
}

/// What a payload template of one task sees.
struct TemplateCtx {
    data: Value,
    env: HashMap<String, String>,
    /// Payloads of the task's references, by their target as written in the reference
    /// and as made absolute.
    secrets: HashMap<String, Vec<u8>>,
    configs: HashMap<String, Vec<u8>>,
}

impl TemplateCtx {
    fn new(
        task: &Task,
        node: &NodeInfo,
        refs: &[FileRef],
        secrets: &HashMap<String, Arc<HeldSecret>>,
        configs: &HashMap<String, Arc<Config>>,
    ) -> TemplateCtx {
        let env_list = match task.spec.as_ref().and_then(|s| s.runtime.as_ref()) {
            Some(Runtime::Container(c)) => c.env.clone(),
            Some(Runtime::Process(p)) => p.env.clone(),
            None => Vec::new(),
        };
        let env = env_list
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (raw_secrets, raw_configs) = match task.spec.as_ref().and_then(|s| s.runtime.as_ref()) {
            Some(Runtime::Container(c)) => (c.secrets.clone(), c.configs.clone()),
            Some(Runtime::Process(p)) => (p.secrets.clone(), p.configs.clone()),
            None => Default::default(),
        };
        let mut by_target_s = HashMap::new();
        for (s, r) in raw_secrets
            .iter()
            .zip(refs.iter().filter(|r| r.kind == "secret"))
        {
            if let Some(data) = secrets
                .get(&s.secret_id)
                .and_then(|h| h.0.spec.as_ref())
                .map(|spec| spec.data.clone())
            {
                by_target_s.insert(s.target.clone(), data.clone());
                by_target_s.insert(r.target.clone(), data);
            }
        }
        let mut by_target_c = HashMap::new();
        for (c, r) in raw_configs
            .iter()
            .zip(refs.iter().filter(|r| r.kind == "config"))
        {
            if let Some(data) = configs
                .get(&c.config_id)
                .and_then(|c| c.spec.as_ref())
                .map(|spec| spec.data.clone())
            {
                by_target_c.insert(c.target.clone(), data.clone());
                by_target_c.insert(r.target.clone(), data);
            }
        }
        TemplateCtx {
            data: template_data(task, node),
            env,
            secrets: by_target_s,
            configs: by_target_c,
        }
    }

    fn payload(&self, r: &FileRef, data: &[u8]) -> Result<String, FilesError> {
        let fail = |e: TemplateError| FilesError::Template {
            kind: r.kind,
            name: r.name.clone(),
            source: e,
        };
        let src = std::str::from_utf8(data)
            .map_err(|_| fail(TemplateError("the payload is not UTF-8 text".into())))?;
        let funcs = |name: &str, args: &[Value]| -> Option<Result<Value, TemplateError>> {
            let (map, kind) = match name {
                "secret" => (&self.secrets, "secret"),
                "config" => (&self.configs, "config"),
                "env" => {
                    return Some(match args {
                        [Value::String(k)] => {
                            Ok(Value::String(self.env.get(k).cloned().unwrap_or_default()))
                        }
                        _ => Err(TemplateError("env takes one name".into())),
                    });
                }
                _ => return None,
            };
            Some(match args {
                [Value::String(target)] => match map.get(target) {
                    Some(bytes) => {
                        String::from_utf8(bytes.clone())
                            .map(Value::String)
                            .map_err(|_| {
                                TemplateError(format!("{kind} target {target} is not UTF-8 text"))
                            })
                    }
                    None => Err(TemplateError(format!("{kind} target {target} not found"))),
                },
                _ => Err(TemplateError(format!("{kind} takes one target"))),
            })
        };
        Template::parse(src)
            .and_then(|t| t.execute_with(&self.data, &funcs))
            .map_err(fail)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use shoal_proto::v1::{Annotations, ContainerSpec, Meta, SecretReference, TaskSpec};

    fn task() -> Task {
        Task {
            meta: Some(Meta {
                id: "t1".into(),
                ..Default::default()
            }),
            service_id: "svc1".into(),
            slot: 0,
            node_id: "n1".into(),
            service_annotations: Some(Annotations {
                name: "web".into(),
                ..Default::default()
            }),
            spec: Some(TaskSpec {
                runtime: Some(Runtime::Container(ContainerSpec {
                    env: vec!["NODE_ID={{.Node.ID}}".into(), "N={{.Task.Name}}".into()],
                    hostname: "{{.Service.Name}}-{{.Task.Slot}}".into(),
                    secrets: vec![SecretReference {
                        secret_id: "s1".into(),
                        secret_name: "pw".into(),
                        target: "pw".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn service_templates_expand_per_task() {
        let node = NodeInfo::local("n1", "host1");
        let files = TaskFiles::new("/dev/shm/x");
        let t = expand(&task(), &node, &files).unwrap();
        let Some(Runtime::Container(c)) = t.spec.unwrap().runtime else {
            panic!("container")
        };
        assert_eq!(c.env, vec!["NODE_ID=n1", "N=web.n1.t1"]);
        assert_eq!(c.hostname, "web-n1");
        assert_eq!(c.mounts.len(), 1);
        assert_eq!(c.mounts[0].target, "/run/secrets/pw");
        assert_eq!(c.mounts[0].source, "/dev/shm/x/t1/run/secrets/pw");
        assert!(c.mounts[0].read_only);

        let mut bad = task();
        if let Some(Runtime::Container(c)) = bad.spec.as_mut().and_then(|s| s.runtime.as_mut()) {
            c.env = vec!["X={{.Nope".into()];
        }
        let e = expand(&bad, &node, &files).unwrap_err();
        assert!(e.starts_with("expanding env failed: "), "{e}");
    }

    #[test]
    fn names_for_owners_and_unknown_template_drivers_fail_clearly() {
        let root = std::env::temp_dir().join("unused");
        let shm = PathBuf::from(format!("/dev/shm/shoal-unit-{}", std::process::id()));
        let files = TaskFiles::new(if Path::new("/dev/shm").exists() {
            &shm
        } else {
            &root
        });
        let node = NodeInfo::local("n1", "h");
        let mut deps = Deps::default();
        deps.secrets.insert(
            "s1".into(),
            Arc::new(HeldSecret(Secret {
                spec: Some(shoal_proto::v1::SecretSpec {
                    data: b"x".to_vec(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        );
        let mut t = task();
        if let Some(Runtime::Container(c)) = t.spec.as_mut().and_then(|s| s.runtime.as_mut()) {
            c.secrets[0].uid = "nobody".into();
        }
        let e = files.write(&t, &deps, &node).unwrap_err().to_string();
        if Path::new("/dev/shm").exists() {
            assert_eq!(e, "secret pw: uid \"nobody\" is not a numeric id");
        }
        if let Some(s) = Arc::get_mut(deps.secrets.get_mut("s1").unwrap()) {
            s.0.spec.as_mut().unwrap().templating = Some(Driver {
                name: "mustache".into(),
                ..Default::default()
            });
        }
        let e = files.write(&task(), &deps, &node).unwrap_err().to_string();
        if Path::new("/dev/shm").exists() {
            assert_eq!(e, "secret pw: unrecognized template type \"mustache\"");
        }
        let _ = std::fs::remove_dir_all(&shm);
    }

    #[test]
    fn targets_are_checked() {
        assert_eq!(
            absolute_target("secret", "a", "x", SECRETS_PATH).unwrap(),
            "/run/secrets/x"
        );
        assert_eq!(
            absolute_target("config", "a", "x.conf", "/").unwrap(),
            "/x.conf"
        );
        assert_eq!(
            absolute_target("config", "a", "/etc/x", "/").unwrap(),
            "/etc/x"
        );
        for bad in ["", "../x", "a/../../x", "/", "dir/"] {
            assert!(
                absolute_target("secret", "a", bad, SECRETS_PATH).is_err(),
                "{bad}"
            );
        }
    }
}
