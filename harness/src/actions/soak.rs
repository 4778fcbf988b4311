//! `soak`: keep a steady churn going for `soak.duration` while the API and a Service are
//! probed, then compare the cluster's state with a snapshot taken before
//! (`crate::soak`). Testcases: `churn`, `leaks`, `disruption/api`, `disruption/service`.
//! The snapshots and their diff are written beside the job's other artifacts.

use super::cluster::{client_config, client_of, cluster};
use super::{Action, StepContext, StepError};
use crate::actions::JobStateExt;
use crate::engine::event::{StepOutcome, SubTest};
use crate::provider::Cluster;
use crate::soak::{diff, goroutines, parse_node, Limits, Snapshot, NODE_SCRIPT};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Namespace, Pod, Secret, Service, ServiceAccount,
};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

pub struct Soak;

/// Every churn namespace carries this label, valued with the run id.
const LABEL_SOAK: &str = "io.shakedown.soak";
/// How long one churn cycle's Deployment may take to become available.
const CYCLE_WAIT: Duration = Duration::from_secs(90);
/// How long the figures may take to settle once the churn is gone.
const SETTLE_WITHIN: Duration = Duration::from_secs(90);
/// How long the churn's namespaces may take to go. Measured here: after a 3-minute churn
/// on one worker, the last namespace went more than 90 s after its deletion (kubelet
/// confirms pod deletions at its API rate, and the namespace controller retries with a
/// growing backoff while pods remain).
const NAMESPACES_GONE_WITHIN: Duration = Duration::from_secs(300);
/// Findings unchanged this long are settled: kube-proxy resyncs within seconds of a change,
/// and kubelet cleans up orphaned pod folders every few seconds.
const SETTLED: Duration = Duration::from_secs(30);

fn json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("a static object shape")
}

fn sub(name: &str, duration: Duration, r: Result<(), String>) -> SubTest {
    SubTest {
        name: name.into(),
        outcome: match r {
            Ok(()) => StepOutcome::Passed,
            Err(e) => StepOutcome::test_failure(e),
        },
        duration,
        flaky: None,
    }
}

/// The cluster's state now: objects through the API, figures from every node.
async fn snapshot(
    cx: &StepContext<'_>,
    c: &Cluster,
    kube: &kube::Client,
) -> Result<Snapshot, String> {
    let mut s = Snapshot::default();
    let lp = ListParams::default();
    macro_rules! count {
        ($kind:ty, $name:literal) => {{
            let api: Api<$kind> = Api::all(kube.clone());
            let list = api
                .list(&lp)
                .await
                .map_err(|e| format!("failed to list {}: {e}", $name))?;
            for o in &list.items {
                let ns = o.metadata.namespace.clone().unwrap_or_default();
                *s.objects.entry(format!("{} {ns}", $name)).or_default() += 1;
            }
            list
        }};
    }
    let pods = count!(Pod, "Pod");
    count!(Service, "Service");
    let eps = count!(Endpoints, "Endpoints");
    count!(ConfigMap, "ConfigMap");
    count!(Secret, "Secret");
    count!(ServiceAccount, "ServiceAccount");
    count!(Deployment, "Deployment");
    count!(k8s_openapi::api::apps::v1::ReplicaSet, "ReplicaSet");
    let nss: Api<Namespace> = Api::all(kube.clone());
    s.namespaces = nss
        .list(&lp)
        .await
        .map_err(|e| format!("failed to list namespaces: {e}"))?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    let live: BTreeSet<(String, String)> = pods
        .items
        .iter()
        .map(|p| {
            (
                p.metadata.namespace.clone().unwrap_or_default(),
                p.metadata.name.clone().unwrap_or_default(),
            )
        })
        .collect();
    for e in &eps.items {
        let ns = e.metadata.namespace.clone().unwrap_or_default();
        let gone = e.subsets.iter().flatten().any(|ss| {
            ss.addresses
                .iter()
                .flatten()
                .chain(ss.not_ready_addresses.iter().flatten())
                .filter_map(|a| a.target_ref.as_ref())
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .any(|r| {
                    let key = (
                        r.namespace.clone().unwrap_or_else(|| ns.clone()),
                        r.name.clone().unwrap_or_default(),
                    );
                    !live.contains(&key)
                })
        });
        if gone {
            s.endpoints_without_pods.insert(format!(
                "{ns}/{}",
                e.metadata.name.as_deref().unwrap_or_default()
            ));
        }
    }
    let r = cx.runner();
    for n in &c.nodes {
        let out = r
            .output(c.exec(&n.name, &["sh", "-c", NODE_SCRIPT]))
            .await
            .map_err(|e| {
                format!(
                    "failed to read {}'s figures: {}",
                    n.name,
                    crate::error::chain(&e)
                )
            })?;
        s.nodes.insert(n.name.clone(), parse_node(&out));
    }
    let cp = &c.first_control_plane().name;
    if let Ok(m) = r
        .output(c.exec(
            cp,
            // Only the line wanted: the whole page would fill the step log.
            &[
                "sh",
                "-c",
                "kubectl --kubeconfig=/etc/kubernetes/admin.conf get --raw /metrics | grep '^go_goroutines '",
            ],
        ))
        .await
    {
        s.apiserver_goroutines = goroutines(&m);
    }
    Ok(s)
}

/// One churn cycle's objects in namespace `ns`: a ConfigMap and a Secret mounted by a
/// Deployment behind a Service; then it is scaled up and down.
async fn cycle(kube: &kube::Client, ns: &str, w: &Churn<'_>) -> Result<(), String> {
    let (run_id, image, pull, cancel) = (w.run_id, w.image, w.pull, w.cancel);
    let labels =
        serde_json::json!({ LABEL_SOAK: run_id, "app.kubernetes.io/managed-by": "shakedown" });
    let nss: Api<Namespace> = Api::all(kube.clone());
    nss.create(
        &PostParams::default(),
        &json(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}})),
    )
    .await
    .map_err(|e| format!("failed to create namespace {ns}: {e}"))?;
    // Pods need the namespace's ServiceAccount (and before 1.24 its token).
    crate::smoke::service_account_usable(kube, ns, w.token_secrets, cancel).await?;
    let pp = PostParams::default();
    let cms: Api<ConfigMap> = Api::namespaced(kube.clone(), ns);
    cms.create(&pp, &json(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "conf"}, "data": {"k": "v"}})))
        .await
        .map_err(|e| format!("failed to create {ns}/conf: {e}"))?;
    let secrets: Api<Secret> = Api::namespaced(kube.clone(), ns);
    secrets
        .create(&pp, &json(serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cred"}, "stringData": {"k": "v"}})))
        .await
        .map_err(|e| format!("failed to create {ns}/cred: {e}"))?;
    let deps: Api<Deployment> = Api::namespaced(kube.clone(), ns);
    deps.create(&pp, &json(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [{
                        "name": "web", "image": image, "imagePullPolicy": pull,
                        "args": ["netexec", "--http-port=8080"],
                        "volumeMounts": [{"name": "cred", "mountPath": "/cred"}, {"name": "conf", "mountPath": "/conf"}],
                    }],
                    "volumes": [{"name": "cred", "secret": {"secretName": "cred"}}, {"name": "conf", "configMap": {"name": "conf"}}],
                },
            },
        },
    })))
    .await
    .map_err(|e| format!("failed to create {ns}/web: {e}"))?;
    let svcs: Api<Service> = Api::namespaced(kube.clone(), ns);
    svcs.create(
        &pp,
        &json(serde_json::json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        })),
    )
    .await
    .map_err(|e| format!("failed to create service {ns}/web: {e}"))?;
    for replicas in [2, 3, 1] {
        if replicas != 2 {
            deps.patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})),
            )
            .await
            .map_err(|e| format!("failed to scale {ns}/web to {replicas}: {e}"))?;
        }
        let available = move |d: Option<&Deployment>| {
            d.and_then(|d| d.status.as_ref()).is_some_and(|s| {
                s.available_replicas.unwrap_or(0) == replicas
                    && s.replicas.unwrap_or(0) == replicas
                    && s.updated_replicas.unwrap_or(0) == replicas
            })
        };
        crate::readiness::wait_for(deps.clone(), "web", available, CYCLE_WAIT, cancel)
            .await
            .map_err(|e| format!("{ns}/web at {replicas} replica(s): {e}"))?;
    }
    Ok(())
}

/// What every churn cycle needs.
struct Churn<'a> {
    run_id: &'a str,
    image: &'a str,
    pull: &'a str,
    token_secrets: bool,
    cancel: &'a tokio_util::sync::CancellationToken,
}

/// Runs churn cycles until `until`, keeping at most `live` namespaces; returns the cycles
/// done and the first failure.
async fn churn(
    kube: &kube::Client,
    w: &Churn<'_>,
    until: Instant,
    every: Duration,
    live: usize,
    say: &(dyn Fn(String) + Sync),
) -> (u32, Result<(), String>) {
    let nss: Api<Namespace> = Api::all(kube.clone());
    let mut alive: std::collections::VecDeque<String> = Default::default();
    let mut done = 0u32;
    let mut beat = crate::readiness::Heartbeat::new();
    while Instant::now() < until && !w.cancel.is_cancelled() {
        let t = Instant::now();
        let ns = format!("shakedown-soak-{}-{done}", w.run_id).to_ascii_lowercase();
        if let Err(e) = cycle(kube, &ns, w).await {
            return (done, Err(format!("cycle {done}: {e}")));
        }
        alive.push_back(ns);
        while alive.len() > live {
            if let Some(old) = alive.pop_front() {
                if let Err(e) = nss.delete(&old, &DeleteParams::background()).await {
                    return (done, Err(format!("failed to delete namespace {old}: {e}")));
                }
            }
        }
        done += 1;
        if let Some(line) = beat.due(&format!("{done} churn cycle(s) done")) {
            say(format!("soak: {line}"));
        }
        tokio::select! {
            _ = tokio::time::sleep(every.saturating_sub(t.elapsed())) => {}
            _ = w.cancel.cancelled() => {}
        }
    }
    (done, Ok(()))
}

/// Deletes every churn namespace of this run and waits until they are gone.
async fn remove_churn(
    kube: &kube::Client,
    run_id: &str,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(), String> {
    let nss: Api<Namespace> = Api::all(kube.clone());
    let lp = ListParams::default().labels(&format!("{LABEL_SOAK}={run_id}"));
    let t = Instant::now();
    loop {
        let left = nss
            .list(&lp)
            .await
            .map_err(|e| format!("failed to list the churn namespaces: {e}"))?
            .items;
        if left.is_empty() {
            return Ok(());
        }
        for n in &left {
            if n.metadata.deletion_timestamp.is_none() {
                let name = n.metadata.name.clone().unwrap_or_default();
                let _ = nss.delete(&name, &DeleteParams::background()).await;
            }
        }
        if t.elapsed() > NAMESPACES_GONE_WITHIN {
            let names: Vec<String> = left.into_iter().filter_map(|n| n.metadata.name).collect();
            return Err(format!(
                "namespace(s) still there after {NAMESPACES_GONE_WITHIN:?}: {}",
                names.join(", ")
            ));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = cancel.cancelled() => return Err("stopped".into()),
        }
    }
}

#[async_trait::async_trait]
impl Action for Soak {
    fn describe(&self, cx: &StepContext<'_>) -> Vec<String> {
        let s = &cx.run.scenario.scenario.soak;
        vec![
            "start a Deployment behind a Service and a pod probing it every second".into(),
            "snapshot: objects per kind and namespace, namespaces, endpoints without pods, and per node iptables rules, mounts, kubelet/kube-apiserver/etcd RSS and fds, etcd's database size".into(),
            format!(
                "churn for {:?}, a cycle at most every {:?}: a namespace with a ConfigMap and a Secret mounted by a Deployment behind a Service, scaled 2 → 3 → 1, {} namespace(s) alive at once",
                s.duration, s.churn_every, s.live_namespaces
            ),
            "probe the API every second meanwhile".into(),
            "delete the churn, snapshot again until the figures settle (90 s at most), and fail on growth beyond soak.max_growth, naming each resource".into(),
        ]
    }

    async fn run(&self, cx: &mut StepContext<'_>) -> Result<(), StepError> {
        let c = cluster(cx)?;
        if !c.provider.runs_commands() {
            return Err(StepError::new(format!(
                "failed to soak: provider {} runs no commands on nodes, and the snapshots read the nodes",
                c.provider.name()
            )));
        }
        let spec = cx.run.scenario.scenario.soak.clone();
        let cfg = client_config(c).await?;
        let kube = client_of(cfg.clone())?;
        let (image, pull) = cx.agnhost();
        let limits = Limits {
            iptables_rules: spec.max_growth.iptables_rules,
            mounts: spec.max_growth.mounts,
            objects: spec.max_growth.objects,
            rss_percent: spec.max_growth.rss_percent.clone(),
            fds_percent: spec.max_growth.fds_percent,
        };
        let mut subs = Vec::new();
        let t = Instant::now();
        let workload = super::upgrade::make_workload(cx, c)
            .await
            .map_err(|e| StepError::new(format!("failed to start the probed workload: {e}")))?;
        let before = snapshot(cx, c, &kube).await.map_err(StepError::infra)?;
        cx.note(format!(
            "snapshot before: {} namespaces, {} object kinds and namespaces, {} node(s) ({:.1}s)",
            before.namespaces.len(),
            before.objects.len(),
            before.nodes.len(),
            t.elapsed().as_secs_f64()
        ));
        let run_id = cx.run.settings.run_id.clone();
        let w = Churn {
            run_id: &run_id,
            image: &image,
            pull,
            token_secrets: cx.run.scenario.version.is_none_or(|v| v.minor < 24),
            cancel: &cx.cancel,
        };
        let say = |s: String| cx.note(s);
        let started_ms = super::upgrade::now_ms();
        let started = Instant::now();
        let done = tokio_util::sync::CancellationToken::new();
        let probing = super::ha::probe_until(&cfg, Duration::from_secs(1), &done, &cx.cancel);
        let work = async {
            let r = churn(
                &kube,
                &w,
                started + spec.duration,
                spec.churn_every,
                spec.live_namespaces as usize,
                &say,
            )
            .await;
            done.cancel();
            r
        };
        let ((cycles, churned), api) = tokio::join!(work, probing);
        let end = Instant::now();
        let end_ms = super::upgrade::now_ms();
        cx.note(format!(
            "churn: {cycles} cycle(s) in {:.0}s",
            end.duration_since(started).as_secs_f64()
        ));
        cx.property("soak.cycles", cycles);
        subs.push(sub("churn", end.duration_since(started), churned.clone()));

        // The API and the Service, as in an upgrade hop.
        let d = &cx.run.scenario.scenario.disruption;
        let (longest, failed, answering) = super::ha::longest_outage(&api, end);
        cx.note(format!(
            "soak: API {} probe(s), {failed} failed, longest unavailability {:.1}s (allowed {:?}), answering at the end: {answering}",
            api.len(),
            longest.as_secs_f64(),
            d.api_max
        ));
        cx.property(
            "soak.api.longest_seconds",
            format!("{:.1}", longest.as_secs_f64()),
        );
        let api_verdict = if !answering {
            Err("the API was not answering at the end of the soak".to_string())
        } else if longest > d.api_max {
            Err(format!(
                "the API was unavailable for {:.1}s during the soak, more than the allowed {:?}",
                longest.as_secs_f64(),
                d.api_max
            ))
        } else {
            Ok(())
        };
        subs.push(sub(
            "disruption/api",
            end.duration_since(started),
            api_verdict,
        ));
        let svc_verdict = match super::upgrade::prober_log(&kube).await {
            Ok(log) => {
                let samples = super::upgrade::parse_probe_log(&log);
                let (n, longest, failed, answering) =
                    super::upgrade::window(&samples, started_ms, end_ms);
                cx.note(format!(
                    "soak: Service {n} probe(s) from {}, {failed} failed, longest unavailability {:.1}s (allowed {:?}), answering at the end: {answering}",
                    workload.prober_node,
                    longest.as_secs_f64(),
                    d.service_max
                ));
                cx.property(
                    "soak.service.longest_seconds",
                    format!("{:.1}", longest.as_secs_f64()),
                );
                if n == 0 {
                    Err("the prober recorded no probe during the soak".to_string())
                } else if !answering || longest > d.service_max {
                    Err(format!(
                        "the Service was unavailable for {:.1}s during the soak (allowed {:?}), answering at the end: {answering}",
                        longest.as_secs_f64(),
                        d.service_max
                    ))
                } else {
                    Ok(())
                }
            }
            Err(e) => Err(e),
        };
        subs.push(sub(
            "disruption/service",
            end.duration_since(started),
            svc_verdict,
        ));
        super::upgrade::remove_workload(cx, c).await;

        // Back to how it was? Deleting the churn and the workload takes a while to reach
        // every node (kube-proxy's rules, kubelet's unmounts): look again until nothing is
        // found or the settle time runs out.
        let t = Instant::now();
        let removed = remove_churn(&kube, &run_id, &cx.cancel).await;
        cx.note(format!(
            "soak: the churn's namespaces {} after {:.1}s",
            if removed.is_ok() {
                "gone"
            } else {
                "not all gone"
            },
            t.elapsed().as_secs_f64()
        ));
        cx.property(
            "soak.namespaces_gone_seconds",
            format!("{:.1}", t.elapsed().as_secs_f64()),
        );
        let t = Instant::now();
        let mut findings: Vec<String>;
        let mut report;
        let mut after;
        // The same findings for SETTLED in a row: they will not go away by waiting longer.
        let mut same_since: Option<(Vec<String>, Instant)> = None;
        loop {
            after = snapshot(cx, c, &kube).await.map_err(StepError::infra)?;
            (report, findings) = diff(&before, &after, &limits);
            if findings.is_empty() || t.elapsed() > SETTLE_WITHIN || cx.cancel.is_cancelled() {
                break;
            }
            match &same_since {
                Some((f, at)) if *f == findings => {
                    if at.elapsed() >= SETTLED {
                        break;
                    }
                }
                _ => same_since = Some((findings.clone(), Instant::now())),
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        if let Err(e) = &removed {
            findings.push(format!("churn not removed: {e}"));
        }
        let dir = cx.job_dir();
        let write = |name: &str, body: String| {
            std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(dir.join(name), body))
                .map_err(|e| StepError::infra(format!("failed to write {name}: {e}")))
        };
        write(
            "soak-before.json",
            serde_json::to_string_pretty(&before).unwrap_or_default(),
        )?;
        write(
            "soak-after.json",
            serde_json::to_string_pretty(&after).unwrap_or_default(),
        )?;
        write(
            "soak-diff.txt",
            format!(
                "{}\n\nfindings ({}):\n{}\n",
                report.join("\n"),
                findings.len(),
                findings.join("\n")
            ),
        )?;
        for l in &report {
            cx.note(format!("soak: {l}"));
        }
        cx.property("soak.findings", findings.len());
        let leaks = if findings.is_empty() {
            Ok(())
        } else {
            Err(findings.join("; "))
        };
        subs.push(sub("leaks", t.elapsed(), leaks));
        super::checks_done(cx, "soak", subs)
    }
}
