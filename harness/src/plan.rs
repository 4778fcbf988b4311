//! Matrix → plan: every job with its ordered steps, deadlines and coverage stage.

use crate::matrix::Job;
pub use crate::scenario::{ActionKind, Stage, StepKind};
use crate::scenario::{LoadedScenario, Tier};
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

/// Builds the plan for the given jobs of a scenario.
pub fn build(s: &LoadedScenario, jobs: Vec<Job>) -> Plan {
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
        .map(|job| {
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
                            deadline: st.deadline,
                            grace: st.grace.unwrap_or(DEFAULT_GRACE),
                            slow_after: st.slow_after,
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
