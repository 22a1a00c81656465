//! `service update` flags and how they change the spec read from the manager, with
//! docker's semantics: `--*-add` adds or replaces (by key, target or port), `--*-rm`
//! removes by key, the shared [`ServiceFlags`] change only what was given, `--force`
//! bumps the task spec's force-update counter, and `--rollback` takes no other flag.

use std::collections::HashSet;

use shoal_proto::v1::{
    ConfigReference, Mount, NetworkAttachmentConfig, Placement, PortConfig, SecretReference,
    ServiceSpec, TaskSpec, port_config, service_spec, task_spec,
};

use super::opts::{
    FileRefOpt, FollowFlags, ServiceFlags, container_only, env, invalid, labels, opt_uint,
    parse_endpoint_mode, parse_file_ref, parse_mount_flag, parse_network, parse_placement_pref,
    parse_publish_flag, runtime,
};

/// Every flag of `service update`.
#[derive(Debug, Default, Clone, PartialEq, clap::Args)]
pub struct UpdateArgs {
    /// Service image tag.
    #[arg(long)]
    pub image: Option<String>,
    /// Service command args (split as a shell would; for --process services, the
    /// arguments after the program).
    #[arg(long, value_name = "COMMAND", allow_hyphen_values = true)]
    pub args: Option<String>,
    /// Add or update an environment variable.
    #[arg(long, value_name = "KEY=VALUE")]
    pub env_add: Vec<String>,
    /// Remove an environment variable.
    #[arg(long, value_name = "KEY")]
    pub env_rm: Vec<String>,
    /// Add or update a service label.
    #[arg(long, value_name = "KEY=VALUE")]
    pub label_add: Vec<String>,
    /// Remove a label by its key.
    #[arg(long, value_name = "KEY")]
    pub label_rm: Vec<String>,
    /// Add or update a container label.
    #[arg(long, value_name = "KEY=VALUE")]
    pub container_label_add: Vec<String>,
    /// Remove a container label by its key.
    #[arg(long, value_name = "KEY")]
    pub container_label_rm: Vec<String>,
    /// Add or update a placement constraint.
    #[arg(long, value_name = "CONSTRAINT")]
    pub constraint_add: Vec<String>,
    /// Remove a constraint.
    #[arg(long, value_name = "CONSTRAINT")]
    pub constraint_rm: Vec<String>,
    /// Add a placement preference (spread=<descriptor>).
    #[arg(long, value_name = "PREF")]
    pub placement_pref_add: Vec<String>,
    /// Remove a placement preference.
    #[arg(long, value_name = "PREF")]
    pub placement_pref_rm: Vec<String>,
    /// Add or update a published port (8080:80[/udp], or mode=host,published=…,target=…).
    #[arg(long, value_name = "PORT")]
    pub publish_add: Vec<String>,
    /// Remove a published port by its target port.
    #[arg(long, value_name = "PORT")]
    pub publish_rm: Vec<String>,
    /// Endpoint mode (vip or dnsrr).
    #[arg(long = "endpoint-mode", value_name = "MODE")]
    pub endpoint_mode: Option<String>,
    /// Add or update a mount on a service.
    #[arg(long, value_name = "MOUNT")]
    pub mount_add: Vec<String>,
    /// Remove a mount by its target path.
    #[arg(long, value_name = "PATH")]
    pub mount_rm: Vec<String>,
    /// Add a network (NETWORK, or name=NETWORK,alias=ALIAS…).
    #[arg(long, value_name = "NETWORK")]
    pub network_add: Vec<String>,
    /// Remove a network.
    #[arg(long, value_name = "NETWORK")]
    pub network_rm: Vec<String>,
    /// Add or update a secret on a service (NAME, or source=NAME,target=…,uid=…,gid=…,mode=…).
    #[arg(long, value_name = "SECRET")]
    pub secret_add: Vec<String>,
    /// Remove a secret (by name).
    #[arg(long, value_name = "SECRET")]
    pub secret_rm: Vec<String>,
    /// Add or update a config file on a service (NAME, or source=NAME,target=…,…).
    #[arg(long, value_name = "CONFIG")]
    pub config_add: Vec<String>,
    /// Remove a configuration file (by name).
    #[arg(long, value_name = "CONFIG")]
    pub config_rm: Vec<String>,
    /// Force update even if no changes require it.
    #[arg(long)]
    pub force: bool,
    /// Rollback to previous specification.
    #[arg(long)]
    pub rollback: bool,
    #[command(flatten)]
    pub service: ServiceFlags,
    #[command(flatten)]
    pub follow: FollowFlags,
    #[arg(value_name = "SERVICE")]
    pub target: String,
}

/// `KEY` of `KEY=VALUE`.
fn env_key(item: &str) -> &str {
    item.split_once('=').map(|(k, _)| k).unwrap_or(item)
}

/// Removes the keys of `rm`, then adds (or replaces) `add`'s `KEY=VALUE`s.
fn update_labels(
    field: &mut std::collections::HashMap<String, String>,
    add: &[String],
    rm: &[String],
) {
    for key in rm {
        field.remove(key);
    }
    field.extend(labels(add));
}

/// Removes the variables named by `rm`, then sets `add`'s (a variable already there is
/// replaced where it stands; new ones go last).
fn update_env(field: &mut Vec<String>, add: &[String], rm: &[String]) -> anyhow::Result<()> {
    field.retain(|e| !rm.iter().any(|r| r == env_key(e)));
    for item in env(add, "--env-add")? {
        match field.iter_mut().find(|e| env_key(e) == env_key(&item)) {
            Some(existing) => *existing = item,
            None => field.push(item),
        }
    }
    Ok(())
}

/// Mounts by target: an added one replaces the mount at its target, `rm` removes by
/// target; sorted by source then target, as docker leaves them.
fn update_mounts(field: &mut Vec<Mount>, add: &[String], rm: &[String]) -> anyhow::Result<()> {
    let mut mounts: Vec<Mount> = Vec::new();
    for value in add {
        let m = parse_mount_flag(value, "--mount-add")?;
        if mounts.iter().any(|x| x.target == m.target) {
            anyhow::bail!("duplicate mount target");
        }
        mounts.push(m);
    }
    for m in field.drain(..) {
        if !mounts.iter().any(|x| x.target == m.target) {
            mounts.push(m);
        }
    }
    mounts.retain(|m| !rm.contains(&m.target));
    mounts.sort_by(|a, b| {
        a.source
            .cmp(&b.source)
            .then_with(|| a.target.cmp(&b.target))
    });
    *field = mounts;
    Ok(())
}

/// docker's `portConfigToString`: `published:target/protocol/mode`, the identity of a
/// published port and the order ports are kept in.
fn port_key(p: &PortConfig) -> String {
    let protocol = port_config::Protocol::try_from(p.protocol)
        .map(|x| crate::output::enum_word(x.as_str_name(), "PROTOCOL_"))
        .unwrap_or_else(|_| "tcp".into());
    let mode = port_config::PublishMode::try_from(p.publish_mode)
        .map(|x| crate::output::enum_word(x.as_str_name(), "PUBLISH_MODE_"))
        .unwrap_or_else(|_| "ingress".into());
    format!("{}:{}/{protocol}/{mode}", p.published_port, p.target_port)
}

/// `rm` removes the ports with its target port, protocol and mode (`--publish-rm 80`);
/// `add` adds the ports not there yet.
fn update_ports(field: &mut Vec<PortConfig>, add: &[String], rm: &[String]) -> anyhow::Result<()> {
    let mut removals = Vec::new();
    for value in rm {
        removals.extend(parse_publish_flag(value, "--publish-rm")?);
    }
    let mut additions = Vec::new();
    for value in add {
        additions.extend(parse_publish_flag(value, "--publish-add")?);
    }
    let mut ports: Vec<PortConfig> = Vec::new();
    for p in field.drain(..) {
        let removed = removals.iter().any(|r| {
            r.protocol == p.protocol
                && r.target_port == p.target_port
                && r.publish_mode == p.publish_mode
        });
        if !removed && !ports.iter().any(|x| port_key(x) == port_key(&p)) {
            ports.push(p);
        }
    }
    for p in additions {
        if !ports.iter().any(|x| port_key(x) == port_key(&p)) {
            ports.push(p);
        }
    }
    ports.sort_by_key(port_key);
    *field = ports;
    Ok(())
}

/// docker's `updateNetworks`: drops the attachments to the networks in `removals`
/// (ids), appends `additions` (targets resolved to ids, each with the reference as
/// typed for the error), refuses a network the service is already on, and keeps the
/// attachments sorted by target. Attachments in the deprecated service-level
/// `networks` move to the task spec, where Swarm reads them first.
pub fn update_networks(
    spec: &mut ServiceSpec,
    removals: &HashSet<String>,
    additions: Vec<(String, NetworkAttachmentConfig)>,
) -> anyhow::Result<()> {
    let task = spec.task.get_or_insert_with(TaskSpec::default);
    let mut current = std::mem::take(&mut task.networks);
    if current.is_empty() {
        current = std::mem::take(&mut spec.networks);
    }
    spec.networks.clear();
    let mut networks: Vec<NetworkAttachmentConfig> = current
        .into_iter()
        .filter(|n| !removals.contains(&n.target))
        .collect();
    for (given, attachment) in additions {
        if networks.iter().any(|n| n.target == attachment.target) {
            anyhow::bail!("service is already attached to network {given}");
        }
        networks.push(attachment);
    }
    networks.sort_by(|a, b| a.target.cmp(&b.target));
    if let Some(task) = spec.task.as_mut() {
        task.networks = networks;
    }
    Ok(())
}

/// docker's `getUpdatedSecrets`: drops the references to the secrets named in `rm`,
/// then appends `add` (resolved to ids; a target already used is the manager's
/// "conflicting target" refusal, as in docker).
pub fn update_secret_refs(spec: &mut ServiceSpec, rm: &[String], add: Vec<SecretReference>) {
    let task = spec.task.get_or_insert_with(TaskSpec::default);
    let refs = match runtime(task) {
        task_spec::Runtime::Container(c) => &mut c.secrets,
        task_spec::Runtime::Process(p) => &mut p.secrets,
    };
    refs.retain(|r| !rm.contains(&r.secret_name));
    refs.extend(add);
}

/// docker's `getUpdatedConfigs` for file targets: as [`update_secret_refs`].
pub fn update_config_refs(spec: &mut ServiceSpec, rm: &[String], add: Vec<ConfigReference>) {
    let task = spec.task.get_or_insert_with(TaskSpec::default);
    let refs = match runtime(task) {
        task_spec::Runtime::Container(c) => &mut c.configs,
        task_spec::Runtime::Process(p) => &mut p.configs,
    };
    refs.retain(|r| !rm.contains(&r.config_name));
    refs.extend(add);
}

fn placement(task: &mut TaskSpec) -> &mut Placement {
    task.placement.get_or_insert_with(Placement::default)
}

impl UpdateArgs {
    /// Whether anything but `--rollback`, the follow flags and the service was given.
    fn other_than_rollback(&self) -> bool {
        let bare = UpdateArgs {
            rollback: self.rollback,
            follow: self.follow.clone(),
            target: self.target.clone(),
            ..Default::default()
        };
        *self != bare
    }

    /// The `--network-add` attachments as typed (targets not resolved yet).
    pub fn network_additions(&self) -> anyhow::Result<Vec<NetworkAttachmentConfig>> {
        self.network_add
            .iter()
            .map(|n| parse_network(n, "--network-add"))
            .collect()
    }

    /// The `--secret-add` references as typed (ids not resolved yet).
    pub fn secret_additions(&self) -> anyhow::Result<Vec<FileRefOpt>> {
        self.secret_add
            .iter()
            .map(|v| parse_file_ref(v, "secret", "--secret-add"))
            .collect()
    }

    /// The `--config-add` references as typed.
    pub fn config_additions(&self) -> anyhow::Result<Vec<FileRefOpt>> {
        self.config_add
            .iter()
            .map(|v| parse_file_ref(v, "config", "--config-add"))
            .collect()
    }

    /// Whether the networks change (the caller resolves them, then calls
    /// [`update_networks`]).
    pub fn changes_networks(&self) -> bool {
        !self.network_add.is_empty() || !self.network_rm.is_empty()
    }

    /// Applies the flags to `spec` (the spec read from the manager), all but the
    /// networks, which need the manager to resolve names ([`update_networks`]). With
    /// `--rollback` the spec is left as it is: the manager swaps in the previous one.
    pub fn apply(&self, spec: &mut ServiceSpec) -> anyhow::Result<()> {
        if self.rollback {
            if self.other_than_rollback() {
                anyhow::bail!("other flags may not be combined with --rollback");
            }
            return Ok(());
        }
        let annotations = spec.annotations.get_or_insert_with(Default::default);
        update_labels(&mut annotations.labels, &self.label_add, &self.label_rm);

        let task = spec.task.get_or_insert_with(TaskSpec::default);
        let args = self
            .args
            .as_deref()
            .map(|a| split_words(a).map_err(|e| invalid(a, "--args", e)))
            .transpose()?;
        match runtime(task) {
            task_spec::Runtime::Container(c) => {
                update_labels(
                    &mut c.labels,
                    &self.container_label_add,
                    &self.container_label_rm,
                );
                if let Some(image) = &self.image {
                    c.image = image.clone();
                }
                if let Some(args) = args {
                    c.args = args;
                }
                update_env(&mut c.env, &self.env_add, &self.env_rm)?;
                if !self.mount_add.is_empty() || !self.mount_rm.is_empty() {
                    update_mounts(&mut c.mounts, &self.mount_add, &self.mount_rm)?;
                }
            }
            task_spec::Runtime::Process(p) => {
                for (set, flag) in [
                    (self.image.is_some(), "--image"),
                    (
                        !self.container_label_add.is_empty(),
                        "--container-label-add",
                    ),
                    (!self.container_label_rm.is_empty(), "--container-label-rm"),
                    (!self.mount_add.is_empty(), "--mount-add"),
                    (!self.mount_rm.is_empty(), "--mount-rm"),
                ] {
                    if set {
                        return Err(container_only(flag));
                    }
                }
                if let Some(args) = args {
                    // The program stays; what follows it is replaced.
                    p.command.truncate(1);
                    p.args = args;
                }
                update_env(&mut p.env, &self.env_add, &self.env_rm)?;
            }
        }

        self.service.apply(spec)?;
        let task = spec.task.get_or_insert_with(TaskSpec::default);

        if !self.constraint_add.is_empty() || !self.constraint_rm.is_empty() {
            let p = placement(task);
            p.constraints.extend(self.constraint_add.iter().cloned());
            p.constraints.retain(|c| !self.constraint_rm.contains(c));
            p.constraints.sort();
        }
        if !self.placement_pref_add.is_empty() || !self.placement_pref_rm.is_empty() {
            let removals = self
                .placement_pref_rm
                .iter()
                .map(|v| parse_placement_pref(v, "--placement-pref-rm"))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let additions = self
                .placement_pref_add
                .iter()
                .map(|v| parse_placement_pref(v, "--placement-pref-add"))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let p = placement(task);
            p.preferences.retain(|x| {
                !removals
                    .iter()
                    .any(|r| r.spread_descriptor == x.spread_descriptor)
            });
            p.preferences.extend(additions);
        }
        if let Some(n) = opt_uint(
            &self.service.replicas_max_per_node,
            "--replicas-max-per-node",
        )? {
            placement(task).max_replicas = n;
        }
        if self.force {
            task.force_update = task.force_update.wrapping_add(1);
        }

        if let Some(n) = opt_uint(&self.service.replicas, "--replicas")? {
            match spec.mode.as_mut() {
                Some(service_spec::Mode::Replicated(r)) => r.replicas = n,
                _ => anyhow::bail!("replicas can only be used with replicated mode"),
            }
        }
        if !self.publish_add.is_empty() || !self.publish_rm.is_empty() {
            let endpoint = spec.endpoint.get_or_insert_with(Default::default);
            update_ports(&mut endpoint.ports, &self.publish_add, &self.publish_rm)?;
        }
        if let Some(mode) = &self.endpoint_mode {
            spec.endpoint.get_or_insert_with(Default::default).mode = parse_endpoint_mode(mode)?;
        }
        Ok(())
    }
}

/// Splits `--args` into words as docker's `ShlexOpt` does: blanks separate words,
/// `'…'` is literal, `"…"` and a bare `\` escape the next character.
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\\' => {
                let next = chars.next().ok_or("EOF found after escape character")?;
                word.get_or_insert_with(String::new).push(next);
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => w.push(x),
                        None => return Err("EOF found when expecting closing quote".into()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => {
                            let next = chars.next().ok_or("EOF found after escape character")?;
                            w.push(next);
                        }
                        Some(x) => w.push(x),
                        None => return Err("EOF found when expecting closing quote".into()),
                    }
                }
            }
            other => word.get_or_insert_with(String::new).push(other),
        }
    }
    if let Some(w) = word {
        words.push(w);
    }
    Ok(words)
}
