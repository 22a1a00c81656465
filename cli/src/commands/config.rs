//! `shoal config create|ls|inspect|rm`, as `docker config`.

use std::collections::HashMap;
use std::process::ExitCode;

use serde_json::{Value, json};
use shoal_proto::v1::{
    Annotations, Config, ConfigSpec, CreateConfigRequest, Driver, GetConfigRequest,
    ListConfigsRequest, ListFilters, Meta, RemoveConfigRequest, UpdateConfigRequest,
};
use tonic::Status;

use super::secret::{self, InspectArgs, Kind, ListArgs, SwarmFile, pretty_labels};
use crate::config::CliConfig;
use crate::connect::Control;
use crate::output::{base64, go_time};

/// swarmkit's config limit; the CLI reads at most twice this, as docker does.
pub const MAX_CONFIG_SIZE: u64 = 1000 * 1024;

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Create a config from a file or STDIN as content.
    Create {
        /// Config labels (KEY=VALUE).
        #[arg(long, short = 'l')]
        label: Vec<String>,
        /// Template driver ("golang").
        #[arg(long)]
        template_driver: Option<String>,
        #[arg(value_name = "CONFIG")]
        name: String,
        /// File to read, or "-" for STDIN.
        #[arg(value_name = "file|-")]
        file: String,
    },
    /// List configs.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Display detailed information on one or more configs.
    Inspect(InspectArgs),
    /// Remove one or more configs.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true, value_name = "CONFIG")]
        configs: Vec<String>,
    },
}

pub async fn run(cfg: &CliConfig, cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Create {
            label,
            template_driver,
            name,
            file,
        } => {
            let data = super::secret::read_data(&file, 2 * MAX_CONFIG_SIZE)
                .map_err(|e| anyhow::anyhow!("error reading content from \"{file}\": {e}"))?;
            let spec = ConfigSpec {
                annotations: Some(Annotations {
                    name,
                    labels: parse_labels(&label)?,
                }),
                data,
                templating: template_driver
                    .filter(|t| !t.is_empty())
                    .map(|name| Driver {
                        name,
                        options: HashMap::new(),
                    }),
            };
            secret::create::<Config>(cfg, spec).await
        }
        ConfigCommand::Ls(args) => secret::ls::<Config>(cfg, args).await,
        ConfigCommand::Inspect(args) => secret::inspect::<Config>(cfg, args).await,
        ConfigCommand::Rm { configs } => secret::rm::<Config>(cfg, configs).await,
    }
}

impl SwarmFile for Config {
    type Spec = ConfigSpec;
    const KIND: Kind = Kind::Config;
    fn meta(&self) -> Option<&Meta> {
        self.meta.as_ref()
    }
    fn annotations(&self) -> Option<&Annotations> {
        self.spec.as_ref().and_then(|s| s.annotations.as_ref())
    }
    fn driver(&self) -> &str {
        ""
    }
    fn inspect_json(&self) -> Value {
        inspect_json(self)
    }
    fn render_pretty(&self) -> String {
        render_pretty(self)
    }
    async fn list(control: &mut Control, filters: ListFilters) -> Result<Vec<Self>, Status> {
        Ok(control
            .list_configs(ListConfigsRequest {
                filters: Some(filters),
            })
            .await?
            .into_inner()
            .configs)
    }
    async fn get(control: &mut Control, reference: String) -> Result<Self, Status> {
        Ok(control
            .get_config(GetConfigRequest {
                config_id: reference,
            })
            .await?
            .into_inner()
            .config
            .unwrap_or_default())
    }
    async fn remove(control: &mut Control, reference: String) -> Result<(), Status> {
        control
            .remove_config(RemoveConfigRequest {
                config_id: reference,
            })
            .await?;
        Ok(())
    }
    async fn create(control: &mut Control, spec: ConfigSpec) -> Result<Self, Status> {
        Ok(control
            .create_config(CreateConfigRequest { spec: Some(spec) })
            .await?
            .into_inner()
            .config
            .unwrap_or_default())
    }
    async fn update(control: &mut Control, meta: &Meta, spec: ConfigSpec) -> Result<(), Status> {
        control
            .update_config(UpdateConfigRequest {
                config_id: meta.id.clone(),
                config_version: meta.version,
                spec: Some(spec),
            })
            .await?;
        Ok(())
    }
}

/// `config inspect --pretty`, docker's template (tabs and spacing as it has them).
pub fn render_pretty(c: &Config) -> String {
    let r = c.row();
    let mut out = format!("ID:\t\t\t{}\nName:\t\t\t{}", r.id, r.name);
    pretty_labels(&mut out, &r.labels);
    let data = c
        .spec
        .as_ref()
        .map(|s| s.data.as_slice())
        .unwrap_or_default();
    out.push_str(&format!(
        "\nCreated at:            \t{}\nUpdated at:            \t{}\nData:\n{}",
        go_time(r.created_at.as_ref()),
        go_time(r.updated_at.as_ref()),
        String::from_utf8_lossy(data)
    ));
    out
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

/// docker's `swarm.Config` JSON: the data base64, `Templating` only when set.
pub fn inspect_json(c: &Config) -> Value {
    let meta = c.meta.clone().unwrap_or_default();
    let spec = c.spec.clone().unwrap_or_default();
    let mut spec_json = serde_json::Map::new();
    spec_json.insert("Data".into(), json!(base64(&spec.data)));
    if let Some(t) = &spec.templating {
        spec_json.insert("Templating".into(), json!({ "Name": t.name }));
    }
    secret::inspect_value(meta, spec.annotations, spec_json)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn inspect_and_pretty_like_docker() {
        let c = Config {
            meta: Some(Meta {
                id: "cid".into(),
                created_at: Some(prost_types::Timestamp {
                    seconds: 1_490_343_309,
                    nanos: 0,
                }),
                updated_at: Some(prost_types::Timestamp {
                    seconds: 1_490_343_309,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            spec: Some(ConfigSpec {
                annotations: Some(Annotations {
                    name: "app".into(),
                    labels: [("env".to_string(), "prod".to_string())].into(),
                }),
                data: b"port=80".to_vec(),
                templating: Some(Driver {
                    name: "golang".into(),
                    options: HashMap::new(),
                }),
            }),
        };
        let v = inspect_json(&c);
        assert_eq!(v["Spec"]["Data"], "cG9ydD04MA==");
        assert_eq!(v["Spec"]["Templating"]["Name"], "golang");
        assert_eq!(
            render_pretty(&c),
            "ID:\t\t\tcid\nName:\t\t\tapp\nLabels:\n - env=prod\n\
             Created at:            \t2017-03-24 08:15:09 +0000 utc\n\
             Updated at:            \t2017-03-24 08:15:09 +0000 utc\nData:\nport=80"
        );
    }
}
