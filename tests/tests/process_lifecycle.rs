//! Every shoal binary, run as a real process against a real etcd and nats-server:
//! it starts from a config file, reports SERVING over grpc.health.v1, and exits 0
//! within 5 s of SIGTERM. A bad config value makes every binary (the CLI too) exit 2
//! with one line that names the key.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use shoal_testkit::{Infra, Process, binary, free_port, wait_for};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const SERVICES: [&str; 5] = [
    "shoal-manager",
    "shoal-scheduler",
    "shoal-dispatcher",
    "shoal-dns",
    "shoal-worker",
];

/// A config file for `service` that points it at `infra`, listening on a free port.
fn write_config(infra: &Infra, service: &str) -> anyhow::Result<(std::path::PathBuf, String)> {
    let listen = format!("127.0.0.1:{}", free_port(LOCALHOST)?);
    let mut text = format!("listen = \"{listen}\"\nlog_filter = \"info\"\n");
    if service == "shoal-worker" {
        let state = infra.dir.path().join("worker-state");
        text.push_str(&format!(
            "state_dir = \"{}\"\ndispatcher_addrs = [\"127.0.0.1:4240\"]\nhostname = \"w1\"\n",
            state.display()
        ));
    } else {
        text.push_str(&format!(
            "etcd_endpoints = [\"{}\"]\nnats_url = \"{}\"\n",
            infra.etcd.endpoint(),
            infra.nats.url()
        ));
    }
    if service == "shoal-dns" {
        text.push_str(&format!(
            "dns_listen = \"127.0.0.1:{}\"\n",
            free_port(LOCALHOST)?
        ));
    }
    let path = infra.dir.path().join(format!("{service}.toml"));
    std::fs::write(&path, text)?;
    Ok((path, listen))
}

async fn serving(addr: &str) -> Option<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let mut client = HealthClient::new(channel);
    let status = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?
        .into_inner()
        .status();
    (status == ServingStatus::Serving).then_some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_starts_reports_healthy_and_exits_0_on_sigterm() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let mut running = Vec::new();
    for service in SERVICES {
        let (config, listen) = write_config(&infra, service)?;
        let log = infra.dir.path().join(format!("{service}.log"));
        let process = Process::spawn(
            &binary(service)?,
            &["--config".into(), config.display().to_string()],
            &[],
            &log,
        )?;
        running.push((service, listen, process));
    }
    for (service, listen, process) in &running {
        wait_for(
            &format!("{service} on {listen} to report SERVING"),
            Duration::from_secs(30),
            || serving(listen),
        )
        .await
        .with_context(|| process.log_tail(30))?;
    }
    for (_, _, process) in &running {
        process.signal_term()?;
    }
    for (service, _, process) in &mut running {
        let status = process.wait_exit(Duration::from_secs(5)).await?;
        assert!(
            status.success(),
            "{service} exited with {status} after SIGTERM:\n{}",
            process.log_tail(30)
        );
    }
    Ok(())
}

/// Runs `bin args` to completion and returns (exit code, stderr).
fn run_to_exit(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<(i32, String)> {
    let out = std::process::Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("SHOAL_HOST")
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn bad_config_exits_2_naming_the_key() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let all = SERVICES.iter().copied().chain(["shoal"]);
    for bin_name in all {
        let bin = binary(bin_name)?;
        let (key, bad) = if bin_name == "shoal" {
            ("host", "host = \"no port here\"\n")
        } else {
            ("listen", "listen = \"not-an-address\"\n")
        };
        let file = dir.path().join(format!("{bin_name}-bad.toml"));
        std::fs::write(&file, bad)?;
        let file = file.display().to_string();
        let args: Vec<&str> = if bin_name == "shoal" {
            vec!["--config", &file, "version"]
        } else {
            vec!["--config", &file]
        };

        // A bad value in the file.
        let (code, stderr) = run_to_exit(&bin, &args, &[])?;
        assert_eq!(code, 2, "{bin_name} with a bad file value: {stderr}");
        assert!(stderr.contains(&format!("`{key}`")), "{bin_name}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{bin_name}: one line: {stderr}");

        // A bad value in the environment.
        let (code, stderr) = run_to_exit(
            &bin,
            if bin_name == "shoal" { &["version"] } else { &[] },
            &[("SHOAL_OTLP_ENDPOINT", "ftp://x")],
        )?;
        assert_eq!(code, 2, "{bin_name} with a bad env value: {stderr}");
        assert!(stderr.contains("`otlp_endpoint`"), "{bin_name}: {stderr}");

        // An unknown key in the file.
        std::fs::write(dir.path().join("typo.toml"), "lisen = \"127.0.0.1:1\"\n")?;
        let typo = dir.path().join("typo.toml").display().to_string();
        let args: Vec<&str> = if bin_name == "shoal" {
            vec!["--config", &typo, "version"]
        } else {
            vec!["--config", &typo]
        };
        let (code, stderr) = run_to_exit(&bin, &args, &[])?;
        assert_eq!(code, 2, "{bin_name} with an unknown key: {stderr}");
        assert!(stderr.contains("`lisen`"), "{bin_name}: {stderr}");
    }
    Ok(())
}
