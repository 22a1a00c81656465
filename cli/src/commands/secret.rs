//! `shoal secret create|ls|inspect|rm`, as `docker secret`, and the listing and
//! inspect output secrets share with configs (`docker config`, `config.rs`).
//!
//! The payload is read from a file or STDIN and sent once, to `CreateSecret`; no
//! command ever prints it (the manager never returns it).

use std::collections::HashMap;
use std::io::Read;
use std::process::ExitCode;

use serde_json::{Value, json};
use shoal_proto::v1::{
    Annotations, CreateSecretRequest, Driver, GetSecretRequest, ListFilters, ListSecretsRequest,
    Meta, RemoveSecretRequest, Secret, SecretSpec, UpdateSecretRequest,
};
use tonic::Status;

use crate::config::CliConfig;
use crate::connect::Control;
use crate::output::{
    ago, annotations_name, formatted, go_time, json_indented, meta_id, natural_cmp, rfc3339,
};
use crate::template::Template;

/// swarmkit's limit; the CLI reads at most twice this from a file, as docker does, so
/// a wrong path cannot pull a huge file into memory.
pub const MAX_SECRET_SIZE: u64 = 500 * 1024;

#[derive(Debug, clap::Subcommand)]
pub enum SecretCommand {
    /// Create a secret from a file or STDIN as content.
    Create {
        /// Secret labels (KEY=VALUE).
        #[arg(long, short = 'l')]
        label: Vec<String>,
        /// Secret driver.
        #[arg(long, short = 'd')]
        driver: Option<String>,
        /// Template driver ("golang").
        #[arg(long)]
        template_driver: Option<String>,
        #[arg(value_name = "SECRET")]
        name: String,
        /// File to read, or "-" for STDIN.
        #[arg(value_name = "file|-")]
        file: Option<String>,
    },
    /// List secrets.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Display detailed information on one or more secrets.
    Inspect(InspectArgs),
    /// Remove one or more secrets.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true, value_name = "SECRET")]
        secrets: Vec<String>,
    },
}

/// `ls` flags of secrets and configs.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    /// Only display IDs.
    #[arg(long, short)]
    pub quiet: bool,
    /// Format output using a custom template ('table', 'table TEMPLATE', 'json', or a
    /// Go template).
    #[arg(long)]
    pub format: Option<String>,
    /// Filter output based on conditions provided: name=, id=, label=
    #[arg(long, short)]
    pub filter: Vec<String>,
}

/// `inspect` flags of secrets and configs.
#[derive(Debug, Clone, clap::Args)]
pub struct InspectArgs {
    /// Print the information in a human friendly format.
    #[arg(long)]
    pub pretty: bool,
    /// Format output using a custom template ('json', or a Go template).
    #[arg(long, short)]
    pub format: Option<String>,
    #[arg(required = true, value_name = "NAME|ID")]
    pub names: Vec<String>,
}

pub async fn run(cfg: &CliConfig, cmd: SecretCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SecretCommand::Create {
            label,
            driver,
            template_driver,
            name,
            file,
        } => {
            let spec = create_spec(name, &label, driver, template_driver, file.as_deref())?;
            create::<Secret>(cfg, spec).await
        }
        SecretCommand::Ls(args) => ls::<Secret>(cfg, args).await,
        SecretCommand::Inspect(args) => inspect::<Secret>(cfg, args).await,
        SecretCommand::Rm { secrets } => rm::<Secret>(cfg, secrets).await,
    }
}

/// What the commands do alike with secrets and configs: the Control API calls of each
/// and how one reads.
pub(crate) trait SwarmFile: Sized {
    type Spec;
    const KIND: Kind;
    fn meta(&self) -> Option<&Meta>;
    fn annotations(&self) -> Option<&Annotations>;
    /// The payload driver's name (configs have none).
    fn driver(&self) -> &str;
    /// docker's inspect JSON.
    fn inspect_json(&self) -> Value;
    /// docker's `inspect --pretty`.
    fn render_pretty(&self) -> String;
    async fn list(control: &mut Control, filters: ListFilters) -> Result<Vec<Self>, Status>;
    async fn get(control: &mut Control, reference: String) -> Result<Self, Status>;
    async fn remove(control: &mut Control, reference: String) -> Result<(), Status>;
    async fn create(control: &mut Control, spec: Self::Spec) -> Result<Self, Status>;
    /// A new spec for the object at `meta` (its id and version).
    async fn update(control: &mut Control, meta: &Meta, spec: Self::Spec) -> Result<(), Status>;

    fn id(&self) -> &str {
        meta_id(self.meta())
    }

    fn name(&self) -> &str {
        annotations_name(self.annotations())
    }

    /// What `ls` shows of it.
    fn row(&self) -> Row {
        let meta = self.meta().cloned().unwrap_or_default();
        Row {
            id: meta.id,
            name: self.name().to_string(),
            driver: self.driver().to_string(),
            labels: self
                .annotations()
                .map(|a| a.labels.clone())
                .unwrap_or_default(),
            created_at: meta.created_at,
            updated_at: meta.updated_at,
        }
    }
}

impl SwarmFile for Secret {
    type Spec = SecretSpec;
    const KIND: Kind = Kind::Secret;
    fn meta(&self) -> Option<&Meta> {
        self.meta.as_ref()
    }
    fn annotations(&self) -> Option<&Annotations> {
        self.spec.as_ref().and_then(|s| s.annotations.as_ref())
    }
    fn driver(&self) -> &str {
        self.spec
            .as_ref()
            .and_then(|s| s.driver.as_ref())
            .map(|d| d.name.as_str())
            .unwrap_or("")
    }
    fn inspect_json(&self) -> Value {
        inspect_json(self)
    }
    fn render_pretty(&self) -> String {
        render_pretty(self)
    }
    async fn list(control: &mut Control, filters: ListFilters) -> Result<Vec<Self>, Status> {
        Ok(control
            .list_secrets(ListSecretsRequest {
                filters: Some(filters),
            })
            .await?
            .into_inner()
            .secrets)
    }
    async fn get(control: &mut Control, reference: String) -> Result<Self, Status> {
        Ok(control
            .get_secret(GetSecretRequest {
                secret_id: reference,
            })
            .await?
            .into_inner()
            .secret
            .unwrap_or_default())
    }
    async fn remove(control: &mut Control, reference: String) -> Result<(), Status> {
        control
            .remove_secret(RemoveSecretRequest {
                secret_id: reference,
            })
            .await?;
        Ok(())
    }
    async fn create(control: &mut Control, spec: SecretSpec) -> Result<Self, Status> {
        Ok(control
            .create_secret(CreateSecretRequest { spec: Some(spec) })
            .await?
            .into_inner()
            .secret
            .unwrap_or_default())
    }
    async fn update(control: &mut Control, meta: &Meta, spec: SecretSpec) -> Result<(), Status> {
        control
            .update_secret(UpdateSecretRequest {
                secret_id: meta.id.clone(),
                secret_version: meta.version,
                spec: Some(spec),
            })
            .await?;
        Ok(())
    }
}

/// `create`: sends the spec, prints the new object's id.
pub(crate) async fn create<T: SwarmFile>(
    cfg: &CliConfig,
    spec: T::Spec,
) -> anyhow::Result<ExitCode> {
    let mut control = crate::connect::control(cfg).await?;
    let created = T::create(&mut control, spec)
        .await
        .map_err(super::rpc_error)?;
    println!("{}", created.id());
    Ok(ExitCode::SUCCESS)
}

/// `ls`.
pub(crate) async fn ls<T: SwarmFile>(cfg: &CliConfig, args: ListArgs) -> anyhow::Result<ExitCode> {
    let filters = super::parse_filters(&args.filter)?;
    let mut control = crate::connect::control(cfg).await?;
    let found = T::list(&mut control, filters)
        .await
        .map_err(super::rpc_error)?;
    let rows: Vec<Row> = found.iter().map(T::row).collect();
    print!(
        "{}",
        render_ls(rows, args.format.as_deref(), args.quiet, T::KIND)?
    );
    Ok(ExitCode::SUCCESS)
}

/// `inspect`: what is found is printed, then an error line for each reference that
/// is not (exit 1).
pub(crate) async fn inspect<T: SwarmFile>(
    cfg: &CliConfig,
    args: InspectArgs,
) -> anyhow::Result<ExitCode> {
    let format = InspectFormat::parse(args.pretty, args.format.as_deref())?;
    let mut control = crate::connect::control(cfg).await?;
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for reference in &args.names {
        match T::get(&mut control, reference.clone()).await {
            Ok(object) => found.push(object),
            Err(status) => errors.push(super::status_message(&status)),
        }
    }
    let values: Vec<Value> = found.iter().map(T::inspect_json).collect();
    let pretty: Vec<String> = found.iter().map(T::render_pretty).collect();
    print!("{}", format.render(&values, &pretty)?);
    Ok(report(errors))
}

/// `rm`: each reference removed is printed, then an error line for each that is not.
pub(crate) async fn rm<T: SwarmFile>(
    cfg: &CliConfig,
    references: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let mut control = crate::connect::control(cfg).await?;
    let mut errors = Vec::new();
    for reference in references {
        match T::remove(&mut control, reference.clone()).await {
            Ok(()) => println!("{reference}"),
            Err(status) => errors.push(super::status_message(&status)),
        }
    }
    Ok(report(errors))
}

/// Prints collected errors as the CLI prints one; exit 1 if there were any.
pub fn report(errors: Vec<String>) -> ExitCode {
    if errors.is_empty() {
        return ExitCode::SUCCESS;
    }
    for e in errors {
        eprintln!("Error: {e}");
    }
    ExitCode::FAILURE
}

/// The spec `secret create` sends, with docker's client-side checks: no data with a
/// driver, data from a file or STDIN otherwise, never empty.
pub fn create_spec(
    name: String,
    labels: &[String],
    driver: Option<String>,
    template_driver: Option<String>,
    file: Option<&str>,
) -> anyhow::Result<SecretSpec> {
    let driver = driver.filter(|d| !d.is_empty());
    let data = match (&driver, file) {
        (Some(_), Some(_)) => {
            anyhow::bail!("when using secret driver secret data must be empty")
        }
        (Some(_), None) => Vec::new(),
        (None, None) | (None, Some("")) => anyhow::bail!("secret file is required"),
        (None, Some(file)) => read_data(file, 2 * MAX_SECRET_SIZE)?,
    };
    Ok(SecretSpec {
        annotations: Some(Annotations {
            name,
            labels: super::config::parse_labels(labels)?,
        }),
        data,
        driver: driver.map(|name| Driver {
            name,
            options: HashMap::new(),
        }),
        templating: template_driver
            .filter(|t| !t.is_empty())
            .map(|name| Driver {
                name,
                options: HashMap::new(),
            }),
    })
}

/// A payload from `file` ("-": STDIN), at most `limit` bytes, not empty; docker's
/// messages (`error reading from STDIN: data is empty`).
pub fn read_data(file: &str, limit: u64) -> anyhow::Result<Vec<u8>> {
    let mut data = Vec::new();
    let source = if file == "-" {
        std::io::stdin()
            .take(limit)
            .read_to_end(&mut data)
            .map_err(|e| anyhow::anyhow!("error reading from STDIN: {e}"))?;
        "STDIN".to_string()
    } else {
        std::fs::File::open(file)
            .and_then(|f| f.take(limit).read_to_end(&mut data))
            .map_err(|e| anyhow::anyhow!("error reading from {file}: {e}"))?;
        file.to_string()
    };
    if data.is_empty() {
        anyhow::bail!("error reading from {source}: data is empty");
    }
    Ok(data)
}

/// Which object an `ls` lists: secrets have a DRIVER column, configs do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Secret,
    Config,
}

impl Kind {
    /// The object's name in messages: "secret", "config".
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::Config => "config",
        }
    }
}

/// What `ls` shows of a secret or config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub labels: HashMap<String, String>,
    pub created_at: Option<prost_types::Timestamp>,
    pub updated_at: Option<prost_types::Timestamp>,
}

/// One row as `--format` templates see it (docker's `secretContext` /
/// `configContext`).
fn ls_context(r: &Row) -> Value {
    let mut labels: Vec<String> = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    json!({
        "ID": r.id,
        "Name": r.name,
        "Driver": r.driver,
        "CreatedAt": ago(r.created_at.as_ref()),
        "UpdatedAt": ago(r.updated_at.as_ref()),
        "Labels": labels.join(","),
    })
}

fn headers() -> Value {
    json!({
        "ID": "ID",
        "Name": "NAME",
        "Driver": "DRIVER",
        "CreatedAt": "CREATED",
        "UpdatedAt": "UPDATED",
        "Labels": "LABELS",
    })
}

/// `ls` output: docker's table (`ID  NAME  [DRIVER]  CREATED  UPDATED`), sorted by
/// name in natural order, `-q`, `--format table …|json|TEMPLATE`.
pub fn render_ls(
    mut rows: Vec<Row>,
    format: Option<&str>,
    quiet: bool,
    kind: Kind,
) -> anyhow::Result<String> {
    rows.sort_by(|a, b| natural_cmp(&a.name, &b.name));
    let default = match kind {
        Kind::Secret => "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.CreatedAt}}\t{{.UpdatedAt}}",
        Kind::Config => "table {{.ID}}\t{{.Name}}\t{{.CreatedAt}}\t{{.UpdatedAt}}",
    };
    // `-q` wins over any `--format`.
    let format = if quiet { Some("{{.ID}}") } else { format };
    let contexts: Vec<Value> = rows.iter().map(ls_context).collect();
    formatted(&contexts, &headers(), format, default)
}

/// How `inspect` prints: docker's JSON array, a template per object, or `--pretty`.
#[derive(Debug)]
pub enum InspectFormat {
    Json,
    Template(Template),
    Pretty,
}

impl InspectFormat {
    pub fn parse(pretty: bool, format: Option<&str>) -> anyhow::Result<InspectFormat> {
        let format = format.map(str::trim).unwrap_or("");
        if pretty || format == "pretty" {
            return Ok(InspectFormat::Pretty);
        }
        if format.starts_with("pretty") {
            anyhow::bail!("cannot supply extra formatting options to the pretty template");
        }
        Ok(match format {
            "" | "json" => InspectFormat::Json,
            f => InspectFormat::Template(Template::parse(
                &f.replace("\\t", "\t").replace("\\n", "\n"),
            )?),
        })
    }

    /// The output for the objects found (`values` as JSON, `pretty` as text), in order.
    pub fn render(&self, values: &[Value], pretty: &[String]) -> anyhow::Result<String> {
        Ok(match self {
            InspectFormat::Json => format!("{}\n", json_indented(&Value::Array(values.to_vec()))),
            InspectFormat::Template(t) => {
                let mut out = String::new();
                for v in values {
                    out.push_str(&t.execute(v)?);
                    out.push('\n');
                }
                out
            }
            // docker's formatter writes the objects one after another, each ending in
            // a newline.
            InspectFormat::Pretty => pretty.iter().map(|p| format!("{p}\n")).collect(),
        })
    }
}

fn driver_json(d: &Driver) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("Name".into(), json!(d.name));
    if !d.options.is_empty() {
        out.insert("Options".into(), json!(d.options));
    }
    Value::Object(out)
}

/// docker's JSON of a secret or config: its meta and a spec of its annotations' name
/// and labels, then `rest`.
pub fn inspect_value(
    meta: Meta,
    annotations: Option<Annotations>,
    rest: serde_json::Map<String, Value>,
) -> Value {
    let annotations = annotations.unwrap_or_default();
    let mut spec = serde_json::Map::new();
    spec.insert("Name".into(), json!(annotations.name));
    spec.insert("Labels".into(), json!(annotations.labels));
    spec.extend(rest);
    json!({
        "ID": meta.id,
        "Version": { "Index": meta.version.map(|v| v.index).unwrap_or(0) },
        "CreatedAt": rfc3339(meta.created_at.as_ref()),
        "UpdatedAt": rfc3339(meta.updated_at.as_ref()),
        "Spec": Value::Object(spec),
    })
}

/// docker's `swarm.Secret` JSON: no data (the manager never returns it); `Driver` and
/// `Templating` only when set.
pub fn inspect_json(s: &Secret) -> Value {
    let meta = s.meta.clone().unwrap_or_default();
    let spec = s.spec.clone().unwrap_or_default();
    let mut spec_json = serde_json::Map::new();
    if let Some(d) = &spec.driver {
        spec_json.insert("Driver".into(), driver_json(d));
    }
    if let Some(t) = &spec.templating {
        spec_json.insert("Templating".into(), driver_json(t));
    }
    inspect_value(meta, spec.annotations, spec_json)
}

/// `Labels:` and one ` - k=v` line per label (sorted), as docker's pretty templates.
pub fn pretty_labels(out: &mut String, labels: &HashMap<String, String>) {
    if labels.is_empty() {
        return;
    }
    let mut sorted: Vec<(&String, &String)> = labels.iter().collect();
    sorted.sort();
    out.push_str("\nLabels:");
    for (k, v) in sorted {
        if v.is_empty() {
            out.push_str(&format!("\n - {k}"));
        } else {
            out.push_str(&format!("\n - {k}={v}"));
        }
    }
}

/// `secret inspect --pretty`, docker's template (its uneven alignment included).
pub fn render_pretty(s: &Secret) -> String {
    let r = s.row();
    let mut out = format!("ID:              {}\nName:              {}", r.id, r.name);
    pretty_labels(&mut out, &r.labels);
    out.push_str(&format!(
        "\nDriver:            {}\nCreated at:        {}\nUpdated at:        {}",
        r.driver,
        go_time(r.created_at.as_ref()),
        go_time(r.updated_at.as_ref())
    ));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use shoal_proto::v1::Version;

    fn secret(id: &str, name: &str, labels: &[(&str, &str)]) -> Secret {
        Secret {
            meta: Some(Meta {
                id: id.into(),
                version: Some(Version { index: 11 }),
                created_at: Some(prost_types::Timestamp {
                    seconds: 1_490_343_309,
                    nanos: 735_271_783,
                }),
                updated_at: Some(prost_types::Timestamp {
                    seconds: 1_490_343_309,
                    nanos: 735_271_783,
                }),
            }),
            spec: Some(SecretSpec {
                annotations: Some(Annotations {
                    name: name.into(),
                    labels: labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn ls_table_has_dockers_columns_in_natural_order() {
        let rows = vec![
            secret("id10", "db10", &[]).row(),
            secret("id2", "db2", &[]).row(),
        ];
        let out = render_ls(rows.clone(), None, false, Kind::Secret).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("ID "), "{out}");
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(header, ["ID", "NAME", "DRIVER", "CREATED", "UPDATED"]);
        assert!(lines[1].starts_with("id2 "), "{out}");
        assert!(lines[2].starts_with("id10 "), "{out}");
        assert!(lines[1].contains(" ago"), "{out}");
        let config = render_ls(rows.clone(), None, false, Kind::Config).unwrap();
        assert!(!config.contains("DRIVER"), "{config}");
        assert_eq!(
            render_ls(rows.clone(), None, true, Kind::Secret).unwrap(),
            "id2\nid10\n"
        );
        assert_eq!(
            render_ls(rows, Some("{{.Name}}:{{.Driver}}"), false, Kind::Secret).unwrap(),
            "db2:\ndb10:\n"
        );
    }

    #[test]
    fn inspect_json_is_dockers_shape_without_data() {
        let mut s = secret("abc", "db_pw", &[("env", "prod")]);
        if let Some(spec) = s.spec.as_mut() {
            spec.templating = Some(Driver {
                name: "golang".into(),
                options: HashMap::new(),
            });
        }
        let v = inspect_json(&s);
        assert_eq!(v["ID"], "abc");
        assert_eq!(v["Version"]["Index"], 11);
        assert_eq!(v["CreatedAt"], "2017-03-24T08:15:09.735271783Z");
        assert_eq!(v["Spec"]["Name"], "db_pw");
        assert_eq!(v["Spec"]["Labels"]["env"], "prod");
        assert_eq!(v["Spec"]["Templating"]["Name"], "golang");
        assert!(v["Spec"].get("Driver").is_none());
        assert!(v["Spec"].get("Data").is_none());
    }

    #[test]
    fn pretty_is_dockers_template() {
        let s = secret("abc", "db_pw", &[("env", "prod"), ("tier", "")]);
        assert_eq!(
            render_pretty(&s),
            "ID:              abc\n\
             Name:              db_pw\n\
             Labels:\n - env=prod\n - tier\n\
             Driver:            \n\
             Created at:        2017-03-24 08:15:09.735271783 +0000 utc\n\
             Updated at:        2017-03-24 08:15:09.735271783 +0000 utc"
        );
        assert!(InspectFormat::parse(false, Some("pretty {{.ID}}")).is_err());
    }

    #[test]
    fn create_checks_like_docker() {
        let err = |r: anyhow::Result<SecretSpec>| r.unwrap_err().to_string();
        assert_eq!(
            err(create_spec(
                "s".into(),
                &[],
                Some("vault".into()),
                None,
                Some("f")
            )),
            "when using secret driver secret data must be empty"
        );
        assert_eq!(
            err(create_spec("s".into(), &[], None, None, None)),
            "secret file is required"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "").unwrap();
        let path = empty.display().to_string();
        assert_eq!(
            err(create_spec("s".into(), &[], None, None, Some(&path))),
            format!("error reading from {path}: data is empty")
        );
        let full = dir.path().join("pw");
        std::fs::write(&full, "hunter2").unwrap();
        let spec = create_spec(
            "s".into(),
            &["a=b".into()],
            None,
            Some("golang".into()),
            Some(&full.display().to_string()),
        )
        .unwrap();
        assert_eq!(spec.data, b"hunter2");
        assert_eq!(spec.templating.unwrap().name, "golang");
        assert_eq!(spec.annotations.unwrap().labels["a"], "b");
        let driven = create_spec("s".into(), &[], Some("vault".into()), None, None).unwrap();
        assert!(driven.data.is_empty());
        assert_eq!(driven.driver.unwrap().name, "vault");
    }
}
