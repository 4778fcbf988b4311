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
pre{white-space:pre-wrap;margin:0;font-size:12px}summary{cursor:pointer}\
.timeline{width:40em}.track{position:relative;height:1.1em;background:#f6f6f6}\
.bar{position:absolute;top:0;height:100%;min-width:2px}.bar.passed{background:#6c6}.bar.failed{background:#d66}\
.bar.skipped,.bar.not-planned,.bar.dry-run,.bar.disabled{background:#bbb}";

/// A step's share of the job's time, as a CSS percentage.
fn pct(part: std::time::Duration, total: std::time::Duration) -> f64 {
    if total.is_zero() {
        0.0
    } else {
        100.0 * part.as_secs_f64() / total.as_secs_f64()
    }
}

/// The job's steps on one time axis. Steps run one after another, so each starts where the
/// previous ended.
fn timeline(h: &mut String, j: &crate::engine::JobSummary) {
    let total: std::time::Duration = j.steps.iter().map(|s| s.duration).sum();
    let _ = write!(
        h,
        "<h3>Timeline</h3><table class=timeline data-job=\"{}\" data-seconds=\"{:.1}\"><tr><th>step</th><th>{:.0}s in all</th><th>time</th></tr>",
        esc(&j.name),
        total.as_secs_f64(),
        total.as_secs_f64()
    );
    let mut at = std::time::Duration::ZERO;
    for st in &j.steps {
        let _ = write!(
            h,
            "<tr class=step data-step=\"{0}\"><td>{0}</td><td><div class=track><div class=\"bar {1}\" style=\"left:{2:.2}%;width:{3:.2}%\" title=\"{0}: {1}, {4:.1}s\"></div></div></td><td>{4:.1}s</td></tr>",
            esc(&st.step),
            class(&st.outcome),
            pct(at, total),
            pct(st.duration, total),
            st.duration.as_secs_f64()
        );
        at += st.duration;
    }
    h.push_str("</table>");
}

/// The checks of a job a person reads first: failed, then flaky, then without a result,
/// then unsupported here (grouped by reason).
fn checks_first(h: &mut String, j: &crate::engine::JobSummary) {
    let all = || {
        j.steps
            .iter()
            .flat_map(|st| st.subtests.iter().map(move |t| (st, t)))
    };
    let counts: Vec<_> = j
        .steps
        .iter()
        .flat_map(|st| &st.properties)
        .filter_map(|(k, v)| Some((k.strip_prefix("conformance.")?, v)))
        .filter(|(_, v)| v.parse::<u64>().is_ok())
        .collect();
    if !counts.is_empty() {
        h.push_str("<h3>Conformance specs</h3><table class=counts><tr>");
        for (k, _) in &counts {
            let _ = write!(h, "<th>{}</th>", esc(k));
        }
        h.push_str("</tr><tr>");
        for (k, v) in &counts {
            let _ = write!(h, "<td data-count=\"{}\">{}</td>", esc(k), esc(v));
        }
        h.push_str("</tr></table>");
    }
    let failed: Vec<_> = all()
        .filter(|(_, t)| matches!(t.outcome, StepOutcome::Failed { .. }))
        .collect();
    let _ = write!(
        h,
        "<h3 id=\"failed-{0}\">Failed ({1})</h3>",
        esc(&j.name),
        failed.len()
    );
    if !failed.is_empty() {
        h.push_str(
            "<table class=failed-checks><tr><th>step</th><th>check</th><th>failure</th></tr>",
        );
        for (st, t) in &failed {
            let _ = write!(
                h,
                "<tr class=failed-check><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&st.step),
                esc(&t.name),
                detail(&t.outcome)
            );
        }
        h.push_str("</table>");
    }
    let flaky: Vec<_> = all().filter(|(_, t)| t.flaky.is_some()).collect();
    let _ = write!(h, "<h3>Flaky ({})</h3>", flaky.len());
    if !flaky.is_empty() {
        h.push_str("<table class=flaky-checks><tr><th>step</th><th>check</th><th>why</th></tr>");
        for (st, t) in &flaky {
            let _ = write!(
                h,
                "<tr class=flaky-check><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&st.step),
                esc(&t.name),
                esc(t.flaky.as_deref().unwrap_or_default())
            );
        }
        h.push_str("</table>");
    }
    let reason_of = |t: &crate::engine::event::SubTest| match &t.outcome {
        StepOutcome::Skipped { reason } => Some(reason.clone()),
        _ => None,
    };
    let not_run: Vec<_> = all()
        .filter_map(|(st, t)| Some((st, t, reason_of(t).filter(|r| r.starts_with("not run"))?)))
        .collect();
    if !not_run.is_empty() {
        let _ = write!(
            h,
            "<h3>Without a result ({})</h3><table class=not-run-checks>",
            not_run.len()
        );
        for (st, t, why) in &not_run {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&st.step),
                esc(&t.name),
                esc(why)
            );
        }
        h.push_str("</table>");
    }
    let mut unsupported: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
    for (_, t) in all() {
        if let Some(r) = reason_of(t).filter(|r| r.starts_with("unsupported here")) {
            unsupported.entry(r).or_default().push(&t.name);
        }
    }
    let n: usize = unsupported.values().map(Vec::len).sum();
    let _ = write!(h, "<h3>Unsupported here ({n})</h3>");
    if n > 0 {
        h.push_str("<table class=unsupported><tr><th>specs</th><th>reason</th></tr>");
        for (reason, names) in &unsupported {
            let _ = write!(
                h,
                "<tr><td><details><summary>{}</summary><pre>{}</pre></details></td><td>{}</td></tr>",
                names.len(),
                esc(&names.join("\n")),
                esc(reason)
            );
        }
        h.push_str("</table>");
    }
    // The upgrade's disruption figures, when a hop ran.
    for st in j.steps.iter() {
        let figures: Vec<_> = st
            .properties
            .iter()
            .filter(|(k, _)| k.starts_with("upgrade."))
            .collect();
        if figures.is_empty() {
            continue;
        }
        let _ = write!(
            h,
            "<h3>Disruption: {}</h3><table class=disruption>",
            esc(&st.step)
        );
        for (k, v) in figures {
            let _ = write!(h, "<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(v));
        }
        h.push_str("</table>");
    }
}

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
        let _ = write!(h, "<h2 id=\"{0}\">{0}</h2>", esc(&j.name));
        timeline(&mut h, j);
        checks_first(&mut h, j);
        let _ = write!(h, "<h3>Steps</h3><table><tr><th>step</th><th>outcome</th><th>time</th><th>details</th><th>log</th></tr>");
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
