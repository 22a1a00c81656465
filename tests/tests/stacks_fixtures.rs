//! `shoal stack` with the fixtures stacks.rs does not deploy: swarmprom (configs at
//! absolute targets, global mode, memory in bytes, healthcheck, `{{.Node.ID}}` expanded
//! in the running container), portainer's agent stack (global on the Linux nodes,
//! `tasks.agent` answered by shoal-dns), seed 002's wordpress stack (docker's output,
//! placement on the manager, ports, `stack rm` keeping the volume), `stack config`
//! against docker's, and the voting-app deploy-to-converged figure. Every image is a
//! local stub (see `shoal_scenarios::stub_images`): nothing is pulled.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use shoal_proto::v1::{
    ListConfigsRequest, ListNetworksRequest, Service, Task, service_spec, task_status,
};
use shoal_scenarios::dns_query::dns_a;
use shoal_scenarios::stack_objects::*;
use shoal_scenarios::{
    Stack, StackOptions, docker, no_stack_containers, remove_stack_leftovers, stub_images,
};
use shoal_testkit::docker::docker_available;
use shoal_testkit::wait_for;

const DEADLINE: Duration = Duration::from_secs(90);
/// This scenario's stacks (their leftovers are removed by namespace).
const STACKS: &[&str] = &["mon", "port", "wordpress_stack", "votefig"];
/// The address pool of this scenario's cluster (stacks.rs has 10.161.0.0/16).
const POOL: &str = "10.162.0.0/16";
/// The named volumes Docker creates for these stacks' tasks.
const VOLUMES: &[&str] = &[
    "mon_grafana",
    "mon_alertmanager",
    "mon_prometheus",
    "port_portainer_data",
    "wordpress_stack_db-data",
    "votefig_db-data",
];
const MIB: i64 = 1024 * 1024;

/// The seed 002 compose file (seeds/002, "部署服务： docker-compose"), as the tutorial
/// has it.
const WORDPRESS: &str = r#"version: "3"

services:
  wordpress:
    image: wordpress
    ports:
      - 80:80
    networks:
      - overlay
    environment:
      WORDPRESS_DB_HOST: db:3306
      WORDPRESS_DB_USER: wordpress
      WORDPRESS_DB_PASSWORD: wordpress
    deploy:
      mode: replicated
      replicas: 3

  db:
    image: mysql
    networks:
      - overlay
    volumes:
      - db-data:/var/lib/mysql
    environment:
      MYSQL_ROOT_PASSWORD: somewordpress
      MYSQL_DATABASE: wordpress
      MYSQL_USER: wordpress
      MYSQL_PASSWORD: wordpress
    deploy:
      placement:
        constraints: [node.role == manager]

  visualizer:
    image: dockersamples/visualizer:stable
    ports:
      - "8080:8080"
    stop_grace_period: 1m30s
    volumes:
      - "/var/run/docker.sock:/var/run/docker.sock"
    deploy:
      placement:
        constraints: [node.role == manager]

volumes:
  db-data:
networks:
  overlay:
"#;

/// What a user exports before deploying swarmprom (its README's way).
const SWARMPROM_ENV: &[(&str, &str)] = &[
    ("ADMIN_USER", "admin"),
    ("ADMIN_PASSWORD", "s3cr3t-admin"),
    ("SLACK_URL", "https://hooks.slack.com/services/SHOAL"),
    ("SLACK_CHANNEL", "shoal-alerts"),
    ("SLACK_USER", "shoal"),
];

fn is_global(s: &Service) -> bool {
    matches!(
        s.spec.as_ref().and_then(|s| s.mode.as_ref()),
        Some(service_spec::Mode::Global(_))
    )
}

/// (limit, reservation) of memory in bytes.
fn memory(s: &Service) -> (i64, i64) {
    let r = task_spec_of(s).resources.unwrap_or_default();
    (
        r.limits.map(|l| l.memory_bytes).unwrap_or(0),
        r.reservations.map(|l| l.memory_bytes).unwrap_or(0),
    )
}

fn constraints(s: &Service) -> Vec<String> {
    task_spec_of(s)
        .placement
        .map(|p| p.constraints)
        .unwrap_or_default()
}

/// `deploy` output in docker's order: every `Creating network` line before every
/// `Creating service` line; each group compared as a set.
fn assert_networks_then_services(out: &str, nets: &[&str], svcs: &[&str]) {
    let all: Vec<&str> = out.lines().collect();
    let (n, s) = all.split_at(nets.len().min(all.len()));
    assert_eq!(
        n.iter().map(|l| l.to_string()).collect::<BTreeSet<_>>(),
        nets.iter()
            .map(|x| format!("Creating network {x}"))
            .collect::<BTreeSet<_>>(),
        "{out}"
    );
    let svc_lines: BTreeSet<String> = s
        .iter()
        .filter(|l| l.starts_with("Creating service "))
        .map(|l| l.to_string())
        .collect();
    assert_eq!(
        svc_lines,
        svcs.iter()
            .map(|x| format!("Creating service {x}"))
            .collect::<BTreeSet<_>>(),
        "{out}"
    );
}

fn container_id(t: &Task) -> Option<String> {
    match t.status.as_ref()?.runtime_status.as_ref()? {
        task_status::RuntimeStatus::Container(c) => Some(c.container_id.clone()),
        _ => None,
    }
}

fn ip_of(cidr: &str) -> Option<Ipv4Addr> {
    cidr.split('/').next()?.parse().ok()
}

/// `shoal stack config -c file` equals `docker stack config -c file` (docker's CLI works
/// client-side, no swarm); skipped with a notice when that CLI is absent or refuses.
async fn compare_config(stack: &Stack, file: &str, env: &[(&str, &str)]) -> anyhow::Result<()> {
    let docker_cli = "/usr/local/bin/docker";
    let theirs = std::process::Command::new(docker_cli)
        .args(["stack", "config", "-c", file])
        .envs(env.iter().copied())
        .output();
    let theirs = match theirs {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => {
            eprintln!(
                "NOTICE: docker stack config failed for {file}, not compared: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return Ok(());
        }
        Err(e) => {
            eprintln!("NOTICE: no {docker_cli} ({e}); stack config not compared for {file}");
            return Ok(());
        }
    };
    let ours = stack.cli_env(env, &["stack", "config", "-c", file]).await?;
    assert_eq!(ours.code, 0, "{ours:?}");
    assert_eq!(ours.stdout, theirs, "stack config of {file}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stacks_swarmprom_portainer_wordpress() -> anyhow::Result<()> {
    if !docker_available() {
        eprintln!("NOTICE: no Docker engine answers; the stack fixtures scenario is skipped");
        return Ok(());
    }
    stub_images(&[
        "stefanprodan/caddy",
        "google/cadvisor",
        "stefanprodan/swarmprom-grafana:5.3.4",
        "stefanprodan/swarmprom-alertmanager:v0.14.0",
        "cloudflare/unsee:v0.8.0",
        "stefanprodan/swarmprom-node-exporter:v0.16.0",
        "stefanprodan/swarmprom-prometheus:v2.5.0",
        "portainer/agent",
        "portainer/portainer",
        "wordpress",
        "mysql",
        "dockersamples/visualizer:stable",
        "redis:alpine",
        "postgres:15-alpine",
        "dockersamples/examplevotingapp_vote",
        "dockersamples/examplevotingapp_result",
        "dockersamples/examplevotingapp_worker",
    ])?;
    remove_stack_leftovers(STACKS, POOL)?;
    for v in VOLUMES {
        let _ = docker(&["volume", "rm", v]);
    }
    let infra = shoal_testkit::Infra::start().await?;
    let mut stack = Stack::start(
        &infra,
        StackOptions {
            workers: 2,
            dns: true,
            worker_subnet: 72,
            default_addr_pool: vec![POOL.into()],
            ..Default::default()
        },
    )
    .await?;
    // The manager's node runs tasks too (the fixtures pin services to the manager).
    let manager_node = stack.add_manager_worker(&infra, "").await?;
    let mut control = stack.control().await?;
    let scratch = tempfile::tempdir()?;

    // ---- stack config equals docker's, for each file.
    let wordpress = scratch.path().join("docker-compose.yml");
    std::fs::write(&wordpress, WORDPRESS)?;
    let wordpress = wordpress.display().to_string();
    compare_config(&stack, &fixture("swarmprom.yml"), SWARMPROM_ENV).await?;
    compare_config(&stack, &fixture("portainer-agent-stack.yml"), &[]).await?;
    compare_config(&stack, &wordpress, &[]).await?;

    // ---- voting-app with --detach=false: the deploy-to-converged figure.
    let started = Instant::now();
    let out = stack
        .cli(&[
            "stack",
            "deploy",
            "--detach=false",
            "-c",
            &fixture("voting-app.yml"),
            "votefig",
        ])
        .await?;
    let elapsed = started.elapsed();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout.matches("verify: Service converged").count(),
        5,
        "{out:?}"
    );
    for (name, n) in [
        ("votefig_db", 1),
        ("votefig_redis", 1),
        ("votefig_result", 1),
        ("votefig_vote", 2),
        ("votefig_worker", 2),
    ] {
        assert_eq!(stack.running(name).await?.len(), n, "{name}");
    }
    println!(
        "FIGURE voting-app stack deploy to all services converged: {:.2} s",
        elapsed.as_secs_f64()
    );
    stack
        .cli_ok(&["stack", "rm", "--detach=false", "votefig"])
        .await?;

    // ---- swarmprom.
    let out = stack
        .cli_env(
            SWARMPROM_ENV,
            &["stack", "deploy", "-c", &fixture("swarmprom.yml"), "mon"],
        )
        .await?;
    assert_eq!(out.code, 0, "{out:?}");
    let svc_names = [
        "mon_alertmanager",
        "mon_caddy",
        "mon_cadvisor",
        "mon_dockerd-exporter",
        "mon_grafana",
        "mon_node-exporter",
        "mon_prometheus",
        "mon_unsee",
    ];
    let mut expected: Vec<String> = vec!["Creating network mon_net".into()];
    expected.extend(
        ["caddy_config", "dockerd_config", "node_rules", "task_rules"]
            .iter()
            .map(|c| format!("Creating config mon_{c}")),
    );
    expected.extend(svc_names.iter().map(|s| format!("Creating service {s}")));
    assert_eq!(
        lines(&out.stdout),
        expected.iter().cloned().collect::<BTreeSet<_>>(),
        "{out:?}"
    );
    assert!(
        out.stdout.starts_with("Creating network mon_net\n"),
        "{out:?}"
    );
    // The network: an attachable overlay, labelled with the stack.
    let nets = control
        .list_networks(ListNetworksRequest {
            filters: Some(by_label("mon")),
        })
        .await?
        .into_inner()
        .networks;
    assert_eq!(nets.len(), 1);
    let net_spec = nets[0].spec.as_ref().unwrap();
    assert_eq!(net_spec.annotations.as_ref().unwrap().name, "mon_net");
    assert_eq!(net_spec.driver_config.as_ref().unwrap().name, "overlay");
    assert!(net_spec.attachable, "mon_net is attachable");
    // The configs hold the support files' bytes.
    let configs = control
        .list_configs(ListConfigsRequest {
            filters: Some(by_label("mon")),
        })
        .await?
        .into_inner()
        .configs;
    let config_ids: HashMap<String, String> = configs
        .iter()
        .map(|c| {
            let spec = c.spec.as_ref().unwrap();
            (
                spec.annotations.as_ref().unwrap().name.clone(),
                id_of(c.meta.as_ref()),
            )
        })
        .collect();
    for (name, file) in [
        ("mon_caddy_config", "caddy/Caddyfile"),
        ("mon_dockerd_config", "dockerd-exporter/Caddyfile"),
        ("mon_node_rules", "prometheus/rules/swarm_node.rules.yml"),
        ("mon_task_rules", "prometheus/rules/swarm_task.rules.yml"),
    ] {
        let c = configs
            .iter()
            .find(|c| c.spec.as_ref().unwrap().annotations.as_ref().unwrap().name == name)
            .unwrap_or_else(|| panic!("no config {name}"));
        assert_eq!(
            c.spec.as_ref().unwrap().data,
            std::fs::read(fixtures().join(file))?,
            "{name}"
        );
    }
    let all = services(&mut control, "mon").await?;
    assert_eq!(all.len(), 8);
    let ids_to_names = network_names(&mut control).await?;
    for s in &all {
        let name = name_of(s);
        let key = name.strip_prefix("mon_").unwrap();
        let labels = &s
            .spec
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()
            .labels;
        assert_eq!(labels.get(NAMESPACE).map(String::as_str), Some("mon"));
        let c = container(s);
        assert_eq!(
            labels.get("com.docker.stack.image"),
            Some(&c.image),
            "{name}"
        );
        assert_eq!(c.labels.get(NAMESPACE).map(String::as_str), Some("mon"));
        assert_eq!(
            attachments(s, &ids_to_names),
            vec![("mon_net".to_string(), vec![key.to_string()])],
            "{name}: aliased by its compose key"
        );
        let global = ["cadvisor", "dockerd-exporter", "node-exporter"].contains(&key);
        assert_eq!(is_global(s), global, "{name}");
        if !global {
            assert_eq!(replicas(s), Some(1), "{name}");
        }
        let want = match key {
            "unsee" => (0, 0),
            "prometheus" => (2048 * MIB, 128 * MIB),
            _ => (128 * MIB, 64 * MIB),
        };
        assert_eq!(memory(s), want, "{name}");
        let on_manager = ["grafana", "alertmanager", "prometheus", "caddy"].contains(&key);
        assert_eq!(
            constraints(s),
            if on_manager {
                vec!["node.role == manager".to_string()]
            } else {
                Vec::new()
            },
            "{name}"
        );
    }
    // Configs at absolute targets.
    let targets = |s: &Service| -> Vec<(String, String, String)> {
        let mut t: Vec<_> = container(s)
            .configs
            .iter()
            .map(|r| (r.config_name.clone(), r.config_id.clone(), r.target.clone()))
            .collect();
        t.sort();
        t
    };
    assert_eq!(
        targets(service(&all, "mon_dockerd-exporter")),
        vec![(
            "mon_dockerd_config".into(),
            config_ids["mon_dockerd_config"].clone(),
            "/etc/caddy/Caddyfile".into()
        )]
    );
    assert_eq!(
        targets(service(&all, "mon_caddy")),
        vec![(
            "mon_caddy_config".into(),
            config_ids["mon_caddy_config"].clone(),
            "/etc/caddy/Caddyfile".into()
        )]
    );
    assert_eq!(
        targets(service(&all, "mon_prometheus")),
        vec![
            (
                "mon_node_rules".into(),
                config_ids["mon_node_rules"].clone(),
                "/etc/prometheus/swarm_node.rules.yml".into()
            ),
            (
                "mon_task_rules".into(),
                config_ids["mon_task_rules"].clone(),
                "/etc/prometheus/swarm_task.rules.yml".into()
            ),
        ]
    );
    // The healthcheck, durations in the spec.
    let hc = container(service(&all, "mon_caddy")).healthcheck.unwrap();
    assert_eq!(hc.test, vec!["CMD", "curl", "-f", "http://localhost:3000"]);
    assert_eq!(hc.interval.map(|d| d.seconds), Some(5));
    assert_eq!(hc.timeout.map(|d| d.seconds), Some(1));
    assert_eq!(hc.retries, 5);
    // Interpolation from the process env, `$$` kept as `$`, the template kept.
    let caddy_env = container(service(&all, "mon_caddy")).env;
    assert!(
        caddy_env.contains(&"ADMIN_PASSWORD=s3cr3t-admin".to_string()),
        "{caddy_env:?}"
    );
    let alert_env = container(service(&all, "mon_alertmanager")).env;
    assert!(
        alert_env.contains(&"SLACK_CHANNEL=shoal-alerts".to_string()),
        "{alert_env:?}"
    );
    let node_exporter = container(service(&all, "mon_node-exporter"));
    assert_eq!(node_exporter.env, vec!["NODE_ID={{.Node.ID}}"]);
    assert!(
        node_exporter.args.contains(
            &"--collector.filesystem.ignored-mount-points=^/(sys|proc|dev|host|etc)($|/)"
                .to_string()
        ),
        "{:?}",
        node_exporter.args
    );
    // Global services run one task on every node; the template is expanded per node.
    let nodes: BTreeSet<String> = stack.node_ids().into_iter().collect();
    assert_eq!(nodes.len(), 3);
    for name in ["mon_node-exporter", "mon_dockerd-exporter", "mon_cadvisor"] {
        let ts = stack.wait_running(name, 3).await?;
        let on: BTreeSet<String> = ts.iter().map(|t| t.node_id.clone()).collect();
        assert_eq!(on, nodes, "{name}: one task per node");
    }
    for t in stack.running("mon_node-exporter").await? {
        let cid = container_id(&t).expect("a container task has its container id");
        let env = docker(&["inspect", "-f", "{{json .Config.Env}}", &cid])?;
        assert!(
            env.contains(&format!("\"NODE_ID={}\"", t.node_id)),
            "node-exporter on {}: {env}",
            t.node_id
        );
        let exec = docker(&["exec", &cid, "env"])?;
        assert!(
            exec.lines().any(|l| l == format!("NODE_ID={}", t.node_id)),
            "{exec}"
        );
    }
    // The config file is in the running container at its absolute target.
    let want = std::fs::read_to_string(fixtures().join("dockerd-exporter/Caddyfile"))?;
    for t in stack.running("mon_dockerd-exporter").await? {
        let cid = container_id(&t).unwrap();
        let got = docker(&["exec", &cid, "cat", "/etc/caddy/Caddyfile"])?;
        assert_eq!(got, want.trim_end(), "on {}", t.node_id);
    }
    // The manager-pinned services land on the manager's node.
    for name in ["mon_grafana", "mon_alertmanager", "mon_prometheus"] {
        let ts = stack.wait_running(name, 1).await?;
        assert_eq!(ts[0].node_id, manager_node, "{name}");
    }
    let out = stack
        .cli_ok(&["stack", "rm", "--detach=false", "mon"])
        .await?;
    assert!(out.ends_with("Removing network mon_net\n"), "{out}");
    assert!(out.contains("Removing config mon_caddy_config\n"), "{out}");

    // ---- portainer's agent stack, tasks.agent through shoal-dns.
    let out = stack
        .cli(&[
            "stack",
            "deploy",
            "-c",
            &fixture("portainer-agent-stack.yml"),
            "port",
        ])
        .await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert_networks_then_services(
        &out.stdout,
        &["port_agent_network"],
        &["port_agent", "port_portainer"],
    );
    let all = services(&mut control, "port").await?;
    let ids_to_names = network_names(&mut control).await?;
    let agent = service(&all, "port_agent");
    assert!(is_global(agent));
    assert_eq!(constraints(agent), vec!["node.platform.os == linux"]);
    assert_eq!(container(agent).env, vec!["AGENT_CLUSTER_ADDR=tasks.agent"]);
    assert_eq!(
        attachments(agent, &ids_to_names),
        vec![("port_agent_network".to_string(), vec!["agent".to_string()])]
    );
    let portainer = service(&all, "port_portainer");
    assert_eq!(
        container(portainer).args,
        vec!["-H", "tcp://tasks.agent:9001", "--tlsskipverify"]
    );
    // Every node is Linux: the agent runs on all three.
    let agents = stack.wait_running("port_agent", 3).await?;
    let on: BTreeSet<String> = agents.iter().map(|t| t.node_id.clone()).collect();
    assert_eq!(on, nodes);
    let p = stack.wait_running("port_portainer", 1).await?;
    assert_eq!(p[0].node_id, manager_node);
    let agent_net = ids_to_names
        .iter()
        .find(|(_, n)| n.as_str() == "port_agent_network")
        .map(|(id, _)| id.clone())
        .unwrap();
    let agent_addrs: BTreeSet<Ipv4Addr> = agents
        .iter()
        .filter_map(|t| {
            t.networks
                .iter()
                .find(|a| {
                    a.network
                        .as_ref()
                        .and_then(|n| n.meta.as_ref())
                        .map(|m| m.id.as_str())
                        == Some(agent_net.as_str())
                })
                .and_then(|a| a.addresses.first())
                .and_then(|a| ip_of(a))
        })
        .collect();
    assert_eq!(agent_addrs.len(), 3, "{agents:?}");
    let dns = stack.dns_addr().expect("the stack runs shoal-dns");
    wait_for("tasks.agent to hold the 3 agents", DEADLINE, || async {
        let (code, addrs) = dns_a(dns, IpAddr::V4(Ipv4Addr::LOCALHOST), "tasks.agent")
            .await
            .ok()?;
        (code == ResponseCode::NoError && addrs == agent_addrs).then_some(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}; tasks.agent should be {agent_addrs:?}"))?;
    stack
        .cli_ok(&["stack", "rm", "--detach=false", "port"])
        .await?;

    // ---- seed 002: the wordpress stack, as the tutorial runs it.
    // The file is the tutorial's `docker-compose.yml` (a path to it: the harness
    // runs the CLI from the test's directory).
    let out = stack
        .cli(&["stack", "deploy", "-c", &wordpress, "wordpress_stack"])
        .await?;
    assert_eq!(out.code, 0, "{out:?}");
    let want: Vec<&str> = vec![
        "Creating network wordpress_stack_overlay",
        "Creating network wordpress_stack_default",
        "Creating service wordpress_stack_wordpress",
        "Creating service wordpress_stack_db",
        "Creating service wordpress_stack_visualizer",
    ];
    assert_eq!(out.stdout.lines().count(), want.len(), "{out:?}");
    assert_networks_then_services(
        &out.stdout,
        &["wordpress_stack_overlay", "wordpress_stack_default"],
        &[
            "wordpress_stack_wordpress",
            "wordpress_stack_db",
            "wordpress_stack_visualizer",
        ],
    );
    assert_eq!(lines(&out.stdout), set(&want));
    let out = stack.cli_ok(&["stack", "ls"]).await?;
    assert!(out.lines().any(|l| l == "wordpress_stack   3"), "{out}");
    stack.wait_running("wordpress_stack_wordpress", 3).await?;
    for name in ["wordpress_stack_db", "wordpress_stack_visualizer"] {
        let ts = stack.wait_running(name, 1).await?;
        assert_eq!(ts[0].node_id, manager_node, "{name} on the manager");
    }
    let out = stack
        .cli_ok(&["stack", "services", "wordpress_stack"])
        .await?;
    let row = |name: &str| -> String {
        out.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no row {name}: {out}"))
            .to_string()
    };
    let wp = row("wordpress_stack_wordpress");
    assert!(
        wp.contains("replicated") && wp.contains("3/3") && wp.contains("*:80->80/tcp"),
        "{wp}"
    );
    let db = row("wordpress_stack_db");
    assert!(db.contains("replicated") && db.contains("1/1"), "{db}");
    let vis = row("wordpress_stack_visualizer");
    assert!(
        vis.contains("replicated") && vis.contains("1/1") && vis.contains("*:8080->8080/tcp"),
        "{vis}"
    );
    // The db's named volume exists in the engine of the manager's node.
    wait_for("the db volume", DEADLINE, || async {
        docker(&["volume", "inspect", "wordpress_stack_db-data"]).ok()
    })
    .await?;
    let out = stack
        .cli_ok(&["stack", "rm", "--detach=false", "wordpress_stack"])
        .await?;
    assert_eq!(
        out,
        "Removing service wordpress_stack_db\nRemoving service wordpress_stack_visualizer\n\
         Removing service wordpress_stack_wordpress\n\
         Removing network wordpress_stack_default\nRemoving network wordpress_stack_overlay\n"
    );
    assert!(services(&mut control, "wordpress_stack").await?.is_empty());
    wait_for("the stacks' containers to go", DEADLINE, || async {
        no_stack_containers(STACKS).then_some(())
    })
    .await?;
    // Volumes are never removed by `stack rm`.
    docker(&["volume", "inspect", "wordpress_stack_db-data"])?;
    let out = stack.cli_ok(&["stack", "ls"]).await?;
    assert_eq!(out, "NAME      SERVICES\n");

    drop(control);
    drop(stack);
    remove_stack_leftovers(STACKS, POOL)?;
    for v in VOLUMES {
        let _ = docker(&["volume", "rm", v]);
    }
    Ok(())
}
