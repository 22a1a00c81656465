//! The shipped binary: `shoal-scheduler --config` places tasks as soon as etcd and NATS
//! answer (placement needs no certificate, so it works before the swarm exists), and
//! `--print-config` shows its keys.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use shoal_testkit::{Process, binary, free_port};

#[tokio::test]
async fn the_binary_places_pending_tasks() -> anyhow::Result<()> {
    let c = Cluster::start().await?;
    for n in ["n1", "n2"] {
        c.add_node(node(n)).await?;
    }
    let dir = c.infra.dir.path();
    let port = free_port(std::net::Ipv4Addr::LOCALHOST.into())?;
    let config = dir.join("scheduler.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\netcd_endpoints = [\"{}\"]\nnats_url = \"{}\"\n\
             kek_file = \"{}\"\nscan_interval = \"1s\"\nlog_filter = \"info,shoal_scheduler=debug\"\n",
            c.infra.etcd.endpoint(),
            c.infra.nats.url(),
            dir.join("swarm-ca.kek").display(),
        ),
    )?;
    let log = dir.join("scheduler.log");
    let mut process = Process::spawn(
        &binary("shoal-scheduler")?,
        &["--config".to_string(), config.display().to_string()],
        &[],
        &log,
    )?;

    c.add_tasks(replicas("svc-p", "p", 4, spec(&[], None, 0)))
        .await?;
    let tasks = c
        .wait_assigned("svc-p", 4)
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nscheduler log:\n{}", process.log_tail(40)))?;
    let counts: HashMap<String, usize> = per_node(&tasks);
    assert_eq!(counts.get("n1"), Some(&2));
    assert_eq!(counts.get("n2"), Some(&2));

    process.signal_term()?;
    let status = process.wait_exit(Duration::from_secs(10)).await?;
    assert!(status.success(), "{status:?}\n{}", process.log_tail(40));
    Ok(())
}

#[test]
fn print_config_shows_the_scan_interval() -> anyhow::Result<()> {
    let out = std::process::Command::new(binary("shoal-scheduler")?)
        .arg("--print-config")
        .env("SHOAL_SCAN_INTERVAL", "7s")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("scan_interval = \"7s\""), "{text}");
    let bad = std::process::Command::new(binary("shoal-scheduler")?)
        .arg("--print-config")
        .env("SHOAL_SCAN_INTERVAL", "10ms")
        .output()?;
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("scan_interval"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    Ok(())
}
