//! Services end to end, driven through the `shoal` CLI as a user would: a manager, a
//! scheduler, a dispatcher and three workers on 127.0.1.1–3, tasks running for real as
//! processes (and as containers where a Docker engine answers). Seeds 000, 002 and 004:
//! create, scale, spread, `service ps`, node failure and drain, global services,
//! constraints, restart policies, worker restarts that re-adopt their tasks, `rm`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use shoal_proto::v1::{ListFilters, ListTasksRequest, Task, TaskState};
use shoal_scenarios::{Stack, StackOptions, task_desired, task_id, task_processes, task_state};
use shoal_testkit::{Infra, wait_for};

/// Long enough for a loaded 2-core CI machine; the conditions end the waits.
const DEADLINE: Duration = Duration::from_secs(60);

/// Tasks per node id.
fn per_node(tasks: &[Task]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for t in tasks {
        *counts.entry(t.node_id.clone()).or_insert(0) += 1;
    }
    counts
}

/// Live task processes of the service `name` on the stack's nodes (tests run in
/// parallel, each with its own stack): task id → pid.
fn processes_of(stack: &Stack, name: &str) -> HashMap<String, u32> {
    let marker = format!("SHOAL_SERVICE_NAME={name}");
    let nodes: Vec<String> = stack
        .node_ids()
        .iter()
        .map(|id| format!("SHOAL_NODE_ID={id}"))
        .collect();
    task_processes()
        .into_iter()
        .filter(|(_, env)| env.contains(&marker) && env.iter().any(|e| nodes.contains(e)))
        .filter_map(|(pid, env)| {
            env.iter()
                .find_map(|e| e.strip_prefix("SHOAL_TASK_ID="))
                .map(|id| (id.to_string(), pid))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_flow_create_scale_ps_rm() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let stack = Stack::start(&infra, StackOptions::default()).await?;

    // Seed 000: `service create --name demo busybox sh -c "while true;do sleep 3600;done"`,
    // as a process.
    let out = stack
        .cli_ok(&[
            "service",
            "create",
            "--process",
            "--name",
            "demo",
            "sh",
            "-c",
            "while true; do sleep 3600; done",
        ])
        .await?;
    assert!(out.contains("overall progress: 1 out of 1 tasks"), "{out}");
    assert!(out.contains("verify: Service converged"), "{out}");
    let ls = stack.cli_ok(&["service", "ls"]).await?;
    let row = ls
        .lines()
        .find(|l| l.contains(" demo "))
        .unwrap_or_default();
    assert!(row.contains("replicated") && row.contains("1/1"), "{ls}");

    // `service scale demo=5`: 5/5, spread 2/2/1 over the three nodes.
    let out = stack.cli_ok(&["service", "scale", "demo=5"]).await?;
    assert!(out.contains("demo scaled to 5"), "{out}");
    assert!(out.contains("verify: Service converged"), "{out}");
    let tasks = stack.wait_running("demo", 5).await?;
    let mut spread: Vec<usize> = per_node(&tasks).into_values().collect();
    spread.sort_unstable();
    assert_eq!(spread, vec![1, 2, 2], "spread of 5 tasks over 3 nodes");
    let mut slots: Vec<u64> = tasks.iter().map(|t| t.slot).collect();
    slots.sort_unstable();
    assert_eq!(slots, vec![1, 2, 3, 4, 5]);

    // Each RUNNING task is a live process with its task's identity.
    let procs = wait_for("5 demo processes", DEADLINE, || async {
        let p = processes_of(&stack, "demo");
        (p.len() == 5).then_some(p)
    })
    .await?;
    for t in &tasks {
        assert!(
            procs.contains_key(&task_id(t)),
            "no process for task {}",
            task_id(t)
        );
    }

    // `service ps demo`: one row per task, by slot, running on a node by hostname.
    let ps = stack.cli_ok(&["service", "ps", "demo"]).await?;
    for slot in 1..=5 {
        assert!(
            ps.lines()
                .any(|l| l.contains(&format!("demo.{slot} ")) && l.contains("Running")),
            "no running row for demo.{slot}:\n{ps}"
        );
    }

    // `service rm demo`: the tasks go from the workers and then from the store.
    let out = stack.cli_ok(&["service", "rm", "demo"]).await?;
    assert_eq!(out.trim(), "demo");
    wait_for("demo's processes to end", DEADLINE, || async {
        processes_of(&stack, "demo").is_empty().then_some(())
    })
    .await?;
    let service_ids: Vec<String> = tasks.iter().map(|t| t.service_id.clone()).collect();
    wait_for("demo's tasks to be reaped", DEADLINE, || {
        let filters = ListFilters {
            service_ids: service_ids.clone(),
            ..Default::default()
        };
        async {
            let left = stack
                .control()
                .await
                .ok()?
                .list_tasks(ListTasksRequest {
                    filters: Some(filters),
                })
                .await
                .ok()?
                .into_inner()
                .tasks;
            left.is_empty().then_some(())
        }
    })
    .await?;
    let ls = stack.cli_ok(&["service", "ls"]).await?;
    assert!(!ls.contains(" demo "), "{ls}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_worker_tasks_move_and_nothing_moves_back() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let mut stack = Stack::start(&infra, StackOptions::default()).await?;
    stack
        .cli_ok(&[
            "service",
            "create",
            "--process",
            "--name",
            "mover",
            "--replicas",
            "6",
            "sleep",
            "3600",
        ])
        .await?;
    let before = stack.wait_running("mover", 6).await?;
    let (victim_node, lost) = {
        let (_, node_id) = &stack.workers[0];
        let lost: Vec<String> = before
            .iter()
            .filter(|t| &t.node_id == node_id)
            .map(task_id)
            .collect();
        (node_id.clone(), lost)
    };
    assert!(!lost.is_empty(), "worker 1 runs some of mover's tasks");
    let lost_pids: Vec<u32> = {
        let procs = processes_of(&stack, "mover");
        lost.iter().filter_map(|t| procs.get(t).copied()).collect()
    };
    assert_eq!(lost_pids.len(), lost.len(), "a process per lost task");

    // kill -9 the worker (its task processes live on, unreachable).
    stack.workers[0].0.process.kill_now();
    let after = wait_for(
        "mover's tasks to be replaced elsewhere",
        DEADLINE,
        || async {
            let tasks = stack.running("mover").await.ok()?;
            (tasks.len() == 6 && tasks.iter().all(|t| t.node_id != victim_node)).then_some(tasks)
        },
    )
    .await?;
    // Same slots, new tasks.
    let mut slots: Vec<u64> = after.iter().map(|t| t.slot).collect();
    slots.sort_unstable();
    assert_eq!(slots, vec![1, 2, 3, 4, 5, 6]);
    let tasks = stack.tasks_of("mover").await?;
    for lost_id in &lost {
        let old = tasks.iter().find(|t| &task_id(t) == lost_id);
        let old = old.ok_or_else(|| anyhow::anyhow!("replaced task {lost_id} kept as history"))?;
        assert_eq!(
            task_desired(old),
            TaskState::Shutdown,
            "replaced task desired"
        );
    }

    // The worker comes back: it stops its stale processes and gets nothing back.
    stack.workers[0].0.restart(&infra)?;
    stack.workers[0]
        .0
        .wait_serving(&stack.swarm.admin, "swarm-worker")
        .await?;
    wait_for("the stale processes to be stopped", DEADLINE, || async {
        let procs = processes_of(&stack, "mover");
        lost_pids
            .iter()
            .all(|pid| !procs.values().any(|p| p == pid))
            .then_some(())
    })
    .await?;
    let now = stack.running("mover").await?;
    assert_eq!(now.len(), 6);
    assert!(
        now.iter().all(|t| t.node_id != victim_node),
        "nothing moves back to the returning node"
    );
    assert_eq!(
        processes_of(&stack, "mover").len(),
        6,
        "no duplicate processes"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_moves_tasks_and_pause_keeps_them() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let stack = Stack::start(&infra, StackOptions::default()).await?;
    stack
        .cli_ok(&[
            "service",
            "create",
            "--process",
            "--name",
            "web",
            "--replicas",
            "3",
            "sleep",
            "3600",
        ])
        .await?;
    let tasks = stack.wait_running("web", 3).await?;
    assert_eq!(per_node(&tasks).len(), 3, "one task per node");
    let paused = stack.workers[0].1.clone();
    let drained = stack.workers[1].1.clone();

    // Pause: keeps its task, gets none of the new ones.
    stack
        .cli_ok(&["node", "update", "--availability", "pause", &paused])
        .await?;
    stack.cli_ok(&["service", "scale", "web=6"]).await?;
    let tasks = stack.wait_running("web", 6).await?;
    assert_eq!(per_node(&tasks).get(&paused), Some(&1), "paused node");

    // Drain: its tasks move; the paused node still gets none.
    stack
        .cli_ok(&["node", "update", "--availability", "drain", &drained])
        .await?;
    let tasks = wait_for("the drained node to lose its tasks", DEADLINE, || async {
        let tasks = stack.running("web").await.ok()?;
        (tasks.len() == 6 && tasks.iter().all(|t| t.node_id != drained)).then_some(tasks)
    })
    .await?;
    let counts = per_node(&tasks);
    assert_eq!(counts.get(&paused), Some(&1));
    assert_eq!(counts.get(&stack.workers[2].1), Some(&5));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_service_follows_the_nodes() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let mut stack = Stack::start(&infra, StackOptions::default()).await?;
    let out = stack
        .cli_ok(&[
            "service",
            "create",
            "--process",
            "--name",
            "agent",
            "--mode",
            "global",
            "sleep",
            "3600",
        ])
        .await?;
    assert!(out.contains("verify: Service converged"), "{out}");
    let tasks = stack.wait_running("agent", 3).await?;
    assert_eq!(per_node(&tasks).len(), 3, "one per node");

    let fourth = stack.add_worker(&infra, "").await?;
    let tasks = stack.wait_running("agent", 4).await?;
    assert_eq!(
        per_node(&tasks).get(&fourth),
        Some(&1),
        "the new node gets one"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constraints_place_or_explain() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let mut stack = Stack::start(&infra, StackOptions::default()).await?;
    let manager = stack.add_manager_worker(&infra, "").await?;

    // `node.role==manager`: only the manager's node, though three workers are idle.
    stack
        .cli_ok(&[
            "service",
            "create",
            "--process",
            "--name",
            "ctl",
            "--replicas",
            "2",
            "--constraint",
            "node.role==manager",
            "sleep",
            "3600",
        ])
        .await?;
    let tasks = stack.wait_running("ctl", 2).await?;
    assert!(
        tasks.iter().all(|t| t.node_id == manager),
        "on the manager only"
    );

    // An impossible constraint: PENDING with Swarm's explanation, then placed once a
    // node gets the label.
    let out = stack
        .cli(&[
            "service",
            "create",
            "--process",
            "--detach",
            "--name",
            "east",
            "--constraint",
            "node.labels.zone==east",
            "sleep",
            "3600",
        ])
        .await?;
    assert_eq!(out.code, 0, "{out:?}");
    let pending = wait_for("the explanation on the pending task", DEADLINE, || async {
        let tasks = stack.tasks_of("east").await.ok()?;
        tasks.into_iter().find(|t| {
            task_state(t) == TaskState::Pending
                && t.status
                    .as_ref()
                    .is_some_and(|s| s.err.starts_with("no suitable node ("))
        })
    })
    .await?;
    let err = pending.status.map(|s| s.err).unwrap_or_default();
    assert!(
        err.contains("scheduling constraints not satisfied on"),
        "explanation: {err}"
    );
    let ps = stack.cli_ok(&["service", "ps", "east"]).await?;
    assert!(ps.contains("no suitable node"), "{ps}");

    let labelled = stack.workers[2].1.clone();
    stack
        .cli_ok(&["node", "update", "--label-add", "zone=east", &labelled])
        .await?;
    let tasks = stack.wait_running("east", 1).await?;
    assert_eq!(tasks[0].node_id, labelled);

    // A bad constraint is refused and creates nothing.
    let out = stack
        .cli(&[
            "service",
            "create",
            "--process",
            "--name",
            "bad",
            "--constraint",
            "node.color~=blue",
            "sleep",
            "1",
        ])
        .await?;
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("constraint"), "{}", out.stderr);
    assert!(stack.tasks_of("bad").await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_restarts_twice_then_stays_failed() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    let stack = Stack::start(&infra, StackOptions::default()).await?;
    let out = stack
        .cli(&[
            "service",
            "create",
            "--process",
            "--detach",
            "--name",
            "crash",
            "--restart-condition",
            "on-failure",
            "--restart-max-attempts",
            "2",
            "--restart-delay",
            "100ms",
            "sh",
            "-c",
            "exit 1",
        ])
        .await?;
    assert_eq!(out.code, 0, "{out:?}");
    // Three tasks in slot 1 (the first and two restarts), all FAILED with the exit
    // code, all given up on (desired SHUTDOWN): nothing more will be decided.
    let tasks = wait_for("three failed tasks, given up", DEADLINE, || async {
        let tasks = stack.tasks_of("crash").await.ok()?;
        (tasks.len() == 3
            && tasks.iter().all(|t| {
                task_state(t) == TaskState::Failed && task_desired(t) == TaskState::Shutdown
            }))
        .then_some(tasks)
    })
    .await?;
    for t in &tasks {
        assert_eq!(t.slot, 1);
        let err = t.status.as_ref().map(|s| s.err.clone()).unwrap_or_default();
        assert_eq!(err, "task: non-zero exit (1)");
    }
    let ps = stack.cli_ok(&["service", "ps", "crash"]).await?;
    assert_eq!(
        ps.lines().filter(|l| l.contains("\\_ crash.1")).count(),
        2,
        "history rows:\n{ps}"
    );

    // More dead tasks than the history limit (5) in a slot: the oldest are reaped.
    stack
        .cli_ok(&[
            "service",
            "create",
            "--process",
            "--detach",
            "--name",
            "flaky",
            "--restart-condition",
            "any",
            "--restart-max-attempts",
            "7",
            "--restart-delay",
            "50ms",
            "false",
        ])
        .await?;
    wait_for("flaky's history trimmed to 5", DEADLINE, || async {
        let tasks = stack.tasks_of("flaky").await.ok()?;
        let done = tasks.len() == 5
            && tasks.iter().all(|t| {
                task_state(t) == TaskState::Failed && task_desired(t) == TaskState::Shutdown
            });
        done.then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_readopts_its_tasks() -> anyhow::Result<()> {
    let infra = Infra::start().await?;
    // A long heartbeat: the node must not be declared down while its worker restarts.
    let mut stack = Stack::start(
        &infra,
        StackOptions {
            heartbeat: Duration::from_secs(5),
            ..Default::default()
        },
    )
    .await?;
    stack
        .cli_ok(&[
            "service",
            "create",
            "--process",
            "--name",
            "keep",
            "--replicas",
            "3",
            "sleep",
            "3600",
        ])
        .await?;
    let before = stack.wait_running("keep", 3).await?;
    let pids = processes_of(&stack, "keep");
    assert_eq!(pids.len(), 3);

    // Kill the worker process only (its tasks live in their own process groups).
    let node = stack.workers[0].1.clone();
    stack.workers[0].0.process.kill_now();
    stack.workers[0].0.restart(&infra)?;
    stack.workers[0]
        .0
        .wait_serving(&stack.swarm.admin, "swarm-worker")
        .await?;

    // Once the new worker process has worked through its assignments (a probe task
    // pinned to its node runs), it has started nothing new: same tasks, same processes.
    let pin = format!("node.id=={node}");
    stack
        .cli_ok(&[
            "service",
            "create",
            "--process",
            "--name",
            "probe",
            "--constraint",
            &pin,
            "sleep",
            "3600",
        ])
        .await?;
    stack.wait_running("probe", 1).await?;
    let node_task = before
        .iter()
        .find(|t| t.node_id == node)
        .map(task_id)
        .ok_or_else(|| anyhow::anyhow!("worker 1 runs a task of keep"))?;
    let after = stack.wait_running("keep", 3).await?;
    let mut ids_before: Vec<String> = before.iter().map(task_id).collect();
    let mut ids_after: Vec<String> = after.iter().map(task_id).collect();
    ids_before.sort();
    ids_after.sort();
    assert_eq!(ids_before, ids_after, "the same tasks");
    assert!(ids_after.contains(&node_task));
    assert_eq!(
        processes_of(&stack, "keep"),
        pids,
        "the same processes, none duplicated"
    );
    assert_eq!(stack.tasks_of("keep").await?.len(), 3, "no new task");
    Ok(())
}
