//! Every shoal binary, run as a real process against a real etcd and nats-server:
//! it starts from a config file, reports SERVING over grpc.health.v1, and exits 0
//! within 5 s of SIGTERM. A bad config value makes every binary (the CLI too) exit 2
//! with one line that names the key.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use shoal_scenarios::{MANAGER_NAME, SERVICES, Swarm, issue_node_identity, spawn_service};

use shoal_testkit::{Infra, binary};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_starts_reports_healthy_and_exits_0_on_sigterm() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let swarm = Swarm::start(&infra, "").await?;
    let mut running = Vec::new();
    for service in ["shoal-scheduler", "shoal-dispatcher", "shoal-dns"] {
        running.push(spawn_service(&infra, service, "")?);
    }
    // The worker attaches to the dispatcher and renews through the manager.
    let worker = spawn_service(
        &infra,
        "shoal-worker",
        &format!(
            "dispatcher_addrs = [\"{}\"]\nmanager_addrs = [\"{}\"]\n",
            running[1].addr, swarm.manager.addr
        ),
    )?;
    // It serves once it has its node identity and a session.
    issue_node_identity(
        &swarm.manager,
        &swarm.admin,
        &swarm.worker_token(),
        &worker.state_dir,
    )
    .await?;
    running.push(worker);
    for service in &running {
        let server_name = if service.name == "shoal-worker" {
            "swarm-worker"
        } else {
            MANAGER_NAME
        };
        service.wait_serving(&swarm.admin, server_name).await?;
    }
    running.push(swarm.manager);
    for service in &running {
        service.process.signal_term()?;
    }
    for service in &mut running {
        let status = service.process.wait_exit(Duration::from_secs(5)).await?;
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM:\n{}",
            service.name,
            service.process.log_tail(30)
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
            vec!["--cli-config", &file, "version"]
        } else {
            vec!["--config", &file]
        };

        // A bad value in the file.
        let (code, stderr) = run_to_exit(&bin, &args, &[])?;
        assert_eq!(code, 2, "{bin_name} with a bad file value: {stderr}");
        assert!(stderr.contains(&format!("`{key}`")), "{bin_name}: {stderr}");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{bin_name}: one line: {stderr}"
        );

        // A bad value in the environment.
        let (code, stderr) = run_to_exit(
            &bin,
            if bin_name == "shoal" {
                &["version"]
            } else {
                &[]
            },
            &[("SHOAL_OTLP_ENDPOINT", "ftp://x")],
        )?;
        assert_eq!(code, 2, "{bin_name} with a bad env value: {stderr}");
        assert!(stderr.contains("`otlp_endpoint`"), "{bin_name}: {stderr}");

        // An unknown key in the file.
        std::fs::write(dir.path().join("typo.toml"), "lisen = \"127.0.0.1:1\"\n")?;
        let typo = dir.path().join("typo.toml").display().to_string();
        let args: Vec<&str> = if bin_name == "shoal" {
            vec!["--cli-config", &typo, "version"]
        } else {
            vec!["--config", &typo]
        };
        let (code, stderr) = run_to_exit(&bin, &args, &[])?;
        assert_eq!(code, 2, "{bin_name} with an unknown key: {stderr}");
        assert!(stderr.contains("`lisen`"), "{bin_name}: {stderr}");
    }
    Ok(())
}
