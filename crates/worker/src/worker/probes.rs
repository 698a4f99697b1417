//! A run's probes: started with the run, their results counted, and a run stopped when its
//! liveness or startup probe has failed enough.

use std::time::Duration;

use wasmlet_pod::{ContainerKind, RestartPolicy, termination_grace_period};

use super::Worker;
use super::record::StopCause;
use crate::events;
use crate::net;
use crate::probe::{ProbeKind, ProbeReport, Probing, ReportTo, Verdict};

impl Worker {
    /// Starts probing a new run (not of init containers); probes that cannot run are told
    /// once per container.
    pub(super) fn start_probes(&mut self, index: usize) {
        let record = &mut self.records[index];
        if record.kind == ContainerKind::Init {
            return;
        }
        let report_to = ReportTo {
            reports: self.probes_tx.clone(),
            index,
            run: record.run,
        };
        let probing = Probing::start(&record.spec, net::pod_ip(&self.node), report_to);
        if !record.probe_errors_told {
            record.probe_errors_told = true;
            for (kind, error) in probing.errors() {
                let event = events::probe_errored(kind.name(), error);
                self.events.push(Some(&record.spec.name), event);
            }
        }
        if let Some(run) = record.running_mut() {
            run.probing = Some(probing);
        }
    }

    /// Counts a probe's result: an `Unhealthy` event for a failure, and a kill when a
    /// liveness or startup probe has failed enough.
    pub(super) fn on_probe(&mut self, report: ProbeReport) {
        let record = &mut self.records[report.index];
        let current = record.run == report.run;
        let name = record.spec.name.clone();
        let probing = record.running_mut().and_then(|run| run.probing.as_mut());
        let Some(probing) = probing.filter(|_| current) else {
            return;
        };
        if !probing.expects(report.kind) {
            return;
        }
        if let Err(output) = &report.outcome {
            let event = events::probe_failed(report.kind.name(), output);
            self.events.push(Some(&name), event);
        }
        if probing.observe(report.kind, report.outcome.is_ok()) == Verdict::Kill {
            self.kill_for_probe(report.index, report.kind);
        }
    }

    /// Stops a run that failed its liveness or startup probe; it is restarted unless the
    /// pod's `restartPolicy` is `Never`.
    fn kill_for_probe(&mut self, index: usize, kind: ProbeKind) {
        let restarts = self.policy != RestartPolicy::Never
            || self.records[index].kind == ContainerKind::Sidecar;
        let record = &mut self.records[index];
        let Some(run) = record.running() else {
            return;
        };
        let probe_grace = run.probing.as_ref().and_then(|p| p.grace(kind));
        let grace = termination_grace_period(&self.pod, probe_grace);
        let container = run.container.clone();
        let name = record.spec.name.clone();
        let mut message = format!(
            "Container {name} failed {} probe",
            kind.name().to_lowercase()
        );
        if restarts {
            message.push_str(", will be restarted");
        }
        self.events
            .push(Some(&name), events::killing(&name, Some(message)));
        if let Err(illegal) = record.stopping(StopCause::Probe) {
            tracing::error!(pod = %self.label, container = %name, "{illegal}");
        }
        container.stop(Duration::try_from(grace).unwrap_or_default());
    }
}
