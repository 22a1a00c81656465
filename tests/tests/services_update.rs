//! Rolling updates end to end, driven through the `shoal` CLI (seed 002): a manager, a
//! scheduler, a dispatcher and three workers, tasks running for real as processes.
//! What a test learns about concurrency it reads from the tasks' own status
//! timestamps (when each ran, when each stopped), never from wall-clock sleeps.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use shoal_proto::v1::update_status::UpdateState;
use shoal_proto::v1::{
    GetServiceRequest, ListFilters, ListServicesRequest, Service, Task, TaskState,
    UpdateServiceRequest, Version, task_spec,
};
use shoal_scenarios::{Stack, StackOptions, containers_of, task_desired, task_id, task_state};
use shoal_testkit::{Infra, wait_for};

/// Long enough for a loaded 2-core CI machine; the conditions end the waits.
const DEADLINE: Duration = Duration::from_secs(90);

/// A process task that runs until stopped and says which version it is; with
/// FAIL set it exits 1 at once.
const SERVER: &str =
    "test -z \"$FAIL\" || exit 1; echo \"version $V\"; while true; do sleep 3600; done";

async fn service(stack: &Stack, name: &str) -> anyhow::Result<Service> {
    let mut control = stack.control().await?;
    let found = control
        .list_services(ListServicesRequest {
            filters: Some(ListFilters {
                names: vec![name.to_string()],
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .services;
    found
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no service {name}"))
}

fn env_of(t: &Task) -> Vec<String> {
    match t.spec.as_ref().and_then(|s| s.runtime.as_ref()) {
        Some(task_spec::Runtime::Process(p)) => p.env.clone(),
        Some(task_spec::Runtime::Container(c)) => c.env.clone(),
        None => Vec::new(),
    }
}

fn has_env(t: &Task, kv: &str) -> bool {
    env_of(t).iter().any(|e| e == kv)
}

/// Waits until `n` tasks of `name` run and all of them carry `kv` in their env.
async fn wait_all_running_with(
    stack: &Stack,
    name: &str,
    n: usize,
    kv: &str,
) -> anyhow::Result<Vec<Task>> {
    wait_for(
        &format!("{n} running tasks of {name} with {kv}"),
        DEADLINE,
        || async {
            let tasks = stack.running(name).await.ok()?;
            (tasks.len() == n && tasks.iter().all(|t| has_env(t, kv))).then_some(tasks)
        },
    )
    .await
}

async fn create(stack: &Stack, name: &str, replicas: u32, extra: &[&str]) -> anyhow::Result<()> {
    let replicas = replicas.to_string();
    let mut args = vec![
        "service",
        "create",
        "--process",
        "--name",
        name,
        "--replicas",
        &replicas,
        "--env",
        "V=1",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["sh", "-c", SERVER]);
    let out = stack.cli_ok(&args).await?;
    assert!(out.contains("verify: Service converged"), "{out}");
    Ok(())
}

fn time(ts: Option<&prost_types::Timestamp>) -> Option<SystemTime> {
    ts.and_then(|t| SystemTime::try_from(*t).ok())
}

fn created_at(t: &Task) -> SystemTime {
    time(t.meta.as_ref().and_then(|m| m.created_at.as_ref())).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// When the task ran: from its recorded start to its end (or still running).
fn run_interval(t: &Task) -> Option<(SystemTime, Option<SystemTime>)> {
    let status = t.status.as_ref()?;
    let started = time(status.started_at.as_ref())?;
    let ended = TaskState::try_from(status.state)
        .ok()
        .filter(|s| *s as i32 > TaskState::Running as i32)
        .and_then(|_| time(status.timestamp.as_ref()));
    Some((started, ended))
}

/// The lowest and highest number of the tasks running at once between `from` and
/// `to`, from the tasks' own run intervals.
fn concurrency(tasks: &[Task], from: SystemTime, to: SystemTime) -> (usize, usize) {
    let intervals: Vec<(SystemTime, Option<SystemTime>)> =
        tasks.iter().filter_map(run_interval).collect();
    // Every moment a count changes, plus the window's start.
    let mut moments: Vec<SystemTime> = vec![from];
    for (s, e) in &intervals {
        moments.push(*s);
        if let Some(e) = e {
            moments.push(*e);
        }
    }
    moments.retain(|m| *m >= from && *m <= to);
    moments.sort();
    let at = |m: SystemTime| {
        intervals
            .iter()
            .filter(|(s, e)| *s <= m && e.is_none_or(|e| e > m))
            .count()
    };
    let counts: Vec<usize> = moments.into_iter().map(at).collect();
    (
        counts.iter().copied().min().unwrap_or(0),
        counts.iter().copied().max().unwrap_or(0),
    )
}

/// Tasks per slot, newest first.
fn by_slot(tasks: &[Task]) -> BTreeMap<u64, Vec<Task>> {
    let mut slots: BTreeMap<u64, Vec<Task>> = BTreeMap::new();
    for t in tasks {
        slots.entry(t.slot).or_default().push(t.clone());
    }
    for list in slots.values_mut() {
        list.sort_by_key(|t| std::cmp::Reverse(created_at(t)));
    }
    slots
}

fn update_state(s: &Service) -> Option<UpdateState> {
    s.update_status
        .as_ref()
        .and_then(|u| UpdateState::try_from(u.state).ok())
}

async fn wait_for_update_state(
    stack: &Stack,
    name: &str,
    state: UpdateState,
) -> anyhow::Result<Service> {
    wait_for(&format!("{name}'s update {state:?}"), DEADLINE, || async {
        let s = service(stack, name).await.ok()?;
        (update_state(&s) == Some(state)).then_some(s)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_rolling_update_then_rollback() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let stack = Stack::start(&infra, StackOptions::default()).await?;
    create(&stack, "nginx", 3, &[]).await?;
    let first = wait_all_running_with(&stack, "nginx", 3, "V=1").await?;
    let before = SystemTime::now();

    // `service update --env-add V=2 nginx` (the seed's --image, for a process).
    let out = stack
        .cli_ok(&["service", "update", "--env-add", "V=2", "nginx"])
        .await?;
    assert!(
        out.lines().next().is_some_and(|l| l.trim() == "nginx"),
        "{out}"
    );
    assert!(out.contains("overall progress: 3 out of 3 tasks"), "{out}");
    assert!(out.contains("verify: Service converged"), "{out}");
    let second = wait_all_running_with(&stack, "nginx", 3, "V=2").await?;
    let after = SystemTime::now();

    // Every slot replaced once: the new task above, the old one shut down as history.
    let all = stack.tasks_of("nginx").await?;
    let slots = by_slot(&all);
    assert_eq!(slots.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    for (slot, tasks) in &slots {
        assert_eq!(tasks.len(), 2, "slot {slot}: {tasks:?}");
        let (new, old) = (&tasks[0], &tasks[1]);
        assert!(has_env(new, "V=2") && task_state(new) == TaskState::Running);
        assert!(has_env(old, "V=1"));
        assert_eq!(task_state(old), TaskState::Shutdown);
        assert_eq!(task_desired(old), TaskState::Shutdown);
        assert!(first.iter().any(|t| task_id(t) == task_id(old)));
        assert!(second.iter().any(|t| task_id(t) == task_id(new)));
    }
    // Parallelism 1, stop-first: never fewer than 2 running, never more than 3.
    let (low, high) = concurrency(&all, before, after);
    assert!(low >= 2 && high <= 3, "running at once: {low}..{high}");
    // One slot at a time: each replacement was created after the previous one ran.
    let mut news: Vec<&Task> = slots.values().map(|v| &v[0]).collect();
    news.sort_by_key(|t| created_at(t));
    for pair in news.windows(2) {
        let ran = run_interval(pair[0]).map(|(s, _)| s).unwrap_or(after);
        assert!(created_at(pair[1]) >= ran, "slots overlapped: {pair:?}");
    }

    // Completed once the last replacement outlived its monitor window.
    wait_for_update_state(&stack, "nginx", UpdateState::Completed).await?;
    let pretty = stack
        .cli_ok(&["service", "inspect", "--pretty", "nginx"])
        .await?;
    assert!(pretty.contains("completed"), "{pretty}");

    // `service ps nginx`: the old tasks under the new ones, Shutdown.
    let ps = stack.cli_ok(&["service", "ps", "nginx"]).await?;
    for slot in 1..=3 {
        let rows = slot_rows(&ps, "nginx", slot);
        assert_eq!(rows.len(), 2, "slot {slot}:\n{ps}");
        assert!(
            rows[0].contains("Running") && !rows[0].contains("\\_"),
            "{ps}"
        );
        assert!(
            rows[1].contains("\\_ nginx.") && rows[1].contains("Shutdown"),
            "{ps}"
        );
    }

    // `service rollback nginx`: V=1 back on every slot, history grows again.
    let out = stack.cli_ok(&["service", "rollback", "nginx"]).await?;
    assert!(out.contains("verify: Service converged"), "{out}");
    wait_all_running_with(&stack, "nginx", 3, "V=1").await?;
    wait_for_update_state(&stack, "nginx", UpdateState::RollbackCompleted).await?;
    let all = stack.tasks_of("nginx").await?;
    for (slot, tasks) in by_slot(&all) {
        assert_eq!(tasks.len(), 3, "slot {slot}");
        assert!(has_env(&tasks[0], "V=1") && task_state(&tasks[0]) == TaskState::Running);
        assert!(has_env(&tasks[1], "V=2") && task_state(&tasks[1]) == TaskState::Shutdown);
    }

    // A second rollback goes forward again, start-first this time: never more than 4.
    let before = SystemTime::now();
    let out = stack
        .cli_ok(&[
            "service",
            "update",
            "--update-order",
            "start-first",
            "--env-add",
            "V=3",
            "nginx",
        ])
        .await?;
    assert!(out.contains("verify: Service converged"), "{out}");
    wait_all_running_with(&stack, "nginx", 3, "V=3").await?;
    let after = SystemTime::now();
    let all = stack.tasks_of("nginx").await?;
    let (low, high) = concurrency(&all, before, after);
    assert!(
        low >= 3 && high <= 4,
        "start-first running at once: {low}..{high}"
    );
    let out = stack.cli_ok(&["service", "rollback", "nginx"]).await?;
    assert!(out.contains("verify: Service converged"), "{out}");
    wait_all_running_with(&stack, "nginx", 3, "V=1").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_update_rolls_back_on_its_own_or_pauses() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let stack = Stack::start(&infra, StackOptions::default()).await?;

    // failure action rollback: the service returns to V=1 and says why.
    create(
        &stack,
        "back",
        3,
        &[
            "--update-failure-action",
            "rollback",
            "--update-monitor",
            "2s",
        ],
    )
    .await?;
    let out = stack
        .cli(&["service", "update", "--env-add", "FAIL=1", "back"])
        .await?;
    assert_ne!(out.code, 0, "a rolled back update fails: {out:?}");
    assert!(
        out.stderr.contains("service rolled back:") || out.stdout.contains("service rolled back:"),
        "{out:?}"
    );
    let svc = wait_for("back rolled back", DEADLINE, || async {
        let s = service(&stack, "back").await.ok()?;
        (update_state(&s) == Some(UpdateState::RollbackCompleted)).then_some(s)
    })
    .await?;
    let message = svc.update_status.map(|u| u.message).unwrap_or_default();
    assert!(
        message.contains("update rolled back due to failure or early termination of task"),
        "{message}"
    );
    let spec_env = svc
        .spec
        .as_ref()
        .and_then(|s| s.task.as_ref())
        .and_then(|t| t.runtime.as_ref())
        .map(|r| match r {
            task_spec::Runtime::Process(p) => p.env.clone(),
            task_spec::Runtime::Container(c) => c.env.clone(),
        })
        .unwrap_or_default();
    assert!(!spec_env.iter().any(|e| e == "FAIL=1"), "{spec_env:?}");
    wait_all_running_with(&stack, "back", 3, "V=1").await?;
    let running_now = stack.running("back").await?;
    assert!(running_now.iter().all(|t| !has_env(t, "FAIL=1")));

    // failure action pause (the default): stops after the first failure, exit non-zero.
    create(&stack, "held", 3, &["--update-monitor", "2s"]).await?;
    let out = stack
        .cli(&["service", "update", "--env-add", "FAIL=1", "held"])
        .await?;
    assert_ne!(out.code, 0, "{out:?}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains(
            "service update paused: update paused due to failure or early termination of task"
        ),
        "{text}"
    );
    let svc = service(&stack, "held").await?;
    assert_eq!(update_state(&svc), Some(UpdateState::Paused));
    // Only the first slot tried the new spec; the other two still run V=1.
    let all = stack.tasks_of("held").await?;
    let tried: Vec<u64> = all
        .iter()
        .filter(|t| has_env(t, "FAIL=1"))
        .map(|t| t.slot)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(tried.len(), 1, "one slot tried the new spec: {tried:?}");
    let old_running = stack
        .running("held")
        .await?
        .into_iter()
        .filter(|t| has_env(t, "V=1") && !has_env(t, "FAIL=1"))
        .count();
    assert_eq!(old_running, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallelism_two_with_a_delay_goes_in_batches() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let stack = Stack::start(&infra, StackOptions::default()).await?;
    create(&stack, "batch", 6, &[]).await?;
    let out = stack
        .cli_ok(&[
            "service",
            "update",
            "--update-parallelism",
            "2",
            "--update-delay",
            "2s",
            "--env-add",
            "V=2",
            "batch",
        ])
        .await?;
    assert!(out.contains("verify: Service converged"), "{out}");
    wait_all_running_with(&stack, "batch", 6, "V=2").await?;
    let mut news: Vec<Task> = stack
        .tasks_of("batch")
        .await?
        .into_iter()
        .filter(|t| has_env(t, "V=2"))
        .collect();
    assert_eq!(news.len(), 6);
    news.sort_by_key(created_at);
    // Batches: replacements created within a second of each other.
    let mut batches: Vec<Vec<Task>> = Vec::new();
    for t in news {
        match batches.last_mut() {
            Some(b)
                if b.last().is_some_and(|p| {
                    created_at(&t)
                        .duration_since(created_at(p))
                        .is_ok_and(|d| d < Duration::from_secs(1))
                }) =>
            {
                b.push(t)
            }
            _ => batches.push(vec![t]),
        }
    }
    let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![2, 2, 2], "batches: {batches:?}");
    // Each batch starts at least 2 s after a task of the one before ran.
    for pair in batches.windows(2) {
        let earliest_ran = pair[0]
            .iter()
            .filter_map(|t| run_interval(t).map(|(s, _)| s))
            .min()
            .ok_or_else(|| anyhow::anyhow!("a replacement never ran"))?;
        let next = pair[1].iter().map(created_at).min().unwrap_or(earliest_ran);
        let gap = next.duration_since(earliest_ran).unwrap_or_default();
        assert!(gap >= Duration::from_secs(2), "gap {gap:?} between batches");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_replaces_every_task_once_and_concurrent_updates_conflict() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let stack = Stack::start(&infra, StackOptions::default()).await?;
    create(&stack, "forced", 3, &[]).await?;
    let first = wait_all_running_with(&stack, "forced", 3, "V=1").await?;
    let out = stack
        .cli_ok(&["service", "update", "--force", "forced"])
        .await?;
    assert!(out.contains("verify: Service converged"), "{out}");
    let second = wait_all_running_with(&stack, "forced", 3, "V=1").await?;
    assert!(
        second
            .iter()
            .all(|t| !first.iter().any(|f| task_id(f) == task_id(t)))
    );
    let all = stack.tasks_of("forced").await?;
    assert_eq!(all.len(), 6, "each slot replaced exactly once");
    for (slot, tasks) in by_slot(&all) {
        assert_eq!(tasks.len(), 2, "slot {slot}");
        assert_eq!(tasks[0].spec.as_ref().map(|s| s.force_update), Some(1));
    }

    // Two clients update from the same version: one wins, the other is refused.
    let svc = service(&stack, "forced").await?;
    let id = svc.meta.as_ref().map(|m| m.id.clone()).unwrap_or_default();
    let version = svc.meta.as_ref().and_then(|m| m.version);
    let with_env = |kv: &str| {
        let mut spec = svc.spec.clone().unwrap_or_default();
        if let Some(task_spec::Runtime::Process(p)) =
            spec.task.as_mut().and_then(|t| t.runtime.as_mut())
        {
            p.env.push(kv.to_string());
        }
        UpdateServiceRequest {
            service_id: id.clone(),
            service_version: version.or(Some(Version { index: 0 })),
            spec: Some(spec),
            rollback: 0,
        }
    };
    let (mut a, mut b) = (stack.control().await?, stack.control().await?);
    let (ra, rb) = tokio::join!(
        a.update_service(with_env("CLIENT=a")),
        b.update_service(with_env("CLIENT=b"))
    );
    let (winner, loser) = match (ra, rb) {
        (Ok(w), Err(l)) => (w.into_inner(), (l, "CLIENT=a")),
        (Err(l), Ok(w)) => (w.into_inner(), (l, "CLIENT=b")),
        other => anyhow::bail!("exactly one update must win: {other:?}"),
    };
    let (status, winner_env) = loser;
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("update out of sequence"),
        "{status:?}"
    );
    let stored = stack
        .control()
        .await?
        .get_service(GetServiceRequest {
            service_id: id.clone(),
            insert_defaults: false,
        })
        .await?
        .into_inner()
        .service
        .ok_or_else(|| anyhow::anyhow!("service gone"))?;
    let env = |s: Option<&shoal_proto::v1::ServiceSpec>| -> Vec<String> {
        match s
            .and_then(|s| s.task.as_ref())
            .and_then(|t| t.runtime.as_ref())
        {
            Some(task_spec::Runtime::Process(p)) => p.env.clone(),
            _ => Vec::new(),
        }
    };
    assert_eq!(
        stored.spec,
        winner.service.and_then(|s| s.spec),
        "the winner's spec is stored"
    );
    assert!(env(stored.spec.as_ref()).iter().any(|e| e == winner_env));
    assert_eq!(
        stored.previous_spec, svc.spec,
        "the spec it replaced is kept"
    );
    Ok(())
}

/// The `service ps` rows of one slot (the task, then its history), in order.
fn slot_rows<'a>(ps: &'a str, name: &str, slot: u64) -> Vec<&'a str> {
    let key = format!("{name}.{slot} ");
    ps.lines().filter(|l| l.contains(&key)).collect()
}

/// Waits until `n` tasks of `name` run, all of them from `image`.
async fn wait_all_running_on(
    stack: &Stack,
    name: &str,
    n: usize,
    image: &str,
) -> anyhow::Result<()> {
    let image_of = |t: &Task| match t.spec.as_ref().and_then(|s| s.runtime.as_ref()) {
        Some(task_spec::Runtime::Container(c)) => c.image.clone(),
        _ => String::new(),
    };
    wait_for(
        &format!("{n} tasks of {name} on {image}"),
        DEADLINE,
        || async {
            let r = stack.running(name).await.ok()?;
            (r.len() == n && r.iter().all(|t| image_of(t) == image)).then_some(())
        },
    )
    .await
}

/// Seed 002 verbatim with containers: two locally built images, `--image` rolls the
/// service, `service ps` shows the old image's tasks as history, `rollback` brings it
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_with_two_images() -> anyhow::Result<()> {
    use shoal_testkit::docker::{busybox_image_version, docker_available};
    if !docker_available() {
        eprintln!("NOTICE: no Docker engine answers; the two-image update scenario is skipped");
        return Ok(());
    }
    let old = busybox_image_version("1.13.7")?;
    let new = busybox_image_version("1.13.12")?;
    let infra = Infra::start().await?;
    let stack = Stack::start(&infra, StackOptions::default()).await?;
    let name = "nginx-img";
    let out = stack
        .cli_ok(&[
            "service",
            "create",
            "--replicas",
            "3",
            "--name",
            name,
            // sh as PID 1 ignores SIGTERM: do not wait 10 s for each old task.
            "--stop-grace-period",
            "1s",
            &old,
            "sh",
            "-c",
            "while true; do sleep 3600; done",
        ])
        .await?;
    assert!(out.contains("verify: Service converged"), "{out}");

    let out = stack
        .cli_ok(&["service", "update", "--image", &new, name])
        .await?;
    assert!(out.contains("verify: Service converged"), "{out}");
    wait_all_running_on(&stack, name, 3, &new).await?;
    let ps = stack.cli_ok(&["service", "ps", name]).await?;
    for slot in 1..=3 {
        let rows = slot_rows(&ps, name, slot);
        assert_eq!(rows.len(), 2, "slot {slot}:\n{ps}");
        assert!(
            rows[0].contains(&new) && rows[0].contains("Running"),
            "{ps}"
        );
        assert!(
            rows[1].contains("\\_ ") && rows[1].contains(&old) && rows[1].contains("Shutdown"),
            "{ps}"
        );
    }

    let out = stack.cli_ok(&["service", "rollback", name]).await?;
    assert!(out.contains("verify: Service converged"), "{out}");
    wait_all_running_on(&stack, name, 3, &old).await?;
    let ps = stack.cli_ok(&["service", "ps", name]).await?;
    for slot in 1..=3 {
        let rows = slot_rows(&ps, name, slot);
        assert_eq!(rows.len(), 3, "slot {slot}:\n{ps}");
        assert!(
            rows[0].contains(&old) && rows[0].contains("Running"),
            "{ps}"
        );
        assert!(
            rows[1].contains(&new) && rows[1].contains("Shutdown"),
            "{ps}"
        );
        assert!(
            rows[2].contains(&old) && rows[2].contains("Shutdown"),
            "{ps}"
        );
    }
    // Only the three running containers are left running; rm removes them all.
    stack.cli_ok(&["service", "rm", name]).await?;
    wait_for("the service's containers to go", DEADLINE, || async {
        containers_of(name).ok()?.is_empty().then_some(())
    })
    .await?;
    Ok(())
}

/// A replacement whose healthcheck never passes is never RUNNING (so never a load
/// balancing target), fails as "unhealthy container", and counts as the update's
/// failure: the update pauses with the old tasks still serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_replacement_is_an_update_failure() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let stack = Stack::start(&infra, StackOptions::default()).await?;
    create(
        &stack,
        "checked",
        3,
        &[
            "--health-cmd",
            "true",
            "--health-interval",
            "200ms",
            "--update-monitor",
            "2s",
        ],
    )
    .await?;
    let healthy = wait_all_running_with(&stack, "checked", 3, "V=1").await?;
    for t in &healthy {
        let health = t.status.as_ref().map(|s| s.health).unwrap_or_default();
        assert_eq!(
            health,
            shoal_proto::v1::task_status::Health::Healthy as i32,
            "a running checked task is healthy"
        );
    }
    let out = stack
        .cli(&[
            "service",
            "update",
            "--health-cmd",
            "false",
            "--health-retries",
            "2",
            "--env-add",
            "V=2",
            "checked",
        ])
        .await?;
    assert_ne!(out.code, 0, "{out:?}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("service update paused:"), "{text}");
    wait_for_update_state(&stack, "checked", UpdateState::Paused).await?;
    let all = stack.tasks_of("checked").await?;
    let tried: Vec<&Task> = all.iter().filter(|t| has_env(t, "V=2")).collect();
    assert!(!tried.is_empty(), "a replacement was tried");
    for t in &tried {
        let status = t.status.clone().unwrap_or_default();
        assert!(
            status.started_at.is_none(),
            "an unhealthy task never counted as RUNNING: {status:?}"
        );
    }
    assert!(
        tried.iter().any(|t| task_state(t) == TaskState::Failed
            && t.status
                .as_ref()
                .is_some_and(|s| s.err == "unhealthy container")),
        "{tried:?}"
    );
    let serving = stack.running("checked").await?;
    assert_eq!(
        serving.len(),
        2,
        "the other slots keep their healthy old tasks"
    );
    assert!(serving.iter().all(|t| has_env(t, "V=1")));
    Ok(())
}
