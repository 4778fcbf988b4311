//! The one event stream between the engine and every reporter.

use crate::plan::{Stage, StepPlan};
use crate::scenario::ProviderKind;
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub run_id: String,
    pub scenario: String,
    pub version: String,
    pub dry_run: bool,
    pub artifacts: PathBuf,
    pub started: SystemTime,
    pub jobs: Vec<JobInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobInfo {
    pub name: String,
    pub context: String,
    pub provider: ProviderKind,
    pub cni: String,
    pub topology: String,
    pub version: String,
    pub steps: Vec<StepPlan>,
    /// How qemu ran the job's VM nodes (`kvm`, `tcg`), for VM jobs.
    pub accelerator: Option<String>,
}

/// Why a step failed; decides the run's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The system under test misbehaved (kubeadm init failed, a node never got Ready).
    Test,
    /// The harness could not build or provide what the test needs (docker, images, disk).
    Infrastructure,
    /// The step ran past its deadline.
    Deadline,
    /// Ctrl-C, SIGTERM or the whole-run deadline stopped it.
    Interrupted,
}

/// The names of the sub-tests that failed, in order.
pub fn failed_names(subs: &[SubTest]) -> Vec<String> {
    subs.iter()
        .filter(|s| matches!(s.outcome, StepOutcome::Failed { .. }))
        .map(|s| s.name.clone())
        .collect()
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum StepOutcome {
    Passed,
    /// Dry run: nothing was executed; these are the things the step would do.
    DryRun {
        would: Vec<String>,
    },
    Failed {
        kind: FailureKind,
        message: String,
        /// Which condition, which log line: what a reader needs first.
        diagnosis: Option<String>,
        /// The last lines of the step log.
        log_tail: String,
    },
    Skipped {
        reason: String,
    },
}

impl StepOutcome {
    /// A test failure with only a message: what a sub-test (a smoke check, a spec, a gate
    /// check) reports.
    pub fn test_failure(message: String) -> StepOutcome {
        StepOutcome::Failed {
            kind: FailureKind::Test,
            message,
            diagnosis: None,
            log_tail: String::new(),
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            StepOutcome::Passed => "passed",
            StepOutcome::DryRun { .. } => "dry-run",
            StepOutcome::Failed { .. } => "failed",
            StepOutcome::Skipped { .. } => "skipped",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    pub job: String,
    pub step: String,
    pub index: usize,
    pub stage: Option<Stage>,
    pub non_blocking: bool,
    pub blocking_kind: crate::scenario::StepKind,
    #[serde(flatten)]
    pub outcome: StepOutcome,
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Step log, relative to the artifacts folder.
    pub log: Option<PathBuf>,
    /// Extra JUnit properties an action reported (e.g. conformance counts).
    pub properties: Vec<(String, String)>,
    /// Checks inside the step, each its own testcase (smoke checks, conformance specs).
    pub subtests: Vec<SubTest>,
}

impl StepResult {
    /// The value of a property the action reported, if it reported it.
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One check inside a step, reported as its own testcase `<job> <step>/<name>`.
#[derive(Debug, Clone, Serialize)]
pub struct SubTest {
    pub name: String,
    #[serde(flatten)]
    pub outcome: StepOutcome,
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Passed, after failing on an earlier attempt or in the run being re-run: why it is
    /// flaky (`failed on attempt 1 of 2`, ...). A JUnit property, a summary line and a
    /// row of `shakedown history`'s flaky specs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flaky: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    RunStarted(RunInfo),
    JobStarted {
        job: String,
    },
    StepStarted {
        job: String,
        step: String,
        #[serde(with = "humantime_serde")]
        deadline: Duration,
    },
    StepSlow {
        job: String,
        step: String,
        #[serde(with = "humantime_serde")]
        elapsed: Duration,
    },
    /// A line worth showing live (a command being run, a readiness condition met).
    StepNote {
        job: String,
        step: String,
        note: String,
    },
    StepFinished(StepResult),
    JobFinished {
        job: String,
        passed: bool,
    },
    RunFinished(crate::engine::RunSummary),
}
