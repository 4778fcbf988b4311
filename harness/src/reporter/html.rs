//! `report.html`: the run on one self-contained page, for a person rather than a dashboard:
//! coverage per job, every step with its outcome, duration, diagnosis and log tail, and the
//! checks inside steps (smoke checks, conformance specs).

use super::{write_file, ReportError, Reporter};
use crate::engine::event::{Event, StepOutcome};
use crate::engine::RunSummary;
use html_escape::encode_text as esc;
use std::fmt::Write;
use std::path::PathBuf;

pub struct Html {
    path: PathBuf,
}

impl Html {
    pub fn new(artifacts: &std::path::Path) -> Html {
        Html {
            path: artifacts.join("report.html"),
        }
    }
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:2em;max-width:80em}\
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}\
.passed{background:#dfd}.failed{background:#fdd}.skipped,.not-planned{background:#eee}.dry-run{background:#def}.disabled{background:#fec}\
pre{white-space:pre-wrap;margin:0;font-size:12px}summary{cursor:pointer}";

fn class(o: &StepOutcome) -> &'static str {
    o.label()
}

fn detail(o: &StepOutcome) -> String {
    match o {
        StepOutcome::Passed => String::new(),
        StepOutcome::DryRun { would } => format!("would {}", esc(&would.join("; "))),
        StepOutcome::Skipped { reason } => esc(reason).into_owned(),
        StepOutcome::Failed {
            message,
            diagnosis,
            log_tail,
            ..
        } => {
            let mut s = String::new();
            if let Some(d) = diagnosis {
                let _ = write!(s, "<b>diagnosis:</b><pre>{}</pre>", esc(d));
            }
            let _ = write!(s, "<pre>{}</pre>", esc(message));
            if !log_tail.is_empty() {
                let _ = write!(
                    s,
                    "<details><summary>last log lines</summary><pre>{}</pre></details>",
                    esc(log_tail)
                );
            }
            s
        }
    }
}

pub fn render(s: &RunSummary) -> String {
    let mut h = String::new();
    let _ =
        write!(
        h,
        "<!doctype html><meta charset=utf-8><title>shakedown {} {}</title><style>{STYLE}</style>\
         <h1>{} <small>Kubernetes {}</small></h1><p>run {} · {:?} (exit {}) · {:.0}s{}</p>",
        esc(&s.scenario),
        esc(&s.run_id),
        esc(&s.scenario),
        esc(&s.version),
        esc(&s.run_id),
        s.exit,
        s.exit_code,
        s.duration.as_secs_f64(),
        if s.dry_run { " · DRY RUN: nothing was executed" } else { "" }
    );
    if let Some(stopped) = &s.stopped {
        let _ = write!(h, "<p class=failed>stopped early: {}</p>", esc(stopped));
    }
    if let Some(d) = &s.conformance_disabled {
        let _ = write!(h, "<p class=disabled>{}</p>", esc(d));
    }
    h.push_str("<h2>Coverage</h2><table><tr><th>job</th>");
    for (stage, _) in s
        .jobs
        .first()
        .map(|j| j.coverage.as_slice())
        .unwrap_or_default()
    {
        let _ = write!(h, "<th>{}</th>", stage.as_str());
    }
    h.push_str("</tr>");
    for j in &s.jobs {
        let _ = write!(
            h,
            "<tr><td class={}>{}</td>",
            if j.passed { "passed" } else { "failed" },
            esc(&j.name)
        );
        for (_, c) in &j.coverage {
            let _ = write!(h, "<td class={}>{}</td>", c.label(), esc(&c.to_string()));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
    for j in &s.jobs {
        let _ = write!(h, "<h2 id=\"{0}\">{0}</h2><table><tr><th>step</th><th>outcome</th><th>time</th><th>details</th><th>log</th></tr>", esc(&j.name));
        for st in &j.steps {
            let log = st
                .log
                .as_ref()
                .map(|l| format!("<a href=\"{0}\">{0}</a>", esc(&l.display().to_string())))
                .unwrap_or_default();
            let _ = write!(
                h,
                "<tr><td>{}</td><td class={}>{}{}</td><td>{:.1}s</td><td>{}</td><td>{log}</td></tr>",
                esc(&st.step),
                class(&st.outcome),
                st.outcome.label(),
                if st.non_blocking { " (non-blocking)" } else { "" },
                st.duration.as_secs_f64(),
                detail(&st.outcome)
            );
            if !st.subtests.is_empty() {
                let passed = st
                    .subtests
                    .iter()
                    .filter(|t| matches!(t.outcome, StepOutcome::Passed))
                    .count();
                let _ = write!(
                    h,
                    "<tr><td></td><td colspan=4><details><summary>{} check(s): {passed} passed</summary><table>",
                    st.subtests.len()
                );
                for t in &st.subtests {
                    let _ = write!(
                        h,
                        "<tr><td>{}</td><td class={}>{}</td><td>{:.1}s</td><td>{}</td></tr>",
                        esc(&t.name),
                        class(&t.outcome),
                        t.outcome.label(),
                        t.duration.as_secs_f64(),
                        detail(&t.outcome)
                    );
                }
                h.push_str("</table></details></td></tr>");
            }
        }
        h.push_str("</table>");
    }
    h
}

impl Reporter for Html {
    fn name(&self) -> &'static str {
        "html"
    }

    fn on_event(&mut self, ev: &Event) -> Result<(), ReportError> {
        if let Event::RunFinished(s) = ev {
            write_file(&self.path, render(s).as_bytes())?;
        }
        Ok(())
    }
}
