//! A service's state as one container: which of its tasks counts, and in what state it is.
//!
//! A service with 0 replicas is "created" until it ever ran a task, then "exited" (stopped).
//! With 1 replica the task Swarm wants running counts: before it runs the service is "created"
//! (first task) or "restarting" (a replacement after a failure); once running (or `starting`,
//! i.e. waiting for the image's health check) it is "running". When no task is wanted running
//! any more (the restart policy gave up) the newest task's exit is the service's exit.

use bollard::models::{Task, TaskState};

use crate::runtime::ContainerState;

/// Raft index of the task's last change: tasks are ordered by it, and it compares with the
/// service's own index (one counter for the whole swarm store).
pub(super) fn index(task: &Task) -> u64 {
    task.version.as_ref().and_then(|v| v.index).unwrap_or(0)
}

fn state(task: &Task) -> Option<TaskState> {
    task.status.as_ref().and_then(|s| s.state)
}

fn before_running(state: Option<TaskState>) -> bool {
    matches!(
        state,
        None | Some(
            TaskState::NEW
                | TaskState::ALLOCATED
                | TaskState::PENDING
                | TaskState::ASSIGNED
                | TaskState::ACCEPTED
                | TaskState::PREPARING
                | TaskState::READY
        )
    )
}

/// Whether the task's process runs (`starting` runs too: Swarm waits for the health check).
pub(super) fn is_up(task: &Task) -> bool {
    matches!(state(task), Some(TaskState::RUNNING | TaskState::STARTING))
}

fn wanted_running(task: &Task) -> bool {
    !matches!(
        task.desired_state,
        Some(
            TaskState::SHUTDOWN
                | TaskState::REMOVE
                | TaskState::COMPLETE
                | TaskState::FAILED
                | TaskState::REJECTED
                | TaskState::ORPHANED
        )
    )
}

pub(super) fn failed(task: &Task) -> bool {
    matches!(state(task), Some(TaskState::FAILED | TaskState::REJECTED))
}

/// Whether the task's process ran and ended (or never could run).
pub(super) fn ended(task: &Task) -> bool {
    matches!(
        state(task),
        Some(
            TaskState::COMPLETE
                | TaskState::SHUTDOWN
                | TaskState::FAILED
                | TaskState::REJECTED
                | TaskState::ORPHANED
                | TaskState::REMOVE
        )
    )
}

/// How often the restart policy replaced a failed task: failed tasks that have a successor.
pub(super) fn restarts(tasks: &[Task]) -> u64 {
    let newest = tasks.iter().map(index).max().unwrap_or(0);
    tasks
        .iter()
        .filter(|t| failed(t) && index(t) < newest)
        .count() as u64
}

pub(super) fn exit_code(task: &Task) -> Option<i64> {
    task.status
        .as_ref()
        .and_then(|s| s.container_status.as_ref())
        .and_then(|c| c.exit_code)
}

/// The task whose container stands for the service now, and the service's state.
/// `tasks` are sorted by [`index`]; `service_index` is the service's version index.
pub(super) fn observe(
    replicas: i64,
    service_index: u64,
    tasks: &[Task],
) -> (ContainerState, Option<&Task>) {
    if replicas <= 0 {
        // Stopped, or stopping: a task still up is still running.
        if let Some(up) = tasks.iter().rev().find(|t| is_up(t)) {
            return (ContainerState::Running, Some(up));
        }
        return match tasks.last() {
            None => (ContainerState::Created, None),
            Some(t) => (
                ContainerState::Exited {
                    exit_code: exit_code(t),
                },
                Some(t),
            ),
        };
    }
    if let Some(current) = tasks.iter().rev().find(|t| wanted_running(t)) {
        // A replacement of a failed task is a restart; a task after a stop (its predecessor
        // was shut down) or the first one is a fresh start.
        let replaces_failure = tasks
            .iter()
            .filter(|t| index(t) < index(current))
            .max_by_key(|t| index(t))
            .is_some_and(failed);
        let state = if is_up(current) {
            ContainerState::Running
        } else if before_running(state(current)) && !replaces_failure {
            ContainerState::Created
        } else {
            // Ended while still wanted: the orchestrator is about to replace it.
            ContainerState::Restarting
        };
        return (state, Some(current));
    }
    match tasks.last() {
        None => (ContainerState::Created, None),
        // Older than the service's last update (the scale-up): its replacement is not
        // scheduled yet.
        Some(t) if index(t) < service_index => (ContainerState::Created, None),
        Some(t) => (
            ContainerState::Exited {
                exit_code: exit_code(t),
            },
            Some(t),
        ),
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::{ContainerStatus, ObjectVersion, TaskStatus};

    use super::*;

    fn task(index: u64, state: TaskState, desired: TaskState, exit: Option<i64>) -> Task {
        Task {
            version: Some(ObjectVersion { index: Some(index) }),
            desired_state: Some(desired),
            status: Some(TaskStatus {
                state: Some(state),
                container_status: Some(ContainerStatus {
                    exit_code: exit,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_new_service_is_created_and_a_stopped_one_exited() {
        assert_eq!(observe(0, 10, &[]).0, ContainerState::Created);
        let stopped = [task(12, TaskState::SHUTDOWN, TaskState::SHUTDOWN, Some(0))];
        assert_eq!(
            observe(0, 13, &stopped).0,
            ContainerState::Exited { exit_code: Some(0) }
        );
        let stopping = [task(12, TaskState::RUNNING, TaskState::SHUTDOWN, None)];
        assert_eq!(observe(0, 13, &stopping).0, ContainerState::Running);
    }

    #[test]
    fn a_scaled_up_service_is_created_until_its_task_runs() {
        let old = task(12, TaskState::SHUTDOWN, TaskState::SHUTDOWN, Some(137));
        // Scaled up at index 20; the orchestrator has not made the task yet.
        assert_eq!(
            observe(1, 20, std::slice::from_ref(&old)).0,
            ContainerState::Created
        );
        let pending = task(21, TaskState::PREPARING, TaskState::RUNNING, None);
        assert_eq!(
            observe(1, 20, &[old.clone(), pending]).0,
            ContainerState::Created
        );
        let starting = task(22, TaskState::STARTING, TaskState::RUNNING, None);
        assert_eq!(
            observe(1, 20, &[old.clone(), starting]).0,
            ContainerState::Running
        );
        let running = task(23, TaskState::RUNNING, TaskState::RUNNING, None);
        let tasks = [old, running];
        let (state, current) = observe(1, 20, &tasks);
        assert_eq!(state, ContainerState::Running);
        assert_eq!(current.map(index), Some(23));
    }

    #[test]
    fn failures_restart_or_exit_by_the_restart_policy() {
        let failed = task(21, TaskState::FAILED, TaskState::SHUTDOWN, Some(3));
        let replacement = task(22, TaskState::PENDING, TaskState::READY, None);
        assert_eq!(
            observe(1, 20, &[failed.clone(), replacement]).0,
            ContainerState::Restarting
        );
        // No replacement: the policy gave up.
        assert_eq!(
            observe(1, 20, &[failed]).0,
            ContainerState::Exited { exit_code: Some(3) }
        );
        let replaced = [
            task(21, TaskState::FAILED, TaskState::SHUTDOWN, Some(3)),
            task(22, TaskState::RUNNING, TaskState::RUNNING, None),
        ];
        assert_eq!(restarts(&replaced), 1);
        assert!(ended(&replaced[0]) && !ended(&replaced[1]));
        // A crash long ago, then a stop: the next start is a start, not a restart.
        let history = [
            task(21, TaskState::FAILED, TaskState::SHUTDOWN, Some(3)),
            task(22, TaskState::SHUTDOWN, TaskState::SHUTDOWN, Some(0)),
            task(30, TaskState::PENDING, TaskState::RUNNING, None),
        ];
        assert_eq!(observe(1, 29, &history).0, ContainerState::Created);
        let dying = task(21, TaskState::FAILED, TaskState::RUNNING, Some(1));
        assert_eq!(observe(1, 20, &[dying]).0, ContainerState::Restarting);
    }
}
