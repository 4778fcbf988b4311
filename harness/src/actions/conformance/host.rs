//! The host runner: one e2e.test process per spec on this machine, each in its own process
//! group with its own log, deadline and flake attempts, so nothing can hang the run.

use super::{Outcome, Ran, Setup, SpecRunner, DEFAULT_SPEC_DEADLINE};
use crate::actions::{StepContext, StepError};
use crate::conformance::{self, unsupported, Selection, SpecState};
use crate::process::{self, Cmd, StepLog};
use crate::scenario::Parallel;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub struct Host {
    setup: Setup,
    repo_list: PathBuf,
    /// A DNS addon runs in the cluster.
    dns: bool,
    /// Nodes that take pods: what `parallel: auto` scales with.
    schedulable: usize,
}

impl Host {
    pub fn new(setup: Setup, dns: bool, schedulable: usize) -> Result<Host, StepError> {
        let repo_list = setup.dir.join("repo-list.yaml");
        std::fs::write(&repo_list, &setup.repo_list).map_err(|e| {
            StepError::infra(format!("failed to write {}: {e}", repo_list.display()))
        })?;
        Ok(Host {
            setup,
            repo_list,
            dns,
            schedulable,
        })
    }

    fn base(&self, report_dir: &Path) -> Cmd {
        let s = &self.setup;
        Cmd::new(s.e2e.e2e().display().to_string())
            .arg(format!("--kubeconfig={}", s.kubeconfig.display()))
            .arg(format!("--kubectl-path={}", s.kubectl.display()))
            .arg("--provider=skeleton")
            .arg("--ginkgo.noColor")
            .arg("--disable-log-dump")
            .arg(format!("--report-dir={}", report_dir.display()))
            .env("KUBE_TEST_REPO_LIST", self.repo_list.display().to_string())
    }

    /// One spec, its own process group, log and deadline; retried up to `attempts` times.
    /// `step_deadline_came` tells a stop at the step's deadline from an interruption.
    async fn run_spec(
        &self,
        i: usize,
        name: &str,
        attempts: u32,
        deadline: Duration,
        cancel: &tokio_util::sync::CancellationToken,
        step_deadline_came: &AtomicBool,
    ) -> Outcome {
        let why_stopped = || {
            if step_deadline_came.load(Ordering::SeqCst) {
                "not run (deadline): the step's deadline came"
            } else {
                "not run (interrupted): the run was stopped"
            }
        };
        if cancel.is_cancelled() {
            return Outcome::NotRun(format!("{} before this spec started", why_stopped()));
        }
        let mut last = String::new();
        let mut evidence = None;
        for attempt in 1..=attempts.max(1) {
            let dir = self
                .setup
                .dir
                .join("specs")
                .join(format!("{i:03}-{attempt}"));
            let log = match StepLog::create(&dir.join("output.log")) {
                Ok(l) => l,
                Err(e) => {
                    return Outcome::Failed(
                        format!("failed to create {}: {e}", dir.display()),
                        None,
                    )
                }
            };
            let spec_deadline = process::Deadline::new(cancel, deadline);
            let cmd = self.base(&dir).arg(format!(
                "--ginkgo.focus={}",
                conformance::focus_exactly(name)
            ));
            let res =
                process::run(&cmd, &log, spec_deadline.token(), Duration::from_secs(10)).await;
            spec_deadline.stop();
            let junit = std::fs::read_to_string(dir.join("junit_01.xml")).unwrap_or_default();
            // e2e.test's report lists every spec it has (5,667 in 1.20), each other one as
            // skipped: 1.6 MB per spec. Only this spec's own testcase is kept.
            if let Some(own) = conformance::own_testcase(&junit, name) {
                let _ = std::fs::write(dir.join("junit.xml"), own);
            }
            let _ = std::fs::remove_file(dir.join("junit_01.xml"));
            let state = conformance::junit_specs(&junit)
                .into_iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| s);
            match (res, state) {
                (Ok(_), Some(SpecState::Passed)) => return Outcome::Passed { attempts: attempt },
                (_, Some(SpecState::Failed(m))) => last = m,
                // The step's deadline or the stop killed it mid-run: no verdict either way.
                (Err(process::CommandError::Stopped { .. }), _) if cancel.is_cancelled() => {
                    return Outcome::NotRun(format!(
                        "{} while this spec ran (attempt {attempt}; its output is in {})",
                        why_stopped(),
                        dir.display()
                    ));
                }
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
            // Only the spec's own failure message counts as evidence: a resolver error
            // anywhere else in its output (a retried lookup, a log line) proves nothing.
            evidence = unsupported::dns_evidence(&last);
            // Another attempt cannot bring a missing DNS addon; it only costs a deadline.
            if cancel.is_cancelled() || (evidence.is_some() && !self.dns) {
                break;
            }
        }
        Outcome::Failed(last, evidence)
    }

    /// Every attempt's output, in spec order, as one e2e.log.
    fn e2e_log(&self, runnable: &[String]) -> String {
        let mut attempts: Vec<(String, PathBuf)> = std::fs::read_dir(self.setup.dir.join("specs"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect();
        attempts.sort();
        let mut log = String::new();
        for (fname, path) in attempts {
            let name = fname
                .split_once('-')
                .and_then(|(i, _)| i.parse::<usize>().ok())
                .and_then(|i| runnable.get(i))
                .map(String::as_str)
                .unwrap_or("?");
            log.push_str(&format!("===== {name} ({fname})\n"));
            log.push_str(&std::fs::read_to_string(path.join("output.log")).unwrap_or_default());
        }
        log
    }
}

#[async_trait::async_trait]
impl SpecRunner for Host {
    async fn list(
        &mut self,
        cx: &StepContext<'_>,
        sel: &Selection,
    ) -> Result<Vec<String>, StepError> {
        let dry = self.setup.dir.join("dry-run");
        let mut cmd = self
            .base(&dry)
            .arg("--ginkgo.dryRun")
            .arg(format!("--ginkgo.focus={}", sel.focus));
        if let Some(s) = &sel.skip {
            cmd = cmd.arg(format!("--ginkgo.skip={s}"));
        }
        cx.cmd(cmd).await?;
        let listed = std::fs::read_to_string(dry.join("junit_01.xml"))
            .map_err(|e| StepError::infra(format!("failed to read the dry run's report: {e}")))?;
        let selected: Vec<String> = conformance::junit_specs(&listed)
            .into_iter()
            .filter(|(_, s)| *s != SpecState::Skipped)
            .map(|(n, _)| n)
            .collect();
        // The report lists every spec e2e.test has; the selection is what a person reads.
        let mut names = selected.join("\n");
        names.push('\n');
        std::fs::write(dry.join("selected.txt"), names).map_err(|e| {
            StepError::infra(format!(
                "failed to write {}: {e}",
                dry.join("selected.txt").display()
            ))
        })?;
        let _ = std::fs::remove_file(dry.join("junit_01.xml"));
        Ok(selected)
    }

    /// Parallel specs first, then `[Serial]` ones alone; each group longest first, by the
    /// durations earlier runs recorded.
    async fn run(&mut self, cx: &StepContext<'_>, runnable: &[String]) -> Ran {
        let spec = &self.setup.spec;
        let deadline = spec.spec_deadline.unwrap_or(DEFAULT_SPEC_DEADLINE);
        let attempts = spec.flake_attempts.unwrap_or(1);
        let took = &cx.run.settings.spec_durations;
        let order = conformance::longest_first(runnable, took);
        let timed = runnable.iter().filter(|n| took.contains_key(*n)).count();
        let (serial, parallel): (Vec<(usize, String)>, Vec<(usize, String)>) = order
            .into_iter()
            .map(|i| (i, runnable[i].clone()))
            .partition(|(_, n)| n.contains("[Serial]"));
        let setting = spec.parallel.unwrap_or(Parallel::Fixed(1));
        let width = setting.width(self.schedulable) as usize;
        cx.note(format!(
            "{width} spec(s) at once (parallel: {setting}, {} node(s) take pods); {timed} of {} timed by earlier runs, started longest first",
            self.schedulable,
            runnable.len()
        ));
        cx.property("conformance.parallel", width);
        let cancel = cx.cancel.clone();
        let deadline_came = cx.deadline_fired.clone();
        let this = &*self;
        let mut results: Vec<(usize, Outcome, Duration)> = Vec::new();
        let total = runnable.len();
        for (group, width) in [(parallel, width), (serial, 1)] {
            let mut stream = futures::stream::iter(group)
                .map(|(i, name)| {
                    let cancel = cancel.clone();
                    let deadline_came = deadline_came.clone();
                    async move {
                        let t = Instant::now();
                        let o = this
                            .run_spec(i, &name, attempts, deadline, &cancel, &deadline_came)
                            .await;
                        (i, o, t.elapsed())
                    }
                })
                .buffer_unordered(width);
            while let Some(r) = stream.next().await {
                let verdict = match &r.1 {
                    Outcome::Passed { attempts: 1 } => "passed".to_string(),
                    Outcome::Passed { attempts } => {
                        format!("passed on attempt {attempts} (flaky)")
                    }
                    Outcome::Failed(_, Some(_)) => {
                        "failed, name resolution failed (no cluster DNS?)".to_string()
                    }
                    Outcome::Failed(..) => "FAILED".to_string(),
                    Outcome::NotRun(why) => why.split(':').next().unwrap_or("not run").to_string(),
                };
                results.push(r);
                cx.note(format!(
                    "[{}/{total}] {verdict}: {}",
                    results.len(),
                    runnable[results[results.len() - 1].0]
                ));
            }
        }
        Ran {
            results,
            e2e_log: self.e2e_log(runnable),
        }
    }
}
