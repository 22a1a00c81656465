//! `shoal events`: follows cluster events live, like `docker events`.

use std::process::ExitCode;

use shoal_proto::v1::{Event, WatchEventsRequest};
use tokio_stream::StreamExt;

use crate::config::CliConfig;

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Filter output based on conditions provided: type=<kind>, event=<action>, id=<id>
    /// (repeatable; values of one key are ORed).
    #[arg(long, short = 'f', value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// Output format: "json" prints one JSON object per event.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

pub async fn run(cfg: &CliConfig, args: EventsArgs) -> anyhow::Result<ExitCode> {
    let mut req = WatchEventsRequest::default();
    for f in &args.filter {
        let Some((key, value)) = f.split_once('=') else {
            anyhow::bail!("bad format of filter (expected name=value): {f}");
        };
        match key {
            "type" => req.kinds.push(value.to_string()),
            "event" => req.actions.push(value.to_string()),
            "id" => req.ids.push(value.to_string()),
            other => anyhow::bail!("invalid filter '{other}'"),
        }
    }
    let json = match args.format.as_deref() {
        None => false,
        Some("json") | Some("{{json .}}") => true,
        Some(other) => anyhow::bail!("unsupported format \"{other}\" (use json)"),
    };
    let mut client = crate::connect::control(cfg).await?;
    let mut stream = client
        .watch_events(req)
        .await
        .map_err(|s| anyhow::anyhow!(super::status_message(&s)))?
        .into_inner();
    while let Some(item) = stream.next().await {
        let event = item.map_err(|s| anyhow::anyhow!(super::status_message(&s)))?;
        println!(
            "{}",
            if json {
                as_json(&event)
            } else {
                as_line(&event)
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn timestamp(event: &Event) -> String {
    event
        .time
        .as_ref()
        .and_then(|t| {
            let secs = u64::try_from(t.seconds).ok()?;
            let nanos = u32::try_from(t.nanos).ok()?;
            let at = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
            Some(humantime::format_rfc3339_nanos(at).to_string())
        })
        .unwrap_or_default()
}

/// `2026-11-21T10:00:00.000000000Z service create <id> (name=web)`
fn as_line(event: &Event) -> String {
    let mut attrs: Vec<_> = event.attributes.iter().collect();
    attrs.sort();
    let attrs = attrs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut line = format!(
        "{} {} {} {}",
        timestamp(event),
        event.kind,
        event.action,
        event.id
    );
    if !attrs.is_empty() {
        line.push_str(&format!(" ({attrs})"));
    }
    line
}

fn as_json(event: &Event) -> String {
    serde_json::json!({
        "Type": event.kind,
        "Action": event.action,
        "Actor": { "ID": event.id, "Attributes": event.attributes },
        "version": event.version,
        "time": timestamp(event),
    })
    .to_string()
}
