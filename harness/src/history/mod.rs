//! Run history in an embedded SQLite file: every run's jobs and steps with outcome,
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

use crate::engine::event::StepOutcome;
use crate::engine::{Coverage, RunSummary};
use crate::exit::ExitKind;
use crate::plan::Stage;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    #[error("failed to open run history {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("failed to {what} in run history {path}")]
    Query {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    scenario TEXT NOT NULL,
    version TEXT NOT NULL,
    trigger TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    started INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    exit TEXT NOT NULL,
    exit_code INTEGER NOT NULL,
    stopped TEXT,
    conformance_enabled INTEGER NOT NULL,
    conformance_note TEXT
);
CREATE TABLE IF NOT EXISTS job_runs (
    run_id TEXT NOT NULL,
    job TEXT NOT NULL,
    passed INTEGER NOT NULL,
    conformance TEXT NOT NULL,
    conformance_detail TEXT NOT NULL,
    PRIMARY KEY (run_id, job)
);
CREATE INDEX IF NOT EXISTS job_runs_by_job ON job_runs (job);
CREATE TABLE IF NOT EXISTS step_runs (
    run_id TEXT NOT NULL,
    job TEXT NOT NULL,
    step TEXT NOT NULL,
    idx INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    failure_kind TEXT,
    duration_ms INTEGER NOT NULL,
    message TEXT,
    diagnosis TEXT,
    PRIMARY KEY (run_id, job, step)
);
CREATE TABLE IF NOT EXISTS spec_runs (
    run_id TEXT NOT NULL,
    job TEXT NOT NULL,
    spec TEXT NOT NULL,
    outcome TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (run_id, job, spec)
);
CREATE INDEX IF NOT EXISTS spec_runs_by_spec ON spec_runs (spec);
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL,
    kind TEXT NOT NULL,
    streak_start TEXT NOT NULL,
    run_id TEXT NOT NULL,
    streak INTEGER NOT NULL,
    sent_at INTEGER NOT NULL,
    channel TEXT NOT NULL,
    delivered INTEGER NOT NULL,
    error TEXT
);
";

/// An open history file.
pub struct History {
    conn: Connection,
    path: PathBuf,
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
    history: &Path,
) -> (BTreeMap<String, Duration>, Option<String>) {
    let mut d = s.spec_durations.clone();
    let mut warning = None;
    if history.is_file() {
        match History::open_existing(history).and_then(|h| h.spec_durations()) {
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
    /// Opens the history, creating the file and its folder when needed.
    pub fn open(path: &Path) -> Result<History, HistoryError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| HistoryError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|source| HistoryError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Self::init(conn, path)
    }

    /// Opens an existing history for reading reports; never creates one.
    pub fn open_existing(path: &Path) -> Result<History, HistoryError> {
        if !path.is_file() {
            return Err(HistoryError::Missing {
                path: path.to_path_buf(),
            });
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| HistoryError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Self::init(conn, path)
    }

    fn init(conn: Connection, path: &Path) -> Result<History, HistoryError> {
        let h = History {
            conn,
            path: path.to_path_buf(),
        };
        // Jobs of several branches may finish at once and share one file.
        h.conn
            .busy_timeout(Duration::from_secs(10))
            .and_then(|_| h.conn.execute_batch(SCHEMA))
            .map_err(|e| h.err("create the tables", e))?;
        Ok(h)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, what: &'static str, source: rusqlite::Error) -> HistoryError {
        HistoryError::Query {
            what,
            path: self.path.clone(),
            source,
        }
    }

    /// Records a finished run: the run, each job, each step. Recording the same run id
    /// again replaces it.
    pub fn record(&mut self, s: &RunSummary, trigger: Trigger) -> Result<(), HistoryError> {
        let path = self.path.clone();
        let wrap = |source| HistoryError::Query {
            what: "record the run",
            path: path.clone(),
            source,
        };
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
        let tx = self.conn.transaction().map_err(wrap)?;
        for table in ["runs", "job_runs", "step_runs", "spec_runs"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE run_id = ?1"),
                [&s.run_id],
            )
            .map_err(wrap)?;
        }
        tx.execute(
            "INSERT INTO runs (run_id, scenario, version, trigger, dry_run, started, duration_ms, \
             exit, exit_code, stopped, conformance_enabled, conformance_note) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                s.run_id,
                s.scenario,
                s.version,
                trigger.as_str(),
                s.dry_run,
                epoch(s.started),
                s.duration.as_millis() as i64,
                exit_label(s.exit),
                s.exit_code,
                s.stopped,
                note.is_none(),
                note,
            ],
        )
        .map_err(wrap)?;
        for j in &s.jobs {
            let c = conformance(j);
            tx.execute(
                "INSERT INTO job_runs (run_id, job, passed, conformance, conformance_detail) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![s.run_id, j.name, j.passed, &c.label(), c.to_string()],
            )
            .map_err(wrap)?;
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
                tx.execute(
                    "INSERT INTO step_runs (run_id, job, step, idx, outcome, failure_kind, \
                     duration_ms, message, diagnosis) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        s.run_id,
                        j.name,
                        st.step,
                        st.index as i64,
                        st.outcome.label(),
                        kind,
                        st.duration.as_millis() as i64,
                        message,
                        diagnosis,
                    ],
                )
                .map_err(wrap)?;
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
                        tx.execute(
                            "INSERT OR REPLACE INTO spec_runs (run_id, job, spec, outcome, \
                             duration_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                            params![
                                s.run_id,
                                j.name,
                                t.name,
                                outcome,
                                t.duration.as_millis() as i64,
                            ],
                        )
                        .map_err(wrap)?;
                    }
                }
            }
        }
        tx.commit().map_err(wrap)
    }

    /// How long each conformance spec took when it last passed, over every recorded run:
    /// the durations that order a run's specs longest first.
    pub fn spec_durations(&self) -> Result<BTreeMap<String, Duration>, HistoryError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT s.spec, s.duration_ms FROM spec_runs s JOIN runs r ON r.run_id = s.run_id \
                 WHERE s.outcome IN ('passed', 'flaky') ORDER BY r.started, s.run_id",
            )
            .map_err(|e| self.err("read spec durations", e))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err("read spec durations", e))?;
        // The newest run's figure wins: the cluster and the release change over time.
        Ok(rows
            .into_iter()
            .map(|(spec, ms)| (spec, Duration::from_millis(ms.max(0) as u64)))
            .collect())
    }

    /// Every recorded job name, sorted.
    pub fn job_names(&self) -> Result<Vec<String>, HistoryError> {
        let mut st = self
            .conn
            .prepare("SELECT DISTINCT job FROM job_runs ORDER BY job")
            .map_err(|e| self.err("list jobs", e))?;
        let rows = st
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect::<Result<Vec<String>, _>>())
            .map_err(|e| self.err("list jobs", e));
        rows
    }

    /// Every recorded run of a job, oldest first.
    pub fn job_runs(&self, job: &str) -> Result<Vec<JobRun>, HistoryError> {
        let what = "read the runs of a job";
        let mut st = self
            .conn
            .prepare(
                "SELECT r.run_id, r.scenario, j.job, r.version, r.trigger, r.dry_run, r.started, \
                 r.exit, j.passed, r.conformance_enabled, r.conformance_note, j.conformance, \
                 j.conformance_detail, \
                 (SELECT s.step || char(31) || COALESCE(s.diagnosis, s.message, '') FROM step_runs s \
                  WHERE s.run_id = j.run_id AND s.job = j.job AND s.outcome = 'failed' \
                  ORDER BY s.idx LIMIT 1) \
                 FROM job_runs j JOIN runs r ON r.run_id = j.run_id \
                 WHERE j.job = ?1 ORDER BY r.started, r.run_id",
            )
            .map_err(|e| self.err(what, e))?;
        let rows = st
            .query_map([job], |r| {
                let failed: Option<String> = r.get(13)?;
                Ok(JobRun {
                    run_id: r.get(0)?,
                    scenario: r.get(1)?,
                    job: r.get(2)?,
                    version: r.get(3)?,
                    trigger: Trigger::parse(&r.get::<_, String>(4)?),
                    dry_run: r.get(5)?,
                    started: r.get(6)?,
                    exit: r.get(7)?,
                    passed: r.get(8)?,
                    conformance_enabled: r.get(9)?,
                    conformance_note: r.get(10)?,
                    conformance: r.get(11)?,
                    conformance_detail: r.get(12)?,
                    failed_step: failed.map(|f| match f.split_once('\u{1f}') {
                        Some((a, b)) => (a.to_string(), b.to_string()),
                        None => (f, String::new()),
                    }),
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(what, e));
        rows
    }

    /// Steps of counting runs that executed (passed or failed), oldest first.
    pub fn step_runs(&self) -> Result<Vec<StepRun>, HistoryError> {
        let what = "read step results";
        let mut st = self
            .conn
            .prepare(
                "SELECT s.run_id, s.job, s.step, r.version, r.started, s.outcome, s.duration_ms, \
                 s.diagnosis FROM step_runs s JOIN runs r ON r.run_id = s.run_id \
                 WHERE r.dry_run = 0 AND r.trigger != 'presubmit' AND r.exit != 'interrupted' \
                 AND s.outcome IN ('passed', 'failed') \
                 ORDER BY r.started, r.run_id, s.job, s.idx",
            )
            .map_err(|e| self.err(what, e))?;
        let rows = st
            .query_map([], step_run_row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(what, e));
        rows
    }

    /// Conformance spec results as [`StepRun`]s (`step` is the spec), oldest first, from
    /// the runs that count for streaks: what `flakes` finds flaky specs in. `outcome` is
    /// `passed`, `failed` or `flaky` (passed after failing, in the same run or the one it
    /// re-ran).
    pub fn spec_runs(&self) -> Result<Vec<StepRun>, HistoryError> {
        let what = "read spec results";
        let mut st = self
            .conn
            .prepare(
                "SELECT s.run_id, s.job, s.spec, r.version, r.started, s.outcome, s.duration_ms, \
                 NULL FROM spec_runs s JOIN runs r ON r.run_id = s.run_id \
                 WHERE r.dry_run = 0 AND r.trigger != 'presubmit' AND r.exit != 'interrupted' \
                 ORDER BY r.started, r.run_id, s.job, s.spec",
            )
            .map_err(|e| self.err(what, e))?;
        let rows = st
            .query_map([], step_run_row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(what, e));
        rows
    }

    /// Whether a notification of `kind` for the streak that began at `streak_start` was
    /// delivered.
    pub fn notified(
        &self,
        job: &str,
        kind: notify::Kind,
        streak_start: &str,
    ) -> Result<bool, HistoryError> {
        self.conn
            .query_row(
                "SELECT 1 FROM notifications WHERE job = ?1 AND kind = ?2 AND streak_start = ?3 \
                 AND delivered = 1 LIMIT 1",
                params![job, kind.as_str(), streak_start],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(|e| self.err("read notifications", e))
    }

    /// Records one notification attempt.
    pub fn record_notification(&self, n: &notify::Attempt) -> Result<(), HistoryError> {
        self.conn
            .execute(
                "INSERT INTO notifications (job, kind, streak_start, run_id, streak, sent_at, \
                 channel, delivered, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    n.job,
                    n.kind.as_str(),
                    n.streak_start,
                    n.run_id,
                    n.streak as i64,
                    n.sent_at,
                    n.channel,
                    n.delivered,
                    n.error,
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err("record a notification", e))
    }

    /// Every notification attempt, oldest first.
    pub fn notifications(&self) -> Result<Vec<notify::Attempt>, HistoryError> {
        let what = "read notifications";
        let mut st = self
            .conn
            .prepare(
                "SELECT job, kind, streak_start, run_id, streak, sent_at, channel, delivered, error \
                 FROM notifications ORDER BY id",
            )
            .map_err(|e| self.err(what, e))?;
        let rows = st
            .query_map([], |r| {
                Ok(notify::Attempt {
                    job: r.get(0)?,
                    kind: notify::Kind::parse(&r.get::<_, String>(1)?),
                    streak_start: r.get(2)?,
                    run_id: r.get(3)?,
                    streak: r.get::<_, i64>(4)?.max(0) as usize,
                    sent_at: r.get(5)?,
                    channel: r.get(6)?,
                    delivered: r.get(7)?,
                    error: r.get(8)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(what, e));
        rows
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
    let _ = writeln!(out, "run history: {}", h.path().display());
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
fn step_run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StepRun> {
    Ok(StepRun {
        run_id: r.get(0)?,
        job: r.get(1)?,
        step: r.get(2)?,
        version: r.get(3)?,
        started: r.get(4)?,
        outcome: r.get(5)?,
        duration: Duration::from_millis(r.get::<_, i64>(6)?.max(0) as u64),
        diagnosis: r.get(7)?,
    })
}
