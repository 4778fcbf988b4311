//! The Prow/TestGrid result layout: `started.json` and `finished.json` beside the JUnit files
//! (see shared/FORMATS.md). `build-log.txt` comes from the build-log reporter.

use super::{write_file, ReportError, Reporter};
use crate::engine::event::Event;
use serde_json::json;
use std::path::PathBuf;
use std::time::UNIX_EPOCH;

pub struct Testgrid {
    dir: PathBuf,
}

impl Testgrid {
    pub fn new(artifacts: &std::path::Path) -> Testgrid {
        Testgrid {
            dir: artifacts.to_path_buf(),
        }
    }
}

fn epoch(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn json_bytes(v: &serde_json::Value) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).unwrap_or_default();
    b.push(b'\n');
    b
}

impl Reporter for Testgrid {
    fn name(&self) -> &'static str {
        "testgrid"
    }

    fn on_event(&mut self, ev: &Event) -> Result<(), ReportError> {
        match ev {
            Event::RunStarted(r) => {
                let node = hostname::get()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let v = json!({
                    "timestamp": epoch(r.started),
                    "node": node,
                    "metadata": {
                        "run-id": r.run_id,
                        "scenario": r.scenario,
                        "jobs": r.jobs.iter().map(|j| j.name.clone()).collect::<Vec<_>>(),
                    },
                });
                write_file(&self.dir.join("started.json"), &json_bytes(&v))
            }
            Event::RunFinished(s) => {
                let finished = s.started + s.duration;
                let coverage: serde_json::Map<String, serde_json::Value> = s
                    .jobs
                    .iter()
                    .map(|j| {
                        let stages: serde_json::Map<String, serde_json::Value> = j
                            .coverage
                            .iter()
                            .map(|(st, c)| (st.as_str().to_string(), json!(c.to_string())))
                            .collect();
                        (j.name.clone(), serde_json::Value::Object(stages))
                    })
                    .collect();
                let v = json!({
                    "timestamp": epoch(finished),
                    "passed": s.exit_code == 0,
                    "result": match s.exit_code { 0 => "SUCCESS", 130 => "ABORTED", _ => "FAILURE" },
                    "metadata": {
                        "job-version": s.version,
                        "run-id": s.run_id,
                        "scenario": s.scenario,
                        "exit": s.exit,
                        "dry-run": s.dry_run.to_string(),
                        "stopped": s.stopped,
                        "conformance": s.conformance_disabled.clone().unwrap_or_else(|| "enabled".into()),
                        "coverage": coverage,
                    },
                });
                write_file(&self.dir.join("finished.json"), &json_bytes(&v))
            }
            _ => Ok(()),
        }
    }
}
