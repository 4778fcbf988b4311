//! `conformance`: the real e2e.test against the cluster, one process per spec.

use super::cluster::{client, cluster};
use super::{Action, StepContext, StepError};
use crate::conformance::{self, unsupported, unsupported::Classifier, SpecState};
use crate::engine::event::{FailureKind, StepOutcome, SubTest};
use crate::engine::process::{self, Cmd, StepLog};
use crate::images::{KubeArtifacts, IMAGE_REPO};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct Conformance;

const DEFAULT_SPEC_DEADLINE: Duration = Duration::from_secs(300);

struct Env {
    e2e: PathBuf,
    /// The kubectl built with the cluster: specs shell out to kubectl, and one from PATH may
    /// be far outside the supported version skew.
    kubectl: PathBuf,
    kubeconfig: PathBuf,
    repo_list: PathBuf,
    dir: PathBuf,
}

impl Env {
    fn base(&self, report_dir: &Path) -> Cmd {
        Cmd::new(self.e2e.display().to_string())
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .arg(format!("--kubectl-path={}", self.kubectl.display()))
            .arg("--provider=skeleton")
            .arg("--ginkgo.noColor")
            .arg("--disable-log-dump")
            .arg(format!("--report-dir={}", report_dir.display()))
            .env("KUBE_TEST_REPO_LIST", self.repo_list.display().to_string())
    }
}

enum Outcome {
    Passed {
        attempts: u32,
    },
    /// The failure, and the output line showing a name failing to resolve, if any.
    Failed(String, Option<String>),
    /// The run was stopped before this spec started.
    NotRun,
}

/// One spec, its own process group, log and deadline; retried up to `attempts` times.
async fn run_spec(
    env: &Env,
    i: usize,
    name: &str,
    attempts: u32,
    deadline: Duration,
    cancel: &tokio_util::sync::CancellationToken,
) -> Outcome {
    if cancel.is_cancelled() {
        return Outcome::NotRun;
    }
    let mut last = String::new();
    let mut evidence = None;
    for attempt in 1..=attempts.max(1) {
        let dir = env.dir.join("specs").join(format!("{i:03}-{attempt}"));
        let log = match StepLog::create(&dir.join("output.log")) {
            Ok(l) => l,
            Err(e) => {
                return Outcome::Failed(format!("failed to create {}: {e}", dir.display()), None)
            }
        };
        let token = cancel.child_token();
        let timer = {
            let t = token.clone();
            tokio::spawn(async move {
                tokio::time::sleep(deadline).await;
                t.cancel();
            })
        };
        let cmd = env.base(&dir).arg(format!(
            "--ginkgo.focus={}",
            conformance::focus_exactly(name)
        ));
        let res = process::run(&cmd, &log, &token, Duration::from_secs(10)).await;
        timer.abort();
        let junit = std::fs::read_to_string(dir.join("junit_01.xml")).unwrap_or_default();
        let state = conformance::junit_specs(&junit)
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s);
        match (res, state) {
            (Ok(_), Some(SpecState::Passed)) => return Outcome::Passed { attempts: attempt },
            (_, Some(SpecState::Failed(m))) => last = m,
            (Err(process::CommandError::Stopped { .. }), _) if !cancel.is_cancelled() => {
                last = format!(
                    "spec deadline of {} exceeded; killed (its pods and output are in {})",
                    humantime::format_duration(deadline),
                    dir.display()
                );
            }
            (Err(e), _) => last = e.to_string().lines().next().unwrap_or_default().to_string(),
            (Ok(_), other) => {
                last = format!("e2e.test exited 0 but reported {other:?} for the spec")
            }
        }
        evidence = std::fs::read_to_string(dir.join("output.log"))
            .ok()
            .and_then(|o| unsupported::dns_evidence(&o));
        if cancel.is_cancelled() {
            break;
        }
    }
    Outcome::Failed(last, evidence)
}

fn failed(message: String) -> StepOutcome {
    StepOutcome::Failed {
        kind: FailureKind::Test,
        message,
        diagnosis: None,
        log_tail: String::new(),
    }
}

#[async_trait::async_trait]
impl Action for Conformance {
    fn describe(&self, cx: &StepContext<'_>) -> Vec<String> {
        let c = &cx.run.scenario.scenario.conformance;
        let sel = conformance::selection(c);
        let mut v = vec![
            format!(
                "list specs with `e2e.test --ginkgo.dryRun --ginkgo.focus={}{}`",
                sel.focus,
                sel.skip.map(|s| format!(" --ginkgo.skip={s}")).unwrap_or_default()
            ),
            "mark specs that cannot pass here (cluster DNS, images that cannot be built) as skipped with the reason".into(),
            format!(
                "run each remaining spec in its own e2e.test process, {} at a time, deadline {} each, {} attempt(s)",
                c.parallel.unwrap_or(1),
                humantime::format_duration(c.spec_deadline.unwrap_or(DEFAULT_SPEC_DEADLINE)),
                c.flake_attempts.unwrap_or(1)
            ),
        ];
        if let Some((k, n)) = cx.run.settings.conformance_shard {
            v.push(format!(
                "only shard {k}/{n} of the runnable specs (stable hash of each name)"
            ));
        }
        v
    }

    async fn run(&self, cx: &mut StepContext<'_>) -> Result<(), StepError> {
        let c = cluster(cx)?;
        let art = cx.state.get::<KubeArtifacts>().cloned().ok_or_else(|| {
            StepError::infra("failed to find e2e.test: the plan needs an image-build step")
        })?;
        let spec = cx.run.scenario.scenario.conformance.clone();
        let env = Env {
            e2e: art.bin_dir.join("e2e.test"),
            kubectl: art.bin_dir.join("kubectl"),
            kubeconfig: c.kubeconfig.clone().ok_or_else(|| {
                StepError::infra("failed to find a kubeconfig: kubeadm init has not run")
            })?,
            repo_list: cx.job_dir().join("conformance/repo-list.yaml"),
            dir: cx.job_dir().join("conformance"),
        };
        if !env.e2e.is_file() {
            return Err(StepError::infra(format!(
                "failed to find {}",
                env.e2e.display()
            )));
        }
        std::fs::create_dir_all(&env.dir).map_err(|e| {
            StepError::infra(format!("failed to create {}: {e}", env.dir.display()))
        })?;
        std::fs::write(&env.repo_list, conformance::repo_list(IMAGE_REPO)).map_err(|e| {
            StepError::infra(format!("failed to write {}: {e}", env.repo_list.display()))
        })?;

        // 1. Dry run: what the selection contains.
        let sel = conformance::selection(&spec);
        let dry = env.dir.join("dry-run");
        let mut cmd = env
            .base(&dry)
            .arg("--ginkgo.dryRun")
            .arg(format!("--ginkgo.focus={}", sel.focus));
        if let Some(s) = &sel.skip {
            cmd = cmd.arg(format!("--ginkgo.skip={s}"));
        }
        cx.cmd(cmd).await?;
        let listed = std::fs::read_to_string(dry.join("junit_01.xml"))
            .map_err(|e| StepError::infra(format!("failed to read the dry run's report: {e}")))?;
        let mut selected: Vec<String> = conformance::junit_specs(&listed)
            .into_iter()
            .filter(|(_, s)| *s != SpecState::Skipped)
            .map(|(n, _)| n)
            .collect();
        selected.sort();
        cx.note(format!("{} spec(s) selected", selected.len()));

        // 2. Which cannot pass here.
        let dns = {
            let kube = client(c).await?;
            kube::Api::<Service>::namespaced(kube, "kube-system")
                .get_opt("kube-dns")
                .await
                .ok()
                .flatten()
                .is_some()
        };
        let classifier = Classifier::from_tree(art.source_tree.as_deref(), dns);
        let available: BTreeSet<String> = art
            .images
            .iter()
            .map(|i| i.rsplit('/').next().unwrap_or(i).to_string())
            .collect();
        let mut subtests = Vec::new();
        let mut runnable = Vec::new();
        let mut unsupported = 0;
        let mut outside = 0;
        for name in &selected {
            if let Some(reason) = classifier.reason(name, &available) {
                unsupported += 1;
                subtests.push((
                    name.clone(),
                    StepOutcome::Skipped {
                        reason: format!("unsupported here: {reason}"),
                    },
                    Duration::ZERO,
                ));
            } else if cx
                .run
                .settings
                .conformance_shard
                .is_some_and(|(k, n)| !conformance::in_shard(name, k, n))
            {
                outside += 1;
            } else {
                runnable.push(name.clone());
            }
        }
        cx.note(format!(
            "{} runnable, {unsupported} unsupported here{}",
            runnable.len(),
            if outside > 0 {
                format!(", {outside} outside this shard")
            } else {
                String::new()
            }
        ));

        // 3. Run: parallel specs first, then [Serial] ones alone.
        let deadline = spec.spec_deadline.unwrap_or(DEFAULT_SPEC_DEADLINE);
        let attempts = spec.flake_attempts.unwrap_or(1);
        let (serial, parallel): (Vec<(usize, String)>, Vec<(usize, String)>) = runnable
            .iter()
            .cloned()
            .enumerate()
            .partition(|(_, n)| n.contains("[Serial]"));
        let cancel = cx.cancel.clone();
        let env_ref = &env;
        let mut results: Vec<(usize, Outcome, Duration)> = Vec::new();
        let mut done = 0usize;
        let total = runnable.len();
        for (group, width) in [
            (parallel, spec.parallel.unwrap_or(1).max(1) as usize),
            (serial, 1),
        ] {
            let mut stream = futures::stream::iter(group)
                .map(|(i, name)| {
                    let cancel = cancel.clone();
                    async move {
                        let t = Instant::now();
                        let o = run_spec(env_ref, i, &name, attempts, deadline, &cancel).await;
                        (i, o, t.elapsed())
                    }
                })
                .buffer_unordered(width);
            while let Some(r) = stream.next().await {
                done += 1;
                let verdict = match &r.1 {
                    Outcome::Passed { attempts: 1 } => "passed".to_string(),
                    Outcome::Passed { attempts } => format!("passed on attempt {attempts} (flaky)"),
                    Outcome::Failed(_, Some(_)) if !dns => {
                        "unsupported here (name resolution failed: no cluster DNS)".to_string()
                    }
                    Outcome::Failed(..) => "FAILED".to_string(),
                    Outcome::NotRun => "not run (the run was stopped)".to_string(),
                };
                cx.note(format!("[{done}/{total}] {verdict}: {}", runnable[r.0]));
                results.push(r);
            }
        }

        // 4. Report: every selected spec as a testcase, counts as properties, e2e.log.
        let (mut passed, mut failures, mut flaky, mut unsupported_at_run_time, mut not_run) =
            (0, 0, 0, 0, 0);
        results.sort_by_key(|r| r.0);
        let mut e2e_log = String::new();
        // Every attempt's folder, listed once: NNN-attempt.
        let mut attempts: Vec<(String, PathBuf)> = std::fs::read_dir(env.dir.join("specs"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect();
        attempts.sort();
        for (i, outcome, took) in results {
            let name = runnable[i].clone();
            let prefix = format!("{i:03}-");
            for (fname, path) in attempts.iter().filter(|(f, _)| f.starts_with(&prefix)) {
                e2e_log.push_str(&format!("===== {name} ({fname})\n"));
                e2e_log.push_str(
                    &std::fs::read_to_string(path.join("output.log")).unwrap_or_default(),
                );
            }
            let o = match outcome {
                Outcome::Passed { attempts } => {
                    passed += 1;
                    if attempts > 1 {
                        flaky += 1;
                    }
                    StepOutcome::Passed
                }
                Outcome::Failed(_, Some(line)) if !dns => {
                    unsupported_at_run_time += 1;
                    StepOutcome::Skipped {
                        reason: format!(
                            "unsupported here (found at run time): {}; evidence: {line}",
                            unsupported::NEEDS_DNS
                        ),
                    }
                }
                Outcome::Failed(m, _) => {
                    failures += 1;
                    failed(m)
                }
                Outcome::NotRun => {
                    not_run += 1;
                    StepOutcome::Skipped {
                        reason: "skipped: the run was stopped before this spec started".into(),
                    }
                }
            };
            subtests.push((name, o, took));
        }
        subtests.sort_by(|a, b| a.0.cmp(&b.0));
        cx.subtests = subtests
            .into_iter()
            .map(|(name, outcome, duration)| SubTest {
                name,
                outcome,
                duration,
            })
            .collect();
        let log_path = cx
            .run
            .settings
            .artifacts
            .join(format!("e2e-{}.log", cx.job.context()));
        let _ = std::fs::write(&log_path, e2e_log);
        let counts = [
            ("conformance.selected", selected.len()),
            ("conformance.unsupported", unsupported),
            (
                "conformance.unsupported-at-run-time",
                unsupported_at_run_time,
            ),
            ("conformance.outside-shard", outside),
            ("conformance.passed", passed),
            ("conformance.failed", failures),
            ("conformance.flaky", flaky),
            ("conformance.not-run", not_run),
        ];
        for (k, v) in counts {
            cx.property(k, v);
        }
        cx.note(format!(
            "conformance: {} selected, {unsupported} unsupported here ({unsupported_at_run_time} more found at run time), {outside} outside this shard, {passed} passed, {failures} failed, {flaky} flaky, {not_run} not run; log {}",
            selected.len(),
            log_path.display()
        ));
        if failures > 0 {
            return Err(StepError::new(format!(
                "{failures} of {} conformance spec(s) failed",
                passed + failures
            )));
        }
        if passed == 0 {
            return Err(StepError::new(format!(
                "no conformance spec ran: {} selected, {unsupported} unsupported here, {outside} outside this shard",
                selected.len()
            )));
        }
        Ok(())
    }
}
