//! Run history, in an embedded SQLite file or a PostgreSQL database many runners share
//! ([`store`]): every run's jobs and steps with outcome,
//! duration, version, diagnosis, start time and whether conformance was enabled. From it:
//! pass/fail streaks, the slowest steps, flaky steps ([`report`]), notifications
//! ([`notify`]) and the release sign-off ([`signoff`]).
//!
//! Which runs count: dry runs are recorded but never count (they execute nothing);
//! presubmit runs test unmerged changes and do not count for the branch; interrupted runs
//! say nothing about the release and do not count either. Periodic postsubmit runs and
//! manual runs do.

pub mod notify;
pub mod signoff;
pub mod store;

pub use store::Location;

use crate::engine::event::StepOutcome;
use crate::engine::{Coverage, RunSummary};
use crate::exit::ExitKind;
use crate::plan::Stage;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use store::{vals, Stmt, Store, Value};

/// File name of the history next to the artifacts folders.
pub const FILE_NAME: &str = "history.sqlite";

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Trigger {
    /// The periodic postsubmit job of a release branch.
    Periodic,
    /// A presubmit on a pull request (does not count for the branch).
    Presubmit,
    /// Someone ran it by hand.
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Periodic => "periodic",
            Trigger::Presubmit => "presubmit",
            Trigger::Manual => "manual",
        }
    }
    fn parse(s: &str) -> Trigger {
        match s {
            "periodic" => Trigger::Periodic,
            "presubmit" => Trigger::Presubmit,
            _ => Trigger::Manual,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("failed to create folder {path} for the run history")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no run history at {path}: run a scenario first, or pass --history")]
    Missing { path: PathBuf },
    #[error("failed to open run history {location}")]
    Open {
        location: String,
        #[source]
        source: store::DbError,
    },
    #[error("failed to {what} in run history {location}")]
    Query {
        what: &'static str,
        location: String,
        #[source]
        source: store::DbError,
    },
}

/// An open run history: a SQLite file or a PostgreSQL database ([`store`]).
pub struct History {
    store: Store,
    location: String,
}

/// One job of one recorded run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRun {
    pub run_id: String,
    pub scenario: String,
    pub job: String,
    pub version: String,
    pub trigger: Trigger,
    pub dry_run: bool,
    /// Unix seconds.
    pub started: i64,
    /// The run's exit kind, as in `finished.json` (`passed`, `test-failure`, ...).
    pub exit: String,
    pub passed: bool,
    pub conformance_enabled: bool,
    pub conformance_note: Option<String>,
    /// The conformance stage's coverage: `passed`, `failed`, `dry-run`, `skipped`,
    /// `disabled` or `not-planned`.
    pub conformance: String,
    pub conformance_detail: String,
    /// The first blocking step that failed, and its diagnosis or message.
    pub failed_step: Option<(String, String)>,
}

impl JobRun {
    /// Whether the run says something about the branch (see the module docs).
    pub fn counts(&self) -> bool {
        !self.dry_run && self.trigger != Trigger::Presubmit && self.exit != "interrupted"
    }
}

/// One step of one recorded run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRun {
    pub run_id: String,
    pub job: String,
    pub step: String,
    pub version: String,
    pub started: i64,
    pub outcome: String,
    pub duration: Duration,
    pub diagnosis: Option<String>,
}

pub fn epoch(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `2026-11-21 10:04Z`.
pub fn show_time(t: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]Z");
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&fmt).ok())
        .unwrap_or_else(|| t.to_string())
}

fn exit_label(e: ExitKind) -> String {
    serde_json::to_value(e)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| format!("{e:?}"))
}

/// The run history beside the artifacts folders: the parent of one run's artifacts (or of
/// `$ARTIFACTS`), else `artifacts/history.sqlite`.
pub fn default_path(artifacts: Option<&Path>) -> PathBuf {
    match artifacts.and_then(Path::parent) {
        Some(p) if !p.as_os_str().is_empty() => p.join(FILE_NAME),
        _ => Path::new("artifacts").join(FILE_NAME),
    }
}

/// Each conformance spec's expected duration for a run of `s`: the scenario's table
/// (`conformance.durations`, read when the scenario loaded), then what the history at
/// `history` recorded, which wins. A history that cannot be read is a warning, returned
/// beside the figures: ordering is an optimisation, never a reason to stop a run.
pub fn expected_spec_durations(
    s: &crate::scenario::LoadedScenario,
    history: &Location,
) -> (BTreeMap<String, Duration>, Option<String>) {
    let mut d = s.spec_durations.clone();
    let mut warning = None;
    let exists = match history {
        Location::File(p) => p.is_file(),
        Location::Postgres(_) => true,
    };
    if exists {
        match History::open_existing(history.clone()).and_then(|h| h.spec_durations()) {
            Ok(recorded) => d.extend(recorded),
            Err(e) => {
                warning = Some(format!(
                    "spec durations of earlier runs not read: {}",
                    crate::error::chain(&e)
                ))
            }
        }
    }
    (d, warning)
}

impl History {
    /// Opens the history, creating it (and a file's folder) when needed.
    pub fn open(at: impl Into<Location>) -> Result<History, HistoryError> {
        let at = at.into();
        if let Location::File(path) = &at {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| HistoryError::CreateDir {
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
        }
        Self::connect(&at, true)
    }

    /// Opens an existing history for reading reports; never creates a file.
    pub fn open_existing(at: impl Into<Location>) -> Result<History, HistoryError> {
        let at = at.into();
        if let Location::File(path) = &at {
            if !path.is_file() {
                return Err(HistoryError::Missing { path: path.clone() });
            }
        }
        Self::connect(&at, false)
    }

    fn connect(at: &Location, create: bool) -> Result<History, HistoryError> {
        let location = at.display();
        let store = match at {
            Location::File(p) => Store::sqlite(p, create),
            Location::Postgres(url) => Store::postgres(url),
        }
        .map_err(|source| HistoryError::Open {
            location: location.clone(),
            source,
        })?;
        Ok(History { store, location })
    }

    /// Where the history is, as messages show it (a URL without its password).
    pub fn location(&self) -> &str {
        &self.location
    }

    fn err(&self, what: &'static str) -> impl Fn(store::DbError) -> HistoryError + '_ {
        move |source| HistoryError::Query {
            what,
            location: self.location.clone(),
            source,
        }
    }

    fn query(
        &self,
        what: &'static str,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<Vec<store::Row>, HistoryError> {
        self.store.query(sql, values).map_err(self.err(what))
    }

    /// Records a finished run: the run, each job, each step, in one transaction. Recording
    /// the same run id again replaces it.
    pub fn record(&mut self, s: &RunSummary, trigger: Trigger) -> Result<(), HistoryError> {
        let conformance = |j: &crate::engine::JobSummary| {
            j.coverage
                .iter()
                .find(|(st, _)| *st == Stage::Conformance)
                .map(|(_, c)| c.clone())
                .unwrap_or(Coverage::NotPlanned)
        };
        let off = s.jobs.iter().map(conformance).find_map(|c| match c {
            Coverage::Disabled(r) => Some(r),
            Coverage::NotPlanned => Some("conformance: NOT IN PLAN (no conformance step)".into()),
            _ => None,
        });
        let note = s.conformance_disabled.clone().or(off);
        let mut stmts = Vec::new();
        for table in ["runs", "job_runs", "step_runs", "spec_runs"] {
            stmts.push(Stmt::new(
                format!("DELETE FROM {table} WHERE run_id = ?1"),
                vals![&s.run_id],
            ));
        }
        stmts.push(Stmt::new(
            "INSERT INTO runs (run_id, scenario, version, trigger, dry_run, started, duration_ms, \
             exit, exit_code, stopped, conformance_enabled, conformance_note) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            vals![
                &s.run_id,
                &s.scenario,
                &s.version,
                trigger.as_str(),
                s.dry_run,
                epoch(s.started),
                s.duration.as_millis() as i64,
                exit_label(s.exit),
                i64::from(s.exit_code),
                s.stopped.clone(),
                note.is_none(),
                note,
            ],
        ));
        for j in &s.jobs {
            let c = conformance(j);
            stmts.push(Stmt::new(
                "INSERT INTO job_runs (run_id, job, passed, conformance, conformance_detail) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                vals![&s.run_id, &j.name, j.passed, c.label(), c.to_string()],
            ));
            for st in &j.steps {
                let (kind, message, diagnosis) = match &st.outcome {
                    StepOutcome::Failed {
                        kind,
                        message,
                        diagnosis,
                        ..
                    } => (
                        serde_json::to_value(kind)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from)),
                        Some(message.lines().next().unwrap_or_default().to_string()),
                        diagnosis.clone(),
                    ),
                    StepOutcome::Skipped { reason } => (None, Some(reason.clone()), None),
                    _ => (None, None, None),
                };
                stmts.push(Stmt::new(
                    "INSERT INTO step_runs (run_id, job, step, idx, outcome, failure_kind, \
                     duration_ms, message, diagnosis) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    vals![
                        &s.run_id,
                        &j.name,
                        &st.step,
                        st.index as i64,
                        st.outcome.label(),
                        kind,
                        st.duration.as_millis() as i64,
                        message,
                        diagnosis,
                    ],
                ));
                // Each conformance spec that ran, with how long it took: what orders the
                // next run's specs longest first.
                if st.stage == Some(Stage::Conformance) {
                    for t in &st.subtests {
                        let outcome = match &t.outcome {
                            StepOutcome::Passed if t.flaky.is_some() => "flaky",
                            StepOutcome::Passed => "passed",
                            StepOutcome::Failed { .. } => "failed",
                            _ => continue,
                        };
                        stmts.push(Stmt::new(
                            "INSERT INTO spec_runs (run_id, job, spec, outcome, duration_ms) \
                             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (run_id, job, spec) \
                             DO UPDATE SET outcome = excluded.outcome, \
                             duration_ms = excluded.duration_ms",
                            vals![
                                &s.run_id,
                                &j.name,
                                &t.name,
                                outcome,
                                t.duration.as_millis() as i64,
                            ],
                        ));
                    }
                }
            }
        }
        self.store
            .transaction(stmts)
            .map_err(self.err("record the run"))
    }

    /// How long each conformance spec took when it last passed, over every recorded run:
    /// the durations that order a run's specs longest first.
    pub fn spec_durations(&self) -> Result<BTreeMap<String, Duration>, HistoryError> {
        let rows = self.query(
            "read spec durations",
            "SELECT s.spec, s.duration_ms FROM spec_runs s JOIN runs r ON r.run_id = s.run_id \
             WHERE s.outcome IN ('passed', 'flaky') ORDER BY r.started, s.run_id",
            vec![],
        )?;
        // The newest run's figure wins: the cluster and the release change over time.
        Ok(rows
            .into_iter()
            .map(|r| (r.text(0), Duration::from_millis(r.int(1).max(0) as u64)))
            .collect())
    }

    /// Every recorded job name, sorted.
    pub fn job_names(&self) -> Result<Vec<String>, HistoryError> {
        let rows = self.query(
            "list jobs",
            "SELECT DISTINCT job FROM job_runs ORDER BY job",
            vec![],
        )?;
        Ok(rows.iter().map(|r| r.text(0)).collect())
    }

    /// Every recorded run of a job, oldest first.
    pub fn job_runs(&self, job: &str) -> Result<Vec<JobRun>, HistoryError> {
        let rows = self.query(
            "read the runs of a job",
            "SELECT r.run_id, r.scenario, j.job, r.version, r.trigger, r.dry_run, r.started, \
             r.exit, j.passed, r.conformance_enabled, r.conformance_note, j.conformance, \
             j.conformance_detail, \
             (SELECT s.step || '\u{1f}' || COALESCE(s.diagnosis, s.message, '') FROM step_runs s \
              WHERE s.run_id = j.run_id AND s.job = j.job AND s.outcome = 'failed' \
              ORDER BY s.idx LIMIT 1) \
             FROM job_runs j JOIN runs r ON r.run_id = j.run_id \
             WHERE j.job = ?1 ORDER BY r.started, r.run_id",
            vals![job],
        )?;
        Ok(rows
            .iter()
            .map(|r| JobRun {
                run_id: r.text(0),
                scenario: r.text(1),
                job: r.text(2),
                version: r.text(3),
                trigger: Trigger::parse(&r.text(4)),
                dry_run: r.bool(5),
                started: r.int(6),
                exit: r.text(7),
                passed: r.bool(8),
                conformance_enabled: r.bool(9),
                conformance_note: r.opt_text(10),
                conformance: r.text(11),
                conformance_detail: r.text(12),
                failed_step: r.opt_text(13).map(|f| match f.split_once('\u{1f}') {
                    Some((a, b)) => (a.to_string(), b.to_string()),
                    None => (f, String::new()),
                }),
            })
            .collect())
    }

    /// Steps of counting runs that executed (passed or failed), oldest first.
    pub fn step_runs(&self) -> Result<Vec<StepRun>, HistoryError> {
        let rows = self.query(
            "read step results",
            "SELECT s.run_id, s.job, s.step, r.version, r.started, s.outcome, s.duration_ms, \
             s.diagnosis FROM step_runs s JOIN runs r ON r.run_id = s.run_id \
             WHERE NOT r.dry_run AND r.trigger != 'presubmit' AND r.exit != 'interrupted' \
             AND s.outcome IN ('passed', 'failed') \
             ORDER BY r.started, r.run_id, s.job, s.idx",
            vec![],
        )?;
        Ok(rows.iter().map(step_run_row).collect())
    }

    /// Conformance spec results as [`StepRun`]s (`step` is the spec), oldest first, from
    /// the runs that count for streaks: what `flakes` finds flaky specs in. `outcome` is
    /// `passed`, `failed` or `flaky` (passed after failing, in the same run or the one it
    /// re-ran).
    pub fn spec_runs(&self) -> Result<Vec<StepRun>, HistoryError> {
        let rows = self.query(
            "read spec results",
            "SELECT s.run_id, s.job, s.spec, r.version, r.started, s.outcome, s.duration_ms, \
             NULL FROM spec_runs s JOIN runs r ON r.run_id = s.run_id \
             WHERE NOT r.dry_run AND r.trigger != 'presubmit' AND r.exit != 'interrupted' \
             ORDER BY r.started, r.run_id, s.job, s.spec",
            vec![],
        )?;
        Ok(rows.iter().map(step_run_row).collect())
    }

    /// Whether a notification of `kind` for the streak that began at `streak_start` was
    /// delivered.
    pub fn notified(
        &self,
        job: &str,
        kind: notify::Kind,
        streak_start: &str,
    ) -> Result<bool, HistoryError> {
        let rows = self.query(
            "read notifications",
            "SELECT job FROM notifications WHERE job = ?1 AND kind = ?2 AND streak_start = ?3 \
             AND delivered LIMIT 1",
            vals![job, kind.as_str(), streak_start],
        )?;
        Ok(!rows.is_empty())
    }

    /// Records one notification attempt.
    pub fn record_notification(&self, n: &notify::Attempt) -> Result<(), HistoryError> {
        self.store
            .transaction(vec![Stmt::new(
                "INSERT INTO notifications (job, kind, streak_start, run_id, streak, sent_at, \
                 channel, delivered, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                vals![
                    &n.job,
                    n.kind.as_str(),
                    &n.streak_start,
                    &n.run_id,
                    n.streak as i64,
                    n.sent_at,
                    &n.channel,
                    n.delivered,
                    n.error.clone(),
                ],
            )])
            .map_err(self.err("record a notification"))
    }

    /// Every notification attempt, oldest first.
    pub fn notifications(&self) -> Result<Vec<notify::Attempt>, HistoryError> {
        let rows = self.query(
            "read notifications",
            "SELECT job, kind, streak_start, run_id, streak, sent_at, channel, delivered, error \
             FROM notifications ORDER BY id",
            vec![],
        )?;
        Ok(rows
            .iter()
            .map(|r| notify::Attempt {
                job: r.text(0),
                kind: notify::Kind::parse(&r.text(1)),
                streak_start: r.text(2),
                run_id: r.text(3),
                streak: r.int(4).max(0) as usize,
                sent_at: r.int(5),
                channel: r.text(6),
                delivered: r.bool(7),
                error: r.opt_text(8),
            })
            .collect())
    }
}

/// A run of consecutive equal results of one job, counting runs only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Streak {
    pub passing: bool,
    pub length: usize,
    /// The first run of the streak.
    pub since_run: String,
    pub since: i64,
    /// The last run of the streak.
    pub last: JobRun,
}

/// Splits a job's counting runs (oldest first) into streaks, oldest first.
pub fn streaks(runs: &[JobRun]) -> Vec<Streak> {
    let mut out: Vec<Streak> = Vec::new();
    for r in runs.iter().filter(|r| r.counts()) {
        match out.last_mut() {
            Some(s) if s.passing == r.passed => {
                s.length += 1;
                s.last = r.clone();
            }
            _ => out.push(Streak {
                passing: r.passed,
                length: 1,
                since_run: r.run_id.clone(),
                since: r.started,
                last: r.clone(),
            }),
        }
    }
    out
}

/// The streak a job is in now.
pub fn current_streak(runs: &[JobRun]) -> Option<Streak> {
    streaks(runs).pop()
}

/// A step that failed and later passed on the same version of the same job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flake {
    pub job: String,
    pub step: String,
    pub version: String,
    pub failures: usize,
    pub passes: usize,
    /// Times a failure was followed by a pass.
    pub flips: usize,
    /// The most recent failure's diagnosis.
    pub last_diagnosis: Option<String>,
}

/// Flaky steps (or specs, from [`History::spec_runs`]) from results oldest first, most
/// flips first. A flip is a pass after a failure of the same job, step and version, or an
/// outcome `flaky`: a spec that failed and passed within one run (or the run it re-ran).
pub fn flakes(steps: &[StepRun]) -> Vec<Flake> {
    let mut by: BTreeMap<(String, String, String), Flake> = BTreeMap::new();
    let mut last_failed: BTreeMap<(String, String, String), bool> = BTreeMap::new();
    for s in steps {
        let key = (s.job.clone(), s.step.clone(), s.version.clone());
        let f = by.entry(key.clone()).or_insert_with(|| Flake {
            job: s.job.clone(),
            step: s.step.clone(),
            version: s.version.clone(),
            failures: 0,
            passes: 0,
            flips: 0,
            last_diagnosis: None,
        });
        let failed = s.outcome == "failed";
        if failed {
            f.failures += 1;
            f.last_diagnosis = s.diagnosis.clone().or(f.last_diagnosis.take());
        } else {
            f.passes += 1;
            if s.outcome == "flaky" || last_failed.get(&key) == Some(&true) {
                f.flips += 1;
            }
        }
        last_failed.insert(key, failed);
    }
    let mut out: Vec<Flake> = by.into_values().filter(|f| f.flips > 0).collect();
    out.sort_by(|a, b| b.flips.cmp(&a.flips).then_with(|| a.job.cmp(&b.job)));
    out
}

/// Durations of one step of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slow {
    pub job: String,
    pub step: String,
    pub runs: usize,
    pub mean: Duration,
    pub max: Duration,
}

/// Steps by mean duration, slowest first.
pub fn slowest(steps: &[StepRun], limit: usize) -> Vec<Slow> {
    let mut by: BTreeMap<(String, String), Vec<Duration>> = BTreeMap::new();
    for s in steps {
        by.entry((s.job.clone(), s.step.clone()))
            .or_default()
            .push(s.duration);
    }
    let mut out: Vec<Slow> = by
        .into_iter()
        .map(|((job, step), ds)| Slow {
            job,
            step,
            runs: ds.len(),
            mean: ds.iter().sum::<Duration>() / ds.len().max(1) as u32,
            max: ds.iter().max().copied().unwrap_or_default(),
        })
        .collect();
    out.sort_by(|a, b| {
        b.mean
            .cmp(&a.mean)
            .then_with(|| a.job.cmp(&b.job))
            .then_with(|| a.step.cmp(&b.step))
    });
    out.truncate(limit);
    out
}

/// Whether `job` is selected by a filter: the job name itself, or a prefix ending at a
/// `/` (a scenario, or scenario/provider).
pub fn selects(filter: Option<&str>, job: &str) -> bool {
    match filter {
        None => true,
        Some(f) => {
            let f = f.trim_end_matches('/');
            job == f || job.strip_prefix(f).is_some_and(|r| r.starts_with('/'))
        }
    }
}

fn short(d: Duration) -> String {
    let d = if d < Duration::from_secs(10) {
        Duration::from_millis(d.as_millis() as u64)
    } else {
        Duration::from_secs(d.as_secs())
    };
    humantime::format_duration(d).to_string()
}

/// The `shakedown history [JOB]` report.
pub fn report(h: &History, filter: Option<&str>) -> Result<String, HistoryError> {
    use std::fmt::Write;
    let jobs: Vec<String> = h
        .job_names()?
        .into_iter()
        .filter(|j| selects(filter, j))
        .collect();
    let mut out = String::new();
    let _ = writeln!(out, "run history: {}", h.location());
    let _ = writeln!(
        out,
        "\nstreaks (periodic and manual runs; dry runs, presubmits and interrupted runs do not count)"
    );
    let mut rows = Vec::new();
    for j in &jobs {
        let runs = h.job_runs(j)?;
        let counted = runs.iter().filter(|r| r.counts()).count();
        let dry = runs.iter().filter(|r| r.dry_run).count();
        let all = streaks(&runs);
        let longest = all
            .iter()
            .filter(|s| !s.passing)
            .map(|s| s.length)
            .max()
            .unwrap_or(0);
        let now = match all.last() {
            None => "no counting runs".to_string(),
            Some(s) => format!(
                "{} {} (since {}, {})",
                if s.passing { "passing" } else { "FAILING" },
                s.length,
                s.since_run,
                show_time(s.since)
            ),
        };
        let last_failure = all
            .last()
            .filter(|s| !s.passing)
            .and_then(|s| s.last.failed_step.clone());
        rows.push((j, counted, dry, now, longest, last_failure));
    }
    let width = jobs.iter().map(|j| j.len()).max().unwrap_or(3).max(3);
    let now_w = rows.iter().map(|r| r.3.len()).max().unwrap_or(3).max(3);
    let _ = writeln!(
        out,
        "  {:<width$}  {:>4}  {:>4}  {:<now_w$}  LONGEST FAILING",
        "JOB", "RUNS", "DRY", "NOW"
    );
    for (j, counted, dry, now, longest, last_failure) in rows {
        let _ = writeln!(
            out,
            "  {j:<width$}  {counted:>4}  {dry:>4}  {now:<now_w$}  {longest}"
        );
        if let Some((step, why)) = last_failure {
            let _ = writeln!(out, "  {:<width$}        last failure: {step}: {why}", "");
        }
    }
    let steps: Vec<StepRun> = h
        .step_runs()?
        .into_iter()
        .filter(|s| selects(filter, &s.job))
        .collect();
    let _ = writeln!(out, "\nslowest steps (runs that executed the step)");
    let slow = slowest(&steps, 10);
    if slow.is_empty() {
        let _ = writeln!(out, "  none recorded");
    }
    for s in slow {
        let _ = writeln!(
            out,
            "  {:<w$}  {:>4} run(s)  mean {:>8}  max {:>8}",
            format!("{} {}", s.job, s.step),
            s.runs,
            short(s.mean),
            short(s.max),
            w = width + 14
        );
    }
    let _ = writeln!(
        out,
        "\nflaky steps (failed, then passed, on the same version)"
    );
    let fl = flakes(&steps);
    if fl.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for f in fl {
        let _ = writeln!(
            out,
            "  {} {} on {}: {} failure(s), {} pass(es), failed then passed {} time(s){}",
            f.job,
            f.step,
            f.version,
            f.failures,
            f.passes,
            f.flips,
            f.last_diagnosis
                .map(|d| format!("; last diagnosis: {d}"))
                .unwrap_or_default()
        );
    }
    let specs: Vec<StepRun> = h
        .spec_runs()?
        .into_iter()
        .filter(|s| selects(filter, &s.job))
        .collect();
    let _ = writeln!(
        out,
        "\nflaky specs (failed, then passed: on a later attempt, on re-run or in a later run)"
    );
    let fl = flakes(&specs);
    if fl.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for f in fl {
        let _ = writeln!(
            out,
            "  {} on {}: {}: {} failed run(s), {} passed, flaky {} time(s)",
            f.job, f.version, f.step, f.failures, f.passes, f.flips
        );
    }
    Ok(out)
}

/// A row of (run_id, job, step, version, started, outcome, duration_ms, diagnosis).
fn step_run_row(r: &store::Row) -> StepRun {
    StepRun {
        run_id: r.text(0),
        job: r.text(1),
        step: r.text(2),
        version: r.text(3),
        started: r.int(4),
        outcome: r.text(5),
        duration: Duration::from_millis(r.int(6).max(0) as u64),
        diagnosis: r.opt_text(7),
    }
}
