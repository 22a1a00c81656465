//! `shoal config create|ls|inspect|rm`, as `docker config`.

use std::collections::HashMap;
use std::io::Read;
use std::process::ExitCode;

use shoal_proto::v1::{
    Annotations, Config, ConfigSpec, CreateConfigRequest, GetConfigRequest, ListConfigsRequest,
    RemoveConfigRequest,
};

use crate::config::CliConfig;
use crate::output::{Table, ago, base64, rfc3339};

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Create a config from a file or STDIN as content.
    Create {
        /// Config labels (KEY=VALUE).
        #[arg(long, short = 'l')]
        label: Vec<String>,
        name: String,
        /// File to read, or "-" for STDIN.
        file: String,
    },
    /// List configs.
    #[command(alias = "list")]
    Ls {
        /// Only display IDs.
        #[arg(long, short)]
        quiet: bool,
        /// Filter output based on conditions provided: name=, id=, label=
        #[arg(long, short)]
        filter: Vec<String>,
    },
    /// Display detailed information on one or more configs.
    Inspect {
        #[arg(required = true)]
        configs: Vec<String>,
    },
    /// Remove one or more configs.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        configs: Vec<String>,
    },
}

pub async fn run(cfg: &CliConfig, cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    let mut control = crate::connect::control(cfg).await?;
    match cmd {
        ConfigCommand::Create { label, name, file } => {
            let data = if file == "-" {
                let mut buf = Vec::new();
                std::io::stdin().read_to_end(&mut buf)?;
                buf
            } else {
                std::fs::read(&file)
                    .map_err(|e| anyhow::anyhow!("error reading content from \"{file}\": {e}"))?
            };
            let spec = ConfigSpec {
                annotations: Some(Annotations {
                    name,
                    labels: parse_labels(&label)?,
                }),
                data,
                templating: None,
            };
            let config = control
                .create_config(CreateConfigRequest { spec: Some(spec) })
                .await
                .map_err(super::rpc_error)?
                .into_inner()
                .config
                .unwrap_or_default();
            println!("{}", id(&config));
            Ok(ExitCode::SUCCESS)
        }
        ConfigCommand::Ls { quiet, filter } => {
            let filters = super::parse_filters(&filter)?;
            let mut configs = control
                .list_configs(ListConfigsRequest {
                    filters: Some(filters),
                })
                .await
                .map_err(super::rpc_error)?
                .into_inner()
                .configs;
            configs.sort_by(|a, b| name(a).cmp(name(b)));
            if quiet {
                configs.iter().for_each(|c| println!("{}", id(c)));
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new(&["ID", "NAME", "CREATED", "UPDATED"]);
            for c in &configs {
                let meta = c.meta.clone().unwrap_or_default();
                table.row(vec![
                    meta.id.clone(),
                    name(c).to_string(),
                    ago(meta.created_at.as_ref()),
                    ago(meta.updated_at.as_ref()),
                ]);
            }
            print!("{}", table.render());
            Ok(ExitCode::SUCCESS)
        }
        ConfigCommand::Inspect { configs } => {
            let mut out = Vec::new();
            let mut code = ExitCode::SUCCESS;
            for reference in configs {
                match control
                    .get_config(GetConfigRequest {
                        config_id: reference.clone(),
                    })
                    .await
                {
                    Ok(resp) => {
                        out.push(inspect_json(&resp.into_inner().config.unwrap_or_default()))
                    }
                    Err(status) if status.code() == tonic::Code::NotFound => {
                        eprintln!("Error: no such config: {reference}");
                        code = ExitCode::FAILURE;
                    }
                    Err(status) => return Err(super::rpc_error(status)),
                }
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(code)
        }
        ConfigCommand::Rm { configs } => {
            let mut code = ExitCode::SUCCESS;
            for reference in configs {
                match control
                    .remove_config(RemoveConfigRequest {
                        config_id: reference.clone(),
                    })
                    .await
                {
                    Ok(_) => println!("{reference}"),
                    Err(status) => {
                        eprintln!("Error: {}", super::status_message(&status));
                        code = ExitCode::FAILURE;
                    }
                }
            }
            Ok(code)
        }
    }
}

fn id(c: &Config) -> &str {
    c.meta.as_ref().map(|m| m.id.as_str()).unwrap_or("")
}

fn name(c: &Config) -> &str {
    c.spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map(|a| a.name.as_str())
        .unwrap_or("")
}

pub fn parse_labels(labels: &[String]) -> anyhow::Result<HashMap<String, String>> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            None if !l.is_empty() => Ok((l.clone(), String::new())),
            _ => anyhow::bail!("invalid label '{l}': expected KEY=VALUE"),
        })
        .collect()
}

fn inspect_json(c: &Config) -> serde_json::Value {
    let meta = c.meta.clone().unwrap_or_default();
    let spec = c.spec.clone().unwrap_or_default();
    let annotations = spec.annotations.unwrap_or_default();
    serde_json::json!({
        "ID": meta.id,
        "Version": { "Index": meta.version.map(|v| v.index).unwrap_or(0) },
        "CreatedAt": rfc3339(meta.created_at.as_ref()),
        "UpdatedAt": rfc3339(meta.updated_at.as_ref()),
        "Spec": {
            "Name": annotations.name,
            "Labels": annotations.labels,
            "Data": base64(&spec.data),
        },
    })
}
