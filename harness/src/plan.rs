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
            let steps = sc
                .steps
                .iter()
                .enumerate()
                .map(|(index, st)| {
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
                    StepPlan {
                        index,
                        name: st.name.clone(),
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
                        disabled,
                    }
                })
                .collect();
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
