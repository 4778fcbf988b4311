//! The engine: runs a plan's jobs and steps under deadlines and emits one event stream.

pub mod event;
pub mod step;

use crate::exit::ExitKind;
use crate::plan::{JobPlan, Plan, Stage, StepPlan};
use crate::process::{Deadline, StepLog};
use crate::scenario::StepKind;
use event::{Event, FailureKind, JobInfo, RunInfo, StepOutcome, StepResult};
use futures::StreamExt;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use step::{RunContext, StepContext, StepError, Steps};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Sends events to the reporter task; never blocks the engine.
#[derive(Clone)]
pub struct EventTx(mpsc::UnboundedSender<Event>);

impl EventTx {
    pub fn send(&self, e: Event) {
        let _ = self.0.send(e);
    }
}

/// How a run is stopped early. The first stop (Ctrl-C, SIGTERM, the run deadline) skips
/// the remaining ordinary steps and lets `always` steps clean up; a second stop aborts those
/// too.
#[derive(Clone, Default)]
pub struct Stop {
    soft: CancellationToken,
    hard: CancellationToken,
    cause: Arc<Mutex<Option<(String, bool)>>>,
}

impl Stop {
    /// `interrupted`: a person or a supervisor stopped the run (exit code 130), as opposed to
    /// the run deadline (a failure).
    pub fn stop(&self, cause: impl Into<String>, interrupted: bool) {
        let mut c = self.cause.lock().unwrap_or_else(|e| e.into_inner());
        if self.soft.is_cancelled() {
            self.hard.cancel();
        } else {
            *c = Some((cause.into(), interrupted));
            self.soft.cancel();
        }
    }
    pub fn is_stopped(&self) -> bool {
        self.soft.is_cancelled()
    }
    pub fn is_aborted(&self) -> bool {
        self.hard.is_cancelled()
    }
    pub fn cause(&self) -> Option<(String, bool)> {
        self.cause.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops on SIGINT/SIGTERM: the first stops the run and lets cleanup steps run, the
    /// second aborts those too. Abort the returned task when the run is over.
    pub fn on_signals(&self) -> tokio::task::JoinHandle<()> {
        let stop = self.clone();
        tokio::spawn(async move {
            let Ok(mut signals) = StopSignals::new() else {
                return;
            };
            loop {
                let name = signals.next().await;
                if stop.is_stopped() {
                    eprintln!("\n{name} again: aborting cleanup steps");
                } else {
                    eprintln!(
                        "\n{name}: stopping; cleanup steps still run (interrupt again to abort them)"
                    );
                }
                stop.stop(format!("interrupted by {name}"), true);
            }
        })
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Coverage {
    Passed,
    Failed,
    /// Stopped by Ctrl-C, SIGTERM or the run deadline: says nothing about the release.
    Interrupted(String),
    DryRun,
    Skipped(String),
    Disabled(String),
    NotPlanned,
}

impl Coverage {
    /// A short machine label: passed, failed, interrupted, dry-run, skipped, disabled,
    /// not-planned.
    pub fn label(&self) -> &'static str {
        match self {
            Coverage::Passed => "passed",
            Coverage::Failed => "failed",
            Coverage::Interrupted(_) => "interrupted",
            Coverage::DryRun => "dry-run",
            Coverage::Skipped(_) => "skipped",
            Coverage::Disabled(_) => "disabled",
            Coverage::NotPlanned => "not-planned",
        }
    }
}

/// SIGINT and SIGTERM, as one stream: what stops a run.
pub struct StopSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub fn new() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for the next one and names it.
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

impl std::fmt::Display for Coverage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Coverage::Passed => f.write_str("PASSED"),
            Coverage::Failed => f.write_str("FAILED"),
            Coverage::Interrupted(r) => write!(f, "INTERRUPTED ({r})"),
            Coverage::DryRun => f.write_str("DRY-RUN (nothing executed)"),
            Coverage::Skipped(r) => write!(f, "SKIPPED ({r})"),
            Coverage::Disabled(r) => f.write_str(r.trim_start_matches("conformance: ")),
            Coverage::NotPlanned => f.write_str("NOT IN PLAN"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    pub name: String,
    pub context: String,
    pub passed: bool,
    pub steps: Vec<StepResult>,
    pub coverage: Vec<(Stage, Coverage)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub scenario: String,
    pub version: String,
    pub dry_run: bool,
    pub started: SystemTime,
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    pub exit: ExitKind,
    pub exit_code: i32,
    /// Why the run stopped early, if it did.
    pub stopped: Option<String>,
    pub conformance_disabled: Option<String>,
    pub jobs: Vec<JobSummary>,
    /// Reporters that failed to write; the run still finished.
    pub reporter_errors: Vec<String>,
}

impl RunSummary {
    /// The coverage lines every run prints: which stages ran, per job.
    pub fn coverage_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for j in &self.jobs {
            out.push(format!(
                "{}: {}",
                j.name,
                if j.passed { "PASSED" } else { "FAILED" }
            ));
            for (stage, c) in &j.coverage {
                out.push(format!("  {}: {}", stage.as_str(), c));
            }
            // Counts on one line; what ran them (runner, e2e.test source) on another.
            let (mut counts, mut about) = (Vec::new(), Vec::new());
            for (k, v) in j.steps.iter().flat_map(|s| &s.properties) {
                if let Some(k) = k.strip_prefix("conformance.") {
                    let text = format!("{} {v}", k.replace('-', " "));
                    if v.parse::<u64>().is_ok() {
                        counts.push(text);
                    } else {
                        about.push(text);
                    }
                }
            }
            if !about.is_empty() {
                out.push(format!("  conformance: {}", about.join(", ")));
            }
            if !counts.is_empty() {
                out.push(format!("  conformance specs: {}", counts.join(", ")));
            }
            for st in &j.steps {
                for t in st.subtests.iter().filter(|t| t.flaky.is_some()) {
                    out.push(format!(
                        "  flaky: {} ({})",
                        t.name,
                        t.flaky.as_deref().unwrap_or_default()
                    ));
                }
            }
        }
        out
    }
}

pub struct RunOptions {
    pub dry_run: bool,
    pub parallel: usize,
    /// What runs each step: the real actions, or what a test plants.
    pub steps: Arc<dyn Steps>,
}

/// Runs every job of the plan, sending every event to `events` (the caller's reporters),
/// and returns the summary it sent last.
pub async fn run(
    plan: &Plan,
    cx: RunContext,
    opts: RunOptions,
    stop: Stop,
    events: mpsc::UnboundedSender<Event>,
) -> RunSummary {
    let started = SystemTime::now();
    let t0 = Instant::now();
    let events = EventTx(events);
    // Every process the run starts carries its id, so `gc` finds them if the run is killed.
    crate::process::tag_children(&cx.settings.run_id);

    let version = plan.version.clone();
    events.send(Event::RunStarted(RunInfo {
        run_id: cx.settings.run_id.clone(),
        scenario: plan.scenario.clone(),
        version: version.clone(),
        dry_run: opts.dry_run,
        artifacts: cx.settings.artifacts.clone(),
        started,
        jobs: plan.jobs.iter().map(|j| job_info(j, &version)).collect(),
    }));

    let deadline_task = plan.run_deadline.map(|d| {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            stop.stop(
                format!("run deadline of {} exceeded", humantime::format_duration(d)),
                false,
            );
        })
    });

    let cx = &cx;
    let stop_ref = &stop;
    let events_ref = &events;
    let artifact_errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let errors_ref = &artifact_errors;
    let (dry_run, steps) = (opts.dry_run, &*opts.steps);
    let mut jobs: Vec<(usize, JobSummary)> = futures::stream::iter(plan.jobs.iter().enumerate())
        .map(|(i, jp)| async move {
            (
                i,
                run_job(
                    jp,
                    Ctx {
                        run: cx,
                        dry_run,
                        steps,
                        stop: stop_ref,
                        events: events_ref,
                        artifact_errors: errors_ref,
                    },
                )
                .await,
            )
        })
        .buffer_unordered(opts.parallel.max(1))
        .collect()
        .await;
    jobs.sort_by_key(|(i, _)| *i);
    let jobs: Vec<JobSummary> = jobs.into_iter().map(|(_, j)| j).collect();
    if let Some(t) = deadline_task {
        t.abort();
    }

    let cause = stop.cause();
    let artifact_errors = artifact_errors
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    let mut exit = exit_kind(&jobs, cause.as_ref());
    if !artifact_errors.is_empty() && exit != ExitKind::Interrupted {
        exit = ExitKind::Infrastructure;
    }
    let summary = RunSummary {
        run_id: cx.settings.run_id.clone(),
        scenario: plan.scenario.clone(),
        version,
        dry_run: opts.dry_run,
        started,
        duration: t0.elapsed(),
        exit,
        exit_code: exit.code(),
        stopped: cause.map(|(c, _)| c),
        conformance_disabled: plan.conformance_disabled.clone(),
        jobs,
        reporter_errors: artifact_errors,
    };
    events.send(Event::RunFinished(summary.clone()));
    summary
}

fn job_info(j: &JobPlan, version: &str) -> JobInfo {
    JobInfo {
        name: j.job.name.clone(),
        context: j.job.context(),
        provider: j.job.provider,
        cni: j.job.cni.clone(),
        topology: format!(
            "{}cp+{}w{}{}",
            j.job.topology.control_planes,
            j.job.topology.workers,
            match (j.job.topology.vm_control_planes, j.job.topology.vm_workers) {
                (0, 0) => String::new(),
                (c, w) => format!(" ({c}cp+{w}w as VMs)"),
            },
            j.job
                .topology
                .name
                .as_ref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        ),
        version: version.to_string(),
        steps: j.steps.clone(),
        accelerator: j.job.accelerator.map(|a| a.as_str().to_string()),
    }
}

/// Interruption first, then infrastructure errors, then test failures.
fn exit_kind(jobs: &[JobSummary], cause: Option<&(String, bool)>) -> ExitKind {
    if matches!(cause, Some((_, true))) {
        return ExitKind::Interrupted;
    }
    let mut kind = ExitKind::Passed;
    for s in jobs.iter().flat_map(|j| &j.steps) {
        if s.non_blocking {
            continue;
        }
        if let StepOutcome::Failed { kind: fk, .. } = &s.outcome {
            let infra = *fk == FailureKind::Infrastructure || s.blocking_kind != StepKind::Test;
            if infra {
                return ExitKind::Infrastructure;
            }
            kind = ExitKind::TestFailure;
        }
    }
    kind
}

/// What every step of a run shares.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    run: &'a RunContext,
    dry_run: bool,
    steps: &'a dyn Steps,
    stop: &'a Stop,
    events: &'a EventTx,
    /// Artifacts that could not be written (a step log on a full disk): exit 3.
    artifact_errors: &'a Mutex<Vec<String>>,
}

/// A re-run's conformance step for a job whose specs all passed in the run it re-runs (the
/// job failed elsewhere, and runs again for that).
fn rerun_skip(run: &RunContext, job: &crate::matrix::Job, step: &StepPlan) -> Option<String> {
    let r = run.settings.rerun.as_ref()?;
    (step.stage == Some(Stage::Conformance) && r.specs_for(&job.name).is_some_and(|s| s.is_empty()))
        .then(|| {
            format!(
                "skipped: re-run of run {}: every spec of this job passed there",
                r.from_run
            )
        })
}

async fn run_job(jp: &JobPlan, x: Ctx<'_>) -> JobSummary {
    let (stop, events) = (x.stop, x.events);
    let job = &jp.job;
    events.send(Event::JobStarted {
        job: job.name.clone(),
    });
    let mut state = x.steps.new_job_state();
    let mut first_failure: Option<String> = None;
    let mut results = Vec::new();
    for step in &jp.steps {
        let skip = if let Some(reason) = &step.disabled {
            Some(reason.clone())
        } else if step.always {
            stop.is_aborted()
                .then(|| "skipped: cleanup aborted by a second interrupt".to_string())
        } else if let Some(f) = &first_failure {
            Some(format!("skipped: step {f} failed"))
        } else if stop.is_stopped() {
            Some(format!(
                "skipped: {}",
                stop.cause()
                    .map(|(c, _)| c)
                    .unwrap_or_else(|| "run stopped".into())
            ))
        } else {
            rerun_skip(x.run, job, step)
        };
        let result = match skip {
            Some(reason) => StepResult {
                job: job.name.clone(),
                step: step.name.clone(),
                index: step.index,
                stage: step.stage,
                non_blocking: step.non_blocking,
                blocking_kind: step.kind,
                outcome: StepOutcome::Skipped { reason },
                duration: Duration::ZERO,
                log: None,
                properties: Vec::new(),
                subtests: Vec::new(),
            },
            None => run_step(jp, step, x, &mut *state).await,
        };
        // An interrupted step did not fail: its followers say why they were skipped through
        // the stop's cause, not "step X failed".
        let failed = matches!(&result.outcome, StepOutcome::Failed { kind, .. } if *kind != FailureKind::Interrupted);
        if failed && !step.non_blocking && first_failure.is_none() {
            first_failure = Some(step.name.clone());
        }
        events.send(Event::StepFinished(result.clone()));
        results.push(result);
    }
    let passed = !results
        .iter()
        .any(|r| !r.non_blocking && matches!(r.outcome, StepOutcome::Failed { .. }));
    events.send(Event::JobFinished {
        job: job.name.clone(),
        passed,
    });
    let coverage = coverage(&jp.steps, &results);
    JobSummary {
        name: job.name.clone(),
        context: job.context(),
        passed,
        steps: results,
        coverage,
    }
}

fn coverage(steps: &[StepPlan], results: &[StepResult]) -> Vec<(Stage, Coverage)> {
    Stage::ALL
        .iter()
        .map(|stage| {
            let mut cov = Coverage::NotPlanned;
            for (st, r) in steps.iter().zip(results) {
                if st.stage != Some(*stage) {
                    continue;
                }
                let c = match &r.outcome {
                    StepOutcome::Passed => Coverage::Passed,
                    StepOutcome::DryRun { .. } => Coverage::DryRun,
                    StepOutcome::Failed {
                        kind: FailureKind::Interrupted,
                        message,
                        ..
                    } => Coverage::Interrupted(
                        message.split(": ").next().unwrap_or_default().to_string(),
                    ),
                    StepOutcome::Failed { .. } => Coverage::Failed,
                    StepOutcome::Skipped { reason } if st.disabled.is_some() => {
                        Coverage::Disabled(reason.clone())
                    }
                    StepOutcome::Skipped { reason } => Coverage::Skipped(reason.clone()),
                };
                // The worst outcome of the stage's steps wins.
                let rank = |c: &Coverage| match c {
                    Coverage::NotPlanned => 0,
                    Coverage::Passed => 1,
                    Coverage::DryRun => 2,
                    Coverage::Skipped(_) => 3,
                    Coverage::Disabled(_) => 4,
                    Coverage::Interrupted(_) => 5,
                    Coverage::Failed => 6,
                };
                if rank(&c) > rank(&cov) {
                    cov = c;
                }
            }
            (*stage, cov)
        })
        .collect()
}

/// Grace beyond the step's own grace period before an action that ignores cancellation is
/// abandoned (its process groups are killed when its future is dropped).
const ABANDON_AFTER: Duration = Duration::from_secs(5);

async fn run_step(
    jp: &JobPlan,
    step: &StepPlan,
    x: Ctx<'_>,
    state: &mut (dyn std::any::Any + Send + Sync),
) -> StepResult {
    let Ctx {
        run,
        dry_run,
        steps,
        stop,
        events,
        ..
    } = x;
    let job = &jp.job;
    let started = Instant::now();
    let rel_log = PathBuf::from("jobs").join(job.context()).join(format!(
        "{:02}-{}.log",
        step.index + 1,
        sanitize(&step.name)
    ));
    let log = match StepLog::create(&run.settings.artifacts.join(&rel_log)) {
        Ok(l) => l,
        Err(e) => {
            return finished(
                jp,
                step,
                started,
                None,
                Vec::new(),
                StepOutcome::Failed {
                    kind: FailureKind::Infrastructure,
                    message: format!("failed to create step log {}: {e}", rel_log.display()),
                    diagnosis: None,
                    log_tail: String::new(),
                },
            )
        }
    };
    events.send(Event::StepStarted {
        job: job.name.clone(),
        step: step.name.clone(),
        deadline: step.timeout.deadline,
    });
    log.line(&format!(
        "# {} / {} (action {}, deadline {}, grace {})",
        job.name,
        step.name,
        step.action,
        humantime::format_duration(step.timeout.deadline),
        humantime::format_duration(step.timeout.grace)
    ));

    let action = steps.action(step.action);

    let parent = if step.always { &stop.hard } else { &stop.soft };
    let deadline = Deadline::new(parent, step.timeout.deadline);
    let token = deadline.token().clone();
    let mut cx = StepContext {
        run,
        job,
        step,
        log: log.clone(),
        cancel: token.clone(),
        state,
        properties: Default::default(),
        subtests: Vec::new(),
        events: events.clone(),
        deadline_fired: deadline.fired_flag(),
    };

    if dry_run {
        let would = action.describe(&cx);
        for w in &would {
            log.line(&format!("would: {w}"));
        }
        return finished(
            jp,
            step,
            started,
            Some(rel_log),
            Vec::new(),
            StepOutcome::DryRun { would },
        );
    }

    let slow = step.timeout.slow_after.map(|period| {
        let events = events.clone();
        let (job, name) = (job.name.clone(), step.name.clone());
        tokio::spawn(async move {
            let mut n = 1u32;
            loop {
                tokio::time::sleep(period).await;
                events.send(Event::StepSlow {
                    job: job.clone(),
                    step: name.clone(),
                    elapsed: period * n,
                });
                n += 1;
            }
        })
    });

    let grace = step.timeout.grace;
    let result = tokio::select! {
        r = action.run(&mut cx) => r,
        _ = async { token.cancelled().await; tokio::time::sleep(grace + ABANDON_AFTER).await } => {
            Err(StepError::new("the step did not stop within its grace period and was abandoned"))
        }
    };
    let properties = std::mem::take(&mut *cx.properties.lock().unwrap_or_else(|e| e.into_inner()));
    let subtests = std::mem::take(&mut cx.subtests);
    drop(cx);
    let deadline_hit = deadline.stop();
    if let Some(s) = slow {
        s.abort();
    }

    // A result that came back after the deadline or the stop had cancelled the step is not
    // trusted: whatever the action says, the step did not finish in time.
    let result = match result {
        Ok(()) if token.is_cancelled() => Err(StepError::new(
            "the action reported success only after it had been cancelled, so its success does not count",
        )),
        other => other,
    };
    log.finish();
    // A step whose log could not be written left no evidence: it cannot pass, and the run's
    // artifacts are incomplete.
    if let Some(e) = log.write_error() {
        x.artifact_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("step log {}: {e}", rel_log.display()));
    }
    let result = match (result, log.write_error()) {
        (Ok(()), Some(e)) => Err(StepError::infra(format!(
            "failed to write the step log {}: {e}",
            rel_log.display()
        ))),
        (r, _) => r,
    };
    let outcome = match result {
        Ok(()) => StepOutcome::Passed,
        Err(e) => {
            let mut diagnosis = e.diagnosis;
            let (kind, message) = if deadline_hit {
                (
                    FailureKind::Deadline,
                    format!(
                        "deadline of {} exceeded: {}",
                        humantime::format_duration(step.timeout.deadline),
                        e.message
                    ),
                )
            } else if token.is_cancelled() {
                let cause = stop
                    .cause()
                    .map(|(c, _)| c)
                    .unwrap_or_else(|| "run stopped".into());
                // What the cluster looked like when the run was stopped is not a diagnosis of
                // this step: it never got to finish.
                if let Some(d) = diagnosis.take() {
                    log.line(&format!("# state when interrupted: {d}"));
                }
                (FailureKind::Interrupted, format!("{cause}: {}", e.message))
            } else {
                let kind = e.kind.unwrap_or(match step.kind {
                    StepKind::Test => FailureKind::Test,
                    _ => FailureKind::Infrastructure,
                });
                (kind, e.message)
            };
            log.line(&format!("# failed: {message}"));
            if let Some(d) = &diagnosis {
                log.line(&format!("# diagnosis: {d}"));
            }
            StepOutcome::Failed {
                kind,
                message,
                diagnosis,
                log_tail: log.tail(),
            }
        }
    };
    let mut r = finished(jp, step, started, Some(rel_log), properties, outcome);
    r.subtests = subtests;
    r
}

fn finished(
    jp: &JobPlan,
    step: &StepPlan,
    started: Instant,
    log: Option<PathBuf>,
    properties: Vec<(String, String)>,
    outcome: StepOutcome,
) -> StepResult {
    StepResult {
        job: jp.job.name.clone(),
        step: step.name.clone(),
        index: step.index,
        stage: step.stage,
        non_blocking: step.non_blocking,
        blocking_kind: step.kind,
        outcome,
        duration: started.elapsed(),
        log,
        properties,
        subtests: Vec::new(),
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}
