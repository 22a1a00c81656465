//! The restart supervisor's decision: does a dead task get a successor in its slot,
//! and from when. Swarm's `restart.Supervisor`, without its in-memory history: attempts
//! are counted from the slot's tasks in the store, so any leader decides the same.

use std::time::{Duration, SystemTime};

use shoal_proto::v1::{RestartPolicy, Task, TaskState, restart_policy::Condition};

use super::{created_time, duration, observed, status_time, task_id};

/// Swarm's default restart delay.
pub const DEFAULT_RESTART_DELAY: Duration = Duration::from_secs(5);

/// What happens to a dead task's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// A new task in the same slot (on the same node, for global services), created no
    /// earlier than `not_before` (the task's death plus the restart delay).
    Restart { not_before: SystemTime },
    /// The slot stays dead: the condition excludes it or the attempts are used up.
    NoRestart,
}

/// Decides whether `dead` (a task that finished while still desired RUNNING) is
/// restarted, under `policy` (the restart policy of the spec it ran with; `None` means
/// Swarm's defaults: condition any, delay 5 s, unlimited attempts).
///
/// - condition `none` never restarts; `on-failure` does not restart a task that
///   COMPLETEd (exit 0); `any` restarts whatever the end.
/// - `max_attempts` (0 = unlimited) bounds the restarts in the slot: `slot_tasks` are the
///   slot's tasks (for global services: the node's), `dead` included or not. Every task
///   of the same spec version but the oldest counts as one restart — a service update
///   starts the count afresh, as in Swarm. With a `window`, only restarts created within
///   the window before `dead` finished count.
/// - the delay runs from the moment `dead` finished (its status timestamp).
///
/// The answer depends only on the tasks, never on the time of the call, so a
/// level-triggered reconcile asking again gets the same decision.
///
/// Without a window, the dead task's `restart_count` (set when it was created) also
/// counts, so attempts whose tasks the reaper removed still count. With a window, only
/// the slot's tasks still in the store can say when they were created.
pub fn decide_restart(
    dead: &Task,
    slot_tasks: &[Task],
    policy: Option<&RestartPolicy>,
) -> RestartDecision {
    let default = RestartPolicy::default();
    let policy = policy.unwrap_or(&default);
    let condition = Condition::try_from(policy.condition).unwrap_or(Condition::Any);
    match condition {
        Condition::None => return RestartDecision::NoRestart,
        Condition::OnFailure if observed(dead) == TaskState::Complete => {
            return RestartDecision::NoRestart;
        }
        Condition::OnFailure | Condition::Any => {}
    }

    let died_at = status_time(dead);
    if policy.max_attempts > 0 {
        let dead_id = task_id(dead);
        let mut peers: Vec<&Task> = slot_tasks
            .iter()
            .filter(|t| task_id(t) != dead_id && t.spec_version == dead.spec_version)
            .chain(std::iter::once(dead))
            .collect();
        let created = |t: &Task| created_time(t).unwrap_or_else(|| status_time(t));
        peers.sort_by(|a, b| {
            created(a)
                .cmp(&created(b))
                .then_with(|| task_id(a).cmp(task_id(b)))
        });
        let window = duration(policy.window.as_ref()).filter(|w| !w.is_zero());
        let since = window.and_then(|w| died_at.checked_sub(w));
        let mut restarts = peers
            .iter()
            .skip(1)
            .filter(|t| since.is_none_or(|since| created(t) >= since))
            .count() as u64;
        // Without a window every attempt counts, including those the reaper removed:
        // the dead task carries the count.
        if window.is_none() {
            restarts = restarts.max(dead.restart_count);
        }
        if restarts >= policy.max_attempts {
            return RestartDecision::NoRestart;
        }
    }

    let delay = duration(policy.delay.as_ref()).unwrap_or(DEFAULT_RESTART_DELAY);
    RestartDecision::Restart {
        not_before: died_at.checked_add(delay).unwrap_or(died_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::testutil::*;

    fn policy(condition: Condition, delay_s: u64, max: u64, window_s: u64) -> RestartPolicy {
        RestartPolicy {
            condition: condition as i32,
            delay: Some(prost_types::Duration {
                seconds: delay_s as i64,
                nanos: 0,
            }),
            max_attempts: max,
            window: (window_s > 0).then_some(prost_types::Duration {
                seconds: window_s as i64,
                nanos: 0,
            }),
        }
    }

    #[test]
    fn attempts_the_reaper_removed_still_count() {
        let p = policy(Condition::Any, 0, 7, 0);
        // Only the dead task is left in the store; it is the 8th of its slot.
        let mut dead = dead_task("t8", 1, TaskState::Failed, 80, 81);
        dead.restart_count = 7;
        assert_eq!(
            decide_restart(&dead, &[], Some(&p)),
            RestartDecision::NoRestart
        );
        dead.restart_count = 6;
        assert!(matches!(
            decide_restart(&dead, &[], Some(&p)),
            RestartDecision::Restart { .. }
        ));
    }

    #[test]
    fn condition_none_never_restarts() {
        let t = dead_task("t1", 1, TaskState::Failed, 10, 20);
        let p = policy(Condition::None, 0, 0, 0);
        assert_eq!(
            decide_restart(&t, &[], Some(&p)),
            RestartDecision::NoRestart
        );
    }

    #[test]
    fn on_failure_restarts_failures_but_not_completions() {
        let p = policy(Condition::OnFailure, 1, 0, 0);
        let failed = dead_task("t1", 1, TaskState::Failed, 10, 20);
        assert_eq!(
            decide_restart(&failed, &[], Some(&p)),
            RestartDecision::Restart { not_before: at(21) }
        );
        let complete = dead_task("t1", 1, TaskState::Complete, 10, 20);
        assert_eq!(
            decide_restart(&complete, &[], Some(&p)),
            RestartDecision::NoRestart
        );
        let rejected = dead_task("t1", 1, TaskState::Rejected, 10, 20);
        assert!(matches!(
            decide_restart(&rejected, &[], Some(&p)),
            RestartDecision::Restart { .. }
        ));
    }

    #[test]
    fn any_restarts_completions_too() {
        let p = policy(Condition::Any, 3, 0, 0);
        let complete = dead_task("t1", 1, TaskState::Complete, 10, 20);
        assert_eq!(
            decide_restart(&complete, &[], Some(&p)),
            RestartDecision::Restart { not_before: at(23) }
        );
    }

    #[test]
    fn default_policy_is_any_with_five_seconds_delay() {
        let t = dead_task("t1", 1, TaskState::Complete, 10, 20);
        assert_eq!(
            decide_restart(&t, &[], None),
            RestartDecision::Restart { not_before: at(25) }
        );
        // An explicit policy without a delay also gets the default.
        let p = RestartPolicy {
            condition: Condition::OnFailure as i32,
            ..Default::default()
        };
        let f = dead_task("t1", 1, TaskState::Failed, 10, 20);
        assert_eq!(
            decide_restart(&f, &[], Some(&p)),
            RestartDecision::Restart { not_before: at(25) }
        );
    }

    #[test]
    fn max_attempts_counts_the_slots_restarts() {
        let p = policy(Condition::OnFailure, 0, 2, 0);
        let t1 = dead_task("t1", 1, TaskState::Failed, 10, 11);
        let t2 = dead_task("t2", 1, TaskState::Failed, 12, 13);
        let t3 = dead_task("t3", 1, TaskState::Failed, 14, 15);
        // First failure: no restart yet → restart (attempt 1).
        assert!(matches!(
            decide_restart(&t1, std::slice::from_ref(&t1), Some(&p)),
            RestartDecision::Restart { .. }
        ));
        // Second failure: one restart so far → restart (attempt 2).
        let slot = vec![t1.clone(), t2.clone()];
        assert!(matches!(
            decide_restart(&t2, &slot, Some(&p)),
            RestartDecision::Restart { .. }
        ));
        // Third failure: two restarts done → stays failed.
        let slot = vec![t1, t2, t3.clone()];
        assert_eq!(
            decide_restart(&t3, &slot, Some(&p)),
            RestartDecision::NoRestart
        );
    }

    #[test]
    fn max_attempts_only_counts_restarts_within_the_window() {
        // Window 60 s; t3 dies at 215; restarts t2 (created 100) and t3 (created 200):
        // only t3 is within [155, 215].
        let p = policy(Condition::Any, 0, 2, 60);
        let t1 = dead_task("t1", 1, TaskState::Failed, 0, 50);
        let t2 = dead_task("t2", 1, TaskState::Failed, 100, 150);
        let t3 = dead_task("t3", 1, TaskState::Failed, 200, 215);
        let slot = vec![t1.clone(), t2.clone(), t3.clone()];
        assert!(matches!(
            decide_restart(&t3, &slot, Some(&p)),
            RestartDecision::Restart { .. }
        ));
        // Without the window both count.
        let p = policy(Condition::Any, 0, 2, 0);
        assert_eq!(
            decide_restart(&t3, &slot, Some(&p)),
            RestartDecision::NoRestart
        );
    }

    #[test]
    fn a_new_spec_version_starts_the_count_afresh() {
        let p = policy(Condition::Any, 0, 1, 0);
        let t1 = dead_task("t1", 1, TaskState::Failed, 0, 5);
        let t2 = dead_task("t2", 1, TaskState::Failed, 10, 15);
        let mut t3 = dead_task("t3", 1, TaskState::Failed, 20, 25);
        t3.spec_version = Some(shoal_proto::v1::Version { index: 2 });
        let slot = vec![t1, t2.clone(), t3.clone()];
        assert_eq!(
            decide_restart(&t2, &slot, Some(&p)),
            RestartDecision::NoRestart
        );
        assert!(matches!(
            decide_restart(&t3, &slot, Some(&p)),
            RestartDecision::Restart { .. }
        ));
    }

    #[test]
    fn the_decision_does_not_depend_on_call_order_or_duplicates() {
        let p = policy(Condition::Any, 0, 2, 0);
        let t1 = dead_task("t1", 1, TaskState::Failed, 10, 11);
        let t2 = dead_task("t2", 1, TaskState::Failed, 12, 13);
        let a = decide_restart(&t2, &[t2.clone(), t1.clone()], Some(&p));
        let b = decide_restart(&t2, &[t1, t2.clone()], Some(&p));
        assert_eq!(a, b);
    }
}
