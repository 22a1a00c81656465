#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use clap::Parser;
use shoal_proto::v1::{
    Annotations, ContainerSpec, Endpoint, LogMessage, Meta, PortConfig, ReplicatedJob,
    ReplicatedService, Service, ServiceSpec, ServiceStatus, Task, TaskSpec, TaskState, TaskStatus,
    UpdateStatus, Version, mount, port_config, restart_policy, service_spec, task_spec,
    update_config, update_status::UpdateState,
};

use super::progress::{Display, Intent, Tracker, UpdateWatch, Verdict, bar, failures, trunc_error};
use super::*;
use crate::commands::{Cli, Command};

fn parse(args: &[&str]) -> CreateArgs {
    let mut argv = vec!["shoal", "service", "create"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("parses");
    match cli.command {
        Command::Service(ServiceCommand::Create(a)) => *a,
        other => panic!("not create: {other:?}"),
    }
}

fn spec(args: &[&str]) -> ServiceSpec {
    parse(args).to_spec().expect("valid spec")
}

fn err(args: &[&str]) -> String {
    parse(args).to_spec().unwrap_err().to_string()
}

fn container(spec: &ServiceSpec) -> ContainerSpec {
    match spec.task.as_ref().unwrap().runtime.as_ref().unwrap() {
        task_spec::Runtime::Container(c) => c.clone(),
        other => panic!("not a container: {other:?}"),
    }
}

#[test]
fn every_create_flag_lands_in_the_spec() {
    let spec = spec(&[
        "--name",
        "web",
        "--replicas",
        "3",
        "--constraint",
        "node.role==worker",
        "--constraint",
        "node.labels.zone!=east",
        "--placement-pref",
        "spread=node.labels.zone",
        "--replicas-max-per-node",
        "2",
        "--reserve-cpu",
        "0.5",
        "--reserve-memory",
        "64M",
        "--limit-cpu",
        "1.25",
        "--limit-memory",
        "1g",
        "-e",
        "A=1",
        "--env",
        "B=two=2",
        "-l",
        "tier=front",
        "--label",
        "flag",
        "--container-label",
        "c=1",
        "--mount",
        "type=bind,source=/srv,target=/data,readonly",
        "--mount",
        "type=tmpfs,dst=/tmp",
        "--mount",
        "src=vol,target=/v",
        "--restart-condition",
        "on-failure",
        "--restart-delay",
        "5s",
        "--restart-max-attempts",
        "3",
        "--restart-window",
        "1m30s",
        "-p",
        "8080:80",
        "--publish",
        "53:53/udp",
        "--publish",
        "mode=host,published=9000,target=90,protocol=udp",
        "--stop-grace-period",
        "20s",
        "-w",
        "/app",
        "-u",
        "nobody",
        "--hostname",
        "h1",
        "--update-parallelism",
        "2",
        "--update-delay",
        "10s",
        "--update-failure-action",
        "rollback",
        "--update-monitor",
        "7s",
        "--update-max-failure-ratio",
        "0.25",
        "--update-order",
        "start-first",
        "--rollback-parallelism",
        "0",
        "--rollback-delay",
        "1s",
        "--rollback-failure-action",
        "continue",
        "--rollback-monitor",
        "2s",
        "--rollback-max-failure-ratio",
        "0.5",
        "--rollback-order",
        "start-first",
        "nginx:1.25",
        "nginx",
        "-g",
        "daemon off;",
    ]);
    let a = spec.annotations.clone().unwrap();
    assert_eq!(a.name, "web");
    assert_eq!(a.labels.get("tier").map(String::as_str), Some("front"));
    assert_eq!(a.labels.get("flag").map(String::as_str), Some(""));
    assert_eq!(
        spec.mode,
        Some(service_spec::Mode::Replicated(ReplicatedService {
            replicas: 3
        }))
    );
    let t = spec.task.clone().unwrap();
    let p = t.placement.clone().unwrap();
    assert_eq!(
        p.constraints,
        vec!["node.role==worker", "node.labels.zone!=east"]
    );
    assert_eq!(p.preferences[0].spread_descriptor, "node.labels.zone");
    assert_eq!(p.max_replicas, 2);
    let r = t.resources.unwrap();
    assert_eq!(r.reservations.unwrap().nano_cpus, 500_000_000);
    assert_eq!(r.reservations.unwrap().memory_bytes, 64 * 1024 * 1024);
    assert_eq!(r.limits.unwrap().nano_cpus, 1_250_000_000);
    assert_eq!(r.limits.unwrap().memory_bytes, 1024 * 1024 * 1024);
    let c = container(&spec);
    assert_eq!(c.image, "nginx:1.25");
    assert_eq!(c.args, vec!["nginx", "-g", "daemon off;"]);
    assert!(c.command.is_empty());
    assert_eq!(c.env, vec!["A=1", "B=two=2"]);
    assert_eq!(c.labels.get("c").map(String::as_str), Some("1"));
    assert_eq!(c.mounts.len(), 3);
    assert_eq!(c.mounts[0].r#type, mount::Type::Bind as i32);
    assert_eq!(
        (c.mounts[0].source.as_str(), c.mounts[0].target.as_str()),
        ("/srv", "/data")
    );
    assert!(c.mounts[0].read_only);
    assert_eq!(c.mounts[1].r#type, mount::Type::Tmpfs as i32);
    assert_eq!(c.mounts[2].r#type, mount::Type::Volume as i32);
    assert!(!c.mounts[2].read_only);
    assert_eq!(c.stop_grace_period.unwrap().seconds, 20);
    assert_eq!(
        (c.dir.as_str(), c.user.as_str(), c.hostname.as_str()),
        ("/app", "nobody", "h1")
    );
    let rp = t.restart.unwrap();
    assert_eq!(rp.condition, restart_policy::Condition::OnFailure as i32);
    assert_eq!(rp.delay.unwrap().seconds, 5);
    assert_eq!(rp.max_attempts, 3);
    assert_eq!(rp.window.unwrap().seconds, 90);
    let ports = spec.endpoint.clone().unwrap().ports;
    assert_eq!(ports.len(), 3);
    assert_eq!((ports[0].published_port, ports[0].target_port), (8080, 80));
    assert_eq!(ports[1].protocol, port_config::Protocol::Udp as i32);
    assert_eq!(ports[2].publish_mode, port_config::PublishMode::Host as i32);
    assert_eq!((ports[2].published_port, ports[2].target_port), (9000, 90));
    let u = spec.update.unwrap();
    assert_eq!(u.parallelism, 2);
    assert_eq!(u.delay.unwrap().seconds, 10);
    assert_eq!(
        u.failure_action,
        update_config::FailureAction::Rollback as i32
    );
    assert_eq!(u.monitor.unwrap().seconds, 7);
    assert!((u.max_failure_ratio - 0.25).abs() < f32::EPSILON);
    assert_eq!(u.order, update_config::UpdateOrder::StartFirst as i32);
    let rb = spec.rollback.unwrap();
    assert_eq!(rb.parallelism, 0);
    assert_eq!(
        rb.failure_action,
        update_config::FailureAction::Continue as i32
    );
    assert_eq!(rb.monitor.unwrap().seconds, 2);
    assert_eq!(rb.order, update_config::UpdateOrder::StartFirst as i32);
    let a = parse(&["-d", "-q", "--timeout", "10s", "busybox"]);
    assert!(a.follow.detach && a.follow.quiet);
    assert_eq!(a.follow.timeout().unwrap(), Duration::from_secs(10));
}

#[test]
fn defaults_and_modes() {
    let s = spec(&["busybox"]);
    assert_eq!(
        s.mode,
        Some(service_spec::Mode::Replicated(ReplicatedService {
            replicas: 1
        }))
    );
    assert!(s.endpoint.is_none());
    assert!(s.task.as_ref().unwrap().restart.is_none());
    assert!(s.update.is_none() && s.rollback.is_none());
    assert_eq!(
        spec(&["--update-delay", "1s", "busybox"])
            .update
            .unwrap()
            .parallelism,
        1
    );
    assert_eq!(
        err(&[
            "--mode",
            "replicated-job",
            "--update-parallelism",
            "2",
            "busybox"
        ]),
        "update and rollback configuration is not supported for jobs"
    );
    assert_eq!(
        err(&[
            "--mode",
            "global",
            "--replicas-max-per-node",
            "1",
            "busybox"
        ]),
        "replicas-max-per-node can only be used with replicated or replicated-job mode"
    );
    assert!(matches!(
        spec(&["--mode", "global", "busybox"]).mode,
        Some(service_spec::Mode::Global(_))
    ));
    assert!(matches!(
        spec(&["--mode", "global-job", "busybox"]).mode,
        Some(service_spec::Mode::GlobalJob(_))
    ));
    assert_eq!(
        spec(&[
            "--mode",
            "replicated-job",
            "--replicas",
            "5",
            "--max-concurrent",
            "2",
            "busybox"
        ])
        .mode,
        Some(service_spec::Mode::ReplicatedJob(ReplicatedJob {
            max_concurrent: 2,
            total_completions: 5
        }))
    );
    assert_eq!(
        spec(&["--mode", "replicated-job", "--replicas", "4", "busybox"]).mode,
        Some(service_spec::Mode::ReplicatedJob(ReplicatedJob {
            max_concurrent: 4,
            total_completions: 4
        }))
    );
    assert_eq!(
        err(&["--mode", "global", "--replicas", "2", "busybox"]),
        "replicas can only be used with replicated or replicated-job mode"
    );
    assert_eq!(
        err(&["--max-concurrent", "2", "busybox"]),
        "max-concurrent can only be used with replicated-job mode"
    );
    assert!(err(&["--mode", "daemon", "busybox"]).contains("\"--mode\""));
}

#[test]
fn process_services_take_the_command_as_is() {
    let s = spec(&[
        "--process",
        "--name",
        "p",
        "-e",
        "X=1",
        "-w",
        "/tmp",
        "sh",
        "-c",
        "echo hi; exit 1",
    ]);
    match s.task.unwrap().runtime.unwrap() {
        task_spec::Runtime::Process(p) => {
            assert_eq!(p.command, vec!["sh", "-c", "echo hi; exit 1"]);
            assert!(p.args.is_empty());
            assert_eq!(p.env, vec!["X=1"]);
            assert_eq!(p.dir, "/tmp");
        }
        other => panic!("not a process: {other:?}"),
    }
    assert!(err(&["--process", "--mount", "target=/x", "true"]).contains("--mount"));
}

#[test]
fn bad_values_name_the_flag() {
    assert_eq!(
        err(&["--replicas", "-1", "busybox"]),
        "invalid argument \"-1\" for \"--replicas\" flag: value must not be negative"
    );
    assert_eq!(
        err(&["--replicas", "three", "busybox"]),
        "invalid argument \"three\" for \"--replicas\" flag: invalid syntax"
    );
    assert_eq!(
        err(&["--reserve-memory", "64Q", "busybox"]),
        "invalid argument \"64Q\" for \"--reserve-memory\" flag: invalid size: '64Q'"
    );
    assert!(err(&["--limit-memory", "lots", "busybox"]).contains("\"--limit-memory\""));
    assert!(err(&["--reserve-cpu", "half", "busybox"]).contains("\"--reserve-cpu\""));
    assert!(err(&["--limit-cpu", "-1", "busybox"]).contains("\"--limit-cpu\""));
    assert!(
        err(&["--restart-delay", "5", "busybox"])
            .contains("invalid argument \"5\" for \"--restart-delay\" flag: time: missing unit")
    );
    assert!(err(&["--update-delay", "5x", "busybox"]).contains("\"--update-delay\""));
    assert!(err(&["--stop-grace-period", "-3s", "busybox"]).contains("\"--stop-grace-period\""));
    for bad in [
        "abc",
        "8080:",
        "80:70000",
        "8080:80/icmp",
        "1.2.3.4:80:80",
        "mode=host,published=80",
    ] {
        let e = err(&["-p", bad, "busybox"]);
        assert!(
            e.starts_with(&format!(
                "invalid argument \"{bad}\" for \"-p, --publish\" flag"
            )),
            "{bad}: {e}"
        );
    }
    assert!(err(&["--mount", "type=bind,target=/x", "busybox"]).contains("source is required"));
    assert!(err(&["--mount", "source=x", "busybox"]).contains("target is required"));
    assert!(err(&["--mount", "type=nfs,target=/x", "busybox"]).contains("invalid mount type"));
    assert!(err(&["--restart-condition", "always", "busybox"]).contains("\"--restart-condition\""));
    assert!(err(&["--update-order", "random", "busybox"]).contains("\"--update-order\""));
    assert!(
        err(&["--rollback-failure-action", "rollback", "busybox"])
            .contains("\"--rollback-failure-action\"")
    );
    assert!(
        err(&["--update-max-failure-ratio", "2", "busybox"])
            .contains("\"--update-max-failure-ratio\"")
    );
    assert!(err(&["--placement-pref", "pack=x", "busybox"]).contains("only spread is supported"));
    assert!(
        parse(&["--timeout", "soon", "busybox"])
            .follow
            .timeout()
            .is_err()
    );
    // No image at all is clap's refusal.
    assert!(Cli::try_parse_from(["shoal", "service", "create", "--name", "x"]).is_err());
}

#[test]
fn parsers_follow_go_and_docker_units() {
    use super::opts::{parse_go_duration, parse_nano_cpus, parse_publish, ram_in_bytes};
    assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
    assert_eq!(
        parse_go_duration("300ms").unwrap(),
        Duration::from_millis(300)
    );
    assert_eq!(
        parse_go_duration("1.5h").unwrap(),
        Duration::from_secs(5400)
    );
    assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
    assert!(parse_go_duration("").is_err());
    assert_eq!(ram_in_bytes("1024").unwrap(), 1024);
    assert_eq!(ram_in_bytes("512kb").unwrap(), 512 * 1024);
    assert_eq!(ram_in_bytes("1.5g").unwrap(), 1536 * 1024 * 1024);
    assert_eq!(parse_nano_cpus("2").unwrap(), 2_000_000_000);
    assert_eq!(parse_nano_cpus("0.001").unwrap(), 1_000_000);
    let range = parse_publish("8080-8081:80-81").unwrap();
    assert_eq!(
        range
            .iter()
            .map(|p| (p.published_port, p.target_port))
            .collect::<Vec<_>>(),
        vec![(8080, 80), (8081, 81)]
    );
    let dynamic = parse_publish("80").unwrap();
    assert_eq!((dynamic[0].published_port, dynamic[0].target_port), (0, 80));
}

fn ts(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

fn service(id: &str, name: &str, mode: service_spec::Mode, image: &str) -> Service {
    Service {
        meta: Some(Meta {
            id: id.into(),
            ..Default::default()
        }),
        spec: Some(ServiceSpec {
            annotations: Some(Annotations {
                name: name.into(),
                ..Default::default()
            }),
            task: Some(TaskSpec {
                runtime: Some(task_spec::Runtime::Container(ContainerSpec {
                    image: image.into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            mode: Some(mode),
            ..Default::default()
        }),
        spec_version: Some(Version { index: 7 }),
        ..Default::default()
    }
}

#[test]
fn ls_renders_like_docker() {
    let mut web = service(
        "a9cn3p0ovg5jcz30rzz89lyfz",
        "web",
        service_spec::Mode::Replicated(ReplicatedService { replicas: 2 }),
        "containous/whoami:latest@sha256:abcd",
    );
    web.endpoint = Some(Endpoint {
        ports: vec![
            PortConfig {
                published_port: 8080,
                target_port: 80,
                ..Default::default()
            },
            PortConfig {
                published_port: 9000,
                target_port: 90,
                publish_mode: port_config::PublishMode::Host as i32,
                ..Default::default()
            },
        ],
        ..Default::default()
    });
    let job = service(
        "jobjobjobjobjobjobjobjobj",
        "batch",
        service_spec::Mode::ReplicatedJob(ReplicatedJob {
            max_concurrent: 2,
            total_completions: 5,
        }),
        "busybox",
    );
    let global = service(
        "globalglobalglobalglobal1",
        "agent",
        service_spec::Mode::Global(Default::default()),
        "busybox@sha256:ff",
    );
    let statuses: HashMap<String, ServiceStatus> = [
        ServiceStatus {
            service_id: "a9cn3p0ovg5jcz30rzz89lyfz".into(),
            desired_tasks: 2,
            running_tasks: 2,
            completed_tasks: 0,
        },
        ServiceStatus {
            service_id: "jobjobjobjobjobjobjobjobj".into(),
            desired_tasks: 2,
            running_tasks: 1,
            completed_tasks: 3,
        },
        ServiceStatus {
            service_id: "globalglobalglobalglobal1".into(),
            desired_tasks: 3,
            running_tasks: 3,
            completed_tasks: 0,
        },
    ]
    .into_iter()
    .map(|s| (s.service_id.clone(), s))
    .collect();
    let out = render::render_ls(&[web, job, global], &statuses);
    assert_eq!(
        out,
        "ID             NAME      MODE             REPLICAS              IMAGE                      PORTS\n\
         globalglobal   agent     global           3/3                   busybox@sha256:ff\n\
         jobjobjobjob   batch     replicated job   1/2 (3/5 completed)   busybox\n\
         a9cn3p0ovg5j   web       replicated       2/2                   containous/whoami:latest   *:8080->80/tcp\n"
    );
    assert_eq!(render::render_ls_quiet(&[]), "");
}

#[test]
fn ls_folds_port_ranges_and_marks_max_per_node() {
    let mut s = service(
        "x",
        "x",
        service_spec::Mode::Replicated(ReplicatedService { replicas: 1 }),
        "nginx",
    );
    s.spec.as_mut().unwrap().endpoint = Some(shoal_proto::v1::EndpointSpec {
        mode: 0,
        ports: super::opts::parse_publish("8080-8082:80-82").unwrap(),
    });
    assert_eq!(render::ports(&s), "*:8080-8082->80-82/tcp");
    s.spec.as_mut().unwrap().task.as_mut().unwrap().placement = Some(shoal_proto::v1::Placement {
        max_replicas: 1,
        ..Default::default()
    });
    let st = ServiceStatus {
        desired_tasks: 1,
        running_tasks: 1,
        ..Default::default()
    };
    assert_eq!(render::replicas(&s, Some(&st)), "1/1 (max 1 per node)");
}

fn task(service_id: &str, slot: u64, node: &str, state: TaskState, desired: TaskState) -> Task {
    Task {
        meta: Some(Meta {
            id: format!("t{slot}{node}{}", state as i32),
            created_at: Some(ts(SystemTime::now())),
            ..Default::default()
        }),
        service_id: service_id.into(),
        slot,
        node_id: node.into(),
        status: Some(TaskStatus {
            state: state as i32,
            timestamp: Some(ts(SystemTime::now())),
            ..Default::default()
        }),
        desired_state: desired as i32,
        spec_version: Some(Version { index: 7 }),
        ..Default::default()
    }
}

#[test]
fn ps_groups_several_services_with_history_rows() {
    let now = SystemTime::now();
    let mut names = crate::commands::task::Names::default();
    names.services.insert("s1".into(), "web".into());
    names.services.insert("s2".into(), "myweb".into());
    names.nodes.insert("n1".into(), "docker-node02".into());
    let mut old = task("s1", 3, "n1", TaskState::Shutdown, TaskState::Shutdown);
    old.meta.as_mut().unwrap().created_at = Some(ts(now - Duration::from_secs(300)));
    old.meta.as_mut().unwrap().id = "l9jtbswl2x22aaaaaaaaaaaaa".into();
    let mut new = task("s1", 3, "n1", TaskState::Running, TaskState::Running);
    new.meta.as_mut().unwrap().id = "t3gjvsgtpuqlaaaaaaaaaaaaa".into();
    let other = task("s2", 1, "n1", TaskState::Running, TaskState::Running);
    let out = crate::commands::task::render(&[old, other, new], &names, now, true);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("ID "), "{out}");
    assert!(lines[1].contains(" myweb.1 "), "{out}");
    assert!(lines[2].starts_with("t3gjvsgtpuql   web.3 "), "{out}");
    assert!(lines[3].starts_with("l9jtbswl2x22    \\_ web.3 "), "{out}");
    assert!(lines[3].contains("docker-node02"), "{out}");
}

/// `t` as a task of `svc`'s current task spec.
fn current(svc: &Service, mut t: Task) -> Task {
    t.spec = svc.spec.as_ref().and_then(|s| s.task.clone());
    t
}

fn active(nodes: &[&str]) -> HashSet<String> {
    nodes.iter().map(|n| n.to_string()).collect()
}

#[test]
fn progress_of_a_converged_replicated_service() {
    let svc = service(
        "s1",
        "web",
        service_spec::Mode::Replicated(ReplicatedService { replicas: 3 }),
        "nginx",
    );
    let tasks: Vec<Task> = (1..=3)
        .map(|slot| {
            current(
                &svc,
                task("s1", slot, "n1", TaskState::Running, TaskState::Running),
            )
        })
        .collect();
    let mut tracker = Tracker::new();
    let snap = tracker.update(&svc, &tasks, &active(&["n1"]), false);
    assert!(snap.converged);
    let mut display = Display::new(false);
    let out = display.show(&snap.rows);
    let full = format!("[{}>]", "=".repeat(50));
    assert_eq!(
        out,
        format!(
            "overall progress: 3 out of 3 tasks\n1/3: running   {full}\n2/3: running   {full}\n3/3: running   {full}\n"
        )
    );
    // Unchanged rows are not printed again off a terminal.
    assert_eq!(display.show(&snap.rows), "");
    assert_eq!(
        display.show(&[("verify".into(), "Service converged".into())]),
        "verify: Service converged\n"
    );
}

#[test]
fn progress_shows_states_errors_and_prefers_the_live_task() {
    let svc = service(
        "s1",
        "web",
        service_spec::Mode::Replicated(ReplicatedService { replicas: 3 }),
        "nginx",
    );
    let mut pending = current(
        &svc,
        task("s1", 1, "", TaskState::Pending, TaskState::Running),
    );
    pending.status.as_mut().unwrap().err =
        "no suitable node (scheduling constraints not satisfied on 3 nodes)".into();
    let failed = {
        let mut t = current(
            &svc,
            task("s1", 2, "n1", TaskState::Failed, TaskState::Shutdown),
        );
        t.status.as_mut().unwrap().err = "task: non-zero exit (1)".into();
        t
    };
    let retry = current(
        &svc,
        task("s1", 2, "n1", TaskState::Preparing, TaskState::Running),
    );
    let stale = {
        let mut t = task("s1", 3, "n1", TaskState::Running, TaskState::Running);
        t.spec_version = Some(Version { index: 6 });
        t.spec = Some(TaskSpec::default());
        t
    };
    let tasks = vec![pending.clone(), failed.clone(), retry, stale];
    let snap = Tracker::new().update(&svc, &tasks, &active(&["n1"]), false);
    assert!(!snap.converged);
    assert_eq!(
        snap.rows[0],
        ("overall progress".into(), "0 out of 3 tasks".into())
    );
    assert_eq!(
        snap.rows[1],
        (
            "1/3".into(),
            "no suitable node (scheduling constraints not satisfied on 3 nodes)".into()
        )
    );
    assert_eq!(
        snap.rows[2],
        ("2/3".into(), format!("preparing {}", bar(6, 9)))
    );
    assert_eq!(
        snap.rows[3],
        ("3/3".into(), String::new()),
        "an outdated task is not shown"
    );
    assert_eq!(
        bar(3, 9),
        format!("[{}>{}]", "=".repeat(16), " ".repeat(34))
    );
    let f = failures(&svc, &[pending, failed]);
    assert_eq!(
        f,
        vec![
            "1/3: no suitable node (scheduling constraints not satisfied on 3 nodes)".to_string(),
            "2/3: task: non-zero exit (1)".to_string()
        ]
    );
    assert_eq!(trunc_error(&"x".repeat(80)).chars().count(), 75);
}

#[test]
fn progress_after_a_scale_counts_tasks_of_the_same_task_spec() {
    let svc = service(
        "s1",
        "web",
        service_spec::Mode::Replicated(ReplicatedService { replicas: 2 }),
        "nginx",
    );
    let tasks: Vec<Task> = (1..=2)
        .map(|slot| {
            let mut t = task("s1", slot, "n1", TaskState::Running, TaskState::Running);
            t.spec_version = Some(Version { index: 3 });
            t.spec = svc.spec.as_ref().unwrap().task.clone();
            t
        })
        .collect();
    let snap = Tracker::new().update(&svc, &tasks, &active(&["n1"]), false);
    assert!(snap.converged, "{:?}", snap.rows);
}

#[test]
fn progress_of_global_services_is_per_node_and_skips_down_nodes() {
    let svc = service(
        "s1",
        "agent",
        service_spec::Mode::Global(Default::default()),
        "busybox",
    );
    let snap = Tracker::new().update(&svc, &[], &active(&["n1"]), false);
    assert_eq!(
        snap.rows,
        vec![("overall progress".into(), "waiting for new tasks".into())]
    );
    let tasks = vec![
        task(
            "s1",
            0,
            "nodeaaaaaaaaaaaaaaaaaaaaa",
            TaskState::Running,
            TaskState::Running,
        ),
        task(
            "s1",
            0,
            "nodebbbbbbbbbbbbbbbbbbbbb",
            TaskState::Starting,
            TaskState::Running,
        ),
    ];
    let tasks: Vec<Task> = tasks.into_iter().map(|t| current(&svc, t)).collect();
    let snap = Tracker::new().update(
        &svc,
        &tasks,
        &active(&["nodeaaaaaaaaaaaaaaaaaaaaa", "nodebbbbbbbbbbbbbbbbbbbbb"]),
        false,
    );
    assert_eq!(snap.rows[0].1, "1 out of 2 tasks");
    assert_eq!(snap.rows[1].0, "nodeaaaaaaaa");
    assert!(snap.rows[1].1.starts_with("running   [="));
    assert!(snap.rows[2].1.starts_with("starting  [="));
    assert!(!snap.converged);
}

#[test]
fn progress_of_a_replicated_job_counts_completions() {
    let svc = service(
        "s1",
        "batch",
        service_spec::Mode::ReplicatedJob(ReplicatedJob {
            max_concurrent: 2,
            total_completions: 3,
        }),
        "busybox",
    );
    let tasks = vec![
        task("s1", 1, "n1", TaskState::Complete, TaskState::Complete),
        task("s1", 2, "n1", TaskState::Running, TaskState::Complete),
    ];
    let snap = Tracker::new().update(&svc, &tasks, &active(&["n1"]), false);
    assert!(snap.job && !snap.converged);
    assert!(
        snap.rows[0].1.starts_with("1 out of 3 complete ["),
        "{:?}",
        snap.rows
    );
    assert_eq!(
        snap.rows[1],
        ("active tasks".into(), "1 out of 2 tasks".into())
    );
    let done: Vec<Task> = (1..=3)
        .map(|s| task("s1", s, "n1", TaskState::Complete, TaskState::Complete))
        .collect();
    assert!(
        Tracker::new()
            .update(&svc, &done, &active(&["n1"]), false)
            .converged
    );
}

#[test]
fn terminal_display_redraws_in_place() {
    let mut d = Display::new(true);
    let first = d.show(&[
        ("overall progress".into(), "0 out of 1 tasks".into()),
        ("1/1".into(), String::new()),
    ]);
    assert_eq!(
        first,
        "\x1b[2Koverall progress: 0 out of 1 tasks\n\x1b[2K1/1:\n"
    );
    let second = d.show(&[("overall progress".into(), "1 out of 1 tasks".into())]);
    assert!(second.starts_with("\x1b[2A"), "{second:?}");
    assert!(second.contains("1 out of 1 tasks"));
}

#[test]
fn scale_specifiers() {
    assert_eq!(parse_scale("web=5").unwrap(), ("web".to_string(), 5));
    assert!(
        parse_scale("web")
            .unwrap_err()
            .contains("invalid scale specifier 'web'")
    );
    assert_eq!(
        parse_scale("web=-1").unwrap_err(),
        "web: invalid replicas value -1: invalid digit found in string"
    );
    let mut s = service(
        "s",
        "web",
        service_spec::Mode::Replicated(ReplicatedService { replicas: 1 }),
        "x",
    )
    .spec
    .unwrap();
    apply_scale(&mut s, 4).unwrap();
    assert_eq!(
        s.mode,
        Some(service_spec::Mode::Replicated(ReplicatedService {
            replicas: 4
        }))
    );
    let mut g = service(
        "s",
        "g",
        service_spec::Mode::Global(Default::default()),
        "x",
    )
    .spec
    .unwrap();
    assert_eq!(
        apply_scale(&mut g, 2).unwrap_err(),
        "scale can only be used with replicated or replicated-job mode"
    );
}

#[test]
fn log_lines_carry_docker_prefixes() {
    let msg = LogMessage {
        service_id: "s1".into(),
        service_name: "web".into(),
        task_id: "yf5uqm1kzx6dbt7n26e4akhsu".into(),
        slot: 1,
        node_id: "n1".into(),
        stream: 0,
        timestamp: Some(prost_types::Timestamp {
            seconds: 1592632637,
            nanos: 0,
        }),
        data: b"hello\n".to_vec(),
    };
    let nodes: HashMap<String, String> = [("n1".to_string(), "swarm-worker1".to_string())].into();
    let fmt = LogFormat {
        slot_digits: 2,
        ..Default::default()
    };
    assert_eq!(
        format_log(&msg, &fmt, &nodes),
        "web.1.yf5uqm1kzx6d@swarm-worker1     | hello"
    );
    let fmt = LogFormat {
        slot_digits: 1,
        no_task_ids: true,
        timestamps: true,
        ..Default::default()
    };
    assert_eq!(
        format_log(&msg, &fmt, &nodes),
        "2020-06-20T05:57:17Z web.1@swarm-worker1    | hello"
    );
    let fmt = LogFormat {
        raw: true,
        ..Default::default()
    };
    assert_eq!(format_log(&msg, &fmt, &nodes), "hello");
    assert_eq!(parse_tail("all").unwrap(), -1);
    assert_eq!(parse_tail("10").unwrap(), 10);
    assert!(parse_tail("ten").is_err());
}

#[test]
fn inspect_pretty_and_json() {
    let s = spec(&[
        "--name",
        "web",
        "--replicas",
        "2",
        "--constraint",
        "node.role==worker",
        "--restart-condition",
        "none",
        "--update-parallelism",
        "2",
        "--reserve-memory",
        "64M",
        "-p",
        "8080:80",
        "nginx:latest",
        "nginx",
        "-g",
    ]);
    let svc = Service {
        meta: Some(Meta {
            id: "abc".into(),
            ..Default::default()
        }),
        spec: Some(s),
        ..Default::default()
    };
    let pretty = render::render_pretty(&svc, SystemTime::now());
    for want in [
        "ID:\t\tabc\n",
        "Name:\t\tweb\n",
        "Service Mode:\tReplicated\n Replicas:\t2\n",
        "Placement:\n Constraints:\t[node.role==worker]\n",
        "UpdateConfig:\n Parallelism:\t2\n On failure:\tpause\n",
        " Update order:      stop-first\n",
        "RestartPolicy:\n Condition:\tnone\n",
        "ContainerSpec:\n Image:\t\tnginx:latest\n Args:\t\tnginx -g \n",
        "Resources:\n Reservations:\n  Memory:\t64MiB\n",
        "Endpoint Mode:\tvip\n",
        "Ports:\n PublishedPort = 8080\n  Protocol = tcp\n  TargetPort = 80\n  PublishMode = ingress\n",
    ] {
        assert!(pretty.contains(want), "missing {want:?} in:\n{pretty}");
    }
    let json = render::inspect_json(&svc);
    assert_eq!(json["ID"], "abc");
    assert_eq!(json["Spec"]["Mode"]["Replicated"]["Replicas"], 2);
    assert_eq!(
        json["Spec"]["TaskTemplate"]["ContainerSpec"]["Args"][1],
        "-g"
    );
    assert_eq!(
        json["Spec"]["TaskTemplate"]["RestartPolicy"]["Condition"],
        "none"
    );
    assert_eq!(
        json["Spec"]["EndpointSpec"]["Ports"][0]["PublishedPort"],
        8080
    );
    assert!(render::render_inspect(&[svc]).starts_with("[\n    {"));
}

// ---------------------------------------------------------------------------
// service update / rollback
// ---------------------------------------------------------------------------

fn update_args(args: &[&str]) -> UpdateArgs {
    let mut argv = vec!["shoal", "service", "update"];
    argv.extend_from_slice(args);
    argv.push("web");
    let cli = Cli::try_parse_from(argv).expect("parses");
    match cli.command {
        Command::Service(ServiceCommand::Update(a)) => *a,
        other => panic!("not update: {other:?}"),
    }
}

/// `base` after `service update <args> web`.
fn updated(base: &ServiceSpec, args: &[&str]) -> anyhow::Result<ServiceSpec> {
    let mut spec = base.clone();
    update_args(args).apply(&mut spec)?;
    Ok(spec)
}

fn seed_spec() -> ServiceSpec {
    spec(&[
        "--name",
        "web",
        "--replicas",
        "3",
        "-e",
        "A=1",
        "-e",
        "B=2",
        "-l",
        "tier=front",
        "--container-label",
        "c=1",
        "--constraint",
        "node.role==worker",
        "--placement-pref",
        "spread=node.labels.zone",
        "-p",
        "80:80",
        "-p",
        "53:53/udp",
        "--mount",
        "type=bind,source=/srv,target=/data",
        "nginx:1.13.7-alpine",
        "nginx",
        "-g",
        "daemon off;",
    ])
}

fn placement_of(spec: &ServiceSpec) -> shoal_proto::v1::Placement {
    spec.task.as_ref().unwrap().placement.clone().unwrap()
}

#[test]
fn update_without_flags_sends_the_spec_unchanged() {
    let base = seed_spec();
    assert_eq!(updated(&base, &[]).unwrap(), base);
    // Flags about following change nothing either.
    assert_eq!(
        updated(&base, &["-d", "-q", "--timeout", "1m"]).unwrap(),
        base
    );
}

#[test]
fn update_image_and_args() {
    let base = seed_spec();
    let s = updated(
        &base,
        &[
            "--image",
            "nginx:1.13.12-alpine",
            "--args",
            "nginx -g 'daemon off;' \"a b\" c\\ d",
        ],
    )
    .unwrap();
    let c = container(&s);
    assert_eq!(c.image, "nginx:1.13.12-alpine");
    assert_eq!(c.args, vec!["nginx", "-g", "daemon off;", "a b", "c d"]);
    // Everything else as it was.
    assert_eq!(c.env, container(&base).env);
    assert_eq!(s.endpoint, base.endpoint);
    assert!(
        updated(&base, &["--args", "'open"])
            .unwrap_err()
            .to_string()
            .starts_with("invalid argument \"'open\" for \"--args\" flag: EOF found")
    );
}

#[test]
fn update_env_and_labels_add_replace_and_remove_by_key() {
    let base = seed_spec();
    let s = updated(
        &base,
        &[
            "--env-add",
            "A=9",
            "--env-add",
            "C=3",
            "--env-rm",
            "B",
            "--label-add",
            "x=1",
            "--label-rm",
            "tier",
            "--container-label-add",
            "d=4",
            "--container-label-rm",
            "c",
        ],
    )
    .unwrap();
    let c = container(&s);
    assert_eq!(c.env, vec!["A=9", "C=3"], "replaced in place, new last");
    let labels = s.annotations.clone().unwrap().labels;
    assert_eq!(labels.get("x").map(String::as_str), Some("1"));
    assert!(!labels.contains_key("tier"));
    assert_eq!(c.labels.get("d").map(String::as_str), Some("4"));
    assert!(!c.labels.contains_key("c"));
    assert!(
        updated(&base, &["--env-add", "=x"])
            .unwrap_err()
            .to_string()
            .contains("\"--env-add\"")
    );
}

#[test]
fn update_placement_constraints_and_preferences() {
    let base = seed_spec();
    let s = updated(
        &base,
        &[
            "--constraint-add",
            "node.labels.zone==east",
            "--constraint-add",
            "engine.labels.x==y",
            "--constraint-rm",
            "node.role==worker",
            "--placement-pref-rm",
            "spread=node.labels.zone",
            "--placement-pref-add",
            "spread=node.labels.rack",
            "--replicas-max-per-node",
            "2",
        ],
    )
    .unwrap();
    let p = placement_of(&s);
    assert_eq!(
        p.constraints,
        vec!["engine.labels.x==y", "node.labels.zone==east"],
        "sorted, as docker keeps them"
    );
    assert_eq!(p.preferences.len(), 1);
    assert_eq!(p.preferences[0].spread_descriptor, "node.labels.rack");
    assert_eq!(p.max_replicas, 2);
    assert!(
        updated(&base, &["--placement-pref-add", "pack=x"])
            .unwrap_err()
            .to_string()
            .contains("\"--placement-pref-add\"")
    );
}

#[test]
fn update_ports_add_and_remove_by_target() {
    let base = seed_spec();
    let ports = |s: &ServiceSpec| {
        s.endpoint
            .clone()
            .unwrap_or_default()
            .ports
            .iter()
            .map(|p| (p.published_port, p.target_port, p.protocol))
            .collect::<Vec<_>>()
    };
    let udp = port_config::Protocol::Udp as i32;
    // Removing by target port: 80/tcp goes, 53/udp stays; the new one is added.
    let s = updated(&base, &["--publish-rm", "80", "--publish-add", "8080:80"]).unwrap();
    assert_eq!(ports(&s), vec![(53, 53, udp), (8080, 80, 0)]);
    // The seed's `--publish-add 80:80` on a service that has it: no duplicate.
    let s = updated(&base, &["--publish-add", "80:80"]).unwrap();
    assert_eq!(ports(&s), vec![(53, 53, udp), (80, 80, 0)]);
    // A removal names the protocol when it is not tcp.
    let s = updated(&base, &["--publish-rm", "53"]).unwrap();
    assert_eq!(ports(&s), vec![(53, 53, udp), (80, 80, 0)]);
    let s = updated(&base, &["--publish-rm", "53/udp"]).unwrap();
    assert_eq!(ports(&s), vec![(80, 80, 0)]);
    let none = updated(&spec(&["busybox"]), &["--publish-add", "9000:90"]).unwrap();
    assert_eq!(ports(&none), vec![(9000, 90, 0)]);
    assert!(
        updated(&base, &["--publish-add", "80:70000"])
            .unwrap_err()
            .to_string()
            .starts_with("invalid argument \"80:70000\" for \"--publish-add\" flag")
    );
}

#[test]
fn update_mounts_by_target() {
    let base = seed_spec();
    let s = updated(
        &base,
        &[
            "--mount-add",
            "type=volume,source=vol,target=/data",
            "--mount-add",
            "type=tmpfs,target=/tmp",
        ],
    )
    .unwrap();
    let m = container(&s).mounts;
    assert_eq!(m.len(), 2, "{m:?}");
    assert_eq!((m[0].source.as_str(), m[0].target.as_str()), ("", "/tmp"));
    assert_eq!(m[1].r#type, mount::Type::Volume as i32, "replaced /data");
    assert_eq!(m[1].source, "vol");
    let s = updated(&base, &["--mount-rm", "/data"]).unwrap();
    assert!(container(&s).mounts.is_empty());
    assert_eq!(
        updated(
            &base,
            &[
                "--mount-add",
                "source=a,target=/x",
                "--mount-add",
                "source=b,target=/x"
            ]
        )
        .unwrap_err()
        .to_string(),
        "duplicate mount target"
    );
}

#[test]
fn update_replicas_resources_restart_and_configs_keep_what_is_not_given() {
    let base = spec(&[
        "--replicas",
        "3",
        "--reserve-memory",
        "64M",
        "--restart-condition",
        "none",
        "--update-parallelism",
        "2",
        "--rollback-order",
        "start-first",
        "busybox",
    ]);
    let s = updated(
        &base,
        &[
            "--replicas",
            "5",
            "--reserve-cpu",
            "0.5",
            "--restart-max-attempts",
            "3",
            "--update-delay",
            "5s",
            "--rollback-parallelism",
            "0",
            "--stop-grace-period",
            "3s",
            "-w",
            "/srv",
            "-u",
            "nobody",
            "--hostname",
            "h",
        ],
    )
    .unwrap();
    assert_eq!(
        s.mode,
        Some(service_spec::Mode::Replicated(ReplicatedService {
            replicas: 5
        }))
    );
    let t = s.task.clone().unwrap();
    let r = t.resources.unwrap().reservations.unwrap();
    assert_eq!((r.nano_cpus, r.memory_bytes), (500_000_000, 64 << 20));
    let rp = t.restart.unwrap();
    assert_eq!(rp.condition, restart_policy::Condition::None as i32);
    assert_eq!(rp.max_attempts, 3);
    let u = s.update.unwrap();
    assert_eq!((u.parallelism, u.delay.unwrap().seconds), (2, 5));
    let rb = s.rollback.unwrap();
    assert_eq!(rb.parallelism, 0);
    assert_eq!(rb.order, update_config::UpdateOrder::StartFirst as i32);
    let c = container(&s);
    assert_eq!(c.stop_grace_period.unwrap().seconds, 3);
    assert_eq!(
        (c.dir.as_str(), c.user.as_str(), c.hostname.as_str()),
        ("/srv", "nobody", "h")
    );
    // A service without an update config gets Swarm's defaults around the flag.
    let plain = updated(&spec(&["busybox"]), &["--update-order", "start-first"]).unwrap();
    let u = plain.update.unwrap();
    assert_eq!(u.parallelism, 1);
    assert_eq!(u.failure_action, update_config::FailureAction::Pause as i32);
    assert_eq!(u.order, update_config::UpdateOrder::StartFirst as i32);
    assert!(plain.rollback.is_none());
    // Restart flags on a service without a policy start from condition any.
    let rp = updated(&spec(&["busybox"]), &["--restart-delay", "1s"])
        .unwrap()
        .task
        .unwrap()
        .restart
        .unwrap();
    assert_eq!(rp.condition, restart_policy::Condition::Any as i32);
    assert_eq!(rp.delay.unwrap().seconds, 1);
}

#[test]
fn update_refuses_what_docker_refuses() {
    let global = spec(&["--mode", "global", "busybox"]);
    assert_eq!(
        updated(&global, &["--replicas", "2"])
            .unwrap_err()
            .to_string(),
        "replicas can only be used with replicated mode"
    );
    let job = spec(&["--mode", "replicated-job", "busybox"]);
    assert_eq!(
        updated(&job, &["--update-parallelism", "2"])
            .unwrap_err()
            .to_string(),
        "update and rollback configuration is not supported for jobs"
    );
    let base = seed_spec();
    assert_eq!(
        updated(&base, &["--replicas", "-1"])
            .unwrap_err()
            .to_string(),
        "invalid argument \"-1\" for \"--replicas\" flag: value must not be negative"
    );
    assert!(
        updated(&base, &["--update-failure-action", "explode"])
            .unwrap_err()
            .to_string()
            .contains("\"--update-failure-action\"")
    );
    assert!(
        updated(&base, &["--rollback-failure-action", "rollback"])
            .unwrap_err()
            .to_string()
            .contains("\"--rollback-failure-action\"")
    );
}

#[test]
fn update_force_bumps_the_counter_each_time() {
    let base = seed_spec();
    let once = updated(&base, &["--force"]).unwrap();
    assert_eq!(once.task.as_ref().unwrap().force_update, 1);
    let twice = updated(&once, &["--force"]).unwrap();
    assert_eq!(twice.task.as_ref().unwrap().force_update, 2);
    // Only the counter changed: the runtime is as it was.
    assert_eq!(
        twice.task.as_ref().unwrap().runtime,
        base.task.as_ref().unwrap().runtime
    );
}

#[test]
fn update_rollback_sends_the_previous_spec_request_and_takes_no_other_flag() {
    let base = seed_spec();
    assert_eq!(updated(&base, &["--rollback"]).unwrap(), base);
    assert_eq!(updated(&base, &["--rollback", "-d", "-q"]).unwrap(), base);
    for other in [
        vec!["--image", "x"],
        vec!["--force"],
        vec!["--env-add", "A=1"],
        vec!["--replicas", "2"],
        vec!["--no-healthcheck"],
    ] {
        let mut args = vec!["--rollback"];
        args.extend(other.iter().copied());
        assert_eq!(
            updated(&base, &args).unwrap_err().to_string(),
            "other flags may not be combined with --rollback",
            "{other:?}"
        );
    }
    let svc = Service {
        meta: Some(Meta {
            id: "svc1".into(),
            version: Some(Version { index: 42 }),
            ..Default::default()
        }),
        spec: Some(base.clone()),
        ..Default::default()
    };
    let req = update_request(&svc, base.clone(), true);
    assert_eq!(req.service_id, "svc1");
    assert_eq!(req.service_version, Some(Version { index: 42 }));
    assert_eq!(
        req.rollback,
        shoal_proto::v1::update_service_request::Rollback::Previous as i32
    );
    let plain = update_request(&svc, base, false);
    assert_eq!(
        plain.rollback,
        shoal_proto::v1::update_service_request::Rollback::None as i32
    );
    // `service rollback` is `update --rollback`.
    let cli = Cli::try_parse_from(["shoal", "service", "rollback", "-d", "web"]).unwrap();
    match cli.command {
        Command::Service(ServiceCommand::Rollback(r)) => {
            assert!(r.follow.detach);
            assert_eq!(r.target, "web");
        }
        other => panic!("not rollback: {other:?}"),
    }
}

#[test]
fn update_of_a_process_service_replaces_the_arguments_after_the_program() {
    let base = spec(&["--process", "sh", "-c", "sleep 60"]);
    let s = updated(&base, &["--args", "-c 'sleep 120'", "--env-add", "X=1"]).unwrap();
    match s.task.unwrap().runtime.unwrap() {
        task_spec::Runtime::Process(p) => {
            assert_eq!(p.command, vec!["sh"]);
            assert_eq!(p.args, vec!["-c", "sleep 120"]);
            assert_eq!(p.env, vec!["X=1"]);
        }
        other => panic!("not a process: {other:?}"),
    }
    for flag in [
        vec!["--image", "x"],
        vec!["--mount-add", "target=/x"],
        vec!["--container-label-add", "a=b"],
        vec!["--user", "nobody"],
    ] {
        let e = updated(&base, &flag).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{} applies to containers", flag[0])),
            "{e}"
        );
    }
}

#[test]
fn split_words_as_docker_shlex() {
    use super::update::split_words;
    assert_eq!(split_words("").unwrap(), Vec::<String>::new());
    assert_eq!(split_words("  a  b ").unwrap(), vec!["a", "b"]);
    assert_eq!(
        split_words(r#"sh -c "echo \"hi\"; exit 1""#).unwrap(),
        vec!["sh", "-c", "echo \"hi\"; exit 1"]
    );
    assert_eq!(split_words("'a'\"b\"c").unwrap(), vec!["abc"]);
    assert_eq!(split_words("''").unwrap(), vec![""]);
    assert!(split_words("\"open").is_err());
    assert!(split_words("trailing\\").is_err());
}

// ---------------------------------------------------------------------------
// health flags
// ---------------------------------------------------------------------------

fn health_of(spec: &ServiceSpec) -> Option<shoal_proto::v1::HealthConfig> {
    match spec.task.as_ref()?.runtime.as_ref()? {
        task_spec::Runtime::Container(c) => c.healthcheck.clone(),
        task_spec::Runtime::Process(p) => p.healthcheck.clone(),
    }
}

#[test]
fn create_health_flags() {
    assert!(
        health_of(&spec(&["busybox"])).is_none(),
        "inherit the image's"
    );
    let h = health_of(&spec(&[
        "--health-cmd",
        "wget -q -O- localhost",
        "--health-interval",
        "5s",
        "--health-timeout",
        "1s",
        "--health-retries",
        "2",
        "--health-start-period",
        "10s",
        "busybox",
    ]))
    .unwrap();
    assert_eq!(h.test, vec!["CMD-SHELL", "wget -q -O- localhost"]);
    assert_eq!(h.interval.unwrap().seconds, 5);
    assert_eq!(h.timeout.unwrap().seconds, 1);
    assert_eq!(h.retries, 2);
    assert_eq!(h.start_period.unwrap().seconds, 10);
    // Only a duration: the image's test, these timings.
    let h = health_of(&spec(&["--health-interval", "2s", "busybox"])).unwrap();
    assert!(h.test.is_empty());
    assert_eq!(h.interval.unwrap().seconds, 2);
    let none = health_of(&spec(&["--no-healthcheck", "busybox"])).unwrap();
    assert_eq!(none.test, vec!["NONE"]);
    assert_eq!(
        err(&["--no-healthcheck", "--health-cmd", "true", "busybox"]),
        "--no-healthcheck conflicts with --health-* options"
    );
    assert_eq!(
        err(&["--no-healthcheck", "--health-retries", "1", "busybox"]),
        "--no-healthcheck conflicts with --health-* options"
    );
    assert_eq!(
        err(&["--health-interval", "-1s", "busybox"]),
        "invalid argument \"-1s\" for \"--health-interval\" flag: duration cannot be negative"
    );
    assert!(err(&["--health-timeout", "soon", "busybox"]).contains("\"--health-timeout\""));
    assert_eq!(
        err(&["--health-retries", "-2", "busybox"]),
        "invalid argument \"-2\" for \"--health-retries\" flag: value must not be negative"
    );
    // The TCP and HTTP checks are the process executor's.
    assert_eq!(
        err(&["--health-tcp", "127.0.0.1:80", "busybox"]),
        "--health-tcp applies to --process services"
    );
    let tcp = health_of(&spec(&[
        "--process",
        "--health-tcp",
        "127.0.0.1:8080",
        "sleep",
        "60",
    ]))
    .unwrap();
    assert_eq!(tcp.test, vec!["TCP", "127.0.0.1:8080"]);
    let http = health_of(&spec(&[
        "--process",
        "--health-http",
        "http://127.0.0.1:8080/health",
        "sleep",
        "60",
    ]))
    .unwrap();
    assert_eq!(http.test, vec!["HTTP", "http://127.0.0.1:8080/health"]);
    let cmd = health_of(&spec(&["--process", "--health-cmd", "true", "sleep", "60"])).unwrap();
    assert_eq!(cmd.test, vec!["CMD-SHELL", "true"]);
    assert!(err(&["--process", "--health-tcp", "localhost", "sleep", "1"]).contains("port"));
    assert!(err(&["--process", "--health-http", "ftp://x", "sleep", "1"]).contains("http:// URL"));
    assert!(
        err(&[
            "--process",
            "--health-cmd",
            "true",
            "--health-tcp",
            "127.0.0.1:1",
            "sleep",
            "1"
        ])
        .contains("conflict")
    );
    assert!(
        err(&[
            "--process",
            "--no-healthcheck",
            "--health-http",
            "http://x:1/",
            "sleep",
            "1"
        ])
        .contains("--no-healthcheck conflicts")
    );
}

#[test]
fn update_health_flags_change_only_what_is_given() {
    let base = spec(&["--health-cmd", "true", "--health-interval", "5s", "busybox"]);
    let h = health_of(&updated(&base, &["--health-retries", "7"]).unwrap()).unwrap();
    assert_eq!(h.test, vec!["CMD-SHELL", "true"]);
    assert_eq!(h.interval.unwrap().seconds, 5);
    assert_eq!(h.retries, 7);
    // An empty command goes back to the image's check.
    let h = health_of(&updated(&base, &["--health-cmd", ""]).unwrap()).unwrap();
    assert!(h.test.is_empty());
    let off = updated(&base, &["--no-healthcheck"]).unwrap();
    assert_eq!(
        health_of(&off).unwrap(),
        shoal_proto::v1::HealthConfig {
            test: vec!["NONE".into()],
            ..Default::default()
        }
    );
    // Turning timings back on after NONE drops the NONE.
    let h = health_of(&updated(&off, &["--health-interval", "1s"]).unwrap()).unwrap();
    assert!(h.test.is_empty());
    assert_eq!(h.interval.unwrap().seconds, 1);
    assert_eq!(
        updated(&base, &["--no-healthcheck", "--health-timeout", "1s"])
            .unwrap_err()
            .to_string(),
        "--no-healthcheck conflicts with --health-* options"
    );
}

// ---------------------------------------------------------------------------
// update progress
// ---------------------------------------------------------------------------

fn status(state: UpdateState, message: &str) -> UpdateStatus {
    UpdateStatus {
        state: state as i32,
        message: message.into(),
        ..Default::default()
    }
}

#[test]
fn update_progress_follows_the_update_status() {
    let paused = status(
        UpdateState::Paused,
        "update paused due to failure or early termination of task abc",
    );
    let mut w = UpdateWatch::new(Intent::Update);
    assert_eq!(w.observe(None), Verdict::Follow(None));
    assert_eq!(
        w.observe(Some(&status(UpdateState::Updating, "update in progress"))),
        Verdict::Follow(None)
    );
    assert!(!w.rolling_back() && w.may_finish());
    assert_eq!(
        w.observe(Some(&paused)),
        Verdict::Fail(
            "service update paused: update paused due to failure or early termination of task abc"
                .into()
        )
    );

    // An automatic rollback: shown once, then the update ends as a failure.
    let reason = "update rolled back due to failure or early termination of task abc";
    let mut w = UpdateWatch::new(Intent::Update);
    assert_eq!(
        w.observe(Some(&status(UpdateState::RollbackStarted, reason))),
        Verdict::Follow(Some(reason.into()))
    );
    assert_eq!(
        w.observe(Some(&status(UpdateState::RollbackStarted, reason))),
        Verdict::Follow(None)
    );
    assert!(w.rolling_back());
    assert!(
        !w.may_finish(),
        "converging back is not the update's success"
    );
    assert_eq!(
        w.observe(Some(&status(
            UpdateState::RollbackCompleted,
            "rollback completed"
        ))),
        Verdict::Fail("service rolled back: rollback completed".into())
    );
    let mut w = UpdateWatch::new(Intent::Update);
    assert_eq!(
        w.observe(Some(&status(
            UpdateState::RollbackPaused,
            "rollback paused due to failure or early termination of task abc"
        ))),
        Verdict::Fail(
            "service rollback paused: rollback paused due to failure or early termination of task abc"
                .into()
        )
    );
    let mut w = UpdateWatch::new(Intent::Update);
    assert_eq!(
        w.observe(Some(&status(UpdateState::Completed, "update completed"))),
        Verdict::Follow(None)
    );
    assert!(w.may_finish());
}

#[test]
fn requested_rollback_progress_ends_well_when_the_rollback_completes() {
    let mut w = UpdateWatch::new(Intent::Rollback);
    assert_eq!(
        w.observe(Some(&status(
            UpdateState::RollbackStarted,
            "manually requested rollback"
        ))),
        Verdict::Follow(Some("manually requested rollback".into()))
    );
    assert!(w.rolling_back() && w.may_finish());
    assert_eq!(
        w.observe(Some(&status(
            UpdateState::RollbackCompleted,
            "rollback completed"
        ))),
        Verdict::Follow(None)
    );
    // Seen only once it was over: still announced.
    let mut w = UpdateWatch::new(Intent::Rollback);
    assert_eq!(
        w.observe(Some(&status(
            UpdateState::RollbackCompleted,
            "rollback completed"
        ))),
        Verdict::Follow(Some("manually requested rollback".into()))
    );
    let mut w = UpdateWatch::new(Intent::Rollback);
    assert!(matches!(
        w.observe(Some(&status(UpdateState::RollbackPaused, "rollback paused"))),
        Verdict::Fail(m) if m == "service rollback paused: rollback paused"
    ));
}

#[test]
fn update_progress_counts_only_tasks_of_the_current_spec() {
    let old = service(
        "s1",
        "nginx",
        service_spec::Mode::Replicated(ReplicatedService { replicas: 3 }),
        "nginx:1.13.7-alpine",
    );
    let mut new = old.clone();
    let new_spec = updated(
        new.spec.as_ref().unwrap(),
        &["--image", "nginx:1.13.12-alpine"],
    )
    .unwrap();
    new.spec = Some(new_spec);
    let mut tasks: Vec<Task> = (1..=3)
        .map(|slot| {
            current(
                &old,
                task("s1", slot, "n1", TaskState::Running, TaskState::Running),
            )
        })
        .collect();
    // Slot 1 replaced (stop-first): old task shut down, new one running.
    tasks[0].desired_state = TaskState::Shutdown as i32;
    tasks[0].status.as_mut().unwrap().state = TaskState::Shutdown as i32;
    tasks.push(current(
        &new,
        task("s1", 1, "n1", TaskState::Running, TaskState::Running),
    ));
    let mut tracker = Tracker::new();
    let snap = tracker.update(&new, &tasks, &active(&["n1"]), false);
    assert_eq!(snap.rows[0].1, "1 out of 3 tasks");
    assert!(snap.rows[1].1.starts_with("running "), "{:?}", snap.rows);
    assert_eq!(snap.rows[2].1, "", "slot 2 still runs the old spec");
    assert!(!snap.converged);
    // A rollback words the overall row as docker does.
    let snap = Tracker::new().update(&old, &tasks, &active(&["n1"]), true);
    assert_eq!(snap.rows[0].1, "rolling back update: 2 out of 3 tasks");
    // --force: the same runtime with a bumped counter is not current.
    let mut forced = old.clone();
    forced.spec = Some(updated(old.spec.as_ref().unwrap(), &["--force"]).unwrap());
    let snap = Tracker::new().update(&forced, &tasks[1..3], &active(&["n1"]), false);
    assert_eq!(snap.rows[0].1, "0 out of 3 tasks");
}

// ---------------------------------------------------------------------------
// inspect --pretty update status, service ps history (seed 002)
// ---------------------------------------------------------------------------

#[test]
fn inspect_shows_the_update_status() {
    let now = SystemTime::now();
    let mut svc = service(
        "s1",
        "nginx",
        service_spec::Mode::Replicated(ReplicatedService { replicas: 3 }),
        "nginx:1.13.12-alpine",
    );
    svc.previous_spec = Some(seed_spec());
    svc.update_status = Some(UpdateStatus {
        state: UpdateState::Updating as i32,
        started_at: Some(ts(now - Duration::from_secs(2))),
        completed_at: None,
        message: "update in progress".into(),
    });
    let pretty = render::render_pretty(&svc, now);
    assert!(
        pretty.contains(
            "Service Mode:\tReplicated\n Replicas:\t3\nUpdateStatus:\n State:\t\tupdating\n Started:\t2 seconds ago\n Message:\tupdate in progress\nPlacement:\n"
        ),
        "{pretty}"
    );
    svc.update_status = Some(UpdateStatus {
        state: UpdateState::Completed as i32,
        started_at: Some(ts(now - Duration::from_secs(90))),
        completed_at: Some(ts(now - Duration::from_secs(30))),
        message: "update completed".into(),
    });
    let pretty = render::render_pretty(&svc, now);
    assert!(
        pretty.contains(
            "UpdateStatus:\n State:\t\tcompleted\n Started:\tAbout a minute ago\n Completed:\t30 seconds ago\n Message:\tupdate completed\n"
        ),
        "{pretty}"
    );
    let json = render::inspect_json(&svc);
    assert_eq!(json["UpdateStatus"]["State"], "completed");
    assert_eq!(json["UpdateStatus"]["Message"], "update completed");
    assert_eq!(json["PreviousSpec"]["Name"], "web");
    assert_eq!(
        json["PreviousSpec"]["TaskTemplate"]["ContainerSpec"]["Image"],
        "nginx:1.13.7-alpine"
    );
    // No status: no block.
    svc.update_status = None;
    assert!(!render::render_pretty(&svc, now).contains("UpdateStatus"));
    assert!(render::inspect_json(&svc).get("UpdateStatus").is_none());
}

#[test]
fn inspect_shows_healthchecks() {
    let s = spec(&[
        "--name",
        "web",
        "--health-cmd",
        "true",
        "--health-interval",
        "5s",
        "--health-retries",
        "2",
        "busybox",
    ]);
    let svc = Service {
        spec: Some(s),
        ..Default::default()
    };
    let pretty = render::render_pretty(&svc, SystemTime::now());
    assert!(
        pretty.contains(
            " Healthcheck:\n  Interval = 5s\n  Retries = 2\n  StartPeriod =\t0s\n  Timeout =\t0s\n  Tests:\n\t Test = CMD-SHELL\n\t Test = true\n"
        ),
        "{pretty}"
    );
    let json = render::inspect_json(&svc);
    let h = &json["Spec"]["TaskTemplate"]["ContainerSpec"]["Healthcheck"];
    assert_eq!(h["Test"][0], "CMD-SHELL");
    assert_eq!(h["Interval"], 5_000_000_000i64);
    assert_eq!(h["Retries"], 2);
}

#[test]
fn ps_after_update_and_rollback_matches_seed_002() {
    let now = SystemTime::now();
    let mut names = crate::commands::task::Names::default();
    names.services.insert("s1".into(), "nginx".into());
    for (id, name) in [("n1", "worker1"), ("n2", "worker2"), ("n3", "manager")] {
        names.nodes.insert(id.into(), name.into());
    }
    let image_spec = |image: &str| TaskSpec {
        runtime: Some(task_spec::Runtime::Container(ContainerSpec {
            image: image.into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    // (id, slot, node, image, state, created secs ago, status secs ago)
    let rows = [
        (
            "uru5lwrvmjn5aaaaaaaaaaaaa",
            1,
            "n1",
            "1.13.7",
            TaskState::Running,
            45,
            44,
        ),
        (
            "kct3ksqxljpuaaaaaaaaaaaaa",
            1,
            "n1",
            "1.13.12",
            TaskState::Shutdown,
            100,
            45,
        ),
        (
            "vcbkaz7q8kyaaaaaaaaaaaaaa",
            1,
            "n1",
            "1.13.7",
            TaskState::Shutdown,
            900,
            100,
        ),
        (
            "kxzfpu30mwp1aaaaaaaaaaaaa",
            2,
            "n2",
            "1.13.7",
            TaskState::Running,
            49,
            48,
        ),
        (
            "qlyxhdee0i6caaaaaaaaaaaaa",
            2,
            "n2",
            "1.13.12",
            TaskState::Shutdown,
            130,
            49,
        ),
        (
            "dshb5x0lo61saaaaaaaaaaaaa",
            2,
            "n2",
            "1.13.7",
            TaskState::Shutdown,
            900,
            130,
        ),
        (
            "4yewijsw2ryyaaaaaaaaaaaaa",
            3,
            "n3",
            "1.13.7",
            TaskState::Running,
            41,
            40,
        ),
        (
            "s5es0n52tzqxaaaaaaaaaaaaa",
            3,
            "n3",
            "1.13.12",
            TaskState::Shutdown,
            120,
            41,
        ),
        (
            "t9mczkuy8dd6aaaaaaaaaaaaa",
            3,
            "n3",
            "1.13.7",
            TaskState::Shutdown,
            900,
            125,
        ),
    ];
    // Listed in no particular order, as the manager may return them.
    let mut tasks: Vec<Task> = rows
        .iter()
        .rev()
        .map(|(id, slot, node, version, state, created, at)| {
            let mut t = task("s1", *slot, node, *state, TaskState::Running);
            let meta = t.meta.as_mut().unwrap();
            meta.id = id.to_string();
            meta.created_at = Some(ts(now - Duration::from_secs(*created)));
            t.status.as_mut().unwrap().timestamp = Some(ts(now - Duration::from_secs(*at)));
            t.spec = Some(image_spec(&format!("nginx:{version}-alpine")));
            if *state == TaskState::Shutdown {
                t.desired_state = TaskState::Shutdown as i32;
            }
            t
        })
        .collect();
    tasks.swap(0, 4);
    let out = crate::commands::task::render(&tasks, &names, now, true);
    let table: Vec<Vec<&str>> = out
        .lines()
        .map(|l| {
            l.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    let want = [
        [
            "uru5lwrvmjn5",
            "nginx.1",
            "nginx:1.13.7-alpine",
            "worker1",
            "Running",
            "Running 44 seconds ago",
        ],
        [
            "kct3ksqxljpu",
            "\\_ nginx.1",
            "nginx:1.13.12-alpine",
            "worker1",
            "Shutdown",
            "Shutdown 45 seconds ago",
        ],
        [
            "vcbkaz7q8kya",
            "\\_ nginx.1",
            "nginx:1.13.7-alpine",
            "worker1",
            "Shutdown",
            "Shutdown about a minute ago",
        ],
        [
            "kxzfpu30mwp1",
            "nginx.2",
            "nginx:1.13.7-alpine",
            "worker2",
            "Running",
            "Running 48 seconds ago",
        ],
        [
            "qlyxhdee0i6c",
            "\\_ nginx.2",
            "nginx:1.13.12-alpine",
            "worker2",
            "Shutdown",
            "Shutdown 49 seconds ago",
        ],
        [
            "dshb5x0lo61s",
            "\\_ nginx.2",
            "nginx:1.13.7-alpine",
            "worker2",
            "Shutdown",
            "Shutdown 2 minutes ago",
        ],
        [
            "4yewijsw2ryy",
            "nginx.3",
            "nginx:1.13.7-alpine",
            "manager",
            "Running",
            "Running 40 seconds ago",
        ],
        [
            "s5es0n52tzqx",
            "\\_ nginx.3",
            "nginx:1.13.12-alpine",
            "manager",
            "Shutdown",
            "Shutdown 41 seconds ago",
        ],
        [
            "t9mczkuy8dd6",
            "\\_ nginx.3",
            "nginx:1.13.7-alpine",
            "manager",
            "Shutdown",
            "Shutdown 2 minutes ago",
        ],
    ];
    assert_eq!(
        table[0],
        vec![
            "ID",
            "NAME",
            "IMAGE",
            "NODE",
            "DESIRED STATE",
            "CURRENT STATE",
            "ERROR",
            "PORTS"
        ]
    );
    for (i, row) in want.iter().enumerate() {
        assert_eq!(table[i + 1], row.to_vec(), "row {}:\n{out}", i + 1);
    }
    assert_eq!(table.len(), 10);
}

// ---------------------------------------------------------------------------
// networks: --network, --network-add / --network-rm
// ---------------------------------------------------------------------------

fn attachments(spec: &ServiceSpec) -> Vec<(String, Vec<String>)> {
    spec.task
        .as_ref()
        .unwrap()
        .networks
        .iter()
        .map(|n| (n.target.clone(), n.aliases.clone()))
        .collect()
}

#[test]
fn network_flags_become_task_attachments() {
    let s = spec(&[
        "--network",
        "my-net",
        "--network",
        "name=backend,alias=db,alias=mysql",
        "--network",
        "front,alias=www",
        "nginx",
    ]);
    assert_eq!(
        attachments(&s),
        vec![
            ("my-net".to_string(), vec![]),
            (
                "backend".to_string(),
                vec!["db".to_string(), "mysql".to_string()]
            ),
            ("front".to_string(), vec!["www".to_string()]),
        ]
    );
    assert!(s.networks.is_empty());
    // What a service cannot use is checked, then dropped, as docker does.
    let s = spec(&["--network", "name=n,ip=10.0.0.9,driver-opt=a=b", "nginx"]);
    assert_eq!(attachments(&s), vec![("n".to_string(), vec![])]);
    assert!(attachments(&spec(&["nginx"])).is_empty());
}

#[test]
fn bad_network_flags_read_like_docker() {
    assert_eq!(
        err(&["--network", "alias=x", "nginx"]),
        "invalid argument \"alias=x\" for \"--network\" flag: network name/id is not specified"
    );
    assert_eq!(
        err(&["--network", "name=x,color=red", "nginx"]),
        "invalid argument \"name=x,color=red\" for \"--network\" flag: invalid field key color"
    );
    assert_eq!(
        err(&["--network", "name=x,bogus", "nginx"]),
        "invalid argument \"name=x,bogus\" for \"--network\" flag: invalid field bogus"
    );
    assert!(err(&["--network", "name=x,ip=nope", "nginx"]).contains("unable to parse IP"));
    assert!(err(&["--network", "name=x,gw-priority=z", "nginx"]).contains("invalid gw-priority"));
}

fn attached(targets: &[(&str, &[&str])]) -> ServiceSpec {
    let mut s = spec(&["--name", "web", "nginx"]);
    s.task.as_mut().unwrap().networks = targets
        .iter()
        .map(|(t, aliases)| shoal_proto::v1::NetworkAttachmentConfig {
            target: t.to_string(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            addresses: vec![],
        })
        .collect();
    s
}

#[test]
fn network_add_and_rm_follow_docker() {
    use shoal_proto::v1::NetworkAttachmentConfig;
    let args = update_args(&[
        "--network-add",
        "name=front,alias=www",
        "--network-add",
        "back",
        "--network-rm",
        "old",
    ]);
    assert!(args.changes_networks());
    let additions = args.network_additions().unwrap();
    assert_eq!(additions.len(), 2);
    assert_eq!(additions[0].target, "front");
    assert_eq!(additions[0].aliases, vec!["www"]);
    assert!(!update_args(&["--replicas", "2"]).changes_networks());

    // The caller resolved: old → id-old, front → id-f, back → id-b.
    let mut s = attached(&[("id-old", &[]), ("id-z", &["keep"])]);
    let resolved = vec![
        (
            "front".to_string(),
            NetworkAttachmentConfig {
                target: "id-f".into(),
                aliases: vec!["www".into()],
                addresses: vec![],
            },
        ),
        (
            "back".to_string(),
            NetworkAttachmentConfig {
                target: "id-b".into(),
                ..Default::default()
            },
        ),
    ];
    let removals: HashSet<String> = ["id-old".to_string()].into();
    update::update_networks(&mut s, &removals, resolved).unwrap();
    assert_eq!(
        attachments(&s),
        vec![
            ("id-b".to_string(), vec![]),
            ("id-f".to_string(), vec!["www".to_string()]),
            ("id-z".to_string(), vec!["keep".to_string()]),
        ]
    );

    let mut s = attached(&[("id-f", &[])]);
    let again = vec![(
        "front".to_string(),
        NetworkAttachmentConfig {
            target: "id-f".into(),
            ..Default::default()
        },
    )];
    assert_eq!(
        update::update_networks(&mut s, &HashSet::new(), again)
            .unwrap_err()
            .to_string(),
        "service is already attached to network front"
    );

    // Attachments on the deprecated service-level field move to the task spec.
    let mut s = attached(&[]);
    s.networks = vec![NetworkAttachmentConfig {
        target: "id-legacy".into(),
        ..Default::default()
    }];
    update::update_networks(&mut s, &HashSet::new(), vec![]).unwrap();
    assert!(s.networks.is_empty());
    assert_eq!(attachments(&s), vec![("id-legacy".to_string(), vec![])]);

    assert_eq!(
        update_args(&["--rollback", "--network-add", "x"])
            .apply(&mut attached(&[]))
            .unwrap_err()
            .to_string(),
        "other flags may not be combined with --rollback"
    );
    assert!(
        update_args(&["--network-add", "alias=x"])
            .network_additions()
            .unwrap_err()
            .to_string()
            .contains("\"--network-add\" flag: network name/id is not specified")
    );
}

#[test]
fn inspect_shows_network_attachments() {
    let svc = Service {
        meta: Some(Meta {
            id: "abc".into(),
            ..Default::default()
        }),
        spec: Some(attached(&[("id-f", &["www"]), ("id-b", &[])])),
        ..Default::default()
    };
    let v = render::inspect_json(&svc);
    assert_eq!(
        v["Spec"]["TaskTemplate"]["Networks"],
        serde_json::json!([{"Target": "id-f", "Aliases": ["www"]}, {"Target": "id-b"}])
    );
    assert!(v["Spec"].get("Networks").is_none());
    let names: HashMap<String, String> = [("id-f".to_string(), "front".to_string())].into();
    let pretty = render::render_pretty_with_networks(&svc, SystemTime::now(), &names);
    assert!(
        pretty.contains("Networks: front id-b \nEndpoint Mode:\tvip\n"),
        "{pretty}"
    );
    assert!(!render::render_pretty(&Service::default(), SystemTime::now()).contains("Networks:"));
}

// ---------------------------------------------------------------------------
// --secret / --config and their update forms
// ---------------------------------------------------------------------------

#[test]
fn secret_and_config_flags_take_dockers_csv() {
    use super::opts::parse_file_ref;
    let r = parse_file_ref("db_pw", "secret", "--secret").unwrap();
    assert_eq!(
        r,
        FileRefOpt {
            source: "db_pw".into(),
            target: "db_pw".into(),
            uid: "0".into(),
            gid: "0".into(),
            mode: 0o444,
        }
    );
    let r = parse_file_ref(
        "source=db_pw,target=/etc/pw,uid=33,gid=33,mode=0400",
        "secret",
        "--secret",
    )
    .unwrap();
    assert_eq!(
        (
            r.source.as_str(),
            r.target.as_str(),
            r.uid.as_str(),
            r.gid.as_str(),
            r.mode
        ),
        ("db_pw", "/etc/pw", "33", "33", 0o400)
    );
    // Go's ParseUint with base 0: decimal, 0o, 0x; a target defaults to the source.
    assert_eq!(
        parse_file_ref("src=a,mode=292", "secret", "--secret")
            .unwrap()
            .mode,
        0o444
    );
    assert_eq!(
        parse_file_ref("src=a,mode=0o440", "config", "--config")
            .unwrap()
            .mode,
        0o440
    );
    assert_eq!(
        parse_file_ref("src=a,mode=0x1ff", "config", "--config")
            .unwrap()
            .mode,
        0o777
    );
    assert_eq!(
        parse_file_ref("src=a", "config", "--config")
            .unwrap()
            .target,
        "a"
    );
    // Quoted CSV fields may hold commas.
    assert_eq!(
        parse_file_ref("source=a,\"target=x,y\"", "config", "--config")
            .unwrap()
            .target,
        "x,y"
    );
    let e = |v: &str| {
        parse_file_ref(v, "secret", "--secret")
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        e("source=a,mode=abc"),
        "invalid argument \"source=a,mode=abc\" for \"--secret\" flag: invalid mode specified: strconv.ParseUint: parsing \"abc\": invalid syntax"
    );
    assert_eq!(
        e("source=a,bogus=1"),
        "invalid argument \"source=a,bogus=1\" for \"--secret\" flag: invalid field in secret request: bogus"
    );
    assert!(
        e("target=x").ends_with("source is required"),
        "{}",
        e("target=x")
    );
    assert!(
        e("a,b").ends_with("invalid field 'a' must be a key=value pair"),
        "{}",
        e("a,b")
    );
    assert!(
        parse_file_ref("src=a,x=1", "config", "--config")
            .unwrap_err()
            .to_string()
            .ends_with("invalid field in config request: x")
    );
}

#[test]
fn create_takes_secret_and_config_flags_and_the_cli_config_moved() {
    let args = parse(&[
        "--secret",
        "db_pw",
        "--secret",
        "source=tls,target=/etc/tls.pem,mode=0400",
        "--config",
        "myconf",
        "nginx",
    ]);
    let secrets = args.secret_refs().unwrap();
    assert_eq!(secrets.len(), 2);
    assert_eq!(secrets[1].target, "/etc/tls.pem");
    assert_eq!(args.config_refs().unwrap()[0].source, "myconf");
    // `--config` is the service's, the CLI's settings file is `--cli-config`.
    let cli = Cli::try_parse_from([
        "shoal",
        "--cli-config",
        "/etc/shoal.toml",
        "service",
        "create",
        "--config",
        "myconf",
        "nginx",
    ])
    .unwrap();
    assert_eq!(
        cli.config_args().config.as_deref(),
        Some(std::path::Path::new("/etc/shoal.toml"))
    );
    let dup = vec![
        FileRefOpt {
            source: "a".into(),
            target: "x".into(),
            uid: "0".into(),
            gid: "0".into(),
            mode: 0o444,
        },
        FileRefOpt {
            source: "b".into(),
            target: "x".into(),
            uid: "0".into(),
            gid: "0".into(),
            mode: 0o444,
        },
    ];
    assert_eq!(
        check_duplicate_targets(&dup, "secret")
            .unwrap_err()
            .to_string(),
        "duplicate secret target for b not allowed"
    );
    let found: HashMap<String, String> = [("a".to_string(), "id-a".to_string())].into();
    assert_eq!(
        bind_ids(&dup, &found, "secret").unwrap_err().to_string(),
        "secret not found: b"
    );
}

#[test]
fn update_adds_and_removes_secrets_and_configs_by_name() {
    use shoal_proto::v1::{ConfigReference, SecretReference};
    let mut spec = seed_spec();
    let sref = |name: &str| SecretReference {
        secret_id: format!("id-{name}"),
        secret_name: name.into(),
        target: name.into(),
        uid: "0".into(),
        gid: "0".into(),
        mode: Some(0o444),
    };
    super::update::update_secret_refs(&mut spec, &[], vec![sref("a"), sref("b")]);
    super::update::update_secret_refs(&mut spec, &["a".into()], vec![sref("c")]);
    let names: Vec<String> = container(&spec)
        .secrets
        .iter()
        .map(|r| r.secret_name.clone())
        .collect();
    assert_eq!(names, ["b", "c"]);
    super::update::update_config_refs(
        &mut spec,
        &[],
        vec![ConfigReference {
            config_id: "cid".into(),
            config_name: "conf".into(),
            target: "/etc/conf".into(),
            ..Default::default()
        }],
    );
    let args = update_args(&["--secret-add", "source=d,target=dd", "--config-rm", "conf"]);
    assert_eq!(args.secret_additions().unwrap()[0].target, "dd");
    super::update::update_config_refs(&mut spec, &args.config_rm, Vec::new());
    assert!(container(&spec).configs.is_empty());
    // The flags alone change nothing the manager must resolve first.
    assert_eq!(updated(&spec, &["--secret-rm", "b"]).unwrap(), spec);
}

#[test]
fn inspect_shows_secrets_and_configs_as_docker() {
    use shoal_proto::v1::{ConfigReference, SecretReference};
    let mut spec = seed_spec();
    super::update::update_secret_refs(
        &mut spec,
        &[],
        vec![SecretReference {
            secret_id: "sid".into(),
            secret_name: "db_pw".into(),
            target: "db_pw".into(),
            uid: "0".into(),
            gid: "0".into(),
            mode: Some(0o400),
        }],
    );
    super::update::update_config_refs(
        &mut spec,
        &[],
        vec![ConfigReference {
            config_id: "cid".into(),
            config_name: "conf".into(),
            target: "/etc/conf".into(),
            uid: "0".into(),
            gid: "0".into(),
            mode: Some(0o444),
        }],
    );
    let service = Service {
        meta: Some(Meta {
            id: "svc".into(),
            ..Default::default()
        }),
        spec: Some(spec),
        ..Default::default()
    };
    let v = render::inspect_json(&service);
    let cs = &v["Spec"]["TaskTemplate"]["ContainerSpec"];
    assert_eq!(cs["Secrets"][0]["SecretID"], "sid");
    assert_eq!(cs["Secrets"][0]["SecretName"], "db_pw");
    assert_eq!(cs["Secrets"][0]["File"]["Name"], "db_pw");
    assert_eq!(cs["Secrets"][0]["File"]["UID"], "0");
    assert_eq!(cs["Secrets"][0]["File"]["Mode"], 256);
    assert_eq!(cs["Configs"][0]["ConfigName"], "conf");
    assert_eq!(cs["Configs"][0]["File"]["Mode"], 292);
    let pretty = render::render_pretty(&service, SystemTime::now());
    assert!(
        pretty.contains("Configs:\n Target:\t/etc/conf\n  Source:\tconf\nSecrets:\n Target:\tdb_pw\n  Source:\tdb_pw\n"),
        "{pretty}"
    );
}
