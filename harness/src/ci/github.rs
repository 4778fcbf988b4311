//! The GitHub Actions alternative: one workflow per scenario, with a scheduled job that
//! checks out the branch (the postsubmit) and a pull-request job that never blocks
//! (`continue-on-error: true`), each a matrix strategy over the cells (and conformance
//! shards) that Prow gets one job each for. Every cell uploads its artifacts, JUnit
//! included. The postsubmit records into the PostgreSQL history that the
//! `SHAKEDOWN_HISTORY` secret names, or, without the secret, into a cached SQLite file per
//! cell.

use super::{Jobs, Settings};
pub use crate::scenario::schedule::cron;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    pub name: String,
    pub on: Triggers,
    pub permissions: BTreeMap<String, String>,
    pub jobs: BTreeMap<String, Job>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Triggers {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<Schedule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_dispatch: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub cron: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Job {
    pub name: String,
    #[serde(rename = "if")]
    pub condition: String,
    pub runs_on: String,
    pub container: Container,
    pub timeout_minutes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub continue_on_error: bool,
    pub env: BTreeMap<String, String>,
    pub steps: Vec<Step>,
}

/// One job per matrix entry; a failing cell never cancels the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Strategy {
    pub fail_fast: bool,
    pub matrix: Matrix,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Matrix {
    /// Each entry: `name` (the job's), `cell` (for cache keys) and `args` (shell words).
    pub include: Vec<BTreeMap<String, String>>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    pub image: String,
    pub options: String,
    pub volumes: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub with: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
}

pub const CHECKOUT: &str = "actions/checkout@v4";
pub const UPLOAD: &str = "actions/upload-artifact@v4";
pub const CACHE_RESTORE: &str = "actions/cache/restore@v4";
pub const CACHE_SAVE: &str = "actions/cache/save@v4";
const HISTORY_DIR: &str = "_history";
const ARTIFACTS_DIR: &str = "_artifacts";

fn step(name: &str) -> Step {
    Step {
        name: name.into(),
        ..Default::default()
    }
}

fn with(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn job(settings: &Settings, jobs: &Jobs, name: &str, condition: &str, steps: Vec<Step>) -> Job {
    let env = BTreeMap::from([(
        "ARTIFACTS".to_string(),
        format!("${{{{ github.workspace }}}}/{ARTIFACTS_DIR}"),
    )]);
    Job {
        name: name.into(),
        condition: condition.into(),
        runs_on: "ubuntu-latest".into(),
        // Root on Debian, privileged for dockerd, as `host-setup` expects; docker's storage
        // on a host folder (overlay on overlay does not work).
        container: Container {
            image: settings.image.clone(),
            options: "--privileged".into(),
            volumes: vec!["/tmp/shakedown-docker:/var/lib/docker".into()],
        },
        timeout_minutes: jobs.timeout.as_secs().div_ceil(60),
        strategy: None,
        continue_on_error: false,
        env,
        steps,
    }
}

fn upload(name: &str, condition: &str) -> Step {
    Step {
        condition: Some(condition.into()),
        uses: Some(UPLOAD.into()),
        with: with(&[
            ("name", name),
            ("path", ARTIFACTS_DIR),
            ("if-no-files-found", "warn"),
        ]),
        ..step("upload artifacts and JUnit")
    }
}

/// The matrix over `defs`: one entry per cell, the job's name, a cache key part and the
/// `cargo run --` arguments as shell words.
fn matrix(defs: &[super::JobDef]) -> Strategy {
    Strategy {
        fail_fast: false,
        matrix: Matrix {
            include: defs
                .iter()
                .map(|d| {
                    with(&[
                        ("name", &d.name),
                        ("cell", &d.cell.suffix()),
                        ("args", &shell_words::join(&d.args)),
                    ])
                })
                .collect(),
        },
    }
}

const RUN: &str = "cargo run --locked -- ${{ matrix.args }}";

/// The workflow for one scenario's jobs.
pub fn workflow(jobs: &Jobs, settings: &Settings) -> Workflow {
    let mut out = Workflow {
        name: format!("{} {}", settings.repo_name(), jobs.branch),
        on: Triggers {
            schedule: Vec::new(),
            pull_request: None,
            workflow_dispatch: None,
        },
        permissions: with(&[("contents", "read")])
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        jobs: BTreeMap::new(),
    };
    if let Some(p) = jobs.periodics.first() {
        // Validation guarantees the interval converts.
        if let Some(c) = p.interval.and_then(|i| cron(i, &jobs.branch).ok()) {
            out.on.schedule.push(Schedule { cron: c });
        }
        out.on.workflow_dispatch = Some(BTreeMap::new());
        let key = format!(
            "{}-history-{}-${{{{ matrix.cell }}}}",
            settings.repo_name(),
            jobs.branch
        );
        let history = format!("{HISTORY_DIR}/history.sqlite");
        let steps = vec![
            Step {
                uses: Some(CHECKOUT.into()),
                with: with(&[("ref", &jobs.base_ref)]),
                ..step(&format!("check out {}", jobs.base_ref))
            },
            Step {
                uses: Some(CACHE_RESTORE.into()),
                with: with(&[
                    ("path", HISTORY_DIR),
                    ("key", &format!("{key}-${{{{ github.run_id }}}}")),
                    ("restore-keys", &format!("{key}-")),
                ]),
                ..step(
                    "restore this cell's run history (used without the SHAKEDOWN_HISTORY secret)",
                )
            },
            Step {
                run: Some(format!(
                    "{RUN} --history \"${{SHAKEDOWN_HISTORY:-{history}}}\""
                )),
                ..step("run the scenario's cell")
            },
            Step {
                condition: Some("always()".into()),
                uses: Some(CACHE_SAVE.into()),
                with: with(&[
                    ("path", HISTORY_DIR),
                    ("key", &format!("{key}-${{{{ github.run_id }}}}")),
                ]),
                ..step("save this cell's run history")
            },
            upload("${{ matrix.name }}", "always()"),
        ];
        let mut j = job(
            settings,
            jobs,
            "${{ matrix.name }}",
            "github.event_name != 'pull_request'",
            steps,
        );
        j.strategy = Some(matrix(&jobs.periodics));
        // Only the postsubmit records into the shared history and notifies; pull requests
        // never see those secrets.
        j.env.insert(
            "SHAKEDOWN_HISTORY".into(),
            "${{ secrets.SHAKEDOWN_HISTORY }}".into(),
        );
        if let Some(var) = &jobs.webhook_env {
            j.env
                .insert(var.clone(), format!("${{{{ secrets.{var} }}}}"));
        }
        out.jobs.insert("periodic".into(), j);
    }
    if let Some(p) = jobs.presubmits.first() {
        out.on.pull_request = Some(BTreeMap::new());
        let mut steps = vec![Step {
            uses: Some(CHECKOUT.into()),
            with: with(&[("fetch-depth", "0")]),
            ..step("check out the pull request")
        }];
        let mut when = "always()".to_string();
        let mut run_step = step("run the scenario's cell");
        run_step.run = Some(RUN.into());
        if let Some(re) = &p.run_if_changed {
            steps.push(Step {
                id: Some("changed".into()),
                run: Some(format!(
                    "if git diff --name-only \"origin/$GITHUB_BASE_REF...HEAD\" | grep -Eq {}; then\n  \
                     echo run=true >> \"$GITHUB_OUTPUT\"\nelse\n  \
                     echo 'no change matches run_if_changed: not run'\n  \
                     echo run=false >> \"$GITHUB_OUTPUT\"\nfi\n",
                    shell_words::quote(re)
                )),
                ..step("decide from changed files (run_if_changed)")
            });
            run_step.condition = Some("steps.changed.outputs.run == 'true'".into());
            when = "always() && steps.changed.outputs.run == 'true'".into();
        }
        steps.push(run_step);
        steps.push(upload("${{ matrix.name }}", &when));
        let mut j = job(
            settings,
            jobs,
            "${{ matrix.name }}",
            "github.event_name == 'pull_request'",
            steps,
        );
        j.strategy = Some(matrix(&jobs.presubmits));
        j.continue_on_error = true;
        out.jobs.insert("presubmit".into(), j);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn h(n: u64) -> Duration {
        Duration::from_secs(n * 3600)
    }

    #[test]
    fn cron_lines_come_back_evenly() {
        // The bytes of "master" sum to 652: minute 52; 652 % 12 = 4, % 24 = 4, % 7 = 1.
        assert_eq!(cron(h(12), "master").unwrap(), "52 4-23/12 * * *");
        assert_eq!(cron(h(2), "master").unwrap(), "52 0-23/2 * * *");
        assert_eq!(cron(h(1), "master").unwrap(), "52 * * * *");
        assert_eq!(cron(h(24), "master").unwrap(), "52 4 * * *");
        assert_eq!(cron(h(168), "master").unwrap(), "52 4 * * 1");
        assert_eq!(
            cron(Duration::from_secs(1800), "master").unwrap(),
            "22-59/30 * * * *"
        );
        for bad in [
            h(5),
            h(36),
            Duration::from_secs(90),
            Duration::from_secs(120),
        ] {
            let e = cron(bad, "master").unwrap_err();
            assert!(e.contains("divide"), "{e}");
        }
    }
}
