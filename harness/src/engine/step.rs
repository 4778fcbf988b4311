//! What the engine hands a step and what it expects back: the [`Action`] trait actions
//! implement, the [`StepContext`] they run in, and the [`StepError`] they report. The
//! engine defines these and never sees an implementation: the caller gives it [`Steps`].

use crate::cni::Catalog;
use crate::engine::event::FailureKind;
use crate::engine::EventTx;
use crate::matrix::Job;
use crate::plan::StepPlan;
use crate::process::{self, Cmd, CommandError, Output, StepLog};
use crate::scenario::{ActionKind, LoadedScenario};
use std::any::Any;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What the engine runs: an implementation per action kind, and a fresh state for each
/// job's steps to hand each other (the cluster, the build, ...), opaque to the engine.
pub trait Steps: Send + Sync {
    fn action(&self, kind: ActionKind) -> Box<dyn Action>;
    fn new_job_state(&self) -> Box<dyn Any + Send + Sync>;
}

/// A step failure as an action reports it; the engine adds deadline and interrupt causes.
/// The message is what reports show; the cause, when there is one, is kept as the error
/// itself (a [`CommandError`] with its command, status and output), not only as text.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    /// `None`: decided by the step's kind (test or infrastructure).
    pub kind: Option<FailureKind>,
    pub message: String,
    pub diagnosis: Option<String>,
    #[source]
    pub source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl StepError {
    pub fn new(message: impl Into<String>) -> StepError {
        StepError {
            kind: None,
            message: message.into(),
            diagnosis: None,
            source: None,
        }
    }
    pub fn infra(message: impl Into<String>) -> StepError {
        StepError {
            kind: Some(FailureKind::Infrastructure),
            ..StepError::new(message)
        }
    }
    pub fn with_diagnosis(mut self, d: impl Into<String>) -> StepError {
        self.diagnosis = Some(d.into());
        self
    }
    /// Keeps `e` as the cause.
    pub fn with_source(mut self, e: impl std::error::Error + Send + Sync + 'static) -> StepError {
        self.source = Some(Arc::new(e));
        self
    }
    /// The cause as a command error, if it was one.
    pub fn command_error(&self) -> Option<&CommandError> {
        self.source.as_deref().and_then(|e| e.downcast_ref())
    }
}

impl From<CommandError> for StepError {
    fn from(e: CommandError) -> StepError {
        let diagnosis = e
            .stderr()
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_string());
        StepError {
            kind: None,
            message: e.to_string(),
            diagnosis,
            source: None,
        }
        .with_source(e)
    }
}

/// Options that apply to every job of a run.
#[derive(Debug, Clone, Default)]
pub struct RunSettings {
    pub run_id: String,
    /// Repository root: scenarios/, cni-variants/, fixtures/.
    pub root: PathBuf,
    pub artifacts: PathBuf,
    pub keep_cluster: bool,
    /// Use these Kubernetes binaries instead of the scenario's source.
    pub kubernetes_binaries: Option<PathBuf>,
    /// Use this node image instead of building one.
    pub node_image: Option<String>,
    /// Where slow builds are cached by content.
    pub cache_dir: PathBuf,
    /// Run only shard K of N of the selected conformance specs (stable, by name hash).
    pub conformance_shard: Option<(u32, u32)>,
    /// The kubeconfig of a cluster someone else made (`provider: existing`).
    pub kubeconfig: Option<PathBuf>,
    /// The release bucket for `source: release` (default `https://dl.k8s.io`).
    pub release_url: Option<crate::release::bucket::Bucket>,
    /// Registry mirrors from the command line, added to the scenario's.
    pub registry_mirrors: Vec<crate::release::mirror::Mirror>,
    /// How long each conformance spec took before (from the run history): the host runner
    /// starts the longest first.
    pub spec_durations: std::collections::BTreeMap<String, std::time::Duration>,
    /// `--rerun-failed`: only the specs an earlier run left failed or without a result.
    pub rerun: Option<crate::conformance::rerun::Rerun>,
}

/// Shared by all steps and jobs of a run.
pub struct RunContext {
    pub settings: RunSettings,
    pub scenario: Arc<LoadedScenario>,
    pub catalog: Arc<Catalog>,
}

/// Everything a running step can use.
pub struct StepContext<'a> {
    pub run: &'a RunContext,
    pub job: &'a Job,
    pub step: &'a StepPlan,
    pub log: StepLog,
    /// Cancelled at the step deadline or on interruption; commands stop on it.
    pub cancel: CancellationToken,
    /// The job's state, as [`Steps::new_job_state`] made it.
    pub state: &'a mut (dyn Any + Send + Sync),
    /// Extra JUnit properties for this step's testcase; add them with `property`.
    pub(crate) properties: std::sync::Mutex<Vec<(String, String)>>,
    /// Checks inside this step, each reported as its own testcase.
    pub subtests: Vec<crate::engine::event::SubTest>,
    pub(crate) events: EventTx,
    /// Set when the step's deadline, not an interruption, cancelled `cancel`.
    pub(crate) deadline_fired: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl StepContext<'_> {
    /// Runs a command under this step's log, deadline and grace period.
    pub async fn cmd(&self, cmd: Cmd) -> Result<Output, CommandError> {
        process::run(&cmd, &self.log, &self.cancel, self.step.timeout.grace).await
    }

    /// Records a JUnit property of this step (a count, a measured time). Takes `&self`, so
    /// an action can record while it still holds other borrows of its context.
    pub fn property(&self, key: impl Into<String>, value: impl ToString) {
        self.properties
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((key.into(), value.to_string()));
    }

    /// Whether the step's deadline came (as opposed to the run being interrupted): what
    /// cancelled `cancel`, once it is cancelled.
    pub fn deadline_came(&self) -> bool {
        self.deadline_fired
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A command runner bound to this step, for library code.
    pub fn runner(&self) -> process::Runner {
        process::Runner {
            log: self.log.clone(),
            cancel: self.cancel.clone(),
            grace: self.step.timeout.grace,
        }
    }

    /// A progress note: into the step log and onto the event stream.
    pub fn note(&self, note: impl Into<String>) {
        let note = note.into();
        self.log.line(&note);
        self.events.send(crate::engine::event::Event::StepNote {
            job: self.job.name.clone(),
            step: self.step.name.clone(),
            note,
        });
    }

    /// Where this job's artifacts go.
    pub fn job_dir(&self) -> PathBuf {
        self.run
            .settings
            .artifacts
            .join("jobs")
            .join(self.job.context())
    }
}

#[async_trait::async_trait]
pub trait Action: Send + Sync {
    /// What the step would do, for `--dry-run` and `plan`.
    fn describe(&self, cx: &StepContext<'_>) -> Vec<String>;
    async fn run(&self, cx: &mut StepContext<'_>) -> Result<(), StepError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_failure_stays_the_cause_of_the_step_error() {
        let e = CommandError::Stopped {
            cmd: "kubeadm init".into(),
            how: "SIGTERM",
            elapsed: std::time::Duration::from_secs(3),
        };
        let s = StepError::from(e);
        assert!(s.message.contains("kubeadm init"), "{}", s.message);
        match s.command_error() {
            Some(CommandError::Stopped { cmd, how, .. }) => {
                assert_eq!((cmd.as_str(), *how), ("kubeadm init", "SIGTERM"))
            }
            other => panic!("the cause was lost: {other:?}"),
        }
        assert!(std::error::Error::source(&s).is_some());
        assert!(StepError::new("plain").command_error().is_none());
    }
}
