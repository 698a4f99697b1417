//! The lifecycle of one task: a small `Copy` state with checked transitions.

use containerd_shim_protos::api::Status;

/// An illegal move of a task.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The task cannot `action` while it is `from`.
    #[error("cannot {action} a task that is {from}")]
    Illegal {
        /// What was asked (`start`, `exit`, `delete`).
        action: &'static str,
        /// The state the task was in.
        from: TaskState,
    },
}

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Created: the module is compiled, nothing runs yet.
    Created,
    /// Started and not yet ended.
    Running,
    /// Ended (by itself or by a signal), not yet deleted.
    Exited,
    /// Deleted: its resources are released.
    Deleted,
}

impl TaskState {
    /// `Created` -> `Running`.
    pub fn start(self) -> Result<TaskState, Error> {
        match self {
            TaskState::Created => Ok(TaskState::Running),
            from => Err(Error::Illegal {
                action: "start",
                from,
            }),
        }
    }

    /// `Running` (or `Created`, killed before its start) -> `Exited`.
    pub fn exit(self) -> Result<TaskState, Error> {
        match self {
            TaskState::Created | TaskState::Running => Ok(TaskState::Exited),
            from => Err(Error::Illegal {
                action: "exit",
                from,
            }),
        }
    }

    /// `Created` or `Exited` -> `Deleted`; a running task must be killed first.
    pub fn delete(self) -> Result<TaskState, Error> {
        match self {
            TaskState::Created | TaskState::Exited => Ok(TaskState::Deleted),
            from => Err(Error::Illegal {
                action: "delete",
                from,
            }),
        }
    }

    /// The status containerd shows.
    pub fn status(self) -> Status {
        match self {
            TaskState::Created => Status::CREATED,
            TaskState::Running => Status::RUNNING,
            TaskState::Exited | TaskState::Deleted => Status::STOPPED,
        }
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TaskState::Created => "created",
            TaskState::Running => "running",
            TaskState::Exited => "exited",
            TaskState::Deleted => "deleted",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::TaskState::*;
    use super::*;

    #[test]
    fn legal_moves() {
        assert_eq!(Created.start(), Ok(Running));
        assert_eq!(Running.exit(), Ok(Exited));
        assert_eq!(Created.exit(), Ok(Exited));
        assert_eq!(Exited.delete(), Ok(Deleted));
        assert_eq!(Created.delete(), Ok(Deleted));
    }

    #[test]
    fn illegal_moves_are_errors() {
        for (state, action) in [
            (Running, TaskState::start as fn(TaskState) -> _),
            (Exited, TaskState::start),
            (Deleted, TaskState::start),
            (Exited, TaskState::exit),
            (Deleted, TaskState::exit),
            (Running, TaskState::delete),
            (Deleted, TaskState::delete),
        ] {
            assert!(action(state).is_err(), "{state}");
        }
        assert_eq!(
            Running.delete().unwrap_err().to_string(),
            "cannot delete a task that is running"
        );
    }

    #[test]
    fn statuses() {
        assert_eq!(Created.status(), Status::CREATED);
        assert_eq!(Running.status(), Status::RUNNING);
        assert_eq!(Exited.status(), Status::STOPPED);
    }
}
