//! `shoal service create|ls|ps|inspect|scale|update|rollback|rm|logs`, as `docker
//! service`.

pub mod opts;
pub mod progress;
pub mod render;
pub mod update;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::process::ExitCode;
use std::time::SystemTime;

use shoal_proto::v1::{
    Config, ConfigReference, CreateServiceRequest, GetServiceRequest, ListFilters,
    ListNodesRequest, ListServiceStatusesRequest, ListServicesRequest, ListTasksRequest,
    LogMessage, NetworkAttachmentConfig, RemoveServiceRequest, Secret, SecretReference, Service,
    ServiceLogsRequest, UpdateServiceRequest, log_message, service_spec, update_service_request,
};
use tokio_stream::StreamExt;

use super::secret::SwarmFile;
use super::{node, task};
use crate::config::CliConfig;
use crate::connect::Control;
use crate::output::{rfc3339, truncate_id};

pub use opts::{CreateArgs, FileRefOpt, FollowFlags};
use progress::{FollowOptions, Intent, Outcome};
pub use update::UpdateArgs;

#[derive(Debug, clap::Subcommand)]
pub enum ServiceCommand {
    /// Create a new service.
    Create(Box<CreateArgs>),
    /// Display detailed information on one or more services.
    Inspect {
        /// Print the information in a human friendly format.
        #[arg(long)]
        pretty: bool,
        #[arg(required = true, value_name = "SERVICE")]
        services: Vec<String>,
    },
    /// Fetch the logs of a service or task.
    Logs(LogsArgs),
    /// List services.
    #[command(alias = "list")]
    Ls {
        /// Only display IDs.
        #[arg(long, short)]
        quiet: bool,
        /// Filter output based on conditions provided: id=, name=, label=, mode=
        #[arg(long, short, value_name = "FILTER")]
        filter: Vec<String>,
    },
    /// List the tasks of one or more services.
    Ps {
        /// Only display task IDs.
        #[arg(long, short)]
        quiet: bool,
        /// Do not truncate output.
        #[arg(long)]
        no_trunc: bool,
        /// Do not map IDs to Names.
        #[arg(long)]
        no_resolve: bool,
        /// Filter output based on conditions provided: id=, name=,
        /// desired-state=running|shutdown|accepted
        #[arg(long, short, value_name = "FILTER")]
        filter: Vec<String>,
        #[arg(required = true, value_name = "SERVICE")]
        services: Vec<String>,
    },
    /// Remove one or more services.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true, value_name = "SERVICE")]
        services: Vec<String>,
    },
    /// Revert changes to a service's configuration.
    Rollback(RollbackArgs),
    /// Scale one or multiple replicated services.
    Scale {
        /// Exit immediately instead of waiting for the service to converge.
        #[arg(long, short)]
        detach: bool,
        /// How long to follow the convergence before giving up (exit 1).
        #[arg(long, value_name = "DURATION", default_value = "3m")]
        timeout: String,
        /// SERVICE=REPLICAS ...
        #[arg(required = true, value_name = "SERVICE=REPLICAS")]
        scales: Vec<String>,
    },
    /// Update a service.
    Update(Box<UpdateArgs>),
}

#[derive(Debug, Clone, clap::Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub follow: FollowFlags,
    #[arg(value_name = "SERVICE")]
    pub target: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LogsArgs {
    /// Follow log output.
    #[arg(long, short)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs.
    #[arg(long, short = 'n', default_value = "all")]
    pub tail: String,
    /// Show timestamps.
    #[arg(long, short)]
    pub timestamps: bool,
    /// Do not include task IDs in output.
    #[arg(long)]
    pub no_task_ids: bool,
    /// Do not truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Do not neatly format logs.
    #[arg(long)]
    pub raw: bool,
    #[arg(value_name = "SERVICE|TASK")]
    pub target: String,
}

pub async fn run(cfg: &CliConfig, cmd: ServiceCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ServiceCommand::Create(args) => create(cfg, &args).await,
        ServiceCommand::Ls { quiet, filter } => ls(cfg, quiet, &filter).await,
        ServiceCommand::Ps {
            quiet,
            no_trunc,
            no_resolve,
            filter,
            services,
        } => ps(cfg, quiet, no_trunc, no_resolve, &filter, &services).await,
        ServiceCommand::Inspect { pretty, services } => inspect(cfg, pretty, &services).await,
        ServiceCommand::Scale {
            detach,
            timeout,
            scales,
        } => scale(cfg, detach, &timeout, &scales).await,
        ServiceCommand::Rm { services } => rm(cfg, &services).await,
        ServiceCommand::Update(args) => update(cfg, &args).await,
        ServiceCommand::Rollback(args) => {
            let args = UpdateArgs {
                rollback: true,
                follow: args.follow,
                target: args.target,
                ..Default::default()
            };
            update(cfg, &args).await
        }
        ServiceCommand::Logs(args) => logs(cfg, &args).await,
    }
}

/// Prints collected errors the way the CLI prints one; exit 1 if there were any.
fn report(errors: Vec<String>) -> ExitCode {
    if errors.is_empty() {
        return ExitCode::SUCCESS;
    }
    for e in errors {
        eprintln!("Error: {e}");
    }
    ExitCode::FAILURE
}

/// A lookup failure in docker's words: `No such service: x`.
fn lookup_error(reference: &str, status: &tonic::Status) -> String {
    if status.code() == tonic::Code::NotFound {
        format!("No such service: {reference}")
    } else {
        super::status_message(status)
    }
}

/// The service an id, name or unique id prefix names.
pub async fn get_service(control: &mut Control, reference: &str) -> Result<Service, String> {
    let resp = control
        .get_service(GetServiceRequest {
            service_id: reference.to_string(),
            insert_defaults: false,
        })
        .await
        .map_err(|s| lookup_error(reference, &s))?;
    resp.into_inner()
        .service
        .ok_or_else(|| format!("No such service: {reference}"))
}

/// Follows convergence and turns the outcome into an exit code.
async fn converge(
    control: &mut Control,
    service_id: &str,
    opts: &FollowOptions,
) -> anyhow::Result<ExitCode> {
    match progress::follow(control, service_id, opts).await? {
        Outcome::Converged | Outcome::Detached => Ok(ExitCode::SUCCESS),
        Outcome::TimedOut { name, failures } => {
            let _ = std::io::stdout().flush();
            let shown = if name.is_empty() { service_id } else { &name };
            eprintln!(
                "Error: service {shown} did not converge within {}",
                crate::output::go_duration(opts.timeout)
            );
            for f in failures {
                eprintln!("{f}");
            }
            Ok(ExitCode::FAILURE)
        }
        Outcome::Failed(message) => {
            let _ = std::io::stdout().flush();
            eprintln!("Error: {message}");
            Ok(ExitCode::FAILURE)
        }
    }
}

#[tracing::instrument(name = "service create", skip_all)]
async fn create(cfg: &CliConfig, args: &CreateArgs) -> anyhow::Result<ExitCode> {
    let mut spec = args.to_spec()?;
    let secrets = args.secret_refs()?;
    let configs = args.config_refs()?;
    let timeout = args.follow.timeout()?;
    let mut control = crate::connect::control(cfg).await?;
    if let Some(task) = spec.task.as_mut() {
        resolve_attachments(&mut control, &mut task.networks).await?;
    }
    let secrets = resolve_secrets(&mut control, &secrets).await?;
    let configs = resolve_configs(&mut control, &configs).await?;
    if !secrets.is_empty() || !configs.is_empty() {
        update::update_secret_refs(&mut spec, &[], secrets);
        update::update_config_refs(&mut spec, &[], configs);
    }
    let service = control
        .create_service(CreateServiceRequest { spec: Some(spec) })
        .await
        .map_err(super::rpc_error)?
        .into_inner()
        .service
        .ok_or_else(|| anyhow::anyhow!("the manager answered without the service"))?;
    let id = render::id(&service).to_string();
    println!("{id}");
    if args.follow.detach {
        return Ok(ExitCode::SUCCESS);
    }
    converge(
        &mut control,
        &id,
        &FollowOptions {
            quiet: args.follow.quiet,
            timeout,
            intent: Intent::Converge,
        },
    )
    .await
}

/// The id of the network a name, id or id prefix names, as docker resolves
/// `--network` before it sends a spec.
async fn network_id(control: &mut Control, reference: &str) -> anyhow::Result<String> {
    let network = super::network::get_network(control, reference)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(super::network::render::id(&network).to_string())
}

/// `--network` targets as network ids, sorted by id (docker's order).
async fn resolve_attachments(
    control: &mut Control,
    attachments: &mut [NetworkAttachmentConfig],
) -> anyhow::Result<()> {
    for attachment in attachments.iter_mut() {
        attachment.target = network_id(control, &attachment.target).await?;
    }
    attachments.sort_by(|a, b| a.target.cmp(&b.target));
    Ok(())
}

/// docker's `ParseSecrets` / `ParseConfigs` check before any lookup: two references
/// with one target.
pub fn check_duplicate_targets(refs: &[FileRefOpt], kind: &str) -> anyhow::Result<()> {
    let mut targets = HashSet::new();
    for r in refs {
        if !targets.insert(r.target.as_str()) {
            anyhow::bail!("duplicate {kind} target for {} not allowed", r.source);
        }
    }
    Ok(())
}

/// The id of each reference's source among `found` (name → id), in docker's words
/// when one is missing (`secret not found: x`).
pub fn bind_ids(
    refs: &[FileRefOpt],
    found: &HashMap<String, String>,
    kind: &str,
) -> anyhow::Result<Vec<(FileRefOpt, String)>> {
    refs.iter()
        .map(|r| match found.get(&r.source) {
            Some(id) => Ok((r.clone(), id.clone())),
            None => anyhow::bail!("{kind} not found: {}", r.source),
        })
        .collect()
}

fn by_names(refs: &[FileRefOpt]) -> ListFilters {
    ListFilters {
        names: refs.iter().map(|r| r.source.clone()).collect(),
        ..Default::default()
    }
}

/// Each reference with the id of the secret or config (`T`) it names (exact names),
/// after docker's duplicate-target check; no lookup for none.
async fn file_ids<T: SwarmFile>(
    control: &mut Control,
    refs: &[FileRefOpt],
) -> anyhow::Result<Vec<(FileRefOpt, String)>> {
    if refs.is_empty() {
        return Ok(Vec::new());
    }
    let kind = T::KIND.noun();
    check_duplicate_targets(refs, kind)?;
    let found: HashMap<String, String> = T::list(control, by_names(refs))
        .await
        .map_err(super::rpc_error)?
        .iter()
        .map(|f| (f.name().to_string(), f.id().to_string()))
        .collect();
    bind_ids(refs, &found, kind)
}

/// `--secret` references with the ids of the secrets they name (exact names), as
/// docker resolves them before it sends a spec.
pub async fn resolve_secrets(
    control: &mut Control,
    refs: &[FileRefOpt],
) -> anyhow::Result<Vec<SecretReference>> {
    Ok(file_ids::<Secret>(control, refs)
        .await?
        .into_iter()
        .map(|(r, id)| SecretReference {
            secret_id: id,
            secret_name: r.source,
            target: r.target,
            uid: r.uid,
            gid: r.gid,
            mode: Some(r.mode),
        })
        .collect())
}

/// `--config` references with the ids of the configs they name.
pub async fn resolve_configs(
    control: &mut Control,
    refs: &[FileRefOpt],
) -> anyhow::Result<Vec<ConfigReference>> {
    Ok(file_ids::<Config>(control, refs)
        .await?
        .into_iter()
        .map(|(r, id)| ConfigReference {
            config_id: id,
            config_name: r.source,
            target: r.target,
            uid: r.uid,
            gid: r.gid,
            mode: Some(r.mode),
        })
        .collect())
}

/// The request `service update` sends: the spec as changed, against the version read
/// (a concurrent change makes the manager refuse it: "update out of sequence").
pub fn update_request(
    service: &Service,
    spec: shoal_proto::v1::ServiceSpec,
    rollback: bool,
) -> UpdateServiceRequest {
    UpdateServiceRequest {
        service_id: render::id(service).to_string(),
        service_version: service.meta.as_ref().and_then(|m| m.version),
        spec: Some(spec),
        rollback: if rollback {
            update_service_request::Rollback::Previous as i32
        } else {
            update_service_request::Rollback::None as i32
        },
    }
}

/// `service update` and `service rollback`: read, change, send, then follow.
#[tracing::instrument(name = "service update", skip_all)]
async fn update(cfg: &CliConfig, args: &UpdateArgs) -> anyhow::Result<ExitCode> {
    let timeout = args.follow.timeout()?;
    let additions = args.network_additions()?;
    let secret_additions = args.secret_additions()?;
    let config_additions = args.config_additions()?;
    let mut control = crate::connect::control(cfg).await?;
    let secret_additions = resolve_secrets(&mut control, &secret_additions).await?;
    let config_additions = resolve_configs(&mut control, &config_additions).await?;
    let changes_secrets = !args.secret_add.is_empty() || !args.secret_rm.is_empty();
    let changes_configs = !args.config_add.is_empty() || !args.config_rm.is_empty();
    let mut removals = HashSet::new();
    let mut resolved = Vec::new();
    if args.changes_networks() && !args.rollback {
        for reference in &args.network_rm {
            removals.insert(network_id(&mut control, reference).await?);
        }
        for mut attachment in additions {
            let given = std::mem::take(&mut attachment.target);
            attachment.target = network_id(&mut control, &given).await?;
            resolved.push((given, attachment));
        }
    }
    let mut attempt = 0;
    let id = loop {
        attempt += 1;
        let service = get_service(&mut control, &args.target)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        let mut spec = service.spec.clone().unwrap_or_default();
        args.apply(&mut spec)?;
        if args.changes_networks() && !args.rollback {
            update::update_networks(&mut spec, &removals, resolved.clone())?;
        }
        if changes_secrets && !args.rollback {
            update::update_secret_refs(&mut spec, &args.secret_rm, secret_additions.clone());
        }
        if changes_configs && !args.rollback {
            update::update_config_refs(&mut spec, &args.config_rm, config_additions.clone());
        }
        match control
            .update_service(update_request(&service, spec, args.rollback))
            .await
        {
            Ok(_) => break render::id(&service).to_string(),
            Err(s) if out_of_sequence(&s) && attempt < UPDATE_ATTEMPTS => continue,
            Err(s) => return Err(super::rpc_error(s)),
        }
    };
    println!("{}", args.target);
    if args.follow.detach {
        return Ok(ExitCode::SUCCESS);
    }
    let intent = if args.rollback {
        Intent::Rollback
    } else {
        Intent::Update
    };
    converge(
        &mut control,
        &id,
        &FollowOptions {
            quiet: args.follow.quiet,
            timeout,
            intent,
        },
    )
    .await
}

/// `service ls --filter`s: id, name, label, mode.
pub fn ls_filters(flags: &[String]) -> anyhow::Result<(shoal_proto::v1::ListFilters, Vec<String>)> {
    let mut plain = Vec::new();
    let mut modes = Vec::new();
    for f in flags {
        match f.split_once('=') {
            Some(("mode", m)) => match m {
                "replicated" | "global" | "replicated-job" | "global-job" => {
                    modes.push(m.replace('-', " "))
                }
                other => anyhow::bail!("Invalid filter 'mode={other}'"),
            },
            _ => plain.push(f.clone()),
        }
    }
    Ok((super::parse_filters(&plain)?, modes))
}

async fn ls(cfg: &CliConfig, quiet: bool, filter: &[String]) -> anyhow::Result<ExitCode> {
    let (filters, modes) = ls_filters(filter)?;
    let mut control = crate::connect::control(cfg).await?;
    let services: Vec<Service> = control
        .list_services(ListServicesRequest {
            filters: Some(filters),
        })
        .await
        .map_err(super::rpc_error)?
        .into_inner()
        .services
        .into_iter()
        .filter(|s| modes.is_empty() || modes.iter().any(|m| m == render::mode_word(s)))
        .collect();
    if quiet {
        print!("{}", render::render_ls_quiet(&services));
        return Ok(ExitCode::SUCCESS);
    }
    let statuses = if services.is_empty() {
        HashMap::new()
    } else {
        control
            .list_service_statuses(ListServiceStatusesRequest {
                service_ids: services.iter().map(|s| render::id(s).to_string()).collect(),
            })
            .await
            .map_err(super::rpc_error)?
            .into_inner()
            .statuses
            .into_iter()
            .map(|s| (s.service_id.clone(), s))
            .collect()
    };
    print!("{}", render::render_ls(&services, &statuses));
    Ok(ExitCode::SUCCESS)
}

async fn node_names(control: &mut Control) -> HashMap<String, String> {
    match control.list_nodes(ListNodesRequest { filters: None }).await {
        Ok(resp) => resp
            .into_inner()
            .nodes
            .iter()
            .map(|n| (node::node_id(n).to_string(), node::node_name(n).to_string()))
            .collect(),
        Err(_) => HashMap::new(),
    }
}

async fn ps(
    cfg: &CliConfig,
    quiet: bool,
    no_trunc: bool,
    no_resolve: bool,
    filter: &[String],
    services: &[String],
) -> anyhow::Result<ExitCode> {
    let base = node::parse_ps_filters(filter)?;
    let mut control = crate::connect::control(cfg).await?;
    let mut errors = Vec::new();
    let mut names = task::Names::default();
    let mut ids = Vec::new();
    for reference in services {
        match get_service(&mut control, reference).await {
            Ok(s) => {
                let id = render::id(&s).to_string();
                let name = if no_resolve {
                    id.clone()
                } else {
                    render::name(&s).to_string()
                };
                names.services.insert(id.clone(), name);
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    let mut tasks = Vec::new();
    if !ids.is_empty() {
        let mut filters = base;
        filters.service_ids = ids;
        match control
            .list_tasks(ListTasksRequest {
                filters: Some(filters),
            })
            .await
        {
            Ok(resp) => tasks = resp.into_inner().tasks,
            Err(status) => errors.push(super::status_message(&status)),
        }
    }
    if !no_resolve && !tasks.is_empty() {
        names.nodes = node_names(&mut control).await;
    }
    if errors.is_empty() || !tasks.is_empty() {
        if quiet {
            print!("{}", task::render_quiet(&tasks, &names, !no_trunc));
        } else {
            print!(
                "{}",
                task::render(&tasks, &names, SystemTime::now(), !no_trunc)
            );
        }
    }
    Ok(report(errors))
}

async fn inspect(cfg: &CliConfig, pretty: bool, services: &[String]) -> anyhow::Result<ExitCode> {
    let mut control = crate::connect::control(cfg).await?;
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for reference in services {
        match get_service(&mut control, reference).await {
            Ok(s) => found.push(s),
            Err(e) => errors.push(e),
        }
    }
    if pretty {
        for s in &found {
            let mut network_names = HashMap::new();
            for n in s
                .spec
                .as_ref()
                .and_then(|spec| spec.task.as_ref())
                .map(|t| t.networks.as_slice())
                .unwrap_or_default()
            {
                if let Ok(network) = super::network::get_network(&mut control, &n.target).await {
                    network_names.insert(
                        n.target.clone(),
                        super::network::render::name(&network).to_string(),
                    );
                }
            }
            print!(
                "{}",
                render::render_pretty_with_networks(s, SystemTime::now(), &network_names)
            );
        }
    } else {
        print!("{}", render::render_inspect(&found));
    }
    Ok(report(errors))
}

/// `web=5` → ("web", 5), with docker's errors.
pub fn parse_scale(arg: &str) -> Result<(String, u64), String> {
    let Some((service, replicas)) = arg.split_once('=') else {
        return Err(format!(
            "invalid scale specifier '{arg}'.\nSee 'shoal service scale --help'.\n\nUsage:  shoal service scale SERVICE=REPLICAS [SERVICE=REPLICAS...]"
        ));
    };
    if service.is_empty() {
        return Err(format!("invalid scale specifier '{arg}'."));
    }
    replicas
        .parse::<u64>()
        .map(|n| (service.to_string(), n))
        .map_err(|e| format!("{service}: invalid replicas value {replicas}: {e}"))
}

/// Sets the replica count (or a job's total completions); refuses global modes.
pub fn apply_scale(spec: &mut shoal_proto::v1::ServiceSpec, n: u64) -> Result<(), String> {
    match spec.mode.as_mut() {
        Some(service_spec::Mode::Replicated(r)) => r.replicas = n,
        Some(service_spec::Mode::ReplicatedJob(j)) => j.total_completions = n,
        None => spec.mode = Some(service_spec::Mode::Replicated(Default::default())),
        _ => {
            return Err("scale can only be used with replicated or replicated-job mode".into());
        }
    }
    if let Some(service_spec::Mode::Replicated(r)) = spec.mode.as_mut() {
        r.replicas = n;
    }
    Ok(())
}

#[tracing::instrument(name = "service scale", skip_all)]
async fn scale(
    cfg: &CliConfig,
    detach: bool,
    timeout: &str,
    scales: &[String],
) -> anyhow::Result<ExitCode> {
    let timeout =
        opts::parse_go_duration(timeout).map_err(|e| opts::invalid(timeout, "--timeout", e))?;
    let mut parsed = Vec::new();
    for arg in scales {
        match parse_scale(arg) {
            Ok(p) => parsed.push(p),
            Err(e) => anyhow::bail!(e),
        }
    }
    let mut control = crate::connect::control(cfg).await?;
    let mut errors = Vec::new();
    let mut scaled = Vec::new();
    for (reference, n) in parsed {
        match scale_one(&mut control, &reference, n).await {
            Ok(id) => {
                println!("{reference} scaled to {n}");
                scaled.push(id);
            }
            Err(e) => errors.push(format!("{reference}: {e}")),
        }
    }
    let mut code = ExitCode::SUCCESS;
    if !detach {
        for id in scaled {
            let opts = FollowOptions {
                quiet: false,
                timeout,
                intent: Intent::Converge,
            };
            if converge(&mut control, &id, &opts).await? == ExitCode::FAILURE {
                code = ExitCode::FAILURE;
            }
        }
    }
    if errors.is_empty() {
        Ok(code)
    } else {
        Ok(report(errors))
    }
}

/// How many times a read-change-write is tried when the service changed in between
/// (the leader writes a service's endpoint after each spec change, so a change sent
/// right after another can meet "update out of sequence"; the change is applied
/// again to the fresh spec, as a user running the command again would).
const UPDATE_ATTEMPTS: usize = 5;

/// Whether the manager refused a write because the version read is stale.
fn out_of_sequence(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::FailedPrecondition
        && status.message().contains("update out of sequence")
}

async fn scale_one(control: &mut Control, reference: &str, n: u64) -> Result<String, String> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let service = get_service(control, reference).await?;
        let mut spec = service.spec.clone().unwrap_or_default();
        apply_scale(&mut spec, n)?;
        let id = render::id(&service).to_string();
        match control
            .update_service(UpdateServiceRequest {
                service_id: id.clone(),
                service_version: service.meta.as_ref().and_then(|m| m.version),
                spec: Some(spec),
                rollback: 0,
            })
            .await
        {
            Ok(_) => return Ok(id),
            Err(s) if out_of_sequence(&s) && attempt < UPDATE_ATTEMPTS => continue,
            Err(s) => return Err(super::status_message(&s)),
        }
    }
}

async fn rm(cfg: &CliConfig, services: &[String]) -> anyhow::Result<ExitCode> {
    let mut control = crate::connect::control(cfg).await?;
    let mut errors = Vec::new();
    for reference in services {
        let service = match get_service(&mut control, reference).await {
            Ok(s) => s,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        match control
            .remove_service(RemoveServiceRequest {
                service_id: render::id(&service).to_string(),
            })
            .await
        {
            Ok(_) => println!("{reference}"),
            Err(status) => errors.push(lookup_error(reference, &status)),
        }
    }
    Ok(report(errors))
}

/// `--tail all|N` as the request's tail (negative = all).
pub fn parse_tail(tail: &str) -> anyhow::Result<i64> {
    if tail == "all" {
        return Ok(-1);
    }
    tail.parse::<i64>()
        .map_err(|_| opts::invalid(tail, "-n, --tail", "invalid syntax"))
}

/// How `service logs` prefixes lines: `web.1.<task id>@<node>    | `.
#[derive(Debug, Default, Clone)]
pub struct LogFormat {
    pub timestamps: bool,
    pub no_task_ids: bool,
    pub no_trunc: bool,
    pub raw: bool,
    /// Digits of the largest slot, for docker's padding after the node name.
    pub slot_digits: usize,
}

/// One output line of `service logs` (without its newline).
pub fn format_log(msg: &LogMessage, fmt: &LogFormat, nodes: &HashMap<String, String>) -> String {
    let data = String::from_utf8_lossy(&msg.data);
    let data = data.strip_suffix('\n').unwrap_or(&data);
    let mut out = String::new();
    if fmt.timestamps {
        out.push_str(&rfc3339(msg.timestamp.as_ref()));
        out.push(' ');
    }
    if fmt.raw {
        out.push_str(data);
        return out;
    }
    let mut name = if msg.slot != 0 {
        format!("{}.{}", msg.service_name, msg.slot)
    } else {
        format!("{}.{}", msg.service_name, msg.node_id)
    };
    if !fmt.no_task_ids {
        name.push('.');
        if fmt.no_trunc {
            name.push_str(&msg.task_id);
        } else {
            name.push_str(&truncate_id(&msg.task_id));
        }
    }
    let node = nodes
        .get(&msg.node_id)
        .map(String::as_str)
        .unwrap_or(&msg.node_id);
    let digits = if msg.slot != 0 {
        msg.slot.to_string().len()
    } else {
        1
    };
    let pad = " ".repeat(fmt.slot_digits.saturating_sub(digits));
    out.push_str(&format!("{name}@{node}{pad}    | {data}"));
    out
}

async fn logs(cfg: &CliConfig, args: &LogsArgs) -> anyhow::Result<ExitCode> {
    let tail = parse_tail(&args.tail)?;
    let mut control = crate::connect::control(cfg).await?;
    let mut fmt = LogFormat {
        timestamps: args.timestamps,
        no_task_ids: args.no_task_ids,
        no_trunc: args.no_trunc,
        raw: args.raw,
        slot_digits: 1,
    };
    // Padding as docker: the replica count's digits for a service.
    if let Ok(s) = get_service(&mut control, &args.target).await
        && let Some(service_spec::Mode::Replicated(r)) =
            s.spec.as_ref().and_then(|s| s.mode.as_ref())
    {
        fmt.slot_digits = r.replicas.to_string().len();
    }
    let nodes = node_names(&mut control).await;
    let mut stream = control
        .service_logs(ServiceLogsRequest {
            selectors: vec![args.target.clone()],
            follow: args.follow,
            tail,
        })
        .await
        .map_err(|s| {
            if s.code() == tonic::Code::NotFound {
                anyhow::anyhow!("no such task or service: {}", args.target)
            } else {
                super::rpc_error(s)
            }
        })?
        .into_inner();
    loop {
        tokio::select! {
            item = stream.next() => {
                let Some(item) = item else { break };
                let msg = item.map_err(super::rpc_error)?;
                let line = format_log(&msg, &fmt, &nodes);
                if msg.stream == log_message::Stream::Stderr as i32 {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests;
