//! `conformance`: the real e2e.test against the cluster. Two runners share one flow:
//! 1. list the selected specs with a dry run;
//! 2. triage: which cannot pass here (and why), which are outside the CI shard;
//! 3. run the rest;
//! 4. report every selected spec as a testcase, with the counts as JUnit properties.
//!
//! `host` runs one e2e.test process per spec on this machine, each with its own deadline and
//! flake attempts. `in_cluster` runs the conformance image as a Pod, as sonobuoy and
//! hydrophone do, for users whose cluster can pull it from a registry.

mod host;
mod in_cluster;

use super::cluster::{client, cluster};
use super::{Action, StepContext, StepError};
use crate::actions::JobStateExt;
use crate::conformance::source::{self, E2eBinaries};
use crate::conformance::{self, unsupported, unsupported::Classifier, Selection};
use crate::engine::event::{StepOutcome, SubTest};
use crate::images::{KubeArtifacts, IMAGE_REPO};
use crate::scenario::{ConformanceRunner, ConformanceSpec};
use k8s_openapi::api::core::v1::Service;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

pub struct Conformance;

/// Longer than e2e's own longest wait (PodStartTimeout, 5m), so a spec that waits it out
/// (the hostPort-conflict spec waits 5m for a pod to stay Pending) reports its own verdict.
const DEFAULT_SPEC_DEADLINE: Duration = Duration::from_secs(600);

/// The e2e images the specs use that no registry here has (httpd, nginx, kitten,
/// nautilus, nonroot, nonewprivs, sample-apiserver, etcd, jessie-dnsutils): built from Debian packages and the cluster's source
/// tree, for clusters made from this machine's own images, and only when a runnable spec
/// needs one.
pub(super) struct E2ePlan {
    tree: PathBuf,
    tags: crate::images::E2eTags,
    /// Which store the nodes' kubelet reads images from.
    runtime: crate::release::era::Runtime,
}

/// None where they do not apply: no source tree, images pulled from a registry, or nodes
/// shakedown does not run commands on.
fn e2e_plan(c: &crate::provider::Cluster, art: &KubeArtifacts) -> Option<E2ePlan> {
    let tree = art.source_tree.as_deref()?;
    let local = art.image_set.agnhost_preloaded && art.image_set.agnhost.starts_with(IMAGE_REPO);
    if !local || !c.provider.runs_commands() || !c.provider.needs_node_image() {
        return None;
    }
    let tags = crate::images::E2eTags::from_manifest(&unsupported::manifest_images(tree));
    (!tags.is_empty()).then(|| E2ePlan {
        tree: tree.to_path_buf(),
        tags,
        runtime: art.runtime,
    })
}

/// `shakedown.local/httpd:2.4.38-alpine` → `httpd:2.4.38-alpine`: how the classifier
/// names the images it looks for.
fn short_name(image: &str) -> String {
    image.rsplit('/').next().unwrap_or(image).to_string()
}

/// Builds the planned images and loads them into every node.
async fn load_e2e_images(cx: &StepContext<'_>, plan: &E2ePlan) -> Result<(), StepError> {
    let c = cluster(cx)?;
    let r = cx.runner();
    let t = std::time::Instant::now();
    let built = crate::images::e2e_images(
        &cx.run.settings.root,
        &cx.run.settings.cache_dir,
        &plan.tree,
        &plan.tags,
        &r,
    )
    .await
    .map_err(|e| {
        StepError::infra(format!(
            "failed to build the e2e images: {}",
            crate::error::chain(&e)
        ))
    })?;
    let got: BTreeSet<String> = built.names.iter().map(|i| short_name(i)).collect();
    let planned = plan.tags.names();
    if got != planned {
        return Err(StepError::infra(format!(
            "failed to build the e2e images: built {got:?}, planned {planned:?}"
        )));
    }
    let build_time = t.elapsed();
    let t = std::time::Instant::now();
    futures::future::try_join_all(
        c.nodes
            .iter()
            .map(|n| r.run(c.load_image(&n.name, &built.tar, plan.runtime))),
    )
    .await
    .map_err(|e| {
        StepError::infra(format!(
            "failed to load the e2e images into the nodes: {}",
            crate::error::chain(&e)
        ))
    })?;
    cx.note(format!(
        "e2e images built here ({:.1}s) and loaded into every node ({:.1}s): {}",
        build_time.as_secs_f64(),
        t.elapsed().as_secs_f64(),
        built.names.join(", ")
    ));
    cx.property("conformance.e2e-images", built.names.join(" "));
    Ok(())
}

/// What every runner starts from.
pub(super) struct Setup {
    pub e2e: E2eBinaries,
    /// The kubectl built with the cluster: specs shell out to kubectl, and one from PATH may
    /// be far outside the supported version skew.
    pub kubectl: PathBuf,
    pub kubeconfig: PathBuf,
    /// `KUBE_TEST_REPO_LIST` content: every e2e image registry mapped to the local one.
    pub repo_list: String,
    /// This job's conformance artifacts.
    pub dir: PathBuf,
    pub art: KubeArtifacts,
    pub spec: ConformanceSpec,
}

pub(super) enum Outcome {
    Passed {
        attempts: u32,
    },
    /// The failure, and the output line showing a name failing to resolve, if any.
    Failed(String, Option<String>),
    /// No result, and why.
    NotRun(String),
}

/// What a runner hands back: an outcome per runnable spec (by index), and the e2e log.
pub(super) struct Ran {
    pub results: Vec<(usize, Outcome, Duration)>,
    pub e2e_log: String,
}

#[async_trait::async_trait]
pub(super) trait SpecRunner: Send {
    /// Spec names the selection contains, from a dry run.
    async fn list(
        &mut self,
        cx: &StepContext<'_>,
        sel: &Selection,
    ) -> Result<Vec<String>, StepError>;
    /// Runs these specs; never fails as a whole: each spec gets an outcome.
    async fn run(&mut self, cx: &StepContext<'_>, runnable: &[String]) -> Ran;
    /// Removes what the runner created in the cluster.
    async fn finish(&mut self, _cx: &StepContext<'_>) {}
}

fn runner_of(spec: &ConformanceSpec) -> ConformanceRunner {
    spec.runner.unwrap_or_default()
}

/// Where e2e.test comes from: the scenario's (or the command line's) folder or test
/// tarball, else the cluster's own build.
fn e2e_source(cx: &StepContext<'_>, art: &KubeArtifacts) -> Result<E2eBinaries, StepError> {
    match &cx.run.scenario.scenario.conformance.e2e_binaries {
        Some(p) => source::resolve(&cx.run.settings.root.join(p), &cx.run.settings.cache_dir)
            .map_err(|e| {
                StepError::infra(format!(
                    "failed to use conformance.e2e_binaries: {}",
                    crate::error::chain(&e)
                ))
            }),
        None => Ok(E2eBinaries {
            dir: art.bin_dir.clone(),
            origin: format!("the cluster's own build ({})", art.bin_dir.display()),
        }),
    }
}

#[async_trait::async_trait]
impl Action for Conformance {
    fn describe(&self, cx: &StepContext<'_>) -> Vec<String> {
        let c = &cx.run.scenario.scenario.conformance;
        let sel = conformance::selection(c);
        let source = match &c.e2e_binaries {
            Some(p) => format!("take e2e.test from {}", p.display()),
            None => "take e2e.test from the cluster's own build".into(),
        };
        let mut v = vec![format!(
            "{source}; list specs with a dry run: focus {}{}",
            sel.focus,
            sel.skip.map(|s| format!(", skip {s}")).unwrap_or_default()
        ),
            "mark specs that cannot pass here (cluster DNS, images that cannot be built) as skipped with the reason".into(),
        ];
        v.push(match runner_of(c) {
            ConformanceRunner::Host => format!(
                "run each remaining spec in its own e2e.test process, {} at a time, deadline {} each, {} attempt(s)",
                c.parallel.map_or("1".to_string(), |p| p.to_string()),
                humantime::format_duration(c.spec_deadline.unwrap_or(DEFAULT_SPEC_DEADLINE)),
                c.flake_attempts.unwrap_or(1)
            ),
            ConformanceRunner::InCluster => format!(
                "run the remaining specs in-cluster: the conformance image {} as a Pod in namespace {} with a cluster-admin ServiceAccount, results read back through the pod log; each spec runs once, under the step's deadline",
                c.image.clone().unwrap_or_else(|| format!("{IMAGE_REPO}/conformance (built here from the same e2e.test)")),
                conformance::incluster::NAMESPACE
            ),
        });
        if let Some((k, n)) = cx.run.settings.conformance_shard {
            v.push(format!(
                "only shard {k}/{n} of the runnable specs (stable hash of each name)"
            ));
        }
        v
    }

    async fn run(&self, cx: &mut StepContext<'_>) -> Result<(), StepError> {
        let started = std::time::Instant::now();
        let c = cluster(cx)?;
        let art = cx.job().artifacts.as_ref().cloned().ok_or_else(|| {
            StepError::infra("failed to find e2e.test: the plan needs an image-build step")
        })?;
        let spec = cx.run.scenario.scenario.conformance.clone();
        let e2e = e2e_source(cx, &art)?;
        if !e2e.e2e().is_file() {
            return Err(StepError::infra(format!(
                "failed to find {}",
                e2e.e2e().display()
            )));
        }
        cx.note(format!("e2e.test from {}", e2e.origin));
        cx.property("conformance.e2e-source", &e2e.origin);
        cx.property("conformance.runner", runner_of(&spec).as_str());
        let setup = Setup {
            e2e,
            kubectl: art.bin_dir.join("kubectl"),
            kubeconfig: c.kubeconfig.clone().ok_or_else(|| {
                StepError::infra("failed to find a kubeconfig: kubeadm init has not run")
            })?,
            repo_list: conformance::repo_list(IMAGE_REPO),
            dir: cx.job_dir().join("conformance"),
            art,
            spec: spec.clone(),
        };
        std::fs::create_dir_all(&setup.dir).map_err(|e| {
            StepError::infra(format!("failed to create {}: {e}", setup.dir.display()))
        })?;
        // An API error is not "no DNS": it would turn real failures into "unsupported here".
        let dns = {
            let kube = client(c).await?;
            kube::Api::<Service>::namespaced(kube, "kube-system")
                .get_opt("kube-dns")
                .await
                .map_err(|e| {
                    StepError::infra(format!(
                        "failed to check for a DNS addon (Service kube-system/kube-dns): {}",
                        crate::error::chain(&e)
                    ))
                })?
                .is_some()
        };
        let classifier = Classifier::from_tree(setup.art.source_tree.as_deref(), dns);
        let available: BTreeSet<String> = setup.art.images.iter().map(|i| short_name(i)).collect();
        let e2e = e2e_plan(c, &setup.art);
        let mut runner: Box<dyn SpecRunner> = match runner_of(&spec) {
            ConformanceRunner::Host => {
                // kubeadm taints its control planes: the workers take the specs' pods, or
                // the control plane when there is no worker.
                let schedulable = match c.workers().count() {
                    0 => c.control_planes().count(),
                    n => n,
                };
                Box::new(host::Host::new(setup, dns, schedulable)?)
            }
            ConformanceRunner::InCluster => {
                Box::new(in_cluster::InCluster::prepare(cx, setup, started).await?)
            }
        };
        let result = flow(
            cx,
            runner.as_mut(),
            &spec,
            &classifier,
            &available,
            e2e.as_ref(),
            dns,
        )
        .await;
        runner.finish(cx).await;
        result
    }
}

/// What a conformance run counted, for its verdict.
#[derive(Debug, Default)]
struct Counts {
    selected: usize,
    unsupported: usize,
    outside: usize,
    runnable: usize,
    passed: usize,
    failures: usize,
    not_run: usize,
    unsupported_at_run_time: usize,
}

/// The step passes only when every runnable spec ran and passed (or was found unsupported
/// here at run time, with evidence). A spec without a result fails it: when the run was
/// interrupted the engine reports the step as interrupted instead.
fn verdict(c: &Counts) -> Result<(), StepError> {
    if c.failures > 0 {
        return Err(StepError::new(format!(
            "{} of {} conformance spec(s) failed{}",
            c.failures,
            c.runnable,
            if c.not_run > 0 {
                format!(", {} more have no result", c.not_run)
            } else {
                String::new()
            }
        )));
    }
    if c.not_run > 0 {
        return Err(StepError::new(format!(
            "{} of {} runnable conformance spec(s) have no result (not run, or finished without reporting)",
            c.not_run, c.runnable
        )));
    }
    if c.passed + c.unsupported_at_run_time != c.runnable {
        return Err(StepError::new(format!(
            "{} of {} runnable conformance spec(s) passed, {} found unsupported at run time: the rest have no result",
            c.passed, c.runnable, c.unsupported_at_run_time
        )));
    }
    if c.passed == 0 {
        return Err(StepError::new(format!(
            "no conformance spec passed: {} selected, {} unsupported here, {} outside this shard, {} without a result",
            c.selected, c.unsupported, c.outside, c.not_run
        )));
    }
    Ok(())
}

/// The kubelet of version-skewed workers, when older than the control plane's (None: every
/// kubelet is at the cluster's version).
fn oldest_kubelet(cx: &StepContext<'_>) -> Option<crate::release::KubeVersion> {
    let skewed: crate::release::KubeVersion =
        cx.job.topology.worker_version.as_deref()?.parse().ok()?;
    let cluster = cx.job().artifacts.as_ref()?.version;
    ((skewed.major, skewed.minor) < (cluster.major, cluster.minor)).then_some(skewed)
}

/// Steps 1 to 4, the same for every runner.
async fn flow(
    cx: &mut StepContext<'_>,
    runner: &mut dyn SpecRunner,
    spec: &ConformanceSpec,
    classifier: &Classifier,
    available: &BTreeSet<String>,
    e2e: Option<&E2ePlan>,
    dns: bool,
) -> Result<(), StepError> {
    // The images the e2e build would add count as there; they are built and loaded below
    // only if a runnable spec needs one.
    let with_e2e: BTreeSet<String> = available
        .iter()
        .cloned()
        .chain(e2e.iter().flat_map(|p| p.tags.names()))
        .collect();
    // 1. Dry run: what the selection contains.
    let sel = conformance::selection(spec);
    let mut selected = runner.list(cx, &sel).await?;
    selected.sort();
    cx.note(format!("{} spec(s) selected", selected.len()));
    let rerun = cx.run.settings.rerun.clone();
    if let Some((r, again)) = rerun
        .as_ref()
        .and_then(|r| Some((r, r.specs_for(&cx.job.name)?)))
    {
        let gone: Vec<&String> = again
            .iter()
            .filter(|s| selected.binary_search(s).is_err())
            .collect();
        selected.retain(|s| again.contains(s));
        cx.note(format!(
            "re-run of run {}: {} spec(s) that failed or had no result there{}",
            r.from_run,
            selected.len(),
            if gone.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} of them are no longer selected: {}",
                    gone.len(),
                    gone.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }
        ));
        cx.property("conformance.rerun-of", &r.from_run);
    }

    // 2. Which cannot pass here, which need a newer kubelet than version-skewed nodes
    // have, and which are outside this shard.
    let mut subtests = Vec::new();
    let mut runnable = Vec::new();
    let mut unsupported = 0;
    let mut outside = 0;
    let mut skewed = 0;
    let oldest_kubelet = oldest_kubelet(cx);
    for name in &selected {
        if let Some(reason) = oldest_kubelet
            .as_ref()
            .and_then(|k| conformance::needs_newer_kubelet(name, k))
        {
            skewed += 1;
            subtests.push((
                name.clone(),
                StepOutcome::Skipped {
                    reason: format!("version skew: {reason}"),
                },
                Duration::ZERO,
                None,
            ));
        } else if let Some(reason) = classifier.reason(name, &with_e2e) {
            unsupported += 1;
            subtests.push((
                name.clone(),
                StepOutcome::Skipped {
                    reason: format!("unsupported here: {reason}"),
                },
                Duration::ZERO,
                None,
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
        "{} runnable, {unsupported} unsupported here{}{}",
        runnable.len(),
        if skewed > 0 {
            format!(", {skewed} needing a newer kubelet than the skewed nodes'")
        } else {
            String::new()
        },
        if outside > 0 {
            format!(", {outside} outside this shard")
        } else {
            String::new()
        }
    ));

    if let Some(plan) = e2e {
        let needing = runnable
            .iter()
            .filter(|n| classifier.reason(n, available).is_some())
            .count();
        if needing > 0 {
            cx.note(format!(
                "{needing} runnable spec(s) need e2e images that are built here"
            ));
            load_e2e_images(cx, plan).await?;
        }
    }

    // 3. Run.
    let Ran {
        mut results,
        e2e_log,
    } = runner.run(cx, &runnable).await;

    // 4. Report: every selected spec as a testcase, counts as properties, e2e.log.
    let (mut passed, mut failures, mut flaky, mut unsupported_at_run_time, mut not_run) =
        (0, 0, 0, 0, 0);
    results.sort_by_key(|r| r.0);
    for (i, outcome, took) in results {
        let mut flaky_why = None;
        let o = match outcome {
            Outcome::Passed { attempts } => {
                passed += 1;
                flaky_why = if attempts > 1 {
                    Some(format!(
                        "failed {} attempt(s), passed on attempt {attempts}",
                        attempts - 1
                    ))
                } else {
                    rerun
                        .as_ref()
                        .and_then(|r| r.flaky_reason(&cx.job.name, &runnable[i]))
                };
                if flaky_why.is_some() {
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
                StepOutcome::test_failure(m)
            }
            Outcome::NotRun(reason) => {
                not_run += 1;
                StepOutcome::Skipped { reason }
            }
        };
        subtests.push((runnable[i].clone(), o, took, flaky_why));
    }
    subtests.sort_by(|a, b| a.0.cmp(&b.0));
    cx.subtests = subtests
        .into_iter()
        .map(|(name, outcome, duration, flaky)| SubTest {
            name,
            outcome,
            duration,
            flaky,
        })
        .collect();
    let log_path = cx
        .run
        .settings
        .artifacts
        .join(format!("e2e-{}.log", cx.job.context()));
    let wrote = std::fs::write(&log_path, e2e_log);
    let counts = [
        ("conformance.selected", selected.len()),
        ("conformance.unsupported", unsupported),
        (
            "conformance.unsupported-at-run-time",
            unsupported_at_run_time,
        ),
        ("conformance.outside-shard", outside),
        ("conformance.skipped-for-skew", skewed),
        ("conformance.passed", passed),
        ("conformance.failed", failures),
        ("conformance.flaky", flaky),
        ("conformance.not-run", not_run),
    ];
    for (k, v) in counts {
        cx.property(k, v);
    }
    cx.note(format!(
        "conformance: {} selected, {unsupported} unsupported here ({unsupported_at_run_time} more found at run time), {skewed} skipped for version skew, {outside} outside this shard, {passed} passed, {failures} failed, {flaky} flaky, {not_run} not run; log {}",
        selected.len(),
        log_path.display()
    ));
    wrote.map_err(|e| StepError::infra(format!("failed to write {}: {e}", log_path.display())))?;
    verdict(&Counts {
        runnable: runnable.len(),
        passed,
        failures,
        not_run,
        unsupported_at_run_time,
        selected: selected.len(),
        unsupported,
        outside,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{verdict, Counts};

    fn counts(runnable: usize, passed: usize, failures: usize, not_run: usize) -> Counts {
        Counts {
            selected: runnable,
            runnable,
            passed,
            failures,
            not_run,
            ..Default::default()
        }
    }

    #[test]
    fn only_every_runnable_spec_passing_passes() {
        assert!(verdict(&counts(3, 3, 0, 0)).is_ok());
        let e = verdict(&counts(3, 2, 0, 1)).unwrap_err().message;
        assert!(
            e.contains("1 of 3 runnable") && e.contains("no result"),
            "{e}"
        );
        let e = verdict(&counts(3, 1, 1, 1)).unwrap_err().message;
        assert!(
            e.contains("1 of 3") && e.contains("1 more have no result"),
            "{e}"
        );
        // A runner that lost a spec without saying so.
        let e = verdict(&counts(3, 2, 0, 0)).unwrap_err().message;
        assert!(e.contains("2 of 3"), "{e}");
        assert!(verdict(&counts(0, 0, 0, 0)).is_err(), "nothing passed");
        let dns = Counts {
            unsupported_at_run_time: 1,
            ..counts(3, 2, 0, 0)
        };
        assert!(verdict(&dns).is_ok());
    }
}
