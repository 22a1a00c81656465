//! The update supervisor: rolling updates and rollbacks, level-triggered.
//!
//! Swarm runs one updater goroutine per service that remembers what it did. Here the
//! supervisor is a pure function of what the store holds — the service (its spec, its
//! `update_status`) and its tasks — so a leader change or a lost event never loses an
//! update: the next pass finds the same answer.
//!
//! - A **unit** is a replicated slot or, for a global service, a node. A unit is
//!   *dirty* when it has live tasks and none of them runs the service's current task
//!   spec ([`shoal_proto::task_is_current`]). Scale changes leave units clean; a
//!   `--force` bumps the spec's `force_update` counter and dirties them all.
//! - The update that is running is the one `update_status` names: UPDATING (forward,
//!   the spec's `update` config) or ROLLBACK_STARTED (backwards, the `rollback`
//!   config), since `started_at`. A plain `service update` clears the status; the
//!   first pass that finds dirty units then starts an update (UPDATING). PAUSED and
//!   ROLLBACK_PAUSED stop replacing anything until the next `service update`.
//! - The task an update put in a unit is the newest current task created since the
//!   update started. The unit is **busy** while that task has not reached RUNNING, and
//!   for `delay` after it did (or after it ended): at most `parallelism` units are busy
//!   at once (0 = no limit). So with parallelism 2 and delay 2 s, two units are
//!   replaced, and each lane takes its next unit 2 s after its task ran.
//! - Each replacement is **monitored** for `monitor` after it ran: one that fails, is
//!   rejected or completes before it ran or within that window is a failure. When
//!   failures / units in the update exceed `max_failure_ratio`, the failure action
//!   applies: pause (PAUSED), continue, or rollback (ROLLBACK_STARTED: the service's
//!   spec swaps with its previous spec, and the same machinery rolls every unit back
//!   with the rollback config). A rollback that fails pauses (ROLLBACK_PAUSED).
//! - The update completes (COMPLETED / ROLLBACK_COMPLETED) once no unit is dirty or
//!   busy and every replacement has outlived its monitor window.
//! - Order: **stop-first** (default) shuts the old task down and creates the new one
//!   desired READY in the same pass: the scheduler places it and the worker prepares
//!   it while the old one stops; [`settle`] moves it to RUNNING once nothing else in
//!   the unit still runs. **start-first** creates the new one desired RUNNING next to
//!   the old, and [`settle`] shuts the old one down once the new one runs.

use std::time::{Duration, SystemTime};

use shoal_proto::TaskStateExt;
use shoal_proto::v1::update_config::{FailureAction, UpdateOrder};
use shoal_proto::v1::update_status::UpdateState;
use shoal_proto::v1::{Node, Service, Task, TaskState, UpdateConfig, UpdateStatus};

use super::{created_time, desired, duration, node_loss, observed, status_time, task_id, to_time};

/// Docker's default monitor window.
pub const DEFAULT_MONITOR: Duration = Duration::from_secs(5);

/// An update or rollback config with Docker's defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Units busy at once; 0 = all.
    pub parallelism: u64,
    pub delay: Duration,
    pub failure_action: FailureAction,
    pub monitor: Duration,
    pub max_failure_ratio: f32,
    pub start_first: bool,
}

impl Config {
    /// `config` as set, Docker's defaults where it is absent (parallelism 1, delay 0,
    /// pause, monitor 5 s, ratio 0, stop-first). A rollback config cannot roll back.
    pub fn from(config: Option<&UpdateConfig>, rollback: bool) -> Self {
        let Some(c) = config else {
            return Config {
                parallelism: 1,
                delay: Duration::ZERO,
                failure_action: FailureAction::Pause,
                monitor: DEFAULT_MONITOR,
                max_failure_ratio: 0.0,
                start_first: false,
            };
        };
        let mut action = FailureAction::try_from(c.failure_action).unwrap_or(FailureAction::Pause);
        if rollback && action == FailureAction::Rollback {
            action = FailureAction::Pause;
        }
        Config {
            parallelism: c.parallelism,
            delay: duration(c.delay.as_ref()).unwrap_or_default(),
            failure_action: action,
            monitor: duration(c.monitor.as_ref()).unwrap_or(DEFAULT_MONITOR),
            max_failure_ratio: if c.max_failure_ratio.is_finite() {
                c.max_failure_ratio.max(0.0)
            } else {
                0.0
            },
            start_first: c.order == UpdateOrder::StartFirst as i32,
        }
    }
}

/// One unit's tasks, as the mode's reconcile sorted them out.
#[derive(Debug, Clone, Copy)]
pub struct Unit<'a> {
    /// Live tasks on a node that keeps them, newest first.
    pub healthy: &'a [&'a Task],
    /// Every task of the unit, newest first.
    pub all: &'a [&'a Task],
}

/// What the supervisor decided in one pass.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Decision {
    /// Indexes (into the units given) of the units to replace now.
    pub replace: Vec<usize>,
    /// Replace them start-first (else stop-first).
    pub start_first: bool,
    /// The service's new update status, if it changes.
    pub status: Option<UpdateStatus>,
    /// Roll the service back to its previous spec (the failure action said so).
    pub rollback: bool,
    /// Look again at this time (a lane's delay or a monitor window ends).
    pub requeue_at: Option<SystemTime>,
}

fn state_of(service: &Service) -> Option<UpdateState> {
    service
        .update_status
        .as_ref()
        .and_then(|s| UpdateState::try_from(s.state).ok())
}

fn status(state: UpdateState, message: String, at: SystemTime, done: bool) -> UpdateStatus {
    let at = prost_types::Timestamp::from(at);
    UpdateStatus {
        state: state as i32,
        started_at: Some(at),
        completed_at: done.then_some(at),
        message,
    }
}

/// Whether the unit has live tasks and none runs the current spec.
pub fn is_dirty(service: &Service, unit: &Unit) -> bool {
    !unit.healthy.is_empty()
        && !unit
            .healthy
            .iter()
            .any(|t| shoal_proto::task_is_current(t, service))
}

/// When the task was first RUNNING, if it was.
fn ran_at(t: &Task) -> Option<SystemTime> {
    to_time(t.status.as_ref().and_then(|s| s.started_at.as_ref()))
        .or_else(|| (observed(t) == TaskState::Running).then(|| status_time(t)))
}

/// Whether an update's replacement counts as a failure: it failed, was rejected or
/// completed before it ran, or within `monitor` of when it ran (any time for 0).
fn failed(t: &Task, monitor: Duration) -> bool {
    let state = observed(t);
    if !matches!(
        state,
        TaskState::Failed | TaskState::Rejected | TaskState::Complete
    ) {
        return false;
    }
    match ran_at(t) {
        None => true,
        Some(ran) => {
            monitor.is_zero()
                || status_time(t)
                    .duration_since(ran)
                    .map_or(true, |lived| lived <= monitor)
        }
    }
}

/// The unit's tasks of the update that started at `started`, newest first: those that
/// run the current spec and were created since. The oldest is the replacement the
/// update made (its failure is the update's); newer ones are its restarts, or a
/// start-first retry.
fn since<'a>(
    service: &'a Service,
    unit: &Unit<'a>,
    started: SystemTime,
) -> impl DoubleEndedIterator<Item = &'a Task> + 'a {
    let all: &'a [&'a Task] = unit.all;
    all.iter().copied().filter(move |t| {
        shoal_proto::task_is_current(t, service) && created_time(t).is_some_and(|c| c >= started)
    })
}

/// The supervisor's pass over a service's units (slots in slot order, or nodes).
/// `now` is the pass's clock; it also stamps a status that starts or ends.
pub fn supervise<'a>(service: &'a Service, units: &[Unit<'a>], now: SystemTime) -> Decision {
    let mut decision = Decision::default();
    let state = state_of(service);
    if matches!(
        state,
        Some(UpdateState::Paused) | Some(UpdateState::RollbackPaused)
    ) {
        return decision;
    }
    // Only a rollback under way uses the rollback config; an update that starts now
    // (no update running) goes forward.
    let rolling_back = state == Some(UpdateState::RollbackStarted);
    let spec = service.spec.as_ref();
    let config = Config::from(
        if rolling_back {
            spec.and_then(|s| s.rollback.as_ref())
        } else {
            spec.and_then(|s| s.update.as_ref())
        },
        rolling_back,
    );
    decision.start_first = config.start_first;
    let dirty: Vec<usize> = units
        .iter()
        .enumerate()
        .filter(|(_, u)| is_dirty(service, u))
        .map(|(i, _)| i)
        .collect();

    let in_progress = matches!(
        state,
        Some(UpdateState::Updating) | Some(UpdateState::RollbackStarted)
    );
    let started = if in_progress {
        to_time(
            service
                .update_status
                .as_ref()
                .and_then(|s| s.started_at.as_ref()),
        )
        .unwrap_or(SystemTime::UNIX_EPOCH)
    } else {
        if dirty.is_empty() {
            return decision;
        }
        // Dirty units and no update running: one starts now.
        decision.status = Some(status(
            UpdateState::Updating,
            "update in progress".into(),
            now,
            false,
        ));
        now
    };
    let newest = |u: &Unit<'a>| since(service, u, started).next();
    let replacement = |u: &Unit<'a>| since(service, u, started).next_back();
    let mut involved = 0usize;
    let mut failures: Vec<&Task> = Vec::new();
    let mut busy = 0u64;
    let mut monitoring = false;
    let mut requeue: Option<SystemTime> = None;
    let mut wake = |at: SystemTime| {
        requeue = Some(requeue.map_or(at, |r: SystemTime| r.min(at)));
    };
    for u in units {
        let Some(first) = replacement(u) else {
            continue;
        };
        involved += 1;
        if failed(first, config.monitor) {
            failures.push(first);
        }
        let t = newest(u).unwrap_or(first);
        let state = observed(t);
        if state.is_live() && state != TaskState::Running {
            busy += 1;
            continue;
        }
        // Reached RUNNING or ended: the lane rests for `delay` from then.
        let reached = if state == TaskState::Running {
            ran_at(t).unwrap_or_else(|| status_time(t))
        } else {
            status_time(t)
        };
        let free_at = reached + config.delay;
        if free_at > now {
            busy += 1;
            wake(free_at);
        }
        if state == TaskState::Running && !config.monitor.is_zero() {
            let watched_until = reached + config.monitor;
            if watched_until > now {
                monitoring = true;
                wake(watched_until);
            }
        }
    }
    involved = involved.max(1);
    let total = (dirty.len() + involved) as f32;

    if in_progress
        && let Some(first) = failures.first()
        && config.failure_action != FailureAction::Continue
        && failures.len() as f32 / total > config.max_failure_ratio
    {
        let id = task_id(first);
        let cause = format!("due to failure or early termination of task {id}");
        decision.status = Some(if rolling_back {
            status(
                UpdateState::RollbackPaused,
                format!("rollback paused {cause}"),
                now,
                false,
            )
        } else if config.failure_action == FailureAction::Rollback
            && service.previous_spec.is_some()
        {
            decision.rollback = true;
            status(
                UpdateState::RollbackStarted,
                format!("update rolled back {cause}"),
                now,
                false,
            )
        } else {
            status(
                UpdateState::Paused,
                format!("update paused {cause}"),
                now,
                false,
            )
        });
        return decision;
    }

    let free = if config.parallelism == 0 {
        u64::MAX
    } else {
        config.parallelism.saturating_sub(busy)
    };
    let take = usize::try_from(free).unwrap_or(usize::MAX);
    decision.replace = dirty
        .iter()
        .copied()
        .filter(|i| {
            // A unit whose replacement ended while its old task still runs (a
            // start-first failure) waits for its lane's delay like any other.
            units
                .get(*i)
                .and_then(newest)
                .is_none_or(|t| status_time(t) + config.delay <= now)
        })
        .take(take)
        .collect();
    decision.requeue_at = requeue;

    if in_progress && dirty.is_empty() && busy == 0 && !monitoring {
        let (state, message) = if rolling_back {
            // Swarm says only "rollback completed"; an automatic rollback keeps why.
            let why = service
                .update_status
                .as_ref()
                .map(|s| s.message.as_str())
                .filter(|m| m.starts_with("update rolled back"));
            let message = match why {
                Some(why) => format!("rollback completed ({why})"),
                None => "rollback completed".to_string(),
            };
            (UpdateState::RollbackCompleted, message)
        } else {
            (UpdateState::Completed, "update completed".to_string())
        };
        let mut done = status(state, message, now, true);
        done.started_at = service.update_status.as_ref().and_then(|s| s.started_at);
        decision.status = Some(done);
    }
    decision
}

/// What a unit needs after an update step, whatever the supervisor decides: with
/// several live tasks, a current one that runs wins and the others are shut down (a
/// start-first replacement is up); while a current one is still starting they all
/// stay. A lone replacement desired READY (stop-first) is started once no other task
/// of the unit still runs on a node that keeps it.
///
/// Returns (tasks to shut down, tasks to start).
pub fn settle<'a>(
    service: &Service,
    healthy: &[&'a Task],
    all: &[&'a Task],
    nodes: &std::collections::HashMap<String, Node>,
) -> (Vec<&'a Task>, Vec<&'a Task>) {
    let mut shut = Vec::new();
    let mut start = Vec::new();
    if healthy.len() > 1 {
        let current_running = healthy.iter().copied().find(|t| {
            shoal_proto::task_is_current(t, service) && observed(t) == TaskState::Running
        });
        let keep: Vec<&Task> = match current_running {
            Some(winner) => vec![winner],
            None => {
                let newest_current = healthy
                    .iter()
                    .copied()
                    .find(|t| shoal_proto::task_is_current(t, service));
                match newest_current {
                    // Start-first under way: the old ones run until it does.
                    Some(new) => healthy
                        .iter()
                        .copied()
                        .filter(|t| {
                            !shoal_proto::task_is_current(t, service) || task_id(t) == task_id(new)
                        })
                        .collect(),
                    // None current: keep the most advanced, then newest.
                    None => {
                        let mut sorted = healthy.to_vec();
                        sorted.sort_by_key(|t| std::cmp::Reverse(observed(t) as i32));
                        sorted.into_iter().take(1).collect()
                    }
                }
            }
        };
        shut.extend(
            healthy
                .iter()
                .copied()
                .filter(|t| !keep.iter().any(|k| task_id(k) == task_id(t))),
        );
    }
    let remaining: Vec<&Task> = healthy
        .iter()
        .copied()
        .filter(|t| !shut.iter().any(|s| task_id(s) == task_id(t)))
        .collect();
    if let [lone] = remaining.as_slice()
        && desired(lone) == TaskState::Ready
    {
        let still_running = all.iter().any(|t| {
            task_id(t) != task_id(lone)
                && desired(t) as i32 > TaskState::Running as i32
                && observed(t).is_live()
                && observed(t) as i32 >= TaskState::Assigned as i32
                && node_loss(&t.node_id, nodes).is_none()
        });
        if !still_running {
            start.push(*lone);
        }
    }
    (shut, start)
}

/// A stop-first replacement: created desired READY (placed and prepared, not started).
pub fn prepared_only(mut t: Task) -> Task {
    t.desired_state = TaskState::Ready as i32;
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::reconcile;
    use crate::orchestrator::testutil::*;
    use shoal_proto::v1::{ServiceSpec, TaskSpec, Version, update_config};
    use std::collections::HashMap;

    fn three_nodes() -> HashMap<String, Node> {
        nodes(vec![ready("n1"), ready("n2"), ready("n3")])
    }

    /// `web` with `replicas` slots whose spec moved on (force_update 1) from the one
    /// its tasks run (force_update 0), with this update config.
    fn updated_service(replicas: u64, config: UpdateConfig) -> Service {
        let mut svc = replicated_service("svc1", "web", replicas);
        if let Some(spec) = svc.spec.as_mut() {
            spec.update = Some(config);
            if let Some(t) = spec.task.as_mut() {
                t.force_update = 1;
            }
        }
        svc.previous_spec = Some(ServiceSpec {
            task: Some(TaskSpec::default()),
            ..svc.spec.clone().unwrap_or_default()
        });
        svc.spec_version = Some(Version { index: 7 });
        svc
    }

    fn config(parallelism: u64, delay_s: i64, order: update_config::UpdateOrder) -> UpdateConfig {
        UpdateConfig {
            parallelism,
            delay: Some(prost_types::Duration {
                seconds: delay_s,
                nanos: 0,
            }),
            failure_action: update_config::FailureAction::Pause as i32,
            monitor: Some(prost_types::Duration {
                seconds: 5,
                nanos: 0,
            }),
            max_failure_ratio: 0.0,
            order: order as i32,
        }
    }

    fn updating_since(mut svc: Service, secs: u64) -> Service {
        svc.update_status = Some(UpdateStatus {
            state: UpdateState::Updating as i32,
            started_at: Some(ts(secs)),
            completed_at: None,
            message: "update in progress".into(),
        });
        svc
    }

    fn running(id: &str, slot: u64, node: &str) -> Task {
        task(id, slot, node, TaskState::Running)
    }

    /// A task of the new spec, created at `created`, observed `state` at `changed`
    /// (and RUNNING since `changed` when it runs).
    fn new_spec(id: &str, slot: u64, state: TaskState, created: u64, changed: u64) -> Task {
        let mut t = task_full(id, slot, "n1", state, TaskState::Running, created, changed);
        if let Some(spec) = t.spec.as_mut() {
            spec.force_update = 1;
        }
        if state == TaskState::Running
            && let Some(s) = t.status.as_mut()
        {
            s.started_at = Some(ts(changed));
        }
        t
    }

    fn state(plan: &crate::orchestrator::Plan) -> Option<UpdateState> {
        plan.update_status
            .as_ref()
            .and_then(|s| UpdateState::try_from(s.state).ok())
    }

    #[test]
    fn stop_first_starts_an_update_one_slot_at_a_time() {
        let svc = updated_service(3, config(1, 0, update_config::UpdateOrder::StopFirst));
        let tasks = vec![
            running("a", 1, "n1"),
            running("b", 2, "n2"),
            running("c", 3, "n3"),
        ];
        let plan = reconcile(&svc, &tasks, &three_nodes(), at(10));
        assert_eq!(state(&plan), Some(UpdateState::Updating));
        assert_eq!(
            plan.update_status.as_ref().map(|s| s.message.as_str()),
            Some("update in progress")
        );
        assert_eq!(
            ids(&plan.shutdown),
            vec!["a"],
            "stop-first: the old one stops"
        );
        assert_eq!(created_slots(&plan.create), vec![1]);
        let new = plan.create.first().expect("a replacement");
        assert_eq!(new.desired_state, TaskState::Ready as i32, "prepared only");
        assert!(shoal_proto::task_is_current(new, &svc));
    }

    #[test]
    fn a_stop_first_replacement_starts_once_the_old_task_stopped() {
        let svc = updating_since(
            updated_service(2, config(1, 0, update_config::UpdateOrder::StopFirst)),
            10,
        );
        let mut new = new_spec("a2", 1, TaskState::Ready, 10, 11);
        new.desired_state = TaskState::Ready as i32;
        let stopping = task_full("a", 1, "n1", TaskState::Running, TaskState::Shutdown, 1, 10);
        let tasks = vec![stopping.clone(), new.clone(), running("b", 2, "n2")];
        let plan = reconcile(&svc, &tasks, &three_nodes(), at(11));
        assert!(plan.start.is_empty(), "the old one still runs: {plan:?}");
        assert!(plan.create.is_empty(), "slot 1's lane is busy: {plan:?}");
        let mut stopped = stopping;
        if let Some(s) = stopped.status.as_mut() {
            s.state = TaskState::Shutdown as i32;
        }
        let tasks = vec![stopped, new, running("b", 2, "n2")];
        let plan = reconcile(&svc, &tasks, &three_nodes(), at(12));
        assert_eq!(plan.start, vec!["a2".to_string()]);
        assert!(plan.create.is_empty());
    }

    #[test]
    fn the_next_slot_waits_for_the_delay_after_the_replacement_ran() {
        let svc = updating_since(
            updated_service(2, config(1, 3, update_config::UpdateOrder::StopFirst)),
            10,
        );
        let old = task_full(
            "a",
            1,
            "n1",
            TaskState::Shutdown,
            TaskState::Shutdown,
            1,
            11,
        );
        let tasks = vec![
            old,
            new_spec("a2", 1, TaskState::Running, 10, 12),
            running("b", 2, "n2"),
        ];
        // Ran at 12, delay 3: slot 2 waits until 15.
        let plan = reconcile(&svc, &tasks, &three_nodes(), at(13));
        assert!(
            plan.create.is_empty() && plan.shutdown.is_empty(),
            "{plan:?}"
        );
        assert_eq!(plan.requeue_at, Some(at(15)));
        let plan = reconcile(&svc, &tasks, &three_nodes(), at(15));
        assert_eq!(ids(&plan.shutdown), vec!["b"]);
        assert_eq!(created_slots(&plan.create), vec![2]);
        assert_eq!(state(&plan), None, "still the same update");
    }

    #[test]
    fn parallelism_two_replaces_two_slots_per_lane_round() {
        let svc = updated_service(6, config(2, 2, update_config::UpdateOrder::StopFirst));
        let tasks: Vec<Task> = (1..=6)
            .map(|s| running(&format!("t{s}"), s, "n1"))
            .collect();
        let plan = reconcile(&svc, &tasks, &three_nodes(), at(10));
        assert_eq!(created_slots(&plan.create), vec![1, 2]);
        let unlimited = updated_service(6, config(0, 2, update_config::UpdateOrder::StopFirst));
        let plan = reconcile(&unlimited, &tasks, &three_nodes(), at(10));
        assert_eq!(
            created_slots(&plan.create),
            vec![1, 2, 3, 4, 5, 6],
            "0 = all"
        );
    }

    #[test]
    fn start_first_keeps_the_old_task_until_the_new_one_runs() {
        let svc = updated_service(1, config(1, 0, update_config::UpdateOrder::StartFirst));
        let old = running("a", 1, "n1");
        let plan = reconcile(&svc, std::slice::from_ref(&old), &three_nodes(), at(10));
        assert!(plan.shutdown.is_empty(), "{plan:?}");
        assert_eq!(created_slots(&plan.create), vec![1]);
        assert_eq!(
            plan.create.first().map(|t| t.desired_state),
            Some(TaskState::Running as i32)
        );
        let svc = updating_since(svc, 10);
        let starting = new_spec("a2", 1, TaskState::Starting, 10, 11);
        let plan = reconcile(&svc, &[old.clone(), starting], &three_nodes(), at(11));
        assert!(plan.is_empty(), "both run until the new one does: {plan:?}");
        let up = new_spec("a2", 1, TaskState::Running, 10, 12);
        let plan = reconcile(&svc, &[old, up], &three_nodes(), at(12));
        assert_eq!(ids(&plan.shutdown), vec!["a"]);
    }

    #[test]
    fn the_update_completes_after_the_last_monitor_window() {
        let svc = updating_since(
            updated_service(1, config(1, 0, update_config::UpdateOrder::StopFirst)),
            10,
        );
        let old = task_full(
            "a",
            1,
            "n1",
            TaskState::Shutdown,
            TaskState::Shutdown,
            1,
            11,
        );
        let tasks = vec![old, new_spec("a2", 1, TaskState::Running, 10, 12)];
        let plan = reconcile(&svc, &tasks, &three_nodes(), at(14));
        assert_eq!(state(&plan), None, "still monitoring");
        assert_eq!(plan.requeue_at, Some(at(17)));
        let plan = reconcile(&svc, &tasks, &three_nodes(), at(17));
        assert_eq!(state(&plan), Some(UpdateState::Completed));
        let done = plan.update_status.expect("a status");
        assert_eq!(done.message, "update completed");
        assert_eq!(done.started_at, Some(ts(10)));
        assert_eq!(done.completed_at, Some(ts(17)));
    }

    #[test]
    fn a_failed_replacement_pauses_or_rolls_back() {
        let mut cfg = config(1, 0, update_config::UpdateOrder::StopFirst);
        let svc = updating_since(updated_service(3, cfg), 10);
        let failed = new_spec("a2", 1, TaskState::Failed, 10, 12);
        let tasks = vec![failed, running("b", 2, "n2"), running("c", 3, "n3")];
        let plan = reconcile(&svc, &tasks, &three_nodes(), at(13));
        assert_eq!(state(&plan), Some(UpdateState::Paused));
        assert_eq!(
            plan.update_status.as_ref().map(|s| s.message.as_str()),
            Some("update paused due to failure or early termination of task a2")
        );
        assert!(
            plan.create.iter().all(|t| t.slot == 1),
            "no other slot: {plan:?}"
        );

        cfg.failure_action = update_config::FailureAction::Rollback as i32;
        let svc = updating_since(updated_service(3, cfg), 10);
        let plan = reconcile(&svc, &tasks, &three_nodes(), at(13));
        assert!(plan.rollback);
        assert_eq!(state(&plan), Some(UpdateState::RollbackStarted));
        assert_eq!(
            plan.update_status.as_ref().map(|s| s.message.as_str()),
            Some("update rolled back due to failure or early termination of task a2")
        );

        // A tolerated ratio: 1 failure of 3 slots is not above 0.5.
        cfg.failure_action = update_config::FailureAction::Pause as i32;
        cfg.max_failure_ratio = 0.5;
        let svc = updating_since(updated_service(3, cfg), 10);
        let plan = reconcile(&svc, &tasks, &three_nodes(), at(13));
        assert_eq!(state(&plan), None);
        assert!(created_slots(&plan.create).contains(&2), "{plan:?}");
    }

    #[test]
    fn a_task_that_ran_longer_than_the_monitor_window_is_no_failure() {
        let svc = updating_since(
            updated_service(2, config(1, 0, update_config::UpdateOrder::StopFirst)),
            10,
        );
        let mut died = new_spec("a2", 1, TaskState::Failed, 10, 30);
        if let Some(s) = died.status.as_mut() {
            s.started_at = Some(ts(12));
        }
        let tasks = vec![died, running("b", 2, "n2")];
        let plan = reconcile(&svc, &tasks, &three_nodes(), at(31));
        assert_eq!(state(&plan), None, "{plan:?}");
        assert_eq!(ids(&plan.shutdown), vec!["b"], "the update goes on");
    }

    #[test]
    fn a_paused_update_replaces_nothing_until_the_next_update() {
        let mut svc = updated_service(2, config(1, 0, update_config::UpdateOrder::StopFirst));
        svc.update_status = Some(UpdateStatus {
            state: UpdateState::Paused as i32,
            ..Default::default()
        });
        let tasks = vec![running("a", 1, "n1"), running("b", 2, "n2")];
        assert!(reconcile(&svc, &tasks, &three_nodes(), at(20)).is_empty());
    }

    #[test]
    fn a_scale_change_leaves_tasks_current() {
        let svc = replicated_service("svc1", "web", 3);
        let tasks = vec![running("a", 1, "n1"), running("b", 2, "n2")];
        let plan = reconcile(&svc, &tasks, &three_nodes(), at(20));
        assert_eq!(created_slots(&plan.create), vec![3]);
        assert_eq!(plan.update_status, None);
    }

    #[test]
    fn a_rollback_uses_the_rollback_config_and_completes_as_such() {
        let mut svc = updated_service(2, config(1, 0, update_config::UpdateOrder::StopFirst));
        if let Some(spec) = svc.spec.as_mut() {
            spec.rollback = Some(config(0, 0, update_config::UpdateOrder::StopFirst));
        }
        svc.update_status = Some(UpdateStatus {
            state: UpdateState::RollbackStarted as i32,
            started_at: Some(ts(10)),
            completed_at: None,
            message: "manually requested rollback".into(),
        });
        let tasks = vec![running("a", 1, "n1"), running("b", 2, "n2")];
        let plan = reconcile(&svc, &tasks, &three_nodes(), at(11));
        assert_eq!(created_slots(&plan.create), vec![1, 2], "parallelism 0");
        let tasks = vec![
            new_spec("a2", 1, TaskState::Running, 11, 12),
            new_spec("b2", 2, TaskState::Running, 11, 12),
        ];
        let plan = reconcile(&svc, &tasks, &three_nodes(), at(18));
        assert_eq!(state(&plan), Some(UpdateState::RollbackCompleted));
    }

    #[test]
    fn global_services_update_node_by_node() {
        let mut svc = global_service("svc1", "agent");
        if let Some(spec) = svc.spec.as_mut() {
            spec.update = Some(config(1, 0, update_config::UpdateOrder::StopFirst));
            if let Some(t) = spec.task.as_mut() {
                t.force_update = 1;
            }
        }
        let tasks = vec![
            task("a", 0, "n1", TaskState::Running),
            task("b", 0, "n2", TaskState::Running),
            task("c", 0, "n3", TaskState::Running),
        ];
        let plan = reconcile(&svc, &tasks, &three_nodes(), at(10));
        assert_eq!(ids(&plan.shutdown), vec!["a"]);
        assert_eq!(plan.create.len(), 1);
        assert_eq!(plan.create.first().map(|t| t.node_id.as_str()), Some("n1"));
        assert_eq!(state(&plan), Some(UpdateState::Updating));
    }
}
