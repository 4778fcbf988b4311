//! Release sign-off: a go/no-go line for every job of a branch's matrix, from the run
//! history. A job is go when a counting run on the target version finished within the
//! window, conformance was enabled and passed in it, and the job has no open failure
//! streak. Every no-go line says why.

use super::{current_streak, show_time, History, HistoryError, JobRun};
use crate::matrix;
use crate::scenario::{LoadedScenario, Tier};
use std::fmt::Write;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone)]
pub struct Options {
    /// The version to sign off; default the scenario's version (or marker).
    pub version: Option<String>,
    /// How recent the run must be.
    pub within: Duration,
    pub now: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub job: String,
    /// The run the verdict rests on.
    pub run: Option<JobRun>,
    /// Empty: go.
    pub reasons: Vec<String>,
}

impl Line {
    pub fn go(&self) -> bool {
        self.reasons.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct Signoff {
    pub branch: String,
    pub version: String,
    pub within: Duration,
    pub now: i64,
    /// No-go reasons that hold for the whole branch (from the scenario itself).
    pub branch_reasons: Vec<String>,
    pub lines: Vec<Line>,
}

impl Signoff {
    pub fn go(&self) -> bool {
        self.branch_reasons.is_empty() && self.lines.iter().all(Line::go)
    }

    /// The go/no-go table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "sign-off for {} on {} (runs within {} of {})",
            self.branch,
            self.version,
            hours(self.within),
            show_time(self.now)
        );
        for r in &self.branch_reasons {
            let _ = writeln!(out, "  branch: NO-GO: {r}");
        }
        let width = self
            .lines
            .iter()
            .map(|l| l.job.len())
            .max()
            .unwrap_or(3)
            .max(3);
        let _ = writeln!(out, "  {:<width$}  {:<7}  WHY", "JOB", "VERDICT");
        for l in &self.lines {
            let why = if l.go() {
                l.run
                    .as_ref()
                    .map(|r| {
                        format!(
                            "run {} at {} passed with conformance",
                            r.run_id,
                            show_time(r.started)
                        )
                    })
                    .unwrap_or_default()
            } else {
                l.reasons.join("; ")
            };
            let verdict = if l.go() { "GO" } else { "NO-GO" };
            let _ = writeln!(out, "  {:<width$}  {verdict:<7}  {why}", l.job);
        }
        let no = self.lines.iter().filter(|l| !l.go()).count();
        let _ = writeln!(
            out,
            "verdict: {} ({} of {} job(s) go{})",
            if self.go() { "GO" } else { "NO-GO" },
            self.lines.len() - no,
            self.lines.len(),
            if self.branch_reasons.is_empty() {
                String::new()
            } else {
                format!(", {} branch-wide reason(s)", self.branch_reasons.len())
            }
        );
        out
    }
}

/// `24h`: the window as the `--hours` flag gives it.
fn hours(d: Duration) -> String {
    let secs = d.as_secs();
    if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// Decides sign-off for every job of the scenario's matrix.
pub fn signoff(h: &History, s: &LoadedScenario, opts: &Options) -> Result<Signoff, HistoryError> {
    let version = opts.version.clone().unwrap_or_else(|| s.version_label());
    let now = super::epoch(opts.now);
    let oldest = now - opts.within.as_secs() as i64;
    let mut branch_reasons = Vec::new();
    let c = &s.scenario.conformance;
    if let Some(d) = &c.disabled {
        branch_reasons.push(format!(
            "conformance is disabled in {} ({}, until {})",
            s.path.display(),
            d.reason.trim(),
            d.expires
        ));
    } else if c.tier != Tier::Conformance {
        branch_reasons.push(format!(
            "{} selects conformance tier {:?}: e2e conformance does not run",
            s.path.display(),
            c.tier
        ));
    }
    let mut lines = Vec::new();
    for job in matrix::expand(s) {
        let runs = h.job_runs(&job.name)?;
        let counted: Vec<&JobRun> = runs.iter().filter(|r| r.counts()).collect();
        let on_version: Vec<&JobRun> = counted
            .iter()
            .copied()
            .filter(|r| r.version == version)
            .collect();
        let recent = on_version
            .iter()
            .rev()
            .find(|r| r.started >= oldest)
            .copied();
        let mut reasons = Vec::new();
        match recent {
            None => reasons.push(match (on_version.last(), counted.last()) {
                (Some(r), _) => format!(
                    "no run on {version} within {}: the last was {} at {}",
                    hours(opts.within),
                    r.run_id,
                    show_time(r.started)
                ),
                (None, Some(r)) => format!(
                    "never ran on {version} (the last run, {}, was on {})",
                    r.run_id, r.version
                ),
                (None, None) if runs.iter().any(|r| r.dry_run) => {
                    "only dry runs recorded, and a dry run executes nothing".to_string()
                }
                (None, None) if runs.is_empty() => "never ran".into(),
                (None, None) => {
                    "no periodic or manual run (presubmit and interrupted runs do not count)".into()
                }
            }),
            Some(r) => {
                if !r.conformance_enabled {
                    reasons.push(format!(
                        "conformance was disabled in run {}: {}",
                        r.run_id,
                        r.conformance_note
                            .as_deref()
                            .unwrap_or("no reason recorded")
                            .trim_start_matches("conformance: ")
                    ));
                } else if r.conformance != "passed" {
                    reasons.push(format!(
                        "conformance did not pass in run {}: {}",
                        r.run_id, r.conformance_detail
                    ));
                }
            }
        }
        if let Some(st) = current_streak(&runs).filter(|st| !st.passing) {
            let mut why = format!(
                "open failure streak: {} failed run(s) since {} ({})",
                st.length,
                st.since_run,
                show_time(st.since)
            );
            if let Some((step, d)) = &st.last.failed_step {
                why.push_str(&format!(", last in step {step}: {d}"));
            }
            reasons.push(why);
        }
        lines.push(Line {
            job: job.name,
            run: recent.cloned(),
            reasons,
        });
    }
    Ok(Signoff {
        branch: s.name().to_string(),
        version,
        within: opts.within,
        now,
        branch_reasons,
        lines,
    })
}
