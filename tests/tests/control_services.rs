//! `docker service create/update/rollback/rm/logs` semantics through the Control API of
//! a real manager process on real etcd and NATS. The logs walk-through plays the
//! workers' side on NATS itself (answering history requests, publishing lines).

use std::collections::HashMap;
use std::time::Duration;

use shoal_events::EventBus;
use shoal_events::logs::{LogHistoryResponse, LogMessage};
use shoal_proto::v1::control_client::ControlClient;
use shoal_proto::v1::{
    Annotations, ContainerSpec, CreateServiceRequest, EndpointSpec, GetServiceRequest,
    GlobalService, Mount, Node, NodeSpec, NodeStatus, Placement, PortConfig, ProcessSpec,
    RemoveServiceRequest, ReplicatedService, ResourceRequirements, Resources, RestartPolicy,
    Service, ServiceLogsRequest, ServiceSpec, Task, TaskSpec, TaskState, TaskStatus,
    UpdateServiceRequest, Version, WatchEventsRequest, node_spec, node_status, service_spec,
    task_spec, update_service_request,
};
use shoal_scenarios::{Swarm, service_names};
use shoal_store::{Object, Store};
use shoal_testkit::{Infra, wait_for};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Status};

const DEADLINE: Duration = Duration::from_secs(20);

fn container(image: &str) -> Option<task_spec::Runtime> {
    Some(task_spec::Runtime::Container(ContainerSpec {
        image: image.into(),
        ..Default::default()
    }))
}

fn spec(name: &str, image: &str, replicas: u64) -> ServiceSpec {
    ServiceSpec {
        annotations: Some(Annotations {
            name: name.into(),
            labels: HashMap::new(),
        }),
        task: Some(TaskSpec {
            runtime: container(image),
            ..Default::default()
        }),
        mode: Some(service_spec::Mode::Replicated(ReplicatedService {
            replicas,
        })),
        ..Default::default()
    }
}

fn image_of(service: &Service) -> String {
    match service
        .spec
        .as_ref()
        .and_then(|s| s.task.as_ref())
        .and_then(|t| t.runtime.as_ref())
    {
        Some(task_spec::Runtime::Container(c)) => c.image.clone(),
        _ => String::new(),
    }
}

fn version(service: &Service) -> u64 {
    service.version()
}

async fn create(
    control: &mut ControlClient<Channel>,
    spec: ServiceSpec,
) -> Result<Service, Status> {
    control
        .create_service(CreateServiceRequest { spec: Some(spec) })
        .await?
        .into_inner()
        .service
        .ok_or_else(|| Status::internal("no service in the answer"))
}

async fn get(control: &mut ControlClient<Channel>, reference: &str) -> Result<Service, Status> {
    control
        .get_service(GetServiceRequest {
            service_id: reference.into(),
            insert_defaults: false,
        })
        .await?
        .into_inner()
        .service
        .ok_or_else(|| Status::internal("no service in the answer"))
}

async fn update(
    control: &mut ControlClient<Channel>,
    id: &str,
    version: u64,
    spec: Option<ServiceSpec>,
    rollback: bool,
) -> Result<Service, Status> {
    let rollback = if rollback {
        update_service_request::Rollback::Previous
    } else {
        update_service_request::Rollback::None
    };
    control
        .update_service(UpdateServiceRequest {
            service_id: id.into(),
            service_version: Some(Version { index: version }),
            spec,
            rollback: rollback as i32,
        })
        .await?
        .into_inner()
        .service
        .ok_or_else(|| Status::internal("no service in the answer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_validates_every_field_and_stores_nothing_on_error() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let swarm = Swarm::start(&infra, "").await?;
    let mut control = swarm.manager.control(&swarm.admin).await?;

    let mut events = control
        .watch_events(WatchEventsRequest {
            kinds: vec!["service".into()],
            ..Default::default()
        })
        .await?
        .into_inner();

    let web = create(&mut control, spec("web", "nginx:alpine", 2)).await?;
    let id = web.id().to_string();
    assert_eq!(id.len(), 25);
    assert_eq!(web.spec_version, Some(Version { index: 1 }));
    assert!(web.previous_spec.is_none());
    assert_eq!(
        web.spec,
        Some(spec("web", "nginx:alpine", 2)),
        "stored as sent"
    );
    let event = tokio::time::timeout(DEADLINE, events.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("event stream ended"))??;
    assert_eq!(
        (event.kind.as_str(), event.action.as_str()),
        ("service", "create")
    );
    assert_eq!(event.id, id);

    // Found by id, name and unique id prefix; listed.
    for reference in [id.as_str(), "web", &id[..8]] {
        assert_eq!(get(&mut control, reference).await?.id(), id, "{reference}");
    }
    assert_eq!(service_names(&mut control).await?, vec!["web".to_string()]);

    // A taken name: Swarm's AlreadyExists.
    let err = create(&mut control, spec("web", "redis", 1))
        .await
        .expect_err("duplicate name");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert_eq!(err.message(), "service web already exists");

    // Every class of bad input: InvalidArgument naming the field, nothing stored.
    let with_task = |f: &dyn Fn(&mut TaskSpec)| {
        let mut s = spec("bad", "nginx", 1);
        if let Some(t) = s.task.as_mut() {
            f(t);
        }
        s
    };
    let with_container = |f: &dyn Fn(&mut ContainerSpec)| {
        with_task(&|t: &mut TaskSpec| {
            if let Some(task_spec::Runtime::Container(c)) = t.runtime.as_mut() {
                f(c);
            }
        })
    };
    let with_ports = |ports: Vec<(u32, u32)>| {
        let mut s = spec("bad", "nginx", 1);
        s.endpoint = Some(EndpointSpec {
            mode: 0,
            ports: ports
                .into_iter()
                .map(|(target, published)| PortConfig {
                    target_port: target,
                    published_port: published,
                    ..Default::default()
                })
                .collect(),
        });
        s
    };
    let cases: Vec<(&str, ServiceSpec, &str)> = vec![
        ("bad name", spec("-web", "nginx", 1), "name"),
        ("long name", spec(&"x".repeat(64), "nginx", 1), "name"),
        (
            "bad image",
            spec("bad", "Nginx:latest", 1),
            "invalid reference format",
        ),
        ("no image", spec("bad", "", 1), "image"),
        (
            "no runtime",
            with_task(&|t: &mut TaskSpec| t.runtime = None),
            "runtime",
        ),
        (
            "process without command",
            with_task(&|t: &mut TaskSpec| {
                t.runtime = Some(task_spec::Runtime::Process(ProcessSpec::default()))
            }),
            "command",
        ),
        (
            "no mode",
            ServiceSpec {
                mode: None,
                ..spec("bad", "nginx", 1)
            },
            "mode",
        ),
        (
            "bad constraint",
            with_task(&|t: &mut TaskSpec| {
                t.placement = Some(Placement {
                    constraints: vec!["node.labels.zone=east".into()],
                    ..Default::default()
                })
            }),
            "constraint",
        ),
        (
            "unknown constraint key",
            with_task(&|t: &mut TaskSpec| {
                t.placement = Some(Placement {
                    constraints: vec!["node.color==red".into()],
                    ..Default::default()
                })
            }),
            "node.color",
        ),
        ("target port 0", with_ports(vec![(0, 80)]), "ports"),
        (
            "published port too big",
            with_ports(vec![(80, 70000)]),
            "ports",
        ),
        (
            "duplicate published port",
            with_ports(vec![(80, 8080), (81, 8080)]),
            "duplicate published ports",
        ),
        (
            "empty mount target",
            with_container(&|c: &mut ContainerSpec| {
                c.mounts = vec![Mount {
                    source: "/srv".into(),
                    target: "".into(),
                    ..Default::default()
                }]
            }),
            "mount",
        ),
        (
            "reservation above limit",
            with_task(&|t: &mut TaskSpec| {
                t.resources = Some(ResourceRequirements {
                    limits: Some(Resources {
                        nano_cpus: 1_000_000_000,
                        memory_bytes: 0,
                        ..Default::default()
                    }),
                    reservations: Some(Resources {
                        nano_cpus: 2_000_000_000,
                        memory_bytes: 0,
                        ..Default::default()
                    }),
                })
            }),
            "resources",
        ),
        (
            "negative restart delay",
            with_task(&|t: &mut TaskSpec| {
                t.restart = Some(RestartPolicy {
                    delay: Some(prost_types::Duration {
                        seconds: -5,
                        nanos: 0,
                    }),
                    ..Default::default()
                })
            }),
            "restart",
        ),
    ];
    for (what, bad, field) in cases {
        let err = create(&mut control, bad).await.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(
            err.message().contains(field),
            "{what}: {field:?} not in {:?}",
            err.message()
        );
    }
    assert_eq!(service_names(&mut control).await?, vec!["web".to_string()]);

    // A port another service publishes is refused; the same port on the service
    // itself is fine.
    let mut ported = spec("api", "nginx", 1);
    ported.endpoint = Some(EndpointSpec {
        mode: 0,
        ports: vec![PortConfig {
            target_port: 80,
            published_port: 8080,
            ..Default::default()
        }],
    });
    create(&mut control, ported.clone()).await?;
    let mut clash = ported.clone();
    if let Some(a) = clash.annotations.as_mut() {
        a.name = "api2".into();
    }
    let err = create(&mut control, clash).await.expect_err("port in use");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("already in use by service 'api'"),
        "{err:?}"
    );

    // No name: one is generated, a valid service name.
    let unnamed = create(&mut control, spec("", "busybox", 1)).await?;
    let generated = unnamed
        .spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map(|a| a.name.clone())
        .unwrap_or_default();
    assert!(
        generated.contains('_')
            && generated
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_'),
        "{generated:?}"
    );
    assert_eq!(service_names(&mut control).await?.len(), 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_are_compare_and_swap_and_rollback_swaps_specs() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let swarm = Swarm::start(&infra, "").await?;
    let mut control = swarm.manager.control(&swarm.admin).await?;

    let v1_spec = spec("web", "nginx:1.25", 1);
    let created = create(&mut control, v1_spec.clone()).await?;
    let id = created.id().to_string();

    // Rollback before any update: nothing to go back to.
    let err = update(&mut control, &id, version(&created), None, true)
        .await
        .expect_err("no previous spec");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(
        err.message(),
        format!("service {id} does not have a previous spec")
    );

    // The leader writes the service's endpoint on its own after the create; a caller
    // holding the create's version has seen the current spec, so its update is not out
    // of sequence: it lands on top of the endpoint.
    let with_endpoint = wait_for("the leader to write web's endpoint", DEADLINE, || {
        let mut control = control.clone();
        let id = id.clone();
        async move {
            let s = get(&mut control, &id).await.ok()?;
            s.endpoint.is_some().then_some(s)
        }
    })
    .await?;
    assert!(version(&with_endpoint) > version(&created));
    let spec_b = spec("web", "nginx:1.25-b", 1);
    let updated = update(
        &mut control,
        &id,
        version(&created),
        Some(spec_b.clone()),
        false,
    )
    .await?;
    assert_eq!(updated.spec, Some(spec_b));
    assert_eq!(
        updated.endpoint, with_endpoint.endpoint,
        "the leader's endpoint kept"
    );

    // An update by name: previous spec kept, spec version bumped.
    let current = get(&mut control, &id).await?;
    let v2_spec = spec("web", "nginx:1.26", 3);
    let updated = update(
        &mut control,
        "web",
        version(&current),
        Some(v2_spec.clone()),
        false,
    )
    .await?;
    assert_eq!(updated.spec, Some(v2_spec.clone()));
    assert!(updated.previous_spec.is_some());
    let v2 = updated.spec_version.map(|v| v.index).unwrap_or(0);
    assert!(v2 > 1, "spec version {v2}");
    assert!(version(&updated) > version(&current));

    // A stale version: Swarm's "update out of sequence", the winner intact.
    let err = update(
        &mut control,
        &id,
        version(&current),
        Some(spec("web", "nginx:stale", 1)),
        false,
    )
    .await
    .expect_err("stale version");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("update out of sequence"), "{err:?}");
    assert_eq!(image_of(&get(&mut control, &id).await?), "nginx:1.26");

    // Two updates from the same version at once: exactly one wins.
    let current = get(&mut control, &id).await?;
    let mut a = control.clone();
    let mut b = control.clone();
    let (ra, rb) = tokio::join!(
        update(
            &mut a,
            &id,
            version(&current),
            Some(spec("web", "nginx:a", 2)),
            false
        ),
        update(
            &mut b,
            &id,
            version(&current),
            Some(spec("web", "nginx:b", 2)),
            false
        ),
    );
    let (winner, loser) = match (ra, rb) {
        (Ok(w), Err(l)) => (w, l),
        (Err(l), Ok(w)) => (w, l),
        (ra, rb) => anyhow::bail!("expected exactly one winner: {ra:?} / {rb:?}"),
    };
    assert_eq!(loser.code(), Code::FailedPrecondition, "{loser:?}");
    let stored = get(&mut control, &id).await?;
    assert_eq!(image_of(&stored), image_of(&winner));
    assert_eq!(stored.previous_spec, Some(v2_spec.clone()));

    // Rollback swaps spec and previous spec (with their versions).
    let rolled = update(&mut control, &id, version(&stored), None, true).await?;
    assert_eq!(rolled.spec, Some(v2_spec.clone()));
    assert_eq!(rolled.previous_spec, stored.spec);
    assert_eq!(rolled.spec_version, stored.previous_spec_version);
    assert_eq!(rolled.previous_spec_version, stored.spec_version);

    // Renames and mode changes are refused.
    let err = update(
        &mut control,
        &id,
        version(&rolled),
        Some(spec("www", "nginx", 1)),
        false,
    )
    .await
    .expect_err("rename");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("renaming services is not supported"));
    let mut global = spec("web", "nginx", 1);
    global.mode = Some(service_spec::Mode::Global(GlobalService {}));
    let err = update(&mut control, &id, version(&rolled), Some(global), false)
        .await
        .expect_err("mode change");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("service mode change is not allowed"));
    // A bad spec in an update is refused like at creation.
    let err = update(
        &mut control,
        &id,
        version(&rolled),
        Some(spec("web", "", 1)),
        false,
    )
    .await
    .expect_err("no image");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(get(&mut control, &id).await?.spec, Some(v2_spec));

    // Unknown service.
    let err = update(
        &mut control,
        "nope",
        1,
        Some(spec("nope", "nginx", 1)),
        false,
    )
    .await
    .expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_frees_the_name_at_once() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let swarm = Swarm::start(&infra, "").await?;
    let mut control = swarm.manager.control(&swarm.admin).await?;

    let first = create(&mut control, spec("web", "nginx", 1)).await?;
    create(&mut control, spec("db", "postgres", 1)).await?;
    let mut events = control
        .watch_events(WatchEventsRequest {
            kinds: vec!["service".into()],
            actions: vec!["remove".into()],
            ..Default::default()
        })
        .await?
        .into_inner();
    control
        .remove_service(RemoveServiceRequest {
            service_id: "web".into(),
        })
        .await?;
    let event = tokio::time::timeout(DEADLINE, events.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("event stream ended"))??;
    assert_eq!(event.id, first.id());
    assert_eq!(
        event.attributes.get("name").map(String::as_str),
        Some("web")
    );
    let err = get(&mut control, first.id()).await.expect_err("removed");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(service_names(&mut control).await?, vec!["db".to_string()]);

    let second = create(&mut control, spec("web", "nginx", 1)).await?;
    assert_ne!(second.id(), first.id());
    assert_eq!(get(&mut control, "web").await?.id(), second.id());

    let err = control
        .remove_service(RemoveServiceRequest {
            service_id: "nope".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "service nope not found");
    Ok(())
}

// ------------------------------------------------------------------------ logs

fn line(service: &Service, task: &Task, ts: i64, data: &str) -> LogMessage {
    LogMessage {
        service_id: service.id().to_string(),
        service_name: service
            .spec
            .as_ref()
            .and_then(|s| s.annotations.as_ref())
            .map(|a| a.name.clone())
            .unwrap_or_default(),
        task_id: task.id().to_string(),
        slot: task.slot,
        node_id: task.node_id.clone(),
        stream: 0,
        timestamp: Some(prost_types::Timestamp {
            seconds: 1_700_000_000 + ts,
            nanos: 0,
        }),
        data: data.as_bytes().to_vec(),
    }
}

/// A node that stays Ready (nothing runs a dispatcher here to mark it down).
async fn ready_node(store: &Store, name: &str) -> anyhow::Result<Node> {
    Ok(store
        .create(Node {
            spec: Some(NodeSpec {
                annotations: Some(Annotations {
                    name: name.into(),
                    labels: HashMap::new(),
                }),
                availability: node_spec::Availability::Active as i32,
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: node_status::State::Ready as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?)
}

/// A running task of `service` on `node_id`, written as the scheduler and a worker
/// would have left it.
fn running_task(service: &Service, slot: u64, node_id: &str) -> Task {
    Task {
        spec: service.spec.as_ref().and_then(|s| s.task.clone()),
        service_id: service.id().to_string(),
        slot,
        node_id: node_id.into(),
        status: Some(TaskStatus {
            state: TaskState::Running as i32,
            message: "started".into(),
            ..Default::default()
        }),
        desired_state: TaskState::Running as i32,
        spec_version: service.spec_version,
        ..Default::default()
    }
}

/// A fake worker for `node_id`: answers history requests from `kept` (oldest first).
async fn fake_worker(
    bus: &EventBus,
    node_id: &str,
    kept: Vec<LogMessage>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut requests = bus.serve_log_history(node_id).await?;
    Ok(tokio::spawn(async move {
        while let Some(req) = requests.next().await {
            let mut messages: Vec<LogMessage> = Vec::new();
            for task in &req.request.task_ids {
                let lines: Vec<&LogMessage> = kept.iter().filter(|m| &m.task_id == task).collect();
                let skip = match usize::try_from(req.request.tail) {
                    Ok(tail) => lines.len().saturating_sub(tail),
                    Err(_) => 0,
                };
                messages.extend(lines.into_iter().skip(skip).cloned());
            }
            let _ = req.respond(LogHistoryResponse { messages }).await;
        }
    }))
}

async fn collect(
    control: &mut ControlClient<Channel>,
    selectors: &[&str],
    tail: i64,
) -> anyhow::Result<Vec<String>> {
    let mut stream = control
        .service_logs(ServiceLogsRequest {
            selectors: selectors.iter().map(|s| s.to_string()).collect(),
            follow: false,
            tail,
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(msg) = tokio::time::timeout(DEADLINE, stream.next()).await? {
        out.push(String::from_utf8(msg?.data)?);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_merge_history_from_every_node_then_follow() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let swarm = Swarm::start(&infra, "").await?;
    let mut control = swarm.manager.control(&swarm.admin).await?;
    let store = Store::connect(&[infra.etcd.endpoint()], shoal_store::DEFAULT_PREFIX).await?;
    let bus = EventBus::connect(&infra.nats.url(), "fake-workers").await?;

    // Replicas 0: whatever the orchestrator makes of the tasks written below (scale
    // down to desired REMOVE), they stay in the store while running on Ready nodes.
    let svc = create(&mut control, spec("app", "busybox", 0)).await?;
    let other = create(&mut control, spec("other", "busybox", 0)).await?;
    let node_a = ready_node(&store, "a").await?;
    let node_b = ready_node(&store, "b").await?;
    let node_dead = ready_node(&store, "dead").await?;
    let tasks = store
        .create_many(vec![
            running_task(&svc, 1, node_a.id()),
            running_task(&svc, 2, node_b.id()),
            running_task(&svc, 3, node_dead.id()),
            running_task(&svc, 4, ""),
            running_task(&other, 1, node_a.id()),
        ])
        .await
        .into_iter()
        .collect::<Result<Vec<Task>, _>>()?;
    let (t1, t2, t4) = (&tasks[0], &tasks[1], &tasks[4]);

    let a_lines = vec![
        line(&svc, t1, 1, "t1 one"),
        line(&svc, t1, 3, "t1 three"),
        line(&svc, t1, 5, "t1 five"),
        line(&other, t4, 2, "t4 two"),
        line(&other, t4, 4, "t4 four"),
    ];
    let b_lines = vec![
        line(&svc, t2, 2, "t2 two"),
        line(&svc, t2, 4, "t2 four"),
        line(&svc, t2, 6, "t2 six"),
    ];
    let _a = fake_worker(&bus, node_a.id(), a_lines).await?;
    let _b = fake_worker(&bus, node_b.id(), b_lines).await?;
    // node_dead: nobody answers for it; it contributes nothing and holds nothing up.

    // The whole history of the service, merged by time, other services left out.
    assert_eq!(
        collect(&mut control, &["app"], -1).await?,
        vec![
            "t1 one", "t2 two", "t1 three", "t2 four", "t1 five", "t2 six"
        ]
    );
    // Tail per task.
    assert_eq!(
        collect(&mut control, &["app"], 1).await?,
        vec!["t1 five", "t2 six"]
    );
    assert!(collect(&mut control, &["app"], 0).await?.is_empty());
    // A task by unique id prefix; a service by id prefix.
    assert_eq!(
        collect(&mut control, &[&t4.id()[..12]], -1).await?,
        vec!["t4 two", "t4 four"]
    );
    assert_eq!(
        collect(&mut control, &[&other.id()[..10], t2.id()], 1).await?,
        vec!["t4 four", "t2 six"]
    );
    // Unknown selector: NotFound naming it.
    let err = control
        .service_logs(ServiceLogsRequest {
            selectors: vec!["nope".into()],
            follow: false,
            tail: -1,
        })
        .await
        .expect_err("unknown selector");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "no such task or service: nope");

    // Follow: the history's tail, then live lines of the service only, without
    // repeating what the history showed.
    let mut follow = control
        .service_logs(ServiceLogsRequest {
            selectors: vec!["app".into()],
            follow: true,
            tail: 2,
        })
        .await?
        .into_inner();
    let mut next = async || -> anyhow::Result<String> {
        let msg = tokio::time::timeout(DEADLINE, follow.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("log stream ended"))??;
        Ok(String::from_utf8(msg.data)?)
    };
    for want in ["t1 three", "t2 four", "t1 five", "t2 six"] {
        assert_eq!(next().await?, want);
    }
    bus.publish_log(&line(&svc, t2, 6, "t2 six")).await?; // already shown
    bus.publish_log(&line(&other, t4, 7, "t4 seven")).await?; // another service
    bus.publish_log(&line(&svc, t1, 8, "t1 eight")).await?;
    bus.publish_log(&line(&svc, t2, 9, "t2 nine")).await?;
    bus.flush().await?;
    assert_eq!(next().await?, "t1 eight");
    assert_eq!(next().await?, "t2 nine");
    Ok(())
}
