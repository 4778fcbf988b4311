//! Live progress: an indicatif line per job on a terminal; plain timestamped lines when not
//! on a TTY or when `CI=true`.

use super::{plain_line, ReportError, Reporter};
use crate::engine::event::Event;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub enum Progress {
    Bars {
        multi: MultiProgress,
        bars: HashMap<String, ProgressBar>,
    },
    Plain {
        t0: Instant,
    },
}

impl Progress {
    /// Bars on an interactive terminal outside CI, plain lines otherwise.
    pub fn auto() -> Progress {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        if std::io::stderr().is_terminal() && !ci {
            Progress::Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                bars: HashMap::new(),
            }
        } else {
            Progress::Plain { t0: Instant::now() }
        }
    }
}

impl Reporter for Progress {
    fn name(&self) -> &'static str {
        "progress"
    }

    fn on_event(&mut self, ev: &Event) -> Result<(), ReportError> {
        match self {
            Progress::Plain { t0 } => {
                if let Some(line) = plain_line(ev) {
                    let mut err = std::io::stderr().lock();
                    let _ = writeln!(err, "[{:>7.1}s] {line}", t0.elapsed().as_secs_f64());
                }
            }
            Progress::Bars { multi, bars } => match ev {
                Event::RunStarted(r) => {
                    let style = ProgressStyle::with_template(
                        "{spinner} [{elapsed_precise}] {prefix:.bold} {wide_msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
                    let _ = multi.println(plain_line(ev).unwrap_or_default());
                    for j in &r.jobs {
                        let pb = multi.add(ProgressBar::new_spinner());
                        pb.set_style(style.clone());
                        pb.set_prefix(j.name.clone());
                        pb.set_message("waiting");
                        pb.enable_steady_tick(Duration::from_millis(200));
                        bars.insert(j.name.clone(), pb);
                    }
                }
                Event::StepStarted {
                    job,
                    step,
                    deadline,
                } => {
                    if let Some(pb) = bars.get(job) {
                        pb.set_message(format!(
                            "{step} (deadline {})",
                            humantime::format_duration(*deadline)
                        ));
                    }
                }
                Event::StepNote { job, step, note } => {
                    if let Some(pb) = bars.get(job) {
                        pb.set_message(format!("{step}: {note}"));
                    }
                }
                Event::StepFinished(s)
                    if !matches!(s.outcome, crate::engine::event::StepOutcome::Passed) =>
                {
                    let _ = multi.println(plain_line(ev).unwrap_or_default());
                }
                Event::JobFinished { job, passed } => {
                    if let Some(pb) = bars.get(job) {
                        pb.finish_with_message(if *passed { "PASSED" } else { "FAILED" });
                    }
                }
                Event::RunFinished(_) => {
                    for pb in bars.values() {
                        if !pb.is_finished() {
                            pb.finish();
                        }
                    }
                    let _ = multi.println(plain_line(ev).unwrap_or_default());
                }
                _ => {}
            },
        }
        Ok(())
    }
}

/// `build-log.txt`: the plain lines, timestamped, as Prow's build log.
pub struct BuildLog {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
    t0: Instant,
}

impl BuildLog {
    pub fn new(artifacts: &std::path::Path) -> BuildLog {
        BuildLog {
            path: artifacts.join("build-log.txt"),
            file: None,
            t0: Instant::now(),
        }
    }
}

impl Reporter for BuildLog {
    fn name(&self) -> &'static str {
        "build-log"
    }

    fn on_event(&mut self, ev: &Event) -> Result<(), ReportError> {
        let wrap = |source| ReportError::Write {
            path: self.path.clone(),
            source,
        };
        if self.file.is_none() {
            if let Some(d) = self.path.parent() {
                std::fs::create_dir_all(d).map_err(wrap)?;
            }
            self.file = Some(std::fs::File::create(&self.path).map_err(wrap)?);
        }
        if let (Some(f), Some(line)) = (self.file.as_mut(), plain_line(ev)) {
            writeln!(f, "[{:>7.1}s] {line}", self.t0.elapsed().as_secs_f64()).map_err(
                |source| ReportError::Write {
                    path: self.path.clone(),
                    source,
                },
            )?;
        }
        Ok(())
    }
}
