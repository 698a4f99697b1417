//! One container of the pod: its life (a state with checked transitions, like the shim's
//! task state), the status shown for it, its back-offs and what has been told of it.

use std::sync::Arc;

use wasmlet_pod::k8s_openapi::api::core::v1::{Container, Pod};
use wasmlet_pod::k8s_openapi::jiff::Timestamp;
use wasmlet_pod::{
    BackOff, ContainerFacts, ContainerKind, ExitFacts, InitRun, RunState, Termination,
};

use super::runs::SetupFailure;
use crate::probe::Probing;
use crate::resume::ResumedContainer;

/// An illegal move of a container's life: a defect of the worker, logged and ignored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot {action} a container that is {from}")]
pub(super) struct Illegal {
    /// What was asked (`start`, `end`, `settle`, `stop`).
    action: &'static str,
    /// The state it was in.
    from: &'static str,
}

/// Why a run is being stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StopCause {
    /// The pod is stopping (deleted, past its deadline, evicted, or done).
    Pod,
    /// It failed its liveness or startup probe.
    Probe,
}

/// A run going on.
pub(super) struct Run {
    /// The running container.
    pub(super) container: Arc<wasmlet_runtime::Container>,
    /// Its probes (none for init containers).
    pub(super) probing: Option<Probing>,
    /// Why it is being stopped, once it is (its `Killing` event is out).
    pub(super) stopping: Option<StopCause>,
}

/// Where a container is in its life.
pub(super) enum Life {
    /// Never started (in this worker or an earlier one).
    Created,
    /// A run is going on (boxed: its probes are large).
    Running(Box<Run>),
    /// The last run ended; the restart policy decides what is next.
    Exited {
        /// How it ended.
        exit: ExitFacts,
        /// Whether it was stopped for failing a liveness or startup probe.
        killed_by_probe: bool,
    },
    /// Ended for good: the restart policy keeps it down.
    Settled(ExitFacts),
}

impl Life {
    fn name(&self) -> &'static str {
        match self {
            Life::Created => "created",
            Life::Running(_) => "running",
            Life::Exited { .. } => "exited",
            Life::Settled(_) => "settled",
        }
    }

    fn illegal(&self, action: &'static str) -> Illegal {
        Illegal {
            action,
            from: self.name(),
        }
    }

    /// `Created` or `Exited` -> `Running`.
    fn start(&mut self, container: Arc<wasmlet_runtime::Container>) -> Result<(), Illegal> {
        match self {
            Life::Created | Life::Exited { .. } => {
                *self = Life::Running(Box::new(Run {
                    container,
                    probing: None,
                    stopping: None,
                }));
                Ok(())
            }
            _ => Err(self.illegal("start")),
        }
    }

    /// `Running` -> `Exited`.
    fn end(&mut self, exit: ExitFacts) -> Result<(), Illegal> {
        let Life::Running(run) = self else {
            return Err(self.illegal("end"));
        };
        let killed_by_probe = run.stopping == Some(StopCause::Probe);
        *self = Life::Exited {
            exit,
            killed_by_probe,
        };
        Ok(())
    }

    /// `Exited` -> `Settled`.
    fn settle(&mut self) -> Result<(), Illegal> {
        let Life::Exited { exit, .. } = self else {
            return Err(self.illegal("settle"));
        };
        *self = Life::Settled(*exit);
        Ok(())
    }

    /// `Running` -> `Running`, being stopped for `cause` (a probe's cause stays); whether
    /// it was not being stopped before.
    fn stop(&mut self, cause: StopCause) -> Result<bool, Illegal> {
        let Life::Running(run) = self else {
            return Err(self.illegal("stop"));
        };
        let first = run.stopping.is_none();
        if first || cause == StopCause::Probe {
            run.stopping = Some(cause);
        }
        Ok(first)
    }
}

/// A set-up failure and its back-off.
#[derive(Default)]
pub(super) struct Setup {
    /// The last failure to set a run up, and when; cleared by a start.
    pub(super) failed: Option<(Timestamp, SetupFailure)>,
    /// The back-off between attempts.
    pub(super) back_off: BackOff,
    /// The failure whose back-off was told.
    pub(super) told: Option<Timestamp>,
}

/// Everything known of one container (init or regular).
pub(super) struct Record {
    pub(super) spec: Container,
    pub(super) kind: ContainerKind,
    life: Life,
    /// The state its status shows.
    pub(super) state: RunState,
    /// The termination before the current run.
    pub(super) last: Option<Termination>,
    /// The latest termination.
    pub(super) terminated: Option<Termination>,
    pub(super) restart_count: i32,
    /// Runs started by this worker, numbering reports of exits and probes.
    pub(super) run: u64,
    /// The crash-loop back-off.
    pub(super) back_off: BackOff,
    pub(super) setup: Setup,
    pub(super) image_id: String,
    pub(super) container_id: Option<String>,
    /// Probes that cannot run were told (once per container).
    pub(super) probe_errors_told: bool,
    /// The exit whose CrashLoopBackOff was told.
    pub(super) back_off_told: Option<Timestamp>,
}

impl Record {
    fn new(spec: Container, kind: ContainerKind, waiting: &str) -> Record {
        Record {
            spec,
            kind,
            life: Life::Created,
            state: RunState::waiting(waiting, None),
            last: None,
            terminated: None,
            restart_count: 0,
            run: 0,
            back_off: BackOff::default(),
            setup: Setup::default(),
            image_id: String::new(),
            container_id: None,
            probe_errors_told: false,
            back_off_told: None,
        }
    }

    /// Carries on from a run of an earlier worker: it has ended, and the next run is
    /// restart number `restart_count + 1`.
    pub(super) fn resume(&mut self, resumed: &ResumedContainer, now: Timestamp) {
        let last = resumed.last.clone();
        self.restart_count = resumed.restart_count;
        self.life = Life::Exited {
            exit: ExitFacts {
                exit_code: last.exit_code,
                finished_at: last.finished_at.unwrap_or(now),
            },
            killed_by_probe: false,
        };
        self.container_id = last.container_id.clone();
        self.state = RunState::Terminated(last.clone());
        self.terminated = Some(last);
    }

    /// Whether it ever ran.
    pub(super) fn started(&self) -> bool {
        !matches!(self.life, Life::Created)
    }

    /// Its current run.
    pub(super) fn running(&self) -> Option<&Run> {
        match &self.life {
            Life::Running(run) => Some(run),
            _ => None,
        }
    }

    /// Its current run, to change.
    pub(super) fn running_mut(&mut self) -> Option<&mut Run> {
        match &mut self.life {
            Life::Running(run) => Some(run),
            _ => None,
        }
    }

    /// How its last run ended, once it has (settled or not).
    pub(super) fn exit(&self) -> Option<ExitFacts> {
        match self.life {
            Life::Exited { exit, .. } | Life::Settled(exit) => Some(exit),
            _ => None,
        }
    }

    /// Whether its last run ended and it is not settled: the restart policy decides next.
    /// `Some(killed_by_probe)` then.
    pub(super) fn exited(&self) -> Option<(ExitFacts, bool)> {
        match self.life {
            Life::Exited {
                exit,
                killed_by_probe,
            } => Some((exit, killed_by_probe)),
            _ => None,
        }
    }

    /// Whether it ended for good.
    pub(super) fn settled(&self) -> bool {
        matches!(self.life, Life::Settled(_))
    }

    /// Starts a run (see [`Life::start`]).
    pub(super) fn start(
        &mut self,
        container: Arc<wasmlet_runtime::Container>,
    ) -> Result<(), Illegal> {
        self.life.start(container)?;
        self.run += 1;
        Ok(())
    }

    /// Ends the current run (see [`Life::end`]).
    pub(super) fn end(&mut self, exit: ExitFacts) -> Result<(), Illegal> {
        self.life.end(exit)
    }

    /// Leaves it down for good (see [`Life::settle`]).
    pub(super) fn settle(&mut self) -> Result<(), Illegal> {
        self.life.settle()
    }

    /// Marks its run as being stopped (see [`Life::stop`]); whether it was not before.
    pub(super) fn stopping(&mut self, cause: StopCause) -> Result<bool, Illegal> {
        self.life.stop(cause)
    }

    /// How an init container's run stands, for the init sequence.
    pub(super) fn init_run(&self) -> InitRun {
        match (&self.life, self.exit()) {
            (Life::Running(run), _) => {
                let starting = run.probing.as_ref().and_then(Probing::started) == Some(false);
                match starting {
                    true => InitRun::Starting,
                    false => InitRun::Running,
                }
            }
            (_, Some(exit)) => InitRun::Exited(exit.exit_code),
            (_, None) => InitRun::NotStarted,
        }
    }

    /// What the pod's status is computed from.
    pub(super) fn facts(&self) -> ContainerFacts {
        let last_termination = match self.state {
            RunState::Waiting { .. } => self.terminated.clone().or_else(|| self.last.clone()),
            _ => self.last.clone(),
        };
        let probing = self.running().and_then(|run| run.probing.as_ref());
        ContainerFacts {
            name: self.spec.name.clone(),
            state: self.state.clone(),
            last_termination,
            restart_count: self.restart_count,
            image: self.spec.image.clone().unwrap_or_default(),
            image_id: self.image_id.clone(),
            container_id: self.container_id.clone(),
            ready: self.running().is_some() && probing.is_none_or(Probing::ready),
            started: probing.and_then(Probing::started),
        }
    }
}

/// The records of a pod's containers: init containers first, in order, then regular ones.
pub(super) fn records(pod: &Pod) -> Vec<Record> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let init = spec.init_containers.iter().flatten();
    let waiting = if spec.init_containers.as_ref().is_some_and(|i| !i.is_empty()) {
        wasmlet_pod::status::POD_INITIALIZING
    } else {
        wasmlet_pod::status::CONTAINER_CREATING
    };
    let init = init.map(|c| {
        let kind = match wasmlet_pod::restart::is_sidecar(c) {
            true => ContainerKind::Sidecar,
            false => ContainerKind::Init,
        };
        Record::new(c.clone(), kind, waiting)
    });
    let regular = spec
        .containers
        .iter()
        .map(|c| Record::new(c.clone(), ContainerKind::Regular, waiting));
    init.chain(regular).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> ExitFacts {
        ExitFacts {
            exit_code: code,
            finished_at: Timestamp::UNIX_EPOCH,
        }
    }

    /// A container that never ends by itself, for the states that hold one.
    fn container() -> Arc<wasmlet_runtime::Container> {
        let runtime = wasmlet_runtime::Runtime::new(wasmlet_runtime::RuntimeConfig::default());
        let runtime = runtime.unwrap();
        let program = runtime.load(wasmlet_fixtures::sleep()).unwrap();
        let spec = wasmlet_runtime::ContainerSpec {
            args: vec!["sleep".into(), "60".into()],
            ..wasmlet_runtime::ContainerSpec::default()
        };
        Arc::new(runtime.start(&program, spec).unwrap())
    }

    #[tokio::test]
    async fn legal_moves() {
        let running = container();
        let mut life = Life::Created;
        life.start(running.clone()).unwrap();
        assert_eq!(life.stop(StopCause::Pod), Ok(true));
        assert_eq!(life.stop(StopCause::Probe), Ok(false));
        life.end(exit(137)).unwrap();
        assert!(matches!(
            life,
            Life::Exited {
                killed_by_probe: true,
                ..
            }
        ));
        life.start(running.clone()).unwrap();
        life.end(exit(0)).unwrap();
        assert!(matches!(
            life,
            Life::Exited {
                killed_by_probe: false,
                ..
            }
        ));
        life.settle().unwrap();
        assert!(matches!(life, Life::Settled(e) if e.exit_code == 0));
        running.kill();
    }

    #[tokio::test]
    async fn illegal_moves_are_errors() {
        let running = container();
        let mut life = Life::Created;
        assert_eq!(
            life.end(exit(0)).unwrap_err().to_string(),
            "cannot end a container that is created"
        );
        assert!(life.settle().is_err() && life.stop(StopCause::Pod).is_err());
        life.start(running.clone()).unwrap();
        assert!(life.start(running.clone()).is_err(), "started twice");
        assert!(life.settle().is_err(), "settled while running");
        life.end(exit(1)).unwrap();
        assert!(life.end(exit(1)).is_err() && life.stop(StopCause::Probe).is_err());
        life.settle().unwrap();
        let err = life.start(running.clone()).unwrap_err();
        assert_eq!(err.to_string(), "cannot start a container that is settled");
        assert!(life.end(exit(1)).is_err() && life.settle().is_err());
        running.kill();
    }

    #[test]
    fn a_resumed_container_has_exited_and_restarts_next() {
        let mut record = Record::new(Container::default(), ContainerKind::Regular, "x");
        assert!(!record.started() && record.exit().is_none());
        let last = Termination {
            exit_code: 3,
            ..Termination::default()
        };
        let resumed = ResumedContainer {
            restart_count: 2,
            last,
        };
        record.resume(&resumed, Timestamp::UNIX_EPOCH);
        assert!(record.started() && !record.settled());
        assert_eq!(record.exited().map(|(e, _)| e.exit_code), Some(3));
        assert_eq!(record.init_run(), InitRun::Exited(3));
        assert_eq!(record.restart_count, 2);
    }
}
