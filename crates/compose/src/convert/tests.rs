//! The converter against the reference's statements (stacks-secrets.md §4), on
//! projects built by hand; `fixtures` converts the real compose files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use shoal_proto::v1::{
    ServiceSpec, endpoint_spec, mount, port_config, restart_policy, service_spec, task_spec,
};

use super::*;
use crate::model::*;

fn project(services: Vec<(&str, ServiceConfig)>) -> Project {
    Project {
        version: "3.13".into(),
        working_dir: PathBuf::from("/tmp"),
        services: services
            .into_iter()
            .map(|(k, mut s)| {
                s.name = k.to_string();
                (k.to_string(), s)
            })
            .collect(),
        networks: BTreeMap::new(),
        volumes: BTreeMap::new(),
        secrets: BTreeMap::new(),
        configs: BTreeMap::new(),
        extras: BTreeMap::new(),
        load_warnings: Vec::new(),
    }
}

fn svc(image: &str) -> ServiceConfig {
    ServiceConfig {
        image: Some(image.into()),
        ..Default::default()
    }
}

fn container(spec: &ServiceSpec) -> &shoal_proto::v1::ContainerSpec {
    match spec.task.as_ref().and_then(|t| t.runtime.as_ref()) {
        Some(task_spec::Runtime::Container(c)) => c,
        other => panic!("not a container runtime: {other:?}"),
    }
}

fn only_service(p: &Project) -> ServiceSpec {
    let plan = convert(p, "st").unwrap();
    assert_eq!(plan.services.len(), 1);
    plan.services[0].spec.clone()
}

fn err(p: &Project) -> String {
    convert(p, "st").unwrap_err().to_string()
}

#[test]
fn names_and_labels_are_scoped_and_stamped() {
    let mut web = svc("nginx:alpine");
    web.labels.insert("c".into(), "1".into());
    web.deploy = Some(DeployConfig {
        labels: [("s".to_string(), "2".to_string())].into(),
        ..Default::default()
    });
    let plan = convert(&project(vec![("web", web)]), "st").unwrap();
    let s = &plan.services[0];
    assert_eq!((s.key.as_str(), s.name.as_str()), ("web", "st_web"));
    let a = s.spec.annotations.as_ref().unwrap();
    assert_eq!(a.name, "st_web");
    assert_eq!(
        a.labels.get(NAMESPACE_LABEL).map(String::as_str),
        Some("st")
    );
    assert_eq!(
        a.labels.get(IMAGE_LABEL).map(String::as_str),
        Some("nginx:alpine")
    );
    assert_eq!(a.labels.get("s").map(String::as_str), Some("2"));
    assert!(!a.labels.contains_key("c"));
    let c = container(&s.spec);
    assert_eq!(
        c.labels.get(NAMESPACE_LABEL).map(String::as_str),
        Some("st")
    );
    assert_eq!(c.labels.get("c").map(String::as_str), Some("1"));
    assert!(!c.labels.contains_key("s"));
    assert!(!c.labels.contains_key(IMAGE_LABEL));
    // Replicas left out means 1.
    assert_eq!(
        s.spec.mode,
        Some(service_spec::Mode::Replicated(
            shoal_proto::v1::ReplicatedService { replicas: 1 }
        ))
    );
}

#[test]
fn a_service_without_networks_joins_the_default_overlay_with_its_key_as_alias() {
    let p = project(vec![("web", svc("nginx"))]);
    let plan = convert(&p, "st").unwrap();
    assert_eq!(plan.networks.len(), 1);
    let n = &plan.networks[0];
    assert_eq!(
        (n.key.as_str(), n.name.as_str(), n.external),
        ("default", "st_default", false)
    );
    assert_eq!(n.spec.driver_config.as_ref().unwrap().name, "overlay");
    assert_eq!(
        n.spec
            .annotations
            .as_ref()
            .unwrap()
            .labels
            .get(NAMESPACE_LABEL),
        Some(&"st".to_string())
    );
    let nets = &plan.services[0].spec.task.as_ref().unwrap().networks;
    assert_eq!(nets.len(), 1);
    assert_eq!(nets[0].target, "st_default");
    assert_eq!(nets[0].aliases, vec!["web".to_string()]);
}

#[test]
fn only_used_networks_are_planned_and_names_and_externals_are_respected() {
    let mut web = svc("nginx");
    web.networks.insert("front".into(), None);
    web.networks.insert(
        "back".into(),
        Some(ServiceNetworkConfig {
            aliases: vec!["db-alias".into()],
            ..Default::default()
        }),
    );
    web.networks.insert("public".into(), None);
    web.networks.insert("hostnet".into(), None);
    let mut p = project(vec![("web", web)]);
    p.networks.insert("front".into(), NetworkConfig::default());
    p.networks.insert(
        "back".into(),
        NetworkConfig {
            name: Some("zz-back".into()),
            driver: Some("overlay".into()),
            attachable: true,
            ..Default::default()
        },
    );
    p.networks.insert(
        "public".into(),
        NetworkConfig {
            external: true,
            name: Some("public".into()),
            ..Default::default()
        },
    );
    p.networks.insert(
        "hostnet".into(),
        NetworkConfig {
            external: true,
            name: Some("host".into()),
            ..Default::default()
        },
    );
    p.networks.insert("unused".into(), NetworkConfig::default());
    let plan = convert(&p, "st").unwrap();
    let names: Vec<(&str, &str, bool)> = plan
        .networks
        .iter()
        .map(|n| (n.key.as_str(), n.name.as_str(), n.external))
        .collect();
    assert_eq!(
        names,
        vec![
            ("back", "zz-back", false),
            ("front", "st_front", false),
            ("hostnet", "host", true),
            ("public", "public", true),
        ]
    );
    assert!(plan.networks[0].spec.attachable);
    let nets = &plan.services[0].spec.task.as_ref().unwrap().networks;
    let got: Vec<(&str, Vec<String>)> = nets
        .iter()
        .map(|n| (n.target.as_str(), n.aliases.clone()))
        .collect();
    // Sorted by target name; no alias on a builtin network.
    assert_eq!(
        got,
        vec![
            ("host", vec![]),
            ("public", vec!["web".to_string()]),
            ("st_front", vec!["web".to_string()]),
            ("zz-back", vec!["db-alias".to_string(), "web".to_string()]),
        ]
    );
}

#[test]
fn an_undefined_network_is_refused_in_dockers_words() {
    let mut web = svc("nginx");
    web.networks.insert("foo".into(), None);
    assert_eq!(
        err(&project(vec![("web", web)])),
        "service web: undefined network \"foo\""
    );
}

#[test]
fn images_are_checked() {
    let p = project(vec![("web", ServiceConfig::default())]);
    assert_eq!(
        err(&p),
        "invalid image reference for service web: no image specified"
    );
    let p = project(vec![("web", svc("Nginx Latest"))]);
    assert!(
        err(&p).starts_with("invalid image reference for service web: invalid reference format")
    );
    for ok in [
        "nginx",
        "localhost:5000/a/b:tag",
        "dockersamples/examplevotingapp_vote:before",
        "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        convert(&project(vec![("web", svc(ok))]), "st").unwrap();
    }
}

#[test]
fn blank_stack_names_are_refused() {
    assert_eq!(
        convert(&project(vec![("web", svc("a"))]), "  ")
            .unwrap_err()
            .to_string(),
        "invalid stack name: \"  \""
    );
}

#[test]
fn environment_command_entrypoint_and_container_options() {
    let mut web = svc("nginx");
    web.environment = [
        ("A".to_string(), Some("1".to_string())),
        ("A1".to_string(), Some("x".to_string())),
        ("BARE".to_string(), None),
    ]
    .into();
    web.command = Some(vec!["run".into(), "--fast".into()]);
    web.entrypoint = Some(vec!["/bin/sh".into(), "-c".into()]);
    web.extra_hosts = vec!["somehost:162.242.195.82".into(), "v6:::1".into()];
    web.dns = vec!["8.8.8.8".into()];
    web.dns_search = vec!["example.com".into()];
    web.ulimits = [
        ("nproc".to_string(), UlimitsConfig::Single(65535)),
        (
            "nofile".to_string(),
            UlimitsConfig::SoftHard {
                soft: 20000,
                hard: 40000,
            },
        ),
    ]
    .into();
    web.stop_grace_period = Some(Duration::from_millis(1500));
    web.init = Some(true);
    web.read_only = true;
    web.tty = true;
    web.stdin_open = true;
    web.cap_add = vec!["NET_ADMIN".into()];
    web.logging = Some(LoggingConfig {
        driver: Some("json-file".into()),
        options: [("max-size".to_string(), "1m".to_string())].into(),
    });
    let spec = only_service(&project(vec![("web", web)]));
    let c = container(&spec);
    assert_eq!(c.env, vec!["A1=x", "A=1", "BARE"]);
    assert_eq!(c.args, vec!["run", "--fast"]);
    assert_eq!(c.command, vec!["/bin/sh", "-c"]);
    assert_eq!(c.hosts, vec!["162.242.195.82 somehost", "::1 v6"]);
    let dns = c.dns_config.as_ref().unwrap();
    assert_eq!(dns.nameservers, vec!["8.8.8.8"]);
    assert_eq!(dns.search, vec!["example.com"]);
    let ul: Vec<(&str, i64, i64)> = c
        .ulimits
        .iter()
        .map(|u| (u.name.as_str(), u.soft, u.hard))
        .collect();
    assert_eq!(ul, vec![("nofile", 20000, 40000), ("nproc", 65535, 65535)]);
    assert_eq!(
        c.stop_grace_period,
        Some(prost_types::Duration {
            seconds: 1,
            nanos: 500_000_000
        })
    );
    assert_eq!(c.init, Some(true));
    assert!(c.read_only && c.tty && c.open_stdin);
    assert_eq!(c.capability_add, vec!["NET_ADMIN"]);
    let log = spec.task.as_ref().unwrap().log_driver.as_ref().unwrap();
    assert_eq!(log.name, "json-file");
    assert_eq!(log.options.get("max-size").map(String::as_str), Some("1m"));
}

#[test]
fn healthchecks() {
    let mut web = svc("nginx");
    web.healthcheck = Some(HealthCheckConfig {
        test: vec!["CMD-SHELL".into(), "curl -f localhost".into()],
        interval: Some(Duration::from_secs(30)),
        retries: Some(3),
        ..Default::default()
    });
    let spec = only_service(&project(vec![("web", web.clone())]));
    let h = container(&spec).healthcheck.clone().unwrap();
    assert_eq!(h.test, vec!["CMD-SHELL", "curl -f localhost"]);
    assert_eq!(h.retries, 3);
    assert_eq!(h.interval.unwrap().seconds, 30);

    web.healthcheck = Some(HealthCheckConfig {
        disable: true,
        ..Default::default()
    });
    let spec = only_service(&project(vec![("web", web.clone())]));
    assert_eq!(
        container(&spec).healthcheck.clone().unwrap().test,
        vec!["NONE"]
    );

    web.healthcheck = Some(HealthCheckConfig {
        disable: true,
        test: vec!["CMD".into(), "true".into()],
        ..Default::default()
    });
    assert_eq!(
        err(&project(vec![("web", web)])),
        "service web: test and disable can't be set at the same time"
    );
}

#[test]
fn modes_and_their_errors() {
    let with = |mode: &str, replicas: Option<u64>| {
        let mut web = svc("nginx");
        web.deploy = Some(DeployConfig {
            mode: Some(mode.into()),
            replicas,
            ..Default::default()
        });
        project(vec![("web", web)])
    };
    assert!(matches!(
        only_service(&with("global", None)).mode,
        Some(service_spec::Mode::Global(_))
    ));
    assert!(matches!(
        only_service(&with("global-job", None)).mode,
        Some(service_spec::Mode::GlobalJob(_))
    ));
    assert_eq!(
        only_service(&with("replicated-job", Some(4))).mode,
        Some(service_spec::Mode::ReplicatedJob(
            shoal_proto::v1::ReplicatedJob {
                max_concurrent: 4,
                total_completions: 4
            }
        ))
    );
    assert_eq!(
        only_service(&with("replicated", Some(3))).mode,
        Some(service_spec::Mode::Replicated(
            shoal_proto::v1::ReplicatedService { replicas: 3 }
        ))
    );
    assert_eq!(
        err(&with("global", Some(2))),
        "service web: replicas can only be used with replicated or replicated-job mode"
    );
    assert_eq!(err(&with("foo", None)), "service web: Unknown mode: foo");
}

fn port(mode: &str, target: u32, published: u32) -> ServicePortConfig {
    ServicePortConfig {
        mode: mode.into(),
        target,
        published,
        protocol: "tcp".into(),
    }
}

#[test]
fn ports_are_sorted_by_published_and_checked() {
    let mut web = svc("nginx");
    web.ports = vec![
        port("ingress", 80, 8080),
        port("host", 9000, 0),
        port("host", 443, 443),
    ];
    let spec = only_service(&project(vec![("web", web.clone())]));
    let ep = spec.endpoint.unwrap();
    assert_eq!(ep.mode, endpoint_spec::ResolutionMode::Vip as i32);
    let got: Vec<(u32, u32, i32)> = ep
        .ports
        .iter()
        .map(|p| (p.published_port, p.target_port, p.publish_mode))
        .collect();
    let host = port_config::PublishMode::Host as i32;
    let ingress = port_config::PublishMode::Ingress as i32;
    assert_eq!(
        got,
        vec![(0, 9000, host), (443, 443, host), (8080, 80, ingress)]
    );

    let mut dup = web.clone();
    dup.ports = vec![port("ingress", 80, 8080), port("ingress", 81, 8080)];
    assert_eq!(
        err(&project(vec![("web", dup)])),
        "service web: EndpointSpec: duplicate published ports provided"
    );

    let mut dnsrr = web;
    dnsrr.deploy = Some(DeployConfig {
        endpoint_mode: Some("DNSRR".into()),
        ..Default::default()
    });
    dnsrr.ports = vec![port("ingress", 80, 8080)];
    assert_eq!(
        err(&project(vec![("web", dnsrr.clone())])),
        "service web: EndpointSpec: port published with ingress mode can't be used with dnsrr mode"
    );
    dnsrr.ports = vec![port("host", 80, 8080)];
    let ep = only_service(&project(vec![("web", dnsrr)]))
        .endpoint
        .unwrap();
    assert_eq!(ep.mode, endpoint_spec::ResolutionMode::Dnsrr as i32);
}

#[test]
fn restart_policy_falls_back_on_the_restart_key() {
    use restart_policy::Condition;
    let with = |restart: Option<&str>, policy: Option<RestartPolicy>| {
        let mut web = svc("nginx");
        web.restart = restart.map(str::to_string);
        web.deploy = Some(DeployConfig {
            restart_policy: policy,
            ..Default::default()
        });
        only_service(&project(vec![("web", web)]))
            .task
            .unwrap()
            .restart
            .map(|r| (r.condition, r.max_attempts))
    };
    assert_eq!(with(None, None), None);
    assert_eq!(with(Some("no"), None), None);
    assert_eq!(with(Some("always"), None), Some((Condition::Any as i32, 0)));
    assert_eq!(
        with(Some("unless-stopped"), None),
        Some((Condition::Any as i32, 0))
    );
    assert_eq!(
        with(Some("on-failure:3"), None),
        Some((Condition::OnFailure as i32, 3))
    );
    assert_eq!(
        with(
            Some("always"),
            Some(RestartPolicy {
                condition: Some("none".into()),
                ..Default::default()
            })
        ),
        Some((Condition::None as i32, 0))
    );
    let mut web = svc("nginx");
    web.deploy = Some(DeployConfig {
        restart_policy: Some(RestartPolicy {
            condition: Some("always".into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(
        err(&project(vec![("web", web)])),
        "service web: invalid RestartCondition: \"always\""
    );
}

#[test]
fn update_config_parallelism_defaults_to_one() {
    let mut web = svc("nginx");
    web.deploy = Some(DeployConfig {
        update_config: Some(UpdateConfig {
            delay: Some(Duration::from_secs(10)),
            order: Some("start-first".into()),
            ..Default::default()
        }),
        rollback_config: Some(UpdateConfig {
            parallelism: Some(0),
            ..Default::default()
        }),
        ..Default::default()
    });
    let spec = only_service(&project(vec![("web", web)]));
    let u = spec.update.unwrap();
    assert_eq!(u.parallelism, 1);
    assert_eq!(u.delay.unwrap().seconds, 10);
    assert_eq!(
        u.order,
        shoal_proto::v1::update_config::UpdateOrder::StartFirst as i32
    );
    assert_eq!(spec.rollback.unwrap().parallelism, 0);
    assert!(
        only_service(&project(vec![("web", svc("a"))]))
            .update
            .is_none()
    );
}

#[test]
fn resources_and_placement() {
    assert_eq!(service::nano_cpus("0.50"), Ok(500_000_000));
    assert_eq!(service::nano_cpus("2"), Ok(2_000_000_000));
    assert_eq!(service::nano_cpus(".001"), Ok(1_000_000));
    assert!(service::nano_cpus("abc").is_err());
    assert!(service::nano_cpus("0.0000000001").is_err());
    let mut web = svc("nginx");
    web.deploy = Some(DeployConfig {
        resources: Resources {
            limits: Some(ResourceLimit {
                cpus: Some("0.50".into()),
                memory: Some(134_217_728),
                pids: Some(100),
            }),
            reservations: Some(ResourceReservation {
                memory: Some(64 << 20),
                ..Default::default()
            }),
        },
        placement: Placement {
            constraints: vec!["node.role == manager".into()],
            preferences: vec![PlacementPreference {
                spread: "node.labels.zone".into(),
            }],
            max_replicas_per_node: Some(2),
        },
        ..Default::default()
    });
    let task = only_service(&project(vec![("web", web)])).task.unwrap();
    let r = task.resources.unwrap();
    let l = r.limits.unwrap();
    assert_eq!(
        (l.nano_cpus, l.memory_bytes, l.pids),
        (500_000_000, 134_217_728, 100)
    );
    assert_eq!(r.reservations.unwrap().memory_bytes, 64 << 20);
    let p = task.placement.unwrap();
    assert_eq!(p.constraints, vec!["node.role == manager"]);
    assert_eq!(p.preferences[0].spread_descriptor, "node.labels.zone");
    assert_eq!(p.max_replicas, 2);
}

#[test]
fn volumes_named_external_anonymous_bind_and_tmpfs() {
    let vol = |t: &str, source: Option<&str>, target: &str| ServiceVolumeConfig {
        r#type: t.into(),
        source: source.map(str::to_string),
        target: target.into(),
        ..Default::default()
    };
    let mut web = svc("nginx");
    web.volumes = vec![
        vol("volume", Some("data"), "/data"),
        vol("volume", Some("ext"), "/ext"),
        vol("volume", Some("named"), "/named"),
        vol("volume", None, "volume1"),
        vol("bind", Some("/srv/conf"), "/conf"),
        vol("tmpfs", None, "/cache"),
    ];
    let mut p = project(vec![("web", web.clone())]);
    p.volumes.insert(
        "data".into(),
        VolumeConfig {
            driver: Some("local".into()),
            labels: [("l".to_string(), "v".to_string())].into(),
            ..Default::default()
        },
    );
    p.volumes.insert(
        "ext".into(),
        VolumeConfig {
            external: true,
            name: Some("ext".into()),
            ..Default::default()
        },
    );
    p.volumes.insert(
        "named".into(),
        VolumeConfig {
            name: Some("my-named".into()),
            ..Default::default()
        },
    );
    let spec = only_service(&p);
    let m = &container(&spec).mounts;
    assert_eq!(m[0].source, "st_data");
    let opts = m[0].volume_options.as_ref().unwrap();
    assert_eq!(
        opts.labels.get(NAMESPACE_LABEL).map(String::as_str),
        Some("st")
    );
    assert_eq!(opts.labels.get("l").map(String::as_str), Some("v"));
    assert_eq!(opts.driver_config.as_ref().unwrap().name, "local");
    assert_eq!(m[1].source, "ext");
    assert!(m[1].volume_options.is_none());
    assert_eq!(m[2].source, "my-named");
    assert_eq!(
        (m[3].source.as_str(), m[3].target.as_str()),
        ("", "volume1")
    );
    assert_eq!(m[3].r#type, mount::Type::Volume as i32);
    assert_eq!(m[4].r#type, mount::Type::Bind as i32);
    assert_eq!(m[4].source, "/srv/conf");
    assert_eq!(m[5].r#type, mount::Type::Tmpfs as i32);

    web.volumes = vec![vol("volume", Some("nope"), "/x")];
    assert_eq!(
        err(&project(vec![("web", web)])),
        "service web: undefined volume \"nope\""
    );
}

#[test]
fn secrets_and_configs_are_read_named_and_referenced() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, b"hunter2").unwrap();
    let mut web = svc("nginx");
    web.secrets = vec![
        ServiceFileRef {
            source: "pw".into(),
            ..Default::default()
        },
        ServiceFileRef {
            source: "ext".into(),
            target: Some("other".into()),
            uid: Some("1000".into()),
            mode: Some(0o440),
            ..Default::default()
        },
    ];
    web.configs = vec![ServiceFileRef {
        source: "conf".into(),
        target: Some("/etc/app.conf".into()),
        ..Default::default()
    }];
    let mut p = project(vec![("web", web.clone())]);
    p.secrets.insert(
        "pw".into(),
        FileObjectConfig {
            file: Some(file.clone()),
            labels: [("k".to_string(), "v".to_string())].into(),
            ..Default::default()
        },
    );
    p.secrets.insert(
        "ext".into(),
        FileObjectConfig {
            external: true,
            name: Some("outside".into()),
            ..Default::default()
        },
    );
    p.secrets.insert(
        "unused".into(),
        FileObjectConfig {
            file: Some(file.clone()),
            name: Some("v2_unused".into()),
            ..Default::default()
        },
    );
    p.configs.insert(
        "conf".into(),
        FileObjectConfig {
            file: Some(file.clone()),
            template_driver: Some("golang".into()),
            ..Default::default()
        },
    );
    let plan = convert(&p, "st").unwrap();
    // Every non-external top-level secret, used or not.
    let secrets: Vec<(&str, &str)> = plan
        .secrets
        .iter()
        .map(|s| (s.key.as_str(), s.name.as_str()))
        .collect();
    assert_eq!(secrets, vec![("pw", "st_pw"), ("unused", "v2_unused")]);
    let pw = &plan.secrets[0].spec;
    assert_eq!(pw.data, b"hunter2");
    let labels = &pw.annotations.as_ref().unwrap().labels;
    assert_eq!(labels.get(NAMESPACE_LABEL).map(String::as_str), Some("st"));
    assert_eq!(labels.get("k").map(String::as_str), Some("v"));
    assert_eq!(plan.configs[0].name, "st_conf");
    assert_eq!(
        plan.configs[0]
            .spec
            .templating
            .as_ref()
            .map(|d| d.name.as_str()),
        Some("golang")
    );

    let c = container(&plan.services[0].spec);
    #[allow(clippy::type_complexity)]
    let refs: Vec<(&str, &str, &str, &str, &str, Option<u32>)> = c
        .secrets
        .iter()
        .map(|r| {
            (
                r.secret_id.as_str(),
                r.secret_name.as_str(),
                r.target.as_str(),
                r.uid.as_str(),
                r.gid.as_str(),
                r.mode,
            )
        })
        .collect();
    assert_eq!(
        refs,
        vec![
            ("", "outside", "other", "1000", "0", Some(0o440)),
            ("", "st_pw", "pw", "0", "0", Some(0o444)),
        ]
    );
    assert_eq!(c.configs[0].config_name, "st_conf");
    assert_eq!(c.configs[0].target, "/etc/app.conf");
    assert_eq!(c.configs[0].config_id, "");

    web.secrets = vec![ServiceFileRef {
        source: "foo".into(),
        ..Default::default()
    }];
    let mut bad = p.clone();
    bad.services.insert("web".into(), web.clone());
    assert_eq!(err(&bad), "service web: undefined secret \"foo\"");
    web.secrets.clear();
    web.configs = vec![ServiceFileRef {
        source: "foo".into(),
        ..Default::default()
    }];
    bad.services.insert("web".into(), web);
    assert_eq!(err(&bad), "service web: undefined config \"foo\"");

    let mut missing = p;
    missing.secrets.insert(
        "gone".into(),
        FileObjectConfig {
            file: Some(PathBuf::from("/nonexistent/secret")),
            ..Default::default()
        },
    );
    assert_eq!(
        err(&missing),
        "open /nonexistent/secret: no such file or directory"
    );
}

#[test]
fn descope_strips_only_the_stack_prefix() {
    assert_eq!(descope("st", "st_web"), "web");
    assert_eq!(descope("st", "stweb"), "stweb");
    assert_eq!(descope("st", "other_web"), "other_web");
}

mod fixtures;
