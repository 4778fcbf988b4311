//! Step actions: what a scenario step can do. Each action is a small impl of the engine's
//! [`Action`]; [`lookup`] maps every [`ActionKind`] to one, and [`Actions`] is what a real
//! run hands the engine.

pub mod build;
pub mod cluster;
mod cni;
mod conformance;
mod etcd;
mod etcd_up;
mod exec;
mod ha;
mod host;
mod kubeadm;
mod logs;
mod nodechecks;
mod reboot;
mod smoke;
mod soak;
mod storage;
mod upgrade;

use crate::images::KubeArtifacts;
use crate::kubeadm::ClusterParams;
use crate::provider::Cluster;
use std::any::Any;

pub use crate::engine::step::{Action, RunContext, RunSettings, StepContext, StepError, Steps};

pub use crate::scenario::{ActionKind, StepKind};

/// The implementation of each action: one exhaustive match, so an action the enum names
/// cannot lack one.
pub fn lookup(kind: ActionKind) -> Box<dyn Action> {
    match kind {
        ActionKind::Exec => Box::new(exec::Exec),
        ActionKind::HostSetup => Box::new(host::HostSetup),
        ActionKind::ImageBuild => Box::new(build::ImageBuild),
        ActionKind::ClusterUp => Box::new(cluster::ClusterUp),
        ActionKind::EtcdUp => Box::new(etcd_up::EtcdUp),
        ActionKind::KubeadmInit => Box::new(kubeadm::KubeadmInit),
        ActionKind::KubeadmJoin => Box::new(kubeadm::KubeadmJoin),
        ActionKind::Cni => Box::new(cni::Cni),
        ActionKind::NodeChecks => Box::new(nodechecks::NodeChecks),
        ActionKind::Smoke => Box::new(smoke::Smoke),
        ActionKind::Storage => Box::new(storage::Storage),
        ActionKind::NodeLoss => Box::new(storage::NodeLoss),
        ActionKind::Soak => Box::new(soak::Soak),
        ActionKind::ControlPlaneLoss => Box::new(ha::ControlPlaneLoss),
        ActionKind::EtcdMemberLoss => Box::new(ha::EtcdMemberLoss),
        ActionKind::EtcdBackup => Box::new(etcd::EtcdBackup),
        ActionKind::Upgrade => Box::new(upgrade::Upgrade),
        ActionKind::NodeReboot => Box::new(reboot::NodeReboot),
        ActionKind::Conformance => Box::new(conformance::Conformance),
        ActionKind::ExportLogs => Box::new(logs::ExportLogs),
        ActionKind::ClusterDown => Box::new(cluster::ClusterDown),
    }
}

impl From<crate::provider::ProviderError> for StepError {
    fn from(e: crate::provider::ProviderError) -> StepError {
        match e {
            crate::provider::ProviderError::Command(c) => StepError::from(c),
            other => StepError::infra(crate::error::chain(&other)).with_source(other),
        }
    }
}

/// What one job's steps hand to each other.
#[derive(Default)]
pub struct JobState {
    /// From `image-build`.
    pub artifacts: Option<KubeArtifacts>,
    /// From `image-build`: the other versions the job needs (upgrade hops, version-skewed
    /// workers), by the version the scenario names.
    pub other_builds: std::collections::BTreeMap<String, KubeArtifacts>,
    /// From the first `upgrade` hop: the workload whose Service is probed across hops.
    pub upgrade_workload: Option<upgrade::Workload>,
    /// From `image-build`, for jobs with VM nodes.
    pub vm_disk: Option<crate::images::vm::VmDisk>,
    /// From `cluster-up`; removed by `cluster-down`.
    pub cluster: Option<Cluster>,
    /// From `kubeadm-init`, for the joins.
    pub params: Option<ClusterParams>,
}

/// The real actions, for the engine.
pub struct Actions;

impl Steps for Actions {
    fn action(&self, kind: ActionKind) -> Box<dyn Action> {
        lookup(kind)
    }
    fn new_job_state(&self) -> Box<dyn Any + Send + Sync> {
        Box::<JobState>::default()
    }
}

/// Ends a step made of checks: they become its testcases, and it fails naming each failed
/// one (`2 smoke check(s) failed: a, b`).
pub(crate) fn checks_done(
    cx: &mut StepContext<'_>,
    what: &str,
    subs: Vec<crate::engine::event::SubTest>,
) -> Result<(), StepError> {
    let failed = crate::engine::event::failed_names(&subs);
    cx.subtests = subs;
    if failed.is_empty() {
        Ok(())
    } else {
        Err(StepError::new(format!(
            "{} {what} check(s) failed: {}",
            failed.len(),
            failed.join(", ")
        )))
    }
}

/// The typed job state inside a step's context.
pub trait JobStateExt {
    fn job(&self) -> &JobState;
    fn job_mut(&mut self) -> &mut JobState;

    /// The agnhost image workloads run, and its pull policy (`Never` when preloaded).
    fn agnhost(&self) -> (String, &'static str) {
        let art = self.job().artifacts.as_ref();
        (
            art.map(|a| a.image_set.agnhost.clone())
                .unwrap_or_else(crate::smoke::local_agnhost),
            art.map_or("Never", |a| a.image_set.pull_policy()),
        )
    }
}

impl JobStateExt for StepContext<'_> {
    fn job(&self) -> &JobState {
        self.state
            .downcast_ref()
            .expect("the engine runs actions with the state Actions makes")
    }
    fn job_mut(&mut self) -> &mut JobState {
        self.state
            .downcast_mut()
            .expect("the engine runs actions with the state Actions makes")
    }
}
