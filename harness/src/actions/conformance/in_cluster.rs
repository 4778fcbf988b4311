//! The in-cluster runner: the conformance image as a Pod (see `conformance::incluster` for
//! the objects and the results hand-back). With no image given, the image is built here
//! from the same e2e.test, kubectl and entry script, and loaded into every node.

use super::{Outcome, Ran, Setup, SpecRunner};
use crate::actions::cluster::{client, cluster};
use crate::actions::{StepContext, StepError};
use crate::cni::apply::FIELD_MANAGER;
use crate::conformance::incluster::{self as ic, RunnerPod};
use crate::conformance::{self, unsupported, Selection, SpecState};
use crate::readiness::{pod_finished, wait_for};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, DeleteParams, LogParams, Patch, PatchParams, PostParams};
use std::time::{Duration, Instant};

/// Kept back from the step deadline to read the logs and report.
const REPORT_MARGIN: Duration = Duration::from_secs(30);
/// How often a long run says it is still going.
const HEARTBEAT: Duration = Duration::from_secs(120);

pub struct InCluster {
    setup: Setup,
    client: kube::Client,
    image: String,
    run_id: String,
    keep: bool,
    /// When the step ends.
    deadline: Instant,
    /// The nodes' container engine, for the hint on loading an image by hand.
    engine: &'static str,
}

/// Server-side apply of one object built in `conformance::incluster`.
async fn apply<K>(api: Api<K>, obj: K) -> Result<(), StepError>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&obj),
    )
    .await
    .map(drop)
    .map_err(|e| infra(&format!("apply {} {name}", K::kind(&())), e))
}

fn infra(what: &str, e: impl std::fmt::Display) -> StepError {
    StepError::infra(format!("failed to {what}: {e}"))
}

impl InCluster {
    /// The image (built and loaded when none is given), then the namespace, the
    /// ServiceAccount bound to cluster-admin and the repo list, applied server-side.
    pub async fn prepare(
        cx: &StepContext<'_>,
        setup: Setup,
        started: Instant,
    ) -> Result<InCluster, StepError> {
        let c = cluster(cx)?;
        let image = match &setup.spec.image {
            Some(i) => i.clone(),
            None => {
                let tree = setup.art.source_tree.as_deref().ok_or_else(|| {
                    StepError::infra("failed to build the conformance image: it needs the Kubernetes source tree's cluster/images/conformance, and these binaries came without one; set conformance.image")
                })?;
                cx.note("building the conformance image (cached by its inputs)");
                let built = crate::images::conformance_image(
                    &cx.run.settings.root,
                    &cx.run.settings.cache_dir,
                    setup.art.version,
                    &setup.e2e.dir,
                    &setup.kubectl,
                    tree,
                    &cx.runner(),
                )
                .await
                .map_err(|e| StepError::infra(crate::error::chain(&e)))?;
                cx.note(format!("loading {} into every node", built.tag));
                let loads = c
                    .node_names()
                    .into_iter()
                    .map(|n| cx.cmd(c.load_image(&n, &built.tar, setup.art.runtime)));
                futures::future::try_join_all(loads).await?;
                built.tag
            }
        };
        let client = client(c).await?;
        let run_id = cx.run.settings.run_id.clone();
        apply(Api::all(client.clone()), ic::namespace(&run_id)).await?;
        apply(
            Api::namespaced(client.clone(), ic::NAMESPACE),
            ic::service_account(&run_id),
        )
        .await?;
        apply(Api::all(client.clone()), ic::cluster_role_binding(&run_id)).await?;
        apply(
            Api::namespaced(client.clone(), ic::NAMESPACE),
            ic::repo_list_config_map(&run_id, &setup.repo_list),
        )
        .await?;
        cx.note(format!(
            "namespace {}, ServiceAccount {} (cluster-admin), image {image}",
            ic::NAMESPACE,
            ic::SERVICE_ACCOUNT
        ));
        Ok(InCluster {
            setup,
            client,
            image,
            run_id,
            keep: cx.run.settings.keep_cluster,
            deadline: started + cx.step.timeout.deadline,
            engine: c.provider.name(),
        })
    }

    fn pod(
        &self,
        name: &str,
        focus: String,
        skip: Option<String>,
        parallel: bool,
        dry_run: bool,
    ) -> RunnerPod {
        RunnerPod {
            name: name.into(),
            image: self.image.clone(),
            run_id: self.run_id.clone(),
            focus,
            skip,
            parallel,
            dry_run,
        }
    }

    /// Runs one conformance pod to its end (or until the step's deadline comes near), saves
    /// both containers' logs, and returns the runner's log and the JUnit files.
    async fn run_pod(&self, cx: &StepContext<'_>, p: RunnerPod) -> Result<PodRun, StepError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ic::NAMESPACE);
        let _ = api.delete(&p.name, &DeleteParams::background()).await;
        wait_for(
            api.clone(),
            &p.name,
            |pod: Option<&Pod>| pod.is_none(),
            Duration::from_secs(60),
            &cx.cancel,
        )
        .await
        .ok();
        api.create(&PostParams::default(), &ic::pod(&p))
            .await
            .map_err(|e| infra(&format!("create pod {}/{}", ic::NAMESPACE, p.name), e))?;
        let started = Instant::now();
        let limit = self
            .deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(REPORT_MARGIN)
            .max(Duration::from_secs(30));
        cx.note(format!(
            "pod {}/{} created; waiting up to {} for it to finish",
            ic::NAMESPACE,
            p.name,
            humantime::format_duration(Duration::from_secs(limit.as_secs()))
        ));
        // The runner's end is enough: if its script died before writing `done`, the
        // results container would wait for ever.
        let done = |pod: Option<&Pod>| {
            pod_finished(pod)
                || pod.is_some_and(|p| ic::stuck(p).is_some() || ic::runner_exit(p).is_some())
        };
        let wait = wait_for(api.clone(), &p.name, done, limit, &cx.cancel);
        tokio::pin!(wait);
        let waited = loop {
            tokio::select! {
                r = &mut wait => break r,
                _ = tokio::time::sleep(HEARTBEAT) => cx.note(format!(
                    "pod {} still running after {}", p.name,
                    humantime::format_duration(Duration::from_secs(started.elapsed().as_secs()))
                )),
            }
        };
        let mut pod = match waited {
            Ok(pod) => pod,
            Err(why) => {
                cx.note(format!("pod {}: {why}", p.name));
                None
            }
        };
        if pod
            .as_ref()
            .is_some_and(|p| !pod_finished(Some(p)) && ic::stuck(p).is_none())
        {
            // The runner ended; give the results container a moment to print.
            if let Ok(Some(p2)) = wait_for(
                api.clone(),
                &p.name,
                pod_finished,
                Duration::from_secs(30),
                &cx.cancel,
            )
            .await
            {
                pod = Some(p2);
            }
        }
        if let Some(why) = pod.as_ref().and_then(ic::stuck) {
            return Err(StepError::infra(format!(
                "failed to run pod {}/{}: {why}",
                ic::NAMESPACE,
                p.name
            ))
            .with_diagnosis(format!(
                "the nodes must be able to pull {}: push it to a registry they reach, or load it into each node's containerd ({engine} save IMAGE | {engine} exec -i NODE ctr -n k8s.io images import -), or leave conformance.image unset to build it here",
                self.image,
                engine = self.engine
            )));
        }
        // Logs stay readable after the containers end; bound the reads, the step may be
        // past its deadline already.
        let read = |container: &'static str| {
            let api = api.clone();
            let name = p.name.clone();
            async move {
                let lp = LogParams {
                    container: Some(container.into()),
                    ..Default::default()
                };
                tokio::time::timeout(Duration::from_secs(20), api.logs(&name, &lp))
                    .await
                    .map_err(|_| "timed out".to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
            }
        };
        let log = read(ic::RUNNER).await.unwrap_or_else(|e| {
            format!("(failed to read the {} container's log: {e})\n", ic::RUNNER)
        });
        let results = read(ic::RESULTS).await.unwrap_or_default();
        let dir = self.setup.dir.join("in-cluster").join(&p.name);
        // What came back is the evidence: failing to keep it fails the step.
        let unwritten = |e: std::io::Error| {
            StepError::infra(format!(
                "failed to write the pod's results into {}: {e}",
                dir.display()
            ))
        };
        std::fs::create_dir_all(&dir).map_err(unwritten)?;
        std::fs::write(dir.join("e2e.log"), &log).map_err(unwritten)?;
        std::fs::write(dir.join("results.log"), &results).map_err(unwritten)?;
        let junit = ic::junit_files(&results);
        for (f, body) in &junit {
            std::fs::write(dir.join(f), body).map_err(unwritten)?;
        }
        let exit = pod.as_ref().and_then(ic::runner_exit);
        cx.note(format!(
            "pod {}: {} after {:.0}s, {} JUnit file(s); logs in {}",
            p.name,
            match exit {
                Some(c) => format!("runner exited {c}"),
                None => "did not finish".into(),
            },
            started.elapsed().as_secs_f64(),
            junit.len(),
            dir.display()
        ));
        if !self.keep {
            let _ = api.delete(&p.name, &DeleteParams::background()).await;
        }
        Ok(PodRun {
            log,
            specs: junit
                .iter()
                .flat_map(|(_, body)| conformance::junit_specs(body))
                .collect(),
            times: junit
                .iter()
                .flat_map(|(_, body)| conformance::junit_times(body))
                .collect(),
            finished: exit.is_some(),
            took: started.elapsed(),
        })
    }
}

struct PodRun {
    log: String,
    specs: Vec<(String, SpecState)>,
    /// Each spec's time as ginkgo reported it.
    times: std::collections::BTreeMap<String, Duration>,
    finished: bool,
    took: Duration,
}

#[async_trait::async_trait]
impl SpecRunner for InCluster {
    async fn list(
        &mut self,
        cx: &StepContext<'_>,
        sel: &Selection,
    ) -> Result<Vec<String>, StepError> {
        let p = self.pod(
            "e2e-dry-run",
            sel.focus.clone(),
            sel.skip.clone(),
            false,
            true,
        );
        let run = self.run_pod(cx, p).await?;
        if run.specs.is_empty() {
            return Err(StepError::infra(format!(
                "failed to list specs in-cluster: the dry-run pod reported no JUnit (its log is in {})",
                self.setup.dir.join("in-cluster/e2e-dry-run").display()
            )));
        }
        Ok(run
            .specs
            .into_iter()
            .filter(|(_, s)| *s != SpecState::Skipped)
            .map(|(n, _)| n)
            .collect())
    }

    async fn run(&mut self, cx: &StepContext<'_>, runnable: &[String]) -> Ran {
        if runnable.is_empty() {
            return Ran {
                results: Vec::new(),
                e2e_log: String::new(),
            };
        }
        // ginkgo -p only when no runnable spec is [Serial]: the entry script skips those in
        // parallel mode.
        let wanted = self
            .setup
            .spec
            .parallel
            .is_some_and(|p| p != crate::scenario::Parallel::Fixed(1));
        let parallel = wanted && !runnable.iter().any(|n| n.contains("[Serial]"));
        if wanted && !parallel {
            cx.note("running serially: [Serial] specs are selected, and the conformance image skips them in parallel mode");
        }
        let p = self.pod(
            "e2e-conformance",
            ic::focus_any(runnable),
            None,
            parallel,
            false,
        );
        let run = match self.run_pod(cx, p).await {
            Ok(r) => r,
            Err(e) => {
                let why = format!("not run: {}", e.message);
                return Ran {
                    results: (0..runnable.len())
                        .map(|i| (i, Outcome::NotRun(why.clone()), Duration::ZERO))
                        .collect(),
                    e2e_log: String::new(),
                };
            }
        };
        let missing = if run.finished {
            "no result: the conformance pod finished without reporting this spec".to_string()
        } else {
            format!(
                "no result: the conformance pod did not finish within the step's deadline ({}); ginkgo writes JUnit only at the end",
                humantime::format_duration(Duration::from_secs(run.took.as_secs()))
            )
        };
        let results = runnable
            .iter()
            .enumerate()
            .map(|(i, name)| {
                // With ginkgo -p each node writes its own JUnit, and lists the specs other
                // nodes ran as skipped: a real result wins.
                let mut states = run.specs.iter().filter(|(n, _)| n == name).map(|(_, s)| s);
                let state = states
                    .clone()
                    .find(|s| **s != SpecState::Skipped)
                    .or_else(|| states.next());
                let o = match state {
                    Some(SpecState::Passed) => Outcome::Passed { attempts: 1 },
                    Some(SpecState::Failed(m)) => {
                        Outcome::Failed(m.clone(), unsupported::dns_evidence(m))
                    }
                    Some(SpecState::Skipped) | None => Outcome::NotRun(missing.clone()),
                };
                let took = run.times.get(name).copied().unwrap_or_default();
                (i, o, took)
            })
            .collect();
        Ran {
            results,
            e2e_log: run.log,
        }
    }

    async fn finish(&mut self, _cx: &StepContext<'_>) {
        if self.keep {
            return;
        }
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(ic::NAMESPACE, &DeleteParams::background())
            .await;
        let _ = Api::<ClusterRoleBinding>::all(self.client.clone())
            .delete(ic::SERVICE_ACCOUNT, &DeleteParams::background())
            .await;
    }
}
