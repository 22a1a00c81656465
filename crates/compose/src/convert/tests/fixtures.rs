//! Every fixture of ../shared/fixtures/stacks loaded and converted, its objects checked
//! by name, label, alias and reference.

use std::path::PathBuf;

use shoal_proto::v1::{endpoint_spec, service_spec};

use super::*;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/stacks")
}

fn plan(file: &str, namespace: &str) -> StackPlan {
    let path = fixtures().join(file);
    let project = crate::load(&crate::LoadOptions {
        files: vec![path.display().to_string()],
        // No variables: the files' defaults apply, whatever the test's environment.
        env: Default::default(),
        skip_interpolation: false,
    })
    .unwrap_or_else(|e| panic!("{file}: {e}"));
    convert(&project, namespace).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn service<'a>(plan: &'a StackPlan, key: &str) -> &'a ServicePlan {
    plan.services
        .iter()
        .find(|s| s.key == key)
        .unwrap_or_else(|| panic!("no service {key}"))
}

fn attachments(s: &ServicePlan) -> Vec<(String, Vec<String>)> {
    s.spec
        .task
        .as_ref()
        .unwrap()
        .networks
        .iter()
        .map(|n| (n.target.clone(), n.aliases.clone()))
        .collect()
}

fn replicas(s: &ServicePlan) -> Option<u64> {
    match s.spec.mode {
        Some(service_spec::Mode::Replicated(ref r)) => Some(r.replicas),
        _ => None,
    }
}

fn names<T>(items: &[T], name: impl Fn(&T) -> &str) -> Vec<String> {
    items.iter().map(|i| name(i).to_string()).collect()
}

#[test]

fn voting_app() {
    let p = plan("voting-app.yml", "vote");
    assert_eq!(
        names(&p.networks, |n| &n.name),
        vec!["vote_backend", "vote_frontend"]
    );
    assert!(p.networks.iter().all(|n| !n.external
        && n.spec.driver_config.as_ref().unwrap().name == "overlay"
        && n.spec.annotations.as_ref().unwrap().labels[NAMESPACE_LABEL] == "vote"));
    assert_eq!(
        names(&p.services, |s| &s.name),
        vec![
            "vote_db",
            "vote_redis",
            "vote_result",
            "vote_vote",
            "vote_worker"
        ]
    );
    let worker = service(&p, "worker");
    assert_eq!(replicas(worker), Some(2));
    assert_eq!(
        attachments(worker),
        vec![
            ("vote_backend".to_string(), vec!["worker".to_string()]),
            ("vote_frontend".to_string(), vec!["worker".to_string()]),
        ]
    );
    assert_eq!(replicas(service(&p, "redis")), Some(1));
    let vote = service(&p, "vote");
    let ports = &vote.spec.endpoint.as_ref().unwrap().ports;
    assert_eq!((ports[0].published_port, ports[0].target_port), (8080, 80));
    let db = service(&p, "db");
    let c = match db.spec.task.as_ref().unwrap().runtime.as_ref().unwrap() {
        shoal_proto::v1::task_spec::Runtime::Container(c) => c,
        _ => unreachable!(),
    };
    assert_eq!(c.mounts[0].source, "vote_db-data");
    assert_eq!(c.mounts[0].target, "/var/lib/postgresql/data");
    assert_eq!(
        c.env,
        vec!["POSTGRES_PASSWORD=postgres", "POSTGRES_USER=postgres"]
    );
    assert_eq!(
        db.spec.annotations.as_ref().unwrap().labels[IMAGE_LABEL],
        "postgres:15-alpine"
    );
}

#[test]

fn dogvscat_ghost() {
    let p = plan("dogvscat-ghost.yml", "ghost");
    let nets: Vec<(String, String, bool)> = p
        .networks
        .iter()
        .map(|n| (n.key.clone(), n.name.clone(), n.external))
        .collect();
    assert_eq!(
        nets,
        vec![
            ("ghost".to_string(), "ghost_ghost".to_string(), false),
            ("proxy".to_string(), "proxy".to_string(), true),
        ]
    );
    assert_eq!(names(&p.secrets, |s| &s.name), vec!["db-password"]);
    assert_eq!(
        p.secrets[0].spec.data,
        std::fs::read(fixtures().join("secret-ghost-db")).unwrap()
    );
    let ghost = service(&p, "ghost");
    let labels = &ghost.spec.annotations.as_ref().unwrap().labels;
    assert_eq!(
        labels["traefik.http.routers.ghost.entryPoints"],
        "websecure"
    );
    assert_eq!(labels[NAMESPACE_LABEL], "ghost");
    assert_eq!(
        attachments(ghost),
        vec![
            ("ghost_ghost".to_string(), vec!["ghost".to_string()]),
            ("proxy".to_string(), vec!["ghost".to_string()]),
        ]
    );
    let db = service(&p, "db");
    assert_eq!(
        db.spec.endpoint.as_ref().unwrap().mode,
        endpoint_spec::ResolutionMode::Dnsrr as i32
    );
    let c = match db.spec.task.as_ref().unwrap().runtime.as_ref().unwrap() {
        shoal_proto::v1::task_spec::Runtime::Container(c) => c,
        _ => unreachable!(),
    };
    assert_eq!(c.secrets.len(), 1);
    assert_eq!(c.secrets[0].secret_name, "db-password");
    assert_eq!(c.secrets[0].target, "db-password");
    assert_eq!(c.secrets[0].mode, Some(0o444));
    let opts = c.mounts[0].volume_options.as_ref().unwrap();
    assert_eq!(c.mounts[0].source, "ghost_db");
    assert_eq!(opts.driver_config.as_ref().unwrap().name, "rexray/dobs");
    assert_eq!(
        db.spec
            .task
            .as_ref()
            .unwrap()
            .log_driver
            .as_ref()
            .unwrap()
            .options["max-size"],
        "1m"
    );
    let backup = service(&p, "db-backup");
    let restart = backup.spec.task.as_ref().unwrap().restart.as_ref().unwrap();
    assert_eq!(restart.delay.unwrap().seconds, 600);
    let c = match backup.spec.task.as_ref().unwrap().runtime.as_ref().unwrap() {
        shoal_proto::v1::task_spec::Runtime::Container(c) => c,
        _ => unreachable!(),
    };
    assert_eq!(c.args[0], "sh");
    assert_eq!(c.args[1], "-c");
    assert!(c.args[2].contains("$(< $MYSQL_ROOT_PASSWORD_FILE)"));
}

#[test]

fn e2e_named_resources() {
    let p = plan("docker-cli/e2e-named-resources.yml", "named");
    assert_eq!(
        names(&p.networks, |n| &n.name),
        vec!["named-network", "named_network2"]
    );
    assert_eq!(
        names(&p.secrets, |s| &s.name),
        vec!["named-secret", "named_secret2"]
    );
    assert_eq!(
        names(&p.configs, |s| &s.name),
        vec!["named-config", "named_config2"]
    );
    let web = service(&p, "web");
    let c = match web.spec.task.as_ref().unwrap().runtime.as_ref().unwrap() {
        shoal_proto::v1::task_spec::Runtime::Container(c) => c,
        _ => unreachable!(),
    };
    assert_eq!(c.args, vec!["top"]);
    let secrets: Vec<(&str, &str)> = c
        .secrets
        .iter()
        .map(|r| (r.secret_name.as_str(), r.target.as_str()))
        .collect();
    assert_eq!(
        secrets,
        vec![("named-secret", "secret1"), ("named_secret2", "secret2")]
    );
    let configs: Vec<(&str, &str)> = c
        .configs
        .iter()
        .map(|r| (r.config_name.as_str(), r.target.as_str()))
        .collect();
    assert_eq!(
        configs,
        vec![("named-config", "config1"), ("named_config2", "config2")]
    );
    // `volumes: [volume1, volume2]` are anonymous volumes at those targets.
    let mounts: Vec<(&str, &str)> = c
        .mounts
        .iter()
        .map(|m| (m.source.as_str(), m.target.as_str()))
        .collect();
    assert_eq!(mounts, vec![("", "volume1"), ("", "volume2")]);
    assert_eq!(
        attachments(web),
        vec![
            ("named-network".to_string(), vec!["web".to_string()]),
            ("named_network2".to_string(), vec!["web".to_string()]),
        ]
    );
}

#[test]

fn every_fixture_converts() {
    for file in [
        "voting-app.yml",
        "swarmprom.yml",
        "dogvscat-ghost.yml",
        "portainer-agent-stack.yml",
        "docker-cli/e2e-named-resources.yml",
    ] {
        let p = plan(file, "fx");
        for s in &p.services {
            assert!(s.name.starts_with("fx_"), "{file}: {}", s.name);
            let labels = &s.spec.annotations.as_ref().unwrap().labels;
            assert_eq!(labels[NAMESPACE_LABEL], "fx", "{file}: {}", s.name);
            assert!(labels.contains_key(IMAGE_LABEL));
            for n in &s.spec.task.as_ref().unwrap().networks {
                assert!(
                    p.networks.iter().any(|pn| pn.name == n.target),
                    "{file}: {} attaches to unplanned {}",
                    s.name,
                    n.target
                );
            }
        }
    }
}

fn container(s: &ServicePlan) -> &shoal_proto::v1::ContainerSpec {
    match s.spec.task.as_ref().unwrap().runtime.as_ref().unwrap() {
        shoal_proto::v1::task_spec::Runtime::Container(c) => c,
        _ => unreachable!(),
    }
}

#[test]
fn swarmprom() {
    let p = plan("swarmprom.yml", "mon");
    assert_eq!(names(&p.networks, |n| &n.name), vec!["mon_net"]);
    assert!(p.networks[0].spec.attachable);
    assert_eq!(
        names(&p.configs, |c| &c.name),
        vec![
            "mon_caddy_config",
            "mon_dockerd_config",
            "mon_node_rules",
            "mon_task_rules"
        ]
    );
    assert_eq!(
        p.configs[0].spec.data,
        std::fs::read(fixtures().join("caddy/Caddyfile")).unwrap()
    );
    assert!(
        p.configs
            .iter()
            .all(|c| c.spec.annotations.as_ref().unwrap().labels[NAMESPACE_LABEL] == "mon")
    );
    // Global mode, memory in binary units.
    let exporter = service(&p, "node-exporter");
    assert!(matches!(
        exporter.spec.mode,
        Some(service_spec::Mode::Global(_))
    ));
    let r = exporter
        .spec
        .task
        .as_ref()
        .unwrap()
        .resources
        .as_ref()
        .unwrap();
    assert_eq!(r.limits.as_ref().unwrap().memory_bytes, 128 << 20);
    assert_eq!(r.reservations.as_ref().unwrap().memory_bytes, 64 << 20);
    // Templates pass through to the worker; `$$` is a literal `$`.
    let c = container(exporter);
    assert_eq!(c.env, vec!["NODE_ID={{.Node.ID}}"]);
    assert!(
        c.args.contains(
            &"--collector.filesystem.ignored-mount-points=^/(sys|proc|dev|host|etc)($|/)"
                .to_string()
        ),
        "{:?}",
        c.args
    );
    // Defaults of `${VAR:-default}`.
    let grafana = container(service(&p, "grafana"));
    assert!(
        grafana
            .env
            .contains(&"GF_SECURITY_ADMIN_USER=admin".to_string())
    );
    // Configs at absolute targets, by the config's real name, ids left to the CLI.
    let prom = container(service(&p, "prometheus"));
    let refs: Vec<(&str, &str, &str)> = prom
        .configs
        .iter()
        .map(|r| {
            (
                r.config_name.as_str(),
                r.target.as_str(),
                r.config_id.as_str(),
            )
        })
        .collect();
    assert_eq!(
        refs,
        vec![
            ("mon_node_rules", "/etc/prometheus/swarm_node.rules.yml", ""),
            ("mon_task_rules", "/etc/prometheus/swarm_task.rules.yml", ""),
        ]
    );
    assert!(
        prom.args
            .contains(&"--storage.tsdb.retention=24h".to_string())
    );
    let caddy = service(&p, "caddy");
    let h = container(caddy).healthcheck.as_ref().unwrap();
    assert_eq!(h.test, vec!["CMD", "curl", "-f", "http://localhost:3000"]);
    assert_eq!((h.interval.unwrap().seconds, h.retries), (5, 5));
    let published: Vec<u32> = caddy
        .spec
        .endpoint
        .as_ref()
        .unwrap()
        .ports
        .iter()
        .map(|p| p.published_port)
        .collect();
    assert_eq!(published, vec![3000, 9090, 9093, 9094]);
    let placement = caddy
        .spec
        .task
        .as_ref()
        .unwrap()
        .placement
        .as_ref()
        .unwrap();
    assert_eq!(placement.constraints, vec!["node.role == manager"]);
    // Binds stay binds, read-only where `:ro`.
    let cadvisor = container(service(&p, "cadvisor"));
    assert_eq!(cadvisor.mounts[0].source, "/var/run/docker.sock");
    assert!(cadvisor.mounts[0].read_only);
    assert_eq!(
        cadvisor.mounts[0].r#type,
        shoal_proto::v1::mount::Type::Bind as i32
    );
    assert_eq!(
        attachments(service(&p, "unsee")),
        vec![("mon_net".to_string(), vec!["unsee".to_string()])]
    );
}

#[test]
fn portainer_agent_stack() {
    let p = plan("portainer-agent-stack.yml", "portainer");
    assert_eq!(
        names(&p.networks, |n| &n.name),
        vec!["portainer_agent_network"]
    );
    let agent = service(&p, "agent");
    assert_eq!(agent.name, "portainer_agent");
    assert!(matches!(
        agent.spec.mode,
        Some(service_spec::Mode::Global(_))
    ));
    // `tasks.agent` resolves because the compose key is an alias on the network.
    assert_eq!(
        attachments(agent),
        vec![(
            "portainer_agent_network".to_string(),
            vec!["agent".to_string()]
        )]
    );
    assert_eq!(container(agent).env, vec!["AGENT_CLUSTER_ADDR=tasks.agent"]);
    assert_eq!(
        agent
            .spec
            .task
            .as_ref()
            .unwrap()
            .placement
            .as_ref()
            .unwrap()
            .constraints,
        vec!["node.platform.os == linux"]
    );
    let portainer = service(&p, "portainer");
    assert_eq!(
        container(portainer).args,
        vec!["-H", "tcp://tasks.agent:9001", "--tlsskipverify"]
    );
    assert_eq!(
        container(portainer).mounts[0].source,
        "portainer_portainer_data"
    );
    let ports: Vec<(u32, u32)> = portainer
        .spec
        .endpoint
        .as_ref()
        .unwrap()
        .ports
        .iter()
        .map(|p| (p.published_port, p.target_port))
        .collect();
    assert_eq!(ports, vec![(8000, 8000), (9000, 9000)]);
}
