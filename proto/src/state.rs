//! Task-state rules shared by every process: states only move forward.

use crate::v1::TaskState;

pub trait TaskStateExt {
    /// Whether a task in `self` may move to `next`. Swarm's rule: never backwards.
    fn can_move_to(&self, next: TaskState) -> bool;
    /// RUNNING or earlier: the task has not finished.
    fn is_live(&self) -> bool;
    /// Past RUNNING: the task has finished one way or another.
    fn is_terminal(&self) -> bool;
    /// Swarm's display name, e.g. "Running".
    fn display_name(&self) -> &'static str;
}

impl TaskStateExt for TaskState {
    fn can_move_to(&self, next: TaskState) -> bool {
        (next as i32) >= (*self as i32)
    }

    fn is_live(&self) -> bool {
        (*self as i32) <= (TaskState::Running as i32)
    }

    fn is_terminal(&self) -> bool {
        (*self as i32) > (TaskState::Running as i32)
    }

    fn display_name(&self) -> &'static str {
        match self {
            TaskState::New => "New",
            TaskState::Pending => "Pending",
            TaskState::Assigned => "Assigned",
            TaskState::Accepted => "Accepted",
            TaskState::Preparing => "Preparing",
            TaskState::Ready => "Ready",
            TaskState::Starting => "Starting",
            TaskState::Running => "Running",
            TaskState::Complete => "Complete",
            TaskState::Shutdown => "Shutdown",
            TaskState::Failed => "Failed",
            TaskState::Rejected => "Rejected",
            TaskState::Remove => "Remove",
            TaskState::Orphaned => "Orphaned",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_keep_swarms_numbers_and_order() {
        assert_eq!(TaskState::New as i32, 0);
        assert_eq!(TaskState::Pending as i32, 64);
        assert_eq!(TaskState::Running as i32, 512);
        assert_eq!(TaskState::Orphaned as i32, 832);
        assert!(TaskState::Pending.can_move_to(TaskState::Running));
        assert!(!TaskState::Running.can_move_to(TaskState::Assigned));
        assert!(TaskState::Running.is_live());
        assert!(TaskState::Failed.is_terminal());
    }
}
