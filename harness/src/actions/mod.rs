//! Step actions: what a scenario step can do. Each action is a small trait impl; the table
//! `ACTIONS` is the single list the validator, the planner and the registry share.

pub mod build;
pub mod cluster;
mod cni;
mod conformance;
mod exec;
mod host;
mod kubeadm;
mod logs;
mod nodechecks;
mod smoke;

use crate::cni::Catalog;
use crate::engine::event::FailureKind;
use crate::engine::EventTx;
use crate::matrix::Job;
use crate::plan::{Stage, StepPlan};
use crate::process::{self, Cmd, CommandError, Output, StepLog};
use crate::scenario::LoadedScenario;
use serde::Serialize;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What a failure of the step means for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// Prepares what the test needs; a failure is an infrastructure error.
    Setup,
    /// Exercises the system under test; a failure is a test failure.
    Test,
    /// Collects logs or removes resources; a failure is an infrastructure error.
    Teardown,
}

#[derive(Debug, Clone, Copy)]
pub struct ActionInfo {
    pub name: &'static str,
    pub kind: StepKind,
    pub stage: Option<Stage>,
    pub summary: &'static str,
}

/// Every action a scenario step may name.
pub const ACTIONS: &[ActionInfo] = &[
    ActionInfo { name: "exec", kind: StepKind::Test, stage: None, summary: "run a command (program relative to the repository root)" },
    ActionInfo { name: "host-setup", kind: StepKind::Setup, stage: None, summary: "install the Debian packages real clusters need and start dockerd" },
    ActionInfo { name: "image-build", kind: StepKind::Setup, stage: None, summary: "build or reuse Kubernetes binaries, component images and the node image, cached by content" },
    ActionInfo { name: "cluster-up", kind: StepKind::Setup, stage: None, summary: "create the job's nodes with its provider" },
    ActionInfo { name: "kubeadm-init", kind: StepKind::Test, stage: Some(Stage::Init), summary: "render the kubeadm config for the version and run kubeadm init on the first control plane" },
    ActionInfo { name: "kubeadm-join", kind: StepKind::Test, stage: Some(Stage::Join), summary: "join the other nodes, in parallel" },
    ActionInfo { name: "cni", kind: StepKind::Test, stage: Some(Stage::Cni), summary: "apply the CNI variant, then wait in order for: nodes registered, CNI applied, nodes and kube-system pods Ready" },
    ActionInfo { name: "node-checks", kind: StepKind::Test, stage: Some(Stage::Smoke), summary: "tier 1: kernel features, cgroups, container runtime and swap on every node" },
    ActionInfo { name: "smoke", kind: StepKind::Test, stage: Some(Stage::Smoke), summary: "short cluster validation through the API: nodes, scheduling, pod and Service traffic, namespaces" },
    ActionInfo { name: "conformance", kind: StepKind::Test, stage: Some(Stage::Conformance), summary: "run e2e.test conformance with the scenario's mode, focus and skip" },
    ActionInfo { name: "export-logs", kind: StepKind::Teardown, stage: None, summary: "export node journals, pod logs, manifests and cluster objects (best effort, bounded)" },
    ActionInfo { name: "cluster-down", kind: StepKind::Teardown, stage: None, summary: "remove every resource the job created (unless --keep-cluster)" },
];

pub fn info(name: &str) -> Option<&'static ActionInfo> {
    ACTIONS.iter().find(|a| a.name == name)
}

/// The implementation behind an action name.
pub fn lookup(name: &str) -> Option<Box<dyn Action>> {
    match name {
        "exec" => Some(Box::new(exec::Exec)),
        "host-setup" => Some(Box::new(host::HostSetup)),
        "image-build" => Some(Box::new(build::ImageBuild)),
        "cluster-up" => Some(Box::new(cluster::ClusterUp)),
        "kubeadm-init" => Some(Box::new(kubeadm::KubeadmInit)),
        "kubeadm-join" => Some(Box::new(kubeadm::KubeadmJoin)),
        "cni" => Some(Box::new(cni::Cni)),
        "node-checks" => Some(Box::new(nodechecks::NodeChecks)),
        "smoke" => Some(Box::new(smoke::Smoke)),
        "conformance" => Some(Box::new(conformance::Conformance)),
        "export-logs" => Some(Box::new(logs::ExportLogs)),
        "cluster-down" => Some(Box::new(cluster::ClusterDown)),
        _ => None,
    }
}

/// A step failure as an action reports it; the engine adds deadline and interrupt causes.
#[derive(Debug, Clone)]
pub struct StepError {
    /// `None`: decided by the step's kind (test or infrastructure).
    pub kind: Option<FailureKind>,
    pub message: String,
    pub diagnosis: Option<String>,
}

impl StepError {
    pub fn new(message: impl Into<String>) -> StepError {
        StepError {
            kind: None,
            message: message.into(),
            diagnosis: None,
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
        }
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
}

/// Shared by all steps and jobs of a run.
pub struct RunContext {
    pub settings: RunSettings,
    pub scenario: Arc<LoadedScenario>,
    pub catalog: Arc<Catalog>,
}

/// State one job's steps hand to each other (the cluster handle, the kubeconfig, ...),
/// keyed by type.
#[derive(Default)]
pub struct JobState {
    values: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
}

impl JobState {
    pub fn insert<T: Any + Send + Sync>(&mut self, v: T) {
        self.values.insert(TypeId::of::<T>(), Box::new(v));
    }
    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|b| b.downcast_ref())
    }
    pub fn get_mut<T: Any + Send + Sync>(&mut self) -> Option<&mut T> {
        self.values
            .get_mut(&TypeId::of::<T>())
            .and_then(|b| b.downcast_mut())
    }
    pub fn remove<T: Any + Send + Sync>(&mut self) -> Option<T> {
        self.values
            .remove(&TypeId::of::<T>())
            .and_then(|b| b.downcast().ok())
            .map(|b| *b)
    }
}

/// Everything a running step can use.
pub struct StepContext<'a> {
    pub run: &'a RunContext,
    pub job: &'a Job,
    pub step: &'a StepPlan,
    pub log: StepLog,
    /// Cancelled at the step deadline or on interruption; commands stop on it.
    pub cancel: CancellationToken,
    pub state: &'a mut JobState,
    /// Extra JUnit properties for this step's testcase; add them with `property`.
    pub(crate) properties: std::sync::Mutex<Vec<(String, String)>>,
    /// Checks inside this step, each reported as its own testcase.
    pub subtests: Vec<crate::engine::event::SubTest>,
    pub(crate) events: EventTx,
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
    fn every_listed_action_has_an_implementation() {
        for a in ACTIONS {
            assert!(
                lookup(a.name).is_some(),
                "action {} has no implementation",
                a.name
            );
        }
        assert!(lookup("no-such-action").is_none());
    }

    #[test]
    fn job_state_is_typed() {
        let mut s = JobState::default();
        s.insert(5u32);
        s.insert(String::from("x"));
        *s.get_mut::<u32>().unwrap() += 1;
        assert_eq!(s.get::<u32>(), Some(&6));
        assert_eq!(s.remove::<String>().as_deref(), Some("x"));
        assert!(s.get::<String>().is_none());
    }
}
