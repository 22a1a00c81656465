//! `shoal network create|ls|inspect|rm`, as `docker network` for swarm-scoped
//! networks: docker's flags, its client-side checks and wording, its output.

pub mod ipam;
pub mod render;
#[cfg(test)]
mod tests;

use std::io::{BufRead, Write};
use std::process::ExitCode;

use shoal_proto::v1::{
    Annotations, CreateNetworkRequest, Driver, GetNetworkRequest, ListNetworksRequest, Network,
    NetworkSpec, RemoveNetworkRequest,
};

use crate::commands::service::opts::invalid;
use crate::config::CliConfig;
use crate::connect::Control;
use crate::output::json_indented;
use crate::template::Template;

#[derive(Debug, clap::Subcommand)]
pub enum NetworkCommand {
    /// Create a network.
    Create(Box<CreateArgs>),
    /// List networks.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more networks.
    Inspect {
        /// Format output using a custom template ('json', or a Go template).
        #[arg(long, short)]
        format: Option<String>,
        #[arg(value_name = "NETWORK", required = true)]
        networks: Vec<String>,
    },
    /// Remove one or more networks.
    #[command(alias = "remove")]
    Rm {
        /// Do not error if the network does not exist.
        #[arg(long, short)]
        force: bool,
        #[arg(value_name = "NETWORK", required = true)]
        networks: Vec<String>,
    },
}

/// Every flag of `network create`.
#[derive(Debug, Default, Clone, PartialEq, clap::Args)]
pub struct CreateArgs {
    /// Driver to manage the Network.
    #[arg(long, short = 'd', default_value = "overlay")]
    pub driver: String,
    /// Set driver specific options.
    #[arg(long, short = 'o', value_name = "KEY=VALUE")]
    pub opt: Vec<String>,
    /// Set metadata on a network.
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Restrict external access to the network.
    #[arg(long)]
    pub internal: bool,
    /// Enable or disable IPv6 address assignment.
    #[arg(long)]
    pub ipv6: bool,
    /// Enable manual container attachment.
    #[arg(long)]
    pub attachable: bool,
    /// Create swarm routing-mesh network.
    #[arg(long)]
    pub ingress: bool,
    /// Control the network's scope (shoal networks are always "swarm").
    #[arg(long)]
    pub scope: Option<String>,
    /// IP Address Management Driver.
    #[arg(long, default_value = "default")]
    pub ipam_driver: String,
    /// Subnet in CIDR format that represents a network segment.
    #[arg(long, value_name = "CIDR")]
    pub subnet: Vec<String>,
    /// Allocate container ip from a sub-range.
    #[arg(long, value_name = "CIDR")]
    pub ip_range: Vec<String>,
    /// IPv4 or IPv6 Gateway for the master subnet.
    #[arg(long, value_name = "IP")]
    pub gateway: Vec<String>,
    /// Auxiliary IPv4 or IPv6 addresses used by Network driver.
    #[arg(long, value_name = "NAME=IP")]
    pub aux_address: Vec<String>,
    /// Set IPAM driver specific options.
    #[arg(long, value_name = "KEY=VALUE")]
    pub ipam_opt: Vec<String>,
    #[arg(value_name = "NETWORK")]
    pub name: String,
}

/// Flags of `network ls`.
#[derive(Debug, Default, Clone, PartialEq, clap::Args)]
pub struct LsArgs {
    /// Only display network IDs.
    #[arg(long, short)]
    pub quiet: bool,
    /// Do not truncate the output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Format output using a custom template ('table', 'table TEMPLATE', 'json', or a
    /// Go template).
    #[arg(long)]
    pub format: Option<String>,
    /// Provide filter values (e.g. "driver=overlay"): name, id, driver, scope, label,
    /// type.
    #[arg(long, short)]
    pub filter: Vec<String>,
}

/// docker's `opts.ValidateLabel`.
fn validate_label(value: &str) -> anyhow::Result<()> {
    let key = value
        .split_once('=')
        .map(|(k, _)| k)
        .unwrap_or(value)
        .trim();
    if key.is_empty() {
        return Err(invalid(
            value,
            "--label",
            format!("invalid label '{value}': empty name"),
        ));
    }
    if key.contains(char::is_whitespace) {
        return Err(invalid(
            value,
            "--label",
            format!("label '{key}' contains whitespaces"),
        ));
    }
    Ok(())
}

impl CreateArgs {
    /// The spec these flags describe, after docker's client-side checks.
    pub fn to_spec(&self) -> anyhow::Result<NetworkSpec> {
        for l in &self.label {
            validate_label(l)?;
        }
        if let Some(scope) = self.scope.as_deref()
            && !scope.is_empty()
            && scope != render::SCOPE
        {
            return Err(invalid(
                scope,
                "--scope",
                "shoal networks are swarm-scoped (only \"swarm\" is supported)",
            ));
        }
        let ipam = ipam::ipam_options(&ipam::IpamFlags {
            driver: &self.ipam_driver,
            subnets: &self.subnet,
            ip_ranges: &self.ip_range,
            gateways: &self.gateway,
            aux_addresses: &self.aux_address,
            options: &self.ipam_opt,
        })?;
        Ok(NetworkSpec {
            annotations: Some(Annotations {
                name: self.name.clone(),
                labels: ipam::map_opts(&self.label),
            }),
            driver_config: Some(Driver {
                name: self.driver.clone(),
                options: ipam::map_opts(&self.opt),
            }),
            ipv6_enabled: self.ipv6,
            internal: self.internal,
            ipam: Some(ipam),
            attachable: self.attachable,
            ingress: self.ingress,
        })
    }
}

pub async fn run(cfg: &CliConfig, cmd: NetworkCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        NetworkCommand::Create(args) => {
            // Flags are checked before anything is asked of the manager.
            let spec = args.to_spec()?;
            let mut control = crate::connect::control(cfg).await?;
            let network = control
                .create_network(CreateNetworkRequest { spec: Some(spec) })
                .await
                .map_err(super::rpc_error)?
                .into_inner()
                .network
                .ok_or_else(|| anyhow::anyhow!("the manager answered without the network"))?;
            println!("{}", render::id(&network));
            Ok(ExitCode::SUCCESS)
        }
        NetworkCommand::Ls(args) => {
            let filters = render::NetworkFilters::parse(&args.filter)?;
            let mut control = crate::connect::control(cfg).await?;
            let mut networks: Vec<Network> = control
                .list_networks(ListNetworksRequest { filters: None })
                .await
                .map_err(super::rpc_error)?
                .into_inner()
                .networks
                .into_iter()
                .filter(|n| filters.matches(n))
                .collect();
            render::sort(&mut networks);
            print!(
                "{}",
                render::render_ls(
                    &networks,
                    args.format.as_deref(),
                    args.quiet,
                    !args.no_trunc
                )?
            );
            Ok(ExitCode::SUCCESS)
        }
        NetworkCommand::Inspect { format, networks } => {
            let template = match format.as_deref() {
                None | Some("") | Some("json") => None,
                Some(f) => Some(Template::parse(f)?),
            };
            let mut control = crate::connect::control(cfg).await?;
            let mut found = Vec::new();
            let mut errors = Vec::new();
            for reference in &networks {
                match get_network(&mut control, reference).await {
                    Ok(n) => found.push(n),
                    Err(e) => errors.push(e),
                }
            }
            print!("{}", render_inspect(&found, template.as_ref())?);
            Ok(report(errors))
        }
        NetworkCommand::Rm { force, networks } => {
            let mut control = crate::connect::control(cfg).await?;
            let mut errors = Vec::new();
            for reference in &networks {
                let ingress = get_network(&mut control, reference)
                    .await
                    .is_ok_and(|n| n.spec.is_some_and(|s| s.ingress));
                if ingress && !confirm(INGRESS_WARNING)? {
                    continue;
                }
                match control
                    .remove_network(RemoveNetworkRequest {
                        network_id: reference.clone(),
                    })
                    .await
                {
                    Ok(_) => println!("{reference}"),
                    Err(status) if force && status.code() == tonic::Code::NotFound => {}
                    Err(status) => errors.push(super::status_message(&status)),
                }
            }
            Ok(report(errors))
        }
    }
}

/// What `network inspect` prints: docker's JSON array (4-space indent), or the
/// template's output for each network on a line of its own.
pub fn render_inspect(networks: &[Network], template: Option<&Template>) -> anyhow::Result<String> {
    match template {
        None => {
            let array =
                serde_json::Value::Array(networks.iter().map(render::inspect_json).collect());
            Ok(format!("{}\n", json_indented(&array)))
        }
        Some(t) => {
            let mut out = String::new();
            for n in networks {
                out.push_str(&t.execute(&render::inspect_json(n))?);
                out.push('\n');
            }
            Ok(out)
        }
    }
}

/// The network an id, name or unique id prefix names; a lookup failure in the
/// manager's words (`network x not found`).
pub async fn get_network(control: &mut Control, reference: &str) -> Result<Network, String> {
    control
        .get_network(GetNetworkRequest {
            network_id: reference.to_string(),
        })
        .await
        .map_err(|s| super::status_message(&s))?
        .into_inner()
        .network
        .ok_or_else(|| format!("network {reference} not found"))
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

pub const INGRESS_WARNING: &str = "WARNING! Before removing the routing-mesh network, make sure \
     all the nodes in your swarm run the same shoal version. Otherwise, removal may not be \
     effective and functionality of newly create ingress networks will be impaired.\nAre you \
     sure you want to continue?";

/// docker's `prompt.Confirm`: `y`/`Y` on stdin says yes; anything else, or no input,
/// says no.
fn confirm(message: &str) -> anyhow::Result<bool> {
    print!("{message} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(is_yes(&answer))
}

pub fn is_yes(answer: &str) -> bool {
    matches!(answer.trim(), "y" | "Y")
}
