#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use clap::Parser;
use shoal_compose::convert::{IMAGE_LABEL, NAMESPACE_LABEL, ServicePlan};
use shoal_proto::v1::{
    Annotations, ConfigReference, ContainerSpec, Meta, NetworkAttachmentConfig, SecretReference,
    Service, ServiceSpec, ServiceStatus, TaskSpec, task_spec,
};

use super::deploy::{self, ResolveImage};
use super::render;
use super::*;
use crate::commands::{Cli, Command};

fn parse(args: &[&str]) -> StackCommand {
    let mut argv = vec!["shoal", "stack"];
    argv.extend_from_slice(args);
    match Cli::try_parse_from(argv).unwrap().command {
        Command::Stack(cmd) => cmd,
        other => panic!("not a stack command: {other:?}"),
    }
}

fn service(id: &str, name: &str, stack: Option<&str>) -> Service {
    let mut labels = HashMap::new();
    if let Some(ns) = stack {
        labels.insert(NAMESPACE_LABEL.to_string(), ns.to_string());
    }
    Service {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        spec: Some(ServiceSpec {
            annotations: Some(Annotations {
                name: name.into(),
                labels,
            }),
            task: Some(TaskSpec {
                runtime: Some(task_spec::Runtime::Container(ContainerSpec {
                    image: "busybox:latest".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn deploy_flags_as_docker_takes_them() {
    let StackCommand::Deploy(a) = parse(&["deploy", "-c", "a.yml", "-c", "b.yml", "web"]) else {
        panic!()
    };
    assert_eq!(a.compose_files, vec!["a.yml", "b.yml"]);
    assert_eq!(a.detach, None);
    assert_eq!(a.resolve_image, "always");
    assert!(!a.prune);
    let StackCommand::Deploy(a) = parse(&[
        "up",
        "--compose-file",
        "a.yml",
        "--prune",
        "--detach=false",
        "-q",
        "--with-registry-auth",
        "--resolve-image",
        "never",
        "web",
    ]) else {
        panic!()
    };
    assert_eq!(a.detach, Some(false));
    assert!(a.prune && a.quiet && a.with_registry_auth);
    assert_eq!(
        a.resolve_image.parse::<ResolveImage>(),
        Ok(ResolveImage::Never)
    );
    let StackCommand::Deploy(a) = parse(&["deploy", "-c", "a.yml", "-d", "web"]) else {
        panic!()
    };
    assert_eq!(a.detach, Some(true));
    assert_eq!(
        "foo".parse::<ResolveImage>(),
        Err("Invalid option foo for flag --resolve-image".to_string())
    );
}

#[test]
fn rm_ls_ps_services_config_parse_with_their_aliases() {
    for alias in ["rm", "remove", "down"] {
        let StackCommand::Rm { stacks, .. } = parse(&[alias, "a", "b"]) else {
            panic!()
        };
        assert_eq!(stacks, vec!["a", "b"]);
    }
    assert!(matches!(
        parse(&["list"]),
        StackCommand::Ls { format: None }
    ));
    let StackCommand::Ps {
        quiet,
        no_trunc,
        no_resolve,
        filter,
        stack,
        ..
    } = parse(&[
        "ps",
        "-q",
        "--no-trunc",
        "--no-resolve",
        "-f",
        "desired-state=running",
        "vote",
    ])
    else {
        panic!()
    };
    assert!(quiet && no_trunc && no_resolve);
    assert_eq!(filter, vec!["desired-state=running"]);
    assert_eq!(stack, "vote");
    let StackCommand::Services { quiet, stack, .. } = parse(&["services", "-q", "vote"]) else {
        panic!()
    };
    assert!(quiet);
    assert_eq!(stack, "vote");
    let StackCommand::Config {
        compose_files,
        skip_interpolation,
    } = parse(&["config", "-c", "a.yml", "--skip-interpolation"])
    else {
        panic!()
    };
    assert_eq!(compose_files, vec!["a.yml"]);
    assert!(skip_interpolation);
}

#[test]
fn stack_names_are_checked() {
    assert_eq!(
        check_stack_name("  ").unwrap_err().to_string(),
        "invalid stack name: \"  \""
    );
    check_stack_name("vote").unwrap();
}

#[test]
fn ls_counts_services_per_stack_in_natural_order() {
    let services = vec![
        service("1", "service-name-10-foo_a", Some("service-name-10-foo")),
        service("2", "service-name-2-foo_a", Some("service-name-2-foo")),
        service("3", "service-name-2-foo_b", Some("service-name-2-foo")),
        service("4", "loose", None),
        service("5", "service-name-1-foo_a", Some("service-name-1-foo")),
    ];
    let rows = render::stacks(&services);
    assert_eq!(
        render::render_ls(&rows, None).unwrap(),
        "NAME                  SERVICES\n\
         service-name-1-foo    1\n\
         service-name-2-foo    2\n\
         service-name-10-foo   1\n"
    );
    // docker's golden file.
    let one = render::stacks(&[service("1", "x", Some("service-name-foo"))]);
    assert_eq!(
        render::render_ls(&one, None).unwrap(),
        "NAME               SERVICES\nservice-name-foo   1\n"
    );
    assert_eq!(
        render::render_ls(&one, Some("{{.Name}}: {{.Services}}")).unwrap(),
        "service-name-foo: 1\n"
    );
    assert_eq!(
        render::render_ls(&one, Some("json")).unwrap(),
        "{\"Name\":\"service-name-foo\",\"Services\":\"1\"}\n"
    );
}

#[test]
fn services_render_as_service_ls() {
    let s = service("id-foo", "name-foo", Some("st"));
    let statuses: HashMap<String, ServiceStatus> = [(
        "id-foo".to_string(),
        ServiceStatus {
            service_id: "id-foo".into(),
            running_tasks: 0,
            desired_tasks: 2,
            ..Default::default()
        },
    )]
    .into();
    let out = render::render_services(std::slice::from_ref(&s), &statuses, None, false).unwrap();
    assert_eq!(
        out,
        "ID        NAME       MODE         REPLICAS   IMAGE            PORTS\n\
         id-foo    name-foo   replicated   0/2        busybox:latest\n"
    );
    let out = render::render_services(
        std::slice::from_ref(&s),
        &statuses,
        Some("{{.Name}} {{.Replicas}}"),
        false,
    )
    .unwrap();
    assert_eq!(out, "name-foo 0/2\n");
    assert_eq!(
        render::render_services(&[s], &statuses, None, true).unwrap(),
        "id-foo\n"
    );
}

#[test]
fn warnings_print_as_docker_prints_them() {
    let w = shoal_compose::Warnings {
        unsupported: vec!["build".into(), "restart".into()],
        deprecated: vec![(
            "container_name".into(),
            "Setting the container name is not supported.".into(),
        )],
        loader: vec![
            "ignoring IP-address (127.0.0.1:8001:8001/tcp) service will listen on '0.0.0.0'".into(),
        ],
    };
    assert_eq!(
        deploy::warning_text(&w),
        "level=warning msg=\"ignoring IP-address (127.0.0.1:8001:8001/tcp) service will listen on '0.0.0.0'\"\n\
         Ignoring unsupported options: build, restart\n\n\
         Ignoring deprecated options:\n\n\
         container_name: Setting the container name is not supported.\n\n"
    );
    assert_eq!(deploy::warning_text(&Default::default()), "");
}

fn plan_spec() -> ServicePlan {
    ServicePlan {
        key: "web".into(),
        name: "st_web".into(),
        spec: ServiceSpec {
            annotations: Some(Annotations {
                name: "st_web".into(),
                labels: [(IMAGE_LABEL.to_string(), "busybox".to_string())].into(),
            }),
            task: Some(TaskSpec {
                runtime: Some(task_spec::Runtime::Container(ContainerSpec {
                    image: "busybox".into(),
                    secrets: vec![SecretReference {
                        secret_name: "st_pw".into(),
                        target: "pw".into(),
                        ..Default::default()
                    }],
                    configs: vec![ConfigReference {
                        config_name: "ext_conf".into(),
                        target: "conf".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                })),
                networks: vec![NetworkAttachmentConfig {
                    target: "st_default".into(),
                    aliases: vec!["web".into()],
                    addresses: vec![],
                }],
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

fn container(spec: &ServiceSpec) -> &ContainerSpec {
    match spec.task.as_ref().and_then(|t| t.runtime.as_ref()) {
        Some(task_spec::Runtime::Container(c)) => c,
        _ => panic!(),
    }
}

#[test]
fn references_resolve_to_ids_or_fail_in_dockers_words() {
    let plan = plan_spec();
    let secrets: HashMap<String, String> = [("st_pw".to_string(), "sid".to_string())].into();
    let configs: HashMap<String, String> = [("ext_conf".to_string(), "cid".to_string())].into();
    let nets: HashMap<String, String> = [("st_default".to_string(), "nid".to_string())].into();
    let mut spec = plan.spec.clone();
    deploy::resolve_refs(&plan, &mut spec, &secrets, &configs, &nets).unwrap();
    let c = container(&spec);
    assert_eq!(c.secrets[0].secret_id, "sid");
    assert_eq!(c.configs[0].config_id, "cid");
    assert_eq!(spec.task.as_ref().unwrap().networks[0].target, "nid");

    let mut spec = plan.spec.clone();
    let err = deploy::resolve_refs(&plan, &mut spec, &HashMap::new(), &configs, &nets)
        .unwrap_err()
        .to_string();
    assert_eq!(err, "service web: secret not found: st_pw");
    let mut spec = plan.spec.clone();
    let err = deploy::resolve_refs(&plan, &mut spec, &secrets, &HashMap::new(), &nets)
        .unwrap_err()
        .to_string();
    assert_eq!(err, "service web: config not found: ext_conf");
}

#[test]
fn an_update_keeps_force_update_and_the_resolved_image_when_asked() {
    let plan = plan_spec();
    let mut current = Service {
        spec: Some(plan.spec.clone()),
        ..Default::default()
    };
    if let Some(t) = current.spec.as_mut().and_then(|s| s.task.as_mut()) {
        t.force_update = 3;
        if let Some(task_spec::Runtime::Container(c)) = t.runtime.as_mut() {
            c.image = "busybox@sha256:abc".into();
        }
    }
    let next = deploy::update_spec(&current, plan.spec.clone(), ResolveImage::Changed);
    assert_eq!(next.task.as_ref().unwrap().force_update, 3);
    assert_eq!(container(&next).image, "busybox@sha256:abc");
    let next = deploy::update_spec(&current, plan.spec.clone(), ResolveImage::Always);
    assert_eq!(container(&next).image, "busybox");
    // Unchanged compose file, never resolve: the very spec stored.
    let next = deploy::update_spec(&current, plan.spec, ResolveImage::Never);
    assert_eq!(Some(&next), current.spec.as_ref());
}

#[test]
fn ps_formats_over_dockers_task_fields() {
    use shoal_proto::v1::{PortConfig, PortStatus, Task, TaskStatus, port_config};
    let task = Task {
        meta: Some(Meta {
            id: "abcdefghijklmnopqrstuvwxy".into(),
            ..Default::default()
        }),
        service_id: "svc".into(),
        slot: 1,
        node_id: "n1".into(),
        desired_state: shoal_proto::v1::TaskState::Running as i32,
        status: Some(TaskStatus {
            state: shoal_proto::v1::TaskState::Running as i32,
            port_status: Some(PortStatus {
                ports: vec![PortConfig {
                    target_port: 80,
                    published_port: 8080,
                    publish_mode: port_config::PublishMode::Host as i32,
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut names = crate::commands::task::Names::default();
    names.services.insert("svc".into(), "st_web".into());
    names.nodes.insert("n1".into(), "node-1".into());
    let out = render::render_ps(
        std::slice::from_ref(&task),
        &names,
        std::time::SystemTime::now(),
        true,
        Some("{{.ID}} {{.Name}} {{.Node}} {{.DesiredState}} {{.Ports}}"),
        false,
    )
    .unwrap();
    assert_eq!(out, "abcdefghijkl st_web.1 node-1 Running *:8080->80/tcp\n");
    let out = render::render_ps(
        &[task],
        &names,
        std::time::SystemTime::now(),
        true,
        None,
        true,
    )
    .unwrap();
    assert_eq!(out, "abcdefghijkl\n");
}
