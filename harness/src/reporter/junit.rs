//! JUnit for TestGrid and every CI UI: one file per job (`junit_<context>.xml`), one
//! testsuite per job, one testcase per step, `classname` = job name.

use super::{write_file, ReportError, Reporter};
use crate::engine::event::{Event, JobInfo, StepOutcome, StepResult};
use junit_report::{
    Duration as JDuration, OffsetDateTime, ReportBuilder, TestCase, TestResult, TestSuiteBuilder,
};
use quick_xml::events::{BytesStart, Event as XmlEvent};
use std::collections::HashMap;
use std::path::PathBuf;

/// TestGrid shows at most this much of a cell's message.
const TEXT_CAP: usize = 10_000;

pub struct Junit {
    dir: PathBuf,
    run_id: String,
    dry_run: bool,
    jobs: HashMap<String, JobInfo>,
    results: HashMap<String, Vec<StepResult>>,
    started: OffsetDateTime,
}

impl Junit {
    pub fn new(artifacts: &std::path::Path) -> Junit {
        Junit {
            dir: artifacts.to_path_buf(),
            run_id: String::new(),
            dry_run: false,
            jobs: HashMap::new(),
            results: HashMap::new(),
            started: OffsetDateTime::now_utc(),
        }
    }

    /// The file a job's JUnit goes to; matches TestGrid's `junit(_[^_]+)?...\.xml`.
    pub fn file_name(context: &str) -> String {
        format!("junit_{context}.xml")
    }

    fn write_job(&self, job: &JobInfo) -> Result<(), ReportError> {
        let results = self.results.get(&job.name).cloned().unwrap_or_default();
        let mut suite = TestSuiteBuilder::new(&job.name);
        suite.set_timestamp(self.started);
        // Testcase properties, by testcase name: why a spec is flaky.
        let mut case_props: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for r in &results {
            suite.add_testcase(testcase(r));
            for sub in &r.subtests {
                if let Some(why) = &sub.flaky {
                    case_props.insert(
                        format!("{} {}/{}", r.job, r.step, sub.name),
                        vec![("flaky".to_string(), why.clone())],
                    );
                }
                let sr = StepResult {
                    step: format!("{}/{}", r.step, sub.name),
                    outcome: sub.outcome.clone(),
                    duration: sub.duration,
                    subtests: Vec::new(),
                    properties: Vec::new(),
                    ..r.clone()
                };
                suite.add_testcase(testcase(&sr));
            }
        }
        let report = ReportBuilder::new().add_testsuite(suite.build()).build();
        let mut xml = Vec::new();
        report
            .write_xml(&mut xml)
            .map_err(|e| ReportError::Encode {
                what: "JUnit",
                message: e.to_string(),
            })?;
        let mut props = vec![
            ("job".to_string(), job.name.clone()),
            ("provider".to_string(), job.provider.to_string()),
            ("kubernetes-version".to_string(), job.version.clone()),
            ("cni".to_string(), job.cni.clone()),
            ("topology".to_string(), job.topology.clone()),
            ("run-id".to_string(), self.run_id.clone()),
            ("dry-run".to_string(), self.dry_run.to_string()),
        ];
        if let Some(a) = &job.accelerator {
            props.push(("vm-accelerator".to_string(), a.clone()));
        }
        for r in &results {
            props.extend(r.properties.iter().cloned());
        }
        let xml = with_properties(&xml, &props, &case_props)?;
        write_file(&self.dir.join(Self::file_name(&job.context)), &xml)
    }
}

fn cap(s: &str) -> String {
    if s.len() <= TEXT_CAP {
        return s.to_string();
    }
    // Keep the end: the last lines explain a failure.
    let mut start = s.len() - TEXT_CAP;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

fn testcase(r: &StepResult) -> TestCase {
    let name = format!("{} {}", r.job, r.step);
    let time = JDuration::seconds_f64(r.duration.as_secs_f64());
    let mut tc = match &r.outcome {
        StepOutcome::Passed => TestCase::success(&name, time),
        // Nothing ran, so nothing passed: TestGrid shows a dry run as skipped.
        StepOutcome::DryRun { would } => {
            let mut tc = TestCase::skipped(&name);
            let text = format!("dry run: not executed; would {}", would.join("; "));
            tc.result = TestResult::SkippedWithCause {
                type_: "dry-run".into(),
                message: "dry run: not executed".into(),
                cause: Some(cap(&text)),
            };
            tc
        }
        StepOutcome::Skipped { reason } => {
            let mut tc = TestCase::skipped(&name);
            tc.result = TestResult::SkippedWithCause {
                type_: "skipped".into(),
                message: reason.clone(),
                cause: Some(reason.clone()),
            };
            tc
        }
        StepOutcome::Failed {
            kind,
            message,
            diagnosis,
            log_tail,
        } => {
            let mut text = String::new();
            if let Some(d) = diagnosis {
                text.push_str(&format!("diagnosis: {d}\n\n"));
            }
            text.push_str(message);
            if !log_tail.is_empty() {
                let log = r
                    .log
                    .as_ref()
                    .map(|l| l.display().to_string())
                    .unwrap_or_default();
                text.push_str(&format!("\n\n--- last lines of {log} ---\n{log_tail}"));
            }
            let mut tc = TestCase::failure(
                &name,
                time,
                &format!("{kind:?}").to_lowercase(),
                message.lines().next().unwrap_or_default(),
            );
            tc.result = TestResult::Failure {
                type_: format!("{kind:?}").to_lowercase(),
                message: message.lines().next().unwrap_or_default().to_string(),
                cause: Some(cap(&text)),
            };
            tc
        }
    };
    tc.set_classname(&r.job);
    tc
}

/// junit-report writes no `<properties>`; add the suite's as the first child of each
/// testsuite, and a testcase's (by name) as the first child of that testcase.
fn with_properties(
    xml: &[u8],
    props: &[(String, String)],
    case_props: &HashMap<String, Vec<(String, String)>>,
) -> Result<Vec<u8>, ReportError> {
    let enc = |e: &dyn std::fmt::Display| ReportError::Encode {
        what: "JUnit properties",
        message: e.to_string(),
    };
    let write_props = |writer: &mut quick_xml::Writer<Vec<u8>>,
                       props: &[(String, String)]|
     -> Result<(), ReportError> {
        writer
            .write_event(XmlEvent::Start(BytesStart::new("properties")))
            .map_err(|e| enc(&e))?;
        for (k, v) in props {
            let p = BytesStart::new("property")
                .with_attributes([("name", k.as_str()), ("value", v.as_str())]);
            writer
                .write_event(XmlEvent::Empty(p))
                .map_err(|e| enc(&e))?;
        }
        writer
            .write_event(XmlEvent::End(quick_xml::events::BytesEnd::new(
                "properties",
            )))
            .map_err(|e| enc(&e))
    };
    let case_name = |s: &BytesStart| -> Option<String> {
        let a = s.try_get_attribute("name").ok().flatten()?;
        a.unescape_value().ok().map(|v| v.into_owned())
    };
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut writer = quick_xml::Writer::new(Vec::new());
    let mut buf = Vec::new();
    loop {
        let ev = reader.read_event_into(&mut buf).map_err(|e| enc(&e))?;
        match ev {
            XmlEvent::Eof => break,
            XmlEvent::Start(s) if s.name().as_ref() == b"testsuite" => {
                writer
                    .write_event(XmlEvent::Start(s))
                    .map_err(|e| enc(&e))?;
                write_props(&mut writer, props)?;
            }
            XmlEvent::Start(s) if s.name().as_ref() == b"testcase" => {
                let mine = case_name(&s).and_then(|n| case_props.get(&n));
                writer
                    .write_event(XmlEvent::Start(s))
                    .map_err(|e| enc(&e))?;
                if let Some(p) = mine {
                    write_props(&mut writer, p)?;
                }
            }
            XmlEvent::Empty(s) if s.name().as_ref() == b"testcase" => {
                match case_name(&s).and_then(|n| case_props.get(&n)) {
                    Some(p) => {
                        writer
                            .write_event(XmlEvent::Start(s.borrow()))
                            .map_err(|e| enc(&e))?;
                        write_props(&mut writer, p)?;
                        writer
                            .write_event(XmlEvent::End(s.to_end()))
                            .map_err(|e| enc(&e))?;
                    }
                    None => writer
                        .write_event(XmlEvent::Empty(s))
                        .map_err(|e| enc(&e))?,
                }
            }
            other => writer.write_event(other).map_err(|e| enc(&e))?,
        }
        buf.clear();
    }
    Ok(writer.into_inner())
}

impl Reporter for Junit {
    fn name(&self) -> &'static str {
        "junit"
    }

    fn on_event(&mut self, ev: &Event) -> Result<(), ReportError> {
        match ev {
            Event::RunStarted(r) => {
                self.run_id = r.run_id.clone();
                self.dry_run = r.dry_run;
                self.started = OffsetDateTime::from(r.started);
                for j in &r.jobs {
                    self.jobs.insert(j.name.clone(), j.clone());
                }
            }
            Event::StepFinished(s) => self
                .results
                .entry(s.job.clone())
                .or_default()
                .push(s.clone()),
            Event::JobFinished { job, .. } => {
                if let Some(info) = self.jobs.get(job) {
                    self.write_job(info)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flaky_testcase_gets_its_own_property_empty_or_not() {
        let xml = br#"<testsuites><testsuite name="j"><testcase name="j conformance/a" time="1"/><testcase name="j conformance/b" time="1"><skipped/></testcase><testcase name="j conformance/c" time="1"/></testsuite></testsuites>"#;
        let mut cases = HashMap::new();
        for c in ["j conformance/a", "j conformance/b"] {
            cases.insert(
                c.to_string(),
                vec![("flaky".to_string(), "failed in run r1".to_string())],
            );
        }
        let out = with_properties(xml, &[("job".into(), "j".into())], &cases).unwrap();
        let out = String::from_utf8(out).unwrap();
        let prop = r#"<properties><property name="flaky" value="failed in run r1"/></properties>"#;
        assert!(out.contains(&format!(
            r#"<testcase name="j conformance/a" time="1">{prop}</testcase>"#
        )));
        assert!(out.contains(&format!(
            r#"<testcase name="j conformance/b" time="1">{prop}<skipped/>"#
        )));
        assert!(out.contains(r#"<testcase name="j conformance/c" time="1"/>"#));
        assert!(out.contains(
            r#"<testsuite name="j"><properties><property name="job" value="j"/></properties>"#
        ));
    }
}
