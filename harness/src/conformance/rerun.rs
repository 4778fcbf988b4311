//! `--rerun-failed DIR`: what an earlier run left to do, read from its `summary.json`.
//!
//! Per job of that run: the conformance specs that failed or got no result (stopped by a
//! deadline or Ctrl-C); every spec when the job never reached its conformance step; none,
//! and the job not at all, when it passed. A spec that failed there and passes in the re-run
//! is flaky, and says so.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What to run again, and what failed before (a pass of one of those is a flake).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rerun {
    /// The earlier run's id, for notes and flaky reasons.
    pub from_run: String,
    /// Its Kubernetes version: the re-run must test the same one.
    pub version: String,
    pub scenario: String,
    /// The jobs to run again, by name.
    pub jobs: BTreeMap<String, JobRerun>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobRerun {
    /// The specs to run; `None`: the job did not get to its specs, so all of them.
    pub specs: Option<BTreeSet<String>>,
    /// Those of them that failed (the rest had no result).
    pub failed: BTreeSet<String>,
    /// Why the job runs again, for the plan and the step log.
    pub why: String,
}

impl Rerun {
    /// The spec list a job's conformance step keeps, or `None` to keep its whole selection.
    pub fn specs_for(&self, job: &str) -> Option<&BTreeSet<String>> {
        self.jobs.get(job).and_then(|j| j.specs.as_ref())
    }

    /// Why a spec that passes now is flaky: it failed in the earlier run.
    pub fn flaky_reason(&self, job: &str, spec: &str) -> Option<String> {
        self.jobs
            .get(job)
            .filter(|j| j.failed.contains(spec))
            .map(|_| format!("failed in run {}, passed on re-run", self.from_run))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RerunError {
    #[error("failed to read {}: --rerun-failed takes the artifacts folder of an earlier run", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to parse {} as a shakedown summary", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{} is a dry run's summary: nothing ran, so nothing failed", path.display())]
    DryRun { path: PathBuf },
}

#[derive(Deserialize)]
struct Summary {
    run_id: String,
    scenario: String,
    version: String,
    dry_run: bool,
    jobs: Vec<Job>,
}

#[derive(Deserialize)]
struct Job {
    name: String,
    passed: bool,
    steps: Vec<Step>,
}

#[derive(Deserialize)]
struct Step {
    step: String,
    stage: Option<String>,
    outcome: String,
    #[serde(default)]
    subtests: Vec<Sub>,
}

#[derive(Deserialize)]
struct Sub {
    name: String,
    outcome: String,
    #[serde(default)]
    reason: Option<String>,
}

/// Reads `DIR/summary.json` of an earlier run.
pub fn from_artifacts(dir: &Path) -> Result<Rerun, RerunError> {
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path).map_err(|source| RerunError::Read {
        path: path.clone(),
        source,
    })?;
    let s: Summary = serde_json::from_str(&text).map_err(|source| RerunError::Parse {
        path: path.clone(),
        source,
    })?;
    if s.dry_run {
        return Err(RerunError::DryRun { path });
    }
    Ok(from_summary(s))
}

/// Parses a summary's text (for tests and callers holding it already).
pub fn from_json(text: &str) -> Result<Rerun, serde_json::Error> {
    serde_json::from_str(text).map(from_summary)
}

fn from_summary(s: Summary) -> Rerun {
    let mut jobs = BTreeMap::new();
    for j in s.jobs {
        let conformance = j
            .steps
            .iter()
            .find(|st| st.stage.as_deref() == Some("conformance"));
        let entry = match conformance {
            // It ran: the specs that failed or have no result.
            Some(st) if !st.subtests.is_empty() => {
                let failed: BTreeSet<String> = st
                    .subtests
                    .iter()
                    .filter(|t| t.outcome == "failed")
                    .map(|t| t.name.clone())
                    .collect();
                let unfinished = st.subtests.iter().filter(|t| {
                    t.outcome == "skipped"
                        && t.reason
                            .as_deref()
                            .is_some_and(|r| r.starts_with("not run"))
                });
                let specs: BTreeSet<String> = failed
                    .iter()
                    .cloned()
                    .chain(unfinished.map(|t| t.name.clone()))
                    .collect();
                if specs.is_empty() && j.passed {
                    continue;
                }
                let why = if specs.is_empty() {
                    // Failed elsewhere (smoke, a gate): its specs all passed.
                    let step = failed_step(&j).unwrap_or("a step");
                    format!("{step} failed; every spec passed, so none runs again")
                } else {
                    format!(
                        "{} failed, {} without a result",
                        failed.len(),
                        specs.len() - failed.len()
                    )
                };
                JobRerun {
                    specs: Some(specs),
                    failed,
                    why,
                }
            }
            // Never reached (an earlier step failed, or the run stopped), or selected nothing.
            Some(st) if st.outcome != "passed" => JobRerun {
                specs: None,
                failed: BTreeSet::new(),
                why: format!(
                    "its specs did not run ({} {}): all of them",
                    st.step, st.outcome
                ),
            },
            _ if j.passed => continue,
            _ => JobRerun {
                specs: None,
                failed: BTreeSet::new(),
                why: format!(
                    "{} failed and it has no conformance step: the whole job",
                    failed_step(&j).unwrap_or("a step")
                ),
            },
        };
        jobs.insert(j.name, entry);
    }
    Rerun {
        from_run: s.run_id,
        version: s.version,
        scenario: s.scenario,
        jobs,
    }
}

fn failed_step(j: &Job) -> Option<&str> {
    j.steps
        .iter()
        .find(|st| st.outcome == "failed")
        .map(|st| st.step.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(jobs: &str) -> String {
        format!(
            r#"{{"run_id":"r1","scenario":"release-1.20","version":"v1.20.2","dry_run":false,
               "started":"x","duration":"1s","exit":"TestFailure","exit_code":1,"jobs":[{jobs}]}}"#
        )
    }

    fn step(name: &str, stage: &str, outcome: &str, subs: &str) -> String {
        format!(
            r#"{{"job":"j","step":"{name}","index":0,"stage":{stage},"outcome":"{outcome}",
               "duration":"1s","subtests":[{subs}]}}"#
        )
    }

    #[test]
    fn failed_and_unfinished_specs_run_again_and_failures_make_flakes() {
        let subs = r#"{"name":"a","outcome":"passed","duration":"1s"},
            {"name":"b","outcome":"failed","message":"boom","duration":"1s"},
            {"name":"c","outcome":"skipped","reason":"not run (deadline): the step's deadline came","duration":"0s"},
            {"name":"d","outcome":"skipped","reason":"unsupported here: needs cluster DNS","duration":"0s"}"#;
        let text = summary(&format!(
            r#"{{"name":"release-1.20/docker/bridge","passed":false,"steps":[{}]}}"#,
            step("conformance", r#""conformance""#, "failed", subs)
        ));
        let r = from_json(&text).unwrap();
        let j = &r.jobs["release-1.20/docker/bridge"];
        assert_eq!(
            j.specs.as_ref().unwrap().iter().collect::<Vec<_>>(),
            ["b", "c"]
        );
        assert_eq!(j.why, "1 failed, 1 without a result");
        assert_eq!(
            r.flaky_reason("release-1.20/docker/bridge", "b").as_deref(),
            Some("failed in run r1, passed on re-run")
        );
        // Without a result before is not a flake when it passes now.
        assert_eq!(r.flaky_reason("release-1.20/docker/bridge", "c"), None);
    }

    #[test]
    fn a_job_that_never_reached_its_specs_runs_all_and_a_passed_job_none() {
        let text = summary(&format!(
            r#"{{"name":"broken","passed":false,"steps":[{},{}]}},
               {{"name":"fine","passed":true,"steps":[{}]}}"#,
            step("init", r#""init""#, "failed", ""),
            step("conformance", r#""conformance""#, "skipped", ""),
            step(
                "conformance",
                r#""conformance""#,
                "passed",
                r#"{"name":"a","outcome":"passed","duration":"1s"}"#
            ),
        ));
        let r = from_json(&text).unwrap();
        assert_eq!(r.jobs.keys().collect::<Vec<_>>(), ["broken"]);
        assert_eq!(r.specs_for("broken"), None);
        assert!(r.jobs["broken"].why.contains("conformance skipped"));
    }

    #[test]
    fn a_job_failed_outside_its_specs_reruns_no_spec() {
        let text = summary(&format!(
            r#"{{"name":"j","passed":false,"steps":[{},{}]}}"#,
            step("smoke", r#""smoke""#, "failed", ""),
            step(
                "conformance",
                r#""conformance""#,
                "passed",
                r#"{"name":"a","outcome":"passed","duration":"1s"}"#
            ),
        ));
        let r = from_json(&text).unwrap();
        assert!(r.specs_for("j").unwrap().is_empty());
        assert!(r.jobs["j"].why.starts_with("smoke failed"));
    }

    #[test]
    fn a_dry_run_and_a_missing_folder_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = from_artifacts(dir.path()).unwrap_err();
        assert!(e.to_string().contains("summary.json"), "{e}");
        std::fs::write(
            dir.path().join("summary.json"),
            summary("").replace("\"dry_run\":false", "\"dry_run\":true"),
        )
        .unwrap();
        let e = from_artifacts(dir.path()).unwrap_err();
        assert!(e.to_string().contains("dry run"), "{e}");
        std::fs::write(dir.path().join("summary.json"), "{}").unwrap();
        assert!(matches!(
            from_artifacts(dir.path()),
            Err(RerunError::Parse { .. })
        ));
    }
}
