//! `stack deploy` and `stack config`: compose files → the loader → the converter →
//! networks, secrets, configs and services on the manager, in docker's order and with
//! docker's lines (reference stacks-secrets.md §2, §4).
//!
//! Everything that can be checked without the manager (loading, conversion, flags) is
//! checked before anything is created. What the manager refuses part-way is reported
//! with what was created before it; nothing is rolled back, as in docker.

use std::collections::{HashMap, HashSet};
use std::process::ExitCode;

use shoal_compose::convert::{
    self, FilePlan, IMAGE_LABEL, NetworkPlan, ServicePlan, StackPlan, descope, is_builtin_network,
};
use shoal_proto::v1::{
    Config, CreateNetworkRequest, CreateServiceRequest, ListFilters, ListNetworksRequest,
    RemoveServiceRequest, Secret, Service, ServiceSpec, UpdateServiceRequest, task_spec,
};

use super::super::secret::SwarmFile;
use super::super::service::progress::{self, FollowOptions, Intent, Outcome};
use super::super::service::render as service_render;
use crate::config::CliConfig;
use crate::connect::Control;

/// How long `--detach=false` follows each service.
const CONVERGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);
/// Attempts at an update that meets "update out of sequence" (the leader writes a
/// service's endpoint after each change).
const UPDATE_ATTEMPTS: usize = 5;

pub const DETACH_NOTICE: &str = "Since --detach=false was not specified, tasks will be created in the background.\nIn a future release, --detach=false will become the default.";

/// `--resolve-image`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResolveImage {
    #[default]
    Always,
    Changed,
    Never,
}

impl std::str::FromStr for ResolveImage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(Self::Always),
            "changed" => Ok(Self::Changed),
            "never" => Ok(Self::Never),
            other => Err(format!("Invalid option {other} for flag --resolve-image")),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct DeployArgs {
    /// Path to a Compose file, or "-" to read from stdin.
    #[arg(long = "compose-file", short = 'c', value_name = "FILE")]
    pub compose_files: Vec<String>,
    /// Prune services that are no longer referenced.
    #[arg(long)]
    pub prune: bool,
    /// Query the registry to resolve image digest and supported platforms
    /// ("always", "changed", "never").
    #[arg(long, default_value = "always", value_name = "MODE")]
    pub resolve_image: String,
    /// Send registry authentication details to Swarm agents (accepted; shoal has no
    /// registry credentials to send).
    #[arg(long)]
    pub with_registry_auth: bool,
    /// Exit immediately instead of waiting for the stack services to converge.
    #[arg(
        long,
        short,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub detach: Option<bool>,
    /// Suppress progress output.
    #[arg(long, short)]
    pub quiet: bool,
    #[arg(value_name = "STACK")]
    pub stack: String,
}

/// The process environment, the loader's only variable source.
fn process_env() -> std::collections::BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// What docker prints on stderr about a project before deploying it.
pub fn warning_text(w: &shoal_compose::Warnings) -> String {
    let mut out = String::new();
    for msg in &w.loader {
        out.push_str(&format!(
            "level=warning msg=\"{}\"\n",
            msg.replace('\\', "\\\\").replace('"', "\\\"")
        ));
    }
    if !w.unsupported.is_empty() {
        out.push_str(&format!(
            "Ignoring unsupported options: {}\n\n",
            w.unsupported.join(", ")
        ));
    }
    if !w.deprecated.is_empty() {
        out.push_str("Ignoring deprecated options:\n\n");
        for (key, why) in &w.deprecated {
            out.push_str(&format!("{key}: {why}\n\n"));
        }
    }
    out
}

pub fn config(files: &[String], skip_interpolation: bool) -> anyhow::Result<ExitCode> {
    let project = shoal_compose::load(&shoal_compose::LoadOptions {
        files: files.to_vec(),
        env: process_env(),
        skip_interpolation,
    })?;
    print!("{}", project.to_yaml());
    Ok(ExitCode::SUCCESS)
}

/// What a deploy did before it failed, for the error report.
#[derive(Default)]
struct Done(Vec<String>);

impl Done {
    fn fail(&self, error: anyhow::Error) -> anyhow::Error {
        if self.0.is_empty() {
            return error;
        }
        anyhow::anyhow!(
            "{error:#}\n(already done, left in place: {})",
            self.0.join(", ")
        )
    }
}

#[tracing::instrument(name = "stack deploy", skip_all)]
pub async fn deploy(cfg: &CliConfig, args: &DeployArgs) -> anyhow::Result<ExitCode> {
    // docker's order: the files (and their warnings), the stack name, the images,
    // then the flags; the conversion's other checks come before anything is asked of
    // the manager.
    let project = shoal_compose::load(&shoal_compose::LoadOptions {
        files: args.compose_files.clone(),
        env: process_env(),
        skip_interpolation: false,
    })?;
    eprint!("{}", warning_text(&project.warnings()));
    super::check_stack_name(&args.stack)?;
    let plan = convert::convert(&project, &args.stack)?;
    let resolve: ResolveImage = args.resolve_image.parse().map_err(anyhow::Error::msg)?;
    let detach = match args.detach {
        Some(d) => d,
        None => {
            eprintln!("{DETACH_NOTICE}");
            true
        }
    };
    let mut control = crate::connect::control(cfg).await?;
    let existing = super::stack_services(&mut control, super::stack_filter(&args.stack))
        .await
        .map_err(not_a_manager)?;
    let mut done = Done::default();
    if args.prune {
        prune(&mut control, &plan, &existing, &mut done).await;
    }
    let followed = apply(&mut control, &plan, &existing, resolve, &mut done)
        .await
        .map_err(|e| done.fail(e))?;
    if detach {
        return Ok(ExitCode::SUCCESS);
    }
    let mut code = ExitCode::SUCCESS;
    for (id, intent) in followed {
        let opts = FollowOptions {
            quiet: args.quiet,
            timeout: CONVERGE_TIMEOUT,
            intent,
        };
        match progress::follow(&mut control, &id, &opts).await? {
            Outcome::Converged | Outcome::Detached => {}
            Outcome::TimedOut { name, failures } => {
                eprintln!(
                    "Error: service {name} did not converge within {}",
                    crate::output::go_duration(CONVERGE_TIMEOUT)
                );
                for f in failures {
                    eprintln!("{f}");
                }
                code = ExitCode::FAILURE;
            }
            Outcome::Failed(message) => {
                eprintln!("Error: {message}");
                code = ExitCode::FAILURE;
            }
        }
    }
    Ok(code)
}

/// docker's words when the node cannot serve the Control API as a manager.
fn not_a_manager(e: anyhow::Error) -> anyhow::Error {
    let text = format!("{e:#}");
    if text.contains("no swarm") || text.contains("not a swarm manager") {
        anyhow::anyhow!(
            "this node is not a swarm manager. Use \"shoal swarm init\" or \"shoal swarm join\" to connect this node to swarm and try again"
        )
    } else {
        e
    }
}

/// `--prune`: the stack's services the files no longer name.
async fn prune(control: &mut Control, plan: &StackPlan, existing: &[Service], done: &mut Done) {
    let wanted: HashSet<&str> = plan.services.iter().map(|s| s.key.as_str()).collect();
    let mut gone: Vec<&Service> = existing
        .iter()
        .filter(|s| !wanted.contains(descope(&plan.namespace, service_render::name(s))))
        .collect();
    gone.sort_by(|a, b| service_render::name(a).cmp(service_render::name(b)));
    for s in gone {
        let name = service_render::name(s);
        println!("Removing service {name}");
        match control
            .remove_service(RemoveServiceRequest {
                service_id: service_render::id(s).to_string(),
            })
            .await
        {
            Ok(_) => done.0.push(format!("removed service {name}")),
            Err(status) => eprintln!(
                "Failed to remove service {}: {}",
                service_render::id(s),
                super::super::status_message(&status)
            ),
        }
    }
}

/// Networks, secrets, configs, then services; the services to follow.
async fn apply(
    control: &mut Control,
    plan: &StackPlan,
    existing: &[Service],
    resolve: ResolveImage,
    done: &mut Done,
) -> anyhow::Result<Vec<(String, Intent)>> {
    let network_ids = networks(control, plan, done).await?;
    let mut secret_ids = stack_files::<Secret>(control, &plan.secrets, done).await?;
    let mut config_ids = stack_files::<Config>(control, &plan.configs, done).await?;
    let by_name: HashMap<&str, &Service> = existing
        .iter()
        .map(|s| (service_render::name(s), s))
        .collect();
    // Ids of external secrets/configs are looked up by exact name too.
    lookup_refs(control, plan, &mut secret_ids, &mut config_ids).await?;
    let mut followed = Vec::new();
    for s in &plan.services {
        let mut spec = s.spec.clone();
        resolve_refs(s, &mut spec, &secret_ids, &config_ids, &network_ids)?;
        match by_name.get(s.name.as_str()) {
            Some(current) => {
                let id = service_render::id(current).to_string();
                println!("Updating service {} (id: {id})", s.name);
                update_service(control, &id, spec, resolve)
                    .await
                    .map_err(|e| anyhow::anyhow!("failed to update service {}: {e}", s.name))?;
                done.0.push(format!("updated service {}", s.name));
                followed.push((id, Intent::Update));
            }
            None => {
                println!("Creating service {}", s.name);
                let created = control
                    .create_service(CreateServiceRequest { spec: Some(spec) })
                    .await
                    .map_err(|st| {
                        anyhow::anyhow!(
                            "failed to create service {}: {}",
                            s.name,
                            docker_rpc_error(&st)
                        )
                    })?
                    .into_inner()
                    .service
                    .ok_or_else(|| anyhow::anyhow!("the manager answered without the service"))?;
                done.0.push(format!("service {}", s.name));
                followed.push((service_render::id(&created).to_string(), Intent::Converge));
            }
        }
    }
    Ok(followed)
}

async fn all_networks(control: &mut Control) -> anyhow::Result<HashMap<String, String>> {
    Ok(control
        .list_networks(ListNetworksRequest { filters: None })
        .await
        .map_err(super::super::rpc_error)?
        .into_inner()
        .networks
        .iter()
        .map(|n| {
            (
                super::super::network::render::name(n).to_string(),
                super::super::network::render::id(n).to_string(),
            )
        })
        .collect())
}

/// Checks the external networks, creates the missing ones; every network's id by
/// name.
async fn networks(
    control: &mut Control,
    plan: &StackPlan,
    done: &mut Done,
) -> anyhow::Result<HashMap<String, String>> {
    let all = all_networks(control).await?;
    // Existing networks of the stack are found by its label (docker's check): a
    // pre-made network of the same name without the label is created again and
    // refused by the manager.
    let labelled: HashSet<String> = super::stack_networks(control, &plan.namespace)
        .await?
        .iter()
        .map(|n| super::super::network::render::name(n).to_string())
        .collect();
    for n in plan.networks.iter().filter(|n| n.external) {
        if is_builtin_network(&n.name) {
            continue;
        }
        if !all.contains_key(&n.name) {
            anyhow::bail!(
                "network {:?} is declared as external, but could not be found. You need to create a swarm-scoped network before the stack is deployed",
                n.name
            );
        }
    }
    let to_create: Vec<&NetworkPlan> = plan
        .networks
        .iter()
        .filter(|n| !n.external && !labelled.contains(&n.name))
        .collect();
    for n in to_create {
        println!("Creating network {}", n.name);
        control
            .create_network(CreateNetworkRequest {
                spec: Some(n.spec.clone()),
            })
            .await
            .map_err(|s| {
                anyhow::anyhow!(
                    "failed to create network {}: {}",
                    n.name,
                    docker_rpc_error(&s)
                )
            })?;
        done.0.push(format!("network {}", n.name));
    }
    all_networks(control).await
}

/// Creates each secret or config, or updates it with the new spec (the manager
/// accepts only label changes); ids by name.
async fn stack_files<T: SwarmFile>(
    control: &mut Control,
    plans: &[FilePlan<T::Spec>],
    done: &mut Done,
) -> anyhow::Result<HashMap<String, String>>
where
    T::Spec: Clone,
{
    let kind = T::KIND.noun();
    let mut ids = HashMap::new();
    for p in plans {
        let filters = ListFilters {
            names: vec![p.name.clone()],
            ..Default::default()
        };
        let found = T::list(control, filters)
            .await
            .map_err(|s| {
                anyhow::anyhow!(
                    "failed to create {kind} {}: {}",
                    p.name,
                    super::super::status_message(&s)
                )
            })?
            .into_iter()
            .find(|f| f.name() == p.name);
        match found {
            Some(found) => {
                let meta = found.meta().cloned().unwrap_or_default();
                T::update(control, &meta, p.spec.clone())
                    .await
                    .map_err(|s| {
                        anyhow::anyhow!(
                            "failed to update {kind} {}: {}",
                            p.name,
                            docker_rpc_error(&s)
                        )
                    })?;
                ids.insert(p.name.clone(), meta.id);
            }
            None => {
                println!("Creating {kind} {}", p.name);
                let created = T::create(control, p.spec.clone()).await.map_err(|s| {
                    anyhow::anyhow!(
                        "failed to create {kind} {}: {}",
                        p.name,
                        docker_rpc_error(&s)
                    )
                })?;
                done.0.push(format!("{kind} {}", p.name));
                ids.insert(p.name.clone(), created.id().to_string());
            }
        }
    }
    Ok(ids)
}

/// A manager's refusal as the docker CLI prints a daemon's: `Error response from
/// daemon: rpc error: code = InvalidArgument desc = …`.
fn docker_rpc_error(s: &tonic::Status) -> String {
    let code = match s.code() {
        tonic::Code::InvalidArgument => "InvalidArgument",
        tonic::Code::NotFound => "NotFound",
        tonic::Code::AlreadyExists => "AlreadyExists",
        tonic::Code::FailedPrecondition => "FailedPrecondition",
        tonic::Code::Unimplemented => "Unimplemented",
        tonic::Code::Unavailable => return super::super::status_message(s),
        tonic::Code::PermissionDenied => "PermissionDenied",
        tonic::Code::Internal => "Internal",
        _ => "Unknown",
    };
    format!(
        "Error response from daemon: rpc error: code = {code} desc = {}",
        s.message()
    )
}

/// The ids of the secrets and configs the services name but the stack does not create
/// (external ones), by exact name.
async fn lookup_refs(
    control: &mut Control,
    plan: &StackPlan,
    secret_ids: &mut HashMap<String, String>,
    config_ids: &mut HashMap<String, String>,
) -> anyhow::Result<()> {
    let mut secrets = HashSet::new();
    let mut configs = HashSet::new();
    for s in &plan.services {
        if let Some(task_spec::Runtime::Container(c)) =
            s.spec.task.as_ref().and_then(|t| t.runtime.as_ref())
        {
            secrets.extend(
                c.secrets
                    .iter()
                    .map(|r| r.secret_name.clone())
                    .filter(|n| !secret_ids.contains_key(n)),
            );
            configs.extend(
                c.configs
                    .iter()
                    .map(|r| r.config_name.clone())
                    .filter(|n| !config_ids.contains_key(n)),
            );
        }
    }
    lookup_ids::<Secret>(control, secrets, secret_ids).await?;
    lookup_ids::<Config>(control, configs, config_ids).await?;
    Ok(())
}

/// Adds the ids of the objects named `names` (none asked for: no call).
async fn lookup_ids<T: SwarmFile>(
    control: &mut Control,
    names: HashSet<String>,
    ids: &mut HashMap<String, String>,
) -> anyhow::Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let filters = ListFilters {
        names: names.into_iter().collect(),
        ..Default::default()
    };
    let found = T::list(control, filters)
        .await
        .map_err(super::super::rpc_error)?;
    ids.extend(
        found
            .iter()
            .map(|f| (f.name().to_string(), f.id().to_string())),
    );
    Ok(())
}

/// Fills secret/config ids and turns attachment names into network ids.
pub fn resolve_refs(
    plan: &ServicePlan,
    spec: &mut ServiceSpec,
    secret_ids: &HashMap<String, String>,
    config_ids: &HashMap<String, String>,
    network_ids: &HashMap<String, String>,
) -> anyhow::Result<()> {
    let Some(task) = spec.task.as_mut() else {
        return Ok(());
    };
    if let Some(task_spec::Runtime::Container(c)) = task.runtime.as_mut() {
        for r in &mut c.secrets {
            r.secret_id = secret_ids.get(&r.secret_name).cloned().ok_or_else(|| {
                anyhow::anyhow!("service {}: secret not found: {}", plan.key, r.secret_name)
            })?;
        }
        for r in &mut c.configs {
            r.config_id = config_ids.get(&r.config_name).cloned().ok_or_else(|| {
                anyhow::anyhow!("service {}: config not found: {}", plan.key, r.config_name)
            })?;
        }
    }
    for a in &mut task.networks {
        if let Some(id) = network_ids.get(&a.target) {
            a.target = id.clone();
        }
    }
    Ok(())
}

/// What an update of `current` to `next` sends: `next`, keeping the service's force
/// counter and, unless `--resolve-image always`, its resolved image when the compose
/// image did not change.
pub fn update_spec(current: &Service, mut next: ServiceSpec, resolve: ResolveImage) -> ServiceSpec {
    let Some(old) = current.spec.as_ref() else {
        return next;
    };
    let old_task = old.task.as_ref();
    if let Some(task) = next.task.as_mut() {
        task.force_update = old_task.map(|t| t.force_update).unwrap_or(0);
        let old_image_label = old
            .annotations
            .as_ref()
            .and_then(|a| a.labels.get(IMAGE_LABEL));
        if resolve != ResolveImage::Always
            && let (
                Some(task_spec::Runtime::Container(new)),
                Some(task_spec::Runtime::Container(prev)),
            ) = (
                task.runtime.as_mut(),
                old_task.and_then(|t| t.runtime.as_ref()),
            )
            && old_image_label == Some(&new.image)
        {
            new.image = prev.image.clone();
        }
    }
    next
}

async fn update_service(
    control: &mut Control,
    id: &str,
    spec: ServiceSpec,
    resolve: ResolveImage,
) -> Result<(), String> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = super::super::service::get_service(control, id).await?;
        let next = update_spec(&current, spec.clone(), resolve);
        match control
            .update_service(UpdateServiceRequest {
                service_id: id.to_string(),
                service_version: current.meta.as_ref().and_then(|m| m.version),
                spec: Some(next),
                rollback: 0,
            })
            .await
        {
            Ok(_) => return Ok(()),
            Err(s)
                if s.code() == tonic::Code::FailedPrecondition
                    && s.message().contains("update out of sequence")
                    && attempt < UPDATE_ATTEMPTS => {}
            Err(s) => return Err(docker_rpc_error(&s)),
        }
    }
}
