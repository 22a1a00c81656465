//! `shoal stack deploy|ls|ps|services|rm|config`, as `docker stack`.
//!
//! Stacks are client-side, as in docker: the control plane knows nothing of them but
//! the `com.docker.stack.namespace` label on services, networks, secrets and configs.
//! `deploy` turns compose files into those objects (`shoal_compose::convert`) and
//! creates or updates them; the other commands find a stack's objects by that label
//! (reference stacks-secrets.md §2, §5).

mod deploy;
mod list;
pub mod render;

use std::process::ExitCode;

use shoal_compose::convert::NAMESPACE_LABEL;
use shoal_proto::v1::{ListFilters, ListNetworksRequest, ListServicesRequest, Network, Service};

use super::secret::SwarmFile;
use crate::config::CliConfig;
use crate::connect::Control;

pub use deploy::{DeployArgs, ResolveImage};

#[derive(Debug, clap::Subcommand)]
pub enum StackCommand {
    /// Outputs the final config file, after doing merges and interpolations.
    Config {
        /// Path to a Compose file, or "-" to read from stdin.
        #[arg(long = "compose-file", short = 'c', value_name = "FILE")]
        compose_files: Vec<String>,
        /// Skip interpolation and output only merged config.
        #[arg(long)]
        skip_interpolation: bool,
    },
    /// Deploy a new stack or update an existing stack.
    #[command(alias = "up")]
    Deploy(DeployArgs),
    /// List stacks.
    #[command(alias = "list")]
    Ls {
        /// Format output using a custom template: 'table', 'table TEMPLATE', 'json' or a
        /// Go template.
        #[arg(long)]
        format: Option<String>,
    },
    /// List the tasks in the stack.
    Ps {
        /// Filter output based on conditions provided: id=, name=, node=,
        /// desired-state=
        #[arg(long, short, value_name = "FILTER")]
        filter: Vec<String>,
        /// Format output using a custom template.
        #[arg(long)]
        format: Option<String>,
        /// Do not map IDs to Names.
        #[arg(long)]
        no_resolve: bool,
        /// Do not truncate output.
        #[arg(long)]
        no_trunc: bool,
        /// Only display task IDs.
        #[arg(long, short)]
        quiet: bool,
        #[arg(value_name = "STACK")]
        stack: String,
    },
    /// Remove one or more stacks.
    #[command(alias = "remove", alias = "down")]
    Rm {
        /// Do not wait for stack removal; `--detach=false` waits until the stack's
        /// tasks have stopped. (The networks' removal always waits a little for them.)
        #[arg(
            long,
            short,
            num_args = 0..=1,
            require_equals = true,
            default_value_t = true,
            default_missing_value = "true",
            action = clap::ArgAction::Set
        )]
        detach: bool,
        #[arg(required = true, value_name = "STACK")]
        stacks: Vec<String>,
    },
    /// List the services in the stack.
    Services {
        /// Filter output based on conditions provided: id=, label=, mode=, name=
        #[arg(long, short, value_name = "FILTER")]
        filter: Vec<String>,
        /// Format output using a custom template.
        #[arg(long)]
        format: Option<String>,
        /// Only display IDs.
        #[arg(long, short)]
        quiet: bool,
        #[arg(value_name = "STACK")]
        stack: String,
    },
}

pub async fn run(cfg: &CliConfig, cmd: StackCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        StackCommand::Config {
            compose_files,
            skip_interpolation,
        } => deploy::config(&compose_files, skip_interpolation),
        StackCommand::Deploy(args) => deploy::deploy(cfg, &args).await,
        StackCommand::Ls { format } => list::ls(cfg, format.as_deref()).await,
        StackCommand::Ps {
            filter,
            format,
            no_resolve,
            no_trunc,
            quiet,
            stack,
        } => {
            list::ps(
                cfg,
                &stack,
                &list::PsOptions {
                    filter,
                    format,
                    no_resolve,
                    no_trunc,
                    quiet,
                },
            )
            .await
        }
        StackCommand::Rm { detach, stacks } => list::rm(cfg, &stacks, detach).await,
        StackCommand::Services {
            filter,
            format,
            quiet,
            stack,
        } => list::services(cfg, &stack, &filter, format.as_deref(), quiet).await,
    }
}

/// The stack name as docker checks it (anything but blanks and quotes).
pub fn check_stack_name(namespace: &str) -> anyhow::Result<()> {
    shoal_compose::convert::validate_stack_name(namespace).map_err(anyhow::Error::new)
}

/// Objects carrying the stack's label.
pub fn stack_filter(namespace: &str) -> ListFilters {
    let mut f = ListFilters::default();
    f.labels
        .insert(NAMESPACE_LABEL.to_string(), namespace.to_string());
    f
}

/// The stack label's value on an object's labels (empty when absent).
pub fn namespace_of(labels: &std::collections::HashMap<String, String>) -> &str {
    labels
        .get(NAMESPACE_LABEL)
        .map(String::as_str)
        .unwrap_or("")
}

pub async fn stack_services(
    control: &mut Control,
    filters: ListFilters,
) -> anyhow::Result<Vec<Service>> {
    Ok(control
        .list_services(ListServicesRequest {
            filters: Some(filters),
        })
        .await
        .map_err(super::rpc_error)?
        .into_inner()
        .services)
}

pub async fn stack_networks(
    control: &mut Control,
    namespace: &str,
) -> anyhow::Result<Vec<Network>> {
    Ok(control
        .list_networks(ListNetworksRequest {
            filters: Some(stack_filter(namespace)),
        })
        .await
        .map_err(super::rpc_error)?
        .into_inner()
        .networks)
}

/// The stack's secrets or configs (`T`); a manager without support for them yet has
/// none.
pub(crate) async fn stack_files<T: SwarmFile>(
    control: &mut Control,
    namespace: &str,
) -> anyhow::Result<Vec<T>> {
    match T::list(control, stack_filter(namespace)).await {
        Ok(found) => Ok(found),
        Err(s) if s.code() == tonic::Code::Unimplemented => Ok(Vec::new()),
        Err(s) => Err(super::rpc_error(s)),
    }
}

#[cfg(test)]
mod tests;
