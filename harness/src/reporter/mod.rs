//! Reporters consume the engine's event stream independently: a failing reporter is
//! recorded, never stops the others, and never stops the run.

pub mod history;
pub mod html;
pub mod json;
pub mod junit;
pub mod progress;
pub mod testgrid;

use crate::engine::event::{Event, FailureKind, StepOutcome};
use std::path::PathBuf;
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to encode {what}: {message}")]
    Encode { what: &'static str, message: String },
    #[error(transparent)]
    History(#[from] crate::history::HistoryError),
}

pub trait Reporter: Send {
    fn name(&self) -> &'static str;
    fn on_event(&mut self, event: &Event) -> Result<(), ReportError>;
}

/// Feeds every event to every reporter until the engine drops its sender; returns the
/// reporters' errors.
pub async fn drive(
    mut rx: mpsc::UnboundedReceiver<Event>,
    mut reporters: Vec<Box<dyn Reporter>>,
) -> Vec<String> {
    let mut errors: Vec<String> = Vec::new();
    while let Some(ev) = rx.recv().await {
        // Once an artifact could not be written the run cannot pass (exit 3): reporters that
        // write the verdict (finished.json, the summary, the history) must say so.
        let corrected = |ev: &Event, errors: &[String]| match ev {
            Event::RunFinished(s) if !errors.is_empty() => {
                let mut s = s.clone();
                s.reporter_errors.extend(errors.iter().cloned());
                if s.exit != crate::exit::ExitKind::Interrupted {
                    s.exit = crate::exit::ExitKind::Infrastructure;
                    s.exit_code = s.exit.code();
                }
                Some(Event::RunFinished(s))
            }
            _ => None,
        };
        let before = errors.len();
        let mut told_a_pass = Vec::new();
        for (i, r) in reporters.iter_mut().enumerate() {
            let fixed = corrected(&ev, &errors);
            if matches!(ev, Event::RunFinished(_)) && fixed.is_none() {
                told_a_pass.push(i);
            }
            if let Err(e) = r.on_event(fixed.as_ref().unwrap_or(&ev)) {
                let msg = format!("{} reporter: {}", r.name(), crate::error::chain(&e));
                tracing::error!("{msg}");
                errors.push(msg);
            }
        }
        // A reporter that failed at the end: those before it already wrote the uncorrected
        // verdict; they get the corrected one (they rewrite their files).
        if errors.len() > before {
            if let Some(fixed) = corrected(&ev, &errors) {
                for i in told_a_pass {
                    if let Err(e) = reporters[i].on_event(&fixed) {
                        let msg = format!(
                            "{} reporter: {}",
                            reporters[i].name(),
                            crate::error::chain(&e)
                        );
                        tracing::error!("{msg}");
                        errors.push(msg);
                    }
                }
            }
        }
    }
    errors
}

pub(crate) fn write_file(path: &std::path::Path, bytes: &[u8]) -> Result<(), ReportError> {
    let wrap = |source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(wrap)?;
    }
    // Write then rename, so a reader never sees half a file; a failed write (a full disk)
    // leaves no empty `.tmp` behind.
    let tmp = path.with_extension("tmp");
    let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(wrap)
}

/// One plain line per event, shared by the non-TTY progress output and `build-log.txt`.
pub fn plain_line(ev: &Event) -> Option<String> {
    Some(match ev {
        Event::RunStarted(r) => format!(
            "run {} scenario {} (Kubernetes {}){}: {} job(s), artifacts in {}",
            r.run_id,
            r.scenario,
            r.version,
            if r.dry_run { " DRY RUN" } else { "" },
            r.jobs.len(),
            r.artifacts.display()
        ),
        Event::JobStarted { job } => format!("{job}: started"),
        Event::StepStarted {
            job,
            step,
            deadline,
        } => {
            format!(
                "{job}: {step} started (deadline {})",
                humantime::format_duration(*deadline)
            )
        }
        Event::StepSlow { job, step, elapsed } => {
            format!(
                "{job}: {step} still running after {}",
                humantime::format_duration(*elapsed)
            )
        }
        Event::StepNote { job, step, note } => format!("{job}: {step}: {note}"),
        Event::StepFinished(s) => {
            let d = format!("{:.1}s", s.duration.as_secs_f64());
            match &s.outcome {
                StepOutcome::Passed => format!("{}: {} passed in {d}", s.job, s.step),
                StepOutcome::DryRun { would } => {
                    format!("{}: {} dry run: would {}", s.job, s.step, would.join("; "))
                }
                StepOutcome::Skipped { reason } => format!("{}: {} {reason}", s.job, s.step),
                StepOutcome::Failed {
                    kind,
                    message,
                    diagnosis,
                    ..
                } => {
                    let nb = if s.non_blocking {
                        " (non-blocking)"
                    } else {
                        ""
                    };
                    let first = message.lines().next().unwrap_or_default();
                    let mut line = if *kind == FailureKind::Interrupted {
                        format!("{}: {} INTERRUPTED in {d}: {first}", s.job, s.step)
                    } else {
                        format!(
                            "{}: {} FAILED{nb} ({kind:?}) in {d}: {first}",
                            s.job, s.step
                        )
                    };
                    if let Some(dg) = diagnosis {
                        line.push_str(&format!("\n    diagnosis: {dg}"));
                    }
                    if let Some(l) = &s.log {
                        line.push_str(&format!("\n    log: {}", l.display()));
                    }
                    line
                }
            }
        }
        Event::JobFinished { job, passed } => {
            format!("{job}: {}", if *passed { "PASSED" } else { "FAILED" })
        }
        Event::RunFinished(s) => {
            let mut out = format!(
                "run {} finished in {:.1}s: {:?} (exit {})",
                s.run_id,
                s.duration.as_secs_f64(),
                s.exit,
                s.exit_code
            );
            if let Some(c) = &s.stopped {
                out.push_str(&format!("\nstopped early: {c}"));
            }
            out.push_str("\ncoverage:");
            for l in s.coverage_lines() {
                out.push_str(&format!("\n  {l}"));
            }
            if let Some(d) = &s.conformance_disabled {
                out.push_str(&format!("\n{d}"));
            }
            out
        }
    })
}
