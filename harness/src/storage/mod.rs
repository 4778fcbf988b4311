//! The storage tier: the volume bugs Kubernetes 1.3 shipped, as checks through the API and on
//! the nodes. Each check is its own testcase:
//! - `shared-secret-at-scale`: N pods mounting one Secret all run within a bound (#28616);
//! - `teardown-clean`: deleting them leaves no mount behind on any node, and no kubelet line
//!   says "device or resource busy" or "orphaned pod" (#28750);
//! - `pvc-deleted-before-pod`: a bound local volume in use, its claim deleted first, then
//!   the pod: the claim waits for the pod, the volume ends Released (Retain), the node keeps
//!   no mount, and a fresh claim binds and runs (#29051);
//! - `ungraceful-termination-keeps-data`: a pod writing checksummed blocks is force-deleted
//!   mid-write; a new pod on the same volume verifies every completed block (#27691).
//!
//! The node-side parts (mount tables, kubelet's journal, the local volume's folder) need a
//! provider that runs commands on nodes.

use crate::engine::event::{StepOutcome, SubTest};
use crate::readiness::wait_for;
use crate::smoke::PodTemplate;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Every object the tier creates carries this label, valued with the run id.
pub const LABEL_STORAGE: &str = "io.shakedown.storage";
/// How long one pod or claim may take to get where a check wants it.
const OBJECT_WAIT: Duration = Duration::from_secs(120);
/// Where a node keeps the local volumes' folders.
const LOCAL_ROOT: &str = "/var/lib/shakedown-storage";

/// The tier's settings, from the scenario's `storage:`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub shared_secret_pods: u32,
    pub running_within: Duration,
}

/// Runs commands on the cluster's nodes: the tier's view of the provider.
#[async_trait::async_trait]
pub trait Nodes: Send + Sync {
    fn names(&self) -> Vec<String>;
    /// The node's output of `args`.
    async fn output(&self, node: &str, args: &[&str]) -> Result<String, String>;
    /// A folder every node sees with the same contents: the node-loss check's stand-in
    /// for network storage (None: the provider has none, and that check is skipped).
    fn shared_folder(&self) -> Option<String> {
        None
    }
    /// Stops a node as a lost machine stops: its kubelet posts no more status.
    async fn stop(&self, node: &str) -> Result<(), String> {
        Err(format!(
            "failed to stop {node}: the provider cannot stop nodes"
        ))
    }
    /// Starts a node `stop` stopped.
    async fn start(&self, node: &str) -> Result<(), String> {
        Err(format!(
            "failed to start {node}: the provider cannot start nodes"
        ))
    }
}

pub struct Storage<'a> {
    pub client: kube::Client,
    pub namespace: String,
    pub run_id: String,
    pub cancel: CancellationToken,
    pub image: String,
    pub pull_policy: &'static str,
    pub settings: Settings,
    /// None: the provider runs no commands on nodes, and the node-side checks are skipped.
    pub nodes: Option<&'a dyn Nodes>,
    /// Before 1.24 a ServiceAccount is usable only once its token secret exists.
    pub token_secrets: bool,
    pub results: Vec<SubTest>,
    /// What each passed check measured, by check name.
    pub figures: Vec<(String, String)>,
    pub say: &'a (dyn Fn(String) + Sync),
}

/// A mount table's lines (`/proc/self/mountinfo`) that name one of `uids`' pod folders.
pub fn stale_mounts<'m>(mountinfo: &'m str, uids: &[String]) -> Vec<&'m str> {
    mountinfo
        .lines()
        .filter(|l| {
            uids.iter()
                .any(|u| !u.is_empty() && l.contains(&format!("/pods/{u}/")))
        })
        .collect()
}

/// Kubelet journal lines that tell of a volume teardown gone wrong.
pub fn teardown_trouble(journal: &str) -> Vec<&str> {
    journal
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("device or resource busy") || l.contains("orphaned pod")
        })
        .collect()
}

/// Seconds from a pod's scheduling to its container running, from its status.
pub fn scheduled_to_running(p: &Pod) -> Option<f64> {
    let st = p.status.as_ref()?;
    let scheduled = st
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "True")?
        .last_transition_time
        .as_ref()?
        .0;
    let started = st
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .running
        .as_ref()?
        .started_at
        .as_ref()?
        .0;
    Some((started - scheduled).num_milliseconds().max(0) as f64 / 1000.0)
}

/// The verifier's last line, `verified N blocks`: N.
pub fn verified_blocks(log: &str) -> Option<u32> {
    log.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("verified ")?.strip_suffix(" blocks"))
        .and_then(|n| n.parse().ok())
}

/// The writer: 64 KiB blocks of random data, each followed by its checksum file, written to a
/// temporary name and renamed once the block is synced, so a `.sum` names a completed block.
pub const WRITER: &str =
    "i=0; while :; do dd if=/dev/urandom of=/data/b.$i bs=4k count=16 2>/dev/null; sync; \
sha256sum /data/b.$i > /data/s.tmp; sync; mv /data/s.tmp /data/b.$i.sum; i=$((i+1)); done";
/// The verifier: every completed block's checksum must hold.
pub const VERIFIER: &str = "n=0; for s in /data/*.sum; do [ -e \"$s\" ] || continue; \
sha256sum -c \"$s\" || exit 1; n=$((n+1)); done; echo \"verified $n blocks\"";

fn json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("a static object shape")
}

impl Storage<'_> {
    fn labels(&self) -> serde_json::Value {
        serde_json::json!({ LABEL_STORAGE: self.run_id, "app.kubernetes.io/managed-by": "shakedown" })
    }

    fn record(&mut self, name: &str, started: Instant, outcome: Result<String, String>) {
        let outcome = match outcome {
            Ok(figures) => {
                (self.say)(format!("storage/{name}: {figures}"));
                self.figures.push((name.to_string(), figures));
                StepOutcome::Passed
            }
            Err(message) => StepOutcome::test_failure(message),
        };
        self.results.push(SubTest {
            name: name.to_string(),
            outcome,
            duration: started.elapsed(),
            flaky: None,
        });
    }

    fn skip(&mut self, name: &str, reason: &str) {
        self.results.push(SubTest {
            name: name.to_string(),
            outcome: StepOutcome::Skipped {
                reason: reason.into(),
            },
            duration: Duration::ZERO,
            flaky: None,
        });
    }

    /// Runs every check in order; returns the names of those that failed.
    pub async fn run(&mut self, first_node: &str) -> Vec<String> {
        let t = Instant::now();
        if let Err(e) = self.prepare().await {
            for c in CHECKS {
                self.record(c, t, Err(format!("not run: {e}")));
            }
            return self.failed();
        }
        let since = k8s_openapi::chrono::Utc::now().timestamp();
        let t = Instant::now();
        let shared = self.shared_secret_at_scale().await;
        let uids = shared.as_ref().map(|(_, u)| u.clone()).unwrap_or_default();
        self.record(CHECKS[0], t, shared.map(|(f, _)| f));
        let t = Instant::now();
        match self.nodes {
            None => self.skip(CHECKS[1], "the provider runs no commands on nodes"),
            Some(_) if uids.is_empty() => {
                self.record(CHECKS[1], t, Err("not run: no pods to tear down".into()))
            }
            Some(nodes) => {
                let r = self.teardown_clean(nodes, &uids, since).await;
                self.record(CHECKS[1], t, r);
            }
        }
        for (i, name) in CHECKS.iter().enumerate().skip(2) {
            let t = Instant::now();
            let Some(nodes) = self.nodes else {
                self.skip(name, "the provider runs no commands on nodes");
                continue;
            };
            let r = if i == 2 {
                self.pvc_deleted_before_pod(nodes, first_node).await
            } else {
                self.ungraceful_termination(nodes, first_node).await
            };
            self.record(name, t, r);
        }
        self.failed()
    }

    fn failed(&self) -> Vec<String> {
        crate::engine::event::failed_names(&self.results)
    }

    async fn prepare(&self) -> Result<(), String> {
        let ns: Api<Namespace> = Api::all(self.client.clone());
        let n: Namespace = json(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": { "name": self.namespace, "labels": self.labels() },
        }));
        ns.create(&PostParams::default(), &n)
            .await
            .map_err(|e| format!("failed to create namespace {}: {e}", self.namespace))?;
        crate::smoke::service_account_usable(
            &self.client,
            &self.namespace,
            self.token_secrets,
            &self.cancel,
        )
        .await
    }

    fn pod(&self, name: &str, node: Option<&str>, script: &str, volume: serde_json::Value) -> Pod {
        let t = PodTemplate {
            namespace: &self.namespace,
            run_id: &self.run_id,
            image: &self.image,
            pull_policy: self.pull_policy,
        };
        let mut p = crate::smoke::pod(&t, name, node.unwrap_or_default(), "storage", &[], "Never");
        p.metadata.labels = Some(json(self.labels()));
        let spec = p.spec.as_mut().expect("smoke pods have a spec");
        if node.is_none() {
            spec.node_selector = None;
        }
        // `sleep` as the container's first process ignores SIGTERM, so each graceful
        // deletion would wait out the default 30 s before the kill; the checks are about
        // what teardown leaves, not how long a pod may linger.
        spec.termination_grace_period_seconds = Some(2);
        spec.containers[0].command = Some(vec!["sh".into(), "-c".into(), script.into()]);
        spec.containers[0].volume_mounts = Some(vec![json(
            serde_json::json!({ "name": "data", "mountPath": "/data" }),
        )]);
        let mut v = volume;
        v["name"] = "data".into();
        spec.volumes = Some(vec![json(v)]);
        p
    }

    async fn wait_running(
        &self,
        pods: &Api<Pod>,
        name: &str,
        within: Duration,
    ) -> Result<Pod, String> {
        let running = |p: Option<&Pod>| {
            p.and_then(|p| p.status.as_ref())
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|ph| ph != "Pending")
        };
        let p = wait_for(pods.clone(), name, running, within, &self.cancel)
            .await?
            .ok_or_else(|| format!("pod {name} is gone"))?;
        match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Running") => Ok(p),
            other => {
                let logs = pods
                    .logs(name, &LogParams::default())
                    .await
                    .unwrap_or_default();
                Err(format!(
                    "pod {name} is {other:?}, not Running: {}",
                    logs.trim()
                ))
            }
        }
    }

    async fn gone<K>(&self, api: Api<K>, name: &str) -> Result<(), String>
    where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    {
        wait_for(
            api,
            name,
            |o: Option<&K>| o.is_none(),
            OBJECT_WAIT,
            &self.cancel,
        )
        .await
        .map(drop)
    }

    /// N pods on one Secret, all Running within the scenario's bound.
    async fn shared_secret_at_scale(&self) -> Result<(String, Vec<String>), String> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let s: Secret = json(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": "shared", "labels": self.labels() },
            "stringData": { "stamp": self.run_id },
        }));
        secrets
            .create(&PostParams::default(), &s)
            .await
            .map_err(|e| format!("failed to create secret shared: {e}"))?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let n = self.settings.shared_secret_pods;
        let t = Instant::now();
        let script = format!("grep -qx {} /data/stamp && exec sleep 3600", self.run_id);
        for i in 0..n {
            let mut p = self.pod(
                &format!("secret-{i}"),
                None,
                &script,
                serde_json::json!({ "secret": { "secretName": "shared" } }),
            );
            if let Some(spec) = p.spec.as_mut() {
                spec.restart_policy = Some("Never".into());
            }
            pods.create(&PostParams::default(), &p)
                .await
                .map_err(|e| format!("failed to create pod secret-{i}: {e}"))?;
        }
        let within = self.settings.running_within;
        let lp = ListParams::default().labels(&format!("{LABEL_STORAGE}={}", self.run_id));
        loop {
            let list = pods
                .list(&lp)
                .await
                .map_err(|e| format!("failed to list the pods: {e}"))?;
            let secret_pods: Vec<&Pod> = list
                .items
                .iter()
                .filter(|p| {
                    p.metadata
                        .name
                        .as_deref()
                        .is_some_and(|n| n.starts_with("secret-"))
                })
                .collect();
            let running = secret_pods
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count();
            if let Some(bad) = secret_pods
                .iter()
                .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"))
            {
                return Err(format!(
                    "pod {} failed: it did not read the secret's stamp",
                    bad.metadata.name.as_deref().unwrap_or("?")
                ));
            }
            if running == n as usize {
                let took = t.elapsed().as_secs_f64();
                let mut per: Vec<f64> = secret_pods
                    .iter()
                    .filter_map(|p| scheduled_to_running(p))
                    .collect();
                per.sort_by(f64::total_cmp);
                let uids = secret_pods
                    .iter()
                    .filter_map(|p| p.metadata.uid.clone())
                    .collect();
                let median = per.get(per.len() / 2).copied().unwrap_or_default();
                let max = per.last().copied().unwrap_or_default();
                return Ok((
                    format!(
                        "{n} pods on one Secret all Running after {took:.1}s (bound {within:?}); scheduled to running: median {median:.1}s, max {max:.1}s"
                    ),
                    uids,
                ));
            }
            let last = format!("{running}/{n} Running");
            if t.elapsed() > within {
                return Err(format!(
                    "{last} after {within:?}: the pods sharing one Secret did not all start within the bound"
                ));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = self.cancel.cancelled() => return Err(format!("stopped: {last}")),
            }
        }
    }

    /// Deletes the shared-secret pods; none of their folders stays mounted on any node,
    /// and no kubelet line since `since` tells of a busy device or an orphaned pod.
    async fn teardown_clean(
        &self,
        nodes: &dyn Nodes,
        uids: &[String],
        since: i64,
    ) -> Result<String, String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let t = Instant::now();
        let lp = ListParams::default().labels(&format!("{LABEL_STORAGE}={}", self.run_id));
        pods.delete_collection(&DeleteParams::default(), &lp)
            .await
            .map_err(|e| format!("failed to delete the pods: {e}"))?;
        loop {
            let left = pods
                .list(&lp)
                .await
                .map_err(|e| format!("failed to list the pods: {e}"))?
                .items
                .len();
            if left == 0 {
                break;
            }
            if t.elapsed() > OBJECT_WAIT {
                return Err(format!("{left} pod(s) still there after {OBJECT_WAIT:?}"));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = self.cancel.cancelled() => return Err(format!("stopped: {left} pod(s) left")),
            }
        }
        let deleted = t.elapsed().as_secs_f64();
        // The API forgets a pod once its containers stopped; kubelet unmounts on its own
        // loop afterwards. Give that loop a bounded while before calling a mount stale.
        let mut findings = Vec::new();
        let t2 = Instant::now();
        loop {
            findings.clear();
            for n in nodes.names() {
                let mi = nodes.output(&n, &["cat", "/proc/self/mountinfo"]).await?;
                for l in stale_mounts(&mi, uids) {
                    let point = l.split_whitespace().nth(4).unwrap_or(l);
                    findings.push(format!("{n}: still mounted: {point}"));
                }
            }
            if findings.is_empty() || t2.elapsed() > Duration::from_secs(30) {
                break;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        for n in nodes.names() {
            let journal = nodes
                .output(
                    &n,
                    &[
                        "journalctl",
                        "-u",
                        "kubelet",
                        "--no-pager",
                        "-o",
                        "cat",
                        "--since",
                        &format!("@{since}"),
                    ],
                )
                .await?;
            for l in teardown_trouble(&journal).into_iter().take(5) {
                findings.push(format!("{n}: kubelet: {}", l.trim()));
            }
        }
        if findings.is_empty() {
            Ok(format!(
                "{} pods deleted in {deleted:.1}s; no mount of theirs left on {} node(s), no busy device or orphaned pod in kubelet's journal",
                uids.len(),
                nodes.names().len()
            ))
        } else {
            Err(findings.join("; "))
        }
    }

    /// A local PersistentVolume on `node` (Retain), its folder made on the node.
    async fn local_pv(&self, nodes: &dyn Nodes, node: &str, name: &str) -> Result<(), String> {
        let path = format!("{LOCAL_ROOT}/{}/{name}", self.namespace);
        nodes.output(node, &["mkdir", "-p", &path]).await?;
        self.create_pv(name, &path, &[node]).await
    }

    /// A `local` PersistentVolume (Retain) at `path`, usable on each of `on`.
    async fn create_pv(&self, name: &str, path: &str, on: &[&str]) -> Result<(), String> {
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        let pv: PersistentVolume = json(serde_json::json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": { "name": name, "labels": self.labels() },
            "spec": {
                "capacity": { "storage": "64Mi" },
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": self.namespace,
                "local": { "path": path },
                "nodeAffinity": { "required": { "nodeSelectorTerms": [{ "matchExpressions": [
                    { "key": "kubernetes.io/hostname", "operator": "In", "values": on }
                ]}]}},
            },
        }));
        pvs.create(&PostParams::default(), &pv)
            .await
            .map(drop)
            .map_err(|e| format!("failed to create persistent volume {name}: {e}"))
    }

    /// A claim for the tier's storage class, waited for until Bound to `pv`.
    async fn bound_claim(&self, name: &str, pv: &str) -> Result<(), String> {
        let pvcs: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let c: PersistentVolumeClaim = json(serde_json::json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": { "name": name, "labels": self.labels() },
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": self.namespace,
                "volumeName": pv,
                "resources": { "requests": { "storage": "64Mi" } },
            },
        }));
        pvcs.create(&PostParams::default(), &c)
            .await
            .map_err(|e| format!("failed to create claim {name}: {e}"))?;
        let bound = |c: Option<&PersistentVolumeClaim>| {
            c.and_then(|c| c.status.as_ref())
                .and_then(|s| s.phase.as_deref())
                == Some("Bound")
        };
        wait_for(pvcs, name, bound, OBJECT_WAIT, &self.cancel)
            .await
            .map(drop)
            .map_err(|e| format!("claim {name} not Bound: {e}"))
    }

    fn pv_name(&self, n: &str) -> String {
        format!("{}-{n}", self.namespace)
    }

    async fn pvc_deleted_before_pod(
        &self,
        nodes: &dyn Nodes,
        node: &str,
    ) -> Result<String, String> {
        let (pv1, pv2) = (self.pv_name("pv1"), self.pv_name("pv2"));
        self.local_pv(nodes, node, &pv1).await?;
        self.bound_claim("claim1", &pv1).await?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let user = self.pod(
            "claim-user",
            Some(node),
            "echo in-use > /data/stamp && exec sleep 3600",
            serde_json::json!({ "persistentVolumeClaim": { "claimName": "claim1" } }),
        );
        pods.create(&PostParams::default(), &user)
            .await
            .map_err(|e| format!("failed to create pod claim-user: {e}"))?;
        let running = self.wait_running(&pods, "claim-user", OBJECT_WAIT).await?;
        let uid = running.metadata.uid.clone().unwrap_or_default();
        let mi = nodes.output(node, &["cat", "/proc/self/mountinfo"]).await?;
        let mounted_before = stale_mounts(&mi, std::slice::from_ref(&uid)).len();
        // The claim first: protection keeps it (Terminating) while the pod uses it.
        let pvcs: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), &self.namespace);
        pvcs.delete("claim1", &DeleteParams::default())
            .await
            .map_err(|e| format!("failed to delete claim1: {e}"))?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let held = pvcs
            .get_opt("claim1")
            .await
            .map_err(|e| format!("failed to read claim1: {e}"))?
            .is_some_and(|c| c.metadata.deletion_timestamp.is_some());
        if !held {
            return Err("claim1 vanished while its pod still used it (no claim protection)".into());
        }
        pods.delete("claim-user", &DeleteParams::default())
            .await
            .map_err(|e| format!("failed to delete claim-user: {e}"))?;
        self.gone(pods.clone(), "claim-user").await?;
        self.gone(pvcs.clone(), "claim1")
            .await
            .map_err(|e| format!("claim1 not removed once its pod was gone: {e}"))?;
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        let released = |v: Option<&PersistentVolume>| {
            v.and_then(|v| v.status.as_ref())
                .and_then(|s| s.phase.as_deref())
                == Some("Released")
        };
        wait_for(pvs, &pv1, released, OBJECT_WAIT, &self.cancel)
            .await
            .map_err(|e| format!("{pv1} not Released (reclaim policy Retain): {e}"))?;
        let t = Instant::now();
        let stale = loop {
            let mi = nodes.output(node, &["cat", "/proc/self/mountinfo"]).await?;
            let stale: Vec<String> = stale_mounts(&mi, std::slice::from_ref(&uid))
                .into_iter()
                .map(|l| l.split_whitespace().nth(4).unwrap_or(l).to_string())
                .collect();
            if stale.is_empty() || t.elapsed() > Duration::from_secs(30) {
                break stale;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        };
        if !stale.is_empty() {
            return Err(format!("{node}: still mounted: {}", stale.join(", ")));
        }
        // A fresh claim binds and serves a new pod.
        self.local_pv(nodes, node, &pv2).await?;
        self.bound_claim("claim2", &pv2).await?;
        let p = self.pod(
            "claim-user-2",
            Some(node),
            "echo fresh > /data/stamp && grep -qx fresh /data/stamp",
            serde_json::json!({ "persistentVolumeClaim": { "claimName": "claim2" } }),
        );
        self.run_to_completion(&pods, p).await?;
        Ok(format!(
            "claim held while in use, removed after its pod; {pv1} Released; {mounted_before} mount(s) of the pod gone from {node}; a fresh claim bound and served a pod"
        ))
    }

    async fn run_to_completion(&self, pods: &Api<Pod>, p: Pod) -> Result<String, String> {
        crate::smoke::run_to_completion(pods, p, OBJECT_WAIT, &self.cancel).await
    }

    async fn ungraceful_termination(
        &self,
        nodes: &dyn Nodes,
        node: &str,
    ) -> Result<String, String> {
        let pv = self.pv_name("pv3");
        self.local_pv(nodes, node, &pv).await?;
        self.bound_claim("claim3", &pv).await?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let claim = serde_json::json!({ "persistentVolumeClaim": { "claimName": "claim3" } });
        let writer = self.pod("writer", Some(node), WRITER, claim.clone());
        pods.create(&PostParams::default(), &writer)
            .await
            .map_err(|e| format!("failed to create pod writer: {e}"))?;
        self.wait_running(&pods, "writer", OBJECT_WAIT).await?;
        // Let it complete a few blocks, counted on the node, then kill it mid-write.
        let dir = format!("{LOCAL_ROOT}/{}/{pv}", self.namespace);
        let t = Instant::now();
        let mut done = 0;
        while done < 8 {
            if t.elapsed() > OBJECT_WAIT {
                return Err(format!(
                    "the writer completed {done} block(s) in {OBJECT_WAIT:?}"
                ));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let ls = nodes.output(node, &["ls", &dir]).await?;
            done = ls.lines().filter(|l| l.ends_with(".sum")).count();
        }
        pods.delete("writer", &DeleteParams::default().grace_period(0))
            .await
            .map_err(|e| format!("failed to force-delete writer: {e}"))?;
        self.gone(pods.clone(), "writer").await?;
        let ls = nodes.output(node, &["ls", &dir]).await?;
        let at_kill = ls.lines().filter(|l| l.ends_with(".sum")).count();
        let verifier = self.pod("verifier", Some(node), VERIFIER, claim);
        let log = self.run_to_completion(&pods, verifier).await.map_err(|e| {
            format!("a completed block did not verify after the writer was force-deleted: {e}")
        })?;
        let n =
            verified_blocks(&log).ok_or_else(|| format!("the verifier said: {}", log.trim()))?;
        if (n as usize) < at_kill {
            return Err(format!(
                "{n} block(s) verified, but {at_kill} were complete when the writer was killed"
            ));
        }
        Ok(format!(
            "writer force-deleted mid-write: {at_kill} block(s) complete when the API had dropped the pod, {n} by the time a new pod verified them all (the old container kept writing until kubelet stopped it)"
        ))
    }

    /// Deletes the namespace and the volumes (cluster-scoped) the tier made.
    pub async fn cleanup(&self) {
        let ns: Api<Namespace> = Api::all(self.client.clone());
        let _ = ns
            .delete(&self.namespace, &DeleteParams::background())
            .await;
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        let lp = ListParams::default().labels(&format!("{LABEL_STORAGE}={}", self.run_id));
        let _ = pvs
            .delete_collection(&DeleteParams::background(), &lp)
            .await;
    }
}

/// The node-loss check's testcase, under its step (`node-loss/volume-follows-pod`).
pub const NODE_LOSS: &str = "volume-follows-pod";

/// How long a Deployment's pod may take to run again elsewhere once its node is deleted:
/// the pod garbage collector waits about 40 s before it removes a deleted node's pods.
const RESCHEDULE_WAIT: Duration = Duration::from_secs(240);

/// The node-loss pod: the first to run writes the run's stamp; every pod appends its node
/// to a visit list, and says both, so its log proves what it found on the volume.
pub const NODE_LOSS_SCRIPT: &str = "[ -f /data/stamp ] || echo \"$STAMP\" > /data/stamp; \
echo \"$NODE_NAME\" >> /data/visits && sync && echo \"stamp $(cat /data/stamp)\" && \
echo \"visits $(tr '\\n' ' ' < /data/visits)\" && exec sleep 3600";

/// Whether a node-loss pod's log shows the stamp written before the loss and the visit
/// list of both nodes, in order (it read and wrote the volume on the new node).
pub fn node_loss_log_ok(log: &str, stamp: &str, lost: &str, survivor: &str) -> bool {
    let has = |want: &str| log.lines().any(|l| l.trim() == want);
    has(&format!("stamp {stamp}")) && has(&format!("visits {lost} {survivor}"))
}

impl Storage<'_> {
    /// The node-loss check as its own step: a Deployment's pod uses a volume in the shared
    /// folder on `lost`; `lost` stops and its Node is deleted; the pod must run again on
    /// `survivor` and find the volume's data. `lost` is started again afterwards (its
    /// kubelet registers anew), so its logs can be exported.
    pub async fn run_node_loss(&mut self, lost: &str, survivor: &str) -> Vec<String> {
        let t = Instant::now();
        let Some(nodes) = self.nodes else {
            self.skip(NODE_LOSS, "the provider runs no commands on nodes");
            return self.failed();
        };
        let Some(shared) = nodes.shared_folder() else {
            self.skip(
                NODE_LOSS,
                "the provider has no folder all nodes share (no volume here survives a node)",
            );
            return self.failed();
        };
        let r = match self.prepare().await {
            Ok(()) => self.node_loss(nodes, &shared, lost, survivor).await,
            Err(e) => Err(format!("not run: {e}")),
        };
        self.record(NODE_LOSS, t, r);
        self.failed()
    }

    async fn node_loss(
        &self,
        nodes: &dyn Nodes,
        shared: &str,
        lost: &str,
        survivor: &str,
    ) -> Result<String, String> {
        let pv = self.pv_name("pv-node-loss");
        let path = format!("{shared}/{}/{pv}", self.namespace);
        nodes.output(survivor, &["mkdir", "-p", &path]).await?;
        self.create_pv(&pv, &path, &[lost, survivor]).await?;
        self.bound_claim("claim-node-loss", &pv).await?;
        // A Deployment, so something makes the pod again; it tolerates every taint, so only
        // the Node's deletion (not a NotReady eviction) moves it, and it prefers `lost`.
        let mut p = self.pod(
            "node-loss",
            None,
            NODE_LOSS_SCRIPT,
            serde_json::json!({ "persistentVolumeClaim": { "claimName": "claim-node-loss" } }),
        );
        let spec = p.spec.as_mut().expect("storage pods have a spec");
        spec.restart_policy = Some("Always".into());
        spec.containers[0].env = Some(vec![
            json(serde_json::json!({ "name": "STAMP", "value": self.run_id })),
            json(serde_json::json!({ "name": "NODE_NAME",
                "valueFrom": { "fieldRef": { "fieldPath": "spec.nodeName" } } })),
        ]);
        spec.tolerations = Some(vec![json(serde_json::json!({ "operator": "Exists" }))]);
        spec.affinity = Some(json(serde_json::json!({ "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{ "weight": 100, "preference": {
                "matchExpressions": [{ "key": "kubernetes.io/hostname", "operator": "In", "values": [lost] }]
            }}],
        }})));
        let mut labels = self.labels();
        labels["app"] = "node-loss".into();
        let d: k8s_openapi::api::apps::v1::Deployment = json(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "node-loss", "labels": labels },
            "spec": {
                "replicas": 1,
                "strategy": { "type": "Recreate" },
                "selector": { "matchLabels": { "app": "node-loss" } },
                "template": { "metadata": { "labels": labels }, "spec": spec },
            },
        }));
        let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
            Api::namespaced(self.client.clone(), &self.namespace);
        deployments
            .create(&PostParams::default(), &d)
            .await
            .map_err(|e| format!("failed to create deployment node-loss: {e}"))?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let first = self.running_on(&pods, None, OBJECT_WAIT).await?;
        let on = first.spec.as_ref().and_then(|s| s.node_name.clone());
        if on.as_deref() != Some(lost) {
            return Err(format!(
                "the first pod ran on {on:?}, not on {lost} which it prefers; the loss would prove nothing"
            ));
        }
        let first_name = first.metadata.name.clone().unwrap_or_default();
        let log = self.log_with(&pods, &first_name, "visits ").await?;
        if !log
            .lines()
            .any(|l| l.trim() == format!("stamp {}", self.run_id))
        {
            return Err(format!("pod {first_name} wrote no stamp: {}", log.trim()));
        }
        nodes.stop(lost).await?;
        let t = Instant::now();
        let node_api: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.client.clone());
        node_api
            .delete(lost, &DeleteParams::default())
            .await
            .map_err(|e| format!("failed to delete node {lost}: {e}"))?;
        let moved = self
            .running_on(&pods, Some(survivor), RESCHEDULE_WAIT)
            .await
            .map_err(|e| format!("no pod ran again after node {lost} was deleted: {e}"));
        let took = t.elapsed().as_secs_f64();
        // Back up whatever happened, so the node's logs can be exported.
        let started = nodes.start(lost).await;
        let moved = moved?;
        let name = moved.metadata.name.clone().unwrap_or_default();
        let log = self.log_with(&pods, &name, "visits ").await?;
        if !node_loss_log_ok(&log, &self.run_id, lost, survivor) {
            return Err(format!(
                "pod {name} on {survivor} did not find the volume as {first_name} left it on {lost}: {}",
                log.trim()
            ));
        }
        started?;
        Ok(format!(
            "{lost} stopped and its Node deleted: the Deployment's pod ran again on {survivor} after {took:.1}s, read the stamp written on {lost} and wrote to the volume (a folder every node shares, standing in for network storage); {lost} started again"
        ))
    }

    /// The node-loss Deployment's pod, once one is Running (on `node`, when given).
    async fn running_on(
        &self,
        pods: &Api<Pod>,
        node: Option<&str>,
        within: Duration,
    ) -> Result<Pod, String> {
        let lp = ListParams::default().labels("app=node-loss");
        let t = Instant::now();
        loop {
            let list = pods
                .list(&lp)
                .await
                .map_err(|e| format!("failed to list the node-loss pods: {e}"))?;
            let found = list.items.into_iter().find(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                let at = p.spec.as_ref().and_then(|s| s.node_name.as_deref());
                phase == Some("Running")
                    && p.metadata.deletion_timestamp.is_none()
                    && node.is_none_or(|n| at == Some(n))
            });
            if let Some(p) = found {
                return Ok(p);
            }
            if t.elapsed() > within {
                return Err(format!(
                    "no node-loss pod Running{} within {within:?}",
                    node.map(|n| format!(" on {n}")).unwrap_or_default()
                ));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = self.cancel.cancelled() => return Err("stopped".into()),
            }
        }
    }

    /// A pod's log once it holds a line starting with `want` (bounded).
    async fn log_with(&self, pods: &Api<Pod>, name: &str, want: &str) -> Result<String, String> {
        let t = Instant::now();
        loop {
            let log = pods
                .logs(name, &LogParams::default())
                .await
                .unwrap_or_default();
            if log.lines().any(|l| l.starts_with(want)) || t.elapsed() > Duration::from_secs(30) {
                return Ok(log);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// The checks, in the order they run: each a testcase `storage/<name>`.
pub const CHECKS: [&str; 4] = [
    "shared-secret-at-scale",
    "teardown-clean",
    "pvc-deleted-before-pod",
    "ungraceful-termination-keeps-data",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_mounts_under_the_pods_folders_are_stale() {
        let mi = "\
36 25 0:30 / /var/lib/kubelet/pods/aaa-1/volumes/kubernetes.io~secret/data rw - tmpfs tmpfs rw
37 25 0:31 / /var/lib/kubelet/pods/bbb-2/volumes/kubernetes.io~secret/token rw - tmpfs tmpfs rw
38 25 0:32 / /run/containerd/aaa-1 rw - tmpfs tmpfs rw
";
        let got = stale_mounts(mi, &["aaa-1".into(), String::new()]);
        assert_eq!(got.len(), 1);
        assert!(got[0].contains("kubernetes.io~secret/data"));
        assert!(stale_mounts(mi, &["ccc".into()]).is_empty());
    }

    #[test]
    fn busy_devices_and_orphaned_pods_are_trouble_in_any_case() {
        let j = "I1203 ok\n\
E1203 UnmountVolume.TearDown failed: unlinkat /var/lib/kubelet/pods/x: device or resource busy\n\
E1203 Orphaned pod \"x\" found, but volume paths are still present on disk\n\
I1203 orphaned pod \"y\" found, removing pod cgroups\n";
        assert_eq!(teardown_trouble(j).len(), 3);
        assert!(teardown_trouble("I1203 all good\n").is_empty());
    }

    #[test]
    fn scheduling_to_running_comes_from_the_status() {
        let p: Pod = serde_yaml::from_str(
            "status:
  phase: Running
  conditions:
  - {type: PodScheduled, status: 'True', lastTransitionTime: '2026-12-03T10:00:00Z'}
  containerStatuses:
  - name: c
    image: i
    imageID: ''
    ready: true
    restartCount: 0
    state: {running: {startedAt: '2026-12-03T10:00:02Z'}}
",
        )
        .unwrap();
        assert_eq!(scheduled_to_running(&p), Some(2.0));
        let pending: Pod = serde_yaml::from_str("status: {phase: Pending}").unwrap();
        assert_eq!(scheduled_to_running(&pending), None);
    }

    #[test]
    fn a_node_loss_log_must_show_the_old_stamp_and_both_visits_in_order() {
        let good = "stamp 20261204-1\nvisits w1 cp1 \n";
        assert!(node_loss_log_ok(good, "20261204-1", "w1", "cp1"));
        // A fresh volume on the new node: it wrote its own stamp and saw one visit.
        assert!(!node_loss_log_ok(
            "stamp 20261204-1\nvisits cp1 \n",
            "20261204-1",
            "w1",
            "cp1"
        ));
        assert!(!node_loss_log_ok(good, "other-run", "w1", "cp1"));
        assert!(!node_loss_log_ok(good, "20261204-1", "cp1", "w1"));
        assert!(NODE_LOSS_SCRIPT.contains("[ -f /data/stamp ] ||"));
    }

    #[test]
    fn the_verifier_counts_blocks_or_says_nothing() {
        assert_eq!(
            verified_blocks("/data/b.0: OK\nverified 12 blocks\n"),
            Some(12)
        );
        assert_eq!(verified_blocks("/data/b.3: FAILED\n"), None);
    }

    #[test]
    fn the_writer_names_a_block_complete_only_after_syncing_it() {
        let dd = WRITER.find("dd ").unwrap();
        let sync = WRITER[dd..].find("sync").unwrap() + dd;
        let mv = WRITER.find("mv /data/s.tmp").unwrap();
        assert!(dd < sync && sync < mv);
        assert!(VERIFIER.contains("sha256sum -c"));
    }
}
