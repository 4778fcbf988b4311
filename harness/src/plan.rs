//! Matrix → plan: every job with its ordered steps, deadlines and coverage stage.

use crate::matrix::Job;
use crate::scenario::{Accelerator, LoadedScenario, ProviderKind, Tier};
pub use crate::scenario::{ActionKind, Stage, StepKind};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// Timeouts as data, after cargo-nextest: warn every `slow_after`, stop at `deadline` with
/// SIGTERM to the step's process groups, SIGKILL after `grace`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Timeout {
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    #[serde(with = "humantime_serde::option")]
    pub slow_after: Option<Duration>,
}

pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize)]
pub struct StepPlan {
    pub index: usize,
    pub name: String,
    pub action: ActionKind,
    pub kind: StepKind,
    pub stage: Option<Stage>,
    pub timeout: Timeout,
    pub always: bool,
    pub non_blocking: bool,
    pub command: Vec<String>,
    /// Set when the step is planned but switched off; it is reported as skipped with this.
    pub disabled: Option<String>,
    /// For an `upgrade` step: which hop of `upgrade.through` (0-based) it takes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hop: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobPlan {
    /// With `job.accelerator` set for VM jobs: under TCG every deadline is the scenario's
    /// times `vm.tcg_deadline_factor`.
    pub job: Job,
    pub steps: Vec<StepPlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub scenario: String,
    pub path: PathBuf,
    pub version: String,
    #[serde(with = "humantime_serde::option")]
    pub run_deadline: Option<Duration>,
    pub jobs: Vec<JobPlan>,
    /// What the final summary says about conformance when it is disabled.
    pub conformance_disabled: Option<String>,
}

/// Builds the plan for the given jobs of a scenario. `accel` is what a probe found for VM
/// nodes on this machine (None when no job has VM nodes).
pub fn build(s: &LoadedScenario, jobs: Vec<Job>, accel: Option<Accelerator>) -> Plan {
    let sc = &s.scenario;
    let conformance_disabled = sc.conformance.disabled.as_ref().map(|d| {
        format!(
            "conformance: DISABLED ({}, expires {})",
            d.reason.trim(),
            d.expires
        )
    });
    let jobs = jobs
        .into_iter()
        .map(|mut job| {
            job.accelerator = (job.provider == ProviderKind::Vm)
                .then_some(accel)
                .flatten();
            let factor = match job.accelerator {
                Some(Accelerator::Tcg) => sc.vm.tcg_deadline_factor,
                _ => 1.0,
            };
            let mut steps: Vec<StepPlan> = Vec::new();
            for st in &sc.steps {
                let disabled = match st.action.stage() {
                    Some(Stage::Conformance) => conformance_disabled.clone().or_else(|| {
                        (sc.conformance.tier != Tier::Conformance).then(|| {
                            format!(
                                "conformance: NOT RUN (tier {:?} selected)",
                                sc.conformance.tier
                            )
                        })
                    }),
                    _ => None,
                };
                // An `upgrade` step is one step per hop, each with the step's deadline, so
                // each hop has its own deadline and testcase.
                let hops: Vec<(String, Option<usize>)> = match (st.action, &sc.upgrade) {
                    (ActionKind::Upgrade, Some(u)) => u
                        .through
                        .iter()
                        .enumerate()
                        .map(|(k, v)| (format!("{}-{v}", st.name), Some(k)))
                        .collect(),
                    _ => vec![(st.name.clone(), None)],
                };
                for (name, hop) in hops {
                    steps.push(StepPlan {
                        index: steps.len(),
                        name,
                        action: st.action,
                        kind: st.action.kind(),
                        stage: st.action.stage(),
                        timeout: Timeout {
                            deadline: scaled(st.deadline, factor, st.action),
                            grace: st.grace.unwrap_or(DEFAULT_GRACE),
                            slow_after: st.slow_after.map(|d| scaled(d, factor, st.action)),
                        },
                        always: st.always,
                        non_blocking: st.non_blocking,
                        command: st.command.clone(),
                        disabled: disabled.clone(),
                        hop,
                    });
                }
            }
            JobPlan { job, steps }
        })
        .collect();
    Plan {
        scenario: sc.branch.clone(),
        path: s.path.clone(),
        version: s.version_label(),
        run_deadline: sc.run_deadline,
        jobs,
        conformance_disabled,
    }
}

/// A step's deadline on a job whose VM nodes run under TCG: longer by `factor`, except for
/// the steps that run on this machine alone (host setup and image builds).
fn scaled(d: Duration, factor: f64, action: ActionKind) -> Duration {
    match action {
        ActionKind::HostSetup | ActionKind::ImageBuild => d,
        _ => d.mul_f64(factor),
    }
}
